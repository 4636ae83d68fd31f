#!/usr/bin/env python3
"""Latency at a fixed arrival rate (bench/load.sh OPENLOOP=1): reads the h2load outputs and
per-request logs of the open-loop runs and renders a markdown section.

  openloop.py RUN_DIR CAPACITY FRACTION... > section.md

Runs are RUN_DIR/ol-<fraction>-<case>.txt (h2load's summary) and .h2log (its per-request
log: start, status, microseconds to the end of the response). For each fraction of the
capacity (the one-worker mesh hop's closed-loop req/s in the same run): each case's achieved
rate, p50/p99/p99.9, what the hop adds over `direct-h1` at the same rate, and ours against
the peers' (one hop: nginx, haproxy; full hop over mTLS: haproxy -> nginx, Envoy -> Envoy).
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loadstat import fmt_us, h2load_latencies, parse_h2load, percentile  # noqa: E402

PAIRS = [
    ("one hop", "mesh-1hop-h1", ["nginx-1hop-h1", "haproxy-1hop-h1", "envoy-1hop-h1"]),
    ("full hop, mTLS", "mesh-mtls-chain-h1", ["haproxy-nginx-mtls-chain-h1", "envoy-mtls-chain-h1"]),
]


def load(run, fraction, case):
    base = os.path.join(run, f"ol-{fraction}-{case}")
    try:
        text = open(base + ".txt").read()
    except OSError:
        return None
    out = parse_h2load(text, base + ".h2log")
    out["p999_us"] = percentile(h2load_latencies(base + ".h2log"), 99.9)
    return out


def added(a, b, key):
    if a is None or b is None or a.get(key) is None or b.get(key) is None:
        return "-"
    return fmt_us(a[key] - b[key])


def ratio(a, b, key):
    if a is None or b is None or not a.get(key) or not b.get(key):
        return "-"
    return f"{a[key] / b[key]:.2f}x"


def main():
    run, capacity, fractions = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    cases = sorted({re.sub(r"^ol-[0-9.]+-|\.txt$", "", f) for f in os.listdir(run)
                    if f.startswith("ol-") and f.endswith(".txt")})
    order = ["direct-h1"] + [c for c in cases if c != "direct-h1"]
    cases = [c for c in order if c in cases]
    L = ["## Latency at a fixed arrival rate (open loop)", ""]
    L.append(f"h2load --h1 with a fixed request rate per client (a client sends on schedule; it waits only "
             f"when an answer takes longer than its interval), at fractions of the one-worker mesh hop's "
             f"closed-loop capacity in this run ({capacity:,.0f} req/s). Percentiles from h2load's per-request log. "
             "'added' is the case's percentile minus direct-h1's at the same rate (what the proxy hop adds).")
    for fr in fractions:
        L += ["", f"### {float(fr) * 100:.0f}% of capacity: {capacity * float(fr):,.0f} req/s offered", ""]
        L.append("| case | achieved req/s | p50 | p99 | p99.9 | added p50 | added p99 | added p99.9 | errors |")
        L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        rows = {c: load(run, fr, c) for c in cases}
        direct = rows.get("direct-h1")
        for c in cases:
            r = rows[c]
            if r is None:
                continue
            L.append(f"| {c} | {r.get('rps', 0):,.0f} | {fmt_us(r['p50_us'])} | {fmt_us(r['p99_us'])} | {fmt_us(r['p999_us'])} "
                     f"| {added(r, direct, 'p50_us')} | {added(r, direct, 'p99_us')} | {added(r, direct, 'p999_us')} "
                     f"| {r['errors'] + r['non2xx']} |")
        bullets = []
        for title, ours, peers in PAIRS:
            o = rows.get(ours)
            for p in peers:
                q = rows.get(p)
                if o is None or q is None:
                    continue
                bullets.append(f"- {title}, ours / {p}: p50 {ratio(o, q, 'p50_us')}, p99 {ratio(o, q, 'p99_us')}, "
                         f"p99.9 {ratio(o, q, 'p999_us')} (lower favours us)")
        L += [""] + bullets if bullets else []
    print("\n".join(L))


if __name__ == "__main__":
    main()
