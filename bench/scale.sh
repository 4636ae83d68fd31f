#!/usr/bin/env bash
# Cost that should not grow with the mesh: one sidecar whose application calls one service,
# given tables of N services (default 100, 5,000 and 20,000); 2 in 5 of them have two
# endpoints and an active health check every 5 s, the others one endpoint. For each N:
#
#   rss_idle    the sidecar's RSS (KiB) after it loaded the table and idled SETTLE seconds
#   cpu_idle    its CPU while idle (percent of one core over IDLE seconds, after SETTLE)
#   first_ms    latency of the first request to a destination it never called (median of
#               FIRSTS destinations, each a new one: through the outbound listener to a
#               local application, plaintext sidecar -> application)
#   warm_ms     the same request again (the destination now in use)
#   rss_after   RSS after the FIRSTS destinations were called
#
#   bash bench/scale.sh                 # N in 100 5000 20000
#   NS="100 5000" SETTLE=5 IDLE=10 FIRSTS=20 bash bench/scale.sh
#
# Every service's first endpoint is one server sidecar (service s0, plaintext h2c between
# the sidecars) in front of one application (python, 200 to everything, health checks
# included); the second endpoint of a health-checked service is a port that refuses
# connections, so health checks have work to do (and must keep requests off it).
# Only the caller's sidecar is measured. Results: bench/results/${RESULTS:-scale}.md.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
NS=${NS:-100 5000 20000}; SETTLE=${SETTLE:-10}; IDLE=${IDLE:-10}; FIRSTS=${FIRSTS:-20}
RESULTS=${RESULTS:-scale}
BIN_DIR=${BIN_DIR:-$ROOT/target/release}
RUN=${RUN_DIR:-$HERE/run/scale-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RUN"
log() { printf '[scale.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
for bin in mesh-proxy meshc; do [ -x "$BIN_DIR/$bin" ] || die "missing $BIN_DIR/$bin (cargo build --release)"; done
command -v curl >/dev/null || die "missing: curl"

APP_PORT=18700; OUT_PORT=18701; ADMIN_PORT=18702; IN_PORT=18703; DEAD_PORT=18704
SRV_IN=18705; SRV_OUT=18706; SRV_ADMIN=18707
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# The application behind every service: 200 to everything.
python3 - "$APP_PORT" >"$RUN/app.log" 2>&1 <<'EOF' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
PIDS+=("$!")

policy() { # n -> a policy of n services (s0 .. s{n-1}) and the caller
  local n=$1
  printf 'mesh "scale" { trust_domain "scale.local" }\n\n'
  printf 'service caller {\n  port 8080\n  protocol http1\n  endpoints ["127.0.0.1:%s"]\n}\n\n' "$IN_PORT"
  for ((i = 0; i < n; i++)); do
    printf 'service s%d {\n  port 8080\n  protocol http1\n' "$i"
    if ((i % 5 < 2)); then
      printf '  endpoints ["127.0.0.1:%s", "127.0.0.1:%s"]\n' "$SRV_IN" "$DEAD_PORT"
      printf '  health {\n    path "/healthz"\n    interval 5s\n    timeout 1s\n    unhealthy_after 2\n    healthy_after 1\n  }\n'
    else
      printf '  endpoints ["127.0.0.1:%s"]\n' "$SRV_IN"
    fi
    printf '  mtls permissive\n}\n\n'
  done
  # The server sidecar serves every service's requests (its inbound does not look at Host).
  printf 'authorize s0 {\n  allow from anyone\n}\n'
}

start_sidecar() { # name service inbound outbound admin n -> sets pid once /ready answers
  cat >"$RUN/$1-$6.toml" <<EOF
service = "$2"
table = "$RUN/scale-$6.table"
workers = 1
log_level = "warn"
[inbound]
listen = "127.0.0.1:$3"
app = "127.0.0.1:$APP_PORT"
[outbound]
listen = "127.0.0.1:$4"
[admin]
listen = "127.0.0.1:$5"
[identity]
insecure_plaintext = true
EOF
  "$BIN_DIR/mesh-proxy" --config "$RUN/$1-$6.toml" >"$RUN/$1-$6.log" 2>&1 &
  pid=$!; PIDS+=("$pid")
  for _ in $(seq 600); do
    curl -fs --max-time 1 "http://127.0.0.1:$5/ready" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || die "$1 sidecar died: $(tail -3 "$RUN/$1-$6.log")"
    sleep 0.1
  done
  die "$1 sidecar not ready ($RUN/$1-$6.log)"
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
ms_of() { # url host -> milliseconds of one request (curl), or "fail"
  local t
  t=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' --max-time 10 -H "Host: $2" "$1") || { echo fail; return; }
  [ "${t%% *}" = 200 ] || { echo fail; return; }
  awk -v s="${t#* }" 'BEGIN {printf "%.2f", s * 1000}'
}
median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "-"; else print a[int((NR + 1) / 2)]}'; }

HZ=$(getconf CLK_TCK)
printf '| services | table (KiB) | RSS idle (KiB) | idle CPU (%% of a core) | first request to a new destination, median (ms) | same again (ms) | RSS after %s destinations (KiB) |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n' "$FIRSTS" >"$RUN/rows.md"
for n in $NS; do
  log "$n services: policy, compile"
  policy "$n" >"$RUN/scale-$n.mesh"
  timeout 300 "$BIN_DIR/meshc" compile "$RUN/scale-$n.mesh" -o "$RUN/scale-$n.table" >"$RUN/meshc-$n.log" 2>&1 \
    || { tail "$RUN/meshc-$n.log" >&2; die "meshc compile failed"; }
  start_sidecar server s0 "$SRV_IN" "$SRV_OUT" "$SRV_ADMIN" "$n"; server=$pid
  start_sidecar caller caller "$IN_PORT" "$OUT_PORT" "$ADMIN_PORT" "$n"
  sleep "$SETTLE"
  rss_idle=$(rss_kib "$pid")
  t0=$(cpu_ticks "$pid"); sleep "$IDLE"; t1=$(cpu_ticks "$pid")
  cpu_idle=$(awk -v d=$((t1 - t0)) -v hz="$HZ" -v s="$IDLE" 'BEGIN {printf "%.2f", d / hz / s * 100}')
  firsts=(); warms=()
  for ((k = 0; k < FIRSTS; k++)); do
    dest="s$(( (k * 7919) % n ))"
    firsts+=("$(ms_of "http://127.0.0.1:$OUT_PORT/" "$dest")")
    warms+=("$(ms_of "http://127.0.0.1:$OUT_PORT/" "$dest")")
  done
  printf '%s\n' "${firsts[@]}" >"$RUN/first-$n.txt"; printf '%s\n' "${warms[@]}" >"$RUN/warm-$n.txt"
  grep -q fail "$RUN/first-$n.txt" "$RUN/warm-$n.txt" && die "a request failed ($RUN/first-$n.txt, warm-$n.txt; $RUN/caller-$n.log)"
  first=$(median <"$RUN/first-$n.txt"); warm=$(median <"$RUN/warm-$n.txt")
  rss_after=$(rss_kib "$pid")
  table_kib=$(( $(stat -c %s "$RUN/scale-$n.table") / 1024 ))
  kill "$pid" "$server"; wait "$pid" "$server" 2>/dev/null || true
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$n" "$table_kib" "$rss_idle" "$cpu_idle" "$first" "$warm" "$rss_after" | tee -a "$RUN/rows.md" >&2
done
{
  printf '# One sidecar, tables of many services (%s)\n\n' "$(date -u +%FT%T)"
  printf 'Binary: %s (git %s). 2 in 5 services: two endpoints (the server sidecar, a refusing port) and a health check every 5 s; the others: one endpoint. The sidecar calls %s of them after measuring idle. Command: `%s`.\n\n' \
    "${BIN_DIR#"$ROOT"/}/mesh-proxy" "$(git -C "$ROOT" rev-parse --short HEAD)" "$FIRSTS" "NS=\"$NS\" SETTLE=$SETTLE IDLE=$IDLE FIRSTS=$FIRSTS bash bench/scale.sh"
  cat "$RUN/rows.md"
} >"$HERE/results/$RESULTS.md"
log "results: bench/results/$RESULTS.md (raw: $RUN)"
