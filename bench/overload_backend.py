#!/usr/bin/env python3
"""The backend of bench/overload.sh: an HTTP/1.1 keep-alive server with a fixed capacity.

At most CONCURRENCY requests are served at once, each taking SERVICE_MS; the rest wait in
its own queue (as an application's accept queue and thread pool would), so its capacity is
CONCURRENCY / SERVICE_MS requests per millisecond and beyond it latency grows with the
queue. Usage: overload_backend.py CONCURRENCY SERVICE_MS PORT_FILE (binds 127.0.0.1:0 and
writes the port to PORT_FILE). GET requests only (bodies are not read).
"""

import asyncio
import sys

CONCURRENCY = int(sys.argv[1])
SERVICE_S = int(sys.argv[2]) / 1000.0
PORT_FILE = sys.argv[3]
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 3\r\n\r\nok\n"


async def main():
    slots = asyncio.Semaphore(CONCURRENCY)

    async def serve(reader, writer):
        try:
            while True:
                try:
                    await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                async with slots:
                    await asyncio.sleep(SERVICE_S)
                writer.write(RESPONSE)
                await writer.drain()
        except ConnectionError:
            return
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    with open(PORT_FILE + ".tmp", "w") as f:
        f.write(f"{port}\n")
    import os

    os.rename(PORT_FILE + ".tmp", PORT_FILE)
    async with server:
        await server.serve_forever()


asyncio.run(main())
