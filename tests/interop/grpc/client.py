"""The gRPC interop client, on grpcio (C-core): runs one named case against a
`grpc.testing.TestService` and says whether it passed.

The cases follow gRPC's interop test descriptions (doc/interop-test-descriptions.md in
grpc/grpc), plus a few for the mesh (`route_timeout`, `retry_unavailable`, `spread`). The
client speaks plaintext HTTP/2 to its sidecar's outbound listener with `:authority` set to
the target service (`--authority`), as an application in the mesh does.

Every call carries `x-interop-case: CASE` so the server's event file (`--events`, see
server.py) can be matched with it; cancel_after_begin reads that file to cancel only once
the call has reached the server, so that what is tested is the cancel travelling there.

Prints one JSON line {"case", "ok", "detail", ...} and exits 0 when the case passed, 1 when
it failed. Stubs are generated at test time into the directory $INTEROP_GRPC_STUBS.
"""

import argparse
import json
import queue
import sys
import time
import uuid

import os

import grpc

# The generated stubs (package `grpc.testing`, the protos' own) live in a scratch directory:
# make it part of the installed `grpc` package.
grpc.__path__.append(os.path.join(os.environ["INTEROP_GRPC_STUBS"], "grpc"))
from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc  # noqa: E402

SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"
LIMIT = 20.0  # seconds: the bound on any call that is not about deadlines


class Failed(Exception):
    pass


def check(condition, what):
    if not condition:
        raise Failed(what)


def payload(size):
    return messages_pb2.Payload(body=b"\0" * size)


class Requests:
    """A request stream the case feeds message by message and closes (half-close) at will."""

    END = object()

    def __init__(self, *initial):
        self.queue = queue.Queue()
        for request in initial:
            self.queue.put(request)

    def send(self, request):
        self.queue.put(request)

    def close(self):
        self.queue.put(self.END)

    def __iter__(self):
        return self

    def __next__(self):
        item = self.queue.get()
        if item is self.END:
            raise StopIteration
        return item


def expect_error(call, code, what):
    """Runs `call` (a thunk) and returns the RpcError it ends with, which must carry `code`."""
    try:
        call()
    except grpc.RpcError as error:
        check(error.code() == code, f"{what}: status {error.code()} ({error.details()!r}), want {code}")
        return error
    raise Failed(f"{what}: the call succeeded, want {code}")


