#!/usr/bin/env python3
"""Run the same notify-relay-bench scenarios against notify-relay and against the Python
original (../shared/bench/ref_relay.py), a fresh server process per run, and write the
results and their ratios into docs/BENCHMARKS.md (between the results markers).

    python3 bench/compare.py [--runs 3] [--only throughput,latency] [--no-write]

Loopback only. Every run is bounded by the bench's own --max-time.
"""
import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELAY = ROOT / "target" / "release" / "notify-relay"
BENCH = ROOT / "target" / "release" / "notify-relay-bench"
REFERENCE = ROOT.parent / "shared" / "bench" / "ref_relay.py"
DOC = ROOT / "docs" / "BENCHMARKS.md"
CACHE = ROOT / "target" / "compare-results.json"
START, END = "<!-- results:start -->", "<!-- results:end -->"
PORT = 18765

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
    ("fanout", ["fanout", "-k", "1000", "-n", "1000", "--max-time", "60s"], [
        ("deliveries_per_s", "deliveries/s", "high"),
        ("server_cpu_us_per_msg", "server CPU µs per delivery", "low"),
        ("latency_p99_us", "latency p99 µs", "low"),
        ("lost", "lost", "low"),
    ]),
    ("churn", ["churn", "-c", "10000", "--cycles", "10"], [
        ("server_peak_rss_kib_first", "peak RSS KiB, cycle 1", "low"),
        ("server_peak_rss_kib_last", "peak RSS KiB, cycle 10", "low"),
        ("peak_growth_pct", "peak growth % (cycle 10 vs 1)", None),
        ("errors", "errors", "low"),
    ]),
]
# Noisy on a shared 2-core machine: repeated, median reported.
REPEATED = {"throughput", "latency", "fanout"}
# The original keeps one connection per key (a new registration replaces the last), so
# fanout to many connections under one key is not something it can do.
NOT_IN_ORIGINAL = {"fanout"}

SERVERS = {
    "notify-relay": lambda port: [str(RELAY), "--host", "127.0.0.1", str(port)],
    "python original": lambda port: [sys.executable, str(REFERENCE), str(port)],
}


def wait_for_port(port, deadline_s=15.0):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port}")


def run_once(server, args):
    env = dict(os.environ, RUST_LOG="warn")
    proc = subprocess.Popen(SERVERS[server](PORT), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(PORT)
        cmd = [str(BENCH), "--url", f"ws://127.0.0.1:{PORT}/", "--pid", str(proc.pid),
               "--json", "--max-time", "120s", *args]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def median_run(server, name, args, runs):
    results = [run_once(server, args) for _ in range(runs if name in REPEATED else 1)]
    merged = dict(results[0])
    for key, value in results[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            merged[key] = statistics.median(r[key] for r in results if r.get(key) is not None)
    merged["runs"] = len(results)
    return merged


def fmt(value):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"
    return f"{value:,}"


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


def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, shell=True).stdout.strip()
    except OSError:
        return "?"


def machine():
    cpu = sh("lscpu | sed -n 's/^Model name: *//p'") or platform.processor()
    mem = sh("free -g | awk '/Mem:/ {print $2}'")
    websockets = sh(f"{sys.executable} -c 'import websockets; print(websockets.__version__)'")
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores; memory {mem} GiB; kernel {platform.release()}",
        f"- {sh(str(RELAY) + ' --version')}; {sh('rustc --version')}",
        f"- Python {platform.python_version()}, websockets {websockets}",
        "- The load generator runs on the same machine (loopback), sharing the 2 cores.",
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of the noisy scenarios")
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--no-write", action="store_true", help="print, do not edit the doc")
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "-p", "notify-relay",
                    "-p", "notify-relay-bench"], cwd=ROOT, check=True)
    only = set(args.only.split(",")) if args.only else None

    lines = [START, "", f"Measured {time.strftime('%Y-%m-%d')} by `python3 bench/compare.py "
             f"--runs {args.runs}`.", "", *machine(), ""]
    # Results are kept per scenario, so `--only` re-measures some and keeps the rest.
    raw = json.loads(CACHE.read_text()) if CACHE.exists() and only else {}
    for name, bench_args, figures in SCENARIOS:
        if not only or name in only:
            results = {}
            for server in SERVERS:
                if server == "python original" and name in NOT_IN_ORIGINAL:
                    results[server] = {"runs": 0}
                    continue
                print(f"{name}: {server}", file=sys.stderr, flush=True)
                results[server] = median_run(server, name, bench_args, args.runs)
            raw[name] = results
            CACHE.write_text(json.dumps(raw, indent=1))
        if name not in raw:
            continue
        results = raw[name]
        ours, theirs = results["notify-relay"], results["python original"]
        runs = ours["runs"]
        note = (" The original cannot do this: it keeps one connection per key."
                if name in NOT_IN_ORIGINAL else "")
        lines += [f"### {name}", "",
                  f"`notify-relay-bench --pid PID {' '.join(bench_args)}`"
                  + (f" (median of {runs} runs)" if runs > 1 else "") + note, "",
                  "| figure | notify-relay | python original | notify-relay vs original |",
                  "|---|---:|---:|---|"]
        for key, label, better in figures:
            a, b = ours.get(key), theirs.get(key)
            lines.append(f"| {label} | {fmt(a)} | {fmt(b)} | {ratio(a, b, better)} |")
        lines.append("")
    lines += ["<details><summary>raw JSON</summary>", "", "```json",
              json.dumps(raw, indent=1, ensure_ascii=False), "```", "", "</details>", "", END]
    block = "\n".join(lines)
    print(block)
    if args.no_write:
        return
    text = DOC.read_text() if DOC.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    before, _, rest = text.partition(START)
    _, _, after = rest.partition(END)
    DOC.write_text(before + block + after)
    print(f"wrote {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
