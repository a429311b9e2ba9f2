#!/usr/bin/env python3
"""A webhook receiver for the webhook tests (crates/backroom/tests/api/webhooks.rs).

It verifies every delivery with `standardwebhooks`, the reference Python implementation of the
Standard Webhooks specification (installed into the test virtualenv by scripts/localstripe.sh),
so Backroom's signatures are checked by code that is not Backroom's.

    python webhook_receiver.py        listens on a free loopback port and prints `PORT <n>`

Control (JSON):
    POST /_config      {"secret": "whsec_…", "fail_first": N}: verify with this secret (more than
                       one may be set, each verifies), and answer 500 to the first N deliveries
    GET  /_received    every request received: [{"path", "webhook_id", "verified", "error",
                       "answered", "type", "data_id", "body", "headers"}]

Any other POST is a delivery: verified, recorded, answered 204 (or 500 while failing). Paths:
    /redirect          answers 302 to /redirected (a sender must not follow it)
    /slow              answers after 30 seconds
Stops when its standard input closes (the test that started it ended).
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

LOCK = threading.Lock()
STATE = {"secrets": [], "fail_first": 0, "received": []}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        if self.path == "/_received":
            with LOCK:
                body = json.dumps(STATE["received"]).encode()
            self.answer(200, body, [("Content-Type", "application/json")])
        else:
            self.answer(404)

    def do_POST(self):
        body = self.read_body()
        if self.path == "/_config":
            cfg = json.loads(body or b"{}")
            with LOCK:
                if "secret" in cfg:
                    STATE["secrets"].append(cfg["secret"])
                if "fail_first" in cfg:
                    STATE["fail_first"] = int(cfg["fail_first"])
            self.answer(204)
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        with LOCK:
            secrets = list(STATE["secrets"])
        verified, error, payload = False, "no secret configured", None
        for secret in secrets:
            try:
                payload = Webhook(secret).verify(body, headers)
                verified, error = True, None
                break
            except WebhookVerificationError as e:
                error = str(e)
            except Exception as e:  # a malformed secret or body
                error = repr(e)
        if self.path == "/slow":
            time.sleep(30)
        with LOCK:
            failing = STATE["fail_first"] > 0 and self.path not in ("/redirect",)
            if failing:
                STATE["fail_first"] -= 1
            answered = 302 if self.path == "/redirect" else (500 if failing else 204)
            STATE["received"].append(
                {
                    "path": self.path,
                    "webhook_id": headers.get("webhook-id"),
                    "verified": verified,
                    "error": error,
                    "answered": answered,
                    "type": (payload or {}).get("type"),
                    "data_id": ((payload or {}).get("data") or {}).get("id"),
                    "body": body.decode("utf-8", "replace"),
                    "headers": {
                        k: headers.get(k) for k in ("webhook-id", "webhook-timestamp", "webhook-signature")
                    },
                }
            )
        if answered == 302:
            self.answer(302, headers=[("Location", "/redirected")])
        else:
            self.answer(answered)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # Ends with the test that started it: its end closes our standard input.
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
