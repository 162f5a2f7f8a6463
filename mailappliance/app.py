"""Wires the appliance onto one gevent hub: database, stores, services, listeners, HTTP apps.

``python -m mailappliance`` patches with gevent first (``__main__``), then calls
:func:`main`. Start-up failures end the process with one line saying why.
Shutdown (SIGTERM/SIGINT): stop accepting, let transactions finish (bounded by
``SHUTDOWN_TIMEOUT``), drain the writer, close the database, stop the embedded server.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import gevent
from bson import ObjectId
from gevent.event import Event
from gevent.pywsgi import WSGIServer
from pymongo import MongoClient
from pymongo.database import Database

from mailappliance.api_key import resolve_api_key
from mailappliance.assembly import Core, Stores
from mailappliance.redaction import redact_api_key
from mailappliance.protocol.imap.session import ImapConfig, ImapSession
from mailappliance.protocol.imap.grammar import parse_command
from mailappliance.protocol.lmtp import LmtpSession
from mailappliance.protocol.replies import S
from mailappliance.protocol.smtp import Peer, Role, SessionConfig, SmtpSession
from mailappliance.servers.base import LineServer, stop_servers
from mailappliance.servers.imap import ImapConnection
from mailappliance.servers.smtp import SmtpConnection
from mailappliance.services.auth import Authenticator
from mailappliance.services.domains import LocalDomains
from mailappliance.services.imap.backend import ImapBackend
from mailappliance.services.inbound import InboundService
from mailappliance.services.mailbox_admin import MailboxAdmin
from mailappliance.services.outbound_setup import Outbound
from mailappliance.services.sending import MessageSender
from mailappliance.services.stats_publisher import StatsPublisher
from mailappliance.settings import Settings, SettingsError
from mailappliance.storage.embedded import EmbeddedDatabase, EmbeddedDatabaseError
from mailappliance.storage.mongo import DatabaseUnavailable, open_database, ping, redact
from mailappliance.storage.server_stats import ServerStatsStore
from mailappliance.storage.writer import DeliveryWriter
from mailappliance.tls import TlsError, server_context
from mailappliance.web import ApiServices, create_api_app, create_mailbox_app

log = logging.getLogger("mailappliance")



class StartupError(RuntimeError):
    """Why the appliance could not start, in one line."""


def setup_logging(settings: Settings) -> None:
    level = getattr(logging, settings.log_level.upper(), logging.INFO)
    handlers: list[logging.Handler] = []
    if settings.enable_console_log:
        handlers.append(logging.StreamHandler(sys.stderr))
    if settings.log_file:
        handlers.append(logging.FileHandler(settings.log_file))
    if not handlers:
        handlers.append(logging.NullHandler())
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    logging.getLogger("pymongo").setLevel(max(level, logging.WARNING))


class Appliance:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded: Optional[EmbeddedDatabase] = None
        self.client: Optional[MongoClient] = None
        self.db: Optional[Database] = None
        self.stores: Stores
        self.domains: LocalDomains
        self.authenticator: Authenticator
        self.inbound: InboundService
        self.admin: MailboxAdmin
        self.sender: MessageSender
        self.servers: list[LineServer] = []
        self.http: list[tuple[str, WSGIServer]] = []
        self.writer: Optional[DeliveryWriter] = None
        self.outbound: Optional[Outbound] = None
        self.imap: Optional[ImapBackend] = None
        self.stats_publisher: Optional[StatsPublisher] = None
        self.api_key = ""
        self.api_key_path: Optional[Path] = None
        self.stopped = Event()

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        s = self.settings
        try:
            s.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(f"cannot create DATA_DIR {s.data_dir}: {exc.strerror}") from None
        self.api_key, self.api_key_path = resolve_api_key(s)
        self._open_database()
        assert self.db is not None
        core = Core.over(s, self.db)
        stores = self.stores = core.stores
        self.domains, self.authenticator, self.inbound, self.admin = core.domains, core.authenticator, core.inbound, core.admin
        self.writer, self.sender, self.outbound = core.writer, core.sender, core.outbound
        self.imap = ImapBackend(
            stores.mailboxes, stores.folders, stores.blobs, self.writer, self.authenticator,
            default_quota=s.mailbox_quota, exempt_ip=s.is_relay_client,
        )
        self.imap.start()
        if s.queue_enabled:
            self.outbound.start()
        try:
            self._start_mail_servers()
            self._start_http()
        except OSError as exc:
            self.stop()
            raise StartupError(f"cannot listen: {exc.strerror or exc}") from None
        # The listener counters, for HTTP apps served by other processes (mailappliance.wsgi).
        self.stats_publisher = StatsPublisher(ServerStatsStore(stores.collections), self.listener_stats)
        self.stats_publisher.start()
        self._write_ports()
        if self.api_key_path is not None:
            log.info("MAILBOX_API_KEY is unset or 'changeme': using the generated key in %s", self.api_key_path.resolve())
        log.info("mailappliance ready (local domains: %s)", ", ".join(s.allowed_domains) or "those of existing mailboxes")
        if "." not in s.hostname or s.hostname.startswith("localhost"):
            log.warning(
                "host name is %r: set SMTP_HOSTNAME to this server's public name; it is used in "
                "greetings, Received: headers, outbound EHLO and bounce reports", s.hostname,
            )

    def _open_database(self) -> None:
        s = self.settings
        url = s.mongodb_url
        if s.embedded_database:
            self.embedded = EmbeddedDatabase(s.data_dir, s.embedded_cache_size)
            try:
                self.embedded.start()
            except (EmbeddedDatabaseError, OSError) as exc:
                raise StartupError(str(exc)) from None
            url = self.embedded.url
        try:
            self.client, self.db = open_database(url)
        except DatabaseUnavailable as exc:
            if self.embedded:
                self.embedded.stop()
            raise StartupError(str(exc)) from None
        log.info("database: %s", "embedded SecantusDB" if self.embedded else redact(url))

    def _tls(self, files):
        try:
            return server_context(files, self.settings.data_dir, self.settings.hostname)
        except TlsError as exc:
            raise StartupError(str(exc)) from None

    def _session_factory(self, role: Role, tls_available: bool):
        s = self.settings
        config = SessionConfig(
            hostname=s.hostname,
            role=role,
            max_size=s.max_email_size,
            max_recipients=s.max_recipients,
            max_bad_commands=s.max_bad_commands,
            tls_available=tls_available,
            allow_plaintext_auth=s.allow_plaintext_auth,
        )
        session_class = LmtpSession if role is Role.LMTP else SmtpSession

        def make(peer: Peer, tls_active: bool) -> SmtpSession:
            return session_class(
                config,
                self.inbound,
                peer,
                tls_active=tls_active,
                relay_client=s.is_relay_client(peer.ip),
                new_queue_id=lambda: str(ObjectId()),
            )

        return make

    def _smtp_server(self, name: str, protocol: str, port: int, role: Role, tls, implicit: bool) -> LineServer:
        s = self.settings
        factory = self._session_factory(role, tls_available=tls is not None)

        def connection(server, sock, address):
            return SmtpConnection(server, sock, address, factory, None if implicit else tls, s.smtp_idle_timeout)

        return LineServer(
            name,
            protocol,
            s.host,
            max(port, 0),
            connection,
            implicit_tls=tls if implicit else None,
            starttls=not implicit and tls is not None,
            max_connections=s.max_connections,
            max_per_ip=s.max_connections_per_ip,
            exempt=s.is_relay_client,
            refusal=S.TOO_MANY_CONNECTIONS.encode(),
        )

    def _start_mail_servers(self) -> None:
        s = self.settings
        smtp_tls = self._tls(s.smtp_tls)
        lmtp_tls = self._tls(s.lmtp_tls)
        plans = [
            ("smtp", "smtp", s.smtp_port, Role.MX, smtp_tls, False),
            ("submission", "smtp", s.submission_port, Role.SUBMISSION, smtp_tls, False),
            ("smtps", "smtp", s.smtps_port, Role.SUBMISSIONS, smtp_tls, True),
            ("lmtp", "lmtp", s.lmtp_port, Role.LMTP, lmtp_tls, False),
        ]
        if s.lmtp_ssl_enabled:
            plans.append(("lmtps", "lmtp", s.lmtp_ssl_port, Role.LMTP, lmtp_tls, True))
        for name, protocol, port, role, tls, implicit in plans:
            if port == 0:
                continue
            server = self._smtp_server(name, protocol, port, role, tls, implicit)
            server.start()
            self.servers.append(server)
        imap_tls = self._tls(s.imap_tls)
        imap_plans = [("imap", s.imap_port, False)]
        if s.imap_ssl_enabled:
            imap_plans.append(("imaps", s.imap_ssl_port, True))
        for name, port, implicit in imap_plans:
            if port == 0:
                continue
            server = self._imap_server(name, port, imap_tls, implicit)
            server.start()
            self.servers.append(server)

    def _imap_server(self, name: str, port: int, tls, implicit: bool) -> LineServer:
        s = self.settings
        backend = self.imap
        assert backend is not None

        def session(peer: Peer, tls_active: bool) -> ImapSession:
            config = ImapConfig(
                hostname=s.hostname,
                allow_plaintext_auth=s.allow_plaintext_auth,
                starttls=not implicit,
                max_message_size=s.max_email_size,
                max_bad_commands=s.max_bad_commands,
            )
            return ImapSession(config, backend, peer, tls_active, parse_command)

        def connection(server, sock, address):
            return ImapConnection(server, sock, address, session, None if implicit else tls, backend.watch, s.max_email_size)

        return LineServer(
            name,
            "imap",
            s.host,
            max(port, 0),
            connection,
            implicit_tls=tls if implicit else None,
            starttls=not implicit,
            max_connections=s.max_connections,
            max_per_ip=s.max_connections_per_ip,
            exempt=s.is_relay_client,
            refusal=b"* BYE Too many connections; try again later\r\n",
        )

    def health_problem(self) -> Optional[str]:
        if self.db is None:
            return "not started"
        if self.writer is None or not self.writer.alive:
            return "the delivery writer is not running"
        if self.outbound is not None and self.outbound.running and not self.outbound.runner.alive:
            return "the outbound queue runner is not running"
        return ping(self.db)

    def api_services(self) -> ApiServices:
        return ApiServices(
            api_key=self.api_key,
            health=self.health_problem,
            incoming=self.stores.incoming,
            admin=self.admin,
            outbound=self.outbound,
            listener_stats=self.listener_stats,
            sender=self.sender,
        )

    def listener_stats(self) -> list[dict]:
        return [server.stats.as_dict() for server in self.servers]

    def _start_http(self) -> None:
        s = self.settings
        apps = [
            ("mailbox-api", s.mailbox_api_port, create_mailbox_app(self.admin, self.api_key, self.health_problem)),
            ("api", s.api_port, create_api_app(self.api_services())),
        ]
        access_log = logging.getLogger("mailappliance.http")
        for name, port, app in apps:
            if port == 0:
                continue
            server = WSGIServer((s.host, max(port, 0)), app, log=_LogWriter(access_log), error_log=_LogWriter(access_log, logging.ERROR))
            server.start()
            log.info("%s listening on http://%s:%d/ (Swagger UI at /api/docs)", name, s.host, server.server_port)
            self.http.append((name, server))

    @property
    def ports(self) -> dict[str, int]:
        ports = {server.name: server.port for server in self.servers}
        ports.update({name: server.server_port for name, server in self.http})
        return ports

    def _write_ports(self) -> None:
        """``DATA_DIR/ports.json``: what is listening where (for scripts and tests).

        With the embedded database its loopback URL is there too (key ``database``), so
        the HTTP apps served by gunicorn (``mailappliance.wsgi``) find the same database.
        """
        path = self.settings.data_dir / "ports.json"
        content: dict[str, object] = {"pid": os.getpid(), "host": self.settings.host, **self.ports}
        if self.embedded is not None:
            content["database"] = self.embedded.url
        path.write_text(json.dumps(content, indent=2) + "\n")

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        s = self.settings
        log.info("shutting down: no new connections; waiting up to %.0f s for transactions", s.shutdown_timeout)
        stop_servers(self.servers, s.shutdown_timeout)
        if self.stats_publisher is not None:
            self.stats_publisher.stop()
        if self.imap is not None:
            self.imap.stop()
        for _, server in self.http:
            server.stop(timeout=5)
        if self.outbound is not None:
            self.outbound.stop(s.shutdown_timeout)
        if self.writer is not None:
            self.writer.stop()
        if self.client is not None:
            self.client.close()
        if self.embedded is not None:
            self.embedded.stop()
        try:
            (s.data_dir / "ports.json").unlink()
        except OSError:
            pass
        self.stopped.set()
        log.info("stopped")


class _LogWriter:
    """pywsgi writes access lines to a file-like object; send them to logging."""

    def __init__(self, logger: logging.Logger, level: int = logging.DEBUG) -> None:
        self.logger = logger
        self.level = level

    def write(self, text: str) -> None:
        text = redact_api_key(text.strip())
        if text:
            self.logger.log(self.level, "%s", text)

    def flush(self) -> None:
        pass


def main(argv: Optional[list[str]] = None) -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"mailappliance: bad setting: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings)
    appliance = Appliance(settings)
    try:
        appliance.start()
    except StartupError as exc:
        print(f"mailappliance: cannot start: {exc}", file=sys.stderr)
        return 1
    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    stop.wait()
    appliance.stop()
    return 0
