"""FETCH response data for one stored message (RFC 3501 §6.4.5, §7.4.2; RFC 7162 MODSEQ)."""
from mailappliance.protocol.imap import fetch
from mailappliance.protocol.imap.types import FetchAttribute, Section
from tests.protocol.imap.test_bodystructure import ALTERNATIVE, MIXED, NESTED, PLAIN, stored

SEEN = "\\Seen"


def att(name: str, part=(), text=None, fields=(), partial=None, peek=False) -> FetchAttribute:
    section = Section(part=tuple(part), text=text, fields=tuple(fields)) if name == "BODY[]" else None
    return FetchAttribute("BODY" if section else name, section=section, partial=partial, peek=peek)


def lit(data: bytes) -> bytes:
    return b"{%d}\r\n%s" % (len(data), data)


def render(raw: bytes, *attributes: FetchAttribute, flags=(SEEN,)) -> bytes:
    doc = stored(raw)
    return fetch.render(doc, attributes, raw if fetch.needs_raw(attributes, doc) else None, list(flags))


def test_simple_items_in_the_order_requested():
    assert render(PLAIN, att("UID"), att("FLAGS"), att("RFC822.SIZE"), att("INTERNALDATE"), att("MODSEQ")) == (
        b'UID 5 FLAGS (\\Seen) RFC822.SIZE %d INTERNALDATE " 2-Jan-2024 03:04:05 +0000" MODSEQ (7)' % len(PLAIN)
    )
    assert render(PLAIN, att("FLAGS"), att("UID"), flags=()) == b"FLAGS () UID 5"


def test_flags_come_from_the_session_not_the_document():
    doc = stored(PLAIN)
    doc["flags"] = ["\\Flagged"]
    assert fetch.render(doc, [att("FLAGS")], None, ["\\Flagged", "\\Recent"]) == b"FLAGS (\\Flagged \\Recent)"


def test_each_item_once():
    assert render(PLAIN, att("UID"), att("FLAGS"), att("UID")) == b"UID 5 FLAGS (\\Seen)"
    peeked = att("BODY[]", text="TEXT", peek=True)
    assert render(PLAIN, att("BODY[]", text="TEXT"), peeked).count(b"BODY[TEXT]") == 1


def test_cheap_items_never_need_the_raw_message():
    doc = stored(NESTED)
    cheap = [att(n) for n in ("FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "MODSEQ")]
    assert not fetch.needs_raw(cheap, doc)
    assert not fetch.needs_raw([att("FLAGS"), att("UID")], {"uid": 1})  # even with no structure stored
    assert fetch.render(doc, cheap, None, []).startswith(b"FLAGS () UID 5 INTERNALDATE")


def test_sections_and_rfc822_items_need_the_raw_message():
    doc = stored(PLAIN)
    for attribute in (att("BODY[]"), att("BODY[]", text="HEADER", peek=True), att("RFC822"), att("RFC822.HEADER"),
                      att("RFC822.TEXT")):
        assert fetch.needs_raw([att("UID"), attribute], doc)


def test_body_is_byte_exact():
    assert render(MIXED, att("BODY[]")) == b"BODY[] {%d}\r\n%s" % (len(MIXED), MIXED)
    assert render(MIXED, att("RFC822")) == b"RFC822 {%d}\r\n%s" % (len(MIXED), MIXED)
    bare = PLAIN.replace(b"\r\n", b"\n").replace(b"two.", b"two.\x00\xff\r")
    assert render(bare, att("BODY[]")) == b"BODY[] {%d}\r\n%s" % (len(bare), bare)


def test_rfc822_header_and_text():
    split = PLAIN.index(b"\r\n\r\n") + 4
    header, text = PLAIN[:split], PLAIN[split:]
    assert render(PLAIN, att("RFC822.HEADER"), att("RFC822.TEXT")) == (
        b"RFC822.HEADER {%d}\r\n%s RFC822.TEXT {%d}\r\n%s" % (len(header), header, len(text), text)
    )


def test_header_fields_response_names_the_fields():
    assert render(PLAIN, att("UID"), att("BODY[]", text="HEADER.FIELDS", fields=("SUBJECT", "TO"), peek=True)) == (
        b"UID 5 BODY[HEADER.FIELDS (SUBJECT TO)] "
        + lit(b"To: Bob <bob@example.org>, carol@example.org\r\n"
              b"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= from Alice\r\n\r\n")
    )


def test_partial_fetch_names_the_origin():
    assert render(ALTERNATIVE, att("BODY[]", partial=(0, 10))) == b"BODY[]<0> {10}\r\n" + ALTERNATIVE[:10]
    assert render(ALTERNATIVE, att("BODY[]", part=(2,), partial=(6, 6))) == b"BODY[2]<6> {6}\r\n<body>"
    assert render(ALTERNATIVE, att("BODY[]", partial=(len(ALTERNATIVE) - 2, 100))) == (
        b"BODY[]<%d> {2}\r\n\r\n" % (len(ALTERNATIVE) - 2)
    )
    assert render(ALTERNATIVE, att("BODY[]", partial=(10**6, 10))) == b'BODY[]<1000000> ""'


def test_nonexistent_part_is_the_empty_string():
    assert render(ALTERNATIVE, att("BODY[]", part=(7,))) == b'BODY[7] ""'
    assert render(ALTERNATIVE, att("BODY[]", part=(1,), text="HEADER")) == b'BODY[1.HEADER] ""'


def test_nested_sections():
    assert render(NESTED, att("BODY[]", part=(2, 2, 1), peek=True)) == b"BODY[2.2.1] {24}\r\n<p>hi<img src=cid:x></p>"
    assert render(NESTED, att("BODY[]", part=(2,), text="HEADER.FIELDS.NOT", fields=("FROM", "SENDER", "REPLY-TO",
                                                                                       "DATE", "MESSAGE-ID"))) == (
        b"BODY[2.HEADER.FIELDS.NOT (FROM SENDER REPLY-TO DATE MESSAGE-ID)] "
        + lit(b"Subject: inner\r\nContent-Type: multipart/alternative; boundary=inner\r\n\r\n")
    )


def test_envelope_and_bodystructure_together():
    response = render(ALTERNATIVE, att("UID"), att("ENVELOPE"), att("BODYSTRUCTURE"))
    assert response.startswith(b'UID 5 ENVELOPE ("Tue, 2 Jan 2024 10:00:00 +0000" "Your order" ')
    assert b' BODYSTRUCTURE (("text" "plain" ' in response and response.endswith(b"NIL NIL NIL)")


def test_stored_structure_is_not_reparsed(monkeypatch):
    import mailappliance.services.mime as mime

    doc = stored(NESTED)
    monkeypatch.setattr(mime, "summarize", lambda raw: (_ for _ in ()).throw(AssertionError("re-parsed")))
    assert fetch.render(doc, [att("BODYSTRUCTURE")], NESTED, []).startswith(b"BODYSTRUCTURE ((")


def test_section_without_raw_bytes_is_empty_rather_than_an_error():
    assert fetch.render(stored(PLAIN), [att("BODY[]"), att("RFC822.TEXT")], None, []) == b'BODY[] "" RFC822.TEXT ""'


def test_opaque_message_part_one_is_its_body():
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(1100))
    raw = b"Subject: many\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n"
    body = raw[raw.index(b"\r\n\r\n") + 4 :]
    assert render(raw, att("BODY[]", part=(1,))) == b"BODY[1] {%d}\r\n%s" % (len(body), body)
    assert render(raw, att("BODY[]", part=(2,))) == b'BODY[2] ""'
