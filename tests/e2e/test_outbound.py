"""Outbound delivery end to end on loopback: mail submitted to the appliance leaves through
MX records served by dnsmasq to SMTP peers on 127.0.0.x; every outcome is checked in
``emails``, ``successful_emails``, ``bounced_emails``, the sender's INBOX and the webhooks."""
import email
import hashlib
import hmac
import json
import smtplib
import ssl
import subprocess
from datetime import timedelta

import dkim
import pytest

from tests.conftest import have
from tests.e2e.helpers import stored_messages, stored_raw, wait_for
from tests.e2e.outbound_peers import (
    PEER_ACCEPT, PEER_OTHER, SENDER, HttpRecorder, dkim_key, dns_fixture, outbound_appliance, peer_fixture, slow_answer,
)

pytestmark = pytest.mark.skipif(not have("dnsmasq"), reason="dnsmasq (dnsmasq-base) is not installed")

FINAL = ("sent", "bounced", "partial")


dns = dns_fixture(scope="module")
peer = peer_fixture((PEER_ACCEPT, PEER_OTHER))


@pytest.fixture
def outbound(appliance_factory, dns, peer):
    """Start an appliance delivering through ``dns`` to ``peer``; SENDER is a local mailbox."""

    def start(**overrides):
        values: dict = dict(queue_retry_base=0.2, queue_max_attempts=3)
        values.update(overrides)
        return outbound_appliance(appliance_factory, dns.servers, peer.port, **values)

    return start


def submit(app, recipients, subject="hello", sender=SENDER, body="Hi there.\r\n", headers=""):
    message = f"From: <{sender}>\r\nTo: <{recipients[0]}>\r\nSubject: {subject}\r\nMessage-ID: <{subject.replace(' ', '.')}@example.com>\r\n{headers}\r\n{body}"
    with smtplib.SMTP("127.0.0.1", app.ports["smtp"]) as client:
        client.sendmail(sender, recipients, message.encode())
    return wait_for(lambda: app.stores.collections.outgoing.find_one({"subject": subject}), timeout=10)


def final(app, email_doc, timeout=20):
    return wait_for(lambda: _final(app, email_doc["_id"]), timeout=timeout)


def _final(app, email_id):
    doc = app.stores.collections.outgoing.find_one({"_id": email_id})
    return doc if doc and doc["status"] in FINAL else None


def by_address(doc):
    return {r["address"]: r for r in doc["recipients"]}


def test_delivered_through_mx_implicit_mx_and_backup_mx(outbound, peer):
    app = outbound()
    queued = submit(app, ["a@accept.test", "b@aonly.test", "c@multi.test"])
    doc = final(app, queued)
    assert doc["status"] == "sent"
    recipients = by_address(doc)
    assert {r["status"] for r in recipients.values()} == {"sent"}
    assert recipients["a@accept.test"]["mx_host"] == "mx.accept.test"
    assert recipients["b@aonly.test"]["mx_host"] == "aonly.test", "no MX: the A record is the implicit MX"
    assert recipients["c@multi.test"]["mx_host"] == "mx2.multi.test", "mx1 (preference 10) is down: the next MX"
    got = sorted(r for m in peer.received for r in m.recipients)
    assert got == ["a@accept.test", "b@aonly.test", "c@multi.test"]
    assert all(m.helo == "mx.test.example" and m.mail_from == SENDER for m in peer.received)
    assert b"Subject: hello" in peer.received[0].data and b"Received: from" in peer.received[0].data

    records = list(app.stores.collections.successful.find({"email_id": doc["_id"]}))
    assert sorted(r["_id"] for r in records) == sorted(doc["successful_ids"])
    for record in records:
        assert record["recipient"] == record["recipient"].lower()
        assert record["code"] == 250 and record["response"].startswith("2.0.0 Ok")
        assert record["enhanced_code"] == "2.0.0"
        assert record["mx_host"] and record["mx_address"] == PEER_ACCEPT
        assert record["tls"] is False and record["ip"] is None
        assert record["delivered_at"] and record["message_id"] == "<hello@example.com>"
        assert recipients[record["recipient"]]["record_id"] == record["_id"]
    assert doc["history"][-1]["tried"][0].startswith("mx1.multi.test") or any(
        h["domain"] == "multi.test" and h["tried"] == ["mx1.multi.test[127.0.0.5]", "mx2.multi.test[127.0.0.2]"] for h in doc["history"]
    )
    assert "lease" not in doc and doc["attempts"] == 1


