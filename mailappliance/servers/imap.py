"""IMAP connections: socket I/O for :class:`ImapSession` (RFC 3501 §5.4, RFC 2177).

The framer assembles commands with their literals (answering ``+`` to
synchronising ones); the session turns each into responses and an action. This
module only moves bytes: it streams responses (a FETCH of many bodies is never
held in memory at once), switches to TLS, reads SASL lines, and runs IDLE, where
a second greenlet pushes changes while the first waits for ``DONE``.
"""
from __future__ import annotations

import logging
import socket
import ssl
import time
from typing import Callable, Optional

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

from mailappliance.protocol.envelope import Peer
from mailappliance.protocol.imap import framing
from mailappliance.protocol.imap.session import Close, Idle, ImapSession, Outcome, ReadSasl, StartTls, State
from mailappliance.servers.base import Connection, LineServer, ShuttingDown
from mailappliance.services.imap.watch import FolderWatch

log = logging.getLogger("mailappliance.imap")

RECV_SIZE = 64 * 1024
FLUSH_BYTES = 256 * 1024  # responses are sent once this much is queued
MAX_LINE = 64 * 1024  # a command line without its literals
AUTOLOGOUT = 30 * 60.0  # RFC 3501 §5.4: at least 30 minutes once logged in
LOGIN_TIMEOUT = 120.0  # before login
IDLE_POLL = 29 * 60.0  # RFC 2177 §3: clients re-IDLE every 29 minutes
PRE_AUTH_LITERAL = 8 * 1024  # before login, a literal carries at most a name or password

SessionFactory = Callable[[Peer, bool], ImapSession]


class _ClientGone(Exception):
    pass


class ImapConnection(Connection):
    def __init__(
        self,
        server: LineServer,
        sock: socket.socket,
        address: tuple,
        session_factory: SessionFactory,
        tls_context: Optional[ssl.SSLContext],
        watch: FolderWatch,
        max_literal: int,
    ) -> None:
        super().__init__(server, sock, address)
        self.session_factory = session_factory
        self.tls_context = tls_context
        self.watch = watch
        self.max_literal = max_literal
        self.session: Optional[ImapSession] = None
        self.framer = self._new_framer()
        self._out: list[bytes] = []
        self._queued = 0
        self._busy = False
        self._lock = Semaphore()
        self._login_deadline = time.monotonic() + LOGIN_TIMEOUT

    @property
    def busy(self) -> bool:
        return self._busy

    def say_goodbye(self) -> None:
        self.sock.settimeout(5)
        self._out.clear()
        self.send(b"* BYE Server shutting down\r\n")

    # ------------------------------------------------------------------ loop
    def serve(self) -> None:
        peer = Peer(ip=self.address[0], port=self.address[1], local_port=self.sock.getsockname()[1])
        self.session = session = self.session_factory(peer, self.server.implicit_tls is not None)
        self._login_deadline = time.monotonic() + LOGIN_TIMEOUT
        self._queue(session.greeting())
        try:
            while True:
                event = self.framer.next_event()
                if event is None:
                    self._flush()
                    if self.server.stopping:
                        raise ShuttingDown()
                    self._receive(self._timeout())
                    continue
                if isinstance(event, framing.NeedContinuation):
                    self.send(b"+ Ready for literal data\r\n")
                    continue
                self._busy = True
                try:
                    if isinstance(event, framing.Rejected):
                        too_big = event.reason in (framing.REASON_LITERAL, framing.REASON_COMMAND)
                        outcome = session.reject(event.tag, event.reason, too_big)
                    else:
                        outcome = session.receive(event.data)
                    if self._run(outcome):
                        return
                    if session.state != State.NOT_AUTHENTICATED and self.framer.max_literal != self.max_literal:
                        self._allow_large_literals()
                finally:
                    self._busy = False
        except socket.timeout:
            self._queue(session.autologout())
            self._flush()
        except _ClientGone:
            pass
        finally:
            self.server.stats.auth_failures += session.auth_failures
            session.closed()

    def _new_framer(self) -> framing.CommandFramer:
        """Until login, literals are small: unauthenticated clients cannot make us hold megabytes."""
        return framing.CommandFramer(MAX_LINE, PRE_AUTH_LITERAL)

    def _allow_large_literals(self) -> None:
        self.framer.max_literal = self.max_literal
        self.framer.max_command = self.max_literal + 2 * MAX_LINE

    def _timeout(self) -> float:
        """Before login, one deadline for the whole conversation (chatter does not extend
        it); after login, RFC 3501 §5.4's 30 minutes without a command."""
        assert self.session is not None
        if self.session.state == State.NOT_AUTHENTICATED:
            left = self._login_deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("login took too long")
            return left
        return AUTOLOGOUT

    def _receive(self, timeout: float) -> None:
        self.sock.settimeout(timeout)
        data = self.sock.recv(RECV_SIZE)
        if not data:
            raise _ClientGone()
        self.server.stats.bytes_received += len(data)
        self.framer.feed(data)

    def _read_line(self, timeout: float) -> bytes:
        """One plain line (a SASL answer, IDLE's DONE): no literals in it."""
        while True:
            line = self.framer.next_line()
            if line is not None:
                return line
            self._receive(timeout)

    def _queue(self, data: bytes) -> None:
        self._out.append(data)
        self._queued += len(data)
        if self._queued >= FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self._queued = 0
            self.send(data)

    def _run(self, outcome: Outcome) -> bool:
        """Send the responses and carry out the action; True when the connection must end."""
        session = self.session
        assert session is not None
        for line in outcome.responses:
            self._queue(line)
        action = outcome.action
        if action is None:
            return False
        self._flush()
        if isinstance(action, Close):
            return True
        if isinstance(action, StartTls):
            self.framer = self._new_framer()  # nothing sent before TLS is kept
            if not self.upgrade_to_tls(self.tls_context):
                return True
            session.tls_started()
            return False
        if isinstance(action, ReadSasl):
            line = self._read_line(self._timeout())
            return self._run(session.continue_sasl(line))
        if isinstance(action, Idle):
            return self._idle()
        raise AssertionError(f"unknown action {action!r}")

    # ------------------------------------------------------------------ IDLE
    def _idle(self) -> bool:
        """RFC 2177: push changes as they happen until the client sends DONE."""
        session = self.session
        assert session is not None
        changed = Event()
        folder = session.watched_folder
        if folder is not None:
            self.watch.add(folder, changed.set)
        pusher = gevent.spawn(self._push_changes, changed)
        self._busy = False
        try:
            line = self._read_line(AUTOLOGOUT)
        finally:
            with self._lock:
                pusher.kill(block=True)
            if folder is not None:
                self.watch.remove(folder, changed.set)
        self._busy = True
        return self._run(session.idle_done(line))

    def _push_changes(self, changed: Event) -> None:
        session = self.session
        assert session is not None
        while True:
            changed.wait(IDLE_POLL)
            changed.clear()
            with self._lock:
                try:
                    lines = session.idle_changes()
                except Exception:
                    log.exception("IDLE update failed")
                    continue
                if lines:
                    self.send(b"".join(lines))
