"""Framing: command lines and DATA bodies (RFC 5321 §2.3.8, §4.5.2, §4.5.3.1)."""
import pytest

from mailappliance.protocol.lines import DataError, DataReader, LineBuffer, LineTooLong


def test_lines_and_leftover():
    buf = LineBuffer()
    buf.feed(b"EHLO a\r\nMAIL FROM:<x@y.example>\r\nRC")
    assert buf.next_line(512) == b"EHLO a"
    assert buf.next_line(512) == b"MAIL FROM:<x@y.example>"
    assert buf.next_line(512) is None
    assert len(buf) == 2  # "RC" waits for the rest
    buf.feed(b"PT TO:<z@y.example>\n")
    assert buf.next_line(512) == b"RCPT TO:<z@y.example>"


def test_overlong_line_is_reported_once_and_skipped():
    buf = LineBuffer()
    buf.feed(b"X" * 600)
    assert buf.next_line(512) is None  # discarding, end not seen yet
    buf.feed(b"Y" * 100 + b"\r\nNOOP\r\n")
    with pytest.raises(LineTooLong):
        buf.next_line(512)
    assert buf.next_line(512) == b"NOOP"


def test_overlong_complete_line():
    buf = LineBuffer()
    buf.feed(b"Z" * 520 + b"\r\nQUIT\r\n")
    with pytest.raises(LineTooLong):
        buf.next_line(512)
    assert buf.next_line(512) == b"QUIT"


def test_clear_drops_pipelined_plaintext():
    buf = LineBuffer()
    buf.feed(b"STARTTLS\r\nMAIL FROM:<injected@x.example>\r\n")
    assert buf.next_line(512) == b"STARTTLS"
    buf.clear()
    assert buf.next_line(512) is None and len(buf) == 0


def read(chunks, max_size=10_000):
    reader = DataReader(max_size)
    done = False
    for chunk in chunks:
        done = reader.feed(chunk)
    assert done
    return reader


def test_data_end_split_across_chunks_and_leftover():
    reader = read([b"Subject: x\r\n\r\nhello\r", b"\n.", b"\r\nQUIT\r\n"])
    assert reader.result.message == b"Subject: x\r\n\r\nhello\r\n"
    assert reader.result.error is None
    assert reader.leftover == b"QUIT\r\n"


def test_empty_message_and_terminator_first():
    reader = read([b".\r\n"])
    assert reader.result.message == b""


def test_dot_unstuffing():
    reader = read([b"..leading\r\n...two\r\n.\r\n"])
    assert reader.result.message == b".leading\r\n..two\r\n"


@pytest.mark.parametrize(
    "smuggled",
    [
        b"a\r\n\n.\nMAIL FROM:<x@evil.example>\r\n",  # <LF>.<LF>
        b"a\r\n\r.\rMAIL FROM:<x@evil.example>\r\n",  # <CR>.<CR>
        b"a\n.\r\nMAIL FROM:<x@evil.example>\r\n",  # <LF>.<CR><LF>
        b"a\r\n.\nMAIL FROM:<x@evil.example>\r\n",  # <CR><LF>.<LF>
    ],
)
def test_smuggling_sequences_are_refused_at_once(smuggled):
    reader = DataReader(10_000)
    assert reader.feed(smuggled), "no need to wait for the real end"
    assert reader.result.error == DataError.BARE_LINE_ENDING
    assert reader.result.message is None


def test_crlf_split_across_feeds_is_not_bare():
    reader = read([b"line one\r", b"\nline two\r", b"\n.\r", b"\nQUIT\n"])
    assert reader.result.error is None
    assert reader.result.message == b"line one\r\nline two\r\n"
    assert reader.leftover == b"QUIT\n", "what follows the data is not data"


def test_lone_cr_at_the_end_then_something_else():
    reader = DataReader(10_000)
    assert not reader.feed(b"a\r")
    assert reader.feed(b"b\r\n")
    assert reader.result.error == DataError.BARE_LINE_ENDING


def test_too_big_is_discarded_while_reading():
    reader = DataReader(2000)
    for _ in range(100):
        assert not reader.feed(b"x" * 998 + b"\r\n")
    assert len(reader._buf) <= 4  # nothing kept but a tail
    assert reader.feed(b".\r\nNOOP\r\n")
    assert reader.result.error == DataError.TOO_BIG
    assert reader.leftover == b"NOOP\r\n"


def test_line_over_1000_octets_refused():
    reader = read([b"a" * 999 + b"\r\n" + b".\r\n"])
    assert reader.result.error == DataError.LINE_TOO_LONG
    reader = read([b"a" * 998 + b"\r\n" + b".\r\n"])
    assert reader.result.error is None
