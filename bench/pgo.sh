#!/usr/bin/env bash
# The profile-guided release build of mesh-proxy and meshc: the build the benchmarks measure
# and the one to ship. An instrumented build runs a training load, and the optimized build
# lays out and inlines the code by what that load ran.
#
#   bash bench/pgo.sh                      # -> target/pgo/release/{mesh-proxy,meshc} (~25 min)
#   BIN_DIR=target/pgo/release bash bench/paired.sh bench/run/variants-<time>
#
# Why: a request's path through the proxy is long straight-line code spread over many crates
# (hyper, tokio, http, the filter chain, the WASM host, wasmtime's entry), run once per
# request; on the filter path each instruction costs about twice the proxy's average
# (ablations, bench/README.md), which points at fetching the code. Measured with
# bench/paired.sh, the profile-guided build serves a one-hop request in about a tenth less
# CPU than the plain release build, and a WASM filter's share of a request drops by about
# two fifths (bench/README.md, session 9).
#
# Training (with the instrumented binaries, so about half as fast as the release build):
#   - `QUICK=1 bench/variants.sh` (SET=all): one hop with no filter, with one and three
#     header-adding filters and the no-op filter (both on our SDK), request metrics,
#     access logs and tracing, a looping filter stopped by its time limit;
#   - `QUICK=1 bench/load.sh`: one hop h1 and h2c, one hop with a filter on the public
#     proxy-wasm crate (pw_header.wasm), two sidecars in a chain over mTLS HTTP/2 and over
#     plaintext h2c (its Envoy, nginx and haproxy cases train nothing of ours).
# Code no training load runs is laid out as cold: a path missing here (a filter calling
# host functions the training filters never call, for instance) gains less and may run
# slower than in the plain build, so keep the training as broad as what the mesh serves.
#
# Environment: PGO_DIR=DIR (default target/pgo: gen/ instrumented build, removed once the
# profiles are merged; profiles/; release/ via --target-dir), SKIP_TRAIN=1 (reuse
# profiles/merged.profdata). Disk: 2-3 GB for each of the two builds, one at a time.
# Needs llvm-profdata (`rustup component add llvm-tools`, done here if missing), and what
# variants.sh and load.sh need (wrk, h2load, nginx, haproxy, curl, envoy: bench/README.md).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGO_DIR=${PGO_DIR:-$ROOT/target/pgo}
mkdir -p "$PGO_DIR"
PGO_DIR=$(cd "$PGO_DIR" && pwd)
PROFILES=$PGO_DIR/profiles
log() { echo "[pgo.sh $(date +%T)] $*" >&2; }
die() { log "error: $*"; exit 1; }

sysroot=$(rustc --print sysroot)
host=$(rustc -vV | awk '/^host:/ {print $2}')
PROFDATA=$sysroot/lib/rustlib/$host/bin/llvm-profdata
if [ ! -x "$PROFDATA" ]; then
  log "rustup component add llvm-tools"
  rustup component add llvm-tools >&2 || die "llvm-profdata is needed (rustup component add llvm-tools)"
fi
[ -x "$PROFDATA" ] || die "no llvm-profdata at $PROFDATA"

cd "$ROOT"
if [ "${SKIP_TRAIN:-0}" != 1 ]; then
  log "instrumented build -> $PGO_DIR/gen (a full release build: about 10 minutes on 2 cores)"
  rm -rf "$PROFILES"; mkdir -p "$PROFILES/raw"
  RUSTFLAGS="-Cprofile-generate=$PROFILES/raw" \
    cargo build --release -q -p mesh-proxy -p meshc --target-dir "$PGO_DIR/gen"
  # Build scripts ran instrumented too: only the proxies' and meshc's runs below count.
  rm -f "$PROFILES/raw"/*.profraw
  GEN=$PGO_DIR/gen/release
  log "training: variants.sh (all sets, quick)"
  BIN_DIR=$GEN QUICK=1 SET=all RESULTS=pgo-train-variants RUN_DIR=$PROFILES/variants \
    bash bench/variants.sh >"$PROFILES/variants.log" 2>&1 ||
    { tail -n 30 "$PROFILES/variants.log" >&2; die "training on variants.sh failed"; }
  log "training: load.sh (quick)"
  BIN_DIR=$GEN QUICK=1 RESULTS=pgo-train-load RUN_DIR=$PROFILES/load \
    bash bench/load.sh >"$PROFILES/load.log" 2>&1 ||
    { tail -n 30 "$PROFILES/load.log" >&2; die "training on load.sh failed"; }
  # The training's own results measure instrumented binaries: not kept with the others.
  rm -f bench/results/pgo-train-*
  ls "$PROFILES/raw"/*.profraw >/dev/null 2>&1 || die "the training wrote no profiles"
  "$PROFDATA" merge -o "$PROFILES/merged.profdata" "$PROFILES/raw"/*.profraw
  # The instrumented build is not needed again (SKIP_TRAIN uses the merged profile): its
  # gigabytes go before the optimized build takes as many.
  rm -rf "$PGO_DIR/gen"
fi
[ -f "$PROFILES/merged.profdata" ] || die "no $PROFILES/merged.profdata (run without SKIP_TRAIN)"

log "optimized build -> $PGO_DIR/release"
RUSTFLAGS="-Cprofile-use=$PROFILES/merged.profdata" \
  cargo build --release -q -p mesh-proxy -p meshc --target-dir "$PGO_DIR"
log "done: $PGO_DIR/release/mesh-proxy"
