"""``/api/email-stats`` and ``/api/{smtp,lmtp,imap}/stats``: the numbers the dashboard polls."""
from __future__ import annotations

from datetime import datetime, timezone

from flask_restx import Namespace, Resource, fields

from mailappliance.storage.outbound_records import STATS_MINUTES, OutboundRecords
from mailappliance.storage.queue import MESSAGE_STATUSES
from mailappliance.web.schema import NString
from mailappliance.web.serialize import jsonable

# ServerStats counters summed over the ports of one protocol.
COUNTERS = (
    "current_connections",
    "total_connections",
    "rejected_connections",
    "tls_sessions",
    "messages_accepted",
    "messages_rejected",
    "bytes_received",
    "auth_failures",
    "errors",
)
PROTOCOLS = ("smtp", "lmtp", "imap")


def email_stats_namespace(records: OutboundRecords) -> Namespace:
    ns = Namespace("email-stats", description="Queue and delivery numbers, the last 24 hours and the last hour by minute")
    queue = ns.model(
        "QueueCounts",
        {**{s: fields.Integer for s in MESSAGE_STATUSES}, "due": fields.Integer(description="queued or deferred, due now"), "total": fields.Integer},
    )
    record_counts = ns.model(
        "RecordCounts",
        {"incoming": fields.Integer, "successful": fields.Integer, "bounced": fields.Integer},
    )
    day = ns.model(
        "LastDay",
        {
            "received": fields.Integer(description="incoming emails (SMTP, LMTP and POST /api/send)"),
            "delivered": fields.Integer(description="recipients a remote server accepted"),
            "bounced": fields.Integer(description="recipients bounced"),
        },
    )
    minute = ns.model(
        "MinuteCounts",
        {
            "minute": fields.String(description="start of the minute, ISO 8601 UTC"),
            "received": fields.Integer,
            "delivered": fields.Integer,
            "bounced": fields.Integer,
        },
    )
    stats = ns.model(
        "EmailStats",
        {
            "queue": fields.Nested(queue),
            "records": fields.Nested(record_counts),
            "last_24h": fields.Nested(day),
            "per_minute": fields.List(
                fields.Nested(minute), description=f"the last {STATS_MINUTES} minutes, oldest first, every minute present"
            ),
            "bounce_types": fields.Raw(
                description="bounced recipients of the last 24 hours by type (hard, soft, transient, permanent)",
                example={"hard": 2, "soft": 1},
            ),
            "generated_at": fields.String(description="ISO 8601"),
        },
    )

    @ns.route("")
    class EmailStats(Resource):
        @ns.marshal_with(stats)
        def get(self):
            """Counts per queue status, records kept, the last 24 hours and a per-minute series."""
            return jsonable(records.stats())

    return ns


def listener_namespaces(listener_stats) -> list[Namespace]:
    """One namespace per protocol: ``/api/smtp/stats``, ``/api/lmtp/stats``, ``/api/imap/stats``."""
    return [_listener_namespace(protocol, listener_stats) for protocol in PROTOCOLS]


def _with_iso_start(listener: dict) -> dict:
    row = dict(listener)
    if isinstance(row.get("started_at"), (int, float)):
        row["started_at"] = datetime.fromtimestamp(row["started_at"], timezone.utc).isoformat()
    return row


def _listener_namespace(protocol: str, listener_stats) -> Namespace:
    ns = Namespace(protocol, description=f"{protocol.upper()} listeners: connections and messages per port")
    port = ns.model(
        "ListenerStats",
        {
            "name": fields.String(example="submission"),
            "protocol": fields.String(enum=list(PROTOCOLS)),
            "port": fields.Integer,
            "tls": fields.String(enum=["implicit", "starttls", "none"]),
            **{c: fields.Integer for c in COUNTERS},
            "started_at": fields.String(description="when the listener started (ISO 8601)"),
            "instance": NString(description="host:pid of the appliance process (when served by gunicorn)"),
        },
    )
    totals = ns.model("ListenerTotals", {c: fields.Integer for c in COUNTERS})
    answer = ns.model(
        "ProtocolStats",
        {"protocol": fields.String(enum=list(PROTOCOLS)), "ports": fields.List(fields.Nested(port)), "totals": fields.Nested(totals)},
    )

    @ns.route("/stats")
    class ProtocolStats(Resource):
        @ns.marshal_with(answer)
        def get(self):
            """Per port: current and total connections, messages accepted and rejected, bytes,
            TLS sessions, authentication failures, errors; and their sums."""
            ports = [_with_iso_start(p) for p in listener_stats() if p.get("protocol") == protocol]
            sums = {c: sum(int(p.get(c) or 0) for p in ports) for c in COUNTERS}
            return {"protocol": protocol, "ports": ports, "totals": sums}

    ProtocolStats.__doc__ = f"{protocol.upper()} listener statistics"
    return ns
