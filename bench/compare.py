#!/usr/bin/env python3
"""Run the notify-relay-bench scenarios against notify-relay and its peers in one run.

The peers live in bench/peers/: uWebSockets.js (uws_relay.js), Node `ws` (ws_relay.js)
and the original Python server on `websockets` (original.py). Each run of each scenario
gets a fresh server process on a free port; the script checks that the process it
started is the one listening there before it loads it. The results and their ratios go
into docs/BENCHMARKS.md, between the results markers.

    cd bench/peers && npm ci && cd ../..      # the Node peers (ws, uWebSockets.js)
    python3 -m pip install 'websockets>=13'   # the original's library
    python3 bench/compare.py [--runs 3] [--only throughput,latency] [--servers relay,uws]
    python3 bench/compare.py --smoke          # each server starts and relays; no doc

Loopback only. Every run is bounded by the bench's own --max-time and a timeout here.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import (ROOT, Binaries, Started, binaries, fmt, free_port, machine,
                      needs_relay, raise_fd_limit, sh, write_section)

DOC = ROOT / "docs" / "BENCHMARKS.md"
CACHE = ROOT / "target" / "compare-results.json"
START, END = "<!-- results:start -->", "<!-- results:end -->"
UWS_PACKAGE = "@trufflesuite/uws-js-unofficial"
# How long a bench run may take to finish.
BENCH_TIMEOUT_S = 300
# Descriptors the largest scenario needs in the server (idle-19k), with some headroom.
FDS_NEEDED = 19_100

FANOUT_FIGURES = [
    ("deliveries_per_s", "deliveries/s", "high"),
    ("server_cpu_us_per_msg", "server CPU µs per delivery", "low"),
    ("latency_p99_us", "latency p99 µs", "low"),
    ("lost", "lost", "low"),
]

# name, bench arguments, the figures to show (key, label, better direction)
SCENARIOS = [
    ("throughput", ["throughput", "-r", "100", "-s", "10", "-n", "500000", "-p", "64"], [
        ("delivered_per_s", "delivered msgs/s", "high"),
        ("server_cpu_us_per_msg", "server CPU µs per message", "low"),
        ("latency_p50_us", "latency p50 µs (closed loop)", "low"),
        ("latency_p99_us", "latency p99 µs (closed loop)", "low"),
        ("lost", "lost", "low"),
    ]),
    ("latency", ["latency", "--rate", "5000", "--duration", "10s"], [
        ("latency_p50_us", "latency p50 µs", "low"),
        ("latency_p90_us", "latency p90 µs", "low"),
        ("latency_p99_us", "latency p99 µs", "low"),
        ("latency_max_us", "latency max µs", "low"),
        ("server_cpu_us_per_msg", "server CPU µs per message", "low"),
        ("lost", "lost", "low"),
    ]),
    ("idle", ["idle", "-c", "10000", "--hold", "3s"], [
        ("server_bytes_per_conn", "server bytes per idle connection", "low"),
        ("server_rss_kib", "server RSS KiB", "low"),
        ("errors", "errors", "low"),
    ]),
    ("idle-19k", ["idle", "-c", "19000", "--hold", "3s"], [
        ("registered", "connections held", None),
        ("errors", "errors", "low"),
        ("server_bytes_per_conn", "server bytes per idle connection", "low"),
    ]),
    # One key, one sender: 1,000 connections (frames queue up and go out in batches)
    # and 10,000 (each connection's task runs before its next frame arrives, so every
    # delivery is its own write, as in uWS.js).
    ("fanout", ["fanout", "-k", "1000", "-n", "1000", "--max-time", "60s"], FANOUT_FIGURES),
    ("fanout-10k", ["fanout", "-k", "10000", "-n", "100", "--max-time", "60s"], FANOUT_FIGURES),
    ("churn", ["churn", "-c", "10000", "--cycles", "10"], [
        ("server_peak_rss_kib_first", "peak RSS KiB, cycle 1", "low"),
        ("server_peak_rss_kib_last", "peak RSS KiB, cycle 10", "low"),
        ("peak_growth_pct", "peak growth % (cycle 10 vs 1)", None),
        ("errors", "errors", "low"),
    ]),
]
# Noisy on a shared 2-core machine: repeated, median reported.
REPEATED = {"throughput", "latency", "fanout", "fanout-10k"}
# The smoke check: a few messages through each server, nothing lost.
SMOKE = ["throughput", "-r", "2", "-s", "1", "-n", "20", "-w", "5"]


class Setup(Binaries):
    """Where the binaries and the peers are."""

    def __init__(self, bin_dir, peers):
        super().__init__(bin_dir)
        self.peers = Path(peers)


class Server:
    """One server of the comparison: how to start it and what it needs."""

    def __init__(self, slug, title, command, needs):
        self.slug = slug  # for --servers
        self.title = title  # the column heading
        self.command = command  # (setup, port) -> argv
        self.needs = needs  # setup -> [what is missing]


def node_module_missing(setup, module):
    """None when `module` resolves from the peers folder, else what to do about it."""
    found = subprocess.run(
        ["node", "-e", f"require.resolve({json.dumps(module + '/package.json')})"],
        cwd=setup.peers, capture_output=True)
    if found.returncode == 0:
        return None
    return (f"the npm package {module} in {setup.peers}/node_modules "
            f"(run: cd {setup.peers} && npm ci)")


def peer_file_missing(setup, name):
    path = setup.peers / name
    return None if path.is_file() else f"the peer {path}"


def needs_node_peer(file, module):
    def needs(setup):
        missing = [peer_file_missing(setup, file)]
        if shutil.which("node") is None:
            missing.append("node (Debian: apt-get install nodejs npm)")
        elif setup.peers.is_dir():
            missing.append(node_module_missing(setup, module))
        return [m for m in missing if m]
    return needs


def needs_original(setup):
    missing = [peer_file_missing(setup, "original.py")]
    probe = subprocess.run([sys.executable, "-c", "import websockets.asyncio.server"],
                           capture_output=True)
    if probe.returncode != 0:
        missing.append(f"the Python websockets library for {sys.executable} "
                       "(run: python3 -m pip install 'websockets>=13')")
    return [m for m in missing if m]


SERVERS = [
    Server("relay", "notify-relay",
           lambda s, port: [str(s.relay), "--host", "127.0.0.1", str(port)], needs_relay),
    Server("uws", "uWS.js",
           lambda s, port: ["node", str(s.peers / "uws_relay.js"), str(port), "127.0.0.1"],
           needs_node_peer("uws_relay.js", UWS_PACKAGE)),
    Server("ws", "Node ws",
           lambda s, port: ["node", str(s.peers / "ws_relay.js"), str(port), "127.0.0.1"],
           needs_node_peer("ws_relay.js", "ws")),
    Server("original", "python original",
           lambda s, port: [sys.executable, str(s.peers / "original.py"), str(port)],
           needs_original),
    # The same build with retention off: what streams cost, measured in the same run.
    Server("relay-nostreams", "notify-relay --buffer-ttl 0s",
           lambda s, port: [str(s.relay), "--host", "127.0.0.1", "--buffer-ttl", "0s",
                            str(port)], needs_relay),
]
BY_SLUG = {server.slug: server for server in SERVERS}
# The original keeps one connection per key (a new registration replaces the last), so
# fanout to many connections under one key is not something it can do.
NOT_IN = {("fanout", "original"), ("fanout-10k", "original")}


def run_once(setup, server, args):
    port = free_port()
    started = Started(server.title, server.command(setup, port), port)
    try:
        started.wait_listening()
        cmd = [str(setup.bench), "--url", f"ws://127.0.0.1:{started.port}/",
               "--pid", str(started.proc.pid), "--json", "--max-time", "120s", *args]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=BENCH_TIMEOUT_S)
        if out.returncode != 0:
            raise SystemExit(f"compare: notify-relay-bench {' '.join(args)} against "
                             f"{server.title} failed:\n{out.stderr.strip()}\n"
                             f"server output:\n{started.output()}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        started.stop()


def measure(setup, servers, name, args, runs):
    """Each server's median over the runs; the runs take turns (every server once, then
    again), so a machine that slows down for a while weighs on every server alike."""
    present = [s for s in servers if (name, s.slug) not in NOT_IN]
    results = {s.title: [] for s in present}
    for round_ in range(runs if name in REPEATED else 1):
        for server in present:
            print(f"{name}: {server.title} (run {round_ + 1})", file=sys.stderr, flush=True)
            results[server.title].append(run_once(setup, server, args))
    return {title: median_of(runs_) for title, runs_ in results.items()}


def median_of(results):
    merged = dict(results[0])
    for key, value in results[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            merged[key] = statistics.median(r[key] for r in results if r.get(key) is not None)
    merged["runs"] = len(results)
    return merged


def ratio(ours, theirs, better):
    """How notify-relay compares; "–" where a ratio means nothing (counts, percentages)."""
    if better is None:
        return "–"
    if not isinstance(ours, (int, float)) or not isinstance(theirs, (int, float)):
        return "–"
    if ours == 0 or theirs == 0:
        return "–"
    r = theirs / ours if better == "low" else ours / theirs
    if abs(r - 1) < 0.05:
        return "about the same"
    return f"{r:,.1f}× better" if r >= 1 else f"{1 / r:,.1f}× worse"


def peers_machine(setup, servers):
    lines = machine(setup)
    slugs = {s.slug for s in servers}
    if slugs & {"uws", "ws"}:
        version = ("node -p \"require(process.argv[1] + '/package.json').version\" ")
        node = [f"Node {sh('node --version')}"]
        if "uws" in slugs:
            node.append(f"uWebSockets.js {sh(version + UWS_PACKAGE, setup.peers)} "
                        f"({UWS_PACKAGE})")
        if "ws" in slugs:
            node.append(f"ws {sh(version + 'ws', setup.peers)}")
        lines.append("- " + ", ".join(node))
    if "original" in slugs:
        websockets = sh(f"{sys.executable} -c 'import websockets; print(websockets.__version__)'")
        lines.append(f"- Python {platform.python_version()}, websockets {websockets}")
    lines.append("- The load generator runs on the same machine (loopback), sharing the "
                 f"{os.cpu_count()} cores with the server and with whatever else runs there.")
    return lines


def selected_servers(spec):
    if not spec:
        return list(SERVERS)
    chosen = []
    for slug in spec.split(","):
        if slug not in BY_SLUG:
            raise SystemExit(f"compare: unknown server {slug!r}; "
                             f"choose from {', '.join(BY_SLUG)}")
        chosen.append(BY_SLUG[slug])
    return chosen


def check_prerequisites(setup, servers):
    """Fails, naming every missing piece, before anything is started."""
    missing = [(server.title, item) for server in servers for item in server.needs(setup)]
    if missing:
        lines = [f"  {title}: {item}" for title, item in missing]
        raise SystemExit("compare: missing what the comparison needs:\n" + "\n".join(lines)
                         + "\n(or leave servers out with --servers)")


def smoke(setup, servers):
    """Each server starts, is the process listening on its port, and relays a few messages."""
    for server in servers:
        result = run_once(setup, server, SMOKE)
        if result.get("lost") != 0 or result.get("delivered") != result.get("sent"):
            raise SystemExit(f"compare: {server.title} lost messages: {result}")
        print(f"smoke: {server.title} relayed {result['delivered']} message(s)", flush=True)


def table(name, bench_args, figures, results, servers):
    first = next(iter(results.values()), {})
    runs = first.get("runs", 1)
    absent = [s.title for s in servers if (name, s.slug) in NOT_IN]
    note = (f" {', '.join(absent)}: not measured, it keeps one connection per key."
            if absent else "")
    titles = [s.title for s in SERVERS]
    ours, uws, original, off = (BY_SLUG[slug].title
                                for slug in ("relay", "uws", "original", "relay-nostreams"))
    lines = [f"### {name}", "",
             f"`notify-relay-bench --pid PID {' '.join(bench_args)}`"
             + (f" (median of {runs} runs, taking turns)" if runs > 1 else "") + note, "",
             "| figure | " + " | ".join(titles) + " | notify-relay vs uWS.js |"
             + " notify-relay vs original | streams on ÷ off |",
             "|---|" + "---:|" * len(titles) + "---|---|---|"]
    for key, label, better in figures:
        value = {t: results.get(t, {}).get(key) for t in titles}
        lines.append(f"| {label} | " + " | ".join(fmt(value[t]) for t in titles)
                     + f" | {ratio(value[ours], value[uws], better)}"
                     + f" | {ratio(value[ours], value[original], better)}"
                     + f" | {quotient(value[ours], value[off])} |")
    lines.append("")
    return lines


def quotient(on, off):
    """Streams on ÷ off, for the figures where both are numbers."""
    if not isinstance(on, (int, float)) or not isinstance(off, (int, float)) or not off:
        return "–"
    return f"{on / off:.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of the noisy scenarios")
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--servers", help="comma-separated, from: " + ", ".join(BY_SLUG))
    parser.add_argument("--no-write", action="store_true", help="print, do not edit the doc")
    parser.add_argument("--smoke", action="store_true",
                        help="only check that each server starts and relays; implies --no-write")
    parser.add_argument("--bin-dir", help="use notify-relay and notify-relay-bench from "
                        "here instead of building target/release")
    parser.add_argument("--peers", default=str(ROOT / "bench" / "peers"),
                        help="the folder of the peer servers")
    args = parser.parse_args()
    servers = selected_servers(args.servers)
    setup = Setup(binaries(args.bin_dir).bin_dir, args.peers)
    check_prerequisites(setup, servers)
    raise_fd_limit(FDS_NEEDED, "idle-19k", ", or skip it with --only")
    if args.smoke:
        smoke(setup, servers)
        return

    only = set(args.only.split(",")) if args.only else None
    command = "python3 bench/compare.py " + " ".join(sys.argv[1:])
    lines = [START, "", f"Measured {time.strftime('%Y-%m-%d')} by `{command.strip()}`.", "",
             *peers_machine(setup, servers), ""]
    # Results are kept per scenario and server, so `--only` and `--servers` re-measure
    # some and keep the rest.
    raw = json.loads(CACHE.read_text()) if CACHE.exists() and (only or args.servers) else {}
    for name, bench_args, figures in SCENARIOS:
        if not only or name in only:
            results = raw.get(name, {})
            for server in servers:
                if (name, server.slug) in NOT_IN:
                    results.pop(server.title, None)
            results.update(measure(setup, servers, name, bench_args, args.runs))
            raw[name] = results
            CACHE.parent.mkdir(exist_ok=True)
            CACHE.write_text(json.dumps(raw, indent=1))
        if name in raw:
            lines += table(name, bench_args, figures, raw[name], servers)
    lines += ["<details><summary>raw JSON</summary>", "", "```json",
              json.dumps(raw, indent=1, ensure_ascii=False), "```", "", "</details>", "", END]
    block = "\n".join(lines)
    print(block)
    if args.no_write:
        return
    write_section(DOC, START, END, block, "# Benchmarks\n")


if __name__ == "__main__":
    main()
