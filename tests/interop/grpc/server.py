"""The gRPC interop `grpc.testing.TestService` server, on grpcio (C-core, asyncio API).

Implements the server features of gRPC's interop test descriptions
(doc/interop-test-descriptions.md in grpc/grpc): EmptyCall, UnaryCall, StreamingInputCall,
StreamingOutputCall, FullDuplexCall, HalfDuplexCall, Echo Status, Echo Metadata and
ResponseParameters.interval_us; UnimplementedCall is left to grpcio (UNIMPLEMENTED). Beside
it runs `grpc.health.v1.Health/Check`, answering the status given on the command line.

What the end-to-end tests cannot see from the client side is written to an event file, one
JSON object a line: every call's start (with the deadline the server was given), and how
calls ended when the client cancelled them or their deadline passed. Calls are tagged by the
client's `x-interop-case` metadata.

A cancel (an HTTP/2 RST_STREAM) and a half-close both end the request stream a handler
reads; C-core tells them apart only by cancelling the handler's task a moment later. A call
carrying `x-interop-linger-ms: N` therefore waits up to N ms after its request stream ends
before it answers, so that a cancel (or a deadline) arriving with that end is observed and
recorded as such instead of being answered as a half-close.

A call carrying `x-interop-fail-first: KEY` is refused with UNAVAILABLE (before any message
or header, so in trailers-only form) the first time KEY is seen, and served after that: a
retry of the same request succeeds.

Stubs are generated at test time (`python3 -m grpc_tools.protoc`) into the directory
$INTEROP_GRPC_STUBS. Usage: server.py --name NAME --events FILE [--health SERVING|NOT_SERVING]; the
server listens on 127.0.0.1, a port of its own choosing, and prints `listening PORT`.
"""

import argparse
import asyncio
import json
import sys
import threading
import time

import os

import grpc

# The generated stubs live in packages `grpc.testing` and `grpc.health.v1` (the protos'
# own), in a scratch directory: make it part of the installed `grpc` package.
grpc.__path__.append(os.path.join(os.environ["INTEROP_GRPC_STUBS"], "grpc"))
from grpc.health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc  # noqa: E402

CODES = {code.value[0]: code for code in grpc.StatusCode}


class Events:
    """The event file: one JSON object a line, flushed at once (the tests poll it)."""

    def __init__(self, path, name):
        self.file = open(path, "a", encoding="utf-8")
        self.name = name
        self.lock = threading.Lock()

    def record(self, event, context, method, **fields):
        metadata = dict(context.invocation_metadata() or ())
        line = {
            "server": self.name,
            "event": event,
            "method": method,
            "case": metadata.get("x-interop-case", ""),
            "time": time.time(),
            **fields,
        }
        with self.lock:
            self.file.write(json.dumps(line) + "\n")
            self.file.flush()


def payload(size):
    return messages_pb2.Payload(body=b"\0" * size)


async def echo_metadata(context):
    """Echo Metadata: the initial value back as initial metadata, the `-bin` one as trailing."""
    metadata = context.invocation_metadata() or ()
    initial = [(k, v) for k, v in metadata if k == "x-grpc-test-echo-initial"]
    trailing = [(k, v) for k, v in metadata if k == "x-grpc-test-echo-trailing-bin"]
    if initial:
        await context.send_initial_metadata(initial)
    if trailing:
        context.set_trailing_metadata(trailing)


async def echo_status(request, context):
    """Echo Status: close the call with the status the request asks for."""
    if request.HasField("response_status") and request.response_status.code != 0:
        status = request.response_status
        await context.abort(CODES.get(status.code, grpc.StatusCode.UNKNOWN), status.message)