def test_one_connection_per_domain_carries_all_its_recipients(outbound, peer):
    app = outbound()
    doc = final(app, submit(app, ["one@accept.test", "two@accept.test", "three@other.test"]))
    assert doc["status"] == "sent"
    assert len(peer.connections) == 2
    batches = sorted(sorted(m.recipients) for m in peer.received)
    assert batches == [["one@accept.test", "two@accept.test"], ["three@other.test"]]


def test_per_recipient_outcomes_records_and_bounce_report(outbound, peer):
    app = outbound()
    doc = final(app, submit(app, ["ok@accept.test", "nouser@accept.test", "full@accept.test", "defer@accept.test", "policy@accept.test"], "mixed"))
    assert doc["status"] == "partial"
    rc = by_address(doc)
    assert rc["ok@accept.test"]["status"] == "sent"
    assert (rc["nouser@accept.test"]["status"], rc["nouser@accept.test"]["bounce_type"]) == ("bounced", "hard")
    assert rc["full@accept.test"]["bounce_type"] == "soft"
    assert rc["policy@accept.test"]["bounce_type"] == "permanent"
    defer = rc["defer@accept.test"]
    assert (defer["status"], defer["bounce_type"], defer["attempts"]) == ("bounced", "transient", 3), "retried, then given up"
    assert doc["attempts"] == 3
    assert [len(m.recipients) for m in peer.received] == [1], "the accepted recipient got the message once"

    bounced = {r["recipient"]: r for r in app.stores.collections.bounced.find({"email_id": doc["_id"]})}
    assert sorted(bounced) == ["defer@accept.test", "full@accept.test", "nouser@accept.test", "policy@accept.test"]
    assert sorted(doc["bounced_ids"]) == sorted(r["_id"] for r in bounced.values())
    nouser = bounced["nouser@accept.test"]
    assert (nouser["code"], nouser["enhanced_code"], nouser["bounce_type"]) == (550, "5.1.1", "hard")
    assert "no such user" in nouser["reason"] and nouser["bounced_at"] and nouser["mx_host"] == "mx.accept.test"
    assert bounced["defer@accept.test"]["reason"].startswith("gave up after 3 attempts: 451 4.2.0")

    # Bounce reports (RFC 3464) in the local sender's INBOX: one per attempt that bounced someone.
    def reports():
        messages = stored_messages(app, SENDER)
        return messages if len(messages) == 2 else None

    messages = wait_for(reports)
    parsed = [email.message_from_bytes(stored_raw(app, m)) for m in messages]
    first, last = parsed
    assert first.get_content_type() == "multipart/report" and first.get_param("report-type") == "delivery-status"
    assert first["Auto-Submitted"] == "auto-replied" and first["From"].startswith("Mail Delivery System <MAILER-DAEMON@")
    status = first.get_payload()[1].get_payload()
    final_recipients = sorted(str(block["Final-Recipient"]) for block in status[1:])
    assert final_recipients == ["rfc822; full@accept.test", "rfc822; nouser@accept.test", "rfc822; policy@accept.test"]
    assert any(block["Status"] == "5.1.1" and "550" in block["Diagnostic-Code"] for block in status[1:])
    assert "Subject: mixed" in first.get_payload()[2].as_string()
    last_status = last.get_payload()[1].get_payload()
    assert [str(b["Final-Recipient"]) for b in last_status[1:]] == ["rfc822; defer@accept.test"]
    assert last_status[1]["Status"] == "5.4.7"
    assert app.stores.collections.outgoing.find_one({"_id": doc["_id"]})["dsn"] == "sent"


