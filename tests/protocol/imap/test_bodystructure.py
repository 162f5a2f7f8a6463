"""BODY, BODYSTRUCTURE and ENVELOPE from the summary stored at delivery (RFC 3501 §7.4.2).

Expected strings are written by hand from the RFC 3501 §9 grammar, in the shape
Dovecot gives for the same message (lower-case types as sent, every extension field,
adjacent bodies in a multipart), except that no default charset is invented.
"""
from datetime import datetime, timezone

from mailappliance.protocol.imap import fetch
from mailappliance.protocol.imap.bodystructure import body_structure, envelope, structure_needs_raw
from mailappliance.protocol.imap.types import FetchAttribute
from mailappliance.services.mime import summarize


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def stored(raw: bytes, uid: int = 5) -> dict:
    """The message document as delivery stores it (services/inbound.py, imap backend)."""
    summary = summarize(raw)
    return {
        "uid": uid, "modseq": 7, "flags": [], "size": len(raw),
        "internal_date": datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        "envelope": summary.envelope, "structure": summary.structure,
    }


PLAIN = crlf(
    """Return-Path: <alice@example.com>
Received: from mx.example.com (mx.example.com [192.0.2.1])
\tby mail.example.org with ESMTP; Mon, 7 Feb 1994 21:52:25 -0800
From: "Alice Example" <alice@example.com>
To: Bob <bob@example.org>, carol@example.org
Cc: =?ISO-8859-1?Q?Andr=E9?= <andre@example.net>
Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= from Alice
Date: Mon, 7 Feb 1994 21:52:25 -0800
Message-ID: <B27397-0100000@example.com>
In-Reply-To: <prev@example.org>
MIME-Version: 1.0
Content-Type: text/plain; charset="utf-8"
Content-Transfer-Encoding: 8bit

Hello Bob,
this is line two.
"""
)

ALTERNATIVE = crlf(
    """From: shop@example.com
To: bob@example.org
Subject: Your order
Date: Tue, 2 Jan 2024 10:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b1"

This is a multi-part message in MIME format.

--b1
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: quoted-printable

Thanks for your order=21
--b1
Content-Type: text/html; charset=utf-8

<html><body>Thanks!</body></html>
--b1--
"""
)

MIXED = crlf(
    """From: Carol <carol@example.org>
To: bob@example.org
Subject: report
Date: Wed, 3 Jan 2024 09:30:00 +0100
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="----=_Part_0_1"

------=_Part_0_1
Content-Type: text/plain; charset=UTF-8
Content-Language: en

See the attached report.

------=_Part_0_1
Content-Type: application/pdf; name="report.pdf"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="report.pdf"
Content-ID: <part1@example.org>
Content-Description: Quarterly report
Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==

JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFIvRmlsdGVyIC9GbGF0ZURlY29k
ZT4+CnN0cmVhbQp4nCvkMlAwUDA=
------=_Part_0_1
Content-Type: image/png
Content-Transfer-Encoding: base64
Content-Disposition: inline
Content-Location: http://example.org/logo.png
Content-Language: en, fr

iVBORw0KGgo=
------=_Part_0_1--
"""
)

# multipart/mixed > [text/plain, message/rfc822 > multipart/alternative >
#     [text/plain, multipart/related > [text/html, image/gif]]]
NESTED = crlf(
    """From: a@example.com
To: b@example.com
Subject: Fwd: inner
Date: Thu, 4 Jan 2024 12:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

preamble
--outer
Content-Type: text/plain

see attached
--outer
Content-Type: message/rfc822
Content-Disposition: attachment

From: "C" <c@example.com>
Sender: list@example.net
Reply-To: replies@example.net
Subject: inner
Date: Wed, 3 Jan 2024 08:00:00 +0000
Message-ID: <inner@example.com>
Content-Type: multipart/alternative; boundary=inner

--inner
Content-Type: text/plain; charset=us-ascii

hi
--inner
Content-Type: multipart/related; boundary=rel; type="text/html"

--rel
Content-Type: text/html

<p>hi<img src=cid:x></p>
--rel
Content-Type: image/gif
Content-ID: <x>
Content-Transfer-Encoding: base64

R0lGODlhAQABAAAAACw=
--rel--
--inner--

--outer--
epilogue
"""
)


def bodystructure(raw: bytes, name: str = "BODYSTRUCTURE") -> bytes:
    doc = stored(raw)
    attributes = [FetchAttribute(name)]
    return fetch.render(doc, attributes, raw if fetch.needs_raw(attributes, doc) else None, [])


def test_plain_text_bodystructure_and_body():
    assert bodystructure(PLAIN) == (
        b'BODYSTRUCTURE ("text" "plain" ("charset" "utf-8") NIL NIL "8bit" 31 2 NIL NIL NIL NIL)'
    )
    assert bodystructure(PLAIN, "BODY") == b'BODY ("text" "plain" ("charset" "utf-8") NIL NIL "8bit" 31 2)'


def test_plain_text_needs_no_raw_bytes():
    assert not fetch.needs_raw([FetchAttribute("BODYSTRUCTURE"), FetchAttribute("BODY")], stored(PLAIN))


