# The demo's file mode (sourced by examples/demo.sh): meshc compiles the policy to a table
# file that every sidecar watches; a new table, or a new filter module it pins, is swapped in
# while the mesh runs.

services=(frontend payments payments-canary inventory)
# The policy names the sidecars' addresses: service i's inbound listener is 15100 + 100 i
# (outbound + 1, admin + 2) and its application listens on 19000 + i.
inbound_of() { echo $((15100 + 100 * $1)); }

step "the policy names fixed ports; checking that they are free"
for i in "${!services[@]}"; do
  svc=${services[i]} in=$(inbound_of "$i")
  need_port $((19000 + i)) "the $svc application"
  need_port "$in" "the $svc sidecar's inbound listener"
  need_port $((in + 1)) "the $svc sidecar's outbound listener"
  need_port $((in + 2)) "the $svc sidecar's admin listener"
done
ok "ports 19000-19003 and 15100-15402 are free"

step "meshc check and compile examples/demo/demo.mesh (commands run in ${run#"$PWD"/})"
echo "The policy attaches the WASM filter \`stamp\` (examples/filters/header-adder) to the receipts"
echo "route; the compiled table pins its module's SHA-256, so the module goes beside the table first."
mkdir -p "$run/modules"
cp "$filters/header_adder.wasm" "$run/modules/"
cp examples/demo/demo.mesh "$run/demo.mesh"
must "$bin/meshc" check demo.mesh --module-path modules
ok "no errors, no warnings"
must "$bin/meshc" compile demo.mesh --module-path modules -o demo.table
ok "demo.table: $(wc -c <"$run/demo.table") bytes"

step "a mesh CA, and a certificate for each sidecar (spiffe://demo.local/SERVICE)"
must "$bin/meshc" ca init ca --trust-domain demo.local
for svc in "${services[@]}"; do
  must "$bin/meshc" ca issue "$svc" --ca ca --out "certs/$svc"
done

step "starting the applications and their sidecars"
for i in "${!services[@]}"; do
  svc=${services[i]} in=$(inbound_of "$i") app=$((19000 + i))
  start "$svc-app.log" "$bin/mesh-demo-app" "$svc" "127.0.0.1:$app"
  wait_port "$app" "the $svc application" "$started" "$run/$svc-app.log"
  cat >"$run/$svc.toml" <<TOML
service = "$svc"
table = "demo.table"
table_poll_ms = 100
workers = 1
[inbound]
listen = "127.0.0.1:$in"
[outbound]
listen = "127.0.0.1:$((in + 1))"
[admin]
listen = "127.0.0.1:$((in + 2))"
[filters]
modules = ["modules"]
[identity]
cert = "certs/$svc/cert.pem"
key = "certs/$svc/key.pem"
bundle = "certs/$svc/bundle.pem"
TOML
  start "$svc.log" "$bin/mesh-proxy" --config "$svc.toml"
  wait_ready "$svc" "127.0.0.1:$((in + 2))" "$started" "$run/$svc.log"
  echo "$svc: application 127.0.0.1:$app; sidecar inbound :$in, outbound :$((in + 1)), admin :$((in + 2)) (log: ${run#"$PWD"/}/$svc.log)"
done
ok "four sidecars ready"

out=http://127.0.0.1:15101 # the storefront's outbound listener: its application's calls go here
admin=http://127.0.0.1:15102
flog=$run/frontend.log

step "the storefront calls payments through its sidecar: routes, header edits"
call -X POST -H 'Host: payments' "$out/v1/charge"
expect "$reply" '"service":"payments(-canary)?"' "a charge answered by payments or its canary" "$flog"
expect "$reply" '"x-mesh-route":"charge"' "the header the route \`charge\` sets" "$flog"
call -H 'Host: payments' "$out/v1/receipts/42"
expect "$reply" '"service":"payments"' "the receipt from payments" "$flog"
call -X POST -H 'Host: payments' -H 'x-canary: 1' "$out/v1/charge"
expect "$reply" '"service":"payments-canary"' "the canary, pinned by the header" "$flog"
expect "$reply" '"x-mesh-route":"canary-pin"' "the header the route \`canary-pin\` sets" "$flog"

step "a 90/10 canary split over 200 charges"
split 200
expect_canary 4 50

step "the proxy's own answers: x-mesh-error says why"
call -i -H 'Host: payments' "$out/v1/refunds"
expect "$reply" 'x-mesh-error: no-route' "404 no-route" "$flog"
call -i -H 'Host: nowhere' "$out/"
expect "$reply" 'x-mesh-error: unknown-service' "404 unknown-service" "$flog"
call -i -H 'Host: payments' "$out/v1/charge/%2f"
expect "$reply" '^HTTP/1.1 400' "400 for an encoded slash" "$flog"

step "between sidecars it is mTLS only: a plaintext caller at payments' inbound listener is refused"
call -i http://127.0.0.1:15200/v1/receipts/42
if grep -q '^HTTP/' <<<"$reply"; then fail "payments' inbound listener answered a plaintext caller"; fi
echo "(payments is \`mtls strict\`: the connection was closed; its sidecar counts why:)"
call http://127.0.0.1:15202/tls
expect "$reply" 'plaintext' "payments' /tls page counting the plaintext caller" "$run/payments.log"

