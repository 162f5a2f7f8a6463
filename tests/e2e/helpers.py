"""Helpers for real-socket tests: clients that trust the appliance's generated certificate."""
from __future__ import annotations

import socket
import ssl
import time

from mailappliance.storage.blobs import BlobStore

# The environment that puts every mail listener of an appliance process on a free loopback
# port (written to DATA_DIR/ports.json); the HTTP ports are each test's choice.
MAIL_LISTENERS_AUTO = {"SMTP_HOST": "127.0.0.1"} | dict.fromkeys(
    ("SMTP_25_PORT", "SMTP_587_PORT", "SMTP_465_PORT", "LMTP_PORT", "IMAP_PORT", "IMAP_SSL_PORT"), "auto"
)


def client_tls(appliance) -> ssl.SSLContext:
    """A client context that verifies the appliance's self-signed certificate."""
    context = ssl.create_default_context(cafile=str(appliance.settings.data_dir / "tls" / "selfsigned-cert.pem"))
    context.check_hostname = False
    return context


def stored_messages(appliance, mailbox: str) -> list[dict]:
    return list(appliance.stores.collections.messages.find({"mailbox": mailbox}).sort("uid", 1))


def stored_raw(appliance, message: dict) -> bytes:
    return BlobStore(appliance.stores.collections).read(message["blob"], message["size"])


class RawClient:
    """A bare socket client for conversations smtplib will not have (pipelining, bad input)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> tuple[int, str]:
        """Read one (possibly multi-line) reply."""
        lines = []
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"closed; got {lines!r} {self.buffer!r}")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            lines.append(line.decode())
            if len(line) < 4 or line[3:4] != b"-":
                return int(lines[-1][:3]), "\n".join(l[4:] for l in lines)

    def cmd(self, line: str) -> tuple[int, str]:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def closed(self, wait: float = 5.0) -> bool:
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self) -> None:
        self.sock.close()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")