def test_envelope_keeps_encoded_words_and_defaults_sender_and_reply_to_to_from():
    alice = b'(("Alice Example" NIL "alice" "example.com"))'
    assert envelope(stored(PLAIN)["envelope"]) == (
        b'("Mon, 7 Feb 1994 21:52:25 -0800" "=?UTF-8?Q?Gr=C3=BC=C3=9Fe?= from Alice" '
        + alice + b" " + alice + b" " + alice + b" "
        + b'(("Bob" NIL "bob" "example.org")(NIL NIL "carol" "example.org")) '
        + b'(("=?ISO-8859-1?Q?Andr=E9?=" NIL "andre" "example.net")) NIL '
        + b'"<prev@example.org>" "<B27397-0100000@example.com>")'
    )


def test_envelope_of_a_message_without_headers_is_all_nil():
    doc = stored(b"\r\njust a body\r\n")
    assert envelope(doc["envelope"]) == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
    assert envelope(None) == b"(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"


def test_envelope_address_without_domain_is_not_a_group_marker():
    doc = stored(crlf("From: postmaster\nTo: undisclosed-recipients:;\nSubject:\n\nx\n"))
    assert envelope(doc["envelope"]) == (
        b'(NIL "" ((NIL NIL "postmaster" "")) ((NIL NIL "postmaster" "")) ((NIL NIL "postmaster" "")) '
        b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL)) NIL NIL NIL NIL)'  # a group (RFC 3501 §7.4.2)
    )


def test_multipart_alternative():
    assert bodystructure(ALTERNATIVE) == (
        b'BODYSTRUCTURE (("text" "plain" ("charset" "us-ascii") NIL NIL "quoted-printable" 24 1 NIL NIL NIL NIL)'
        b'("text" "html" ("charset" "utf-8") NIL NIL "7bit" 33 1 NIL NIL NIL NIL)'
        b' "alternative" ("boundary" "b1") NIL NIL NIL)'
    )
    assert bodystructure(ALTERNATIVE, "BODY") == (
        b'BODY (("text" "plain" ("charset" "us-ascii") NIL NIL "quoted-printable" 24 1)'
        b'("text" "html" ("charset" "utf-8") NIL NIL "7bit" 33 1) "alternative")'
    )


def test_multipart_mixed_with_attachments_has_extension_data():
    assert bodystructure(MIXED) == (
        b'BODYSTRUCTURE (("text" "plain" ("charset" "UTF-8") NIL NIL "7bit" 26 1 NIL NIL "en" NIL)'
        b'("application" "pdf" ("name" "report.pdf") "<part1@example.org>" "Quarterly report" "base64" 106'
        b' "Q2hlY2sgSW50ZWdyaXR5IQ==" ("attachment" ("filename" "report.pdf")) NIL NIL)'
        b'("image" "png" NIL NIL NIL "base64" 12 NIL ("inline" NIL) ("en" "fr") "http://example.org/logo.png")'
        b' "mixed" ("boundary" "----=_Part_0_1") NIL NIL NIL)'
    )


def test_nested_message_rfc822_containing_multiparts():
    inner_envelope = (
        b'("Wed, 3 Jan 2024 08:00:00 +0000" "inner" (("C" NIL "c" "example.com")) '
        b'((NIL NIL "list" "example.net")) ((NIL NIL "replies" "example.net")) NIL NIL NIL NIL "<inner@example.com>")'
    )
    # The encapsulated message is 549 octets in 27 lines (measured in the raw bytes).
    assert bodystructure(NESTED) == (
        b'BODYSTRUCTURE (("text" "plain" NIL NIL NIL "7bit" 12 1 NIL NIL NIL NIL)'
        b'("message" "rfc822" NIL NIL NIL "7bit" 549 ' + inner_envelope + b" "
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 2 1 NIL NIL NIL NIL)'
        b'(("text" "html" NIL NIL NIL "7bit" 24 1 NIL NIL NIL NIL)'
        b'("image" "gif" NIL "<x>" NIL "base64" 20 NIL NIL NIL NIL)'
        b' "related" ("boundary" "rel" "type" "text/html") NIL NIL NIL)'
        b' "alternative" ("boundary" "inner") NIL NIL NIL)'
        b' 27 NIL ("attachment" NIL) NIL NIL)'
        b' "mixed" ("boundary" "outer") NIL NIL NIL)'
    )
    assert bodystructure(NESTED, "BODY") == (
        b'BODY (("text" "plain" NIL NIL NIL "7bit" 12 1)'
        b'("message" "rfc822" NIL NIL NIL "7bit" 549 ' + inner_envelope + b" "
        b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 2 1)'
        b'(("text" "html" NIL NIL NIL "7bit" 24 1)("image" "gif" NIL "<x>" NIL "base64" 20) "related")'
        b' "alternative") 27) "mixed")'
    )


def test_message_rfc822_size_and_lines_are_those_of_the_encapsulated_bytes():
    start = NESTED.index(b'From: "C"')
    end = NESTED.index(b"\r\n--outer--")
    assert end - start == 549 and NESTED[start:end].count(b"\n") == 27 and NESTED[start:end].endswith(b"\n")


