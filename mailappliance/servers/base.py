"""A gevent ``StreamServer`` for line protocols: listening, limits, stats, graceful stop.

Protocol-specific connection loops (SMTP/LMTP here, IMAP later) subclass
:class:`Connection`; this module owns what they share: implicit TLS, the connection
limit, per-port counters and the shutdown sequence (stop accepting, let
transactions in progress finish within a bounded wait, then close the rest).
"""
from __future__ import annotations

import logging
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import gevent
from gevent.server import StreamServer

log = logging.getLogger("mailappliance.server")

TLS_HANDSHAKE_TIMEOUT = 30.0
TLS_CLOSE_TIMEOUT = 2.0  # seconds to wait for the client's close_notify


class ShuttingDown(Exception):
    """Raised inside an idle connection's greenlet when the server stops."""


@dataclass
class ServerStats:
    """Counters one listening port keeps (served by the stats API)."""

    name: str
    protocol: str
    port: int
    tls: str  # "implicit", "starttls" or "none"
    current_connections: int = 0
    total_connections: int = 0
    rejected_connections: int = 0
    tls_sessions: int = 0
    messages_accepted: int = 0
    messages_rejected: int = 0
    bytes_received: int = 0
    auth_failures: int = 0
    errors: int = 0
    started_at: float = field(default_factory=time.time)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class Connection:
    """One client connection; subclasses implement :meth:`serve`."""

    def __init__(self, server: "LineServer", sock: socket.socket, address: tuple) -> None:
        self.server = server
        self.sock = sock
        self.address = address
        self.greenlet: Optional[gevent.Greenlet] = None
        self.told_to_close = False

    @property
    def busy(self) -> bool:
        """True while the client is in the middle of something a shutdown should wait for."""
        return False

    def serve(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def say_goodbye(self) -> None:
        """Tell an idle client the server is going away (protocol-specific)."""

    def send(self, data: bytes) -> None:
        send_all(self.sock, data)

    def upgrade_to_tls(self, context: Optional[ssl.SSLContext]) -> bool:
        """STARTTLS (RFC 3207, RFC 3501 §6.2.1): False, logged, when the handshake fails."""
        assert context is not None
        try:
            self.start_tls(context)
        except (ssl.SSLError, OSError) as exc:
            log.info("%s: STARTTLS with %s failed: %s", self.server.name, self.address[0], exc)
            return False
        return True

    def start_tls(self, context: ssl.SSLContext) -> None:
        self.sock.settimeout(TLS_HANDSHAKE_TIMEOUT)
        self.sock = context.wrap_socket(self.sock, server_side=True)
        self.server.stats.tls_sessions += 1


def send_all(sock: socket.socket, data: bytes) -> None:
    """``sendall`` for short protocol replies.

    gevent's ``sendall`` asks the kernel for SO_SNDBUF on every call to size its
    chunks; a reply of a few lines fits in one ``send``, so loop on that instead.
    """
    view = memoryview(data)
    while view:
        sent = sock.send(view)
        view = view[sent:]


def close_socket(sock: socket.socket) -> None:
    """Close, ending TLS with a close_notify first (RFC 8446 §6.1) so clients such as
    ``openssl s_client`` see a clean end rather than an unexpected EOF."""
    try:
        if isinstance(sock, ssl.SSLSocket):
            sock.settimeout(TLS_CLOSE_TIMEOUT)
            sock.unwrap()
    except (OSError, ValueError, ssl.SSLError):
        pass
    try:
        sock.close()
    except OSError:
        pass


class LineServer:
    """Listens on one port and runs a :class:`Connection` per client in its own greenlet."""

    def __init__(
        self,
        name: str,
        protocol: str,
        host: str,
        port: int,
        connection_factory: Callable[["LineServer", socket.socket, tuple], Connection],
        *,
        implicit_tls: Optional[ssl.SSLContext] = None,
        starttls: bool = False,
        max_connections: int = 1000,
        max_per_ip: int = 0,
        exempt: Callable[[str], bool] = lambda ip: False,
        refusal: bytes = b"",
    ) -> None:
        self.name = name
        self.refusal = refusal
        self.max_per_ip = max_per_ip
        self.exempt = exempt
        self._per_ip: dict[str, int] = {}
        self.host = host
        self.connection_factory = connection_factory
        self.implicit_tls = implicit_tls
        self.max_connections = max_connections
        self.stopping = False
        self.connections: set[Connection] = set()
        tls = "implicit" if implicit_tls else "starttls" if starttls else "none"
        self.stats = ServerStats(name=name, protocol=protocol, port=port, tls=tls)
        self._server = StreamServer((host, port), self._handle)

    @property
    def port(self) -> int:
        return self._server.server_port

    def start(self) -> None:
        self._server.start()
        self.stats.port = self.port
        log.info("%s listening on %s:%d%s", self.name, self.host, self.port, " (TLS)" if self.implicit_tls else "")

    def _handle(self, sock: socket.socket, address: tuple) -> None:
        ip = address[0]
        if self.stopping or len(self.connections) >= self.max_connections or self._ip_over_limit(ip):
            self.stats.rejected_connections += 1
            self._refuse(sock)
            return
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        try:
            self._serve(sock, address)
        finally:
            left = self._per_ip.pop(ip, 1) - 1
            if left:
                self._per_ip[ip] = left

    def _ip_over_limit(self, ip: str) -> bool:
        """Like Postfix's smtpd_client_connection_count_limit; RELAY_NETWORKS are exempt."""
        return bool(self.max_per_ip) and self._per_ip.get(ip, 0) >= self.max_per_ip and not self.exempt(ip)

    def _serve(self, sock: socket.socket, address: tuple) -> None:
        connection = self.connection_factory(self, sock, address)
        connection.greenlet = gevent.getcurrent()  # type: ignore[assignment]
        self.connections.add(connection)
        self.stats.current_connections += 1
        self.stats.total_connections += 1
        try:
            if self.implicit_tls is not None:
                try:
                    connection.start_tls(self.implicit_tls)
                except (ssl.SSLError, OSError, socket.timeout) as exc:
                    log.info("%s: TLS handshake with %s failed: %s", self.name, address[0], exc)
                    return
            connection.serve()
        except ShuttingDown:
            try:
                connection.say_goodbye()
            except OSError:
                pass
        except (OSError, ssl.SSLError) as exc:
            log.debug("%s: connection from %s ended: %s", self.name, address[0], exc)
        except Exception:
            self.stats.errors += 1
            log.exception("%s: error serving %s", self.name, address[0])
        finally:
            self.connections.discard(connection)
            self.stats.current_connections -= 1
            close_socket(connection.sock)

    def _refuse(self, sock: socket.socket) -> None:
        """Answer over-limit clients instead of leaving them hanging."""
        try:
            if self.refusal and self.implicit_tls is None:
                sock.settimeout(5)
                sock.sendall(self.refusal)
        except OSError:
            pass
        finally:
            sock.close()

    def stop_accepting(self) -> None:
        self.stopping = True
        self._server.close()

    def close_idle(self) -> None:
        for connection in list(self.connections):
            if not connection.busy and not connection.told_to_close and connection.greenlet is not None:
                connection.told_to_close = True  # once: a second kill would hit its goodbye
                connection.greenlet.kill(ShuttingDown, block=False)

    def kill_all(self) -> None:
        for connection in list(self.connections):
            if connection.greenlet is not None:
                connection.greenlet.kill(block=False)


def stop_servers(servers: list[LineServer], timeout: float) -> None:
    """Graceful stop: refuse new clients, close idle ones, wait for transactions, then close."""
    for server in servers:
        server.stop_accepting()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for server in servers:
            server.close_idle()
        if not any(server.connections for server in servers):
            return
        gevent.sleep(0.1)
    busy = sum(len(server.connections) for server in servers)
    if busy:
        log.warning("closing %d connections still busy after %.0f s", busy, timeout)
    for server in servers:
        server.kill_all()
    gevent.sleep(0)
