"""``POST /api/send`` on API_PORT over real HTTP: stored mail read back over IMAP, queued
mail in ``emails`` (and delivered to a loopback SMTP peer), every refusal."""
import base64
import imaplib
import json
import re
import urllib.error
import urllib.request
from email import policy
from email.parser import BytesParser

import dkim
import pytest
from bson import ObjectId

from tests.conftest import PASSWORD
from tests.e2e.helpers import wait_for
from tests.e2e.outbound_peers import PEER_ACCEPT, PEER_OTHER, dkim_key, dns_fixture, outbound_appliance, peer_fixture

KEY = "test-api-key-0123456789"
BLOB = bytes(range(256)) * 40 + b"\r\n.\r\nend\x00"  # binary, with an SMTP end-of-data look-alike


def post(app, payload, key=KEY, body=None, headers=None):
    data = body if body is not None else json.dumps(payload).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{app.ports['api']}/api/send",
        data=data,
        method="POST",
        headers={"content-type": "application/json", **({"x-api-key": key} if key else {}), **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def get(app, path):
    request = urllib.request.Request(f"http://127.0.0.1:{app.ports['api']}{path}", headers={"x-api-key": KEY})
    with urllib.request.urlopen(request) as response:
        return json.load(response)


def fetch_inbox(app, user):
    with imaplib.IMAP4("127.0.0.1", app.ports["imap"]) as client:
        client.login(user, PASSWORD)
        client.select("INBOX")
        _, data = client.fetch("1:*", "(RFC822.SIZE BODY.PEEK[])")
        messages = [item for item in data if isinstance(item, tuple)]
        client.logout()
    return [(int(re.search(rb"RFC822\.SIZE (\d+)", meta).group(1)), raw) for meta, raw in messages]


@pytest.fixture
def app(appliance_factory):
    """Every listener on a free port; the queue runner off, so queued mail stays queued."""
    appliance = appliance_factory(queue_enabled=False, allow_plaintext_auth=True)
    appliance.admin.create("user@example.com", PASSWORD)
    appliance.admin.create("other@test.com", PASSWORD)
    return appliance


def message(**fields):
    payload = {
        "from": "Shop Bot <noreply@example.com>",
        "to": ["Ünïcode User <user@example.com>"],
        "subject": "Grüße — your report",
        "text": "Hello,\nthe report is attached.\n",
        "html": "<p>Hello, the report is <b>attached</b>.</p>",
        "attachments": [{"filename": "report 2026.bin", "contentType": "application/octet-stream", "content": base64.b64encode(BLOB).decode()}],
        "headers": {"X-Campaign": "spring"},
    }
    payload.update(fields)
    return {k: v for k, v in payload.items() if v is not None}


def test_key_required(app):
    assert post(app, message(), key=None) == (401, {"message": "missing or wrong API key (x-api-key header or api_key query parameter)"})
    assert post(app, message(), key="wrong")[0] == 401
    assert app.stores.collections.incoming.count_documents({}) == 0


def test_local_recipient_gets_it_in_inbox_over_imap(app):
    status, result = post(app, message(bcc=["other@test.com"]))
    assert status == 202, result
    assert sorted(result["local"]) == ["other@test.com", "user@example.com"] and result["queued"] == []
    assert result["id"] == result["queue_id"] and re.fullmatch(r"[0-9a-f]{24}", result["id"])
    assert result["email_id"] is None and result["refused"] == []
    assert result["message_id"].endswith("@mx.test.example>")

    [(size, raw)] = fetch_inbox(app, "user@example.com")
    assert size == len(raw)
    assert raw.startswith(b"Return-Path: <noreply@example.com>\r\nReceived: from api ([127.0.0.1])\r\n\tby mx.test.example (mailappliance) with HTTP id " + result["queue_id"].encode())
    assert b"\r\n\tfor <" not in raw.split(b"\r\n\r\n")[0], "two recipients: no 'for' clause (it could name a Bcc)"
    assert b"other@test.com" not in raw, "Bcc is not in the header (RFC 5322 §3.6.3)"
    parsed = BytesParser(policy=policy.default).parsebytes(raw)
    assert parsed["Message-ID"] == result["message_id"]
    assert parsed["Subject"] == "Grüße — your report"
    assert parsed["To"].addresses[0].display_name == "Ünïcode User"
    assert parsed["X-Campaign"] == "spring"
    assert parsed.get_body(("plain",)).get_content() == "Hello,\r\nthe report is attached.\r\n"
    [attachment] = parsed.iter_attachments()
    assert attachment.get_filename() == "report 2026.bin" and attachment.get_content() == BLOB

    [(other_size, other_raw)] = fetch_inbox(app, "other@test.com")
    assert other_raw == raw, "the Bcc recipient gets the very same bytes"


def test_remote_recipient_is_queued(app):
    status, result = post(app, message(to=["Far Away <far@remote.example>"], cc=["cc@remote.example"], attachments=None))
    assert status == 202, result
    assert result["local"] == [] and result["queued"] == ["far@remote.example", "cc@remote.example"]
    doc = app.stores.collections.outgoing.find_one({"queue_id": result["queue_id"]})
    assert str(doc["_id"]) == result["email_id"]
    assert doc["status"] == "queued" and doc["source"] == "api" and doc["from"] == "noreply@example.com"
    assert doc["to"] == ["far@remote.example", "cc@remote.example"]
    assert [r["status"] for r in doc["recipients"]] == ["queued", "queued"]
    assert doc["subject"] == "Grüße — your report" and doc["message_id"] == result["message_id"]
    raw = app.stores.blobs.read(doc["blob"], doc["size"])
    assert raw.startswith(b"Received: from api ([127.0.0.1])") and b"Return-Path" not in raw


def test_mixed_local_and_remote_share_the_same_bytes(app):
    status, result = post(app, message(to=["user@example.com", "far@remote.example"]))
    assert status == 202, result
    assert result["local"] == ["user@example.com"] and result["queued"] == ["far@remote.example"]
    doc = app.stores.collections.outgoing.find_one({"queue_id": result["queue_id"]})
    relayed = app.stores.blobs.read(doc["blob"], doc["size"])
    [(_, stored)] = fetch_inbox(app, "user@example.com")
    assert stored == b"Return-Path: <noreply@example.com>\r\n" + relayed, "one message, trace headers as SMTP adds them"

    incoming = get(app, f"/api/incoming-emails/{result['id']}")
    assert incoming["source"] == "api" and incoming["role"] == "api" and incoming["protocol"] == "HTTP"
    assert incoming["status"] == "stored+queued"
    assert incoming["local_recipients"] == ["user@example.com"] and incoming["relayed_recipients"] == ["far@remote.example"]
    assert incoming["attachments"][0]["filename"] == "report 2026.bin"
    assert incoming["remote_address"] == "127.0.0.1" and incoming["local_port"] == app.ports["api"]
    listed = get(app, "/api/incoming-emails?source=api")
    assert listed["total"] == 1 and listed["emails"][0]["message_id"] == result["message_id"]
    assert get(app, "/api/incoming-emails?source=smtp")["total"] == 0


@pytest.mark.parametrize(
    "fields, needle",
    [
        ({"from": "noreply@elsewhere.example"}, "not a local domain"),
        ({"from": ["a@example.com"]}, "single address"),
        ({"to": ["not-an-address"]}, "not a valid address"),
        ({"to": None}, "at least one recipient"),
        ({"to": ["nobody@example.com"]}, "no such mailbox here: nobody@example.com"),
        ({"to": ["user@example.com"], "bcc": ["ghost@test.com"]}, "ghost@test.com"),
        ({"subject": "hi\r\nBcc: victim@remote.example"}, "control characters"),
        ({"headers": {"X-A": "b\r\nBcc: victim@remote.example"}}, "control character"),
        ({"headers": {"From": "boss@example.com"}}, "cannot be set"),
        ({"headers": {"Content-Type": "text/html"}}, "cannot be set"),
        ({"attachments": [{"filename": "a", "content": "%%%"}]}, "not valid base64"),
        ({"to": [f"r{i}@remote.example" for i in range(101)]}, "too many recipients"),
        ({"text": None, "html": None, "attachments": None}, "nothing to send"),
        ({"sender": "x@example.com"}, "unknown field"),
    ],
)
def test_refusals_are_400_with_a_message(app, fields, needle):
    status, body = post(app, message(**fields))
    assert status == 400 and needle in body["message"], body
    assert app.stores.collections.incoming.count_documents({}) == 0
    assert app.stores.collections.messages.count_documents({}) == 0


@pytest.mark.parametrize("body", [b"", b"{not json", b"[1, 2]", b"null", b"\xff\xfe", b"[" * 100000])
def test_bad_json_is_400(app, body):
    status, answer = post(app, None, body=body)
    assert status == 400 and answer["message"]


def test_too_large(appliance_factory):
    app = appliance_factory(max_email_size=4096)
    app.admin.create("user@example.com", PASSWORD)
    status, body = post(app, message(attachments=[{"filename": "big", "content": base64.b64encode(b"x" * 4000).decode()}]))
    assert status == 413 and "4096-byte limit" in body["message"]
    status, body = post(app, message(attachments=None, text="x" * 20000))  # a body the limit still lets through
    assert status == 413 and "MAX_EMAIL_SIZE" in body["message"]
    status, body = post(app, None, body=b'{"text": "' + b"x" * (2 * 4096 + 64 * 1024) + b'"}')
    assert status == 413 and "request body" in body["message"]


def test_full_mailbox_is_507_naming_it(appliance_factory):
    app = appliance_factory()
    app.admin.create("user@example.com", PASSWORD, quota=2000)
    status, body = post(app, message())
    assert status == 507 and body["message"] == "mailbox full (over its quota): user@example.com"
    assert post(app, message(attachments=None, html=None))[0] == 202, "a small one still fits"


def test_storage_failure_is_503(app):
    app.writer.stop()
    status, body = post(app, message())
    assert status == 503 and "try again" in body["message"]


def test_swagger_documents_the_endpoint(app):
    spec = json.load(urllib.request.urlopen(f"http://127.0.0.1:{app.ports['api']}/api/swagger.json"))
    operation = spec["paths"]["/send"]["post"]
    assert set(operation["responses"]) >= {"202", "400", "401", "413", "503", "507"}
    request_model = spec["definitions"]["SendRequest"]
    assert request_model["required"] == ["from"]
    assert sorted(spec["definitions"]["SendAttachment"]["required"]) == ["content", "filename"]
    assert spec["definitions"]["SendRequest"]["properties"]["headers"]["additionalProperties"] == {"type": "string"}
    assert "api" in spec["definitions"]["IncomingEmail"]["properties"]["source"]["enum"]


# ---------------------------------------------------------------------- real delivery
dns = dns_fixture()
peer = peer_fixture((PEER_ACCEPT, PEER_OTHER))


def test_queued_mail_is_delivered_to_the_mx_dkim_signed(appliance_factory, dns, peer, tmp_path):
    keys = tmp_path / "dkim"
    dns_txt = dkim_key(keys)
    app = outbound_appliance(appliance_factory, dns.servers, peer.port, dkim_key_dir=keys, dkim_selector="sel1")
    status, result = post(app, message(to=["far@accept.test"], bcc=["hidden@accept.test"]))
    assert status == 202 and result["queued"] == ["far@accept.test", "hidden@accept.test"], result
    doc = wait_for(lambda: app.stores.collections.outgoing.find_one({"_id": ObjectId(result["email_id"]), "status": "sent"}), timeout=20)
    assert [r["status"] for r in doc["recipients"]] == ["sent", "sent"]
    [received] = peer.received
    assert received.mail_from == "noreply@example.com"
    assert sorted(received.recipients) == ["far@accept.test", "hidden@accept.test"]
    assert b"hidden" not in received.data
    [attachment] = BytesParser(policy=policy.default).parsebytes(received.data).iter_attachments()
    assert attachment.get_content() == BLOB
    assert received.data.startswith(b"DKIM-Signature: ") and b"d=example.com" in received.data
    assert dkim.verify(received.data, dnsfunc=dns_txt), "signed like SMTP submission is (RFC 6376)"
