"""``/api/emails`` on API_PORT over real HTTP: the queue as the runner leaves it (messages
relayed over SMTP, attempts finished by ``OutboundQueue.finish``)."""
from urllib.parse import quote

import pytest
from bson import ObjectId

from tests.web.outbound_helpers import OK, SENDER, attempt, call, queue  # noqa: F401 (queue is a fixture)


def subjects(app, query=""):
    status, body, _ = call(app, "/api/emails" + query)
    assert status == 200, body
    return [e["subject"] for e in body["emails"]], body


def test_list_pages_newest_first_with_totals(queue):
    names, body = subjects(queue)
    assert names == ["five", "four", "three", "two", "one"]
    assert (body["total"], body["page"], body["limit"], body["pages"]) == (5, 1, 50, 1)
    names, body = subjects(queue, "?limit=2&page=2")
    assert names == ["three", "two"] and body["pages"] == 3 and body["total"] == 5
    assert subjects(queue, "?limit=2&page=3")[0] == ["one"]
    assert subjects(queue, "?limit=2&page=4")[0] == []
    first = subjects(queue, "?limit=1")[1]["emails"][0]
    assert first["status"] == "queued" and first["from"] == SENDER and first["to"] == ["f@accept.test"]
    assert first["recipients"] == [
        {"address": "f@accept.test", "status": "queued", "attempts": 0, "code": None, "enhanced_code": None, "response": None,
         "mx_host": None, "ip": None, "tls": None, "last_attempt_at": None, "delivered_at": None, "bounced_at": None,
         "bounce_type": None, "record_id": None, "ip_blocked": None}
    ]
    assert "history" not in first and "lease" not in first and first["source"] == "esmtp"


def test_filters(queue):
    assert subjects(queue, "?status=partial")[0] == ["two"]
    assert subjects(queue, "?status=deferred")[0] == ["four"]
    assert subjects(queue, "?status=sending")[1]["total"] == 0
    assert subjects(queue, "?sender=OTHER@example.com")[0] == ["three"]
    assert subjects(queue, f"?sender={quote(SENDER)}")[1]["total"] == 4
    assert subjects(queue, "?recipient=other.test")[0] == ["three", "two"]
    assert subjects(queue, "?recipient=B@Accept.Test")[0] == ["two"]
    assert subjects(queue, "?recipient=nobody.test")[1]["total"] == 0
    assert subjects(queue, "?recipient=a.b*c(")[1]["total"] == 0, "regex characters are literal"
    three = queue.created["three"].isoformat().replace("+00:00", "Z")
    names, body = subjects(queue, f"?since={quote(three)}")
    assert names == ["five", "four", "three"] and body["total"] == 3
    names, body = subjects(queue, f"?until={quote(three)}")
    assert names == ["two", "one"] and body["total"] == 2
    names, body = subjects(queue, f"?since={quote(three)}&until={quote(queue.created['five'].isoformat())}&limit=1&page=2")
    assert names == ["three"] and body["total"] == 2
    assert subjects(queue, "?since=2000-01-01&until=2000-01-02")[1]["total"] == 0
    assert subjects(queue, "?status=deferred&recipient=accept.test&sender=sender")[0] == ["four"]


def test_sort(queue):
    assert subjects(queue, "?sort=created_at")[0] == ["one", "two", "three", "four", "five"]
    assert subjects(queue, "?sort=created_at&limit=2&page=2")[0] == ["three", "four"]
    by_update = subjects(queue, "?sort=-updated_at")[0]
    assert by_update[0] == "five" and set(by_update[1:]) == {"one", "two", "three", "four"}
    assert subjects(queue, "?sort=updated_at")[0] == list(reversed(by_update))
    assert subjects(queue, "?sort=-next_attempt_at")[0][0] in ("five", "four")


