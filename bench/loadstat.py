#!/usr/bin/env python3
"""Parsing and tabulating for bench/load.sh (and the per-case summaries of variants.sh).

  loadstat.py record  --case ... (one run's outputs -> one JSON line on stdout, a progress line on stderr)
  loadstat.py report  RUNS.jsonl --meta META.json --json OUT.json --md OUT.md

Each run record carries the load generator's own numbers (requests, req/s, p50, p99,
errors) and the CPU ticks (utime+stime from /proc/PID/stat) each process group spent
during the run. A case names the groups that make up "the proxy" (one or two processes);
CPU per request = those ticks / requests.
"""
import argparse
import json
import math
import random
import re
import statistics
import sys

UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def dur_us(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return float(m.group(1)) * UNIT_US[m.group(2)]


def parse_wrk(text):
    out = {"p50_us": None, "p99_us": None, "requests": 0, "errors": 0, "non2xx": 0}
    m = re.search(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m)", text, re.M)
    if m:
        out["requests"] = int(m.group(1))
        out["tool_seconds"] = dur_us(m.group(2) + m.group(3)) / 1e6
    m = re.search(r"^Requests/sec:\s*([0-9.]+)", text, re.M)
    if m:
        out["rps"] = float(m.group(1))
    for pct, key in (("50", "p50_us"), ("99", "p99_us")):
        m = re.search(rf"^\s*{pct}%\s+([0-9.]+(?:us|ms|s|m))\s*$", text, re.M)
        if m:
            out[key] = dur_us(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        out["errors"] = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        out["non2xx"] = int(m.group(1))
    return out


def percentile(sorted_values, p):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]


def h2load_latencies(log_path):
    """The sorted latencies (us) of h2load's per-request log (start time us, status,
    microseconds until the end of the response); failed requests (status -1) left out."""
    lat = []
    if log_path:
        try:
            with open(log_path) as f:
                for line in f:
                    parts = line.split("\t")
                    if len(parts) >= 3 and parts[1] != "-1":
                        lat.append(int(parts[2]))
        except OSError:
            pass
    lat.sort()
    return lat


def parse_h2load(text, log_path):
    out = {"p50_us": None, "p99_us": None, "requests": 0, "errors": 0, "non2xx": 0}
    m = re.search(r"finished in ([0-9.]+)(us|ms|s|m), ([0-9.]+) req/s", text)
    if m:
        out["tool_seconds"] = dur_us(m.group(1) + m.group(2)) / 1e6
        out["rps"] = float(m.group(3))
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)
    if m:
        total, started, done, ok, failed, errored, timeout = (int(x) for x in m.groups())
        out["requests"] = done
        out["errors"] = failed + errored + timeout
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        out["non2xx"] = int(m.group(3)) + int(m.group(4))
    # h2load prints only min/max/mean/sd; the percentiles come from its per-request log.
    lat = h2load_latencies(log_path)
    out["p50_us"] = percentile(lat, 50)
    out["p99_us"] = percentile(lat, 99)
    out["latency_samples"] = len(lat)
    m = re.search(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)", text)
    if m:
        out["mean_us"] = dur_us(m.group(3))
    return out


