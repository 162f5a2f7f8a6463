"""The JSON-to-message composer of ``POST /api/send``: pure, no database, no sockets."""
import base64
import re
from datetime import datetime, timezone
from email import policy
from email.parser import BytesParser

import pytest

from mailappliance.protocol.addresses import Address
from mailappliance.services.compose import ComposeConfig, ComposeError, MessageTooLarge, compose

NOW = datetime(2026, 11, 24, 12, 30, 5, tzinfo=timezone.utc)
CONFIG = ComposeConfig("mx.test.example", 100_000, 5, lambda domain: domain in ("example.com", "test.com"))
PDF = bytes(range(256)) * 4


def make(**fields):
    payload = {"from": "shop@example.com", "to": ["ann@remote.example"], "text": "hello"}
    payload.update(fields)
    payload = {k: v for k, v in payload.items() if v is not None}
    return compose(payload, CONFIG, now=NOW)


def parsed(result):
    return BytesParser(policy=policy.default).parsebytes(result.message)


def refused(**fields):
    with pytest.raises(ComposeError) as caught:
        make(**fields)
    return caught.value


def header_block(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0] + b"\r\n"


# ---------------------------------------------------------------------- headers
def test_generated_headers_and_crlf():
    result = make(subject="Order 42")
    raw = result.message
    assert not re.search(rb"\r(?!\n)|(?<!\r)\n", raw), "every line ends with CRLF (RFC 5322 §2.3)"
    head = header_block(raw)
    assert head.startswith(b"Date: Tue, 24 Nov 2026 12:30:05 +0000\r\n")
    assert b"From: shop@example.com\r\nTo: ann@remote.example\r\nSubject: Order 42\r\n" in head
    assert re.search(rb"\r\nMessage-ID: <[0-9a-f]{32}@mx\.test\.example>\r\n", head)
    assert head.count(b"MIME-Version: 1.0\r\n") == 1
    assert result.message_id.endswith("@mx.test.example>") and result.message_id.encode() in head
    assert result.mail_from == "shop@example.com"
    assert result.recipients == [Address("ann", "remote.example")]
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78


def test_message_ids_are_unique_and_injectable():
    assert make().message_id != make().message_id
    assert compose({"from": "a@example.com", "to": "b@x.example", "text": "x"}, CONFIG, message_id="<fixed@h>").message_id == "<fixed@h>"


def test_utf8_subject_and_names_are_encoded_words():
    result = make(**{"from": "Jörg Müller <shop@example.com>", "to": [{"name": "Zoë, Sales", "address": "zoe@remote.example"}], "subject": "Grüße aus Köln"})
    head = header_block(result.message)
    assert head.isascii(), "RFC 2047: no raw UTF-8 in the header"
    assert b"=?utf-8?" in head
    message = parsed(result)
    assert message["Subject"] == "Grüße aus Köln"
    assert message["From"].addresses[0].display_name == "Jörg Müller"
    assert message["To"].addresses[0].display_name == "Zoë, Sales"
    assert message["To"].addresses[0].addr_spec == "zoe@remote.example"


def test_name_and_address_string_forms():
    result = make(to=['"Smith, J" <j@remote.example>', "Ann <ann@remote.example>", "plain@remote.example"], cc="Cy <cy@remote.example>")
    message = parsed(result)
    assert [(a.display_name, a.addr_spec) for a in message["To"].addresses] == [
        ("Smith, J", "j@remote.example"), ("Ann", "ann@remote.example"), ("", "plain@remote.example")
    ]
    assert message["Cc"].addresses[0].addr_spec == "cy@remote.example"


def test_idna_domain_and_quoted_local_part():
    result = make(to=["user@bücher.example", '"john smith"@remote.example'])
    assert result.recipients == [Address("user", "xn--bcher-kva.example"), Address('"john smith"', "remote.example")]
    assert b'To: user@xn--bcher-kva.example, "john smith"@remote.example\r\n' in result.message


def test_bcc_in_envelope_not_in_header():
    result = make(to=["ann@remote.example"], cc=["cy@remote.example"], bcc=["secret@hidden.example", "ANN@remote.example"])
    assert b"secret" not in result.message and b"Bcc" not in result.message
    assert result.recipients == [Address("ann", "remote.example"), Address("cy", "remote.example"), Address("secret", "hidden.example")]


def test_bcc_only_has_no_to_header():
    result = make(to=None, bcc="secret@hidden.example")
    assert b"\r\nTo:" not in header_block(result.message) and b"secret" not in result.message
    assert result.recipients == [Address("secret", "hidden.example")]


