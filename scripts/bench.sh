#!/usr/bin/env bash
# Benchmarks stunturn-agent on loopback against socat, ssh -L and direct iperf3.
# usage: scripts/bench.sh [--quick] [--only throughput,latency,signaling,footprint,sessions,relay] [--no-build]
#                         [--go-server PATH]       (the Go original's server, measured beside ours)
#                         [--baseline-agent PATH]  (an older agent, one tunnel per connection, beside
#                                                   the sessions; build one with scripts/bench/baseline.sh)
# Prints a markdown table; figures go to bench-results/bench.json, plots to docs/bench-*.png
# (when matplotlib is installed). Not part of the test suite.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SCRATCH="${BENCH_SCRATCH:-$ROOT/.build-bench}"
OUT="$ROOT/bench-results"
ARGS=()
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) ARGS+=(--quick) ;;
        --only) ARGS+=(--only "$2"); shift ;;
        --no-build) BUILD=0 ;;
        --go-server) ARGS+=(--go-server "$2"); shift ;;
        --baseline-agent) ARGS+=(--baseline-agent "$2"); shift ;;
        -h|--help) sed -n 2,8p "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

for tool in iperf3 socat sshd ssh ssh-keygen python3; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
        echo "missing $tool (apt-get install -y iperf3 socat openssh-server openssh-client python3)" >&2; exit 1; }
done

if [ "$BUILD" = 1 ]; then
    for product in stunturn-agent stunturn-bench; do
        (cd "$ROOT" && swift build -c release --scratch-path "$SCRATCH" --product "$product") >&2
    done
fi
AGENT="$SCRATCH/release/stunturn-agent"
LOADGEN="$SCRATCH/release/stunturn-bench"
for bin in "$AGENT" "$LOADGEN"; do [ -x "$bin" ] || { echo "no binary at $bin" >&2; exit 1; }; done

# 10,000 waiting initiators need a descriptor each on both sides of the socket; 1,000 relayed
# sessions six each in the server (two sockets, two pipes).
ulimit -n "$(ulimit -Hn | awk '{ print ($1 == "unlimited" || $1 > 65536) ? 65536 : $1 }')"

mkdir -p "$OUT"
PY=""
cleanup() { [ -n "$PY" ] && kill "$PY" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

python3 "$ROOT/scripts/bench/bench.py" run --agent "$AGENT" --bench "$LOADGEN" --out "$OUT/bench.json" "${ARGS[@]}" &
PY=$!
wait "$PY"
PY=""
echo
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)," \
     "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), Linux $(uname -r)"
echo "figures: $OUT/bench.json"
if python3 -c 'import matplotlib' 2>/dev/null; then
    python3 "$ROOT/scripts/bench/plot.py" "$OUT/bench.json" "$ROOT/docs" && echo "plots: docs/bench-throughput.png docs/bench-latency.png"
else
    echo "plots skipped: pip install matplotlib"
fi