@pytest.mark.parametrize(
    "query, field",
    [
        ("status=lost", "status"),
        ("sort=subject", "sort"),
        ("since=yesterday", "since"),
        ("until=2024-13-01", "until"),
        ("page=0", "page"),
        ("page=99999999999", "page"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("sender=" + "x" * 400, "sender"),
    ],
)
def test_bad_input_is_400_with_a_message(appliance, query, field):
    status, body, _ = call(appliance, "/api/emails?" + query)
    assert status == 400, body
    assert field in body["errors"] and body["message"]


def test_since_after_until_is_400(appliance):
    status, body, _ = call(appliance, "/api/emails?since=2024-02-01&until=2024-01-01")
    assert status == 400 and "later than until" in body["message"]


def test_detail_with_history_records_and_content(queue):
    status, two, _ = call(queue, f"/api/emails/{queue.ids['two']}")
    assert status == 200
    assert two["status"] == "partial" and two["attempts"] == 1 and two["subject"] == "two"
    assert sorted(h["domain"] for h in two["history"]) == ["accept.test", "other.test"]
    other = next(h for h in two["history"] if h["domain"] == "other.test")
    assert other["mx_host"] == "mx.other.test" and other["reply"].startswith("550 5.1.1") and other["tls"] is True
    assert [r["recipient"] for r in two["successful"]] == ["b@accept.test"]
    assert two["successful"][0]["code"] == 250 and two["successful"][0]["email_id"] == queue.ids["two"]
    assert [(r["recipient"], r["bounce_type"]) for r in two["bounced"]] == [("c@other.test", "hard")]
    by_address = {r["address"]: r for r in two["recipients"]}
    assert by_address["b@accept.test"]["record_id"] == two["successful"][0]["id"]
    assert by_address["c@other.test"]["status"] == "bounced" and by_address["c@other.test"]["code"] == 550
    assert two["last_error"] == "550 5.1.1 <x>: Recipient address rejected: User unknown"  # with its RFC 3463 code, once
    content = two["message"]
    assert content["available"] is True
    assert ["Subject", "two"] in content["headers"] and content["headers"][0][0] == "Received"
    assert content["text"].replace("\r\n", "\n") == "Hi there.\n" and content["html"] is None and content["attachments"] == []

    status, five, _ = call(queue, f"/api/emails/{queue.ids['five']}")
    assert status == 200 and five["history"] == [] and five["successful"] == [] and five["bounced"] == []
    assert five["message"]["text"].strip() == "Plain café" and five["message"]["html"].strip() == "<p>Rich</p>"
    assert five["message"]["attachments"] == [{"filename": "report.pdf", "contentType": "application/pdf", "size": 9}]

    # content=false: the same answer without the parsed message (the dashboard polls this way).
    status, light, _ = call(queue, f"/api/emails/{queue.ids['two']}?content=false")
    assert status == 200 and light["message"] is None
    assert {k: v for k, v in light.items() if k != "message"} == {k: v for k, v in two.items() if k != "message"}
    assert call(queue, f"/api/emails/{queue.ids['two']}?content=perhaps")[0] == 400


def test_raw_bytes(queue):
    status, raw, headers = call(queue, f"/api/emails/{queue.ids['one']}/raw")
    assert status == 200 and headers["Content-Type"] == "message/rfc822"
    doc = queue.stores.collections.outgoing.find_one({"_id": ObjectId(queue.ids["one"])})
    assert raw == queue.stores.blobs.read(doc["blob"], doc["size"]) and b"Subject: one\r\n" in raw


@pytest.mark.parametrize("suffix, method", [("", "GET"), ("/raw", "GET"), ("/retry", "POST"), ("", "DELETE")])
def test_unknown_and_malformed_ids_are_404(queue, suffix, method):
    for email_id in (str(ObjectId()), "not-an-id", "0" * 25, queue.ids["one"][:-1] + "g"):
        status, body, _ = call(queue, f"/api/emails/{email_id}{suffix}", method)
        assert status == 404 and body["message"], (email_id, body)


@pytest.mark.parametrize(
    "path, method",
    [("/api/emails", "GET"), ("/api/emails/{one}", "GET"), ("/api/emails/{one}/raw", "GET"),
     ("/api/emails/{one}/retry", "POST"), ("/api/emails/{one}", "DELETE")],
)
def test_key_required(queue, path, method):
    url = path.format(one=queue.ids["one"])
    for key in (None, "wrong-key"):
        status, body, _ = call(queue, url, method, key=key)
        assert status == 401 and "API key" in body["message"]
    assert call(queue, url + ("&" if "?" in url else "?") + "api_key=test-api-key-0123456789", method)[0] != 401
    assert queue.stores.collections.outgoing.count_documents({}) in (4, 5)


def test_retry(queue):
    outgoing = queue.stores.collections.outgoing
    status, body, _ = call(queue, f"/api/emails/{queue.ids['three']}/retry", "POST")
    assert (status, body["result"]) == (200, "queued") and body["message"]
    three = outgoing.find_one({"_id": ObjectId(queue.ids["three"])})
    assert three["status"] == "queued" and three["attempts"] == 0 and len(three["history"]) == 1
    assert [(r["status"], r["attempts"]) for r in three["recipients"]] == [("queued", 0)]
    assert three["next_attempt_at"] <= three["updated_at"]

    status, body, _ = call(queue, f"/api/emails/{queue.ids['two']}/retry", "POST")
    assert (status, body["result"]) == (200, "queued")
    two = outgoing.find_one({"_id": ObjectId(queue.ids["two"])})
    assert {r["address"]: r["status"] for r in two["recipients"]} == {"b@accept.test": "sent", "c@other.test": "queued"}

    status, body, _ = call(queue, f"/api/emails/{queue.ids['one']}/retry", "POST")
    assert (status, body["result"]) == (409, "nothing")
    assert outgoing.find_one({"_id": ObjectId(queue.ids["one"])})["status"] == "sent"

    # The requeued message is delivered by the next attempt, like any other.
    attempt(queue, {"d@other.test": OK, "c@other.test": OK, "e@accept.test": OK, "f@accept.test": OK})
    assert outgoing.find_one({"_id": ObjectId(queue.ids["three"])})["status"] == "sent"
    assert call(queue, f"/api/emails/{queue.ids['three']}")[1]["history"][-1]["reply"].startswith("250")


def test_retry_and_delete_while_sending_are_scheduled(queue):
    outgoing = queue.stores.collections.outgoing
    claimed = queue.outbound.queue.claim(10, "busy-runner")
    assert {str(d["_id"]) for d in claimed} == {queue.ids["four"], queue.ids["five"]}
    status, body, _ = call(queue, f"/api/emails/{queue.ids['four']}/retry", "POST")
    assert (status, body["result"]) == (200, "scheduled")
    status, body, _ = call(queue, f"/api/emails/{queue.ids['five']}", "DELETE")
    assert (status, body["result"]) == (200, "scheduled")
    five = outgoing.find_one({"_id": ObjectId(queue.ids["five"])})
    assert five["status"] == "sending" and five["delete_requested"] is True
    assert call(queue, f"/api/emails/{queue.ids['five']}")[1]["delete_requested"] is True


def test_delete_releases_the_bytes(queue):
    c = queue.stores.collections
    doc = c.outgoing.find_one({"_id": ObjectId(queue.ids["five"])})
    assert c.raw.find_one({"_id": f"{doc['blob']}/0"}) is not None
    status, body, _ = call(queue, f"/api/emails/{queue.ids['five']}", "DELETE")
    assert (status, body["result"]) == (200, "deleted")
    assert c.raw.find_one({"_id": f"{doc['blob']}/0"}) is None
    assert call(queue, f"/api/emails/{queue.ids['five']}")[0] == 404
    assert call(queue, f"/api/emails/{queue.ids['five']}/raw")[0] == 404
    assert call(queue, f"/api/emails/{queue.ids['five']}", "DELETE")[0] == 404
    assert subjects(queue)[1]["total"] == 4
    # Records of a deleted message stay (they are the delivery log).
    status, body, _ = call(queue, f"/api/emails/{queue.ids['two']}", "DELETE")
    assert status == 200 and c.successful.count_documents({"email_id": ObjectId(queue.ids["two"])}) == 1


def test_detail_when_the_bytes_are_gone(queue):
    c = queue.stores.collections
    doc = c.outgoing.find_one({"_id": ObjectId(queue.ids["one"])})
    c.raw.delete_one({"_id": f"{doc['blob']}/0"})
    status, body, _ = call(queue, f"/api/emails/{queue.ids['one']}")
    assert status == 200 and body["message"]["available"] is False and body["message"]["headers"] == []
    status, body, _ = call(queue, f"/api/emails/{queue.ids['one']}/raw")
    assert status == 404 and "gone" in body["message"]


def test_the_queue_id_of_the_smtp_reply_is_the_emails_id(queue):
    """Like Postfix's queue id: the id in ``250 ... queued as ID`` (and in the log) is the
    one the queue API, the CLI and incoming-emails take."""
    import re
    import smtplib

    with smtplib.SMTP("127.0.0.1", queue.ports["smtp"]) as client:
        client.ehlo()
        client.mail(SENDER)
        client.rcpt("someone@remote.example")
        code, reply = client.data(b"Subject: one id\r\n\r\nx\r\n")
    assert code == 250
    queue_id = re.search(rb"queued as ([0-9a-f]{24})", reply).group(1).decode()
    status, email, _ = call(queue, f"/api/emails/{queue_id}")
    assert status == 200 and email["subject"] == "one id" and email["queue_id"] == queue_id
    assert call(queue, f"/api/incoming-emails/{queue_id}")[0] == 200