step "authorization on the identity mTLS proved: frontend may GET receipts, not HEAD them"
call -I -H 'Host: payments' "$out/v1/receipts/42"
expect "$reply" '^HTTP/1.1 403' "403" "$flog"
expect "$reply" 'x-mesh-error: unauthorized' "x-mesh-error: unauthorized" "$flog"

step "a WASM filter: the storefront's sidecar runs \`stamp\` (the header adder) on the receipts route"
call -i -H 'Host: payments' "$out/v1/receipts/7"
expect "$reply" 'x-filter-chain: stamp-v1' "the filter's response header x-filter-chain: stamp-v1" "$flog"
expect "$reply" '"x-stamp":"v1"' "the application seeing the request header x-stamp: v1" "$flog"
call "$admin/filters"
v1_sha=$(sha256sum "$run/modules/header_adder.wasm" | cut -d' ' -f1)
expect "$reply" "\"loaded_sha256\":\"$v1_sha\"" "the module loaded with the pinned SHA-256 $v1_sha" "$flog"

step "a new version of the filter, hot-loaded while requests flow"
echo "Version 2 of \`stamp\` is pw-header (examples/filters/proxy-wasm/pw-header, written on the"
echo "public proxy-wasm crate): it sets x-pw-header: v2 instead. As an operator ships it: the"
echo "module goes beside the table, then a table that pins it. Meanwhile GET /v1/receipts runs"
echo "through the storefront's sidecar without pause."
cp "$filters/pw_header.wasm" "$run/modules/"
cp "$run/demo.mesh" "$run/demo.mesh.v1"
sed -i 's/module "header_adder.wasm"/module "pw_header.wasm"/; s/config { name: "x-stamp", value: "v1", label: "stamp-v1" }/config { value: "v2" }/' "$run/demo.mesh"
run diff -u demo.mesh.v1 demo.mesh
[ "$status" -eq 1 ] || fail "the policy edit for the filter's new version did not apply"
load_start
wait_for 10 grep -q '^RESULT 200 stamp-v1|$' "$run/load.log" || fail "the load got no answer from v1" "$run/load.log" "$flog"
must "$bin/meshc" compile demo.mesh --module-path modules -o demo.table.new
must mv demo.table.new demo.table # a rename: the sidecars never read half a table
v2_sha=$(sha256sum "$run/modules/pw_header.wasm" | cut -d' ' -f1)
wait_for 20 eval 'curl -s "$admin/filters" | grep -q "\"loaded_sha256\":\"$v2_sha\""' ||
  fail "the storefront's sidecar did not load v2 ($v2_sha) within 20 s" "$flog"
ok "the storefront's sidecar loaded v2 (SHA-256 $v2_sha)"
load_until_v2 50
call -i -H 'Host: payments' "$out/v1/receipts/8"
expect "$reply" 'x-pw-header: v2' "the response header of v2, x-pw-header: v2" "$flog"

step "change the policy while the mesh runs: the canary takes 50%"
checksum=$(curl -s "$admin/config" | grep -o '"checksum":"[0-9a-f]*"')
cp "$run/demo.mesh" "$run/demo.mesh.90"
sed -i 's/payments 90%/payments 50%/; s/payments-canary 10%/payments-canary 50%/' "$run/demo.mesh"
run diff -u demo.mesh.90 demo.mesh
must "$bin/meshc" compile demo.mesh --module-path modules -o demo.table.new
must mv demo.table.new demo.table
wait_for 10 eval '! curl -s "$admin/config" | grep -q "$checksum"' ||
  fail "the storefront's sidecar did not take the new table within 10 s" "$flog"
call "$admin/config"
split 200
expect_canary 60 140

step "a broken table is refused; the mesh keeps serving"
printf 'garbage' >"$run/demo.table.new" && mv "$run/demo.table.new" "$run/demo.table"
echo "(demo.table now holds the bytes 'garbage')"
wait_for 10 grep -q refused "$flog" || fail "the storefront's sidecar did not refuse the broken table" "$flog"
grep -h refused "$flog" | tail -n 1 | sed 's/\x1b\[[0-9;]*m//g'
call -X POST -H 'Host: payments' "$out/v1/charge"
expect "$reply" '"service":"payments(-canary)?"' "a charge still answered" "$flog"
ok "the previous table keeps serving"
"$bin/meshc" compile "$run/demo.mesh" --module-path "$run/modules" -o "$run/demo.table.new" >/dev/null 2>&1 &&
  mv "$run/demo.table.new" "$run/demo.table" # the good table again, for --stay

stay_help() {
  echo "The storefront's outbound listener (its application's calls go here): $out"
  echo "  curl -X POST -H 'Host: payments' $out/v1/charge"
  echo "  curl -i -H 'Host: payments' $out/v1/receipts/1"
  echo "Admin listeners (/config /filters /metrics /tls /explain): frontend $admin, payments"
  echo "http://127.0.0.1:15202, payments-canary http://127.0.0.1:15302, inventory http://127.0.0.1:15402"
  echo "The policy, table, configs and logs: ${run#"$PWD"/}/ (edit demo.mesh, then"
  echo "  $bin/meshc compile ${run#"$PWD"/}/demo.mesh --module-path ${run#"$PWD"/}/modules -o ${run#"$PWD"/}/demo.table)"
}
