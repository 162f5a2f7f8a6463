"""SMTP and LMTP connections: socket I/O for :class:`SmtpSession` actions.

Replies are queued and flushed only when no further complete command is buffered,
which is what makes PIPELINING (RFC 2920 §3.1) efficient; a DATA body is read in
large chunks by :class:`DataReader` rather than line by line.
"""
from __future__ import annotations

import logging
import socket
import ssl
from typing import Callable

from mailappliance.protocol.lines import DataReader, LineBuffer, LineTooLong
from mailappliance.protocol.replies import Reply, S
from mailappliance.protocol.smtp import Action, Close, Peer, ReadData, SmtpSession, StartTls
from mailappliance.servers.base import Connection, LineServer, ShuttingDown
from mailappliance.settings import TEXT_LINE_LIMIT

log = logging.getLogger("mailappliance.smtp")

RECV_SIZE = 64 * 1024
DATA_TIMEOUT = 600.0  # RFC 5321 §4.5.3.2.6: data termination may take up to 10 minutes


class _ClientGone(Exception):
    pass


SessionFactory = Callable[[Peer, bool], SmtpSession]


class SmtpConnection(Connection):
    def __init__(
        self,
        server: LineServer,
        sock: socket.socket,
        address: tuple,
        session_factory: SessionFactory,
        tls_context: ssl.SSLContext | None,
        idle_timeout: float,
    ) -> None:
        super().__init__(server, sock, address)
        self.session_factory = session_factory
        self.tls_context = tls_context
        self.idle_timeout = idle_timeout
        self.session: SmtpSession | None = None
        self._out: list[bytes] = []
        self._buffer = LineBuffer()

    @property
    def busy(self) -> bool:
        return self.session is not None and self.session.in_transaction

    def say_goodbye(self) -> None:
        self.sock.settimeout(5)
        self.send(S.SHUTTING_DOWN.encode())

    # ------------------------------------------------------------------ loop
    def serve(self) -> None:
        local_port = self.sock.getsockname()[1]
        peer = Peer(ip=self.address[0], port=self.address[1], local_port=local_port)
        self.session = session = self.session_factory(peer, self.server.implicit_tls is not None)
        self._out.append(session.greeting().encode())
        try:
            while True:
                try:
                    line = self._buffer.next_line(session.line_limit)
                except LineTooLong:
                    if self._run(session.line_too_long()):
                        return
                    continue
                if line is None:
                    self._flush()
                    if self.server.stopping and not session.in_transaction:
                        raise ShuttingDown()
                    if not self._receive(self.idle_timeout):
                        return
                    continue
                if self._run(session.handle_line(line)):
                    return
        except socket.timeout:
            log.info("client [%s]:%d idle too long%s; closing", self.address[0], self.address[1],
                     " during DATA, message discarded" if session.in_transaction else "")
            self._out.append(S.TIMEOUT.encode())
            self._flush()
        except _ClientGone:
            pass
        finally:
            self.server.stats.auth_failures += session.auth_failures

    def _receive(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        data = self.sock.recv(RECV_SIZE)
        if not data:
            return False
        self.server.stats.bytes_received += len(data)
        self._buffer.feed(data)
        return True

    def _flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self.send(data)

    def _run(self, actions: list[Action]) -> bool:
        """Carry out ``actions``; True when the connection must end."""
        session = self.session
        assert session is not None
        for action in actions:
            if isinstance(action, Reply):
                self._out.append(action.encode())
            elif isinstance(action, Close):
                self._flush()
                return True
            elif isinstance(action, StartTls):
                self._flush()
                # RFC 3207 §4.2 / CVE-2011-0411: nothing sent before TLS may be used after it.
                self._buffer.clear()
                if not self.upgrade_to_tls(self.tls_context):
                    return True
                session.tls_started()
            elif isinstance(action, ReadData):
                self._flush()
                if self._read_data(action.max_size):
                    return True
        return False

    def _read_data(self, max_size: int) -> bool:
        session = self.session
        assert session is not None
        reader = DataReader(max_size, TEXT_LINE_LIMIT)
        reader.feed(self._buffer.take_all())
        while not reader.done:
            self.sock.settimeout(DATA_TIMEOUT)
            chunk = self.sock.recv(RECV_SIZE)
            if not chunk:
                # Client went away mid-DATA: nothing is stored.
                log.info("client %s disconnected during DATA; message discarded", self.address[0])
                raise _ClientGone()
            self.server.stats.bytes_received += len(chunk)
            reader.feed(chunk)
        self._buffer.feed(reader.leftover)
        assert reader.result is not None
        replies = session.handle_data(reader.result)
        if any(isinstance(r, Reply) and r.code < 300 for r in replies):
            self.server.stats.messages_accepted += 1
        else:
            self.server.stats.messages_rejected += 1
        return self._run(replies)
