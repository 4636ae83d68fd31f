#!/usr/bin/env bash
# Paired load test: two variants of a variants.sh run loaded at the same time, each by its
# own wrk, their proxies sharing one CPU. Whatever else the machine does in a round (other
# people's work, frequency changes) falls on both alike, where in variants.sh the cases of a
# round run one after another and such noise moved per-round ratios by 10-20%.
#
#   SET=filters QUICK=1 bash bench/variants.sh        # makes bench/run/variants-<time>/
#   bash bench/paired.sh bench/run/variants-<time>    # filters-1 against filters-0
#   B=filters-3 bash bench/paired.sh bench/run/variants-<time>
#   BIN_DIR=target/pgo/release bash bench/paired.sh ...   # the profile-guided build (bench/pgo.sh)
#
# The primary figure is each proxy's requests per CPU-second (utime+stime of its process):
# what a request costs it, measured under the same conditions at the same moments. (Their
# req/s ratio is reported too; it also moves with how the scheduler splits the CPU between
# the two, shown as their CPU shares.)
# Each round swaps which wrk starts first.
#
# Environment: A=filters-0 B=filters-1 (variants of the run), R=20 rounds of D=5 seconds,
# CONNS=32 wrk connections per proxy, WARMUP=2 seconds, PEERS=PATH (default
# bench/peers/peers.sh), BIN_DIR=DIR (default target/release), BIN_A and
# BIN_B (default BIN_DIR/mesh-proxy: two builds against each other, B being a copy of A's
# variant directory with its ports changed),
# RESULTS=NAME (default paired-<B>: bench/results/NAME.{md,json}).
# Ports: the two variants', and 18080-18092 and 18441-18443 (peers.sh).
set -euo pipefail
SCRIPT=paired.sh
A=${A:-filters-0}; B=${B:-filters-1}
OUT_NAME=paired-$B
R=${R:-20}; D=${D:-5}; CONNS=${CONNS:-32}; WARMUP=${WARMUP:-2}
RESULTS=${RESULTS:-paired-$B}
for t in wrk curl python3 taskset; do
  command -v "$t" >/dev/null 2>&1 || { echo "$t is needed" >&2; exit 1; }
done
NCPU=$(nproc)
[ "$NCPU" -ge 2 ] || { echo "paired.sh needs 2 CPUs: the proxies on one, the load on the others" >&2; exit 1; }
PROXY_CPU=$(( NCPU - 1 )); LOAD_CPUS="0-$(( NCPU - 2 ))"
# shellcheck source=bench/run_dir.sh
source "$(dirname "${BASH_SOURCE[0]}")/run_dir.sh"
# Two builds of the proxy against each other (same configuration copied to other ports):
BIN_A=${BIN_A:-$BIN_DIR/mesh-proxy}; BIN_B=${BIN_B:-$BIN_DIR/mesh-proxy}
for bin in "$BIN_A" "$BIN_B"; do
  [ -x "$bin" ] || die "no $bin (cargo build --release -p mesh-proxy)"
done
for v in "$A" "$B"; do
  [ -f "$RUN/$v/proxy.toml" ] || die "$RUN has no $v (run SET=filters bash bench/variants.sh first)"
done

ticks() { # pid -> utime+stime in clock ticks
  local line f
  read -r line <"/proc/$1/stat"
  read -r -a f <<<"${line##*) }"
  echo $(( f[11] + f[12] ))
}

declare -A PORT PID BIN=([$A]=$BIN_A [$B]=$BIN_B)
for v in "$A" "$B"; do
  conf=$RUN/$v/proxy.toml
  PORT[$v]=$(toml_port "$conf" inbound)
  admin=$(toml_port "$conf" admin)
  taskset -c "$PROXY_CPU" "${BIN[$v]}" --config "$conf" >"$OUT/$v.log" 2>&1 &
  PID[$v]=$!; PIDS+=("$!")
  wait_ready "${PID[$v]}" "$admin" "$OUT/$v.log" 100
  code=$(curl -s --max-time 3 -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORT[$v]}/")
  [ "$code" = 200 ] || die "$v answers $code, not 200"
