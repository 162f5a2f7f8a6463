"""``/api/successful-emails`` and ``/api/bounced-emails``: the records the attempts wrote."""
from datetime import datetime, timezone
from urllib.parse import quote

import pytest
from bson import ObjectId

from tests.web.outbound_helpers import OK, attempt, call, queue, relay  # noqa: F401 (queue is a fixture)


def records(app, path):
    status, body, _ = call(app, path)
    assert status == 200, body
    return body


def test_successful_records_newest_first_with_filters(queue):
    body = records(queue, "/api/successful-emails")
    # Both were delivered by one attempt (the same second): any order.
    assert sorted(r["recipient"] for r in body["emails"]) == ["a@accept.test", "b@accept.test"]
    assert (body["total"], body["page"], body["limit"], body["pages"]) == (2, 1, 50, 1)
    first = body["emails"][0]
    assert first["status"] == "sent" and first["code"] == 250 and first["enhanced_code"] == "2.0.0"
    assert first["mx_host"] == "mx.accept.test" and first["mx_address"] == "127.0.0.2" and first["tls"] is True
    assert first["ip"] is None and first["ip_source"] == "default" and first["attempts"] == 1 and first["delivered_at"]
    assert first["email_id"] in (queue.ids["one"], queue.ids["two"])
    assert records(queue, "/api/successful-emails?recipient=A@ACCEPT")["total"] == 1
    assert records(queue, "/api/successful-emails?recipient=other.test")["total"] == 0
    page2 = records(queue, "/api/successful-emails?limit=1&page=2")
    assert len(page2["emails"]) == 1 and page2["pages"] == 2 and page2["emails"][0]["id"] != first["id"]

    # Later deliveries come first; the time range is the delivery time.
    cut = quote(datetime.now(timezone.utc).isoformat())
    relay(queue, ["g@accept.test"], "six")
    attempt(queue, {"g@accept.test": OK})
    body = records(queue, "/api/successful-emails")
    assert body["total"] == 3 and body["emails"][0]["recipient"] == "g@accept.test"
    assert [r["recipient"] for r in records(queue, f"/api/successful-emails?since={cut}")["emails"]] == ["g@accept.test"]
    before = records(queue, f"/api/successful-emails?until={cut}")
    assert before["total"] == 2 and "g@accept.test" not in [r["recipient"] for r in before["emails"]]
    assert records(queue, "/api/successful-emails?since=2001-01-01&until=2001-02-01")["total"] == 0


def test_bounced_records_with_type_filter(queue):
    body = records(queue, "/api/bounced-emails")
    assert body["total"] == 2
    by_recipient = {r["recipient"]: r for r in body["emails"]}
    assert by_recipient["c@other.test"]["bounce_type"] == "hard" and by_recipient["d@other.test"]["bounce_type"] == "soft"
    assert by_recipient["c@other.test"]["code"] == 550 and by_recipient["c@other.test"]["reason"].startswith("550 5.1.1")
    assert by_recipient["d@other.test"]["from"] == "other@example.com" and by_recipient["d@other.test"]["bounced_at"]
    hard = records(queue, "/api/bounced-emails?bounce_type=hard")
    assert [r["recipient"] for r in hard["emails"]] == ["c@other.test"] and hard["total"] == 1
    assert records(queue, "/api/bounced-emails?bounce_type=transient")["total"] == 0
    assert records(queue, "/api/bounced-emails?recipient=d@&bounce_type=soft")["total"] == 1
    assert records(queue, "/api/bounced-emails?since=2999-01-01")["total"] == 0
    assert records(queue, "/api/bounced-emails?since=1970-01-01T00:00:00Z")["total"] == 2


@pytest.mark.parametrize("kind", ["successful-emails", "bounced-emails"])
def test_one_record_and_404(queue, kind):
    listed = records(queue, f"/api/{kind}?limit=1")["emails"][0]
    status, one, _ = call(queue, f"/api/{kind}/{listed['id']}")
    assert status == 200 and one == listed
    for record_id in (str(ObjectId()), "nope", queue.ids["one"]):
        status, body, _ = call(queue, f"/api/{kind}/{record_id}")
        assert status == 404 and body["message"]


@pytest.mark.parametrize("kind", ["successful-emails", "bounced-emails"])
@pytest.mark.parametrize(
    "query, field",
    [("since=last-week", "since"), ("until=2024-02-30", "until"), ("page=0", "page"), ("limit=abc", "limit"),
     ("recipient=" + "y" * 321, "recipient")],
)
def test_bad_input_is_400(appliance, kind, query, field):
    status, body, _ = call(appliance, f"/api/{kind}?{query}")
    assert status == 400 and field in body["errors"], body


def test_bad_bounce_type_and_reversed_range(appliance):
    status, body, _ = call(appliance, "/api/bounced-emails?bounce_type=squishy")
    assert status == 400 and "bounce_type" in body["errors"]
    status, body, _ = call(appliance, "/api/successful-emails?since=2024-01-02&until=2024-01-01")
    assert status == 400 and "later than until" in body["message"]


@pytest.mark.parametrize("path", ["/api/successful-emails", "/api/bounced-emails", f"/api/successful-emails/{ObjectId()}",
                                  f"/api/bounced-emails/{ObjectId()}"])
def test_key_required(appliance, path):
    status, body, _ = call(appliance, path, key=None)
    assert status == 401 and "API key" in body["message"]
