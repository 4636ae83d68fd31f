# The demo's control-plane mode (sourced by examples/demo.sh): mesh-control compiles the
# policy and streams each sidecar its slice of the table over mTLS; the sidecars join with
# tokens and register their addresses; the operator changes the policy with `meshc apply`
# (every sidecar ACKs) and looks with `meshc status`.

services=(frontend payments payments-canary inventory)
port_cursor=17000 # the first port tried; each listener takes the next free one

step "the policy: examples/demo/demo.mesh without its \`endpoints\` (commands run in ${run#"$PWD"/})"
echo "Under mesh-control a service without \`endpoints\` takes its addresses from the registry:"
echo "the inbound listeners of its sidecars that have joined. policy/ is the operator's copy"
echo "(with the filter module beside it, as meshc reads it); mesh-control serves policies/."
mkdir -p "$run/policy" "$run/policies" "$run/modules"
sed '/^ *endpoints \[/d' examples/demo/demo.mesh >"$run/policy/demo.mesh"
cp "$filters/header_adder.wasm" "$run/policy/"
cp "$filters/header_adder.wasm" "$run/modules/"
cp "$run/policy/demo.mesh" "$run/policies/"
must "$bin/meshc" check policy
ok "no errors, no warnings"
must "$bin/meshc" ca init ca --trust-domain demo.local

step "starting mesh-control"
pick_port cp_proxies
pick_port cp_api
url=http://127.0.0.1:$cp_api
MESH_CONTROL_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
export MESH_CONTROL_TOKEN # the operator's bearer token: meshc reads it from here
(umask 077 && printf '%s\n' "$MESH_CONTROL_TOKEN" >"$run/operator.token")
cat >"$run/control.toml" <<TOML
policies = "policies"        # watched; compiled as meshc does
module_paths = ["modules"]   # filter modules, served to the sidecars by SHA-256
ca = "ca"                    # signs the sidecars' certificates (join tokens)
state = "state"
registry_grace_ms = 2000
[proxies]
listen = "127.0.0.1:$cp_proxies"   # mTLS HTTP/2: bootstrap, table stream, modules
[api]
listen = "127.0.0.1:$cp_api"       # the operator API (meshc token, apply, status)
token_file = "operator.token"
TOML
cat "$run/control.toml"
start control.log "$bin/mesh-control" --config control.toml
cp_pid=$started
clog=$run/control.log
api_up() { curl -fs --max-time 2 -H "Authorization: Bearer $MESH_CONTROL_TOKEN" "$url/v1/policy"; }
wait_for 20 api_up || fail "mesh-control did not answer on $url within 20 s" "$clog"
kill -0 "$cp_pid" 2>/dev/null || fail "mesh-control exited" "$clog"
printf '\n$ curl -H "Authorization: Bearer $MESH_CONTROL_TOKEN" %s\n' "$url/v1/policy"
reply=$(api_up)
printf '%s\n' "$reply"
expect "$reply" '"version":1' "policy version 1" "$clog"
ok "mesh-control: proxies on 127.0.0.1:$cp_proxies, operator API on $url"

step "a join token per service (meshc token create), and a sidecar that bootstraps with it"
echo "A sidecar has no certificate of its own: it sends the control plane a CSR with its token,"
echo "gets spiffe://demo.local/SERVICE signed, then streams its table over mTLS."
for svc in "${services[@]}"; do
  must "$bin/meshc" token create "$svc" --control "$url"
  # The secret is stdout's one line (the token's id and limits go to stderr).
  printf '%s\n' "$(grep -Eo '^[0-9a-f]{64}$' <<<"$reply" | head -n 1)" >"$run/$svc.token"
done
for svc in "${services[@]}"; do
  pick_port app
  pick_port in
  pick_port outp
  pick_port adm
  start "$svc-app.log" "$bin/mesh-demo-app" "$svc" "127.0.0.1:$app"
  wait_port "$app" "the $svc application" "$started" "$run/$svc-app.log"
  cat >"$run/$svc.toml" <<TOML
service = "$svc"
control = "127.0.0.1:$cp_proxies"
workers = 1
[inbound]
listen = "127.0.0.1:$in"
app = "127.0.0.1:$app"
[outbound]
listen = "127.0.0.1:$outp"
[admin]
listen = "127.0.0.1:$adm"
[identity]
token_file = "$svc.token"
bundle = "ca/root.pem"
dir = "$svc.state"
TOML
  start "$svc.log" "$bin/mesh-proxy" --config "$svc.toml"
  wait_ready "$svc" "127.0.0.1:$adm" "$started" "$run/$svc.log"
  echo "$svc: application 127.0.0.1:$app; sidecar inbound :$in, outbound :$outp, admin :$adm (log: ${run#"$PWD"/}/$svc.log)"
  printf -v "admin_${svc//-/_}" '%s' "http://127.0.0.1:$adm"
  [ "$svc" = frontend ] && out=http://127.0.0.1:$outp
done
admin=$admin_frontend
flog=$run/frontend.log
call "$admin/tls"
expect "$reply" 'spiffe://demo.local/frontend' "the storefront's bootstrapped identity" "$flog"

