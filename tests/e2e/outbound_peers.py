"""Real peers for outbound tests, all on loopback: dnsmasq with MX records, SMTP servers on
127.0.0.x that accept, defer or reject per recipient, and small HTTP servers (IP selection
API, webhook receiver)."""
from __future__ import annotations

import base64
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import gevent
import pytest
from gevent.pywsgi import WSGIServer
from gevent.server import StreamServer

# Every peer address listens on the same port (OUTBOUND_SMTP_PORT is one number).
PEER_ACCEPT = "127.0.0.2"  # mx.accept.test, mx2.multi.test, aonly.test
PEER_OTHER = "127.0.0.3"  # mx.other.test
PEER_DOWN = "127.0.0.5"  # mx1.multi.test: nothing listens there

DNS_RECORDS = f"""
mx-host=accept.test,mx.accept.test,10
host-record=mx.accept.test,{PEER_ACCEPT}
mx-host=other.test,mx.other.test,10
host-record=mx.other.test,{PEER_OTHER}
mx-host=multi.test,mx1.multi.test,10
mx-host=multi.test,mx2.multi.test,20
host-record=mx1.multi.test,{PEER_DOWN}
host-record=mx2.multi.test,{PEER_ACCEPT}
host-record=aonly.test,{PEER_ACCEPT}
dns-rr=nullmx.test,15,000000
mx-host=dangling.test,mx.nowhere.test,10
"""