def test_null_mx_and_missing_domain_bounce_at_once_and_null_sender_gets_no_report(outbound, peer):
    app = outbound()
    doc = final(app, submit(app, ["x@nullmx.test", "y@missing.test"], "nowhere"))
    rc = by_address(doc)
    assert (rc["x@nullmx.test"]["code"], rc["x@nullmx.test"]["enhanced_code"]) == (550, "5.1.10")
    assert rc["y@missing.test"]["enhanced_code"] == "5.1.2" and "NXDOMAIN" in rc["y@missing.test"]["response"]
    assert doc["attempts"] == 1 and {r["bounce_type"] for r in rc.values()} == {"hard"}
    assert peer.connections == []
    wait_for(lambda: len(stored_messages(app, SENDER)) == 1)

    doc = final(app, submit(app, ["z@nullmx.test"], "from null", sender=""))
    assert doc["status"] == "bounced" and doc.get("dsn") is None
    assert len(stored_messages(app, SENDER)) == 1, "never a report to <>"


def test_mx_host_without_address_is_deferred(outbound):
    app = outbound(queue_max_attempts=1)
    doc = final(app, submit(app, ["a@dangling.test"], "dangling"))
    [rcpt] = doc["recipients"]
    assert rcpt["bounce_type"] == "transient" and rcpt["code"] == 451


def test_source_ip_chosen_by_the_api_cached_and_kept_on_retry(outbound, peer):
    answers = {"ip": "127.0.0.3"}
    api = HttpRecorder(lambda request: (200, json.dumps(answers).encode()))
    try:
        app = outbound(ip_selection_enabled=True, ip_selection_api_url=api.url, ip_selection_timeout=1.0, ip_selection_retries=0)
        doc = final(app, submit(app, ["a@accept.test"], "ip one"))
        assert peer.connections[-1] == ("127.0.0.3", PEER_ACCEPT), "the peer saw the connection from the chosen IP"
        record = app.stores.collections.successful.find_one({"email_id": doc["_id"]})
        assert (record["ip"], record["ip_source"]) == ("127.0.0.3", "api")
        assert api.requests[0]["json"] == {"emailId": str(doc["_id"]), "from": SENDER, "to": ["a@accept.test"], "domain": "accept.test"}

        final(app, submit(app, ["b@accept.test"], "ip two"))
        stats = app.outbound.ip_selection.stats()
        assert (stats["hits"], stats["misses"], len(api.requests)) == (1, 1, 1)

        # A deferred recipient keeps its IP on the retry even when the API now says otherwise.
        answers["ip"] = "127.0.0.4"
        app.outbound.ip_selection.clear_cache()
        doc = final(app, submit(app, ["defer@accept.test"], "ip sticky"))
        [rcpt] = doc["recipients"]
        assert rcpt["attempts"] == 3 and rcpt["ip"] == "127.0.0.4"
        assert [h["ip_source"] for h in doc["history"]] == ["api", "sticky", "sticky"]
        assert [c[0] for c in peer.connections[-3:]] == ["127.0.0.4"] * 3
    finally:
        api.stop()


def test_blocked_ip_is_not_kept_for_the_retry(outbound, peer):
    api = HttpRecorder(lambda request: (200, b'{"ip": "127.0.0.3"}'))
    try:
        app = outbound(ip_selection_enabled=True, ip_selection_api_url=api.url, queue_max_attempts=2)
        peer.behaviour[PEER_ACCEPT].rcpt = lambda a: "451 4.7.1 Client host blocked using zen.spamhaus.org"
        doc = final(app, submit(app, ["a@accept.test"], "blocked"))
        assert [h["ip_source"] for h in doc["history"]] == ["api", "api"], "asked again after the block"
        assert len(api.requests) == 2
    finally:
        api.stop()