def test_message_rfc822_parts_need_the_raw_bytes_for_body_and_bodystructure_only():
    doc = stored(NESTED)
    assert fetch.needs_raw([FetchAttribute("BODYSTRUCTURE")], doc)
    assert fetch.needs_raw([FetchAttribute("BODY")], doc)
    cheap = ["FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "MODSEQ"]
    assert not fetch.needs_raw([FetchAttribute(n) for n in cheap], doc)


def test_without_raw_bytes_an_unknown_size_renders_as_zero_rather_than_failing():
    assert b'"message" "rfc822" NIL NIL NIL "7bit" 0 ' in body_structure(stored(NESTED)["structure"], None)


def test_top_level_message_rfc822():
    raw = crlf("From: a@example.com\nContent-Type: message/rfc822\n\nSubject: wrapped\n\nbody\n")
    assert bodystructure(raw) == (
        b'BODYSTRUCTURE ("message" "rfc822" NIL NIL NIL "7bit" 26 '
        b'(NIL "wrapped" NIL NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" NIL NIL NIL "7bit" 6 1 NIL NIL NIL NIL)'
        b" 3 NIL NIL NIL NIL)"
    )


def test_multipart_digest_parts_default_to_message_rfc822():
    raw = crlf(
        "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\n1\n--d\n\nSubject: two\n\n2\n--d--\n"
    )
    one = b'(NIL "one" NIL NIL NIL NIL NIL NIL NIL NIL)'
    two = b'(NIL "two" NIL NIL NIL NIL NIL NIL NIL NIL)'
    leaf = b'("text" "plain" NIL NIL NIL "7bit" 1 1)'
    assert bodystructure(raw, "BODY") == (
        b'BODY (("message" "rfc822" NIL NIL NIL "7bit" 17 ' + one + b" " + leaf + b" 3)"
        b'("message" "rfc822" NIL NIL NIL "7bit" 17 ' + two + b" " + leaf + b' 3) "digest")'
    )


def test_missing_close_boundary_keeps_the_last_part_to_the_end():
    # Less the final CRLF, as the stdlib parser measured it at delivery.
    raw = crlf(
        "Content-Type: multipart/mixed; boundary=xyz\nSubject: truncated\n\n"
        "--xyz\nContent-Type: text/plain\n\nfirst\n--xyz\nContent-Type: text/plain\n\nsecond, never closed\n"
    )
    assert bodystructure(raw, "BODY") == (
        b'BODY (("text" "plain" NIL NIL NIL "7bit" 5 1)("text" "plain" NIL NIL NIL "7bit" 20 1) "mixed")'
    )


def test_bare_lf_message():
    raw = (
        b"From: x@example.com\nSubject: lf\nContent-Type: multipart/mixed; boundary=q\n\n"
        b"--q\nContent-Type: text/plain\n\none\ntwo\n--q\n\nno header part\n--q--\n"
    )
    assert bodystructure(raw, "BODY") == (
        b'BODY (("text" "plain" NIL NIL NIL "7bit" 7 2)("text" "plain" NIL NIL NIL "7bit" 14 1) "mixed")'
    )


def test_boundary_never_found_is_served_with_one_empty_part_as_dovecot_does():
    raw = crlf("Content-Type: multipart/mixed; boundary=nothere\n\n--other\n\ntext\n--other--\n")
    assert bodystructure(raw) == (
        b'BODYSTRUCTURE (("text" "plain" NIL NIL NIL "7bit" 0 0 NIL NIL NIL NIL) "mixed" ("boundary" "nothere")'
        b" NIL NIL NIL)"
    )


def test_opaque_structure_is_one_octet_stream_part_without_raw_bytes():
    parts = "".join("--b\nContent-Type: text/plain\n\nx\n" for _ in range(1100))
    raw = crlf("Subject: many\nContent-Type: multipart/mixed; boundary=b\n\n" + parts + "--b--\n")
    doc = stored(raw)
    assert doc["structure"].get("opaque")
    assert not fetch.needs_raw([FetchAttribute("BODYSTRUCTURE")], doc)
    body = raw[raw.index(b"\r\n\r\n") + 4 :]
    assert bodystructure(raw) == (
        b'BODYSTRUCTURE ("application" "octet-stream" NIL NIL NIL "7bit" %d NIL NIL NIL NIL)' % len(body)
    )


def test_missing_structure_is_summarised_from_the_raw_bytes():
    doc = stored(ALTERNATIVE)
    del doc["structure"]
    attributes = [FetchAttribute("BODY")]
    assert fetch.needs_raw(attributes, doc)
    assert fetch.render(doc, attributes, ALTERNATIVE, []) == bodystructure(ALTERNATIVE, "BODY")
    assert fetch.render(doc, attributes, None, []) == b'BODY ("text" "plain" NIL NIL NIL "7bit" 0 0)'


def test_structure_needs_raw():
    assert structure_needs_raw(None) and structure_needs_raw({})
    assert not structure_needs_raw(stored(MIXED)["structure"])
    assert structure_needs_raw(stored(NESTED)["structure"])
