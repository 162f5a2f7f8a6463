"""WSGI entry point: the two HTTP apps, for operators who serve them with gunicorn.

    gunicorn -c config/gunicorn.conf.py                                   # the API app
    gunicorn -c config/gunicorn.conf.py mailappliance.wsgi:mailbox_app --bind 127.0.0.1:8080

``api_app`` (what the appliance serves on ``API_PORT``) and ``mailbox_app`` (the Mailbox
API of ``MAILBOX_API_PORT``) are Flask apps built from ``Settings.from_env()`` with no
mail listener and no queue runner: those run once, in the appliance
(``python -m mailappliance``, started with ``API_PORT=0 MAILBOX_API_PORT=0`` so that
gunicorn owns the HTTP ports). The queue API works on the shared database (the
``Outbound`` object is built but its runner is never started), and the listener
counters of ``/api/*/stats`` are those the appliance publishes to ``server_stats``.

The apps are built on first access to the attribute, once per process: gunicorn's
gevent workers import this module after they fork and patch, so every pymongo client
belongs to the worker that uses it. This module imports only light modules at the
top, so gunicorn's master can call :func:`check` before forking.

Database: ``MONGODB_URL``; when it is unset or ``embedded``, the embedded database of
the running appliance, whose loopback URL the appliance writes to
``DATA_DIR/ports.json`` (key ``database``). Restart the workers when the appliance
restarts: its embedded database gets a new port.

``POST /api/send`` works here too: each worker runs its own group-commit delivery writer
(the same one the appliance runs; its UID reservations are compare-and-swap on the
folder document, safe across processes), started with the apps and drained by
:func:`shutdown` from gunicorn's ``worker_exit`` hook. The appliance's queue runner
delivers what it queues; IMAP sessions see the new mail within a second (the watch).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from mailappliance.api_key import resolve_api_key
from mailappliance.settings import Settings, SettingsError

if TYPE_CHECKING:  # heavy imports happen in build(), inside the worker
    from flask import Flask
    from pymongo import MongoClient

    from mailappliance.storage.writer import DeliveryWriter
    from mailappliance.web import ApiServices

LOOPBACK_PREFIX = "mongodb://127.0.0.1:"


class DeploymentError(RuntimeError):
    """Why the HTTP apps cannot be built, in one line."""


def load_settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise DeploymentError(f"bad setting: {exc}") from None


def database_url(settings: Settings) -> str:
    """``MONGODB_URL``, or the running appliance's embedded database (``ports.json``)."""
    if not settings.embedded_database:
        return settings.mongodb_url
    path = settings.data_dir / "ports.json"
    hint = "start the appliance first (python -m mailappliance) with the same DATA_DIR, or set MONGODB_URL"
    try:
        ports = json.loads(path.read_text())
    except FileNotFoundError:
        raise DeploymentError(f"MONGODB_URL is unset (embedded database) and {path} does not exist: {hint}") from None
    except (OSError, ValueError) as exc:
        raise DeploymentError(f"cannot read {path}: {exc}") from None
    url = ports.get("database") if isinstance(ports, dict) else None
    if not isinstance(url, str) or not url.startswith(LOOPBACK_PREFIX):
        raise DeploymentError(f"{path} names no embedded database (the appliance uses MONGODB_URL? set it here too)")
    pid = ports.get("pid")
    if isinstance(pid, int) and not _alive(pid):
        raise DeploymentError(f"the appliance of {path} (pid {pid}) is not running: {hint}")
    return url


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def check() -> None:
    """What gunicorn's master verifies before forking (see ``config/gunicorn.conf.py``):
    the settings parse, a database is named, and the generated API key exists, so every
    worker reads the same one. Opens no database connection."""
    settings = load_settings()
    database_url(settings)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        resolve_api_key(settings)
    except OSError as exc:
        raise DeploymentError(f"cannot use DATA_DIR {settings.data_dir}: {exc}") from None


@dataclass
class HttpApps:
    api_app: "Flask"
    mailbox_app: "Flask"
    services: "ApiServices"
    client: "MongoClient"
    writer: "DeliveryWriter"

    def close(self) -> None:
        """Drain the writer (answered sends are stored), then close the client."""
        self.writer.stop()
        self.client.close()


def build(settings: Optional[Settings] = None) -> HttpApps:
    """Both apps over one pymongo client, and a delivery writer for ``POST /api/send``;
    nothing that listens or delivers to other servers."""
    from mailappliance.app import setup_logging
    from mailappliance.assembly import Core
    from mailappliance.storage.mongo import DatabaseUnavailable, open_database, ping
    from mailappliance.storage.server_stats import FRESH_WITHIN, ServerStatsError, ServerStatsStore
    from mailappliance.web import ApiServices, create_api_app, create_mailbox_app

    settings = settings or load_settings()
    setup_logging(settings)
    url = database_url(settings)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        api_key, _ = resolve_api_key(settings)
    except OSError as exc:
        raise DeploymentError(f"cannot use DATA_DIR {settings.data_dir}: {exc}") from None
    try:
        client, db = open_database(url)
    except DatabaseUnavailable as exc:
        raise DeploymentError(str(exc)) from None
    # The same services as the appliance; its queue runner is never started here.
    core = Core.over(settings, db)
    writer = core.writer
    server_stats = ServerStatsStore(core.stores.collections)

    def health() -> Optional[str]:
        if not writer.alive:
            return "the delivery writer is not running"
        return ping(db)

    def listener_stats() -> list[dict]:
        try:
            return server_stats.read(FRESH_WITHIN)
        except ServerStatsError:
            return []  # /health says why

    services = ApiServices(
        api_key=api_key,
        health=health,
        incoming=core.stores.incoming,
        admin=core.admin,
        outbound=core.outbound,
        listener_stats=listener_stats,
        sender=core.sender,
    )
    return HttpApps(create_api_app(services), create_mailbox_app(core.admin, api_key, health), services, client, writer)


_apps: Optional[HttpApps] = None
_apps_pid = 0


def apps() -> HttpApps:
    """The apps of this process, built on first use (and again in a forked child)."""
    global _apps, _apps_pid
    if _apps is None or _apps_pid != os.getpid():
        _apps = build()
        _apps_pid = os.getpid()
    return _apps


def shutdown() -> None:
    """gunicorn's ``worker_exit``: drain this worker's writer and close its client."""
    global _apps
    if _apps is not None and _apps_pid == os.getpid():
        _apps.close()
        _apps = None


def __getattr__(name: str) -> Any:  # PEP 562: ``mailappliance.wsgi:api_app`` builds lazily
    if name == "api_app":
        return apps().api_app
    if name == "mailbox_app":
        return apps().mailbox_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
