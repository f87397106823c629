#!/usr/bin/env bash
# Builds the libFuzzer targets (Fuzz/Package.swift) and runs them. See docs/FUZZING.md.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/fuzz.sh [TARGET|all] [SECONDS]
       scripts/fuzz.sh seeds

  TARGET   stun, signaling, config, records, datagrams, mux or admin; all (the default) runs
           each in turn.
  SECONDS  how long each target runs (default 30).
  seeds    writes the seed corpora that are made by code (keys, encoders) into Fuzz/corpus/.

Environment:
  FUZZ_PARALLEL=N   run N targets at once (default 1).
  FUZZ_RSS_MB=MB    a target's memory limit; past it (or one allocation that large) is a finding
                    (default 2048).
  FUZZ_ARGS="..."   more libFuzzer flags for every target.

Each target reads its seeds from Fuzz/corpus/TARGET and keeps what it finds in
Fuzz/.build/corpus/TARGET, so later runs start from there. A crash, a hang (-timeout) or a leak
is written to Fuzz/.build/artifacts/TARGET/ and fails the run; the log names the input.
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FUZZ="$ROOT/Fuzz"
BUILD="$FUZZ/.build"
TARGETS=(stun signaling config records datagrams mux admin)
# libFuzzer reports a crash itself (stack, input); Swift's backtracer would take minutes over it.
export SWIFT_BACKTRACE=enable=no

# The longest input each target tries: what one read, datagram or file of that kind can be.
max_len() {
    case $1 in
        stun) echo 1500 ;;        # one UDP datagram on an Ethernet path
        signaling) echo 4096 ;;   # the server's hello limit
        config) echo 8192 ;;      # config.yaml.example is under 6 KiB
        records) echo 4096 ;;
        datagrams) echo 4096 ;;
        mux) echo 8192 ;;
        admin) echo 1024 ;;       # the agent reads at most 257 bytes of a request
    esac
}

build() {
    echo "fuzz: building the targets (debug, -sanitize=fuzzer,address) in $BUILD" >&2
    local started=$SECONDS status=0
    # The linker's notes about AddressSanitizer's local symbols are noise.
    swift build --package-path "$FUZZ" --scratch-path "$BUILD" -c debug -Xswiftc -sanitize=fuzzer,address 2>&1 \
        | grep -v "Cannot export local symbol" || true
    status=${PIPESTATUS[0]}
    [ "$status" = 0 ] || { echo "fuzz: build failed" >&2; exit "$status"; }
    echo "fuzz: built in $((SECONDS - started)) s" >&2
}

# Runs one target; prints one summary line and returns libFuzzer's status.
run_target() {
    local target=$1 seconds=$2
    local corpus="$BUILD/corpus/$target" artifacts="$BUILD/artifacts/$target/" log="$BUILD/logs/$target.log"
    mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
    local status=0
    # shellcheck disable=SC2086  # FUZZ_ARGS is a list of flags
    "$BUILD/debug/fuzz-$target" "$corpus" "$FUZZ/corpus/$target" \
        -max_total_time="$seconds" -max_len="$(max_len "$target")" -rss_limit_mb="${FUZZ_RSS_MB:-2048}" \
        -timeout=10 -artifact_prefix="$artifacts" -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?
    local execs cov ft
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
    if [ "$status" = 0 ]; then
        printf 'fuzz: %-10s ok      %s s, %s executions, cov %s, ft %s\n' "$target" "$seconds" "${execs:-?}" "${cov:-?}" "${ft:-?}"
    else
        printf 'fuzz: %-10s FAILED  exit %s after %s executions; log %s\n' "$target" "$status" "${execs:-?}" "$log"
        grep -E '^(==[0-9]+==ERROR|SUMMARY|Fatal error|.*Fatal error:|artifact_prefix|Test unit written)' "$log" | head -8 | sed 's/^/    /'
        echo "    reproduce: $BUILD/debug/fuzz-$target $artifacts<file>"
    fi
    return "$status"
}

target=${1:-all}
seconds=${2:-30}
case $target in
    -h|--help|help) usage; exit 0 ;;
    seeds)
        build
        for t in "${TARGETS[@]}"; do
            # Targets whose seeds are files (config, and the RFC 5769 vectors) write none or add to them.
            STUNTURN_FUZZ_WRITE_SEEDS="$FUZZ/corpus/$t" "$BUILD/debug/fuzz-$t"
        done
        exit 0 ;;
    all) selected=("${TARGETS[@]}") ;;
    *)
        if [[ " ${TARGETS[*]} " != *" $target "* ]]; then usage >&2; exit 2; fi
        selected=("$target") ;;
esac
[[ $seconds =~ ^[0-9]+$ && $seconds -gt 0 ]] || { usage >&2; exit 2; }

build
parallel=${FUZZ_PARALLEL:-1}
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
running=0
for t in "${selected[@]}"; do
    ( run_target "$t" "$seconds" && touch "$results/$t.ok" || touch "$results/$t.failed" ) &
    running=$((running + 1))
    if [ "$running" -ge "$parallel" ]; then
        wait -n || true
        running=$((running - 1))
    fi
done
wait
passed=$(find "$results" -name '*.ok' | wc -l)
failed=$(find "$results" -name '*.failed' | wc -l)
echo "fuzz: $passed passed, $failed failed"
[ "$failed" = 0 ]