done

load() { # seconds tag first -> both wrk at once, `first` started first
  local secs=$1 tag=$2 first=$3 second pa pb
  if [ "$first" = "$A" ]; then second=$B; else second=$A; fi
  taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${secs}s" --latency "http://127.0.0.1:${PORT[$first]}/" >"$OUT/$tag-$first.txt" 2>&1 &
  pa=$!
  taskset -c "$LOAD_CPUS" wrk -t1 -c"$CONNS" -d"${secs}s" --latency "http://127.0.0.1:${PORT[$second]}/" >"$OUT/$tag-$second.txt" 2>&1 &
  pb=$!
  wait "$pa" "$pb"
}

log "warm-up ${WARMUP}s; then $R rounds x ${D}s: $A and $B together on CPU $PROXY_CPU, wrk on CPUs $LOAD_CPUS"
load "$WARMUP" warmup "$A"
ROUNDS=$OUT/rounds.jsonl; : >"$ROUNDS"
TICK=$(getconf CLK_TCK)
for r in $(seq "$R"); do
  first=$A; [ $(( r % 2 )) = 0 ] && first=$B
  ta0=$(ticks "${PID[$A]}"); tb0=$(ticks "${PID[$B]}")
  load "$D" "r$r" "$first"
  ta1=$(ticks "${PID[$A]}"); tb1=$(ticks "${PID[$B]}")
  printf '{"round": %d, "first": "%s", "cpu_a_s": %s, "cpu_b_s": %s}\n' "$r" "$first" \
    "$(awk -v t=$(( ta1 - ta0 )) -v h="$TICK" 'BEGIN { print t / h }')" \
    "$(awk -v t=$(( tb1 - tb0 )) -v h="$TICK" 'BEGIN { print t / h }')" >>"$ROUNDS"
done

rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
export A B R D CONNS OUT RESULTS HERE ROOT rev PROXY_CPU LOAD_CPUS BIN_A BIN_B
python3 - "$ROUNDS" <<'EOF'
import json, os, statistics, sys
e = os.environ
sys.path.insert(0, e["HERE"])
import loadstat

A, B, OUT, D = e["A"], e["B"], e["OUT"], float(e["D"])
# The binaries as the committed results name them (relative to the repository).
BIN_A, BIN_B = loadstat.repo_path(e["BIN_A"], e["ROOT"]), loadstat.repo_path(e["BIN_B"], e["ROOT"])
rows = []
for line in open(sys.argv[1]):
    r = json.loads(line)
    a = loadstat.parse_wrk(open(f"{OUT}/r{r['round']}-{A}.txt").read())
    b = loadstat.parse_wrk(open(f"{OUT}/r{r['round']}-{B}.txt").read())
    bad = a["errors"] + a["non2xx"] + b["errors"] + b["non2xx"]
    if bad:
        sys.exit(f"round {r['round']}: {bad} errors or non-2xx responses")
    rows.append({
        "round": r["round"], "first": r["first"],
        "rps_a": a["rps"], "rps_b": b["rps"],
        "cpu_share_a": r["cpu_a_s"] / D, "cpu_share_b": r["cpu_b_s"] / D,
        "req_per_cpu_s_a": a["requests"] / r["cpu_a_s"] if r["cpu_a_s"] else None,
        "req_per_cpu_s_b": b["requests"] / r["cpu_b_s"] if r["cpu_b_s"] else None,
    })
