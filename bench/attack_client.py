#!/usr/bin/env python3
"""The attacker of variants.sh's sandbox-attack case: GET URL at RATE requests a second for
SECONDS seconds, open loop (each request starts on schedule whatever the previous ones
take, each on a new connection, up to 64 in flight), and prints one summary line: requests
sent, late starts, statuses with their x-mesh-error reasons, and the slowest answer.

    python3 bench/attack_client.py http://127.0.0.1:19491/loop 5 50

Exit status 0 when every request was answered (any status): the attack's own requests are
expected to fail (503 filter-failed with `failure closed`).
"""
import http.client
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit


def main() -> int:
    url, seconds, rate = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    parts = urlsplit(url)
    statuses, lock = Counter(), threading.Lock()
    slowest = [0.0]

    def one() -> None:
        start = time.monotonic()
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            conn.request("GET", parts.path or "/", headers={"connection": "close"})
            reply = conn.getresponse()
            reply.read()
            key = f"{reply.status} {reply.getheader('x-mesh-error') or ''}".strip()
        except (OSError, http.client.HTTPException) as err:
            key = type(err).__name__
        finally:
            conn.close()
        with lock:
            statuses[key] += 1
            slowest[0] = max(slowest[0], time.monotonic() - start)

    sent, late = 0, 0
    begin = time.monotonic()
    with ThreadPoolExecutor(max_workers=64) as pool:
        while True:
            due = begin + sent / rate
            if due >= begin + seconds:
                break
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            elif now - due > 0.005:
                late += 1
            pool.submit(one)
            sent += 1
    answered = sum(n for k, n in statuses.items() if k[:1].isdigit())
    print(
        f"{sent} requests at {rate:g}/s ({late} started late), statuses {dict(statuses)}, "
        f"slowest {slowest[0] * 1000:.1f} ms"
    )
    return 0 if sent and answered == sent else 1


if __name__ == "__main__":
    sys.exit(main())
