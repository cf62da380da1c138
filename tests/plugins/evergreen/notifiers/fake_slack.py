"""FakeSlackWebhook: an HTTP server on 127.0.0.1 that answers like a Slack Incoming Webhook and keeps every JSON
payload it receives (tests only). Alerts reach it through the Slack provider's real ``SlackWebhookHook``."""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.payloads.append(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:  # keep the test output quiet
        pass


class FakeSlackWebhook(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.payloads: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def connection_json(self) -> str:
        """A ``slackwebhook`` Connection whose webhook URL is this server."""
        url = f"http://127.0.0.1:{self.server_address[1]}/services/T000/B000/XXXX"
        return json.dumps({"conn_type": "slackwebhook", "password": url})

    def __enter__(self) -> FakeSlackWebhook:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