rps = [x["rps_b"] / x["rps_a"] for x in rows]
eff = [x["req_per_cpu_s_b"] / x["req_per_cpu_s_a"] for x in rows if x["req_per_cpu_s_a"] and x["req_per_cpu_s_b"]]
ci, eci = loadstat.median_interval(rps), loadstat.median_interval(eff)
# The verdict goes by requests per CPU-second: the scheduler's split of the CPU between
# the two moves their req/s, not what a request costs each.
verdict = loadstat.verdict(eci)
summary = {
    "a": A, "b": B, "bin_a": BIN_A, "bin_b": BIN_B, "rounds": len(rows), "seconds": D, "conns": int(e["CONNS"]), "rev": e["rev"],
    "rps_ratio_median": statistics.median(rps), "rps_ratio_interval": ci,
    "rps_ratio_pooled": sum(x["rps_b"] for x in rows) / sum(x["rps_a"] for x in rows),
    "req_per_cpu_s_ratio_median": statistics.median(eff) if eff else None,
    "req_per_cpu_s_ratio_interval": eci,
    "cpu_share_a_median": statistics.median(x["cpu_share_a"] for x in rows),
    "cpu_share_b_median": statistics.median(x["cpu_share_b"] for x in rows),
    "target_one_filter_under_5pct": verdict if B == "filters-1" and A == "filters-0" else None,
    "per_round": rows,
}
f2 = lambda v: "-" if v is None else f"{v:.3f}"
iv = lambda v: "-" if v is None else f"[{v[0]:.3f}, {v[1]:.3f}]"
L = [f"# Paired load test: {B} against {A}",
     "",
     f"`bash bench/paired.sh` (rev {e['rev']}): both proxies (`workers = 1`) pinned to CPU {e['PROXY_CPU']} and "
     f"loaded at the same time, each by its own `wrk -t1 -c{e['CONNS']}` on CPUs {e['LOAD_CPUS']}, "
     f"{len(rows)} rounds x {D:g} s (the first wrk to start alternates). Ratios are {B} / {A} per round; "
     "intervals are 95% bootstrap intervals of the median.",
     "",
     f"Binaries: {A} `{BIN_A}`, {B} `{BIN_B}`.",
     "",
     "| | median ratio | 95% interval | pooled |",
     "| --- | ---: | ---: | ---: |",
     f"| req/s ({B} / {A}) | {f2(summary['rps_ratio_median'])} | {iv(ci)} | {f2(summary['rps_ratio_pooled'])} |",
     f"| requests per CPU-second | {f2(summary['req_per_cpu_s_ratio_median'])} | {iv(eci)} | |",
     "",
     f"CPU share of each proxy per round (median): {A} {summary['cpu_share_a_median']:.2f}, "
     f"{B} {summary['cpu_share_b_median']:.2f} of one CPU ("
     + ("together near 1: both proxies were busy all along, so the req/s ratio is their cost ratio)."
        if summary['cpu_share_a_median'] + summary['cpu_share_b_median'] >= 0.9 else
        "together under 0.9: the proxies were not saturated, and the req/s ratio reflects the load too; "
        "read the requests per CPU-second)."),
     ""]
if summary["target_one_filter_under_5pct"]:
    L.append(f"Target \"one filter costs under 5% throughput\" (a CPU-bound proxy's throughput is its requests "
             f"per CPU-second: ratio >= 0.95), by that ratio's interval: "
             f"**{summary['target_one_filter_under_5pct']}**.")
    L.append("")
L.append("| round | first | req/s " + A + " | req/s " + B + " | ratio | CPU share " + A + " / " + B + " |")
L.append("| ---: | --- | ---: | ---: | ---: | ---: |")
for x, q in zip(rows, rps):
    L.append(f"| {x['round']} | {x['first']} | {x['rps_a']:,.0f} | {x['rps_b']:,.0f} | {q:.3f} | "
             f"{x['cpu_share_a']:.2f} / {x['cpu_share_b']:.2f} |")
res = os.path.join(e["HERE"], "results", e["RESULTS"])
open(res + ".md", "w").write("\n".join(L) + "\n")
json.dump(summary, open(res + ".json", "w"), indent=1)
print("\n".join(L[:12]))
EOF
log "results: bench/results/$RESULTS.{md,json}; raw outputs in $OUT"
