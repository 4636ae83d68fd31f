#!/usr/bin/env bash
# Heap allocations per request of each sidecar on the bench's paths, counted by uprobes on
# libc's malloc and realloc (perf) while wrk runs: every allocation the proxy process makes
# over the run, divided by the requests wrk completed. Needs root (uprobes) and perf.
#
#   bash bench/allocs.sh RUN_DIR     # a bench/load.sh run directory (proxy-a.toml, proxy-b.toml)
#
# Paths: one hop (client -> B inbound :19201 -> backend) and the full mesh hop over mTLS
# (client -> A outbound :19101 -mTLS h2-> B inbound -> backend; A and B counted apart).
# The counts are exact for the process (uprobes miss no call); background work (tickers,
# metrics) adds a little, less the longer the run. Under the probes the proxy is slower
# (each call traps), so use the counts, not the rates.
#
# Environment: BIN_DIR (default target/release), D=3 seconds per path, CONNS=32.
SCRIPT=allocs.sh OUT_NAME=allocs
# shellcheck source=bench/run_dir.sh
source "$(dirname "${BASH_SOURCE[0]}")/run_dir.sh"
D=${D:-3}; CONNS=${CONNS:-32}
LIBC=$(ldd "$BIN_DIR/mesh-proxy" | awk '/libc.so.6/ {print $3}')
[ -n "$LIBC" ] || die "cannot find the libc mesh-proxy links"
command -v perf >/dev/null || die "missing: perf"
perf probe -q -x "$LIBC" malloc 2>/dev/null || true
perf probe -q -x "$LIBC" realloc 2>/dev/null || true
perf probe -l 2>/dev/null | grep -q 'probe_libc:malloc' || die "cannot add a uprobe on $LIBC malloc (root?)"

# run_dir.sh started the nginx backend and stops it, and the PIDS, on exit.
declare -A PID
for side in a b; do
  "$BIN_DIR/mesh-proxy" --config "$RUN/proxy-$side.toml" >"$OUT/proxy-$side.log" 2>&1 &
  PID[$side]=$!; PIDS+=("$!")
  wait_ready "$!" "$(toml_port "$RUN/proxy-$side.toml" admin)" "$OUT/proxy-$side.log" 100
done

count() { # name url host -> prints allocations per request of A and B
  local name=$1 url=$2 host=$3 args=()
  [ -n "$host" ] && args=(-H "Host: $host")
  wrk -t1 -c"$CONNS" -d1 "${args[@]}" "$url" >/dev/null # warm: pools, caches
  perf stat -x, -e probe_libc:malloc,probe_libc:realloc -p "${PID[a]}" -o "$OUT/$name-a.csv" -- sleep $((D + 1)) &
  local stat_a=$!
  perf stat -x, -e probe_libc:malloc,probe_libc:realloc -p "${PID[b]}" -o "$OUT/$name-b.csv" -- sleep $((D + 1)) &
  local stat_b=$!
  sleep 0.3
  wrk -t1 -c"$CONNS" -d"$D" "${args[@]}" "$url" >"$OUT/$name-wrk.txt"
  wait "$stat_a" "$stat_b"
  local requests
  requests=$(awk '/requests in/ {print $1}' "$OUT/$name-wrk.txt")
  [ "${requests:-0}" -gt 0 ] || die "$name: wrk completed no request"
  for side in a b; do
    awk -F, -v n="$requests" -v name="$name" -v side="$side" '
      $3 ~ /malloc/ {m = $1} $3 ~ /realloc/ {r = $1}
      END {printf "%-22s proxy %s  %7.1f allocations/request (malloc %.1f, realloc %.1f; %d requests)\n", name, toupper(side), (m + r) / n, m / n, r / n, n}' \
      "$OUT/$name-$side.csv"
  done
}
count one-hop-h1 http://127.0.0.1:19201/ ""
count mtls-hop-h1 http://127.0.0.1:19101/ backend
