"""The seed's swoole "live-stream API", rewritten as a small Python HTTP service.

    GET /        <h1>直播服务API{n} #IP:{address}</h1>  (text/html; charset=utf-8)
    GET /health  200 "ok": the Consul HTTP check's target

Configured by the environment: DEMO_ID, DEMO_TITLE, DEMO_ADDRESS, DEMO_PORT. Every
response names the instance in an X-Instance header, for load-balancer statistics.
"""

import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

INSTANCE_ID = os.environ["DEMO_ID"]
TITLE = os.environ["DEMO_TITLE"]
ADDRESS = os.environ["DEMO_ADDRESS"]
PORT = int(os.environ.get("DEMO_PORT", "8080"))
PAGE = f"<h1>{TITLE} #IP:{ADDRESS}</h1>".encode()


class Handler(BaseHTTPRequestHandler):
    # Keep-alive, so an upstream pool (nginx) can reuse connections.
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/health":
            body, content_type = b"ok\n", "text/plain; charset=utf-8"
        else:
            body, content_type = PAGE, "text/html; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Instance", INSTANCE_ID)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # quieter than the default
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = True
    server.serve_forever()
