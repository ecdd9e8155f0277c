#!/usr/bin/env python3
"""Measure what relays sharing one Redis cost against one relay, in one run.

On one machine, in one run: the floor Redis puts under any cross-relay message (a bare
PUBLISH to a channel with one subscriber, `redis-benchmark -P 1`, and `-P 16` for
reference); one relay without Redis; two relays on one Redis, senders on relay A and
recipients on relay B (saturated, and at a fixed rate); and idle registered connections
with distinct keys on a relay without Redis and on one with it. It prints the figures
and the ratios the scale-out targets are set on, met or not, and writes them into
docs/SCALING.md, between the scaleout markers.

    python3 bench/scaleout.py [--runs 3]     # builds the release binaries (~5 min)
    python3 bench/scaleout.py --no-write      # print only
    python3 bench/scaleout.py --only publish-p1,cross-saturated   # a subset; print only
    python3 bench/scaleout.py --smoke         # tiny counts: every scenario runs; no doc

Each scenario of each run gets fresh processes on free loopback ports: a redis-server
(`--save '' --appendonly no`) where it needs one, and release relays, all stopped at the
end of it, pass or fail. CPU is each process's own (its CPU clock: what /proc/PID/stat
counts, to the nanosecond) and Redis's (INFO cpu), sampled where the load generator
marks its measured phase (`notify-relay-bench --marks`); INFO commandstats over the
same phase gives Redis's profile.
"""
import argparse
import json
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque, namedtuple

from benchlib import (ROOT, PROG, Started, binaries, cpu_seconds, fmt, free_port,
                      machine, needs_relay, raise_fd_limit, sh, write_section)

DOC = ROOT / "docs" / "SCALING.md"
START, END = "<!-- scaleout:start -->", "<!-- scaleout:end -->"
# How long the load generator may take to reach a mark (10,000 registrations included),
# and redis-benchmark to finish.
MARK_TIMEOUT_S = 300
REDIS_BENCHMARK_TIMEOUT_S = 300
# Descriptors of 10,000 idle connections in one relay, with some headroom.
FDS_NEEDED = 10_200
# The floor's channel, with one subscriber as a cross-relay message has (relay B).
CHANNEL = "nr-bench-floor"
# Commands of Redis's profile shown per scenario.
TOP_COMMANDS = 6


class Plan:
    """How much each scenario does: the full run's figures, or the smoke check's tiny ones."""

    def __init__(self, args):
        smoke = args.smoke
        self.size = 64
        self.recipients, self.senders = (10, 2) if smoke else (100, 10)
        self.publish_requests = {1: 2000, 16: 2000} if smoke else {
            1: args.publish_requests, 16: 5 * args.publish_requests}
        self.single_messages = 1000 if smoke else args.single_messages
        self.cross_messages = 1000 if smoke else args.cross_messages
        self.rate = 200 if smoke else args.rate
        self.duration = "1s" if smoke else args.duration
        self.idle_connections = 100 if smoke else args.idle_connections
        self.idle_settle = 0.2 if smoke else args.idle_settle
        self.idle_window = 1.0 if smoke else args.idle_window

    def load(self):
        return ["-r", str(self.recipients), "-s", str(self.senders), "-p", str(self.size)]

    def throughput(self, messages):
        return ["throughput", *self.load(), "-n", str(messages)]

    def latency(self):
        return ["latency", "--rate", str(self.rate), "--duration", self.duration, *self.load()]

    def idle(self):
        # The bench holds until the end mark is answered; --hold bounds the window.
        return ["idle", "-c", str(self.idle_connections), "--hold", f"{self.idle_window}s"]


# ---- Redis -------------------------------------------------------------------------


