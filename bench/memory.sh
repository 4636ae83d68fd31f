#!/usr/bin/env bash
# A sidecar's memory: RSS idle, with IDLE_CONNS kept-alive idle connections from the
# application (each made one request, then idles), and the peak under a LOAD_CONNS-connection
# load (a freshly started sidecar). Proxy A of a bench/load.sh run (client sidecar, outbound
# -mTLS h2-> proxy B -> nginx backend).
#
#   bash bench/memory.sh RUN_DIR        # a bench/load.sh run directory
#
# Environment: BIN_DIR (default target/release), IDLE_CONNS=1000, LOAD_CONNS=1000, D=5
# (seconds of load), SETTLE=2. Results: printed, and RUN_DIR/memory/summary.txt.
SCRIPT=memory.sh OUT_NAME=memory
# shellcheck source=bench/run_dir.sh
source "$(dirname "${BASH_SOURCE[0]}")/run_dir.sh"
IDLE_CONNS=${IDLE_CONNS:-1000}; LOAD_CONNS=${LOAD_CONNS:-1000}; D=${D:-5}; SETTLE=${SETTLE:-2}
declare -A PID
start() { # side
  "$BIN_DIR/mesh-proxy" --config "$RUN/proxy-$1.toml" >>"$OUT/proxy-$1.log" 2>&1 &
  PID[$1]=$!; PIDS+=("$!")
  wait_ready "$!" "$(toml_port "$RUN/proxy-$1.toml" admin)" "$OUT/proxy-$1.log" 100
}
start b
start a
OUTBOUND=$(toml_port "$RUN/proxy-a.toml" outbound)
rss() { awk '/^VmRSS:/ {print $2}' "/proc/${PID[a]}/status"; }

curl -fs -o /dev/null -H "Host: backend" "http://127.0.0.1:$OUTBOUND/" || die "no answer through proxy A"
sleep "$SETTLE"
idle=$(rss)
log "idle: $idle KiB; opening $IDLE_CONNS kept-alive connections"
# Each connection: one request, its answer read, then held open and idle until told to stop.
python3 - "$OUTBOUND" "$IDLE_CONNS" "$OUT/held" "$OUT/release" <<'EOF' &
import asyncio, os, sys
port, n, held, release = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
async def one():
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET / HTTP/1.1\r\nHost: backend\r\n\r\n")
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
    await r.readexactly(length)
    assert head.startswith(b"HTTP/1.1 200"), head
    return w
async def main():
    writers = []
    for i in range(0, n, 100):
        writers += await asyncio.gather(*(one() for _ in range(min(100, n - i))))
    open(held, "w").write(str(len(writers)))
    while not os.path.exists(release):
        await asyncio.sleep(0.1)
    for w in writers:
        w.close()
asyncio.run(main())
EOF
HOLDER=$!; PIDS+=("$HOLDER")
for _ in $(seq 600); do [ -s "$OUT/held" ] && break; kill -0 "$HOLDER" 2>/dev/null || die "the connection holder failed"; sleep 0.1; done
[ -s "$OUT/held" ] || die "the $IDLE_CONNS connections were not all answered"
sleep "$SETTLE"
with_idle=$(rss)
touch "$OUT/release"; wait "$HOLDER" || true
# The load on a fresh sidecar: the allocator keeps what the idle connections freed.
kill "${PID[a]}"; wait "${PID[a]}" 2>/dev/null || true
start a
curl -fs -o /dev/null -H "Host: backend" "http://127.0.0.1:$OUTBOUND/" || die "no answer through proxy A"
log "load: wrk -c$LOAD_CONNS for ${D}s, RSS sampled every 100 ms"
wrk -t1 -c"$LOAD_CONNS" -d"${D}s" -H "Host: backend" "http://127.0.0.1:$OUTBOUND/" >"$OUT/wrk.txt" 2>&1 &
WRK=$!
peak=0
while kill -0 "$WRK" 2>/dev/null; do r=$(rss); [ "$r" -gt "$peak" ] && peak=$r; sleep 0.1; done
wait "$WRK" || die "wrk failed: $(tail -3 "$OUT/wrk.txt")"
per_conn=$(awk -v a="$with_idle" -v b="$idle" -v n="$IDLE_CONNS" 'BEGIN {printf "%.1f", (a - b) / n}')
{
  echo "proxy A (client sidecar, one worker): RSS idle $idle KiB"
  echo "with $IDLE_CONNS kept-alive idle connections: $with_idle KiB (+$(( with_idle - idle )) KiB, $per_conn KiB each)"
  echo "peak under wrk -c$LOAD_CONNS for ${D}s (a fresh sidecar): $peak KiB ($(awk '/Requests\/sec/ {print $2}' "$OUT/wrk.txt") req/s)"
} | tee "$OUT/summary.txt"
