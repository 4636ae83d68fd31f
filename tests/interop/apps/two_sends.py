#!/usr/bin/env python3
"""An application as many are: Python's http.server answering HTTP/1.1 with keep-alive, its
socket left with Nagle on (no TCP_NODELAY), each response written in two `send` calls (the
head at end_headers, then the body). Behind a proxy that delays its ACKs on a kept-alive
connection, the body waits for the ACK of the head: about 40 ms a request.

    python3 two_sends.py [PORT]      # PORT 0 (default): any; prints {"listening": "127.0.0.1:N"}

GET /any -> 200, body "hello from two sends\n" (Content-Length set).
"""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BODY = b"hello from two sends\n"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(BODY)))
        self.end_headers()  # first send: the head
        self.wfile.write(BODY)  # second send: the body

    def log_message(self, *args):
        pass


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    host, bound = server.server_address[:2]
    print(json.dumps({"listening": f"{host}:{bound}"}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