@pytest.mark.parametrize(
    "answer, expected_ip, source",
    [
        ((200, b'{"ip": "127.0.0.2"}'), "127.0.0.2", "api"),
        ((200, b'{"ip": "127.0.0.3"}'), "127.0.0.3", "api"),
        ((200, b"not json"), "127.0.0.4", "fallback"),
        ((200, b'{"ip": "192.0.2.77"}'), "127.0.0.4", "fallback"),
        ((500, b"{}"), "127.0.0.4", "fallback"),
        (None, "127.0.0.4", "fallback"),
    ],
    ids=["127.0.0.2", "127.0.0.3", "garbage", "not-local", "http-500", "timeout"],
)
def test_ip_selection_answers_and_failures(outbound, peer, answer, expected_ip, source):
    api = HttpRecorder(slow_answer(3, (200, b'{"ip": "127.0.0.3"}')) if answer is None else (lambda request: answer))
    try:
        app = outbound(
            ip_selection_enabled=True, ip_selection_api_url=api.url, ip_selection_timeout=0.3, ip_selection_retries=1, fallback_ip="127.0.0.4"
        )
        doc = final(app, submit(app, ["a@accept.test"], f"fallback {source}"))
        assert doc["history"][0]["ip_source"] == source and doc["recipients"][0]["ip"] == expected_ip
        assert peer.connections[-1][0] == expected_ip
    finally:
        api.stop()


def test_no_usable_fallback_means_the_default_route(outbound, peer, caplog):
    app = outbound(ip_selection_enabled=True, ip_selection_api_url="http://127.0.0.1:9/nothing", ip_selection_retries=0, fallback_ip="192.0.2.1")
    doc = final(app, submit(app, ["a@accept.test"], "default route"))
    assert doc["history"][0]["ip_source"] == "default" and doc["recipients"][0]["ip"] is None
    assert peer.connections[-1][0] == "127.0.0.1"


def test_webhooks_payload_signature_retries_and_recorded_failures(outbound, peer):
    calls = {"n": 0}

    def flaky(request):
        calls["n"] += 1
        return (500, b"{}") if calls["n"] <= 2 else (200, b"{}")

    hooks = HttpRecorder(flaky)
    broken = HttpRecorder(lambda request: (503, b"{}"))
    try:
        app = outbound(
            webhook_enabled=True,
            webhook_success_url=hooks.url,
            webhook_failure_url=broken.url,
            webhook_secret="s3cret",
            webhook_retries=2,
            webhook_retry_base=0.05,
        )
        doc = final(app, submit(app, ["ok@accept.test", "nouser@accept.test"], "hooks"))
        wait_for(lambda: len(hooks.requests) == 3, timeout=10)
        delivered = hooks.requests[-1]
        body = delivered["json"]
        assert body["event"] == "delivered" and body["emailId"] == str(doc["_id"]) and body["messageId"] == "<hooks@example.com>"
        assert (body["from"], body["to"], body["status"], body["smtpCode"], body["enhancedCode"]) == (
            SENDER, ["ok@accept.test"], "partial", 250, "2.0.0",
        )
        assert body["attempts"] == 1 and body["mxHost"] == "mx.accept.test" and body["timestamp"] and "ip" in body
        expected = "sha256=" + hmac.new(b"s3cret", delivered["body"], hashlib.sha256).hexdigest()
        assert delivered["headers"]["x-signature"] == expected
        # The failure endpoint never answers 2xx: three tries, then a recorded failure.
        failure = wait_for(lambda: app.stores.collections.webhook_failures.find_one(), timeout=10)
        assert len(broken.requests) == 3
        assert broken.requests[0]["json"]["event"] == "bounced" and broken.requests[0]["json"]["to"] == ["nouser@accept.test"]
        assert broken.requests[0]["json"]["bounceType"] == "hard" and broken.requests[0]["json"]["smtpCode"] == 550
        assert failure["url"] == broken.url and failure["error"] == "HTTP 503" and failure["attempts"] == 3
    finally:
        hooks.stop()
        broken.stop()


