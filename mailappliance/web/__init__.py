"""The two HTTP apps: the Mailbox API (``MAILBOX_API_PORT``) and the API (``API_PORT``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from flask import Flask, jsonify

from mailappliance.services.mailbox_admin import MailboxAdmin
from mailappliance.services.outbound_setup import Outbound
from mailappliance.services.sending import MessageSender
from mailappliance.storage.incoming import IncomingStore
from mailappliance.storage.outbound_records import OutboundRecords
from mailappliance.web import dashboard
from mailappliance.web.api import emails, incoming, mailboxes, outbound as outbound_api, outcomes, send as send_api, stats
from mailappliance.web.app_factory import build_app

HealthCheck = Callable[[], Optional[str]]  # None when healthy, else the reason
# Per-port listener counters (``ServerStats.as_dict()``): live in the appliance's own
# process, read from the database when the HTTP apps run under gunicorn.
ListenerStats = Callable[[], list[dict]]


@dataclass
class ApiServices:
    """What the API app (``API_PORT``) is built from; the appliance and the gunicorn
    entry point (``mailappliance.wsgi``) fill it the same way."""

    api_key: str
    health: HealthCheck
    incoming: IncomingStore
    admin: MailboxAdmin
    outbound: Optional[Outbound] = None
    listener_stats: ListenerStats = field(default=lambda: [])
    sender: Optional[MessageSender] = None  # POST /api/send; without it the route answers 503


def _health_route(app: Flask, check: HealthCheck) -> None:
    @app.get("/health")
    def health():
        problem = check()
        body = {"status": "ok" if problem is None else "error", "database": "reachable" if problem is None else problem}
        if problem is not None:
            body["problem"] = problem
        return jsonify(body), 200 if problem is None else 503


def create_mailbox_app(admin: MailboxAdmin, api_key: str, health: HealthCheck) -> Flask:
    app, api = build_app(
        "mailbox_api", "mailappliance Mailbox API",
        "Create, list and delete mail accounts; change passwords. GET /health (no key) reports database reachability.", api_key
    )
    api.add_namespace(mailboxes.namespace(admin), path="/mailboxes")
    _health_route(app, health)
    return app


def create_api_app(services: ApiServices) -> Flask:
    app, api = build_app(
        "queue_api", "mailappliance API",
        "Mail received and queued, delivery records, statistics, mailboxes. GET /health (no key) reports database reachability.",
        services.api_key,
    )
    api.add_namespace(incoming.namespace(services.incoming), path="/incoming-emails")
    api.add_namespace(send_api.namespace(services.sender), path="/send")
    if services.outbound is not None:
        queue = services.outbound.queue
        records = OutboundRecords(queue.c, queue.blobs, queue.lease.total_seconds())
        api.add_namespace(outbound_api.queue_namespace(services.outbound), path="/queue")
        api.add_namespace(emails.namespace(records, queue), path="/emails")
        api.add_namespace(outcomes.successful_namespace(records), path="/successful-emails")
        api.add_namespace(outcomes.bounced_namespace(records), path="/bounced-emails")
        api.add_namespace(stats.email_stats_namespace(records), path="/email-stats")
        api.add_namespace(outbound_api.ip_selection_namespace(services.outbound), path="/ip-selection")
    for listeners in stats.listener_namespaces(services.listener_stats):
        api.add_namespace(listeners, path="/" + listeners.name)
    api.add_namespace(mailboxes.namespace(services.admin), path="/mailboxes")
    _health_route(app, services.health)
    app.register_blueprint(dashboard.blueprint())
    return app
