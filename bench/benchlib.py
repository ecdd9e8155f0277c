"""What the benchmark runners (bench/compare.py, bench/scaleout.py) share.

Free loopback ports, processes known to listen on their port (read from /proc), a
process's CPU time, the release binaries, figures for the tables, the machine's
description, and the section of a doc that a run rewrites.
"""
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The script's name, which starts its messages: "compare", "scaleout".
PROG = Path(sys.argv[0]).stem
BUILD = ["cargo", "build", "--release", "-p", "notify-relay", "-p", "notify-relay-bench"]
# How long a server may take to listen.
LISTEN_DEADLINE_S = 15.0
# Clock ticks per second of /proc/PID/stat (USER_HZ).
TICKS_PER_S = os.sysconf("SC_CLK_TCK")


class Binaries:
    """notify-relay and notify-relay-bench in one folder."""

    def __init__(self, bin_dir):
        self.bin_dir = Path(bin_dir).resolve()
        self.relay = self.bin_dir / "notify-relay"
        self.bench = self.bin_dir / "notify-relay-bench"


def binaries(bin_dir):
    """The binaries in `bin_dir`; without one, the release build, built first."""
    if not bin_dir:
        subprocess.run(BUILD, cwd=ROOT, check=True)
    return Binaries(bin_dir or ROOT / "target" / "release")


def needs_relay(setup):
    """What is missing of the two binaries, with how to build them."""
    return [f"{path} (build: {' '.join(BUILD)})"
            for path in (setup.relay, setup.bench) if not path.is_file()]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_inodes(port):
    """Socket inodes in LISTEN state on `port` (any address), from /proc/net/tcp{,6}."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def socket_inodes_of(pid):
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir() if fd_dir.exists() else ():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def cpu_seconds(pid):
    """User plus system CPU time of process `pid` so far, all its threads, those that ended
    included: its CPU clock (clock_getcpuclockid), to the nanosecond; where that cannot be
    read, utime + stime of /proc/PID/stat, in clock ticks (10 ms steps)."""
    try:
        # glibc's MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED).
        return time.clock_gettime(((~pid) << 3) | 2)
    except OSError:
        pass
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The fields after the command name, which is in parentheses and may hold spaces;
    # utime and stime are fields 14 and 15, so 12 and 13 after the name.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S


class Started:
    """A server process this script started, known to listen on its port once
    `wait_listening` returned."""

    def __init__(self, title, argv, port, cwd=ROOT):
        self.title, self.port = title, port
        self.log = tempfile.TemporaryFile()
        env = dict(os.environ, RUST_LOG="warn")
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    @property
    def pid(self):
        return self.proc.pid

    def output(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace").strip()[-2000:]

    def wait_listening(self):
        """Returns once this process owns a listening socket on the port; fails otherwise."""
        deadline = time.monotonic() + LISTEN_DEADLINE_S
        name = f"{self.title} (pid {self.proc.pid})"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{PROG}: {name} exited with {self.proc.returncode} before "
                                 f"listening on port {self.port}:\n{self.output()}")
            listening = listening_inodes(self.port)
            if listening & socket_inodes_of(self.proc.pid):
                return
            time.sleep(0.05)
        owner = ("another process listens there" if listening_inodes(self.port)
                 else "nothing listens there")
        raise SystemExit(f"{PROG}: {name} did not listen on port {self.port} within "
                         f"{LISTEN_DEADLINE_S:.0f} s ({owner}):\n{self.output()}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def fmt(value):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    return f"{value:,}"


def sh(cmd, cwd=None):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, shell=True,
                              cwd=cwd).stdout.strip()
    except OSError:
        return "?"


def machine(setup):
    """The machine and the relay's build, as Markdown list items."""
    cpu = sh("lscpu | sed -n 's/^Model name: *//p'") or platform.processor()
    mem = sh("free -g | awk '/Mem:/ {print $2}'")
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores; memory {mem} GiB; kernel {platform.release()}",
        f"- {sh(str(setup.relay) + ' --version')}; {sh('rustc --version')}",
    ]


def raise_fd_limit(needed, what, hint=""):
    """Servers inherit this process's open-file limit: raises it to the hard limit, and
    says so when even that is below `needed` (for `what`)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < needed:
        print(f"{PROG}: the open-file hard limit is {hard}; {what} needs about {needed} "
              f"(raise it with ulimit -Hn{hint})", file=sys.stderr)


def write_section(doc, start, end, block, new_doc):
    """Puts `block` (which begins with `start` and ends with `end`) in place of what stands
    between those markers in `doc`; a doc without them gets `new_doc`, then the block at
    its end."""
    text = doc.read_text() if doc.exists() else new_doc
    if start not in text:
        text = text.rstrip("\n") + f"\n\n{start}\n{end}\n"
    before, _, rest = text.partition(start)
    _, _, after = rest.partition(end)
    doc.write_text(before + block + after)
    print(f"wrote {doc}", file=sys.stderr)
