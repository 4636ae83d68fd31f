# What both modes of the demo share: output, checks, processes, ports and the load that
# runs while a filter is swapped. Sourced by examples/demo.sh (it sets `run`, the scratch
# directory).

if [ -t 1 ]; then B=$'\033[1m' G=$'\033[32m' R=$'\033[31m' N=$'\033[0m'; else B='' G='' R='' N=''; fi

step() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
ok() { printf '%sok:%s %s\n' "$G" "$N" "$*"; }

# fail MESSAGE [LOG...]: says what went wrong and shows the last lines of each log; exit 1.
fail() {
  printf '\n%sdemo failed:%s %s\n' "$R" "$N" "$1" >&2
  shift
  local log
  for log in "$@"; do
    [ -f "$log" ] || continue
    printf -- '--- the last lines of %s ---\n' "$log" >&2
    tail -n 25 "$log" | sed 's/\x1b\[[0-9;]*m//g' >&2
  done
  exit 1
}

# expect TEXT PATTERN WHAT [LOG...]: fails unless TEXT matches the extended regex PATTERN.
expect() {
  grep -Eq -- "$2" <<<"$1" || fail "expected $3; got:
$1" "${@:4}"
}

# The command as one would type it (arguments with spaces in single quotes).
quoted() {
  local arg out=''
  for arg; do
    case $arg in *[\ \'\"\&\;\|\<\>\(\)\$\*\?\[\]]*) out+=" '${arg//\'/\'\\\'\'}'" ;; *) out+=" $arg" ;; esac
  done
  printf '%s' "${out# }"
}

# call CURL_ARGS...: shows the curl command and its answer, kept in $reply.
call() {
  printf '\n$ %s\n' "$(quoted curl "$@")"
  reply=$(curl -sS --max-time 10 "$@" 2>&1) || true
  printf '%s\n' "$reply"
}

# run CMD...: shows the command (as typed in $run) and runs it there; its output is kept in
# $reply, its exit status in $status.
run() {
  printf '\n$ %s\n' "$(quoted "$(basename "$1")" "${@:2}")"
  set +e
  reply=$(cd "$run" && "$@" 2>&1)
  status=$?
  set -e
  [ -z "$reply" ] || printf '%s\n' "$reply"
}

# must CMD...: run, and fail unless CMD succeeded.
must() {
  run "$@"
  [ "$status" -eq 0 ] || fail "\`$(quoted "$(basename "$1")" "${@:2}")\` failed (exit status $status)"
}

# Processes: every background process started is stopped when the demo ends, however it ends.
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start LOG CMD...: runs CMD in the background in $run, stdout and stderr in LOG; its pid
# in $started.
start() {
  local log=$1
  shift
  (cd "$run" && exec "$@" >"$log" 2>&1) &
  started=$!
  pids+=("$started")
}

# Ports: a port is in use when something accepts connections on it.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# need_port PORT WHAT: fails, naming the port and its use, when something listens on it.
need_port() {
  if port_in_use "$1"; then
    fail "port $1 (for $2) is in use by another program. \`ss -ltnp 'sport = :$1'\` shows which; stop it (or an earlier demo still running) and run the demo again."
  fi
}

# pick_port VAR: sets VAR to the next port, from $port_cursor up, that nothing listens on.
# (Below the kernel's ephemeral range, 32768 and up, so no outgoing connection takes it.)
pick_port() {
  while port_in_use "$port_cursor"; do port_cursor=$((port_cursor + 1)); done
  printf -v "$1" '%s' "$port_cursor"
  port_cursor=$((port_cursor + 1))
}

# wait_port PORT WHAT PID LOG: waits until something listens on PORT (at most 10 s).
wait_port() {
  local _
  for _ in $(seq 100); do
    port_in_use "$1" && return 0
    kill -0 "$3" 2>/dev/null || fail "$2 exited as it started" "$4"
    sleep 0.1
  done
  fail "$2 did not listen on port $1 within 10 s" "$4"
}

# wait_ready NAME ADMIN PID LOG: waits until a sidecar's /ready answers 200 (at most 30 s).
wait_ready() {
  local _
  for _ in $(seq 300); do
    curl -fs --max-time 2 "http://$2/ready" >/dev/null && return 0
    kill -0 "$3" 2>/dev/null || fail "the sidecar of $1 exited as it started" "$4"
    sleep 0.1
  done
  fail "the sidecar of $1 was not ready within 30 s (http://$2/ready)" "$4"
}

# wait_for SECONDS CMD...: waits until CMD succeeds; fails (status 1) when it never does.
wait_for() {
  local tenths=$(($1 * 10)) _
  shift
  for _ in $(seq "$tenths"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# split N: sends N charges through the storefront's sidecar (one curl, one connection) and
# prints how many each service answered; the canary's count in $canary.
split() {
  local answers
  answers=$(curl -s --max-time 60 -X POST -H 'Host: payments' "$out/v1/charge?n=[1-$1]" |
    grep -o '"service":"[a-z-]*"' | sort | uniq -c)
  printf '%s\n' "$answers"
  canary=$(awk '/"payments-canary"/ { print $1 }' <<<"$answers")
  canary=${canary:-0}
  local total
  total=$(awk '{ n += $1 } END { print n + 0 }' <<<"$answers")
  [ "$total" = "$1" ] || fail "$1 charges were sent, $total answered by payments or its canary"
}

# expect_canary LOW HIGH: the canary's share of the last split is within [LOW, HIGH].
expect_canary() {
  [ "$canary" -ge "$1" ] && [ "$canary" -le "$2" ] ||
    fail "the canary answered $canary charges, expected $1 to $2"
  ok "the canary answered $canary"
}

# The load that runs while a filter's new version is swapped in: GET /v1/receipts through
# the storefront's sidecar, one request after another on kept-alive connections, each
# answer written as `RESULT <status> <x-filter-chain>|<x-pw-header>` to $run/load.log.
load_start() {
  rm -f "$run/load.stop"
  : >"$run/load.log"
  (
    while [ ! -e "$run/load.stop" ]; do
      curl -s --max-time 5 -o /dev/null -H 'Host: payments' \
        -w 'RESULT %{http_code} %header{x-filter-chain}|%header{x-pw-header}\n' \
        "$out/v1/receipts/[1-20]" || true
    done >>"$run/load.log"
  ) &
  load_pid=$!
  pids+=("$load_pid")
}

# load_until_v2 N: waits until N answers came from v2 (at most 30 s), then stops the load
# and reports: every answer was 200 from v1 or v2, and none from v1 after the first from v2.
load_until_v2() {
  local _ v2=0
  for _ in $(seq 300); do
    v2=$(grep -c '^RESULT 200 |v2$' "$run/load.log" || true)
    [ "$v2" -ge "$1" ] && break
    sleep 0.1
  done
  touch "$run/load.stop"
  wait "$load_pid" 2>/dev/null || true
  local total v1 failed after
  total=$(grep -c '^RESULT' "$run/load.log" || true)
  v1=$(grep -c '^RESULT 200 stamp-v1|$' "$run/load.log" || true)
  v2=$(grep -c '^RESULT 200 |v2$' "$run/load.log" || true)
  failed=$((total - v1 - v2))
  # Answers from v1 that came after the first answer from v2.
  after=$(awk '/^RESULT 200 \|v2$/ { seen = 1 } seen && /^RESULT 200 stamp-v1\|$/ { n++ } END { print n + 0 }' "$run/load.log")
  echo "requests while the new version went in: $total; answered by v1: $v1, by v2: $v2; failed: $failed"
  [ "$failed" -eq 0 ] || fail "$failed requests failed during the swap (see $run/load.log):
$(grep -v -e '^RESULT 200 stamp-v1|$' -e '^RESULT 200 |v2$' "$run/load.log" | sort | uniq -c)"
  [ "$v1" -gt 0 ] || fail "no answer came from v1: the load started after the swap"
  [ "$v2" -ge "$1" ] || fail "only $v2 answers came from v2 within 30 s of the swap"
  [ "$after" -eq 0 ] || fail "$after answers came from v1 after the first from v2"
  ok "no request failed during the swap; once v2 answered, v1 never did again"
}
