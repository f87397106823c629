#!/usr/bin/env bash
# Builds the agent as it was before sessions (one signaling, punch and handshake per connection,
# commit af11234), for `scripts/bench.sh --baseline-agent`. Prints the binary's path.
# usage: scripts/bench/baseline.sh [COMMIT]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
COMMIT="${1:-af11234}"
DIR="${BASELINE_DIR:-$ROOT/.build-baseline}"
if [ ! -d "$DIR/src" ]; then
    git clone -q "$ROOT" "$DIR/src"
fi
git -C "$DIR/src" checkout -q "$COMMIT"
(cd "$DIR/src" && swift build -c release --product stunturn-agent --scratch-path "$DIR/build") >&2
echo "$DIR/build/release/stunturn-agent"
