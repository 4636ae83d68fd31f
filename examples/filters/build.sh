#!/usr/bin/env bash
# Builds every example filter for wasm32-unknown-unknown (release: small and fast, a panic
# traps), as the end-to-end tests do (tests/src/filters.rs). The modules land in
#   target/wasm-filters/wasm32-unknown-unknown/release/
# (ratelimit.wasm, audit.wasm, auth.wasm, misbehave.wasm, header_adder.wasm, noop.wasm,
#  pw_header.wasm, pw_authcall.wasm): give that directory to `meshc --module-path`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="$root/target/wasm-filters"
cargo="${CARGO:-cargo}"

# The workspace's release profile is the native binaries' (it must keep unwinding), so the
# module settings are given here.
profile=(
  --config 'profile.release.opt-level=3'
  --config 'profile.release.lto=true'
  --config 'profile.release.codegen-units=1'
  --config 'profile.release.panic="abort"'
  --config 'profile.release.debug=0'
  --config 'profile.release.strip="debuginfo"'
)
build=(build --release --locked --target wasm32-unknown-unknown --target-dir "$target" "${profile[@]}")

unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_TARGET CARGO_TARGET_DIR

# The filters on our SDK (members of the main workspace).
(cd "$root" && "$cargo" "${build[@]}" \
  -p mesh-filter-ratelimit -p mesh-filter-audit -p mesh-filter-auth \
  -p mesh-filter-misbehave -p mesh-filter-header-adder -p mesh-filter-noop)

# The filters on the public proxy-wasm crate (a workspace of their own).
(cd "$root/examples/filters/proxy-wasm" && "$cargo" "${build[@]}")

out="$target/wasm32-unknown-unknown/release"
for module in ratelimit audit auth misbehave header_adder noop pw_header pw_authcall; do
  test -f "$out/$module.wasm" || { echo "missing $out/$module.wasm" >&2; exit 1; }
  printf '%-16s %8d bytes\n' "$module.wasm" "$(wc -c < "$out/$module.wasm")"
done
echo "modules in $out"