class Redis:
    """A connection to the redis-server started here (RESP: only what this script asks)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")

    def command(self, *args):
        words = [str(a).encode() for a in args]
        self.sock.sendall(b"*%d\r\n" % len(words)
                          + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words))
        return self.reply()

    def reply(self):
        line = self.file.readline()
        kind, rest = line[:1], line[1:].rstrip(b"\r\n")
        if kind == b"+":
            return rest.decode()
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.file.read(n + 2)[:-2].decode()
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise SystemExit(f"{PROG}: Redis answered {line[:200]!r}")

    def info(self, section):
        """INFO `section` as a dict of its fields."""
        fields = {}
        for line in self.command("INFO", section).splitlines():
            name, sep, value = line.partition(":")
            if sep and not line.startswith("#"):
                fields[name] = value
        return fields

    def cpu(self):
        """Redis's own CPU time, all its threads (used_cpu_sys + used_cpu_user)."""
        cpu = self.info("cpu")
        return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"])

    def commandstats(self):
        """{command: (calls, usec)} so far."""
        stats = {}
        for name, value in self.info("commandstats").items():
            fields = dict(f.split("=", 1) for f in value.split(","))
            stats[name.removeprefix("cmdstat_")] = (int(fields["calls"]), int(fields["usec"]))
        return stats

    def close(self):
        self.file.close()
        self.sock.close()


class Subscriber:
    """One connection subscribed to CHANNEL, reading and dropping what Redis sends it, as
    relay B does for a cross-relay message."""

    def __init__(self, port):
        self.redis = Redis(port)
        self.redis.command("SUBSCRIBE", CHANNEL)
        self.redis.sock.settimeout(None)
        self.received = 0
        self.thread = threading.Thread(target=self.drain, daemon=True)
        self.thread.start()

    def drain(self):
        while True:
            try:
                chunk = self.redis.sock.recv(1 << 20)
            except OSError:
                return
            if not chunk:
                return
            self.received += len(chunk)

    def close(self):
        try:
            self.redis.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(timeout=5)
        self.redis.close()


# ---- processes -----------------------------------------------------------------------


class Processes:
    """What one scenario's run starts: a redis-server and relays, each stopped on exit
    (pass or fail), in reverse order."""

    def __init__(self, setup, label):
        self.setup, self.label = setup, label
        self.started = []
        self.redis_port = None
        self.redis = None  # the INFO connection
        self.dir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.redis:
            self.redis.close()
        for started in reversed(self.started):
            started.stop()
        if self.dir:
            self.dir.cleanup()

    def start(self, title, argv, port):
        started = Started(title, argv, port, cwd=self.dir.name if self.dir else ROOT)
        self.started.append(started)
        print(f"{PROG}: {self.label}: started {title} (pid {started.pid}) on 127.0.0.1:{port}",
              file=sys.stderr, flush=True)
        started.wait_listening()
        return started

    def start_redis(self):
        self.dir = tempfile.TemporaryDirectory(prefix="scaleout-redis-")
        port = free_port()
        started = self.start("redis-server", [
            "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", self.dir.name, "--loglevel", "warning"], port)
        self.redis_port = port
        self.redis = Redis(port)
        if self.redis.command("PING") != "PONG":
            raise SystemExit(f"{PROG}: redis-server on {port} does not answer PING")
        return started

    def start_relay(self, title, redis=False):
        port = free_port()
        argv = [str(self.setup.relay), "--host", "127.0.0.1"]
        if redis:
            argv += ["--redis", f"redis://127.0.0.1:{self.redis_port}/0"]
        started = self.start(title, argv + [str(port)], port)
        if redis:
            wait_ready(started)
        return started


def wait_ready(started):
    """Waits until the relay's /readyz says 200 (it reaches Redis)."""
    url = f"http://127.0.0.1:{started.port}/readyz"
    deadline = time.monotonic() + 15
    answer = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as e:
            answer = f"{e.code} {e.read().decode(errors='replace').strip()}"
        except OSError as e:
            answer = str(e)
        time.sleep(0.1)
    raise SystemExit(f"{PROG}: {started.title} (pid {started.pid}) was not ready within "
                     f"15 s: /readyz {answer}\n{started.output()}")