def cmd_record(a):
    text = open(a.out, errors="replace").read()
    r = parse_wrk(text) if a.tool == "wrk" else parse_h2load(text, a.log)
    if "rps" not in r and r.get("tool_seconds"):
        r["rps"] = r["requests"] / r["tool_seconds"]
    r.setdefault("rps", 0.0)
    cpu, cpu_user, cpu_sys, ctxsw = {}, {}, {}, {}
    for item in filter(None, a.cpu.split(",")):
        name, vals = item.split("=")
        u, s_, c = (int(x) for x in vals.split(":"))
        cpu_user[name] = u * 1e6 / a.hz  # microseconds
        cpu_sys[name] = s_ * 1e6 / a.hz
        cpu[name] = cpu_user[name] + cpu_sys[name]
        ctxsw[name] = c
    rec = {
        "case": a.case, "round": a.round, "tool": a.tool, "proto": a.proto,
        "elapsed_s": a.elapsed, "cpu_us": cpu, "cpu_user_us": cpu_user, "cpu_sys_us": cpu_sys, "ctxsw": ctxsw, "proxies": [p for p in a.proxies.split("+") if p],
        "loadgen_cpu_us": a.loadgen_ms * 1e3,
        "busy_cpu_us": a.busy * 1e6 / a.hz,
        **r,
    }
    proxy_us = sum(cpu.get(p, 0.0) for p in rec["proxies"])
    rec["proxy_cpu_us"] = proxy_us if rec["proxies"] else None
    rec["proxy_us_per_req"] = proxy_us / r["requests"] if rec["proxies"] and r["requests"] else None
    n = r["requests"]
    rec["proxy_user_us_per_req"] = sum(cpu_user.get(p, 0.0) for p in rec["proxies"]) / n if rec["proxies"] and n else None
    rec["proxy_sys_us_per_req"] = sum(cpu_sys.get(p, 0.0) for p in rec["proxies"]) / n if rec["proxies"] and n else None
    rec["proxy_ctxsw_per_req"] = sum(ctxsw.get(p, 0) for p in rec["proxies"]) / n if rec["proxies"] and n else None
    rec["backend_ctxsw_per_req"] = ctxsw.get("backend", 0) / n if n else None
    rec["loadgen_us_per_req"] = rec["loadgen_cpu_us"] / n if n else None
    rec["backend_us_per_req"] = cpu.get("backend", 0.0) / r["requests"] if r["requests"] else None
    ours = sum(cpu.values()) + rec["loadgen_cpu_us"]
    # CPU the machine spent on anything else during the run (other agents' builds, ...).
    rec["foreign_cores"] = max(0.0, rec["busy_cpu_us"] - ours) / 1e6 / a.elapsed if a.elapsed else None
    print(json.dumps(rec))
    bad = r["errors"] + r["non2xx"]
    print(
        f"  {a.case:<22} r{a.round} {rec['rps']:>9.0f} req/s  p50 {fmt_us(r['p50_us']):>8}  p99 {fmt_us(r['p99_us']):>8}"
        f"  proxy {fmt_num(rec['proxy_us_per_req'], 2):>6} us/req  backend {fmt_num(rec['backend_us_per_req'], 2):>5} us/req"
        f"  other load {fmt_num(rec['foreign_cores'], 2)} cores" + (f"  ERRORS {bad}" if bad else ""),
        file=sys.stderr,
    )


def fmt_us(v):
    if v is None:
        return "-"
    return f"{v / 1000:.2f}ms" if v >= 1000 else f"{v:.0f}us"


def fmt_num(v, nd=0):
    if v is None:
        return "-"
    return f"{v:,.{nd}f}"


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def median_interval(values, level=0.95, resamples=2000):
    """A bootstrap interval of the median of `values` (same-round ratios): resampled with a
    fixed seed, so the same rounds give the same interval. None with fewer than 5 values."""
    if len(values) < 5:
        return None
    rng = random.Random(1)
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = (1 - level) / 2
    return meds[int(tail * resamples)], meds[int((1 - tail) * resamples) - 1]


def verdict(interval, floor=0.95):
    """A target "ratio >= floor" judged by an interval: MET if all of it is at or above the
    floor, NOT MET if all of it is below, else at the target; None without an interval."""
    if interval is None:
        return None
    if interval[0] >= floor:
        return "MET"
    if interval[1] < floor:
        return "NOT MET"
    return f"AT THE TARGET (the interval spans {floor})"


