"""``/api/incoming-emails``: messages received over SMTP and LMTP."""
from __future__ import annotations

import logging

from flask import request
from flask_restx import Namespace, Resource, fields

from mailappliance.storage.incoming import IncomingStore, parse_id
from mailappliance.web.schema import NBoolean, NInteger, NString
from mailappliance.web.pagination import page_and_limit, page_body, page_model, paging_parser
from mailappliance.web.serialize import jsonable

log = logging.getLogger("mailappliance.admin")


def namespace(store: IncomingStore) -> Namespace:
    ns = Namespace("incoming-emails", description="Mail received over SMTP and LMTP or sent with POST /api/send (newest first)")
    attachment = ns.model(
        "Attachment", {"filename": NString, "contentType": fields.String, "size": fields.Integer}
    )
    incoming = ns.model(
        "IncomingEmail",
        {
            "id": fields.String(description="also the queue id in the SMTP reply"),
            "queue_id": fields.String,
            "sender": fields.String(description="envelope sender; empty for <>"),
            "recipients": fields.List(fields.String),
            "local_recipients": fields.List(fields.String),
            "relayed_recipients": fields.List(fields.String),
            "source": fields.String(enum=["smtp", "lmtp", "api"], description="api: POST /api/send"),
            "role": fields.String(enum=["mx", "submission", "submissions", "lmtp", "api"], description="the port role that received it (api: POST /api/send)"),
            "protocol": fields.String(example="ESMTPS"),
            "helo": NString,
            "remote_address": NString,
            "remote_port": NInteger,
            "local_port": NInteger,
            "tls": NBoolean,
            "authenticated_as": NString(description="null unless the client authenticated"),
            "message_id": NString,
            "subject": NString,
            "from_header": NString,
            "size": fields.Integer,
            "attachments": fields.List(fields.Nested(attachment)),
            "received_at": fields.String(description="ISO 8601"),
            "status": fields.String(enum=["stored", "queued", "stored+queued"]),
        },
    )
    page_shape = page_model(ns, "IncomingEmailPage", incoming)
    message = ns.model("IncomingMessage", {"message": fields.String})
    paging = paging_parser(ns, default_limit=50)
    paging.add_argument("source", type=str, choices=("smtp", "lmtp", "api"), location="args")
    paging.add_argument("role", type=str, choices=("mx", "submission", "submissions", "lmtp", "api"), location="args")

    @ns.route("")
    class IncomingCollection(Resource):
        @ns.expect(paging)
        @ns.response(400, "Bad filter or paging value", message)
        @ns.marshal_with(page_shape)
        def get(self):
            """List received messages, newest first."""
            args = paging.parse_args()
            page, limit = page_and_limit(args, 50)
            filters = {key: args[key] for key in ("source", "role") if args.get(key)} or None
            items, total = store.page(page, limit, filters)
            return page_body(jsonable(items), total, page, limit)

    @ns.route("/<string:email_id>")
    @ns.param("email_id", "the id (24 hex digits)")
    class IncomingItem(Resource):
        @ns.response(200, "Found", incoming)
        @ns.response(404, "Not found", message)
        def get(self, email_id):
            """One received message's details."""
            oid = parse_id(email_id)
            doc = store.get(oid) if oid else None
            if doc is None:
                ns.abort(404, f"no incoming email {email_id}")
            return jsonable(doc)

        @ns.response(200, "Deleted", message)
        @ns.response(404, "Not found", message)
        def delete(self, email_id):
            """Delete the record (the stored mailbox copies stay)."""
            oid = parse_id(email_id)
            if oid is None or not store.delete(oid):
                ns.abort(404, f"no incoming email {email_id}")
            log.info("%s: incoming record deleted by API client [%s]", oid, request.remote_addr)
            return {"message": f"incoming email {email_id} deleted"}

    return ns
