#!/usr/bin/env bash
# The demo: a mesh of four services on loopback, a sidecar (mesh-proxy) and a small
# application for each, driven by the policy examples/demo/demo.mesh.
#
#   bash examples/demo.sh            file mode: meshc compiles the policy to a table file the
#                                    sidecars watch (routing, a canary split, errors, mTLS,
#                                    authorization, a WASM filter and its new version
#                                    hot-loaded under load, a policy change, a broken table)
#   bash examples/demo.sh --control  control-plane mode: mesh-control serves the policy; the
#                                    sidecars join with tokens; `meshc apply` ships a change
#                                    (with the filter's new version) that every sidecar ACKs
#   --stay                           keep the mesh running at the end (Ctrl-C stops it)
#
# MESH_BIN_DIR=DIR uses prebuilt meshc, mesh-proxy, mesh-control and mesh-demo-app from DIR,
# and MESH_FILTER_DIR=DIR prebuilt filter modules (header_adder.wasm, pw_header.wasm), instead
# of building them (the end-to-end test, tests/tests/demo.rs, does); MESH_DEMO_DIR=DIR puts
# the run's files in DIR instead of build/demo-MODE.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=file stay=false
for arg in "$@"; do
  case $arg in
    --control) mode=control ;;
    --stay) stay=true ;;
    -h | --help) sed -n '2,19s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "examples/demo.sh: unknown argument \`$arg\` (--control, --stay, --help)" >&2; exit 2 ;;
  esac
done

run=${MESH_DEMO_DIR:-build/demo-$mode} # the policy, tables, configs and logs of this run
rm -rf "$run"
mkdir -p "$run"
run=$(cd "$run" && pwd)
source examples/demo/lib.sh

if [ -n "${MESH_BIN_DIR:-}" ]; then
  bin=$(cd "$MESH_BIN_DIR" && pwd)
  step "the binaries: prebuilt, in $bin"
else
  step "building meshc, mesh-proxy, mesh-control and mesh-demo-app (cargo build, debug)"
  echo "A first build compiles about 330 crates (wasmtime, the WASM runtime, is most of the"
  echo "work): about 15 minutes on a 2-core machine. Later runs take seconds."
  cargo build -p meshc -p mesh-proxy -p mesh-control -p mesh-demo-app ||
    fail "cargo build failed (its errors are above)"
  bin=$(cd "${CARGO_TARGET_DIR:-target}/debug" && pwd)
fi
for b in meshc mesh-proxy mesh-control mesh-demo-app; do
  [ -x "$bin/$b" ] || fail "$bin/$b is missing"
done

if [ -n "${MESH_FILTER_DIR:-}" ]; then
  filters=$(cd "$MESH_FILTER_DIR" && pwd)
  step "the example WASM filters: prebuilt, in $filters"
else
  step "building the example WASM filters (examples/filters/build.sh, wasm32, release)"
  echo "A first build takes under a minute; later runs take seconds."
  bash examples/filters/build.sh || fail "the filters did not build (the errors are above)"
  filters=$(cd target/wasm-filters/wasm32-unknown-unknown/release && pwd)
fi
for m in header_adder pw_header; do
  [ -f "$filters/$m.wasm" ] || fail "$filters/$m.wasm is missing"
done

source "examples/demo/$mode.sh"

if $stay; then
  step "the mesh keeps running (Ctrl-C stops it)"
  stay_help
  trap 'step "stopping the mesh"; exit 0' INT TERM
  wait
fi
step "done: stopping the mesh"