def summarize(runs):
    cases = {}
    for r in runs:
        cases.setdefault(r["case"], []).append(r)
    out = {}
    for name, rs in cases.items():
        reqs = sum(r["requests"] for r in rs)
        proxy_cpu = sum(r["proxy_cpu_us"] or 0.0 for r in rs)
        per_req = [r["proxy_us_per_req"] for r in rs if r["proxy_us_per_req"] is not None]
        s = {
            "proto": rs[0]["proto"], "tool": rs[0]["tool"], "proxies": rs[0]["proxies"], "rounds": len(rs),
            "requests": reqs,
            "rps": med([r["rps"] for r in rs]),
            "rps_min": min(r["rps"] for r in rs), "rps_max": max(r["rps"] for r in rs),
            "p50_us": med([r["p50_us"] for r in rs]),
            "p99_us": med([r["p99_us"] for r in rs]),
            "p99_us_max": max((r["p99_us"] for r in rs if r["p99_us"] is not None), default=None),
            # pooled over the rounds: all CPU / all requests
            "proxy_us_per_req": (proxy_cpu / reqs) if rs[0]["proxies"] and reqs else None,
            "proxy_us_per_req_min": min(per_req) if per_req else None,
            "proxy_us_per_req_max": max(per_req) if per_req else None,
            "backend_us_per_req": (sum(r["cpu_us"].get("backend", 0.0) for r in rs) / reqs) if reqs else None,
            "proxy_user_us_per_req": (sum(r["cpu_user_us"].get(p, 0.0) for r in rs for p in r["proxies"]) / reqs) if rs[0]["proxies"] and reqs else None,
            "proxy_sys_us_per_req": (sum(r["cpu_sys_us"].get(p, 0.0) for r in rs for p in r["proxies"]) / reqs) if rs[0]["proxies"] and reqs else None,
            "proxy_ctxsw_per_req": (sum(r["ctxsw"].get(p, 0) for r in rs for p in r["proxies"]) / reqs) if rs[0]["proxies"] and reqs else None,
            "backend_ctxsw_per_req": (sum(r["ctxsw"].get("backend", 0) for r in rs) / reqs) if reqs else None,
            "loadgen_us_per_req": (sum(r["loadgen_cpu_us"] for r in rs) / reqs) if reqs else None,
            "cpu_us_per_req_by_process": {
                p: sum(r["cpu_us"].get(p, 0.0) for r in rs) / reqs for p in rs[0]["proxies"]
            } if reqs else {},
            "errors": sum(r["errors"] + r["non2xx"] for r in rs),
            "foreign_cores_median": med([r["foreign_cores"] for r in rs]),
            "foreign_cores_max": max((r["foreign_cores"] or 0.0) for r in rs),
        }
        s["req_per_cpu_s"] = 1e6 / s["proxy_us_per_req"] if s["proxy_us_per_req"] else None
        out[name] = s
    return out


def repo_path(path, root):
    """A path as the committed results record it: relative to the repository `root`, or, for
    a path elsewhere, its last component after ".../" (no machine's absolute paths)."""
    if not path:
        return path
    import os.path
    # A relative path is relative to the working directory, as the shell that passed it.
    absolute, root = os.path.abspath(path), os.path.abspath(root)
    if absolute == root or absolute.startswith(root + os.sep):
        return os.path.relpath(absolute, root)
    return ".../" + os.path.basename(absolute.rstrip(os.sep))


def ratio(a, b):
    return a / b if a is not None and b else None


# The side-by-side table: each scenario, the case that runs it through each proxy.
# "haproxy" is haproxy alone for one hop and haproxy -> nginx for the two-proxy chains.
PEERS = ("mesh", "envoy", "nginx", "haproxy")
PEER_TITLES = {"mesh": "mesh-proxy", "envoy": "Envoy", "nginx": "nginx", "haproxy": "haproxy (chains: haproxy -> nginx)"}
SCENARIOS = (
    ("one_hop_h1", "one hop, h1", {"mesh": "mesh-1hop-h1", "envoy": "envoy-1hop-h1", "nginx": "nginx-1hop-h1", "haproxy": "haproxy-1hop-h1"}),
    ("one_hop_h2c", "one hop, h2c", {"mesh": "mesh-1hop-h2c", "envoy": "envoy-1hop-h2c", "nginx": "nginx-1hop-h2c", "haproxy": "haproxy-1hop-h2c"}),
    ("one_hop_proxy_wasm_h1", "one hop + the same proxy-wasm filter, h1", {"mesh": "mesh-1hop-wasm-h1", "envoy": "envoy-1hop-wasm-h1"}),
    ("mtls_chain_h1", "two proxies, mTLS between them, h1", {"mesh": "mesh-mtls-chain-h1", "envoy": "envoy-mtls-chain-h1", "haproxy": "haproxy-nginx-mtls-chain-h1"}),
    ("mtls_chain_h2c", "two proxies, mTLS between them, h2c", {"mesh": "mesh-mtls-chain-h2c", "envoy": "envoy-mtls-chain-h2c"}),
    ("plain_chain_h1", "two proxies, plaintext, h1", {"mesh": "mesh-chain-h1", "haproxy": "haproxy-nginx-chain-h1"}),
)


