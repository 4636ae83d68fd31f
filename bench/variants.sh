#!/usr/bin/env bash
# Variant benchmark: the one-hop h1 load test (client -> mesh-proxy inbound -> nginx backend
# :18080) against several configurations of the same proxy, side by side, in one interleaved run.
#
#   SET=filters bash bench/variants.sh    # filters-0 / filters-1 / filters-3 (header-adder WASM filters), filters-noop
#   SET=observe bash bench/variants.sh    # observe-off / observe-on (100% access log + 1% tracing)
#   SET=sandbox bash bench/variants.sh    # sandbox-spin / sandbox-loop (a looping filter's cost to others)
#   bash bench/variants.sh                # both sets in one run (SET=all)
#   QUICK=1 SET=filters bash bench/variants.sh   # smoke test: 1 round x 2 s
#
# Every variant is its own mesh-proxy process (service `backend`, `workers = 1`, mesh
# certificates from `meshc ca init` / `ca issue`, `mtls permissive` + `allow from anyone` so
# plain wrk may call it), with its own policy, table and ports. `direct-h1` (wrk -> nginx,
# no proxy) is the floor. The cases are measured round-robin for R rounds (each round starts
# one case later, as in load.sh), D seconds each, with wrk -t1 -cCONNS --latency.
# CPU per request: utime+stime of the variant's process (/proc/PID/stat) over the run /
# requests. Ratios are against the set's baseline (filters-0, observe-off) in the same run.
#
# Variants:
#   filters-0    no filter                                                (filters baseline)
#   filters-1    service backend: filters [add1]             header_adder.wasm, failure closed
#   filters-3    service backend: filters [add1, add2, add3]  (each sets one request header)
#   filters-noop service backend: filters [noop]             noop.wasm: both header hooks run and
#                continue (what any filter costs before it does anything)
#   observe-none all of it off: no observe block, [admin] request_metrics = false (observe baseline)
#   observe-off  no observe block: request metrics only
#   observe-on   observe backend { access_log json sample 100%  trace sample 1% },
#                [access_log] path = file, [tracing] otlp_endpoint = http://127.0.0.1:19999/v1/traces
#                (nothing listens there: spans are dropped and counted)
#   sandbox-spin service backend: filters [spin]  misbehave.wasm { mode: "loop", path_prefix: "/loop" },
#                time_limit 20ms, failure open: only /loop requests loop (sandbox baseline)
#   sandbox-loop the same, measured while a side client sends GET /loop every 50 ms (bench/loop_client.py)
#   sandbox-attack the same filter `failure closed`, measured while an attacker sends ATTACK_RATE
#                (default 50) GET /loop a second, open loop, each on a new connection
#                (bench/attack_client.py): each of its requests spins to the limit and gets 503
# sandbox-loop / sandbox-spin is what a filter that loops forever costs the other requests;
# sandbox-attack / sandbox-spin is issue 21's target: the normal client (wrk) keeps >= 90% of
# its throughput and >= 99.9% successes.
# observe-on / observe-none is the cost of metrics + 100% access log + 1% tracing;
# observe-off / observe-none the cost of the request metrics alone.
# With SET=all, filters-0 and observe-off are the same configuration: their difference is
# an A/A estimate of the noise.
#
# Checks before measuring: every case answers 200 "ok"; filters-N answer with
# `x-filter-chain: add1` / `add3, add2, add1` (each header adder appends its name to the
# response; response hooks run last filter first) and
# list their filters in /filters as loaded (digest = the pinned one, not refused). After the
# run: mesh_filter_failures_total must not have grown; observe-on's access log line count and
# span counters are reported.
#
# Environment (all optional):
#   SET=all|filters|observe|sandbox   which variants (default all)
#   D=5 R=3                   seconds per run, rounds              QUICK=1  D=2 R=1
#   CONNS=32                  wrk connections     WRK_THREADS=1
#   ATTACK_RATE=50            sandbox-attack's bad requests a second
#   SPIN_LIMIT=20ms           the spin filter's time_limit (the sandbox cases)
#   PIN=1                     with 2+ CPUs and taskset: the proxies on the last CPU, wrk, the
#                             backend nginx and the side client on the others (PIN=0: the
#                             scheduler places them; results then move more between rounds)
#   WARMUP=1                  seconds of warm-up per case          SETTLE=0.5  pause between runs (s)
#   BIN_DIR=DIR               mesh-proxy and meshc from DIR (no build); default: cargo build
#                             --release, then target/release (SKIP_BUILD=1: no build)
#   WASM_DIR=DIR              where header_adder.wasm, misbehave.wasm and noop.wasm are; default: bash examples/filters/build.sh,
#                             then target/wasm-filters/wasm32-unknown-unknown/release
#   GIT_REV=REV               recorded as the binaries' revision (default: git rev of this tree)
#   RUN_DIR=DIR               configs, logs, raw outputs (default bench/run/variants-<time>)
#   RESULTS=NAME              bench/results/NAME.{json,md} (default variants-<set>; QUICK: variants-<set>-quick)
#   PEERS=PATH                peers.sh (default bench/peers/peers.sh, beside this script)
#   MAX_SECONDS=N             hard limit for the whole script (default: computed from the plan)
# Ports used (must be free): 18080-18092, 18441-18443 (peers.sh), 19400-19459 (variants), 19999 (no listener).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PEERS=${PEERS:-$HERE/peers/peers.sh}
SET=${SET:-all}
case $SET in all|filters|observe|sandbox) ;; *) echo "error: SET must be all, filters, observe or sandbox" >&2; exit 2 ;; esac

