"""``/api/successful-emails`` and ``/api/bounced-emails``: one record per recipient
delivered or bounced (``successful_emails``, ``bounced_emails``), newest first."""
from __future__ import annotations

from typing import Callable

from flask_restx import Model, Namespace, Resource, fields

from mailappliance.services.bounces import HARD, PERMANENT, SOFT, TRANSIENT
from mailappliance.storage.incoming import parse_id
from mailappliance.storage.outbound_records import OutboundRecords, RecordQuery
from mailappliance.web.pagination import add_date_range, list_arguments, page_body, page_model, paging_parser
from mailappliance.web.schema import NBoolean, NInteger, NString
from mailappliance.web.serialize import jsonable

BOUNCE_TYPES = (HARD, SOFT, TRANSIENT, PERMANENT)
ADDRESS_FILTER_MAX = 320  # longer than any address (RFC 5321 §4.5.3.1: 64 + 1 + 255)


def address_part(value: str) -> str:
    text = str(value).strip()
    if len(text) > ADDRESS_FILTER_MAX:
        raise ValueError(f"must be at most {ADDRESS_FILTER_MAX} characters")
    return text


address_part.__schema__ = {"type": "string", "maxLength": ADDRESS_FILTER_MAX}  # type: ignore[attr-defined]


def record_models(ns: Namespace) -> tuple[Model, Model]:
    """The ``SuccessfulEmail`` and ``BouncedEmail`` models (also nested in ``EmailDetail``)."""
    common = {
        "id": fields.String(description="24 hex digits"),
        "email_id": fields.String(description="the queued message (GET /api/emails/{id})"),
        "queue_id": NString,
        "message_id": NString(description="the Message-ID header"),
        "from": NString(description="envelope sender; empty for <>"),
        "recipient": fields.String,
        "status": fields.String(enum=["sent", "bounced"]),
        "code": NInteger(description="SMTP reply code"),
        "enhanced_code": NString(description="RFC 3463 enhanced status code"),
        "response": NString(description="the reply text"),
        "mx_host": NString,
        "mx_address": NString,
        "ip": NString(description="the source IP used; null for the default route"),
        "ip_source": NString(enum=["api", "cache", "fallback", "default", "disabled"]),
        "tls": NBoolean,
        "attempts": NInteger,
        "runner": NString(description="the queue runner that made the attempt"),
    }
    successful = ns.model("SuccessfulEmail", {**common, "delivered_at": fields.String(description="ISO 8601")})
    bounced = ns.model(
        "BouncedEmail",
        {
            **common,
            "bounced_at": fields.String(description="ISO 8601"),
            "bounce_type": fields.String(enum=list(BOUNCE_TYPES)),
            "reason": NString,
        },
    )
    return successful, bounced


def _record_namespace(
    name: str,
    description: str,
    model_index: int,
    page: Callable[[RecordQuery, int, int], tuple[list[dict], int]],
    one: Callable,
    bounced: bool,
) -> Namespace:
    ns = Namespace(name, description=description)
    record = record_models(ns)[model_index]
    page_shape = page_model(ns, record.name + "Page", record)
    message = ns.model("Message", {"message": fields.String})
    parser = paging_parser(ns, default_limit=50)
    parser.add_argument("recipient", type=address_part, location="args", help="part of the address (case-insensitive), e.g. a domain")
    if bounced:
        parser.add_argument("bounce_type", type=str, choices=BOUNCE_TYPES, location="args")
    add_date_range(parser, "bounced_at" if bounced else "delivered_at")

    @ns.route("")
    class Collection(Resource):
        @ns.expect(parser)
        @ns.response(400, "Bad filter or paging value", message)
        @ns.marshal_with(page_shape)
        def get(self):
            """List records, newest first."""
            args, page_no, limit, since, until = list_arguments(ns, parser, 50)
            query = RecordQuery(
                recipient=args.get("recipient") or None, bounce_type=args.get("bounce_type"), since=since, until=until
            )
            items, total = page(query, page_no, limit)
            return page_body(jsonable(items), total, page_no, limit)

    @ns.route("/<string:record_id>")
    @ns.param("record_id", "the record id (24 hex digits)")
    class Item(Resource):
        @ns.response(404, "Not found", message)
        @ns.marshal_with(record)
        def get(self, record_id):
            """One record."""
            oid = parse_id(record_id)
            doc = one(oid) if oid else None
            if doc is None:
                ns.abort(404, f"no {name[:-1].replace('-', ' ')} record {record_id}")
            return jsonable(doc)

    return ns


def successful_namespace(records: OutboundRecords) -> Namespace:
    return _record_namespace(
        "successful-emails", "Deliveries: one record per recipient a remote server accepted",
        0, records.successful_page, records.successful_record, bounced=False,
    )


def bounced_namespace(records: OutboundRecords) -> Namespace:
    return _record_namespace(
        "bounced-emails", "Bounces: one record per recipient that will not be delivered",
        1, records.bounced_page, records.bounced_record, bounced=True,
    )