def test_a_hanging_webhook_endpoint_does_not_delay_delivery(outbound, peer):
    hooks = HttpRecorder(slow_answer(5, (200, b"{}")))
    try:
        app = outbound(webhook_enabled=True, webhook_success_url=hooks.url, webhook_timeout=10, webhook_retries=0)
        for i in range(3):
            final(app, submit(app, ["a@accept.test"], f"quick {i}"), timeout=3)
        assert len(peer.received) == 3
    finally:
        hooks.stop()


def test_opportunistic_starttls_with_a_self_signed_certificate(outbound, peer, tmp_path):
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=mx.accept.test"],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    peer.tls_context = context
    peer.behaviour[PEER_ACCEPT].starttls = True
    app = outbound()
    doc = final(app, submit(app, ["a@accept.test"], "tls"))
    assert doc["recipients"][0]["tls"] is True and peer.received[0].tls is True
    assert app.stores.collections.successful.find_one({"email_id": doc["_id"]})["tls"] is True


def test_remote_size_limit_bounces_without_sending(outbound, peer):
    peer.behaviour[PEER_ACCEPT].size_limit = 200
    app = outbound()
    doc = final(app, submit(app, ["a@accept.test"], "too big", body="x" * 500 + "\r\n"))
    [rcpt] = doc["recipients"]
    assert (rcpt["status"], rcpt["code"], rcpt["enhanced_code"]) == ("bounced", 552, "5.3.4")
    assert peer.received == []


def test_dkim_signature_verifies(outbound, peer, tmp_path):
    keys = tmp_path / "dkim"
    dns_txt = dkim_key(keys)
    app = outbound(dkim_key_dir=keys, dkim_selector="sel1")
    final(app, submit(app, ["a@accept.test"], "signed"))
    data = peer.received[0].data
    assert data.startswith(b"DKIM-Signature: ") and b"d=example.com" in data and b"s=sel1" in data
    assert dkim.verify(data, dnsfunc=dns_txt)
    final(app, submit(app, ["b@accept.test"], "unsigned", sender="other@remote.example"))
    assert not peer.received[1].data.startswith(b"DKIM-Signature"), "no key for remote.example: not signed"


def test_smarthost_takes_everything(outbound, peer):
    app = outbound(smtp_relay_host=PEER_OTHER, smtp_relay_port=peer.port)
    doc = final(app, submit(app, ["a@nullmx.test", "b@accept.test"], "relayed"))
    assert doc["status"] == "sent"
    assert {local for _, local in peer.connections} == {PEER_OTHER}


def test_queue_and_ip_selection_endpoints(outbound, peer):
    import urllib.request

    app = outbound()
    final(app, submit(app, ["a@accept.test"], "api"))
    key = app.settings.mailbox_api_key
    base = f"http://127.0.0.1:{app.ports['api']}/api"

    def call(path, method="GET", body=None):
        request = urllib.request.Request(
            base + path, method=method, data=json.dumps(body).encode() if body is not None else None,
            headers={"x-api-key": key, "content-type": "application/json"},
        )
        return json.load(urllib.request.urlopen(request))

    stats = call("/queue/stats")
    assert stats["queue"]["sent"] == 1 and stats["queue"]["successful_records"] == 1 and stats["runner"]["delivered"] == 1
    assert call("/ip-selection/stats")["enabled"] is False
    assert call("/ip-selection/clear-cache", "POST", {})["cleared"] == 0
    assert call("/ip-selection/test", "POST", {"from": SENDER, "to": ["a@accept.test"]})["source"] == "disabled"


