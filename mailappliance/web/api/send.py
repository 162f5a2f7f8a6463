"""``POST /api/send``: queue a message from JSON (policy in :mod:`mailappliance.services.sending`
and :mod:`mailappliance.services.compose`)."""
from __future__ import annotations

import json
from typing import Optional

from flask import request
from flask_restx import Namespace, Resource, fields

from mailappliance.protocol.envelope import Peer
from mailappliance.services.compose import ComposeError
from mailappliance.services.sending import MessageSender, SendRefused
from mailappliance.web.schema import NString

DESCRIPTION = """Compose a message and send it: local recipients get it in their INBOX, others through the outbound queue.

Policy: `from` is one address at a local domain of this appliance (ALLOWED_DOMAINS, or the domains of
existing mailboxes); at least one recipient in `to`, `cc` or `bcc`, at most SMTP_MAX_RECIPIENTS distinct
ones; every address must be valid (RFC 5321 §4.1.2); a local-domain recipient must have a mailbox. `bcc`
recipients get the message but are not in its header (RFC 5322 §3.6.3). Date, Message-ID (at
SMTP_HOSTNAME) and MIME-Version are generated; `headers` may add other fields but not From, Sender, To,
Cc, Bcc, Reply-To, Subject, Date, Message-ID, MIME-Version, Content-*, Resent-*, Received, Return-Path
or DKIM-Signature, and no name or value may hold CR, LF or other control characters. The finished
message is at most MAX_EMAIL_SIZE bytes. Queued mail is DKIM-signed when it is delivered, like mail
submitted over SMTP; the `incoming-emails` record has `source: "api"`."""


class StringMap(fields.Raw):
    """A JSON object whose values are strings (Swagger 2.0 ``additionalProperties``)."""

    __schema_type__ = "object"

    def schema(self):
        schema = super().schema()
        schema["additionalProperties"] = {"type": "string"}
        return schema


def namespace(sender: Optional[MessageSender]) -> Namespace:
    ns = Namespace("send", description="Send a message composed from JSON")
    address_doc = 'addresses: "addr@example.com" or "Name <addr@example.com>"; a single string, or an object {"name", "address"}, is accepted too'
    attachment = ns.model(
        "SendAttachment",
        {
            "filename": fields.String(required=True, example="report.pdf", description="no path separators; non-ASCII is sent per RFC 2231"),
            "contentType": fields.String(example="application/pdf", description="type/subtype; default application/octet-stream; not multipart/* or message/*"),
            "content": fields.String(required=True, example="JVBERi0xLjQK", description="the bytes, base64 (RFC 4648 §4)"),
        },
    )
    send_request = ns.model(
        "SendRequest",
        {
            "from": fields.String(required=True, example="Shop <noreply@example.com>", description="one address at a local domain"),
            "to": fields.List(fields.String, example=["Ann <ann@example.com>", "bob@example.org"], description=address_doc),
            "cc": fields.List(fields.String, example=[], description=address_doc),
            "bcc": fields.List(fields.String, example=[], description="envelope only, never in the header; " + address_doc),
            "replyTo": fields.List(fields.String, example=[], description="the Reply-To field; " + address_doc),
            "subject": fields.String(example="Your order", description="UTF-8; sent as RFC 2047 encoded words when not ASCII"),
            "text": fields.String(example="Thank you for your order.", description="text/plain body"),
            "html": fields.String(example="<p>Thank you for your order.</p>", description="text/html body; with text, multipart/alternative"),
            "attachments": fields.List(fields.Nested(attachment)),
            "headers": StringMap(example={"X-Campaign": "spring"}, description="extra header fields, name: value"),
        },
    )
    send_result = ns.model(
        "SendResult",
        {
            "id": fields.String(description="the incoming-emails record (GET /api/incoming-emails/<id>)", example="6763a2f0c1d2e3f4a5b6c7d8"),
            "queue_id": fields.String(description="the id in the Received header and the log (same as id)"),
            "message_id": fields.String(example="<5f1c...@mx.example.com>", description="the generated Message-ID"),
            "email_id": NString(description="the outbound queue document (GET /api/emails/<id>); null when nothing was queued"),
            "local": fields.List(fields.String, description="recipients whose mailbox here has the message"),
            "queued": fields.List(fields.String, description="recipients queued for delivery elsewhere"),
            "refused": fields.List(
                fields.Nested(ns.model("SendRefusal", {"address": fields.String, "reason": fields.String})),
                description="recipients that lost a race with a quota or a mailbox deletion after they were checked (normally empty)",
            ),
        },
    )
    message = ns.model("SendError", {"message": fields.String})

    @ns.route("")
    class Send(Resource):
        @ns.doc(description=DESCRIPTION)
        @ns.expect(send_request, validate=False)
        @ns.response(202, "Accepted: stored and/or queued", send_result)
        @ns.response(400, "The request is wrong, or a local recipient has no mailbox", message)
        @ns.response(401, "Missing or wrong API key", message)
        @ns.response(413, "The message (or the request body) is too large", message)
        @ns.response(503, "The database is unavailable or the message was not stored; try again", message)
        @ns.response(507, "A local recipient's mailbox is over its quota", message)
        def post(self):
            """Send a message."""
            if sender is None:
                return {"message": "sending is not available in this process"}, 503
            limit = sender.max_request_bytes
            if request.content_length is not None and request.content_length > limit:
                return {"message": f"the request body is over {limit} bytes"}, 413
            body = request.stream.read(limit + 1)
            if len(body) > limit:
                return {"message": f"the request body is over {limit} bytes"}, 413
            try:
                payload = json.loads(body)
            except (ValueError, RecursionError):
                return {"message": "the request body must be a JSON object"}, 400
            environ = request.environ
            client = Peer(request.remote_addr or "unknown", _port(environ.get("REMOTE_PORT")), _port(environ.get("SERVER_PORT")))
            try:
                result = sender.send(payload, client, tls=request.is_secure)
            except (ComposeError, SendRefused) as refused:
                return {"message": refused.message}, refused.status
            return result.as_dict(), 202

    return ns


def _port(value: object) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0