def free_udp_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1 (dnsmasq listens on both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as t:
                t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue


def shared_port(addresses: list[str]) -> int:
    """A TCP port free on every one of ``addresses``."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((addresses[0], 0))
            port = s.getsockname()[1]
        try:
            for address in addresses:
                with socket.socket() as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    probe.bind((address, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port")


class Dnsmasq:
    """dnsmasq in the foreground on 127.0.0.1:<free port>, answering only for ``.test``."""

    def __init__(self, records: str = DNS_RECORDS, ttl: int = 0) -> None:
        for attempt in range(3):  # the port may be taken between choosing and binding it
            try:
                self._start(records, ttl)
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def _start(self, records: str, ttl: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dnsmasq-"))
        self.port = free_udp_port()
        conf = self.dir / "dnsmasq.conf"
        conf.write_text(
            f"port={self.port}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\nno-poll\n"
            f"local=/test/\nlocal-ttl={ttl}\npid-file={self.dir / 'pid'}\n{records}"
        )
        self.process = subprocess.Popen(
            ["dnsmasq", "-k", "-C", str(conf), "--user=root"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 10
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                self.process.wait()
                shutil.rmtree(self.dir, ignore_errors=True)
                raise RuntimeError(f"dnsmasq did not start: {self.process.stdout.read().decode() if self.process.stdout else ''}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        import dns.resolver

        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        resolver.lifetime = 0.5
        try:
            resolver.resolve("probe.test", "A")
            return True
        except dns.resolver.NXDOMAIN:
            return True  # it answers
        except Exception:
            return False

    @property
    def servers(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", self.port)]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Received:
    peer_ip: str
    local_ip: str
    helo: str
    mail_from: str
    recipients: list[str]
    data: bytes
    tls: bool


@dataclass
class Behaviour:
    """How an SMTP peer answers; by default per recipient local part prefix."""

    greeting: str = "220 peer ESMTP"
    greeting_delay: float = 0.0
    starttls: bool = False
    size_limit: int = 0
    mail_reply: Optional[str] = None
    data_reply: str = "250 2.0.0 Ok: queued"
    rcpt: Callable[[str], str] = field(default_factory=lambda: default_rcpt)


def default_rcpt(address: str) -> str:
    local = address.split("@", 1)[0].lower()
    if local.startswith("defer"):
        return "451 4.2.0 try again later"
    if local.startswith("nouser"):
        return "550 5.1.1 no such user"
    if local.startswith("full"):
        return "552 5.2.2 mailbox full"
    if local.startswith("policy"):
        return "554 5.7.1 rejected by policy"
    if local.startswith("blockip"):
        return "554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org"
    return "250 2.1.5 Ok"


class SmtpPeer:
    """A small SMTP server (gevent) that records every message it accepts."""

    def __init__(self, addresses: list[str], port: int, tls_context: Optional[ssl.SSLContext] = None) -> None:
        self.addresses = addresses
        self.port = port
        self.tls_context = tls_context
        self.behaviour: dict[str, Behaviour] = {a: Behaviour() for a in addresses}
        self.received: list[Received] = []
        self.connections: list[tuple[str, str]] = []  # (client ip, local ip)
        self.servers = [StreamServer((a, port), self._handle) for a in addresses]
        for server in self.servers:
            server.start()

    def stop(self) -> None:
        for server in self.servers:
            server.stop(timeout=1)

    def _handle(self, sock, address) -> None:
        local_ip = sock.getsockname()[0]
        behaviour = self.behaviour[local_ip]
        self.connections.append((address[0], local_ip))
        stream = sock.makefile("rb")
        tls = False

        def send(line: str) -> None:
            sock.sendall(line.encode() + b"\r\n")

        if behaviour.greeting_delay:
            gevent.sleep(behaviour.greeting_delay)
        send(behaviour.greeting)
        if not behaviour.greeting.startswith("220"):
            sock.close()
            return
        helo, mail_from, recipients = "", "", []
        try:
            while True:
                line = stream.readline()
                if not line:
                    return
                command = line.decode("utf-8", "replace").strip()
                verb = command[:4].upper()
                if verb in ("EHLO", "HELO"):
                    helo = command[5:]
                    extensions = ["8BITMIME", "SMTPUTF8", f"SIZE {behaviour.size_limit}"]
                    if behaviour.starttls and self.tls_context and not tls:
                        extensions.append("STARTTLS")
                    lines = ["peer"] + extensions
                    for i, text in enumerate(lines):
                        send(f"250{'-' if i < len(lines) - 1 else ' '}{text}")
                elif verb == "STAR":
                    send("220 2.0.0 go ahead")
                    assert self.tls_context is not None
                    sock = self.tls_context.wrap_socket(sock, server_side=True)
                    stream = sock.makefile("rb")
                    tls = True
                elif verb == "MAIL":
                    mail_from = command[10:].split(">")[0].lstrip("<")
                    recipients = []
                    send(behaviour.mail_reply or "250 2.1.0 Ok")
                elif verb == "RCPT":
                    rcpt = command[8:].split(">")[0].lstrip("<")
                    reply = behaviour.rcpt(rcpt)
                    if reply.startswith("250"):
                        recipients.append(rcpt)
                    send(reply)
                elif verb == "DATA":
                    send("354 End data with <CR><LF>.<CR><LF>")
                    chunks = []
                    while True:
                        chunk = stream.readline()
                        if chunk in (b".\r\n", b""):
                            break
                        chunks.append(chunk[1:] if chunk.startswith(b"..") else chunk)
                    data = b"".join(chunks)
                    if behaviour.data_reply.startswith("250"):
                        self.received.append(Received(address[0], local_ip, helo, mail_from, recipients, data, tls))
                    send(behaviour.data_reply)
                elif verb == "RSET":
                    send("250 2.0.0 Ok")
                elif verb == "QUIT":
                    send("221 2.0.0 Bye")
                    return
                else:
                    send("502 5.5.2 command not recognized")
        except (OSError, ssl.SSLError):
            return
        finally:
            sock.close()


class HttpRecorder:
    """An HTTP server whose answers are set by the test; it keeps every request."""

    def __init__(self, answer: Callable[[dict], tuple[int, bytes]]) -> None:
        self.answer = answer
        self.requests: list[dict] = []
        self.server = WSGIServer(("127.0.0.1", 0), self._app, log=None, error_log=None)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def _app(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        request = {
            "path": environ["PATH_INFO"],
            "body": body,
            "json": json.loads(body) if body else None,
            "headers": {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")},
        }
        self.requests.append(request)
        status, payload = self.answer(request)
        start_response(f"{status} X", [("content-type", "application/json")])
        return [payload]

    def stop(self) -> None:
        self.server.stop(timeout=1)


def slow_answer(seconds: float, then: tuple[int, bytes]) -> Callable[[dict], tuple[int, bytes]]:
    def answer(_request):
        gevent.sleep(seconds)
        return then

    return answer


def dns_fixture(records: str = DNS_RECORDS, scope: str = "function"):
    """A fixture that runs a :class:`Dnsmasq` serving ``records`` for ``scope``; a test module
    binds it to the name its tests ask for: ``dns = dns_fixture(scope="module")``."""

    @pytest.fixture(scope=scope)
    def fixture() -> Iterator[Dnsmasq]:
        server = Dnsmasq(records)
        yield server
        server.stop()

    return fixture


def peer_fixture(addresses: tuple[str, ...], scope: str = "function"):
    """A fixture that runs a :class:`SmtpPeer` on ``addresses`` (one port free on all of them)
    for ``scope``: ``peer = peer_fixture((PEER_ACCEPT,))``."""

    @pytest.fixture(scope=scope)
    def fixture() -> Iterator[SmtpPeer]:
        server = SmtpPeer(list(addresses), shared_port(list(addresses)))
        yield server
        server.stop()

    return fixture


def dkim_key(keys: Path, domain: str = "example.com", selector: str = "sel1") -> Callable[..., bytes]:
    """Make the directory ``keys`` with a new RSA key for ``domain`` (the DKIM_KEY_DIR layout)
    and return a ``dnsfunc`` for ``dkim.verify`` that serves the selector's TXT record; it
    asserts that the record asked for is that one."""
    keys.mkdir()
    private = keys / f"{domain}.pem"
    subprocess.run(["openssl", "genrsa", "-out", private, "2048"], check=True, capture_output=True)
    public = subprocess.run(
        ["openssl", "rsa", "-in", private, "-pubout", "-outform", "DER"], check=True, capture_output=True
    ).stdout
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns_txt(name: bytes, timeout: float = 5) -> bytes:
        assert name == f"{selector}._domainkey.{domain}.".encode()
        return record

    return dns_txt


SENDER = "user@example.com"  # a local mailbox, so bounces come back as reports


def outbound_appliance(appliance_factory, dns_servers, port: int, **overrides):
    """An appliance delivering through ``dns_servers`` to SMTP peers on ``port``, with
    short timeouts and a fast queue; SENDER exists as a mailbox."""
    values = dict(
        dns_servers=dns_servers,
        outbound_smtp_port=port,
        queue_poll_interval=0.05,
        outbound_connect_timeout=2.0,
        outbound_command_timeout=5.0,
    )
    values.update(overrides)
    app = appliance_factory(**values)
    app.admin.create(SENDER, "correct horse battery")
    return app