if [ "${QUICK:-0}" = 1 ]; then D=${D:-2}; R=${R:-1}; RESULTS=${RESULTS:-variants-$SET-quick}; fi
D=${D:-5}; R=${R:-3}; RESULTS=${RESULTS:-variants-$SET}
CONNS=${CONNS:-32}; WRK_THREADS=${WRK_THREADS:-1}
# Pinning: the proxy's one worker gets a CPU of its own (wrk and nginx never preempt it), so
# the proxy limits the rate in every round.
# The prefixes are arrays, not a function: a backgrounded function would be a subshell,
# and `$!` its PID rather than the proxy's (taskset execs, so with it `$!` is the proxy).
PIN=${PIN:-1}; PROXY_CPU=""; LOAD_CPUS=""; ON_PROXY_CPU=(); ON_LOAD_CPUS=()
NCPU=$(nproc)
if [ "$PIN" = 1 ] && [ "$NCPU" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
  PROXY_CPU=$(( NCPU - 1 )); LOAD_CPUS="0-$(( NCPU - 2 ))"
  ON_PROXY_CPU=(taskset -c "$PROXY_CPU"); ON_LOAD_CPUS=(taskset -c "$LOAD_CPUS")
fi
WARMUP=${WARMUP:-1}; SETTLE=${SETTLE:-0.5}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-1800}

# name|set|baseline|inbound port|admin port|what
ALL_VARIANTS=(
  "filters-0|filters|filters-0|19401|19403|no filter"
  "filters-1|filters|filters-0|19411|19413|filters [add1] (header_adder.wasm, failure closed)"
  "filters-3|filters|filters-0|19421|19423|filters [add1, add2, add3]"
  "filters-noop|filters|filters-0|19481|19483|filters [noop] (noop.wasm: both header hooks run and continue)"
  "observe-none|observe|observe-none|19451|19453|all of it off: no observe block, [admin] request_metrics = false"
  "observe-off|observe|observe-none|19431|19433|metrics only: no observe block (request metrics on, the default)"
  "observe-on|observe|observe-none|19441|19443|metrics + access_log json sample 100% + trace sample 1% (OTLP to :19999, nothing listens)"
  "sandbox-spin|sandbox|sandbox-spin|19461|19463|filters [spin] (misbehave.wasm loop on /loop only, time_limit ${SPIN_LIMIT:-20ms}, failure open), no /loop traffic"
  "sandbox-loop|sandbox|sandbox-spin|19471|19473|filters [spin], while GET /loop every 50 ms"
  "sandbox-attack|sandbox|sandbox-spin|19491|19493|filters [spin] failure closed, while an attacker sends ${ATTACK_RATE:-50} GET /loop a second (new connection each)"
)
VARIANTS=()
for v in "${ALL_VARIANTS[@]}"; do
  IFS='|' read -r _ vset _ _ _ _ <<<"$v"
  if [ "$SET" = all ] || [ "$SET" = "$vset" ]; then VARIANTS+=("$v"); fi
done
NEED_WASM=0
[ "$SET" = observe ] || NEED_WASM=1
BUILDING=0
[ -z "${BIN_DIR:-}" ] && [ "${SKIP_BUILD:-0}" != 1 ] && BUILDING=1

