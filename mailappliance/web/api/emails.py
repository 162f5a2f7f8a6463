"""``/api/emails``: the outbound queue - list, one message with every attempt, its bytes,
manual retry and delete."""
from __future__ import annotations

import logging

from flask import Response, request
from flask_restx import Namespace, Resource, fields, inputs

from mailappliance.services.message_view import view
from mailappliance.storage.incoming import parse_id
from mailappliance.storage.outbound_records import EMAIL_SORTS, EmailQuery, OutboundRecords
from mailappliance.storage.queue import MESSAGE_STATUSES, OutboundQueue
from mailappliance.web.api.outcomes import address_part, record_models
from mailappliance.web.pagination import add_date_range, list_arguments, page_body, page_model, paging_parser
from mailappliance.web.schema import NBoolean, NFloat, NInteger, NNested, NString
from mailappliance.web.serialize import jsonable

log = logging.getLogger("mailappliance.admin")

RECIPIENT_STATUSES = ("queued", "deferred", "sent", "bounced")
RETRY_ANSWERS = {
    "queued": (200, "every recipient not yet delivered is queued again"),
    "scheduled": (200, "the message is being delivered now; it is queued again when that attempt ends"),
    "nothing": (409, "every recipient was delivered; nothing to retry"),
    "busy": (409, "the message changed while retrying; try again"),
}
DELETE_ANSWERS = {
    "deleted": (200, "deleted, and its stored bytes released"),
    "scheduled": (200, "the message is being delivered now; it is deleted when that attempt ends"),
    "busy": (409, "the message changed while deleting; try again"),
}