def side_by_side(c):
    """Per scenario: each proxy's requests per proxy CPU-second and p99, and ours / Envoy's."""
    rows = []
    for key, title, cases in SCENARIOS:
        cells = {
            peer: {"case": name, "req_per_cpu_s": c[name]["req_per_cpu_s"], "p99_us": c[name]["p99_us"], "rps": c[name]["rps"]}
            for peer, name in cases.items() if name in c
        }
        if "mesh" not in cells or len(cells) < 2:
            continue
        m, e = cells["mesh"], cells.get("envoy", {})
        rows.append({
            "key": key, "scenario": title, "proxies": cells,
            "mesh_vs_envoy": {
                "req_per_cpu_s": ratio(m["req_per_cpu_s"], e.get("req_per_cpu_s")),
                "p99": ratio(m["p99_us"], e.get("p99_us")),
            },
        })
    return rows


def compute_ratios(c):
    g = lambda name, key: c.get(name, {}).get(key)
    res = {}
    for proto in ("h1", "h2c"):
        ours, ng, hp, ev = f"mesh-1hop-{proto}", f"nginx-1hop-{proto}", f"haproxy-1hop-{proto}", f"envoy-1hop-{proto}"
        if ours not in c:
            continue
        vs = lambda key: {"vs_nginx": ratio(g(ours, key), g(ng, key)), "vs_haproxy": ratio(g(ours, key), g(hp, key)),
                          "vs_envoy": ratio(g(ours, key), g(ev, key))}
        eff = vs("req_per_cpu_s")
        # The 1.10x target is against the better of nginx and haproxy (set before Envoy was a peer).
        better = max((x for x in (g(ng, "req_per_cpu_s"), g(hp, "req_per_cpu_s")) if x), default=None)
        eff["vs_better"] = ratio(g(ours, "req_per_cpu_s"), better)
        res[f"one_hop_{proto}"] = {"req_per_cpu_s": eff, "p99": vs("p99_us"), "p50": vs("p50_us"), "rps": vs("rps")}
        if proto == "h1":
            res["one_hop_h1"]["target"] = 1.1
            res["one_hop_h1"]["meets_target"] = None if eff["vs_better"] is None else eff["vs_better"] >= 1.1
    for key, a, b in (("full_hop_h1", "mesh-chain-h1", "haproxy-nginx-chain-h1"),
                      ("full_hop_mtls_h1", "mesh-mtls-chain-h1", "haproxy-nginx-mtls-chain-h1"),
                      ("full_hop_mtls_h1_vs_envoy", "mesh-mtls-chain-h1", "envoy-mtls-chain-h1"),
                      ("full_hop_mtls_h2c_vs_envoy", "mesh-mtls-chain-h2c", "envoy-mtls-chain-h2c"),
                      ("proxy_wasm_h1_vs_envoy", "mesh-1hop-wasm-h1", "envoy-1hop-wasm-h1")):
        if a in c and b in c:
            res[key] = {
                "req_per_cpu_s": ratio(g(a, "req_per_cpu_s"), g(b, "req_per_cpu_s")),
                "rps": ratio(g(a, "rps"), g(b, "rps")),
                "p50": ratio(g(a, "p50_us"), g(b, "p50_us")),
                "p99": ratio(g(a, "p99_us"), g(b, "p99_us")),
            }
    # What the filter costs each proxy: its one hop with the filter against its own without.
    cost = {}
    for who, with_f, without in (("mesh", "mesh-1hop-wasm-h1", "mesh-1hop-h1"), ("envoy", "envoy-1hop-wasm-h1", "envoy-1hop-h1")):
        if with_f in c and without in c:
            cost[who] = {
                "req_per_cpu_s_ratio": ratio(g(with_f, "req_per_cpu_s"), g(without, "req_per_cpu_s")),
                "extra_cpu_us_per_req": (g(with_f, "proxy_us_per_req") - g(without, "proxy_us_per_req"))
                if g(with_f, "proxy_us_per_req") is not None and g(without, "proxy_us_per_req") is not None else None,
            }
    if cost:
        res["proxy_wasm_filter_cost_h1"] = cost
    return res


def fmt_ratio(v):
    return "-" if v is None else f"{v:.2f}x"


