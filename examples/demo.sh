#!/usr/bin/env bash
# The demo: a mesh of four services on loopback. It compiles examples/demo/demo.mesh,
# starts a sidecar (mesh-proxy) and a small application for each service, then sends
# requests through the storefront's sidecar: routing, a 90/10 canary split, a header pin,
# errors, mTLS and authorization between the sidecars, and a policy change hot-swapped
# while the mesh runs. `--stay` keeps it running.
set -euo pipefail
cd "$(dirname "$0")/.."
stay=false; [ "${1:-}" = "--stay" ] && stay=true

cargo build --quiet -p meshc -p mesh-proxy -p mesh-demo-app
bin=target/debug
run=build/demo; rm -rf "$run"; mkdir -p "$run"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "meshc check and compile examples/demo/demo.mesh"
cp examples/demo/demo.mesh "$run/demo.mesh"
"$bin/meshc" check "$run/demo.mesh" && echo "ok: no errors"
"$bin/meshc" compile "$run/demo.mesh" -o "$run/demo.table"

step "a mesh CA, and a certificate for each sidecar (spiffe://demo.local/SERVICE)"
"$bin/meshc" ca init "$run/ca" --trust-domain demo.local
for svc in frontend payments payments-canary inventory; do
  "$bin/meshc" ca issue "$svc" --ca "$run/ca" --out "$run/certs/$svc"
done

step "start the applications and their sidecars"
i=0
for svc in frontend payments payments-canary inventory; do
  app_port=$((19000 + i)); inbound=$((15100 + 100 * i)); outbound=$((inbound + 1)); admin=$((inbound + 2))
  "$bin/mesh-demo-app" "$svc" "127.0.0.1:$app_port" & pids+=($!)
  cat > "$run/$svc.toml" <<TOML
service = "$svc"
table = "demo.table"
table_poll_ms = 100
workers = 1
[inbound]
listen = "127.0.0.1:$inbound"
[outbound]
listen = "127.0.0.1:$outbound"
[admin]
listen = "127.0.0.1:$admin"
[identity]
cert = "certs/$svc/cert.pem"
key = "certs/$svc/key.pem"
bundle = "certs/$svc/bundle.pem"
TOML
  (cd "$run" && exec "../../$bin/mesh-proxy" --config "$svc.toml" 2>"$svc.log") & pids+=($!)
  echo "$svc: app 127.0.0.1:$app_port, sidecar inbound :$inbound outbound :$outbound admin :$admin"
  i=$((i + 1))
done
for admin in 15102 15202 15302 15402; do
  for _ in $(seq 100); do curl -fs "http://127.0.0.1:$admin/ready" >/dev/null && break; sleep 0.05; done
done

out=http://127.0.0.1:15101   # the storefront's outbound listener: its application calls go here
show() { printf '\n$ %s\n' "$*"; "$@"; echo; }

step "the storefront calls payments through its sidecar"
show curl -s -X POST -H 'Host: payments' "$out/v1/charge"
show curl -s -H 'Host: payments' "$out/v1/receipts/42"
show curl -s -X POST -H 'Host: payments' -H 'x-canary: 1' "$out/v1/charge"

step "a 90/10 canary split over 200 charges"
for _ in $(seq 200); do curl -s -X POST -H 'Host: payments' "$out/v1/charge"; done \
  | grep -o '"service":"[a-z-]*"' | sort | uniq -c

step "the proxy's own answers: x-mesh-error says why"
show curl -s -i -H 'Host: payments' "$out/v1/refunds"
show curl -s -i -H 'Host: nowhere' "$out/"
show curl -s -i -H 'Host: payments' "$out/v1/charge/%2f"

step "between sidecars it is mTLS only: a plaintext caller at payments' inbound listener is refused"
show curl -s -i http://127.0.0.1:15200/v1/receipts/42 || true
echo "(payments is \`mtls strict\`: the connection was closed; its sidecar counts why)"
curl -s http://127.0.0.1:15202/tls; echo
step "authorization on the identity mTLS proved: frontend may GET receipts, not HEAD them"
show curl -s -I -H 'Host: payments' "$out/v1/receipts/42"

step "change the policy while the mesh runs: the canary takes 50%"
sed -i 's/payments 90%/payments 50%/; s/payments-canary 10%/payments-canary 50%/' "$run/demo.mesh"
"$bin/meshc" compile "$run/demo.mesh" -o "$run/demo.table.new" && mv "$run/demo.table.new" "$run/demo.table"
sleep 0.5
curl -s http://127.0.0.1:15102/config; echo
for _ in $(seq 200); do curl -s -X POST -H 'Host: payments' "$out/v1/charge"; done \
  | grep -o '"service":"[a-z-]*"' | sort | uniq -c

step "a broken table is refused; the mesh keeps serving"
printf 'garbage' > "$run/demo.table.new" && mv "$run/demo.table.new" "$run/demo.table"
sleep 0.5
grep -h "refused" "$run/frontend.log" | tail -n 1 | sed 's/\x1b\[[0-9;]*m//g'
show curl -s -X POST -H 'Host: payments' "$out/v1/charge"

if $stay; then
  step "the mesh is running; the storefront's outbound listener is $out (Ctrl-C stops it)"
  wait
fi
step "done: stopping the mesh"