def namespace(records: OutboundRecords, queue: OutboundQueue) -> Namespace:
    ns = Namespace("emails", description="The outbound queue: messages to deliver to remote servers")
    recipient = ns.model(
        "EmailRecipient",
        {
            "address": fields.String,
            "status": fields.String(enum=list(RECIPIENT_STATUSES)),
            "attempts": fields.Integer,
            "code": NInteger(description="the last SMTP reply code"),
            "enhanced_code": NString,
            "response": NString,
            "mx_host": NString,
            "ip": NString,
            "tls": NBoolean,
            "last_attempt_at": NString(description="ISO 8601"),
            "delivered_at": NString,
            "bounced_at": NString,
            "bounce_type": NString,
            "record_id": NString(description="its successful-emails or bounced-emails record"),
            "ip_blocked": NBoolean(description="the last reply refused the source IP"),
        },
    )
    summary_fields = {
        "id": fields.String(description="24 hex digits"),
        "queue_id": NString(description="the queue id in the SMTP reply that accepted it"),
        "from": NString(description="envelope sender; empty for <>"),
        "to": fields.List(fields.String),
        "subject": NString,
        "message_id": NString,
        "size": fields.Integer(description="bytes"),
        "status": fields.String(enum=list(MESSAGE_STATUSES)),
        "attempts": fields.Integer,
        "next_attempt_at": NString(description="ISO 8601"),
        "last_attempt_at": NString,
        "last_error": NString,
        "created_at": NString,
        "updated_at": NString,
        "source": NString(description="esmtp, esmtpsa, lmtp, api ..."),
        "authenticated_as": NString,
        "client_ip": NString,
        "incoming_id": NString(description="its incoming-emails record"),
        "dsn": NString(enum=["pending", "sent", "none"], description="the bounce report to the sender"),
        "retry_requested": NBoolean,
        "delete_requested": NBoolean,
        "recipients": fields.List(fields.Nested(recipient)),
    }
    summary = ns.model("EmailSummary", summary_fields)
    attempt = ns.model(
        "DeliveryAttempt",
        {
            "at": fields.String(description="ISO 8601"),
            "domain": fields.String,
            "recipients": NInteger(description="how many recipients of this domain were tried"),
            "mx_host": NString,
            "tried": fields.List(fields.String, description="hosts tried, in order"),
            "ip": NString,
            "ip_source": NString,
            "tls": NBoolean,
            "reply": NString,
            "seconds": NFloat,
        },
    )
    attachment = ns.model("EmailAttachment", {"filename": NString, "contentType": fields.String, "size": fields.Integer})
    content = ns.model(
        "EmailContent",
        {
            "available": fields.Boolean(description="false: the stored bytes are gone"),
            "headers": fields.List(fields.List(fields.String), description="[name, decoded value] in order"),
            "text": NString,
            "html": NString,
            "attachments": fields.List(fields.Nested(attachment)),
        },
    )
    successful, bounced = record_models(ns)
    detail = ns.model(
        "EmailDetail",
        {
            **summary_fields,
            "history": fields.List(fields.Nested(attempt), description="every delivery attempt, oldest first"),
            "successful": fields.List(fields.Nested(successful)),
            "bounced": fields.List(fields.Nested(bounced)),
            "message": NNested(content, description="null with content=false"),
        },
    )
    page_shape = page_model(ns, "EmailPage", summary)
    message = ns.model("Message", {"message": fields.String})
    action = ns.model("EmailAction", {"result": fields.String, "message": fields.String})
    parser = paging_parser(ns, default_limit=50)
    parser.add_argument("status", type=str, choices=MESSAGE_STATUSES, location="args")
    parser.add_argument("sender", type=address_part, location="args", help="part of the envelope sender (case-insensitive)")
    parser.add_argument("recipient", type=address_part, location="args", help="part of a recipient address (case-insensitive)")
    add_date_range(parser, "created_at")
    parser.add_argument("sort", type=str, choices=EMAIL_SORTS, default="-created_at", location="args", help="- for descending")

    def found(email_id: str) -> dict:
        oid = parse_id(email_id)
        doc = records.email(oid) if oid else None
        if doc is None:
            ns.abort(404, f"no queued email {email_id}")
            raise AssertionError("abort raises")
        return doc

    def act(email_id: str, operation, answers: dict):
        """Run a queue operation (retry, delete), log it, and answer with its code and message."""
        oid = parse_id(email_id)
        result = operation(oid) if oid else "not found"
        records.changed()
        if result not in answers:
            ns.abort(404, f"no queued email {email_id}")
        log.info("%s: %s requested by API client [%s]: %s", oid, operation.__name__, request.remote_addr, result)
        code, text = answers[result]
        return {"result": result, "message": text}, code

    @ns.route("")
    class EmailCollection(Resource):
        @ns.expect(parser)
        @ns.response(400, "Bad filter, sort or paging value", message)
        @ns.marshal_with(page_shape)
        def get(self):
            """List queued and finished messages (newest first unless sorted otherwise)."""
            args, page, limit, since, until = list_arguments(ns, parser, 50)
            query = EmailQuery(
                status=args.get("status"),
                sender=args.get("sender") or None,
                recipient=args.get("recipient") or None,
                since=since,
                until=until,
                sort=args.get("sort") or "-created_at",
            )
            items, total = records.emails_page(query, page, limit)
            return page_body(jsonable(items), total, page, limit)

    detail_parser = ns.parser()
    detail_parser.add_argument(
        "content", type=inputs.boolean, default=True, location="args",
        help="false: leave out the parsed message (no read of its bytes), e.g. to poll the status",
    )

    @ns.route("/<string:email_id>")
    @ns.param("email_id", "the id (24 hex digits)")
    class EmailItem(Resource):
        @ns.expect(detail_parser)
        @ns.response(400, "Bad content flag", message)
        @ns.response(404, "Not found", message)
        @ns.marshal_with(detail)
        def get(self, email_id):
            """One message: its recipients, every delivery attempt, its records and its content."""
            with_content = detail_parser.parse_args()["content"]
            doc = found(email_id)
            successful_records, bounced_records = records.outcomes_of(doc["_id"])
            content = None
            if with_content:
                raw = records.raw(doc)
                content = {"available": False, "headers": [], "text": None, "html": None, "attachments": []}
                if raw is not None:
                    content = {"available": True, **view(raw)}
            body = jsonable(doc)
            body.update(successful=jsonable(successful_records), bounced=jsonable(bounced_records), message=content)
            body.setdefault("history", [])
            return body

        @ns.response(200, "Deleted or scheduled", action)
        @ns.response(404, "Not found", message)
        @ns.response(409, "Changed meanwhile; try again", action)
        def delete(self, email_id):
            """Delete the message and release its stored bytes (after the attempt in progress, if any)."""
            return act(email_id, queue.delete, DELETE_ANSWERS)

    @ns.route("/<string:email_id>/retry")
    @ns.param("email_id", "the id (24 hex digits)")
    class EmailRetry(Resource):
        @ns.response(200, "Queued again (or scheduled)", action)
        @ns.response(404, "Not found", message)
        @ns.response(409, "Every recipient was delivered, or it changed meanwhile", action)
        def post(self, email_id):
            """Queue again every recipient not yet delivered, with a fresh budget of attempts."""
            return act(email_id, queue.retry, RETRY_ANSWERS)

    @ns.route("/<string:email_id>/raw")
    @ns.param("email_id", "the id (24 hex digits)")
    class EmailRaw(Resource):
        @ns.produces(["message/rfc822", "application/json"])
        @ns.response(200, "The stored bytes (Content-Type: message/rfc822)")
        @ns.response(404, "Not found, or its bytes are gone", message)
        def get(self, email_id):
            """The message exactly as stored for delivery (RFC 5322)."""
            doc = found(email_id)
            raw = records.raw(doc)
            if raw is None:
                ns.abort(404, f"the bytes of email {email_id} are gone")
            return Response(raw, mimetype="message/rfc822")

    return ns
