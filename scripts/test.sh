#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests of every crate.
# Installs what the tests need when it is missing, so it passes on a fresh machine that
# has only the Rust toolchain (Debian packages through apt-get, Python packages via pip).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive for real: Python (websockets clients), Node and
# Chromium (examples/example.html), nginx, supervisord and systemd-analyze (deployment),
# redis-server and redis-cli (several relays as one key space; Redis 7.0 or newer for the
# Redis Cluster tests, which `redis-cli --cluster create` a 3-master cluster), curl (HTTPS,
# tests/tls.rs).
missing=()
command -v python3 >/dev/null || missing+=(python3 python3-pip)
command -v curl >/dev/null || missing+=(curl ca-certificates)
command -v node >/dev/null || missing+=(nodejs npm)
command -v chromium >/dev/null || missing+=(chromium)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v supervisord >/dev/null || missing+=(supervisor)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # With recommends: Chromium's fonts come with them.
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# promtool (tests/observability.rs): Debian's prometheus package, unpacked into
# target/tools rather than installed, so no Prometheus server is set up or started.
if ! command -v promtool >/dev/null && [ ! -x target/tools/prometheus/usr/bin/promtool ]; then
  echo "unpacking: promtool (apt-get download prometheus)"
  mkdir -p target/tools/prometheus
  (cd target/tools && { apt-get download -qq prometheus 2>/dev/null ||
    { apt-get update -qq && apt-get download -qq prometheus; }; })
  dpkg-deb --fsys-tarfile target/tools/prometheus_*.deb |
    tar -x -C target/tools/prometheus ./usr/bin/promtool
  rm -f target/tools/prometheus_*.deb
fi

# The Python websockets library (>= 13 for its asyncio client API).
if ! python3 -c 'import websockets.asyncio.client' 2>/dev/null; then
  echo "installing: websockets (pip)"
  python3 -m pip install -q 'websockets>=13' 2>/dev/null ||
    python3 -m pip install -q --break-system-packages 'websockets>=13'
fi

# pytest and the Python client library (clients/python, tests/python_client.rs), installed
# the way its README says; a fresh install each run, so the installed copy is this tree's.
echo "installing: pytest, ./clients/python (pip)"
python3 -m pip install -q --disable-pip-version-check pytest ./clients/python 2>/dev/null ||
  python3 -m pip install -q --disable-pip-version-check --break-system-packages pytest ./clients/python
python3 -c 'import notify_relay, pytest'

# The Node ws relay of bench/peers, which tests/bench_compare.rs starts (--omit=optional
# leaves out uWebSockets.js: the benchmark's own setup, `npm ci` there, installs it).
if [ ! -d bench/peers/node_modules/ws ]; then
  echo "installing: ws (npm)"
  (cd bench/peers && npm ci --omit=optional --silent --no-audit --no-fund)
fi

# playwright-core drives the system Chromium (it never downloads a browser); ws runs the
# JS client under Node.
if [ ! -d tests/browser/node_modules/playwright-core ] || [ ! -d tests/browser/node_modules/ws ]; then
  echo "installing: playwright-core, ws (npm)"
  (cd tests/browser && npm ci --silent --no-audit --no-fund)
fi

rustup component add rustfmt clippy >/dev/null 2>&1 || true

# cargo-deb (tests/debian_package.rs builds the .deb). Pinned: the test packages the dev
# build it already has (--profile dev), which newer cargo-deb releases may refuse.
if ! cargo deb --version >/dev/null 2>&1; then
  echo "installing: cargo-deb (cargo install, about 2 minutes)"
  cargo install cargo-deb --locked --version 3.8.0 --quiet
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Tests of one package run binaries of another (the CLI, the relay): build them all first.
cargo build --workspace --bins
cargo test --workspace

# Every test stops what it started, pass or fail: nothing may still run a binary of this
# build (the relay, the CLI, the bench) once the suite is over.
left=()
for exe in /proc/[0-9]*/exe; do
  target=$(readlink "$exe" 2>/dev/null) || continue
  case "$target" in "$PWD"/target/*) left+=("${exe%/exe}: $target") ;; esac
done
if ((${#left[@]})); then
  printf 'still running after the tests:\n' >&2
  printf '  %s\n' "${left[@]}" >&2
  exit 1
fi