class Sampler:
    """CPU time of named processes, and Redis's own view, at one moment."""

    def __init__(self, pids, redis=None):
        self.pids, self.redis = pids, redis

    def sample(self):
        taken = {"time": time.monotonic(),
                 "cpu": {name: cpu_seconds(pid) for name, pid in self.pids.items()}}
        if self.redis:
            taken["redis_info_cpu"] = self.redis.cpu()
            taken["commandstats"] = self.redis.commandstats()
        return taken


def between(first, last):
    """What happened between two samples: seconds, CPU seconds per process (`redis_info`:
    Redis's INFO cpu), and {command: (calls, usec)} (INFO itself left out)."""
    spent = {"window_s": last["time"] - first["time"],
             "cpu_s": {name: last["cpu"][name] - first["cpu"][name] for name in last["cpu"]}}
    if "redis_info_cpu" in last:
        spent["cpu_s"]["redis_info"] = last["redis_info_cpu"] - first["redis_info_cpu"]
        before = first["commandstats"]
        spent["commands"] = {
            name: (calls - before.get(name, (0, 0))[0], usec - before.get(name, (0, 0))[1])
            for name, (calls, usec) in last["commandstats"].items()
            if name != "info" and calls > before.get(name, (0, 0))[0]}
    return spent


# ---- the load ------------------------------------------------------------------------