def test_reply_to_and_extra_headers():
    result = make(replyTo="Support <help@example.com>", headers={"X-Campaign": "spring", "In-Reply-To": "<a@b>", "X-Note": "héllo wörld"})
    message = parsed(result)
    assert message["Reply-To"].addresses[0].addr_spec == "help@example.com"
    assert message["X-Campaign"] == "spring" and message["In-Reply-To"] == "<a@b>"
    assert message["X-Note"] == "héllo wörld"
    assert header_block(result.message).isascii()
    assert result.headers == {"X-Campaign": "spring", "In-Reply-To": "<a@b>", "X-Note": "héllo wörld"}


# ---------------------------------------------------------------------- bodies
def test_text_only_is_single_part():
    message = parsed(make(text="line one\nline two\n"))
    assert message.get_content_type() == "text/plain" and not message.is_multipart()
    assert message.get_content() == "line one\r\nline two\r\n"


def test_html_only():
    message = parsed(make(text=None, html="<p>hi</p>"))
    assert message.get_content_type() == "text/html"
    assert "<p>hi</p>" in message.get_content()


def test_text_and_html_make_alternative_text_first():
    message = parsed(make(text="plain", html="<b>rich</b>"))
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p["MIME-Version"] is None for p in parts), "MIME-Version only at the top (RFC 2045 §4)"


def test_non_ascii_body_is_seven_bit_clean():
    result = make(text="Grüße " * 50, html="<p>日本語</p>")
    assert result.message.isascii(), "no 8BITMIME needed anywhere (RFC 6152)"
    message = parsed(result)
    text, html = message.iter_parts()
    assert text["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert text.get_content() == "Grüße " * 50 + "\r\n"
    assert "日本語" in html.get_content()


def test_attachments_wrap_the_alternative_in_mixed():
    content = base64.b64encode(PDF).decode()
    result = make(
        text="see attached",
        html="<p>see attached</p>",
        attachments=[
            {"filename": "report.pdf", "contentType": "application/pdf", "content": content},
            {"filename": "naïve résumé.txt", "contentType": "Text/Plain", "content": base64.b64encode(b"caf\xc3\xa9").decode()},
        ],
    )
    message = parsed(result)
    assert message.get_content_type() == "multipart/mixed"
    body, pdf, txt = message.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert pdf.get_content_type() == "application/pdf" and pdf.get_filename() == "report.pdf"
    assert pdf.get_content() == PDF and pdf["Content-Transfer-Encoding"] == "base64"
    assert pdf.get_content_disposition() == "attachment"
    assert txt.get_content_type() == "text/plain" and txt.get_filename() == "naïve résumé.txt"
    assert b"filename*=utf-8''na%C3%AFve%20r%C3%A9sum%C3%A9.txt" in result.message, "RFC 2231"
    assert txt.get_payload(decode=True) == b"caf\xc3\xa9"


def test_attachment_only_and_default_type_and_wrapped_base64():
    wrapped = base64.encodebytes(PDF).decode()  # 76-column lines with newlines
    message = parsed(make(text=None, attachments=[{"filename": "blob", "content": wrapped}]))
    assert message.get_content_type() == "multipart/mixed"
    (only,) = message.iter_parts()
    assert only.get_content_type() == "application/octet-stream" and only.get_content() == PDF


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "fields, needle",
    [
        ({"from": None}, "from is required"),
        ({"from": ["a@example.com", "b@example.com"]}, "single address"),
        ({"from": "shop@elsewhere.example"}, "not a local domain"),
        ({"from": "not an address"}, "not a valid address"),
        ({"from": 42}, "string or an object"),
        ({"to": None}, "at least one recipient"),
        ({"to": []}, "at least one recipient"),
        ({"to": ["ann@remote.example", "bad@"]}, "to[1]"),
        ({"to": ["a@b@c"]}, "not a valid address"),
        ({"to": ["user@-bad-.example"]}, "not a valid address"),
        ({"to": ["jörg@remote.example"]}, "SMTPUTF8"),
        ({"to": [{"address": "a@remote.example", "email": "x"}]}, "unknown key"),
        ({"to": [{"name": 1, "address": "a@remote.example"}]}, "must be strings"),
        ({"to": [7]}, "string or an object"),
        ({"cc": ["x"]}, "cc[0]"),
        ({"bcc": "nope"}, "bcc"),
        ({"replyTo": "nope"}, "replyTo"),
        ({"to": [f"r{i}@remote.example" for i in range(6)]}, "too many recipients: 6 (at most 5)"),
        ({"subject": 5}, "subject must be a string"),
        ({"text": ["x"]}, "text must be a string"),
        ({"text": None}, "nothing to send"),
        ({"text": "a\x00b"}, "NUL"),
        ({"attachments": {"filename": "x"}}, "attachments must be a list"),
        ({"attachments": ["x"]}, "attachments[0] must be an object"),
        ({"attachments": [{"content": "aGk="}]}, "filename is required"),
        ({"attachments": [{"filename": "../etc/passwd", "content": "aGk="}]}, "path separators"),
        ({"attachments": [{"filename": "a", "contentType": "pdf", "content": "aGk="}]}, "type/subtype"),
        ({"attachments": [{"filename": "a", "contentType": "message/rfc822", "content": "aGk="}]}, "message/*"),
        ({"attachments": [{"filename": "a", "contentType": "multipart/mixed", "content": "aGk="}]}, "multipart/*"),
        ({"attachments": [{"filename": "a", "content": "not base64!"}]}, "not valid base64"),
        ({"attachments": [{"filename": "a", "content": "aGk"}]}, "not valid base64"),
        ({"attachments": [{"filename": "a"}]}, "base64 string"),
        ({"attachments": [{"filename": "a", "content": "aGk=", "cid": "x"}]}, "unknown key"),
        ({"headers": ["X-A: b"]}, "headers must be an object"),
        ({"headers": {"X-A": 1}}, "must be a string"),
        ({"headers": {"Bad Name": "v"}}, "not a valid header name"),
        ({"headers": {"X-A:": "v"}}, "not a valid header name"),
        ({"headers": {"X-Long": "v" * 4001}}, "longer than"),
        ({"headers": {f"X-{i}": "v" for i in range(101)}}, "too many headers"),
        ({"body": "typo"}, "unknown field(s): body"),
    ],
)
def test_every_validation_error_names_the_problem(fields, needle):
    error = refused(**fields)
    assert needle in error.message and error.status == 400


