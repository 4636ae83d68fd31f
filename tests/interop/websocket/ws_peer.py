#!/usr/bin/env python3
"""A WebSocket server and client written with the Python `websockets` library (17.4), for
tests/tests/interop_websocket.rs: the client talks to the server through the mesh.

    ws_peer.py server
        Listens on 127.0.0.1 (a port the system picks) and prints one JSON line per event on
        stdout, the first `{"listening": "127.0.0.1:PORT"}`. Every connection is an echo of
        text and binary messages, with these commands (text messages):
          "ping me"           the server pings (payload b"server-ping"), awaits the pong,
                              then sends "pong received"
          "close 4001 REASON" the server closes with that code and reason
          "send big"          the server sends "sha256 HEX" then a 16 MiB binary message
        Binary messages of 16 MiB are not echoed: the server answers "sha256 HEX" of them.
        When a connection ends it prints
        `{"event": "closed", "path", "code", "reason", "subprotocol"}` (what the client sent).

    ws_peer.py client --connect HOST:PORT --authority NAME
        Connects to HOST:PORT with `Host: NAME` and runs the cases in order, each on its own
        connection, then prints one JSON object reporting what it saw (the test compares it
        with what was sent); exit status 1 and `{"error": ...}` when a case could not run.

Every wait is bounded (STEP seconds), so a stuck proxy ends the script instead of hanging.
"""

import argparse
import asyncio
import hashlib
import json
import os
import sys
import traceback

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

BIG = 16 * 1024 * 1024
# Both ends accept a 16 MiB message (the library's default cap is 1 MiB).
MAX_SIZE = BIG + 1024 * 1024
STEP = 60.0
SUBPROTOCOL = "mesh.interop.v1"
TEXT = "héllo, mesh ✓ 𝄞"
BINARY = bytes(range(256)) * 4


def emit(record):
    print(json.dumps(record, ensure_ascii=False), flush=True)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


async def handle(ws):
    path = ws.request.path
    try:
        async for message in ws:
            if isinstance(message, bytes):
                if len(message) == BIG:
                    await ws.send(f"sha256 {sha256(message)}")
                else:
                    await ws.send(message)
            elif message == "ping me":
                pong = await ws.ping(b"server-ping")
                await asyncio.wait_for(pong, STEP)
                await ws.send("pong received")
            elif message.startswith("close "):
                _, code, reason = message.split(" ", 2)
                await ws.close(int(code), reason)
            elif message == "send big":
                data = os.urandom(BIG)
                await ws.send(f"sha256 {sha256(data)}")
                await ws.send(data)
            else:
                await ws.send(message)
    except ConnectionClosed:
        pass
    await ws.wait_closed()
    emit(
        {
            "event": "closed",
            "path": path,
            "code": ws.close_code,
            "reason": ws.close_reason,
            "subprotocol": ws.subprotocol,
        }
    )


async def run_server():
    async with serve(
        handle,
        "127.0.0.1",
        0,
        subprotocols=[SUBPROTOCOL],
        max_size=MAX_SIZE,
        ping_interval=None,
    ) as server:
        host, port = next(iter(server.sockets)).getsockname()[:2]
        emit({"listening": f"{host}:{port}"})
        await server.serve_forever()


def opener(address, authority):
    host, port = address.rsplit(":", 1)

    def open_path(path, **kwargs):
        # The URI names the service (Host header); host and port are where TCP goes: the
        # outbound listener of the caller's sidecar.
        return connect(
            f"ws://{authority}{path}",
            host=host,
            port=int(port),
            proxy=None,
            subprotocols=[SUBPROTOCOL],
            max_size=MAX_SIZE,
            ping_interval=None,
            open_timeout=STEP,
            close_timeout=STEP,
            **kwargs,
        )

    return open_path


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), STEP)


async def run_client(address, authority):
    open_path = opener(address, authority)
    report = {}

    # Text, binary, both kinds of ping; then the client closes with its code and reason.
    async with open_path("/echo") as ws:
        report["status"] = ws.response.status_code
        report["subprotocol"] = ws.subprotocol
        report["extensions"] = ws.response.headers.get("Sec-WebSocket-Extensions")
        await ws.send(TEXT)
        report["text"] = await recv(ws)
        await ws.send(BINARY)
        echoed = await recv(ws)
        report["binary_equal"] = echoed == BINARY
        report["binary_type"] = type(echoed).__name__
        pong = await ws.ping(b"client-ping")
        await asyncio.wait_for(pong, STEP)
        report["client_ping_answered"] = True
        await ws.send("ping me")
        report["server_ping"] = await recv(ws)
        await ws.close(4000, "client done ✓")
        report["client_close"] = {"code": ws.close_code, "reason": ws.close_reason}

    # The server closes: its code and reason arrive.
    async with open_path("/server-close") as ws:
        await ws.send("close 4001 server done ✓")
        try:
            extra = await recv(ws)
            report["server_close"] = {"unexpected_message": str(extra)[:100]}
        except ConnectionClosed as closed:
            rcvd = closed.rcvd
            report["server_close"] = {
                "code": rcvd.code if rcvd else None,
                "reason": rcvd.reason if rcvd else None,
            }

    # 16 MiB each way, compared by hash; uncompressed, so all of it crosses the mesh.
    async with open_path("/big", compression=None) as ws:
        report["big_extensions"] = ws.response.headers.get("Sec-WebSocket-Extensions")
        data = os.urandom(BIG)
        await ws.send(data)
        report["upload_sent"] = sha256(data)
        report["upload_seen"] = (await recv(ws)).removeprefix("sha256 ")
        await ws.send("send big")
        report["download_sent"] = (await recv(ws)).removeprefix("sha256 ")
        received = await recv(ws)
        report["download_bytes"] = len(received)
        report["download_seen"] = sha256(received)
        await ws.close()
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["server", "client"])
    parser.add_argument("--connect", help="client: HOST:PORT to connect to")
    parser.add_argument("--authority", help="client: the Host header (the service)")
    args = parser.parse_args()
    if args.role == "server":
        asyncio.run(run_server())
        return
    try:
        report = asyncio.run(run_client(args.connect, args.authority))
    except Exception as error:  # the report names what failed; the test shows it
        traceback.print_exc()
        emit({"error": f"{type(error).__name__}: {error}"})
        sys.exit(1)
    emit(report)


if __name__ == "__main__":
    main()