# A hard bound on the whole script: re-run under timeout (TERM -> the trap stops everything).
if [ -z "${__VARIANTS_SH_BOUNDED:-}" ]; then
  n=$(( ${#VARIANTS[@]} + 1 ))
  limit=${MAX_SECONDS:-$(( BUILDING * BUILD_TIMEOUT * 2 + 300 + n * (${WARMUP%.*} + 25) + n * R * (D + 25) ))}
  export __VARIANTS_SH_BOUNDED=1
  exec timeout --foreground -k 30 "$limit" bash "${BASH_SOURCE[0]}" "$@"
fi

log() { printf '[variants.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

for t in nginx wrk curl python3 openssl; do
  command -v "$t" >/dev/null 2>&1 || die "missing: $t (apt-get install -y nginx wrk curl python3 openssl)"
done
[ -f "$PEERS" ] || die "peers script not found: $PEERS"

# ---------------------------------------------------------------- ports
PORTS=(18080 18081 18082 18084 18085 18090 18091 18092 18441 18442 18443 19999)
for v in "${VARIANTS[@]}"; do
  IFS='|' read -r _ _ _ in admin _ <<<"$v"; PORTS+=("$in" $(( in + 1 )) "$admin")
done
busy=()
for p in "${PORTS[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then busy+=("$p"); fi
done
[ ${#busy[@]} -eq 0 ] || die "ports in use: ${busy[*]} (load.sh, peers.sh or another variants.sh running? stop it first)"

# ---------------------------------------------------------------- run dir, cleanup
RUN=${RUN_DIR:-$HERE/run/variants-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RUN" "$HERE/results"; RUN=$(cd "$RUN" && pwd)
LOAD_PID=; PEERS_STARTED=0; PEER_PIDS=()
declare -A VPID=()

stop_pid() { # pid [signal]: TERM, wait up to 3 s, then KILL
  local pid=$1 i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -"${2:-TERM}" "$pid" 2>/dev/null || true
  for i in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  set +e
  stop_pid "$LOAD_PID"
  for pid in "${VPID[@]}"; do stop_pid "$pid"; done
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

# ---------------------------------------------------------------- binaries and the module
if [ "$BUILDING" = 1 ]; then
  command -v cargo >/dev/null || die "cargo not found"
  log "cargo build --release -p mesh-proxy -p meshc"
  (cd "$ROOT" && timeout "$BUILD_TIMEOUT" cargo build --release -q -p mesh-proxy -p meshc) || die "build failed"
fi
BIN_DIR=${BIN_DIR:-$ROOT/target/release}
PROXY_BIN=$BIN_DIR/mesh-proxy
MESHC=$BIN_DIR/meshc
[ -x "$PROXY_BIN" ] && [ -x "$MESHC" ] || die "mesh-proxy or meshc missing in $BIN_DIR"
if [ -z "${GIT_REV:-}" ]; then
  GIT_REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
  GIT_DIRTY=$(cd "$ROOT" && git status --porcelain -- proxy engine table wasm-host 2>/dev/null | head -c 1 | wc -c)
else
  GIT_DIRTY=0
fi
mkdir -p "$RUN/modules"
if [ "$NEED_WASM" = 1 ]; then
  if [ -z "${WASM_DIR:-}" ]; then
    WASM_DIR=$ROOT/target/wasm-filters/wasm32-unknown-unknown/release
    if [ "${SKIP_BUILD:-0}" != 1 ]; then
      log "bash examples/filters/build.sh"
      timeout "$BUILD_TIMEOUT" bash "$ROOT/examples/filters/build.sh" >"$RUN/wasm-build.log" 2>&1 \
        || { tail -n 20 "$RUN/wasm-build.log" >&2; die "filter build failed"; }
    fi
  fi
  for m in header_adder misbehave noop; do
    [ -f "$WASM_DIR/$m.wasm" ] || die "no $m.wasm in $WASM_DIR (bash examples/filters/build.sh)"
    # A private copy: meshc pins its digest, and a rebuild of the shared one mid-run must
    # not make the proxies refuse it.
    cp "$WASM_DIR/$m.wasm" "$RUN/modules/"
  done
fi

# ---------------------------------------------------------------- peers (the nginx backend)
log "starting peers in $RUN"
PEERS_STARTED=1
timeout 60 bash "$PEERS" start "$RUN" >"$RUN/peers.log" 2>&1 || { cat "$RUN/peers.log" >&2; die "peers.sh start failed"; }
pid_of() { local f=$RUN/$1.pid; [ -s "$f" ] && cat "$f"; }
BACKEND_MASTER=$(pid_of backend) || die "no backend.pid"
PEER_PIDS=("$BACKEND_MASTER")
for p in nginx-proxy haproxy; do pp=$(pid_of "$p") && PEER_PIDS+=("$pp"); done
BACKEND_WORKERS=$(pgrep -P "$BACKEND_MASTER" | tr '\n' ' ')
[ -n "$BACKEND_WORKERS" ] || die "nginx backend workers not found"
if [ -n "$LOAD_CPUS" ]; then
  for pid in "$BACKEND_MASTER" $BACKEND_WORKERS; do taskset -apc "$LOAD_CPUS" "$pid" >/dev/null; done
  log "pinned: proxies on CPU $PROXY_CPU; wrk, the nginx backend and side clients on CPUs $LOAD_CPUS"
fi

# ---------------------------------------------------------------- certificates, policies, proxies
{ timeout 60 "$MESHC" ca init "$RUN/ca" --trust-domain bench.local --force \
  && timeout 60 "$MESHC" ca issue backend --ca "$RUN/ca" --out "$RUN/certs/backend"; } >"$RUN/meshc.log" 2>&1 \
  || { cat "$RUN/meshc.log" >&2; die "meshc ca failed"; }

write_policy() { # variant inbound-port -> $RUN/NAME/bench.mesh
  local name=$1 in=$2 f=$RUN/$1/bench.mesh filters="" i
  case $name in
    filters-1) filters="add1" ;; filters-3) filters="add1, add2, add3" ;; filters-noop) filters="noop" ;;
    sandbox-*) filters="spin" ;;
  esac
  cat >"$f" <<EOF
// variants.sh, variant $name: the backend's sidecar listens on :$in and forwards to the
// nginx backend (:18080); permissive so that plain clients (wrk) may call it.
mesh "bench" { trust_domain "bench.local" }

service backend {
  port 18080
  protocol http1
  endpoints ["127.0.0.1:$in"]
  mtls permissive
EOF
  [ -n "$filters" ] && printf '  filters [%s]\n' "$filters" >>"$f"
  cat >>"$f" <<'EOF'
}

authorize backend {
  allow from anyone
}

route all on backend {
  match { path prefix "/" }
  to backend
  timeout 5s
}
EOF
  if [[ $name == sandbox-* ]]; then
    local failure=open
    [ "$name" = sandbox-attack ] && failure=closed
    printf '\nfilter spin {\n  module "misbehave.wasm"\n  config { mode: "loop", path_prefix: "/loop" }\n  failure %s\n  time_limit %s\n}\n' \
      "$failure" "${SPIN_LIMIT:-20ms}" >>"$f"
  elif [ "$name" = filters-noop ]; then
    printf '\nfilter noop {\n  module "noop.wasm"\n  failure closed\n}\n' >>"$f"
  elif [ -n "$filters" ]; then
    for i in ${filters//,/}; do
      printf '\nfilter %s {\n  module "header_adder.wasm"\n  config { name: "x-add-%s", value: "%s" }\n  failure closed\n}\n' \
        "$i" "${i#add}" "${i#add}" >>"$f"
    done
  fi
  if [ "$name" = observe-on ]; then
    printf '\nobserve backend {\n  access_log json sample 100%%\n  trace sample 1%%\n}\n' >>"$f"
  fi
}

write_config() { # variant inbound admin -> $RUN/NAME/proxy.toml
  local name=$1 in=$2 admin=$3 dir=$RUN/$1
  cat >"$dir/proxy.toml" <<EOF
service = "backend"
table = "$dir/bench.table"
workers = 1
log_level = "warn"
drain_ms = 500
[inbound]
listen = "127.0.0.1:$in"
app = "127.0.0.1:18080"
[outbound]
listen = "127.0.0.1:$(( in + 1 ))"
[admin]
listen = "127.0.0.1:$admin"
$( [ "$name" = observe-none ] && echo "request_metrics = false" )
[identity]
cert = "$RUN/certs/backend/cert.pem"
key = "$RUN/certs/backend/key.pem"
bundle = "$RUN/certs/backend/bundle.pem"
EOF
  if [ "$name" = observe-on ]; then
    printf '[access_log]\npath = "%s"\n[tracing]\notlp_endpoint = "http://127.0.0.1:19999/v1/traces"\n' "$dir/access.log" >>"$dir/proxy.toml"
  fi
}

for v in "${VARIANTS[@]}"; do
  IFS='|' read -r name _ _ in admin _ <<<"$v"
  mkdir -p "$RUN/$name"
  write_policy "$name" "$in"
  timeout 60 "$MESHC" compile "$RUN/$name/bench.mesh" -o "$RUN/$name/bench.table" --module-path "$RUN/modules" \
    >"$RUN/$name/meshc.log" 2>&1 || { cat "$RUN/$name/meshc.log" >&2; die "meshc compile failed for $name"; }
  # The proxy looks for modules beside its table (no `[filters] modules` needed).
  [[ $name == filters-[1-9]* ]] && cp "$RUN/modules/header_adder.wasm" "$RUN/$name/"
  [[ $name == sandbox-* ]] && cp "$RUN/modules/misbehave.wasm" "$RUN/$name/"
  [[ $name == filters-noop ]] && cp "$RUN/modules/noop.wasm" "$RUN/$name/"
  write_config "$name" "$in" "$admin"
  "${ON_PROXY_CPU[@]}" "$PROXY_BIN" --config "$RUN/$name/proxy.toml" >"$RUN/$name/proxy.log" 2>&1 &
  VPID[$name]=$!
done
for v in "${VARIANTS[@]}"; do
  IFS='|' read -r name _ _ _ admin _ <<<"$v"
  ok=0
  for _ in $(seq 150); do
    if curl -fs --max-time 1 "http://127.0.0.1:$admin/ready" >/dev/null 2>&1; then ok=1; break; fi
    kill -0 "${VPID[$name]}" 2>/dev/null || break
    sleep 0.1
  done
  [ $ok = 1 ] || { tail -n 20 "$RUN/$name/proxy.log" >&2; die "proxy $name (admin :$admin) not ready"; }
done
log "proxies ready: $(for v in "${VARIANTS[@]}"; do n=${v%%|*}; printf '%s=%s ' "$n" "${VPID[$n]}"; done); backend workers $BACKEND_WORKERS"

# ---------------------------------------------------------------- cases
# name|port|proxy group|what
CASES=("direct-h1|18080||client -> nginx backend :18080 (no proxy)")
for v in "${VARIANTS[@]}"; do
  IFS='|' read -r name _ _ in _ what <<<"$v"
  CASES+=("$name|$in|v_$name|client -> mesh-proxy ($name) :$in -> backend; $what")
done

# ---------------------------------------------------------------- measuring (as in load.sh)
HZ=$(getconf CLK_TCK)
declare -A GROUP_PIDS=([backend]="$BACKEND_WORKERS")
GROUPS_ORDER=()
for v in "${VARIANTS[@]}"; do n=${v%%|*}; GROUP_PIDS[v_$n]=${VPID[$n]}; GROUPS_ORDER+=("v_$n"); done
GROUPS_ORDER+=(backend)

# All readers below are builtins (no fork), so the children's CPU between two snapshots is
# the load generator's alone.
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

loadgen() { # port seconds out
  "${ON_LOAD_CPUS[@]}" timeout -k 5 $(( $2 + 20 )) wrk "-t$WRK_THREADS" "-c$CONNS" "-d${2}s" --latency "http://127.0.0.1:$1/" >"$3" 2>&1 &
  LOAD_PID=$!
  wait "$LOAD_PID" || { local rc=$?; LOAD_PID=; return $rc; }
  LOAD_PID=
}

check_alive() {
  local n
  for n in "${!VPID[@]}"; do
    kill -0 "${VPID[$n]}" 2>/dev/null || { tail -n 20 "$RUN/$n/proxy.log" >&2; die "proxy $n died"; }
  done
}

admin_of() { local v n a; for v in "${VARIANTS[@]}"; do IFS='|' read -r n _ _ _ a _ <<<"$v"; if [ "$n" = "$1" ]; then echo "$a"; fi; done; }

# Every case answers 200 "ok"; the filter variants show their chain and list their filters as loaded.
CHECKS=$RUN/checks.txt; : >"$CHECKS"
for c in "${CASES[@]}"; do
  IFS='|' read -r name port _ _ <<<"$c"
  code=$(curl -s --max-time 3 -D "$RUN/.headers" -o "$RUN/.check" -w '%{http_code}' "http://127.0.0.1:$port/" || true)
  [ "$code" = 200 ] && [ "$(cat "$RUN/.check")" = ok ] || die "case $name: http://127.0.0.1:$port/ answered '$code' $(head -c 200 "$RUN/.check" 2>/dev/null)"
  chain=$(tr -d '\r' <"$RUN/.headers" | awk -F': ' 'tolower($1) == "x-filter-chain" { print $2 }')
  want=""
  # Response hooks run in reverse chain order, so the last filter appends its name first.
  case $name in filters-1) want="add1" ;; filters-3) want="add3,add2,add1" ;; esac
  [ "$(tr -d ' ' <<<"$chain")" = "$want" ] || die "case $name: x-filter-chain is '$chain', expected '$want'"
  echo "$name: 200 ok, x-filter-chain: '${chain}'" >>"$CHECKS"
  [[ $name == sandbox-* ]] && want="spin"
  [[ $name == filters-noop ]] && want="noop"
  if [[ $name == filters-* || $name == sandbox-* ]]; then
    admin=$(admin_of "$name")
    if ! curl -fs --max-time 3 "http://127.0.0.1:$admin/filters" >"$RUN/$name/filters.json"; then
      [ -z "$want" ] || die "$name: GET /filters failed"
      echo "$name: GET /filters failed (no filter configured, so not required)" >>"$CHECKS"
      continue
    fi
    python3 - "$RUN/$name/filters.json" "$want" "$name" >>"$CHECKS" <<'EOF' || die "$name: /filters does not show the filters loaded (see $RUN/$name/filters.json)"
import json, sys
doc = json.load(open(sys.argv[1]))
want = sorted(x for x in sys.argv[2].split(",") if x)
fs = doc.get("filters", [])
names = sorted(f["name"] for f in fs)
ok = names == want and all(f.get("loaded_sha256") and f["loaded_sha256"] == f.get("pinned_sha256") and not f.get("refused") for f in fs)
print(f"{sys.argv[3]}: /filters lists {names or 'none'}, " + ", ".join(f"{f['name']} loaded {str(f.get('loaded_sha256'))[:12]} (pinned {str(f.get('pinned_sha256'))[:12]}, refused {f.get('refused')})" for f in fs))
sys.exit(0 if ok else 1)
EOF
  fi
done
scrape() { # suffix: every variant's /metrics -> $RUN/NAME/metrics-SUFFIX.txt
  local v n a
  for v in "${VARIANTS[@]}"; do
    IFS='|' read -r n _ _ _ a _ <<<"$v"
    curl -fs --max-time 3 "http://127.0.0.1:$a/metrics" >"$RUN/$n/metrics-$1.txt" || log "warning: /metrics of $n failed"
  done
}

if [ "${WARMUP%.*}" -gt 0 ] 2>/dev/null; then
  log "warm-up: ${WARMUP}s per case"
  for c in "${CASES[@]}"; do
    IFS='|' read -r name port _ _ <<<"$c"
    loadgen "$port" "${WARMUP%.*}" "$RUN/warmup-$name.txt" || die "warm-up of $name failed: $(tail -n 3 "$RUN/warmup-$name.txt")"
  done
fi
scrape before
[ -f "$RUN/observe-on/access.log" ] && wc -l <"$RUN/observe-on/access.log" >"$RUN/observe-on/access-lines-before.txt"

{ date -Iseconds; uptime; nproc; } >"$RUN/machine.txt"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
RUNS=$RUN/runs.jsonl; : >"$RUNS"
n=${#CASES[@]}
log "measuring: ${R} round(s) x ${n} cases x ${D}s (wrk -t$WRK_THREADS -c$CONNS); load average $LOAD_START"
for (( round = 1; round <= R; round++ )); do
  log "round $round/$R"
  for (( k = 0; k < n; k++ )); do
    c=${CASES[$(( (k + round - 1) % n ))]}
    IFS='|' read -r name port proxies _ <<<"$c"
    out=$RUN/r$round-$name.txt
    check_alive
    sleep "$SETTLE"
    side=""
    if [ "$name" = sandbox-loop ]; then
      "${ON_LOAD_CPUS[@]}" timeout -k 5 $(( D + 20 )) python3 "$HERE/loop_client.py" "http://127.0.0.1:$port/loop" "$D" 0.05 \
        >"$RUN/r$round-$name-side.txt" 2>&1 &
      side=$!
    elif [ "$name" = sandbox-attack ]; then
      "${ON_LOAD_CPUS[@]}" timeout -k 5 $(( D + 20 )) python3 "$HERE/attack_client.py" "http://127.0.0.1:$port/loop" "$D" "${ATTACK_RATE:-50}" \
        >"$RUN/r$round-$name-side.txt" 2>&1 &
      side=$!
    fi
    snapshot t0
    loadgen "$port" "$D" "$out" || die "wrk failed for $name: $(tail -n 5 "$out")"
    snapshot t1
    if [ -n "$side" ]; then
      wait "$side" || log "warning: the /loop side client failed: $(tail -n 3 "$RUN/r$round-$name-side.txt")"
      echo "$name round $round: side client: $(tail -n 1 "$RUN/r$round-$name-side.txt")" >>"$CHECKS"
    fi
    cpu=""
    for g in "${GROUPS_ORDER[@]}"; do
      cpu+="$g=$(( SNAP[t1.$g.u] - SNAP[t0.$g.u] )):$(( SNAP[t1.$g.s] - SNAP[t0.$g.s] )):$(( SNAP[t1.$g.c] - SNAP[t0.$g.c] )),"
    done
    elapsed=$(awk -v a="${SNAP[t0.t]}" -v b="${SNAP[t1.t]}" 'BEGIN { printf "%.6f", b - a }')
    python3 "$HERE/loadstat.py" record --case "$name" --round "$round" --tool wrk --proto h1 --out "$out" \
      --elapsed "$elapsed" --cpu "$cpu" --proxies "$proxies" --hz "$HZ" \
      --busy $(( SNAP[t1.busy] - SNAP[t0.busy] )) --loadgen-ms $(( SNAP[t1.children_ms] - SNAP[t0.children_ms] )) >>"$RUNS"
  done
done
check_alive
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
sleep 2 # let the access log writer and the span exporter catch up
scrape after
[ -f "$RUN/observe-on/access.log" ] && wc -l <"$RUN/observe-on/access.log" >"$RUN/observe-on/access-lines-after.txt"
log "done measuring; load average $LOAD_END"

# ---------------------------------------------------------------- report
variants_tsv=$(printf '%s\n' "${VARIANTS[@]}")
cases_tsv=$(printf '%s\n' "${CASES[@]}")
export PROXY_CPU LOAD_CPUS D R CONNS WRK_THREADS WARMUP SETTLE LOAD_START LOAD_END GIT_REV GIT_DIRTY RUN SET BIN_DIR HERE ROOT RESULTS
python3 - "$RUNS" "$variants_tsv" "$cases_tsv" <<'EOF'
import datetime, json, os, platform, re, statistics, subprocess, sys
e = os.environ
sys.path.insert(0, e["HERE"])
import loadstat
from loadstat import fmt_us, fmt_num, summarize

runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
variants = [l.split("|") for l in sys.argv[2].splitlines() if l]
cases = [l.split("|") for l in sys.argv[3].splitlines() if l]
RUN = e["RUN"]

def ver(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=5)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except Exception:
        return None

def metric_sum(path, name):
    """Sum of every sample of `name` (any labels) in a Prometheus text file; None if unreadable."""
    try:
        text = open(path).read()
    except OSError:
        return None
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(?:\{{[^}}]*\}})?\s+([0-9.eE+-]+)", line)
        if m:
            total += float(m.group(1))
    return total

def read_int(path):
    try:
        return int(open(path).read().split()[0])
    except (OSError, ValueError, IndexError):
        return None

c = summarize(runs)
c = {name: c[name] for name, *_ in cases if name in c}
paths = {name: what for name, _, _, what in cases}

# Ratios against the baseline: pooled (medians / pooled CPU) and per round (same round).
by_round = {}
for r in runs:
    by_round.setdefault(r["round"], {})[r["case"]] = r
ratios = {}
for name, vset, base, *_ in variants:
    if name == base or name not in c or base not in c:
        continue
    s, b = c[name], c[base]
    per = lambda key: [rr[name][key] / rr[base][key] for rr in by_round.values()
                       if name in rr and base in rr and rr[name].get(key) and rr[base].get(key)]
    rps_r, cpu_r, p99_r = per("rps"), per("proxy_us_per_req"), per("p99_us")
    ratios[name] = {
        "baseline": base, "set": vset,
        "rps": loadstat.ratio(s["rps"], b["rps"]),
        "rps_per_round": rps_r,
        "proxy_us_per_req": loadstat.ratio(s["proxy_us_per_req"], b["proxy_us_per_req"]),
        "proxy_us_per_req_per_round": cpu_r,
        "extra_proxy_us_per_req": (s["proxy_us_per_req"] - b["proxy_us_per_req"]) if s["proxy_us_per_req"] and b["proxy_us_per_req"] else None,
        "req_per_cpu_s": loadstat.ratio(s["req_per_cpu_s"], b["req_per_cpu_s"]),
        "p50": loadstat.ratio(s["p50_us"], b["p50_us"]),
        "p99": loadstat.ratio(s["p99_us"], b["p99_us"]),
        "p99_per_round": p99_r,
        # The median of the same-round ratios: a drift of the machine across the run moves
        # a variant and its baseline of the same round together, the pooled medians apart.
        "rps_paired_median": statistics.median(rps_r) if rps_r else None,
        "proxy_us_per_req_paired_median": statistics.median(cpu_r) if cpu_r else None,
        # 95% bootstrap intervals of those medians (None with fewer than 5 rounds).
        "rps_paired_median_interval": loadstat.median_interval(rps_r),
        "proxy_us_per_req_paired_median_interval": loadstat.median_interval(cpu_r),
    }
    if name == "filters-1":
        ratios[name]["target"] = "one filter costs under 5% throughput: rps ratio >= 0.95"
        ratios[name]["meets_target_rps"] = ratios[name]["rps"] >= 0.95 if ratios[name]["rps"] else None
        ratios[name]["meets_target_cpu"] = (1 / ratios[name]["proxy_us_per_req"]) >= 0.95 if ratios[name]["proxy_us_per_req"] else None
        # The verdict the rounds support: under the target only if the whole interval of the
        # same-round req/s median is at or above 0.95, over it only if the whole is below.
        ci = ratios[name]["rps_paired_median_interval"]
        ratios[name]["target_by_interval"] = loadstat.verdict(ci)

# Checks after the run.
post = {}
for name, vset, *_ in variants:
    d = os.path.join(RUN, name)
    p = {
        "filter_failures_before": metric_sum(f"{d}/metrics-before.txt", "mesh_filter_failures_total"),
        "filter_failures_after": metric_sum(f"{d}/metrics-after.txt", "mesh_filter_failures_total"),
    }
    if name == "observe-on":
        for key in ("mesh_spans_exported_total", "mesh_spans_dropped_total", "mesh_access_log_dropped_total"):
            p[key + "_before"] = metric_sum(f"{d}/metrics-before.txt", key)
            p[key + "_after"] = metric_sum(f"{d}/metrics-after.txt", key)
        p["access_log_lines_before"] = read_int(f"{d}/access-lines-before.txt")
        p["access_log_lines_after"] = read_int(f"{d}/access-lines-after.txt")
        p["requests_measured"] = c.get(name, {}).get("requests")
    post[name] = p
# mesh_filter_loads_total{result="refused"}: modules the proxy would not load.
for name, *_ in variants:
    try:
        text = open(os.path.join(RUN, name, "metrics-after.txt")).read()
        m = re.search(r'^mesh_filter_loads_total\{result="refused"\}\s+([0-9.]+)', text, re.M)
        post[name]["filter_loads_refused"] = float(m.group(1)) if m else 0.0
    except OSError:
        post[name]["filter_loads_refused"] = None
checks = open(os.path.join(RUN, "checks.txt")).read().splitlines()

meta = {
    "date": datetime.datetime.now().isoformat(timespec="seconds"),
    "set": e["SET"], "host": platform.node(), "nproc": os.cpu_count(), "kernel": platform.release(),
    "duration_s": int(e["D"]), "rounds": int(e["R"]), "warmup_s": e["WARMUP"], "settle_s": e["SETTLE"],
    "wrk_threads": int(e["WRK_THREADS"]), "wrk_conns": int(e["CONNS"]),
    "pinning": {"proxy_cpu": e["PROXY_CPU"], "load_cpus": e["LOAD_CPUS"]} if e["PROXY_CPU"] else None,
    "loadavg_start": e["LOAD_START"], "loadavg_end": e["LOAD_END"],
    "git_rev": e["GIT_REV"], "proxy_tree_dirty": e["GIT_DIRTY"] != "0", "bin_dir": loadstat.repo_path(e["BIN_DIR"], e["ROOT"]), "run_dir": loadstat.repo_path(RUN, e["ROOT"]),
    "versions": {"nginx": ver(["nginx", "-v"]), "wrk": ver(["wrk", "--version"])},
    "cases_order": [x[0] for x in cases], "paths": paths,
    "variants": {name: {"set": vset, "baseline": base, "inbound": int(port), "admin": int(admin), "what": what}
                 for name, vset, base, port, admin, what in variants},
}

def rng(lo, hi, nd, rounds):
    return "" if lo is None or hi is None or rounds < 2 else f" ({lo:,.{nd}f}-{hi:,.{nd}f})"

def fr(v):
    return "-" if v is None else f"{v:.3f}"

def frr(vals):
    return "" if len(vals) < 2 else f" ({min(vals):.3f}-{max(vals):.3f})"

L = []
L.append(f"# mesh-proxy variants: {e['SET']} ({meta['date']})")
L.append("")
L.append(f"One-hop h1 (wrk -t{meta['wrk_threads']} -c{meta['wrk_conns']} --latency -> mesh-proxy inbound -> nginx backend :18080), "
         f"every variant its own proxy process (`workers = 1`, mTLS identity, `mtls permissive`), {meta['rounds']} round(s) x "
         f"{meta['duration_s']} s per case, interleaved round-robin (each round starts one case later). "
         f"Rev {meta['git_rev']}{' (proxy tree dirty)' if meta['proxy_tree_dirty'] else ''}; {meta['nproc']} CPUs, shared; "
         f"load average {meta['loadavg_start']} at the start, {meta['loadavg_end']} at the end. "
         + (f"Pinned: the proxies on CPU {meta['pinning']['proxy_cpu']}, wrk and the nginx backend on CPUs {meta['pinning']['load_cpus']}."
            if meta["pinning"] else "Not pinned (PIN=0, one CPU, or no taskset)."))
L.append("")
L.append("**How to read.** Each ratio is variant / baseline measured in the same run (filters-0 for the filter set, observe-off for the "
         "observe set). Proxy CPU per request (utime+stime of the variant's process / requests) is the primary figure: it is what the "
         "feature costs the proxy. On a quiet machine it moves a few percent between rounds; on an oversubscribed one it rises when the "
         "proxy is preempted (fewer requests per wakeup, more syscalls per request), so check its min-max and the per-round CPU ratios "
         "too. Requests/s and latency are closed-loop on 2 shared cores "
         "(wrk, the proxy, nginx and other people's work compete), so they move with the 'other load' column; the per-round ratios "
         "(min-max over rounds, variant vs baseline in the same round) show how much of a difference is noise. "
         "Metrics are always on in the proxy, so observe-off includes them."
         + (" In this combined run filters-0 and observe-off are the same configuration: their gap is an A/A noise estimate." if e["SET"] == "all" else ""))
L.append("")
L.append("| case | path | req/s (min-max) | p50 | p99 (max) | proxy CPU us/req (min-max) | proxy user/sys us/req | other load (cores) | errors |")
L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for name, s in c.items():
    L.append(f"| {name} | {paths.get(name, '')} | {fmt_num(s['rps'])}{rng(s['rps_min'], s['rps_max'], 0, s['rounds'])} | {fmt_us(s['p50_us'])} "
             f"| {fmt_us(s['p99_us'])} ({fmt_us(s['p99_us_max'])}) | {fmt_num(s['proxy_us_per_req'], 2)}{rng(s['proxy_us_per_req_min'], s['proxy_us_per_req_max'], 2, s['rounds'])} "
             f"| {fmt_num(s['proxy_user_us_per_req'], 2)} / {fmt_num(s['proxy_sys_us_per_req'], 2)} | {fmt_num(s['foreign_cores_median'], 2)} | {s['errors']} |")
L.append("")
L.append("## Ratios against the baseline (same run)")
L.append("")
L.append("| variant | baseline | req/s ratio (per round) | proxy CPU/req ratio (per round) | extra CPU us/req | p50 ratio | p99 ratio (per round) |")
L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
for name, r in ratios.items():
    L.append(f"| {name} | {r['baseline']} | {fr(r['rps'])}{frr(r['rps_per_round'])} | {fr(r['proxy_us_per_req'])}{frr(r['proxy_us_per_req_per_round'])} "
             f"| {fmt_num(r['extra_proxy_us_per_req'], 2)} | {fr(r['p50'])} | {fr(r['p99'])}{frr(r['p99_per_round'])} |")
L.append("")
if "filters-1" in ratios:
    r = ratios["filters-1"]
    verdict = {True: "MET", False: "NOT MET", None: "n/a"}
    L.append(f"- Target \"one filter costs under 5% throughput\": req/s ratio {fr(r['rps'])} -> {verdict[r['meets_target_rps']]} "
             f"(per round {', '.join(f'{x:.3f}' for x in r['rps_per_round'])}); by proxy CPU (requests per CPU-second ratio "
             f"{fr(r['req_per_cpu_s'])}) -> {verdict[r['meets_target_cpu']]}. Medians of the same-round ratios: req/s "
             f"{fr(r['rps_paired_median'])}, proxy CPU/req {fr(r['proxy_us_per_req_paired_median'])}.")
    ci, cci = r["rps_paired_median_interval"], r["proxy_us_per_req_paired_median_interval"]
    if ci and cci:
        L.append(f"- 95% bootstrap intervals of those medians: req/s [{ci[0]:.3f}, {ci[1]:.3f}], proxy CPU/req "
                 f"[{cci[0]:.3f}, {cci[1]:.3f}]. By the req/s interval the target is {r['target_by_interval']}.")
L.append("- For req/s higher is better (ratio < 1: the variant is slower); for CPU/req, p50 and p99 lower is better (ratio > 1: the variant costs more).")
L.append("")
L.append("## Checks")
L.append("")
for line in checks:
    L.append(f"- {line}")
for name, p in post.items():
    if name.startswith("filters"):
        L.append(f"- {name}: mesh_filter_failures_total {fmt_num(p['filter_failures_before'])} before the run, {fmt_num(p['filter_failures_after'])} after; "
                 f"refused module loads {fmt_num(p['filter_loads_refused'])}")
    if name == "observe-on":
        L.append(f"- observe-on: access log lines {p['access_log_lines_before']} before the run, {p['access_log_lines_after']} after "
                 f"({(p['access_log_lines_after'] or 0) - (p['access_log_lines_before'] or 0)} during it, for {p['requests_measured']} measured requests); "
                 f"spans dropped {fmt_num(p['mesh_spans_dropped_total_before'])} -> {fmt_num(p['mesh_spans_dropped_total_after'])}, "
                 f"exported {fmt_num(p['mesh_spans_exported_total_before'])} -> {fmt_num(p['mesh_spans_exported_total_after'])}; "
                 f"access log lines dropped {fmt_num(p['mesh_access_log_dropped_total_before'])} -> {fmt_num(p['mesh_access_log_dropped_total_after'])}")
errs = [n for n, s in c.items() if s["errors"]]
grew = [n for n, p in post.items() if n.startswith("filters") and (p["filter_failures_after"] or 0) > (p["filter_failures_before"] or 0)]
if errs:
    L.append(f"\n**WARNING: errors or non-2xx responses in: {', '.join(errs)}** — those figures are not comparable.")
if grew:
    L.append(f"\n**WARNING: mesh_filter_failures_total grew during the run in: {', '.join(grew)}.**")
md = "\n".join(L) + "\n"
res = e["HERE"] + "/results/" + e["RESULTS"]
with open(res + ".json", "w") as f:
    json.dump({"meta": meta, "cases": c, "ratios": ratios, "checks": {"pre": checks, "post": post}, "runs": runs}, f, indent=2)
    f.write("\n")
with open(res + ".md", "w") as f:
    f.write(md)
sys.stdout.write(md)
if errs or grew:
    sys.exit(3)
EOF
cp "$HERE/results/$RESULTS.json" "$HERE/results/$RESULTS.md" "$RUN/"
log "results: bench/results/$RESULTS.json, bench/results/$RESULTS.md; raw outputs in $RUN"