step "the registry fills in the endpoints: the storefront reaches payments and its canary"
reachable() {
  curl -fs --max-time 2 -X POST -H 'Host: payments' -H 'x-canary: 1' "$out/v1/charge" | grep -q payments-canary &&
    curl -fs --max-time 2 -H 'Host: payments' "$out/v1/receipts/1" | grep -q '"service":"payments"'
}
wait_for 20 reachable || fail "the storefront could not reach payments and its canary within 20 s" "$flog" "$clog"
# Each join changes the registry, so every sidecar gets a new slice as the others join:
# their ACKs may still be on the way when the traffic already flows.
all_acked() {
  [ "$("$bin/meshc" status --control "$url" 2>/dev/null | grep -c ' ACK ')" -eq 4 ]
}
wait_for 20 all_acked || true
must "$bin/meshc" status --control "$url"
[ "$(grep -c ' ACK ' <<<"$reply")" -eq 4 ] || fail "meshc status does not show four proxies with ACK within 20 s" "$clog"
call -X POST -H 'Host: payments' "$out/v1/charge"
expect "$reply" '"service":"payments(-canary)?"' "a charge answered by payments or its canary" "$flog"
split 200
expect_canary 4 50

step "the WASM filter \`stamp\`: its module came from the control plane, by its SHA-256"
call -i -H 'Host: payments' "$out/v1/receipts/7"
expect "$reply" 'x-filter-chain: stamp-v1' "the filter's response header x-filter-chain: stamp-v1" "$flog"
expect "$reply" '"x-stamp":"v1"' "the application seeing the request header x-stamp: v1" "$flog"

step "meshc apply: the canary takes 50%, and the filter's new version, while requests flow"
echo "Version 2 of \`stamp\` is pw-header (examples/filters/proxy-wasm/pw-header, on the public"
echo "proxy-wasm crate). Its module goes to the control plane's module directory first; then"
echo "the policy that pins it. meshc apply waits for every sidecar's ACK."
cp -r "$run/policy" "$run/policy.v1"
cp "$filters/pw_header.wasm" "$run/policy/"
cp "$filters/pw_header.wasm" "$run/modules/"
sed -i 's/payments 90%/payments 50%/; s/payments-canary 10%/payments-canary 50%/' "$run/policy/demo.mesh"
sed -i 's/module "header_adder.wasm"/module "pw_header.wasm"/; s/config { name: "x-stamp", value: "v1", label: "stamp-v1" }/config { value: "v2" }/' "$run/policy/demo.mesh"
run diff -u policy.v1/demo.mesh policy/demo.mesh
[ "$status" -eq 1 ] || fail "the policy edit did not apply"
load_start
wait_for 10 grep -q '^RESULT 200 stamp-v1|$' "$run/load.log" || fail "the load got no answer from v1" "$run/load.log" "$flog"
must "$bin/meshc" apply policy --control "$url"
expect "$reply" '4 proxies applied the new tables \(ACK\)' "every proxy's ACK" "$clog"
load_until_v2 50
split 200
expect_canary 60 140

step "a broken policy is refused with its diagnostics; the sidecars keep their tables"
cp -r "$run/policy" "$run/policy.broken"
cat >>"$run/policy.broken/demo.mesh" <<'MESH'

route refunds on payments {
  match { path prefix "/v1/refunds" }
  to payment
}
MESH
run "$bin/meshc" apply policy.broken --control "$url"
[ "$status" -eq 1 ] || fail "meshc apply of a broken policy exited $status, not 1"
expect "$reply" 'error' "the diagnostics" "$clog"
call -X POST -H 'Host: payments' "$out/v1/charge"
expect "$reply" '"service":"payments(-canary)?"' "a charge still answered" "$flog"
ok "refused; the mesh keeps serving version 2"

step "meshc status: every proxy's applied table and ACK, and the traffic they reported"
traffic() { curl -fs --max-time 2 -H "Authorization: Bearer $MESH_CONTROL_TOKEN" "$url/v1/traffic" | grep -q '"route":"charge"'; }
wait_for 10 traffic || fail "no sidecar reported traffic within 10 s (they report every 5 s)" "$clog"
# Each join changes the registry, so every sidecar gets a new slice as the others join:
# their ACKs may still be on the way when the traffic already flows.
all_acked() {
  [ "$("$bin/meshc" status --control "$url" 2>/dev/null | grep -c ' ACK ')" -eq 4 ]
}
wait_for 20 all_acked || true
must "$bin/meshc" status --control "$url"
[ "$(grep -c ' ACK ' <<<"$reply")" -eq 4 ] || fail "meshc status does not show four proxies with ACK within 20 s" "$clog"

stay_help() {
  echo "The storefront's outbound listener (its application's calls go here): $out"
  echo "  curl -X POST -H 'Host: payments' $out/v1/charge"
  echo "The control plane's operator API: $url (bearer token in ${run#"$PWD"/}/operator.token)"
  echo "  export MESH_CONTROL_TOKEN=$MESH_CONTROL_TOKEN"
  echo "  $bin/meshc status --control $url"
  echo "  $bin/meshc apply ${run#"$PWD"/}/policy --control $url    # after editing policy/demo.mesh"
  echo "Admin listeners: frontend $admin_frontend, payments $admin_payments,"
  echo "payments-canary $admin_payments_canary, inventory $admin_inventory"
}