def bench_with_marks(setup, sampler, args, url, send_url=None, pid=None, settle=0.0):
    """Runs notify-relay-bench `args` with --marks: samples at its start mark (after
    `settle` seconds) and at its end mark. Returns its report and what happened between."""
    cmd = [str(setup.bench), "--url", url, "--json", "--marks", "--max-time", "120s"]
    if send_url:
        cmd += ["--send-url", send_url]
    if pid:
        cmd += ["--pid", str(pid)]
    proc = subprocess.Popen(cmd + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines, tail = queue.Queue(), deque(maxlen=40)

    def read_stderr():
        for line in proc.stderr:
            tail.append(line.rstrip())
            lines.put(line.rstrip())
        lines.put(None)

    threading.Thread(target=read_stderr, daemon=True).start()

    def failed(why):
        return SystemExit(f"{PROG}: notify-relay-bench {' '.join(args)} {why}:\n"
                          + "\n".join(tail))

    def at_mark(name):
        deadline = time.monotonic() + MARK_TIMEOUT_S
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise failed(f"did not reach mark {name} within {MARK_TIMEOUT_S} s") from None
            if line is None:
                proc.wait()
                raise failed(f"exited with {proc.returncode} before mark {name}")
            if line == f"mark: {name}":
                return

    def answer():
        proc.stdin.write("\n")
        proc.stdin.flush()

    try:
        at_mark("start")
        time.sleep(settle)
        first = sampler.sample()
        answer()
        at_mark("end")
        last = sampler.sample()
        answer()
        proc.stdin.close()
        out = proc.stdout.read()
        proc.wait(timeout=MARK_TIMEOUT_S)
        if proc.returncode != 0:
            raise failed(f"exited with {proc.returncode}")
        return json.loads(out.strip().splitlines()[-1]), between(first, last)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def per_message(spent, name, messages):
    cpu = spent["cpu_s"].get(name)
    return None if cpu is None or not messages else round(cpu * 1e6 / messages, 2)


def percent_of_core(spent, name):
    return round(spent["cpu_s"][name] * 100 / spent["window_s"], 3)


def profile(spent, per):
    """Redis commands over the phase, per message (or per second): {command: [calls, usec]}."""
    return {name: [round(calls / per, 4), round(usec / per, 3)]
            for name, (calls, usec) in spent.get("commands", {}).items()}


def publish_floor(setup, plan, label, pipeline):
    """redis-benchmark PUBLISH with -P `pipeline`, saturated, to a channel with one subscriber."""
    requests = plan.publish_requests[pipeline]
    with Processes(setup, label) as procs:
        redis = procs.start_redis()
        subscriber = Subscriber(procs.redis_port)
        try:
            subscribers = procs.redis.command("PUBSUB", "NUMSUB", CHANNEL)[1]
            if subscribers != 1:
                raise SystemExit(f"{PROG}: {CHANNEL} has {subscribers} subscribers, not 1")
            sampler = Sampler({"redis": redis.pid}, procs.redis)
            first = sampler.sample()
            out = subprocess.run(
                ["redis-benchmark", "-h", "127.0.0.1", "-p", str(procs.redis_port),
                 "-c", "50", "-n", str(requests), "-P", str(pipeline), "-q",
                 "PUBLISH", CHANNEL, "x" * plan.size],
                capture_output=True, text=True, timeout=REDIS_BENCHMARK_TIMEOUT_S)
            last = sampler.sample()
        finally:
            subscriber.close()
        if out.returncode != 0:
            raise SystemExit(f"{PROG}: redis-benchmark failed:\n{out.stderr.strip()}")
    spent = between(first, last)
    published = spent["commands"].get("publish", (0, 0))
    return {
        "calls": published[0],
        "calls_per_s": round(published[0] / spent["window_s"]),
        "redis_info_cpu_us_per_call": per_message(spent, "redis_info", published[0]),
        "redis_cpu_us_per_call": per_message(spent, "redis", published[0]),
        "publish_usec_per_call": round(published[1] / max(published[0], 1), 3),
        "subscriber_bytes": subscriber.received,
        "commands": profile(spent, max(published[0], 1)),
    }


def one_relay(setup, label, args, settle=0.0):
    """The load on one relay without Redis."""
    with Processes(setup, label) as procs:
        relay = procs.start_relay("relay")
        return bench_with_marks(setup, Sampler({"relay": relay.pid}), args,
                                f"ws://127.0.0.1:{relay.port}/", pid=relay.pid, settle=settle)


def two_relays(setup, label, args, settle=0.0):
    """The load with recipients on relay B and senders on relay A, both on one Redis."""
    with Processes(setup, label) as procs:
        redis = procs.start_redis()
        relay_a = procs.start_relay("relay A", redis=True)
        relay_b = procs.start_relay("relay B", redis=True)
        sampler = Sampler({"relay_a": relay_a.pid, "relay_b": relay_b.pid,
                           "redis": redis.pid}, procs.redis)
        return bench_with_marks(
            setup, sampler, args, f"ws://127.0.0.1:{relay_b.port}/",
            send_url=f"ws://127.0.0.1:{relay_a.port}/", pid=relay_b.pid, settle=settle)


# The processes of the two setups, as named in the figures (redis_info: Redis's INFO cpu).
ONE = ["relay"]
TWO = ["relay_a", "relay_b", "redis_info", "redis"]


def messages_figures(report, spent, names):
    delivered = report.get("delivered", 0)
    figures = {key: report.get(key) for key in (
        "sent", "delivered", "lost", "delivered_per_s", "achieved_rate",
        "latency_p50_us", "latency_p99_us") if key in report}
    for name in names:
        figures[f"{name}_cpu_us_per_msg"] = per_message(spent, name, delivered)
    if "redis_info" in spent["cpu_s"]:
        figures["total_cpu_us_per_msg"] = round(sum(
            figures[f"{n}_cpu_us_per_msg"] for n in ("relay_a", "relay_b", "redis_info")), 2)
        figures["commands"] = profile(spent, max(delivered, 1))
    return figures


def idle_figures(report, spent, names):
    figures = {key: report.get(key) for key in ("connections", "registered", "errors",
                                                "dropped_while_held")}
    figures["window_s"] = round(spent["window_s"], 2)
    for name in names:
        figures[f"{name}_cpu_pct"] = percent_of_core(spent, name)
    if "commands" in spent:
        figures["commands"] = profile(spent, spent["window_s"])
    return figures


def single(args):
    return lambda setup, label: messages_figures(*one_relay(setup, label, args), ONE)


def cross(args):
    return lambda setup, label: messages_figures(*two_relays(setup, label, args), TWO)


def idle(plan):
    return lambda setup, label: idle_figures(
        *one_relay(setup, label, plan.idle(), plan.idle_settle), ONE)


def idle_redis(plan):
    return lambda setup, label: idle_figures(
        *two_relays(setup, label, plan.idle(), plan.idle_settle), TWO)


def publish(plan, pipeline):
    return lambda setup, label: publish_floor(setup, plan, label, pipeline)


# ---- what is measured, and how it is shown -------------------------------------------

PER_MSG = "µs per message"
# How to run a scenario (setup, label -> figures), whether it needs Redis, and the
# figures shown (key, label).
Scenario = namedtuple("Scenario", "name title run redis figures")


def scenarios(plan):
    """Every scenario, in the order they run."""
    rate = f"{plan.rate:,} msg/s"
    cross_cpu = [("relay_a_cpu_us_per_msg", f"relay A (senders) CPU {PER_MSG}"),
                 ("relay_b_cpu_us_per_msg", f"relay B (recipients) CPU {PER_MSG}"),
                 ("redis_info_cpu_us_per_msg", f"Redis CPU {PER_MSG} (INFO cpu)"),
                 ("redis_cpu_us_per_msg", f"Redis CPU {PER_MSG} (its CPU clock)"),
                 ("total_cpu_us_per_msg", f"A + B + Redis CPU {PER_MSG}")]
    floor = [("redis_info_cpu_us_per_call", "Redis CPU µs per PUBLISH (INFO cpu)"),
             ("redis_cpu_us_per_call", "Redis CPU µs per PUBLISH (its CPU clock)"),
             ("publish_usec_per_call", "PUBLISH µs per call (INFO commandstats)"),
             ("calls_per_s", "PUBLISH calls/s")]
    idle_what = f"{plan.idle_connections:,} idle connections, distinct keys"
    return [
        Scenario("publish-p1", "bare PUBLISH, `redis-benchmark -P 1`, one subscriber",
                 publish(plan, 1), True, floor),
        Scenario("publish-p16", "PUBLISH, `redis-benchmark -P 16` (reference)",
                 publish(plan, 16), True, floor),
        Scenario("single-saturated", "one relay, no Redis, saturated",
                 single(plan.throughput(plan.single_messages)), False,
                 [("delivered_per_s", "delivered msgs/s"),
                  ("relay_cpu_us_per_msg", f"relay CPU {PER_MSG}"),
                  ("latency_p99_us", "latency p99 µs (closed loop)"), ("lost", "lost")]),
        Scenario("cross-saturated", "relay A → Redis → relay B, saturated",
                 cross(plan.throughput(plan.cross_messages)), True,
                 [("delivered_per_s", "delivered msgs/s"), *cross_cpu,
                  ("latency_p99_us", "latency p99 µs (closed loop)"), ("lost", "lost")]),
        Scenario("single-rate", f"one relay, no Redis, {rate}", single(plan.latency()), False,
                 [("achieved_rate", "msgs/s sent"), ("latency_p50_us", "latency p50 µs"),
                  ("latency_p99_us", "latency p99 µs"),
                  ("relay_cpu_us_per_msg", f"relay CPU {PER_MSG}"), ("lost", "lost")]),
        Scenario("cross-rate", f"relay A → Redis → relay B, {rate}", cross(plan.latency()),
                 True,
                 [("achieved_rate", "msgs/s sent"), ("latency_p50_us", "latency p50 µs"),
                  ("latency_p99_us", "latency p99 µs"), *cross_cpu, ("lost", "lost")]),
        Scenario("idle", f"{idle_what}, one relay, no Redis", idle(plan), False,
                 [("registered", "connections held"), ("window_s", "window s"),
                  ("relay_cpu_pct", "relay CPU, % of a core")]),
        Scenario("idle-redis", f"{idle_what}, on relay B of two on one Redis",
                 idle_redis(plan), True,
                 [("registered", "connections held"), ("window_s", "window s"),
                  ("relay_b_cpu_pct", "relay B (the connections') CPU, % of a core"),
                  ("relay_a_cpu_pct", "relay A (no connections) CPU, % of a core"),
                  ("redis_info_cpu_pct", "Redis CPU, % of a core (INFO cpu)"),
                  ("redis_cpu_pct", "Redis CPU, % of a core (its CPU clock)")]),
    ]


def targets(plan):
    """label, (scenario, figure), the figure it is divided by or None, target, unit."""
    floor = ("publish-p1", "redis_info_cpu_us_per_call")
    idle = f"{plan.idle_connections:,} idle connections"
    return [
        ("Redis CPU per cross-relay message, saturated ÷ bare PUBLISH (-P 1)",
         ("cross-saturated", "redis_info_cpu_us_per_msg"), floor, 2.0, "x"),
        (f"Redis CPU per cross-relay message at {plan.rate:,} msg/s ÷ bare PUBLISH (-P 1)",
         ("cross-rate", "redis_info_cpu_us_per_msg"), floor, 2.0, "x"),
        ("Redis CPU per cross-relay message, saturated ÷ PUBLISH -P 16 (reference)",
         ("cross-saturated", "redis_info_cpu_us_per_msg"),
         ("publish-p16", "redis_info_cpu_us_per_call"), None, "x"),
        ("CPU per cross-relay message, relay A + relay B + Redis ÷ one relay's, saturated",
         ("cross-saturated", "total_cpu_us_per_msg"),
         ("single-saturated", "relay_cpu_us_per_msg"), 4.0, "x"),
        (f"cross-relay p99 ÷ one relay's p99, at {plan.rate:,} msg/s",
         ("cross-rate", "latency_p99_us"), ("single-rate", "latency_p99_us"), 2.0, "x"),
        (f"{idle} with Redis: Redis CPU", ("idle-redis", "redis_info_cpu_pct"), None, 0.3,
         "% of a core"),
        (f"{idle} with Redis: their relay's CPU", ("idle-redis", "relay_b_cpu_pct"), None,
         0.3, "% of a core"),
        (f"{idle} without Redis: the relay's CPU (reference)", ("idle", "relay_cpu_pct"),
         None, None, "% of a core"),
    ]


def median(results, name, key):
    values = [r[key] for r in results.get(name, []) if r.get(key) is not None]
    return statistics.median(values) if values else None


def figures_table(plan, results):
    lines = ["| scenario | figure | median | each run |", "|---|---|---:|---|"]
    for scenario in scenarios(plan):
        name = scenario.name
        if name not in results:
            continue
        for i, (key, label) in enumerate(scenario.figures):
            each = ", ".join(fmt(r.get(key)) for r in results[name])
            lines.append(f"| {scenario.title if i == 0 else ''} | {label} | "
                         f"{fmt(median(results, name, key))} | {each} |")
    return lines


def targets_table(plan, results):
    lines = ["| figure | target | measured | |", "|---|---|---:|---|"]
    for label, (name, key), divisor, target, unit in targets(plan):
        value = median(results, name, key)
        if divisor and value is not None:
            below = median(results, *divisor)
            value = value / below if below else None
        if value is None:
            shown, verdict = "–", "not measured"
        else:
            shown = f"{value:,.2f}x" if unit == "x" else f"{value:,.3f}%"
            verdict = ("reference" if target is None
                       else "**met**" if value <= target else "not met")
        goal = "–" if target is None else f"≤ {target:g}{'x' if unit == 'x' else '%'}"
        lines.append(f"| {label} | {goal} | {shown} | {verdict} |")
    return lines


def count(value):
    """A rate, with three decimals where it is small."""
    return f"{value:,.0f}" if value >= 100 else f"{value:,.3f}"


def profile_tables(plan, results):
    """Redis's top commands by time, per scenario (the median over runs of each)."""
    lines = []
    for scenario in scenarios(plan):
        name, title = scenario.name, scenario.title
        runs = [r["commands"] for r in results.get(name, []) if "commands" in r]
        if not runs:
            continue
        unit = "second" if name.startswith("idle") else (
            "PUBLISH" if name.startswith("publish") else "message")
        commands = {c for run in runs for c in run}
        rows = sorted(((statistics.median(run.get(c, [0, 0])[1] for run in runs),
                        statistics.median(run.get(c, [0, 0])[0] for run in runs), c)
                       for c in commands), reverse=True)[:TOP_COMMANDS]
        lines += [f"{title}:", "", f"| command | calls per {unit} | µs per {unit} "
                  "| µs per call |", "|---|---:|---:|---:|"]
        for usec, calls, command in rows:
            per_call = f"{usec / calls:,.2f}" if calls else "–"
            lines.append(f"| `{command}` | {count(calls)} | {count(usec)} | {per_call} |")
        lines.append("")
    return lines


# ---- the run -------------------------------------------------------------------------


def selected(plan, spec):
    known = [s.name for s in scenarios(plan)]
    if not spec:
        return known
    chosen = spec.split(",")
    for name in chosen:
        if name not in known:
            raise SystemExit(f"{PROG}: unknown scenario {name!r}; choose from "
                             f"{', '.join(known)}")
    return [name for name in known if name in chosen]


def check_prerequisites(setup, plan, names):
    """Fails, naming every missing piece, before anything is started."""
    needs_redis = {s.name for s in scenarios(plan) if s.redis}
    missing = needs_relay(setup)
    if set(names) & needs_redis and shutil.which("redis-server") is None:
        missing.append("redis-server (Debian: apt-get install redis-server)")
    if {"publish-p1", "publish-p16"} & set(names) and shutil.which("redis-benchmark") is None:
        missing.append("redis-benchmark (Debian: apt-get install redis-tools)")
    if missing:
        raise SystemExit(f"{PROG}: missing what the measurement needs:\n"
                         + "\n".join(f"  {m}" for m in missing))


def raw_json(results):
    """Every run's figures, one run a line."""
    scenarios_json = [f" {json.dumps(name)}: [\n"
                      + ",\n".join("  " + json.dumps(r, ensure_ascii=False) for r in runs)
                      + "\n ]" for name, runs in results.items()]
    return "{\n" + ",\n".join(scenarios_json) + "\n}"


def load_average():
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def description(plan, setup, args, load_at_start):
    command = "python3 bench/scaleout.py " + " ".join(sys.argv[1:])
    redis = sh("redis-server --version")
    return [
        f"Measured {time.strftime('%Y-%m-%d %H:%M %Z')} by `{command.strip()}` "
        f"(median of {args.runs} run{'s' if args.runs != 1 else ''}; load average "
        f"{load_at_start} at the start, {load_average()} at the end).", "",
        *machine(setup),
        f"- {redis}",
        "- Everything on loopback on this machine: redis-server, the relays and the load "
        "generator share its cores. CPU: each process's CPU clock (what /proc/PID/stat "
        "counts in 10 ms ticks, to the nanosecond) and Redis's INFO cpu, over the bench's "
        "measured phase (`--marks`).", "",
        f"Load: {plan.recipients} recipients, {plan.senders} senders, {plan.size}-byte "
        f"messages; saturated: `throughput -n {plan.single_messages}` (one relay) and "
        f"`-n {plan.cross_messages}` (two relays); paced: `latency --rate {plan.rate} "
        f"--duration {plan.duration}`; idle: `idle -c {plan.idle_connections}`, CPU over "
        f"{plan.idle_window:g} s from {plan.idle_settle:g} s after the last registration. "
        f"Floor: `redis-benchmark -c 50 -n N -P 1|16 PUBLISH {CHANNEL} <{plan.size} bytes>` "
        "with one subscriber on the channel.", "",
    ]


def smoke_check(plan, results):
    """In --smoke: every message arrived, every connection was held, every figure is there."""
    for name, runs in results.items():
        for r in runs:
            if r.get("lost"):
                raise SystemExit(f"{PROG}: {name} lost {r['lost']} message(s): {r}")
            if "registered" in r and r["registered"] != plan.idle_connections:
                raise SystemExit(f"{PROG}: {name} held {r['registered']} connections: {r}")
    for label, (name, key), *_ in targets(plan):
        if name in results and median(results, name, key) is None:
            raise SystemExit(f"{PROG}: no {key} in {name}: {results[name]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each scenario (median)")
    parser.add_argument("--only", help="comma-separated scenario names; implies --no-write")
    parser.add_argument("--no-write", action="store_true", help="print, do not edit the doc")
    parser.add_argument("--smoke", action="store_true", help="every scenario once with tiny "
                        "counts, checks nothing is lost; implies --no-write")
    parser.add_argument("--bin-dir", help="use notify-relay and notify-relay-bench from "
                        "here instead of building target/release")
    parser.add_argument("--publish-requests", type=int, default=200_000,
                        help="redis-benchmark -n at -P 1 (five times this at -P 16)")
    parser.add_argument("--single-messages", type=int, default=300_000,
                        help="messages of the saturated run on one relay")
    parser.add_argument("--cross-messages", type=int, default=75_000,
                        help="messages of the saturated run across two relays")
    parser.add_argument("--rate", type=int, default=5000, help="msg/s of the paced runs")
    parser.add_argument("--duration", default="10s", help="how long the paced runs send")
    parser.add_argument("--idle-connections", type=int, default=10_000)
    parser.add_argument("--idle-settle", type=float, default=5.0,
                        help="seconds between the last registration and the CPU window")
    parser.add_argument("--idle-window", type=float, default=25.0,
                        help="seconds of the idle CPU window")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.no_write = 1, True
    if args.only:
        args.no_write = True
    plan = Plan(args)
    names = selected(plan, args.only)
    setup = binaries(args.bin_dir)
    check_prerequisites(setup, plan, names)
    raise_fd_limit(FDS_NEEDED, f"idle with {plan.idle_connections:,} connections")
    # A SIGTERM stops the processes started here too, as an exception does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(f"{PROG}: terminated"))

    load_at_start = load_average()
    runners = {s.name: s.run for s in scenarios(plan)}
    results = {}
    # Run after run, every scenario in each: the machine's moods spread over all of them.
    for run in range(1, args.runs + 1):
        for name in names:
            label = f"run {run}/{args.runs}, {name}"
            print(f"{PROG}: {label}", file=sys.stderr, flush=True)
            results.setdefault(name, []).append(runners[name](setup, label))
    if args.smoke:
        smoke_check(plan, results)

    lines = [START, "", *description(plan, setup, args, load_at_start),
             *figures_table(plan, results), "", *targets_table(plan, results), "",
             "Redis's profile (INFO commandstats over the measured phase; a script's time "
             "includes the commands it runs, which are listed on their own too):", "",
             *profile_tables(plan, results),
             "<details><summary>raw JSON</summary>", "", "```json",
             raw_json(results), "```", "", "</details>", "",
             END]
    block = "\n".join(lines)
    print(block)
    if not args.no_write:
        write_section(DOC, START, END, block, "# Scaling\n")


if __name__ == "__main__":
    main()