def render_side_by_side(rows, meta):
    L = ["## Side by side: requests per proxy CPU-second, p99", ""]
    L.append("Each cell: requests per CPU-second of the proxy process(es) (higher is better) / p99 (lower is better). "
             "Chains count the CPU of both proxies. The last two columns are ours / Envoy's.")
    L.append("")
    L.append("| scenario | " + " | ".join(PEER_TITLES[p] for p in PEERS) + " | req per CPU-s, ours / Envoy | p99, ours / Envoy |")
    L.append("| --- | " + " | ".join("---:" for _ in PEERS) + " | ---: | ---: |")
    for r in rows:
        cells = []
        for p in PEERS:
            x = r["proxies"].get(p)
            cells.append("" if x is None else f"{fmt_num(x['req_per_cpu_s'])} / {fmt_us(x['p99_us'])}")
        v = r["mesh_vs_envoy"]
        L.append(f"| {r['scenario']} | " + " | ".join(cells) + f" | {fmt_ratio(v['req_per_cpu_s'])} | {fmt_ratio(v['p99'])} |")
    L.append("")
    f = meta.get("wasm_filter")
    if f and any(r["key"] == "one_hop_proxy_wasm_h1" for r in rows):
        L.append(f"The proxy-wasm filter: `{f['module']}` with config `{json.dumps(f['config'])}`, the same file in both "
                 "(mesh-proxy: wasmtime, `failure closed`; Envoy: V8, `fail_open: false`).")
        L.append("")
    return L


def render(meta, c, ratios, rows=()):
    L = []
    L.append(f"# mesh-proxy load benchmark ({meta.get('date', '?')})")
    L.append("")
    L.append(
        f"{meta.get('rounds')} round(s) x {meta.get('duration_s')} s per case, interleaved round-robin; "
        f"h1: wrk -t{meta.get('wrk_threads')} -c{meta.get('wrk_conns')} --latency; "
        f"h2c: h2load -t{meta.get('h2_threads')} -c{meta.get('h2_conns')} -m{meta.get('h2_streams')} (percentiles from --log-file). "
        f"Proxies: 1 worker/thread each. Machine: {meta.get('nproc')} CPUs, shared (see 'other load'). "
        f"Figures are medians over rounds; CPU per request is pooled over rounds (all CPU / all requests)."
    )
    L.append("")
    L.append("| case | path | req/s (min-max) | p50 | p99 | proxy CPU us/req (min-max) | req per proxy CPU-s | backend us/req | other load (cores) | errors |")
    L.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, s in c.items():
        rng = lambda lo, hi, nd: "" if lo is None or hi is None or s["rounds"] < 2 else f" ({lo:,.{nd}f}-{hi:,.{nd}f})"
        L.append(
            f"| {name} | {meta.get('paths', {}).get(name, '')} | {fmt_num(s['rps'])}{rng(s['rps_min'], s['rps_max'], 0)} | {fmt_us(s['p50_us'])} | {fmt_us(s['p99_us'])} "
            f"| {fmt_num(s['proxy_us_per_req'], 2)}{rng(s['proxy_us_per_req_min'], s['proxy_us_per_req_max'], 2)} "
            f"| {fmt_num(s['req_per_cpu_s'])} | {fmt_num(s['backend_us_per_req'], 2)} | {fmt_num(s['foreign_cores_median'], 2)} | {s['errors']} |"
        )
    L.append("")
    if rows:
        L.extend(render_side_by_side(rows, meta))
    L.append("Where the CPU goes (per request, pooled over rounds): the proxy's user and system time, its context switches, "
             "and the backend's context switches (a backend that sleeps between requests must be woken, at the writer's expense); "
             "the load generator's CPU.")
    L.append("")
    L.append("| case | proxy user us/req | proxy sys us/req | proxy ctx switches/req | backend ctx switches/req | load generator us/req |")
    L.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, s in c.items():
        L.append(f"| {name} | {fmt_num(s['proxy_user_us_per_req'], 2)} | {fmt_num(s['proxy_sys_us_per_req'], 2)} | {fmt_num(s['proxy_ctxsw_per_req'], 3)} "
                 f"| {fmt_num(s['backend_ctxsw_per_req'], 3)} | {fmt_num(s['loadgen_us_per_req'], 2)} |")
    L.append("")
    L.append("## Ratios (ours / theirs)")
    L.append("")
    for proto in ("h1", "h2c"):
        r = ratios.get(f"one_hop_{proto}")
        if not r:
            continue
        e = r["req_per_cpu_s"]
        line = (f"- one hop {proto}: requests per CPU-second {fmt_ratio(e['vs_nginx'])} nginx, {fmt_ratio(e['vs_haproxy'])} haproxy "
                f"({fmt_ratio(e['vs_better'])} the better of them")
        if proto == "h1":
            line += "; target >= 1.10x: " + {True: "MET", False: "NOT MET", None: "n/a"}[r["meets_target"]]
        line += f"), {fmt_ratio(e['vs_envoy'])} Envoy"
        for what, k in (("p99", "p99"), ("p50", "p50"), ("req/s", "rps")):
            line += (f"; {what} {fmt_ratio(r[k]['vs_nginx'])} nginx, {fmt_ratio(r[k]['vs_haproxy'])} haproxy, "
                     f"{fmt_ratio(r[k]['vs_envoy'])} Envoy")
        L.append(line)
    for key, what in (("full_hop_h1", "full hop h1, plaintext (mesh C->D h2c vs haproxy->nginx"),
                      ("full_hop_mtls_h1", "full hop h1 over mTLS (mesh A->B vs haproxy->nginx :18084"),
                      ("full_hop_mtls_h1_vs_envoy", "full hop h1 over mTLS (mesh A->B vs Envoy -> Envoy, mTLS h2 between them"),
                      ("full_hop_mtls_h2c_vs_envoy", "full hop h2c over mTLS (mesh A->B vs Envoy -> Envoy, mTLS h2 between them"),
                      ("proxy_wasm_h1_vs_envoy", "one hop h1 with the same proxy-wasm filter (mesh E vs Envoy on V8")):
        f = ratios.get(key)
        if f:
            L.append(
                f"- {what}; CPU of both proxies summed): requests per CPU-second {fmt_ratio(f['req_per_cpu_s'])}, "
                f"req/s {fmt_ratio(f['rps'])}, p50 {fmt_ratio(f['p50'])}, p99 {fmt_ratio(f['p99'])}"
            )
    for who, f in ratios.get("proxy_wasm_filter_cost_h1", {}).items():
        extra = "-" if f["extra_cpu_us_per_req"] is None else f"{f['extra_cpu_us_per_req']:+.2f}"
        L.append(f"- the filter on {PEER_TITLES[who]} (its one hop with the filter / without): requests per CPU-second "
                 f"{fmt_ratio(f['req_per_cpu_s_ratio'])}, {extra} us CPU per request. Two processes measured one after "
                 "the other: on a shared machine that moves by 10% or more; `bench/paired.sh` measures a filter's cost")
    L.append("")
    L.append("For req/s and req per CPU-second higher is better (ratio > 1 favours us); for p50/p99 lower is better (ratio < 1 favours us).")
    errs = [n for n, s in c.items() if s["errors"]]
    if errs:
        L.append("")
        L.append(f"**WARNING: errors or non-2xx responses in: {', '.join(errs)}** — those figures are not comparable.")
    return "\n".join(L) + "\n"


