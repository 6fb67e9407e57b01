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


class Server(ThreadingHTTPServer):
    # socketserver's listen backlog is 5: a burst of new connections from a freshly
    # (re)started nginx on a busy host overflows it, the dropped SYN is sent again a
    # second later, nginx's 1 s connect timeout counts a failure against a healthy
    # instance (three take it out for fail_timeout). swoole's default backlog is 512.
    request_queue_size = 512
    daemon_threads = True


if __name__ == "__main__":
    Server(("0.0.0.0", PORT), Handler).serve_forever()
