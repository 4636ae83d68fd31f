#!/usr/bin/env python3
"""Side load for variants.sh's sandbox-loop case: GET URL every INTERVAL seconds for
SECONDS seconds over one keep-alive connection; prints one summary line (requests sent,
statuses, and the slowest answer).

    python3 bench/loop_client.py http://127.0.0.1:19471/loop 5 0.05
"""
import http.client
import sys
import time
from collections import Counter
from urllib.parse import urlsplit


def main() -> int:
    url, seconds, interval = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    statuses, slowest, sent = Counter(), 0.0, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.monotonic()
        try:
            conn.request("GET", parts.path or "/")
            reply = conn.getresponse()
            reply.read()
            statuses[reply.status] += 1
        except (OSError, http.client.HTTPException) as err:
            statuses[type(err).__name__] += 1
            conn.close()
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
        sent += 1
        took = time.monotonic() - start
        slowest = max(slowest, took)
        time.sleep(max(0.0, interval - took))
    print(f"{sent} requests, statuses {dict(statuses)}, slowest {slowest * 1000:.1f} ms")
    return 0 if sent and set(statuses) <= {200} else 1


if __name__ == "__main__":
    sys.exit(main())