def cmd_report(a):
    runs = [json.loads(l) for l in open(a.runs) if l.strip()]
    meta = json.load(open(a.meta)) if a.meta else {}
    order = meta.get("cases_order")
    c = summarize(runs)
    if order:
        c = {k: c[k] for k in order if k in c}
    ratios = compute_ratios(c)
    rows = side_by_side(c)
    md = render(meta, c, ratios, rows)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "side_by_side": rows, "cases": c, "ratios": ratios, "runs": runs}, f, indent=2)
            f.write("\n")
    if a.md:
        with open(a.md, "w") as f:
            f.write(md)
    sys.stdout.write(md)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--case", required=True)
    r.add_argument("--round", type=int, required=True)
    r.add_argument("--tool", choices=["wrk", "h2load"], required=True)
    r.add_argument("--proto", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--log")
    r.add_argument("--elapsed", type=float, required=True)
    r.add_argument("--cpu", default="", help="name=ticks,... (utime+stime deltas)")
    r.add_argument("--proxies", default="", help="groups that make up the proxy, joined by +")
    r.add_argument("--hz", type=float, default=100.0)
    r.add_argument("--busy", type=float, default=0.0, help="machine busy ticks (all CPUs) during the run")
    r.add_argument("--loadgen-ms", type=float, default=0.0)
    r.set_defaults(fn=cmd_record)
    s = sub.add_parser("report")
    s.add_argument("runs")
    s.add_argument("--meta")
    s.add_argument("--json")
    s.add_argument("--md")
    s.set_defaults(fn=cmd_report)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
