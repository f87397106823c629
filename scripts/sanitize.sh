#!/usr/bin/env bash
# Runs the unit and loopback test suites under ThreadSanitizer and AddressSanitizer (with
# LeakSanitizer), each built in a folder of its own (.build-tsan, .build-asan) so the normal
# .build is untouched. The agent processes the end-to-end tests start are the sanitized build's.
# The NAT lab is skipped (it needs namespaces and takes minutes on its own). docs/FUZZING.md
# records what a run found.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: scripts/sanitize.sh [thread|address|all] [swift test options...]

  thread    swift test --sanitize=thread in .build-tsan
  address   swift test --sanitize=address in .build-asan (leaks are reported at each exit)
  all       both, one after the other (the default)

Options after the sanitizer go to swift test (e.g. --filter StunturnMuxTests). The NAT lab is
skipped; the suites with tight deadlines (server, admin socket, hole punch, systemd watchdog) run
in a second pass, one test at a time. Every process's reports are written to
.build-SAN/sanitizer-logs/ as well; the run fails when a test fails or any report was written.
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

which=${1:-all}
[ $# -gt 0 ] && shift
case $which in
    thread|address) sanitizers=("$which") ;;
    all) sanitizers=(thread address) ;;
    -h|--help|help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac

# The NAT lab is left out: network namespaces, a lab of its own (scripts/natlab.sh), minutes long
# without a sanitizer.
skips=(--skip NATLab)
# Suites whose deadlines (a hello within 2 s, an admin answer within 5 s, a watchdog's pace) are
# missed when every suite runs at once at a sanitizer's speed on two cores: they run in a second
# pass, one test at a time.
timed=(RendezvousServerTests AdminServerTests AdminSocketDirectoryTests HolePunchTests SystemdNotifyTests)

run() {
    local sanitizer=$1; shift
    local short=${sanitizer:0:1}san
    local scratch="$ROOT/.build-$short" logs="$ROOT/.build-$short/sanitizer-logs"
    rm -rf "$logs"
    mkdir -p "$logs"
    echo "sanitize: $sanitizer: building in $scratch" >&2
    local started=$SECONDS
    swift build --build-tests --sanitize="$sanitizer" --scratch-path "$scratch"
    echo "sanitize: $sanitizer: built in $((SECONDS - started)) s" >&2

    started=$SECONDS
    local status=0
    local timed_skips=() timed_filters=()
    for suite in "${timed[@]}"; do timed_skips+=(--skip "$suite"); timed_filters+=(--filter "$suite"); done
    # Reports go to a file per process (the test runner and every agent it starts) as well as
    # stderr; a report does not stop the process, so one run shows them all.
    export TSAN_OPTIONS="log_path=$logs/tsan:halt_on_error=0:second_deadlock_stack=1:suppressions=$ROOT/scripts/tsan-suppressions.txt:${TSAN_OPTIONS:-}"
    export ASAN_OPTIONS="log_path=$logs/asan:detect_leaks=1:${ASAN_OPTIONS:-}"
    export LSAN_OPTIONS="suppressions=$ROOT/scripts/lsan-suppressions.txt:${LSAN_OPTIONS:-}"
    export STUNTURN_AGENT="$scratch/debug/stunturn-agent"
    if [ $# -gt 0 ]; then
        # The caller chose the tests.
        swift test --skip-build --sanitize="$sanitizer" --scratch-path "$scratch" "${skips[@]}" "$@" \
            >"$logs/swift-test.log" 2>&1 || status=$?
        tail -1 "$logs/swift-test.log"
    else
        swift test --skip-build --sanitize="$sanitizer" --scratch-path "$scratch" "${skips[@]}" "${timed_skips[@]}" \
            >"$logs/swift-test.log" 2>&1 || status=$?
        tail -1 "$logs/swift-test.log"
        swift test --skip-build --sanitize="$sanitizer" --scratch-path "$scratch" --no-parallel "${timed_filters[@]}" \
            >"$logs/swift-test-timed.log" 2>&1 || status=$?
        tail -1 "$logs/swift-test-timed.log"
    fi
    local elapsed=$((SECONDS - started))
    # A process whose leaks were all suppressed still writes a file (the suppressions it used).
    local reports
    reports=$(grep -lE "ERROR: (AddressSanitizer|LeakSanitizer)|WARNING: ThreadSanitizer" "$logs"/"$short".* 2>/dev/null | wc -l)
    echo "sanitize: $sanitizer: tests took $elapsed s, exit $status, $reports process(es) with reports in $logs"
    if [ "$reports" != 0 ]; then
        grep -h "^SUMMARY" "$logs"/"$short".* | sort | uniq -c | sort -rn | head -20
    fi
    [ "$status" = 0 ] && [ "$reports" = 0 ]
}

failed=0
for sanitizer in "${sanitizers[@]}"; do
    run "$sanitizer" "$@" || failed=1
done
exit "$failed"
