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
    assert (text["type"], text["subtype"], text["params"]) == ("text", "plain", [["charset", "utf-8"]])
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


def test_single_part_fast_path_agrees_with_the_full_parse():
    from mailappliance.services import mime

    samples = [
        b"Subject: a\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nline\r\nline 2 \xc3\xa9\r\n",
        b"Subject: no final newline\r\n\r\nbody",
        b"Subject: =?utf-8?q?x?=\r\nContent-Transfer-Encoding: base64\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\n"
        b"Content-Disposition: attachment; filename=\"a.pdf\"\r\n\r\nAAAA\r\n",
        b"not a header line\r\n\r\nbody\r\n",
        b"\r\nbody after an empty header block\r\n\r\nmore\r\n",
    ]
    for raw in samples:
        fast = summarize(raw)
        full_msg = mime._PARSER.parsebytes(raw)
        assert fast.structure == mime.structure(full_msg), raw
        assert fast.attachments == mime.attachments(full_msg), raw
        assert fast.envelope == mime.envelope(full_msg), raw


def test_group_syntax_is_kept_for_imap_envelope():
    """RFC 3501 §7.4.2: a group is (NIL NIL name NIL) ... (NIL NIL NIL NIL)."""
    from mailappliance.protocol.imap.bodystructure import envelope as render

    raw = (b"From: Ann <ann@example.com>\r\nTo: undisclosed-recipients:;\r\n"
           b"Cc: Team: bob@x.example, Carl <carl@y.example>;, dave@z.example\r\n\r\nbody\r\n")
    env = summarize(raw).envelope
    assert env["groups"]["to"] == [[None, None, "undisclosed-recipients", None], [None, None, None, None]]
    assert "from" not in env["groups"]  # only fields that use groups are kept twice
    rendered = render(env)
    assert b'((NIL NIL "undisclosed-recipients" NIL)(NIL NIL NIL NIL))' in rendered
    assert (b'((NIL NIL "Team" NIL)(NIL NIL "bob" "x.example")("Carl" NIL "carl" "y.example")'
            b'(NIL NIL NIL NIL)(NIL NIL "dave" "z.example"))') in rendered
    # The flat lists search and sort read are unchanged.
    assert [a[2] for a in env["cc"]] == ["bob", "carl", "dave"]


def test_no_groups_field_without_group_syntax():
    assert "groups" not in summarize(b"From: a@b.example\r\nTo: x@y.example\r\n\r\nhi\r\n").envelope