def test_retry_and_delete_requested_during_delivery_are_applied_after_it(outbound, peer):
    import gevent

    def slow(address):
        gevent.sleep(1.0)
        return "451 4.2.0 later" if address.startswith("defer") else "250 2.1.5 Ok"

    peer.behaviour[PEER_ACCEPT].rcpt = slow
    app = outbound(queue_retry_base=60)
    queue = app.outbound.queue
    retried = submit(app, ["defer@accept.test"], "retry me")
    wait_for(lambda: queue.get(retried["_id"])["status"] == "sending")
    assert queue.retry(retried["_id"]) == "scheduled"
    doc = wait_for(lambda: (d := queue.get(retried["_id"])) and len(d.get("history", [])) == 2 and d)
    assert doc["status"] == "deferred" and doc["attempts"] == 1, "tried again at once (not after the 60 s backoff), counting afresh"
    assert doc["history"][1]["at"] - doc["history"][0]["at"] < timedelta(seconds=10)

    deleted = submit(app, ["ok@accept.test"], "delete me")
    wait_for(lambda: queue.get(deleted["_id"])["status"] == "sending")
    assert queue.delete(deleted["_id"]) == "scheduled"
    wait_for(lambda: queue.get(deleted["_id"]) is None)
    assert app.stores.collections.successful.find_one({"email_id": deleted["_id"]})["recipient"] == "ok@accept.test"
    assert [m.recipients for m in peer.received] == [["ok@accept.test"]], "delivered once, then deleted"


def test_a_report_owed_when_the_process_died_is_written_by_the_sweep(outbound):
    from bson import ObjectId

    from mailappliance.storage.queue import enqueue, utcnow

    app = outbound(queue_enabled=False)
    c = app.stores.collections
    [email_id] = enqueue(c, [(SENDER, ["gone@accept.test"], b"Subject: lost report\r\n\r\nx\r\n")])
    c.outgoing.update_one({"_id": email_id}, {"$set": {"status": "bounced", "dsn": "pending", "dsn_pending_for": ["gone@accept.test"]}})
    failed = {"address": "gone@accept.test", "status": "5.1.1", "diagnostic": "550 5.1.1 no such user", "remote_mta": "mx.accept.test",
              "last_attempt": utcnow(), "from_remote": True}
    report = {"_id": ObjectId(), "email_id": email_id, "sender": SENDER, "addresses": ["gone@accept.test"], "failed": [failed],
              "message_id": ObjectId(), "blob_id": ObjectId(), "at": utcnow()}
    c.pending_reports.insert_one(report)
    app.outbound.runner.reports.sweep()
    [stored] = stored_messages(app, SENDER)
    assert stored["_id"] == report["message_id"], "stored under the id chosen with the outcome"
    raw = stored_raw(app, stored)
    assert b"Final-Recipient: rfc822; gone@accept.test" in raw and b"Diagnostic-Code: smtp; 550 5.1.1 no such user" in raw
    assert c.pending_reports.count_documents({}) == 0 and c.outgoing.find_one({"_id": email_id})["dsn"] == "sent"
    c.pending_reports.insert_one(report)  # written, but the process died before the report was marked done
    app.outbound.runner.reports.sweep()
    assert len(stored_messages(app, SENDER)) == 1, "written once"
    assert c.pending_reports.count_documents({}) == 0


def test_a_silent_server_times_out_and_the_recipient_is_deferred(outbound, peer):
    peer.behaviour[PEER_ACCEPT].greeting_delay = 5
    app = outbound(outbound_greeting_timeout=0.5, queue_max_attempts=1)
    started = __import__("time").monotonic()
    doc = final(app, submit(app, ["a@accept.test"], "silent"))
    [rcpt] = doc["recipients"]
    assert (rcpt["code"], rcpt["enhanced_code"], rcpt["bounce_type"]) == (451, "4.4.2", "transient")
    assert "timeout during connect" in rcpt["response"]
    assert __import__("time").monotonic() - started < 4


def test_a_failed_tls_handshake_is_retried_in_clear(outbound, peer):
    peer.tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # no certificate: every handshake fails
    peer.behaviour[PEER_ACCEPT].starttls = True
    app = outbound()
    doc = final(app, submit(app, ["a@accept.test"], "tls broken"))
    assert doc["status"] == "sent" and doc["recipients"][0]["tls"] is False
    assert len(peer.connections) == 2 and peer.received[0].tls is False
