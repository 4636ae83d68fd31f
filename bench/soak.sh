#!/usr/bin/env bash
# Soak: a mesh hop at about half load for DURATION while everything that can change does.
#
#   bash bench/soak.sh                 # 20 minutes (DURATION=1200), release build first
#   DURATION=120 bash bench/soak.sh    # a short rehearsal
#
# Topology (file mode, mTLS between sidecars, all on 127.0.0.1, ports from 17500):
#   wrk -> client sidecar outbound :17501 (Host: backend) -mTLS h2-> backend sidecars b1
#   (:17600) and b2 (:17700), each in front of its own mesh-demo-app (:17610, :17710).
#   The route (GET) retries (3 attempts on connect_failure, reset, 502, 503) and runs a WASM
#   filter (header_adder, failure closed) in the client's sidecar.
#
# While wrk runs at RATE requests a second (default: half of what a 5 s closed-loop probe of
# the same hop reached), one perturbation loop:
#   every 10 s   a new table (meshc compile; the request header x-soak-gen changes), swapped
#                in by every sidecar (they poll the table file every 100 ms);
#   every 30 s   the filter reloaded: its config changes in that table (new instances);
#   every 60 s   an endpoint killed (SIGKILL, b1 and b2 in turn) and started again 5 s later;
#   every 45 s   every certificate re-issued (meshc ca issue; the sidecars follow the files).
# Every 10 s the RSS and open descriptors of each sidecar are sampled (/proc/PID).
#
# Results: bench/results/soak.md: requests, failures (non-2xx and socket errors as wrk
# counts them: a retry could have saved every one of them, so the target is 0), the rate,
# and per sidecar the RSS and descriptors at the end of the warm-up (WARMUP, 120 s) and at
# the end, with the growth (target: under 5%). The restarted sidecars are reported per life.
#
# Environment: DURATION=1200 RATE= WARMUP=120 CONNS=16 SKIP_BUILD=1 BIN_DIR=DIR RUN_DIR=DIR
# Needs: wrk, curl (Debian: apt-get install wrk curl).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
DURATION=${DURATION:-1200}; WARMUP=${WARMUP:-120}; CONNS=${CONNS:-16}
RUN=${RUN_DIR:-$HERE/run/soak-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RUN/modules"
RUN=$(cd "$RUN" && pwd)
log() { printf '[soak %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "error: $*" >&2; exit 1; }
for tool in wrk curl; do command -v "$tool" >/dev/null || die "missing: $tool"; done

if [ -n "${BIN_DIR:-}" ]; then
  BIN=$BIN_DIR
else
  if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "cargo build --release (mesh-proxy, meshc, mesh-demo-app)"
    (cd "$ROOT" && cargo build --release -q -p mesh-proxy -p meshc -p mesh-demo-app)
  fi
  BIN=$ROOT/target/release
fi
WASM=$ROOT/target/wasm-filters/wasm32-unknown-unknown/release
[ -f "$WASM/header_adder.wasm" ] || (cd "$ROOT" && bash examples/filters/build.sh >/dev/null)
cp "$WASM/header_adder.wasm" "$RUN/modules/"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# The policy, generation $1: the x-soak-gen header and the filter's config change with it.
policy() {
  local gen=$1 filter_value=$(( $1 / 3 ))
  cat <<EOF
mesh "soak" { trust_domain "soak.local" }
service client { port 17500 endpoints ["127.0.0.1:17500"] }
service backend { port 17600 endpoints ["127.0.0.1:17600", "127.0.0.1:17700"] }
route main on backend {
  match { path prefix "/" method [GET] }
  timeout 5s
  retry { attempts 3 on [connect_failure, reset, 502, 503] }
  request_headers { set "x-soak-gen" "$gen" }
  filters [stamp]
}
filter stamp {
  module "header_adder.wasm"
  config { name: "x-stamp", value: "v$filter_value", label: "stamp" }
  failure closed
}
EOF
}
compile() { # generation -> soak.table, swapped in atomically
  policy "$1" >"$RUN/soak.mesh"
  "$BIN/meshc" compile "$RUN/soak.mesh" --module-path "$RUN/modules" -o "$RUN/soak.table.new" >>"$RUN/meshc.log" 2>&1 \
    || die "meshc compile failed: $(tail -n 5 "$RUN/meshc.log")"
  mv "$RUN/soak.table.new" "$RUN/soak.table"
}
issue() { # every sidecar's certificate
  local svc
  for svc in client backend; do
    rm -rf "$RUN/certs/$svc.new"
    "$BIN/meshc" ca issue "$svc" --ca "$RUN/ca" --out "$RUN/certs/$svc.new" >>"$RUN/meshc.log" 2>&1 || die "meshc ca issue failed"
    mkdir -p "$RUN/certs/$svc"
    # Key before certificate: the sidecar reloads when the pair matches again.
    mv "$RUN/certs/$svc.new/key.pem" "$RUN/certs/$svc/key.pem"
    mv "$RUN/certs/$svc.new/bundle.pem" "$RUN/certs/$svc/bundle.pem"
    mv "$RUN/certs/$svc.new/cert.pem" "$RUN/certs/$svc/cert.pem"
  done
}

"$BIN/meshc" ca init "$RUN/ca" --trust-domain soak.local >>"$RUN/meshc.log" 2>&1 || die "meshc ca init failed"
issue
compile 0

declare -A PID LIFE
start_sidecar() { # name service inbound app
  local name=$1 svc=$2 in=$3 app=$4 app_line=""
  [ -n "$app" ] && app_line="app = \"127.0.0.1:$app\""
  cat >"$RUN/$name.toml" <<TOML
service = "$svc"
table = "soak.table"
table_poll_ms = 100
workers = 1
[inbound]
listen = "127.0.0.1:$in"
$app_line
[outbound]
listen = "127.0.0.1:$(( in + 1 ))"
[admin]
listen = "127.0.0.1:$(( in + 2 ))"
[filters]
modules = ["modules"]
[identity]
cert = "certs/$svc/cert.pem"
key = "certs/$svc/key.pem"
bundle = "certs/$svc/bundle.pem"
poll_ms = 500
TOML
  LIFE[$name]=$(( ${LIFE[$name]:-0} + 1 ))
  (cd "$RUN" && exec "$BIN/mesh-proxy" --config "$name.toml") >>"$RUN/$name.log" 2>&1 &
  PID[$name]=$!
  disown "$!" # its SIGKILL is the point, not news
  PIDS+=("$!")
  local i
  for (( i = 0; i < 100; i++ )); do
    curl -fsS "http://127.0.0.1:$(( in + 2 ))/ready" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "$name did not get ready: $(tail -n 5 "$RUN/$name.log")"
}
for app in 17610 17710; do
  (exec "$BIN/mesh-demo-app" "backend" "127.0.0.1:$app") >>"$RUN/app-$app.log" 2>&1 &
  PIDS+=("$!")
done
sleep 0.5
start_sidecar b1 backend 17600 17610
start_sidecar b2 backend 17700 17710
start_sidecar client client 17500 ""
curl -fsS -H 'Host: backend' http://127.0.0.1:17501/ >/dev/null || die "the hop does not answer"

# The rate: half of a closed-loop probe's.
if [ -z "${RATE:-}" ]; then
  probe=$(wrk -t1 -c"$CONNS" -d5s -H 'Host: backend' http://127.0.0.1:17501/ | awk '/Requests\/sec/ { print int($2) }')
  RATE=$(( probe / 2 ))
  log "closed-loop probe: $probe req/s; soaking at $RATE"
fi
# wrk paces each connection with a delay between its requests (Lua `delay`, milliseconds).
cat >"$RUN/pace.lua" <<EOF
wrk.headers["Host"] = "backend"
function delay() return $(awk -v c="$CONNS" -v r="$RATE" 'BEGIN { printf "%d", c * 1000 / r }') end
EOF

sample() { # t -> one line per sidecar: t name life rss_kb fds
  local name p
  for name in client b1 b2; do
    p=${PID[$name]}
    [ -d "/proc/$p" ] || continue
    printf '%s %s %s %s %s\n' "$1" "$name" "${LIFE[$name]}" \
      "$(awk '/VmRSS/ { print $2 }' "/proc/$p/status")" "$(ls "/proc/$p/fd" | wc -l)"
  done >>"$RUN/samples.txt"
}

log "soaking for ${DURATION}s at $RATE req/s ($CONNS connections); run dir ${RUN#"$ROOT"/}"
wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 10s -s "$RUN/pace.lua" http://127.0.0.1:17501/ >"$RUN/wrk.txt" 2>&1 &
WRK=$!
begin=$(date +%s) gen=0 victim=b1 killed_at=-1 tables=0 reloads=0 kills=0 rotations=0
next_table=10 next_kill=30 next_rotation=20
while kill -0 "$WRK" 2>/dev/null; do
  sleep 0.5
  t=$(( $(date +%s) - begin ))
  if (( t >= next_table )); then
    sample "$t"; gen=$(( gen + 1 )); compile "$gen"; tables=$(( tables + 1 ))
    (( gen % 3 == 0 )) && reloads=$(( reloads + 1 )) # the filter's config moves every third table
    next_table=$(( next_table + 10 ))
  fi
  if (( t >= next_kill )) && (( t < DURATION - 10 )); then
    kill -9 "${PID[$victim]}" 2>/dev/null || true; killed_at=$t; kills=$(( kills + 1 ))
    next_kill=$(( next_kill + 60 ))
  fi
  if (( killed_at >= 0 && t - killed_at >= 5 )); then
    if [ "$victim" = b1 ]; then start_sidecar b1 backend 17600 17610; victim=b2; else start_sidecar b2 backend 17700 17710; victim=b1; fi
    killed_at=-1
  fi
  if (( t >= next_rotation )); then issue; rotations=$(( rotations + 1 )); next_rotation=$(( next_rotation + 45 )); fi
done
wait "$WRK" || true
sample "$DURATION"
# Which answers were not 2xx, from the sidecars' own counters (the client's outbound sees
# every request; the backends' inbound counts the lives still running).
for pair in client:17502 b1:17602 b2:17702; do
  curl -fsS "http://127.0.0.1:${pair#*:}/metrics" >"$RUN/${pair%%:*}-metrics.txt" 2>/dev/null || true
done
log "done: $tables tables, $reloads filter reloads, $kills endpoint kills, $rotations certificate rotations"

requests=$(awk '/requests in/ { print $1 }' "$RUN/wrk.txt")
non2xx=$(awk '/Non-2xx/ { print $NF }' "$RUN/wrk.txt"); non2xx=${non2xx:-0}
sockerr=$(awk '/Socket errors/ { s = 0; for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) s += $i + 0; print s }' "$RUN/wrk.txt"); sockerr=${sockerr:-0}
rate=$(awk '/Requests\/sec/ { print $2 }' "$RUN/wrk.txt")
mkdir -p "$HERE/results"
{
  echo "# Soak ($(date -u +%Y-%m-%dT%H:%M:%SZ), rev $(cd "$ROOT" && git rev-parse --short HEAD))"
  echo
  echo "\`DURATION=$DURATION bash bench/soak.sh\`: wrk at $RATE req/s target ($CONNS connections) through"
  echo "client sidecar -> mTLS -> backend sidecars b1/b2 -> apps, for ${DURATION}s: $tables table swaps,"
  echo "$reloads filter reloads, $kills endpoint kills (SIGKILL, restarted after 5 s), $rotations certificate"
  echo "rotations. 2 shared cores; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "| requests | achieved req/s | non-2xx | socket errors |"
  echo "| ---: | ---: | ---: | ---: |"
  echo "| $requests | $rate | $non2xx | $sockerr |"
  echo
  echo "The client sidecar's non-2xx answers by status (\`mesh_requests_total\`, outbound):"
  echo
  grep '^mesh_requests_total{' "$RUN/client-metrics.txt" 2>/dev/null | grep -v 'status="2' | sed 's/^/    /' || true
  grep -E '^mesh_(overloaded|streams_cut|upstream_bad_responses|downstream_responses_cut)_total' "$RUN/client-metrics.txt" 2>/dev/null | grep -v ' 0$' | sed 's/^/    /' || true
  echo
  echo "What the sidecars logged (every life): tables loaded, filter instances loaded, credentials reloaded:"
  echo
  for name in client b1 b2; do
    plain=$(sed 's/\x1b\[[0-9;]*m//g' "$RUN/$name.log")
    echo "- $name: $(grep -c 'rule table loaded' <<<"$plain") tables, $(grep -c 'filter loaded' <<<"$plain") filter loads, $(grep -c 'identity credentials reloaded' <<<"$plain") credential reloads"
  done
  echo
  echo "Per sidecar life: RSS and open descriptors at the first sample after the warm-up (${WARMUP}s) and at the last."
  echo
  echo "| sidecar | life | samples | RSS after warm-up (KiB) | RSS at end | growth | fds after warm-up | fds at end |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  awk -v w="$WARMUP" '
    { key = $2 " " $3; n[key]++; if ($1 >= w && !(key in r0)) { r0[key] = $4; f0[key] = $5 } r1[key] = $4; f1[key] = $5 }
    END { for (k in n) { split(k, a, " "); if (k in r0) printf "| %s | %s | %d | %d | %d | %+.1f%% | %d | %d |\n", a[1], a[2], n[k], r0[k], r1[k], (r1[k] - r0[k]) * 100 / r0[k], f0[k], f1[k]; else printf "| %s | %s | %d | - | %d | (life ended before the warm-up) | - | %d |\n", a[1], a[2], n[k], r1[k], f1[k] } }
  ' "$RUN/samples.txt" | sort
} >"$HERE/results/soak.md"
cat "$HERE/results/soak.md"
[ "$non2xx" = 0 ] && [ "$sockerr" = 0 ] || { log "FAILED: $non2xx non-2xx answers, $sockerr socket errors"; exit 1; }