class TestService(test_pb2_grpc.TestServiceServicer):
    def __init__(self, events):
        self.events = events
        self.tries = {}

    async def begin(self, context, method):
        remaining = context.time_remaining()
        self.events.record("start", context, method, time_remaining=remaining)
        key = dict(context.invocation_metadata() or ()).get("x-interop-fail-first")
        if key is not None:
            self.tries[key] = self.tries.get(key, 0) + 1
            self.events.record("try", context, method, key=key, try_number=self.tries[key])
            if self.tries[key] == 1:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "first try refused")
        await echo_metadata(context)

    async def linger(self, context):
        """After the request stream ended: give a cancel time to be reported (see above)."""
        ms = dict(context.invocation_metadata() or ()).get("x-interop-linger-ms")
        if ms:
            await asyncio.sleep(int(ms) / 1000)

    def ended(self, context, method):
        """Records why a call was cut short: its deadline passed, or the client cancelled."""
        remaining = context.time_remaining()
        event = "deadline" if remaining is not None and remaining <= 0 else "cancelled"
        self.events.record(event, context, method, time_remaining=remaining)

    async def EmptyCall(self, request, context):
        await self.begin(context, "EmptyCall")
        return empty_pb2.Empty()

    async def UnaryCall(self, request, context):
        await self.begin(context, "UnaryCall")
        await echo_status(request, context)
        return messages_pb2.SimpleResponse(payload=payload(request.response_size))

    async def StreamingInputCall(self, request_iterator, context):
        await self.begin(context, "StreamingInputCall")
        try:
            total = 0
            async for request in request_iterator:
                total += len(request.payload.body)
            await self.linger(context)
            return messages_pb2.StreamingInputCallResponse(aggregated_payload_size=total)
        except asyncio.CancelledError:
            self.ended(context, "StreamingInputCall")
            raise

    async def StreamingOutputCall(self, request, context):
        await self.begin(context, "StreamingOutputCall")
        await echo_status(request, context)
        try:
            for parameters in request.response_parameters:
                if parameters.interval_us:
                    await asyncio.sleep(parameters.interval_us / 1e6)
                yield messages_pb2.StreamingOutputCallResponse(payload=payload(parameters.size))
        except (asyncio.CancelledError, GeneratorExit):
            self.ended(context, "StreamingOutputCall")
            raise

    async def FullDuplexCall(self, request_iterator, context):
        await self.begin(context, "FullDuplexCall")
        try:
            async for request in request_iterator:
                await echo_status(request, context)
                for parameters in request.response_parameters:
                    if parameters.interval_us:
                        await asyncio.sleep(parameters.interval_us / 1e6)
                    yield messages_pb2.StreamingOutputCallResponse(
                        payload=payload(parameters.size)
                    )
            await self.linger(context)
        except (asyncio.CancelledError, GeneratorExit):
            # A task cancelled while the generator waits at a `yield` is closed there.
            self.ended(context, "FullDuplexCall")
            raise

    async def HalfDuplexCall(self, request_iterator, context):
        await self.begin(context, "HalfDuplexCall")
        try:
            requests = [request async for request in request_iterator]
            await self.linger(context)
            for request in requests:
                await echo_status(request, context)
                for parameters in request.response_parameters:
                    yield messages_pb2.StreamingOutputCallResponse(
                        payload=payload(parameters.size)
                    )
        except (asyncio.CancelledError, GeneratorExit):
            self.ended(context, "HalfDuplexCall")
            raise


class Health(health_pb2_grpc.HealthServicer):
    def __init__(self, events, status):
        self.events = events
        self.status = status

    async def Check(self, request, context):
        self.events.record("health", context, "Check", service=request.service)
        return health_pb2.HealthCheckResponse(status=self.status)


async def serve(args):
    events = Events(args.events, args.name)
    server = grpc.aio.server()
    test_pb2_grpc.add_TestServiceServicer_to_server(TestService(events), server)
    status = health_pb2.HealthCheckResponse.ServingStatus.Value(args.health)
    health_pb2_grpc.add_HealthServicer_to_server(Health(events, status), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"listening {port}", flush=True)
    await server.wait_for_termination()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="server")
    parser.add_argument("--events", required=True)
    parser.add_argument("--health", default="SERVING", choices=["SERVING", "NOT_SERVING"])
    args = parser.parse_args()
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
