"""``/api/mailboxes``: the seed's Mailbox Management API."""
from __future__ import annotations

from flask import request
from flask_restx import Namespace, Resource, fields

from mailappliance.services.mailbox_admin import Conflict, Forbidden, InvalidRequest, MailboxAdmin, NotFound
from mailappliance.web.pagination import page_and_limit, paging_parser


def namespace(admin: MailboxAdmin) -> Namespace:
    ns = Namespace("mailboxes", description="Mail accounts: create, list, delete, change password")
    mailbox = ns.model(
        "Mailbox",
        {
            "username": fields.String(description="address, lower-cased", example="user@example.com"),
            "domain": fields.String(example="example.com"),
            "quota": fields.Integer(description="bytes; 0 is unlimited"),
            "usedBytes": fields.Integer(description="bytes stored"),
            "createdAt": fields.String(description="ISO 8601"),
        },
    )
    create = ns.model(
        "MailboxCreate",
        {
            "username": fields.String(required=True, example="user@example.com"),
            "password": fields.String(required=True, min_length=8, example="securepassword"),
            "quota": fields.Integer(required=False, description="bytes; 0 or absent for the default"),
        },
    )
    listing = ns.model(
        "MailboxList",
        {
            "mailboxes": fields.List(fields.Nested(mailbox)),
            "total": fields.Integer,
            "page": fields.Integer,
            "limit": fields.Integer,
        },
    )
    change = ns.model(
        "PasswordChange",
        {
            "oldPassword": fields.String(required=True),
            "newPassword": fields.String(required=True, min_length=8),
        },
    )
    message = ns.model("Message", {"message": fields.String})
    paging = paging_parser(ns, default_limit=100)

    def body() -> dict:
        data = request.get_json(silent=True)
        if isinstance(data, dict):
            return data
        ns.abort(400, "send a JSON object (Content-Type: application/json)")
        raise AssertionError("abort raises")

    def run(fn, *args):
        try:
            return fn(*args)
        except InvalidRequest as exc:
            ns.abort(400, str(exc))
        except NotFound as exc:
            ns.abort(404, str(exc))
        except Conflict as exc:
            ns.abort(409, str(exc))
        except Forbidden as exc:
            ns.abort(403, str(exc))

    @ns.route("")
    class MailboxCollection(Resource):
        @ns.expect(create, validate=False)
        @ns.response(201, "Created", mailbox)
        @ns.response(400, "Bad input", message)
        @ns.response(401, "Missing or wrong API key", message)
        @ns.response(409, "Already exists", message)
        def post(self):
            """Create a mailbox with INBOX, Sent, Drafts, Trash and Junk."""
            data = body()
            return run(admin.create, data.get("username"), data.get("password"), data.get("quota")), 201

        @ns.expect(paging)
        @ns.marshal_with(listing)
        def get(self):
            """List mailboxes, sorted by address."""
            args = paging.parse_args()
            page, limit = page_and_limit(args, 100)
            items, total = admin.list(page, limit)
            return {"mailboxes": items, "total": total, "page": page, "limit": limit}

    @ns.route("/<string:address>")
    @ns.param("address", "the mailbox address")
    class MailboxItem(Resource):
        @ns.response(200, "Found", mailbox)
        @ns.response(400, "Not an address", message)
        @ns.response(404, "No such mailbox", message)
        def get(self, address):
            """Show one mailbox."""
            return run(admin.get, address)

        @ns.response(200, "Deleted", message)
        @ns.response(400, "Not an address", message)
        @ns.response(404, "No such mailbox", message)
        def delete(self, address):
            """Delete a mailbox with all its folders and messages."""
            run(admin.delete, address)
            return {"message": f"mailbox {address.lower()} deleted"}

    @ns.route("/<string:address>/change-password")
    @ns.param("address", "the mailbox address")
    class ChangePassword(Resource):
        @ns.expect(change, validate=False)
        @ns.response(200, "Changed", message)
        @ns.response(400, "Bad input", message)
        @ns.response(403, "oldPassword is wrong", message)
        @ns.response(404, "No such mailbox", message)
        def post(self, address):
            """Change a mailbox's password (needs the old one)."""
            data = body()
            run(admin.change_password, address, data.get("oldPassword"), data.get("newPassword"))
            return {"message": "password changed"}

    return ns
