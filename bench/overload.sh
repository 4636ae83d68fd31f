#!/usr/bin/env bash
# Overload benchmark: 3x a backend's capacity through a full mesh hop, with and without
# circuit breaking (the service's `limits { max_requests  max_pending }`).
#
#   bash bench/overload.sh            # D=20 s per run (~1.5 min plus the build)
#   QUICK=1 bash bench/overload.sh    # D=5 s
#
# The backend (bench/overload_backend.py) serves at most C requests at once, S ms each: its
# capacity is C/S. The mesh: wrk -> proxy A outbound (service client, Host: backend) -h2c->
# proxy B inbound (service backend) -h1-> the backend; both sidecars `insecure_plaintext`
# (the mTLS hop costs the same with or without overload; bench/load.sh measures it) and
# every listener on 127.0.0.1:0 (the addresses come from each proxy's addresses_file).
#
# Runs, each D seconds, one after the other (the table is swapped between them):
#   capacity   C connections, closed loop: the backend exactly busy (limits max_requests C).
#   limited    N connections, each waiting S ms after every answer (wrk delay()): about 3x the
#              capacity offered; `limits { max_requests C  max_pending 0 }`: the surplus is
#              answered 503 overloaded by A at once.
#   limited-pending  the same with `max_pending C/4`: a short wait list before shedding.
#   unlimited  the same load with the default limits (1024): the surplus queues at the
#              backend (the reference: what circuit breaking avoids). wrk is a closed loop,
#              so here the offered rate falls to what the backend serves and the queue is
#              the N connections' requests.
# For each: requests/s offered (all answers) and admitted (200), the p50/p99 of the admitted
# requests from A's access log (`duration_ms`, arrival to the end of the response body, for
# status 200 only: wrk's own percentiles mix the fast 503s in), wrk's p99 of all answers,
# the 503 count, and the peak RSS of A and B sampled every 100 ms (plus their RSS before).
#
# Environment (all optional): C=8 S=20 (ms) D=20 N=(7*C/2: about 3x, printed as measured)
#   SKIP_BUILD=1 (use target/release)   BIN_DIR=DIR (mesh-proxy and meshc from DIR)
#   RUN_DIR=DIR (default bench/run/overload-<time>)
# Needs: wrk, python3, curl.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
C=${C:-8}
S=${S:-20}
D=${D:-20}
[ "${QUICK:-0}" = 1 ] && D=5
N=${N:-$((7 * C / 2))}
RUN=${RUN_DIR:-$HERE/run/overload-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RUN"

die() { echo "overload.sh: $*" >&2; exit 1; }
for tool in wrk python3 curl; do
  command -v "$tool" >/dev/null || die "needs $tool"
done

if [ -n "${BIN_DIR:-}" ]; then
  BIN=$BIN_DIR
else
  BIN=$ROOT/target/release
  if [ "${SKIP_BUILD:-0}" != 1 ]; then
    echo "building mesh-proxy and meshc (release)..."
    (cd "$ROOT" && cargo build --release --quiet -p mesh-proxy -p meshc)
  fi
fi
[ -x "$BIN/mesh-proxy" ] && [ -x "$BIN/meshc" ] || die "no mesh-proxy/meshc in $BIN"

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

wait_file() { # file seconds
  local i
  for ((i = 0; i < $2 * 20; i++)); do
    [ -s "$1" ] && return 0
    sleep 0.05
  done
  die "no $1 within $2 s"
}

# The backend.
python3 "$HERE/overload_backend.py" "$C" "$S" "$RUN/backend.port" >"$RUN/backend.log" 2>&1 &
PIDS+=($!)
wait_file "$RUN/backend.port" 10
APP_PORT=$(cat "$RUN/backend.port")

# The sidecars, before the table exists (they wait for it).
start_proxy() { # name service
  cat >"$RUN/$1.toml" <<EOF
service = "$2"
table = "$RUN/mesh.table"
table_poll_ms = 100
workers = 1
log_level = "warn"
drain_ms = 500
addresses_file = "$RUN/$1.addresses"
[inbound]
listen = "127.0.0.1:0"
app = "127.0.0.1:$APP_PORT"
[outbound]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[identity]
insecure_plaintext = true
[access_log]
path = "$RUN/access-$1.log"
EOF
  "$BIN/mesh-proxy" --config "$RUN/$1.toml" >"$RUN/$1.log" 2>&1 &
  PIDS+=($!)
  eval "PID_$1=$!"
  wait_file "$RUN/$1.addresses" 20
}
start_proxy a client
start_proxy b backend
addr() { sed -n "s/^$2 = \"\(.*\)\"$/\1/p" "$RUN/$1.addresses"; }
A_OUT=$(addr a outbound)
A_ADMIN=$(addr a admin)
B_IN=$(addr b inbound)
B_ADMIN=$(addr b admin)

install_table() { # max_requests max_pending
  cat >"$RUN/mesh.mesh" <<EOF
mesh "overload" { trust_domain "overload.local" }
service client { port 1  endpoints ["127.0.0.1:1"] }
service backend {
  port $APP_PORT
  endpoints ["$B_IN"]
  mtls permissive
  limits { max_requests $1  max_pending $2 }
}
route all on backend { match { path prefix "/" } timeout 30s }
authorize backend { allow from anyone to path prefix "/" }
observe backend { access_log json sample 100% }
EOF
  "$BIN/meshc" compile "$RUN/mesh.mesh" --output "$RUN/mesh.table.new" >"$RUN/meshc.log" 2>&1 \
    || { cat "$RUN/meshc.log" >&2; die "meshc compile failed"; }
  mv "$RUN/mesh.table.new" "$RUN/mesh.table"
  local sum i
  # The checksum in the table's header (bytes 16..48), as each sidecar's /config reports it.
  sum=$(od -An -tx1 -j16 -N32 "$RUN/mesh.table" | tr -d ' \n')
  for ((i = 0; i < 100; i++)); do
    if curl -fsS "http://$A_ADMIN/config" 2>/dev/null | grep -q "$sum" \
      && curl -fsS "http://$B_ADMIN/config" 2>/dev/null | grep -q "$sum"; then
      return 0
    fi
    sleep 0.1
  done
  die "the sidecars did not load the table within 10 s"
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

cat >"$RUN/pace.lua" <<EOF
-- Each connection waits S ms after every answer: a paced client, not a flood of retries.
function delay() return $S end
EOF

run() { # name connections paced
  local name=$1 conns=$2 paced=$3 before_a before_b peak_a=0 peak_b=0 sampler
  local lines_a
  lines_a=$(wc -l <"$RUN/access-a.log" 2>/dev/null || echo 0)
  before_a=$(rss_kib "$PID_a")
  before_b=$(rss_kib "$PID_b")
  (
    pa=0; pb=0
    while :; do
      ra=$(rss_kib "$PID_a"); rb=$(rss_kib "$PID_b")
      [ "$ra" -gt "$pa" ] && pa=$ra
      [ "$rb" -gt "$pb" ] && pb=$rb
      echo "$pa $pb" >"$RUN/$name.rss"
      sleep 0.1
    done
  ) &
  sampler=$!
  local script=()
  [ "$paced" = 1 ] && script=(-s "$RUN/pace.lua")
  wrk -t1 -c"$conns" -d"${D}s" --latency -H "Host: backend" "${script[@]}" \
    "http://$A_OUT/" >"$RUN/$name.wrk" 2>&1 || die "wrk failed: $(cat "$RUN/$name.wrk")"
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  sleep 0.3 # the access-log writer flushes every 10 ms
  read -r peak_a peak_b <"$RUN/$name.rss"
  tail -n +"$((lines_a + 1))" "$RUN/access-a.log" >"$RUN/$name.access.log"
  python3 - "$name" "$RUN/$name.access.log" "$RUN/$name.wrk" "$D" "$conns" \
    "$before_a" "$peak_a" "$before_b" "$peak_b" <<'EOF' | tee -a "$RUN/results.tsv"
import json, re, sys
name, log, wrk, d, conns = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
before_a, peak_a, before_b, peak_b = (int(x) for x in sys.argv[6:10])
ok, over, other = [], 0, 0
for line in open(log):
    try:
        l = json.loads(line)
    except ValueError:
        continue
    if l.get("direction") != "outbound":
        continue
    if l["status"] == 200:
        ok.append(l["duration_ms"])
    elif l["status"] == 503 and l.get("error") == "overloaded":
        over += 1
    else:
        other += 1
ok.sort()
def pct(p):
    return ok[min(len(ok) - 1, int(p / 100 * len(ok)))] if ok else float("nan")
text = open(wrk).read()
m = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", text)
wrk_p99 = float("nan")
if m:
    wrk_p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
total = len(ok) + over + other
print("\t".join(str(x) for x in [
    name, conns, round(total / d, 1), round(len(ok) / d, 1), over, other,
    round(pct(50), 2), round(pct(99), 2), round(wrk_p99, 2),
    before_a // 1024, peak_a // 1024, before_b // 1024, peak_b // 1024]))
EOF
}

printf 'run\tconns\toffered_rps\tadmitted_rps\toverloaded\tother\tp50_ms\tp99_ms\twrk_p99_all_ms\tA_rss_before_MiB\tA_rss_peak_MiB\tB_rss_before_MiB\tB_rss_peak_MiB\n' \
  | tee "$RUN/results.tsv"
install_table "$C" 0
curl -fsS -H "Host: backend" "http://$A_OUT/" >/dev/null || die "the mesh does not answer"
run capacity "$C" 0
run limited "$N" 1
install_table "$C" "$((C / 4))"
run limited-pending "$N" 1
install_table 1024 1024
run unlimited "$N" 1

python3 - "$RUN/results.tsv" "$C" "$S" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
r = {row[0]: row for row in rows}
cap = float(r["capacity"][3])
c, s = int(sys.argv[2]), int(sys.argv[3])
print(f"\nbackend capacity: {c} at once x {s} ms = {c * 1000 / s:.0f} req/s nominal, {cap:.0f} measured")
for name in ("limited", "limited-pending", "unlimited"):
    row = r[name]
    print(f"{name}: {row[1]} connections, offered {float(row[2]) / cap:.1f}x capacity, admitted "
          f"{float(row[3]) / cap:.2f}x; admitted p99 {row[7]} ms vs "
          f"{r['capacity'][7]} ms at capacity ({float(row[7]) / float(r['capacity'][7]):.2f}x); "
          f"A peak RSS {row[10]} MiB")
EOF
echo "raw outputs: $RUN"
