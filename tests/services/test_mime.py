"""MIME summary: header decoding, attachments, IMAP-ready envelope and structure, bad mail."""
from mailappliance.services.mime import decode_text, summarize

NESTED = (
    b"From: =?utf-8?b?Wm/Dqw==?= <zoe@a.example>\r\n"
    b"To: Bob <bob@b.example>, carol@c.example\r\n"
    b"Subject: =?iso-8859-1?q?caf=E9?= and more\r\n"
    b"Message-ID: <m1@a.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n"
    b"\r\n"
    b"--outer\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"line one\r\nline two\r\n"
    b"--outer\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: inner\r\nFrom: x@y.example\r\n\r\ninner body\r\n"
    b"--outer\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.bin\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAw==\r\n"
    b"--outer--\r\n"
)


def test_nested_message_summary():
    s = summarize(NESTED)
    assert s.subject == "café and more"
    assert s.from_ == "Zoë <zoe@a.example>"
    assert s.to == ["bob@b.example", "carol@c.example"]
    assert s.message_id == "<m1@a.example>"
    assert s.attachments == [{"filename": "résumé.bin", "contentType": "application/octet-stream", "size": 4}]
    assert s.envelope["from"] == [["=?utf-8?b?Wm/Dqw==?=", None, "zoe", "a.example"]], "ENVELOPE keeps raw text"
    assert s.envelope["to"][0] == ["Bob", None, "bob", "b.example"]
    text, inner, binary = s.structure["parts"]
    assert (text["type"], text["subtype"], text["params"]) == ("text", "plain", {"charset": "utf-8"})
    assert text["size"] == len(b"line one\r\nline two") and text["lines"] == 2
    assert inner["type"] == "message" and inner["message"]["envelope"]["subject"] == "inner"
    assert binary["encoding"] == "base64" and binary["disposition"][0] == "attachment"


def test_8bit_and_broken_headers_do_not_raise():
    s = summarize("Subject: Grüße\r\n\r\nbody\r\n".encode("utf-8"))
    assert s.subject == "Grüße"
    assert decode_text("=?bogus-charset?q?x?=") == "=?bogus-charset?q?x?="


def test_malformed_mime_is_summarised_not_dropped():
    raw = b"Content-Type: multipart/mixed; boundary=never-closed\r\n\r\n--never-closed\r\nContent-Type: text/plain\r\n\r\nhalf"
    s = summarize(raw)
    assert s.structure["type"] == "multipart"
    assert s.defects >= 1


def test_no_headers_at_all():
    s = summarize(b"just text\r\n")
    assert s.subject == "" and s.structure["type"] == "text"
