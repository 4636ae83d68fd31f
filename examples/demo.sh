#!/usr/bin/env bash
# The demo on a built-in default: check and compile the example policies, show what
# meshc says about a broken one, and inspect a compiled table. Everything stays in build/.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --quiet -p meshc
meshc=target/debug/meshc
mkdir -p build/modules

# The example filters arrive with the WASM issue; until then the policies point at
# empty (valid) WebAssembly modules so the module pinning can be shown.
for f in ratelimit audit; do
  printf '\0asm\1\0\0\0' > "build/modules/$f.wasm"
done

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

for policy in examples/policies/hello.mesh examples/policies/shop.mesh examples/policies/bookinfo; do
  step "meshc check $policy"
  "$meshc" check --module-path build/modules "$policy" && echo "ok: no errors"
done

step "meshc check on a policy with mistakes"
cat > build/broken.mesh <<'MESH'
mesh "demo" { trust_domain "demo.local" }
service payments { port 9000  protocol http2 }
route charge on payments {
  match { path prefix "/v1/charge" }
  to paymnets
  timeout 3
  retry { attempts 3  per_try_timeout 2s  on [5xx] }
}
route charge-too on payments { match { path prefix "/v1/charge" } }
MESH
"$meshc" check build/broken.mesh || echo "(exit status $?: the policy has errors)"

step "meshc compile examples/policies/shop.mesh -o build/shop.table"
"$meshc" compile --module-path build/modules examples/policies/shop.mesh -o build/shop.table

step "meshc inspect build/shop.table (first lines)"
"$meshc" inspect build/shop.table | head -n 30

step "meshc explain mesh::split-sum"
"$meshc" explain mesh::split-sum | head -n 25
