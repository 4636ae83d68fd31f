#!/usr/bin/env bash
# Instructions per request: the proxy of each filters-N variant of a variants.sh run, under
# callgrind, for a fixed number of requests. Unlike timings on a shared machine, the counts
# barely move between runs, so they tell apart changes too small for the load test
# (a filter's cost is a few percent of a request; this machine's timings move by 10%).
#
#   SET=filters QUICK=1 bash bench/variants.sh          # makes bench/run/variants-<time>/
#   bash bench/instructions.sh bench/run/variants-<time>
#
# What is counted: the proxy's user-space instructions (all threads) from after a warm-up
# of 1,000 requests until N more have been answered (h2load --h1, 16 connections, through
# the variant's inbound listener to the nginx backend); the kernel's work (sockets) is not
# counted. A filter's share is the difference to filters-0 of the same run.
# The proxy runs with MESH_WASM_POOLING=0: valgrind's address space cannot hold the
# instance pool's reservations; on demand, instances get the same code (no bounds checks).
#
# Environment: N=4000 requests; BIN_DIR=DIR (default target/release); PEERS=PATH
# (default bench/peers/peers.sh); RESULTS=NAME (default instructions-filters:
# bench/results/NAME.{md,json}).
# Ports: those of the run's variants, and 18080-18092 and 18441-18443 (peers.sh).
set -euo pipefail
SCRIPT=instructions.sh OUT_NAME=instructions
N=${N:-4000}
RESULTS=${RESULTS:-instructions-filters}
for t in valgrind callgrind_control callgrind_annotate h2load curl; do
  command -v "$t" >/dev/null 2>&1 || { echo "$t is needed (apt-get install valgrind nghttp2-client curl)" >&2; exit 1; }
done
# shellcheck source=bench/run_dir.sh
source "$(dirname "${BASH_SOURCE[0]}")/run_dir.sh"
[ -x "$BIN_DIR/mesh-proxy" ] || die "no $BIN_DIR/mesh-proxy (cargo build --release -p mesh-proxy)"

VARIANTS=()
for v in filters-0 filters-noop filters-1 filters-3; do
  [ -f "$RUN/$v/proxy.toml" ] && VARIANTS+=("$v")
done
[ "${#VARIANTS[@]}" -ge 2 ] && [ "${VARIANTS[0]}" = filters-0 ] ||
  die "$RUN has no filters-0 and filters-N configurations (run SET=filters bash bench/variants.sh first)"

declare -A IR=()
for v in "${VARIANTS[@]}"; do
  conf=$RUN/$v/proxy.toml
  port=$(toml_port "$conf" inbound); admin=$(toml_port "$conf" admin)
  rm -f "$OUT/$v.callgrind"*
  MESH_WASM_POOLING=0 valgrind --tool=callgrind --callgrind-out-file="$OUT/$v.callgrind" \
    "$BIN_DIR/mesh-proxy" --config "$conf" >"$OUT/$v.log" 2>&1 &
  PROXY_PID=$!; PIDS=("$PROXY_PID")
  wait_ready "$PROXY_PID" "$admin" "$OUT/$v.log" 600 # valgrind starts slowly: up to 60 s
  h2load --h1 -n 1000 -c 16 "http://127.0.0.1:$port/" >"$OUT/$v.warmup.txt" 2>&1
  callgrind_control -z "$PROXY_PID" >/dev/null
  timeout 600 h2load --h1 -n "$N" -c 16 "http://127.0.0.1:$port/" >"$OUT/$v.h2load.txt" 2>&1
  callgrind_control -d "$PROXY_PID" >/dev/null
  kill "$PROXY_PID"; wait "$PROXY_PID" 2>/dev/null || true; PIDS=()
  grep -q "$N succeeded" "$OUT/$v.h2load.txt" || { cat "$OUT/$v.h2load.txt" >&2; die "$v: not every request succeeded"; }
  dump=$(ls -S "$OUT/$v.callgrind".* | head -n 1)
  total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
  [ -n "$total" ] || die "$v: no totals in $dump"
  IR[$v]=$(( total / N ))
  log "$v: ${IR[$v]} instructions per request"
done

base=${IR[filters-0]}
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
{
  echo "# Instructions per request ($(date -u +%Y-%m-%d), rev $rev)"
  echo
  echo "The proxy's user-space instructions per request under callgrind (\`bash bench/instructions.sh\`):"
  echo "$N requests after a warm-up of 1,000, h2load --h1 -c 16, inbound listener -> nginx."
  echo
  echo "| Variant | Instructions per request | Extra | Ratio |"
  echo "| --- | ---: | ---: | ---: |"
  for v in "${VARIANTS[@]}"; do
    extra=$(( IR[$v] - base ))
    printf '| %s | %d | %s | %s |\n' "$v" "${IR[$v]}" \
      "$([ "$v" = filters-0 ] && echo "" || echo "+$extra")" \
      "$(awk -v a="${IR[$v]}" -v b="$base" 'BEGIN {printf "%.3f", a / b}')"
  done
} >"$HERE/results/$RESULTS.md"
{
  printf '{"rev": "%s", "requests": %d, "instructions_per_request": {' "$rev" "$N"
  sep=""
  for v in "${VARIANTS[@]}"; do printf '%s"%s": %d' "$sep" "$v" "${IR[$v]}"; sep=", "; done
  printf '}}\n'
} >"$HERE/results/$RESULTS.json"
cat "$HERE/results/$RESULTS.md"
