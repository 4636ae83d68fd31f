#!/usr/bin/env bash
# The control plane at scale: N simulated subscribers (default 10,000) of one service, each
# its own TLS + HTTP/2 connection, against a mesh-control child process. Prints the time to
# connect them, the control plane's RSS growth per connected proxy, and the delivery
# p50/p99/max of a policy change (PUT /v1/policy to each subscriber's receipt), plus when the
# control plane had recorded the last ack.
#
#   bash bench/control.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-10000}"
# Two descriptors per subscriber across the two processes, plus slack.
want=$((N + 1024))
ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "fd limit: $(ulimit -n)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/control-helper}"
cargo bench -p mesh-control --bench subscribers -- "$N"