@pytest.mark.parametrize("name", ["From", "to", "CC", "Bcc", "Date", "Message-ID", "MIME-Version", "Content-Type",
                                  "content-transfer-encoding", "Subject", "Reply-To", "Sender", "Received", "Return-Path",
                                  "DKIM-Signature", "Resent-From"])
def test_reserved_headers_cannot_be_overridden(name):
    error = refused(headers={name: "x"})
    assert name in error.message and "cannot be set" in error.message


@pytest.mark.parametrize(
    "fields",
    [
        {"subject": "Hi\r\nBcc: victim@remote.example"},
        {"subject": "Hi\nX-Injected: yes"},
        {"subject": "Hi\rX"},
        {"headers": {"X-A": "ok\r\nBcc: victim@remote.example"}},
        {"headers": {"X-A\r\nBcc": "x"}},
        {"to": ["Ann\r\nBcc: v@remote.example <ann@remote.example>"]},
        {"to": [{"name": "Ann\nX: y", "address": "ann@remote.example"}]},
        {"from": "Shop\r\n <shop@example.com>"},
        {"attachments": [{"filename": "a\r\nContent-Type: text/html", "content": "aGk="}]},
    ],
)
def test_header_injection_is_refused(fields):
    assert refused(**fields).status == 400


def test_size_limit_counts_the_finished_message():
    small = ComposeConfig("mx.test.example", 2000, 5, CONFIG.is_local_domain)
    payload = {"from": "a@example.com", "to": "b@remote.example", "attachments": [{"filename": "x", "content": base64.b64encode(b"\x00" * 1400).decode()}]}
    with pytest.raises(MessageTooLarge) as caught:
        compose(payload, small)  # 1400 bytes become ~1900 in base64, plus headers
    assert caught.value.status == 413 and "2000-byte limit" in caught.value.message
    payload["attachments"][0]["content"] = base64.b64encode(b"\x00" * 900).decode()
    assert len(compose(payload, small).message) <= 2000


def test_body_must_be_an_object():
    for payload in (None, [], "x", 5):
        with pytest.raises(ComposeError, match="JSON object"):
            compose(payload, CONFIG)


def test_idna_2008_not_2003_and_bad_a_labels_refused():
    """"ß" is its own letter in IDNA 2008 (RFC 5892): Python's IDNA 2003 codec would
    have made ``ss``, another domain."""
    from mailappliance.services import compose as c

    box = c.parse_mailbox_item("ann@ßß.example", "to")
    assert box.address.domain == "xn--zcaa.example"
    for bad in ("ann@xn--zz.example", "ann@\u0301a.example"):  # a bad A-label; a leading combining mark
        with pytest.raises(c.ComposeError):
            c.parse_mailbox_item(bad, "to")


@pytest.mark.parametrize("name", ["Authentication-Results", "ARC-Seal", "Received-SPF", "arc-message-signature"])
def test_verdict_headers_are_reserved(name):
    from mailappliance.services import compose as c

    with pytest.raises(c.ComposeError):
        c._extra_headers({name: "mx.example.com; spf=pass"})


def test_the_same_header_twice_in_other_case_is_refused():
    from mailappliance.services import compose as c

    with pytest.raises(c.ComposeError, match="twice"):
        c._extra_headers({"References": "<a@x>", "references": "<b@x>"})
