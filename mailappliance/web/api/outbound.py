"""``/api/queue/stats`` and ``/api/ip-selection/*``: the outbound queue and source-IP choice."""
from __future__ import annotations

from flask import request
from flask_restx import Namespace, Resource, fields

from mailappliance.services.outbound_setup import Outbound
from mailappliance.web.schema import NString


def queue_namespace(outbound: Outbound) -> Namespace:
    ns = Namespace("queue", description="The outbound queue (emails) and its runner")

    @ns.route("/stats")
    class QueueStats(Resource):
        def get(self):
            """Messages per status, due now, records written; this process's runner and webhook counters."""
            return outbound.stats()

    return ns


def ip_selection_namespace(outbound: Outbound) -> Namespace:
    ns = Namespace("ip-selection", description="Source IP selection (IP_SELECTION_API_URL) and its cache")
    service = outbound.ip_selection
    probe = ns.model(
        "IpSelectionTest",
        {
            "emailId": fields.String(example="test"),
            "from": fields.String(required=True, example="sender@example.com"),
            "to": fields.List(fields.String, required=True, example=["someone@example.org"]),
            "domain": fields.String(description="default: the first recipient's domain"),
        },
    )
    answer = ns.model(
        "IpSelection",
        {
            "ip": NString(description="null: the default route"),
            "source": fields.String(enum=["api", "cache", "fallback", "default", "disabled"]),
            "reason": fields.String,
        },
    )

    @ns.route("/stats")
    class Stats(Resource):
        def get(self):
            """Cache size, hits, misses, API calls and failures, fallbacks."""
            return service.stats()

    @ns.route("/clear-cache")
    class ClearCache(Resource):
        def post(self):
            """Forget every cached answer."""
            return {"message": "cache cleared", "cleared": service.clear_cache()}

    @ns.route("/test")
    class Test(Resource):
        @ns.expect(probe)
        @ns.response(200, "The choice that would be made now (the cache is neither read nor filled)", answer)
        @ns.response(400, "Bad request")
        def post(self):
            """Ask the IP selection API what it would choose for a message."""
            body = request.get_json(silent=True)
            if not isinstance(body, dict):
                ns.abort(400, "send a JSON object (Content-Type: application/json)")
            recipients = body.get("to") or []
            if isinstance(recipients, str):
                recipients = [recipients]
            sender = body.get("from")
            if (
                not isinstance(sender, str)
                or not isinstance(recipients, list)
                or not recipients
                or not all(isinstance(r, str) and r for r in recipients)
            ):
                ns.abort(400, 'give "from" (an address) and "to" (a list of addresses)')
            domain = body.get("domain")
            email_id = body.get("emailId")
            if domain is not None and not isinstance(domain, str) or email_id is not None and not isinstance(email_id, str):
                ns.abort(400, '"domain" and "emailId" are strings')
            domain = domain or recipients[0].rsplit("@", 1)[-1]
            return service.select(email_id or "test", sender, recipients, domain, use_cache=False).as_dict()

    return ns
