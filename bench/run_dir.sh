# Sourced by the scripts that measure the configurations of a variants.sh run
# (instructions.sh, paired.sh): the run directory argument, logging, ports from a
# proxy.toml, starting a proxy and waiting for it, and the nginx backend (peers.sh).
# On exit the processes in PIDS are stopped and so is the backend.
#
# Before sourcing, set SCRIPT (its name, for messages) and OUT_NAME (its directory in the
# run). Defines HERE ROOT RUN OUT PEERS BIN_DIR PIDS, log, die, toml_port, wait_ready.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
[ $# = 1 ] && [ -d "$1" ] || { echo "usage: bash bench/$SCRIPT RUN_DIR (a variants.sh run directory)" >&2; exit 2; }
RUN=$(cd "$1" && pwd)
OUT=$RUN/$OUT_NAME
BIN_DIR=${BIN_DIR:-$ROOT/target/release}
PEERS=${PEERS:-$HERE/peers/peers.sh}

log() { printf '[%s %s] %s\n' "$SCRIPT" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

toml_port() { # file section -> the port of the section's `listen`
  awk -v s="[$2]" '$0 == s {f = 1; next} /^\[/ {f = 0} f && /^listen/ {gsub(/.*:|"/, ""); print; exit}' "$1"
}

wait_ready() { # pid admin-port log tries -> returns once /ready answers; dies if the process ends or time runs out
  local pid=$1 admin=$2 logfile=$3 tries=$4
  for _ in $(seq "$tries"); do
    curl -fs --max-time 2 "http://127.0.0.1:$admin/ready" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  tail -n 20 "$logfile" >&2
  die "the proxy of $logfile is not ready"
}

mkdir -p "$OUT"
PIDS=()
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  set +e
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  bash "$PEERS" stop "$OUT/peers" >/dev/null 2>&1
  [ "$rc" = 0 ] || log "exit $rc; logs in $OUT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

bash "$PEERS" start "$OUT/peers" >"$OUT/peers.log" 2>&1 || { cat "$OUT/peers.log" >&2; die "peers.sh start failed"; }
