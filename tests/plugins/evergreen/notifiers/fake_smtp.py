"""FakeSmtpServer: a minimal SMTP server on 127.0.0.1 that keeps every message it receives (tests only).

It speaks just enough of RFC 5321 for smtplib (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT), advertises neither
STARTTLS nor AUTH, and stops with the test. Alerts reach it through the SMTP provider's real SmtpHook.
"""

from __future__ import annotations

import email
import socketserver
import threading
from email.message import Message


class _Handler(socketserver.StreamRequestHandler):
    def _reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self._reply("220 fake-smtp ready")
        sender, rcpts, data, in_data = None, [], [], False
        while True:
            line = self.rfile.readline(65536)
            if not line:
                return
            if in_data:
                if line in (b".\r\n", b".\n"):
                    self.server.messages.append((sender, rcpts, email.message_from_bytes(b"".join(data))))
                    sender, rcpts, data, in_data = None, [], [], False
                    self._reply("250 OK queued")
                else:
                    data.append(line[1:] if line.startswith(b"..") else line)
                continue
            verb = line.strip().split(b" ")[0].upper()
            if verb == b"EHLO":
                self.wfile.write(b"250-fake-smtp\r\n250 8BITMIME\r\n")
            elif verb == b"MAIL":
                sender = line.split(b":", 1)[1].strip().decode()
                self._reply("250 OK")
            elif verb == b"RCPT":
                rcpts.append(line.split(b":", 1)[1].strip().decode())
                self._reply("250 OK")
            elif verb == b"DATA":
                in_data = True
                self._reply("354 end with <CRLF>.<CRLF>")
            elif verb == b"QUIT":
                self._reply("221 bye")
                return
            else:  # HELO, RSET, NOOP
                self._reply("250 OK")


class FakeSmtpServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.messages: list[tuple[str, list[str], Message]] = []
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def connection_json(self) -> str:
        import json

        return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": self.port,
                           "extra": {"from_email": "evergreen@example.com", "disable_ssl": True,
                                     "disable_tls": True, "retry_limit": 0, "timeout": 5}})

    def __enter__(self) -> FakeSmtpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()

    def bodies(self) -> list[str]:
        out = []
        for _, _, msg in self.messages:
            parts = [p for p in msg.walk() if p.get_content_type() in ("text/html", "text/plain")]
            out.append("".join(p.get_payload(decode=True).decode() for p in parts))
        return out