class Cases:
    def __init__(self, channel, case, events):
        self.stub = test_pb2_grpc.TestServiceStub(channel)
        self.channel = channel
        self.case = case
        self.events = events
        self.report = {}

    def md(self, *extra):
        return (("x-interop-case", self.case),) + extra

    def lingering(self, case=None):
        """Metadata asking the server to observe how the request stream ends (server.py)."""
        return (("x-interop-case", case or self.case), ("x-interop-linger-ms", "5000"))

    def empty_unary(self):
        response = self.stub.EmptyCall(empty_pb2.Empty(), metadata=self.md(), timeout=LIMIT)
        check(isinstance(response, empty_pb2.Empty), "the response is not an Empty")

    def large_unary(self):
        request = messages_pb2.SimpleRequest(response_size=314159, payload=payload(271828))
        response = self.stub.UnaryCall(request, metadata=self.md(), timeout=LIMIT)
        check(len(response.payload.body) == 314159, f"payload {len(response.payload.body)} bytes")
        check(response.payload.body == b"\0" * 314159, "payload is not zeros")

    def client_streaming(self):
        requests = [messages_pb2.StreamingInputCallRequest(payload=payload(n)) for n in (27182, 8, 1828, 45904)]
        response = self.stub.StreamingInputCall(iter(requests), metadata=self.md(), timeout=LIMIT)
        check(response.aggregated_payload_size == 74922, f"aggregated {response.aggregated_payload_size}")

    def server_streaming(self):
        sizes = [31415, 9, 2653, 58979]
        request = messages_pb2.StreamingOutputCallRequest(
            response_parameters=[messages_pb2.ResponseParameters(size=n) for n in sizes]
        )
        got = [len(r.payload.body) for r in self.stub.StreamingOutputCall(request, metadata=self.md(), timeout=LIMIT)]
        check(got == sizes, f"response sizes {got}, want {sizes}")

    def ping_pong(self):
        pairs = [(31415, 27182), (9, 8), (2653, 1828), (58979, 45904)]
        requests = Requests()
        responses = self.stub.FullDuplexCall(requests, metadata=self.md(), timeout=LIMIT)
        try:
            for size, body in pairs:
                requests.send(
                    messages_pb2.StreamingOutputCallRequest(
                        response_parameters=[messages_pb2.ResponseParameters(size=size)], payload=payload(body)
                    )
                )
                response = next(responses)
                check(len(response.payload.body) == size, f"reply of {len(response.payload.body)} bytes, want {size}")
        finally:
            requests.close()
        rest = list(responses)
        check(rest == [], f"{len(rest)} responses after the fourth")
        check(responses.code() == grpc.StatusCode.OK, f"status {responses.code()}")

    def empty_stream(self):
        responses = list(self.stub.FullDuplexCall(iter([]), metadata=self.md(), timeout=LIMIT))
        check(responses == [], f"{len(responses)} responses, want none")

    def custom_metadata(self):
        initial = ("x-grpc-test-echo-initial", "test_initial_metadata_value")
        trailing = ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab")
        metadata = self.md(initial, trailing)

        def verify(call, what):
            got_initial = dict(call.initial_metadata() or ())
            got_trailing = dict(call.trailing_metadata() or ())
            check(got_initial.get(initial[0]) == initial[1], f"{what}: initial metadata {got_initial}")
            check(got_trailing.get(trailing[0]) == trailing[1], f"{what}: trailing metadata {got_trailing}")

        request = messages_pb2.SimpleRequest(response_size=314159, payload=payload(271828))
        response, call = self.stub.UnaryCall.with_call(request, metadata=metadata, timeout=LIMIT)
        check(len(response.payload.body) == 314159, "UnaryCall payload size")
        verify(call, "UnaryCall")
        request = messages_pb2.StreamingOutputCallRequest(
            response_parameters=[messages_pb2.ResponseParameters(size=314159)], payload=payload(271828)
        )
        responses = self.stub.FullDuplexCall(iter([request]), metadata=metadata, timeout=LIMIT)
        sizes = [len(r.payload.body) for r in responses]
        check(sizes == [314159], f"FullDuplexCall response sizes {sizes}")
        verify(responses, "FullDuplexCall")

    def _status(self, message):
        status = messages_pb2.EchoStatus(code=2, message=message)
        error = expect_error(
            lambda: self.stub.UnaryCall(
                messages_pb2.SimpleRequest(response_status=status), metadata=self.md(), timeout=LIMIT
            ),
            grpc.StatusCode.UNKNOWN,
            "UnaryCall",
        )
        check(error.details() == message, f"UnaryCall message {error.details()!r}, want {message!r}")
        request = messages_pb2.StreamingOutputCallRequest(response_status=status)
        error = expect_error(
            lambda: list(self.stub.FullDuplexCall(iter([request]), metadata=self.md(), timeout=LIMIT)),
            grpc.StatusCode.UNKNOWN,
            "FullDuplexCall",
        )
        check(error.details() == message, f"FullDuplexCall message {error.details()!r}, want {message!r}")

    def status_code_and_message(self):
        self._status("test status message")

    def special_status_message(self):
        self._status(SPECIAL_MESSAGE)

    def unimplemented_method(self):
        expect_error(
            lambda: self.stub.UnimplementedCall(empty_pb2.Empty(), metadata=self.md(), timeout=LIMIT),
            grpc.StatusCode.UNIMPLEMENTED,
            "TestService/UnimplementedCall",
        )

    def unimplemented_service(self):
        stub = test_pb2_grpc.UnimplementedServiceStub(self.channel)
        expect_error(
            lambda: stub.UnimplementedCall(empty_pb2.Empty(), metadata=self.md(), timeout=LIMIT),
            grpc.StatusCode.UNIMPLEMENTED,
            "UnimplementedService/UnimplementedCall",
        )

    def cancel_after_begin(self):
        requests = Requests()
        call = self.stub.StreamingInputCall.future(requests, metadata=self.lingering(), timeout=LIMIT)
        try:
            # The spec cancels at once; waiting until the server has the call makes the test
            # about the cancel reaching it through both sidecars.
            self.wait_for_event("start", "StreamingInputCall")
            check(call.cancel(), "the call could not be cancelled")
        finally:
            requests.close()
        check(call.code() == grpc.StatusCode.CANCELLED, f"status {call.code()}")

    def cancel_after_first_response(self):
        requests = Requests(
            messages_pb2.StreamingOutputCallRequest(
                response_parameters=[messages_pb2.ResponseParameters(size=31415)], payload=payload(27182)
            )
        )
        responses = self.stub.FullDuplexCall(requests, metadata=self.lingering(), timeout=LIMIT)
        try:
            first = next(responses)
            check(len(first.payload.body) == 31415, f"first reply of {len(first.payload.body)} bytes")
            check(responses.cancel(), "the call could not be cancelled")
        finally:
            requests.close()
        check(responses.code() == grpc.StatusCode.CANCELLED, f"status {responses.code()}")

    def _sleeping_call(self, method, deadline, case):
        """A streaming call on which the server has nothing to answer yet: it sleeps."""
        request = messages_pb2.StreamingOutputCallRequest(payload=payload(27182))
        requests = Requests(request)
        started = time.monotonic()
        try:
            error = expect_error(
                lambda: list(
                    getattr(self.stub, method)(
                        requests, metadata=self.lingering(case), timeout=deadline
                    )
                ),
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"{method} with a deadline of {deadline}s",
            )
        finally:
            requests.close()
        return error, time.monotonic() - started

    def timeout_on_sleeping_server(self):
        # The spec's procedure: a 1 ms deadline.
        self._sleeping_call("FullDuplexCall", 0.001, self.case)
        # The deadline travels (grpc-timeout) through both sidecars: the server gets it, and
        # the call ends when it passes, not when some proxy limit does.
        _, elapsed = self._sleeping_call("FullDuplexCall", 2.0, self.case + ".propagated")
        self.report["propagated_elapsed"] = elapsed
        check(elapsed < 2.0 + 5.0, f"the 2 s call ended after {elapsed:.1f} s")

    def route_timeout(self):
        # The route's `timeout` (shorter than the call's deadline) is the proxy's to enforce:
        # it must answer DEADLINE_EXCEEDED itself, in a form grpcio reads.
        error, elapsed = self._sleeping_call("HalfDuplexCall", LIMIT, self.case)
        self.report["elapsed"] = elapsed
        trailing = dict(error.trailing_metadata() or ())
        self.report["trailing_metadata"] = {k: v for k, v in trailing.items() if isinstance(v, str)}
        check(trailing.get("x-mesh-error") == "timeout", f"the proxy did not answer: trailing metadata {trailing}")
        check(elapsed < LIMIT / 2, f"answered after {elapsed:.1f} s")

    def retry_unavailable(self):
        key = uuid.uuid4().hex
        request = messages_pb2.SimpleRequest(response_size=10, payload=payload(10))
        response, call = self.stub.UnaryCall.with_call(
            request, metadata=self.md(("x-interop-fail-first", key)), timeout=LIMIT
        )
        check(len(response.payload.body) == 10, "payload size")
        initial = dict(call.initial_metadata() or ())
        self.report["key"] = key
        self.report["x-mesh-retries"] = initial.get("x-mesh-retries")
        check(initial.get("x-mesh-retries") == "1", f"initial metadata {initial}: want x-mesh-retries 1")

    def spread(self):
        for _ in range(self.repeat):
            self.stub.EmptyCall(empty_pb2.Empty(), metadata=self.md(), timeout=LIMIT)

    def wait_for_event(self, event, method):
        deadline = time.monotonic() + LIMIT
        while time.monotonic() < deadline:
            with open(self.events, encoding="utf-8") as file:
                for line in file:
                    record = json.loads(line)
                    if (record["event"], record["method"], record["case"]) == (event, method, self.case):
                        return
            time.sleep(0.01)
        raise Failed(f"the server never recorded `{event}` of {method} for {self.case}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of the outbound listener")
    parser.add_argument("--authority", required=True, help="the service called (:authority)")
    parser.add_argument("--case", required=True)
    parser.add_argument("--events", required=True, help="the server's event file")
    parser.add_argument("--repeat", type=int, default=20, help="calls of the `spread` case")
    args = parser.parse_args()
    options = [
        ("grpc.default_authority", args.authority),
        # Retries are the proxy's to make: the client's own (transparent ones too) stay off.
        ("grpc.enable_retries", 0),
    ]
    result = {"case": args.case}
    with grpc.insecure_channel(args.target, options=options) as channel:
        cases = Cases(channel, args.case, args.events)
        cases.repeat = args.repeat
        method = getattr(cases, args.case, None)
        if method is None or args.case.startswith("_"):
            result.update(ok=False, detail=f"no such case: {args.case}")
        else:
            try:
                method()
                result.update(ok=True, detail="passed")
            except Failed as failure:
                result.update(ok=False, detail=str(failure))
            except grpc.RpcError as error:
                result.update(ok=False, detail=f"unexpected status {error.code()}: {error.details()!r}")
        result.update(cases.report)
    print(json.dumps(result), flush=True)
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    main()
