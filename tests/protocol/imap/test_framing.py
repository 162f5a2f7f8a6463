"""Command framing: lines, literals and limits (RFC 3501 §4.3, RFC 7888)."""
import pytest

from mailappliance.protocol.imap.framing import (
    REASON_COMMAND, REASON_LINE, REASON_LITERAL, CommandBytes, CommandFramer, NeedContinuation, Rejected,
    literal_at_end, tag_of,
)

MAX_LINE = 64
MAX_LITERAL = 100


def framer(**limits) -> CommandFramer:
    return CommandFramer(limits.pop("max_line", MAX_LINE), limits.pop("max_literal", MAX_LITERAL), **limits)


def drain(f: CommandFramer) -> list:
    events = []
    while (event := f.next_event()) is not None:
        events.append(event)
    return events


def run(*chunks: bytes, **limits) -> list:
    f = framer(**limits)
    events = []
    for chunk in chunks:
        f.feed(chunk)
        events += drain(f)
    return events


def test_simple_commands_and_leftover():
    f = framer()
    f.feed(b"a NOOP\r\nb CAPABILITY\r\nc LOG")
    assert f.next_event() == CommandBytes(b"a NOOP")
    assert f.next_event() == CommandBytes(b"b CAPABILITY")
    assert f.next_event() is None
    assert f.buffered == len(b"c LOG")
    f.feed(b"OUT\r\n")
    assert f.next_event() == CommandBytes(b"c LOGOUT")
    assert f.next_event() is None and f.buffered == 0


def test_byte_by_byte():
    data = b"a LOGIN {4}\r\nuser {4+}\r\npass\r\nb NOOP\r\n"
    events = run(*[data[i : i + 1] for i in range(len(data))])
    assert events == [
        NeedContinuation(4),
        CommandBytes(b"a LOGIN {4}\r\nuser {4+}\r\npass"),
        CommandBytes(b"b NOOP"),
    ]


def test_bare_lf_is_a_line_ending_and_kept_after_literals():
    assert run(b"a NOOP\nb SELECT {5}\nINBOX\n") == [
        CommandBytes(b"a NOOP"), NeedContinuation(5), CommandBytes(b"b SELECT {5}\nINBOX"),
    ]


def test_lone_cr_is_not_a_line_ending():
    assert run(b"a NO\rOP\r\n") == [CommandBytes(b"a NO\rOP")]


def test_literal_content_is_opaque():
    # CRLF, braces and a literal announcement inside a literal are just octets
    body = b"x\r\n{3}\r\nb NOOP\r\n"
    data = b"a APPEND INBOX {%d+}\r\n%s\r\n" % (len(body), body)
    assert run(data) == [CommandBytes(data[:-2])]


def test_zero_length_literals():
    assert run(b"a LOGIN {0}\r\n {0+}\r\n\r\n") == [NeedContinuation(0), CommandBytes(b"a LOGIN {0}\r\n {0+}\r\n")]


def test_literal_split_across_feeds():
    f = framer()
    f.feed(b"a APPEND x {10}\r\n0123")
    assert f.next_event() == NeedContinuation(10)
    assert f.next_event() is None
    f.feed(b"456789")
    assert f.next_event() is None  # the command goes on after the literal
    f.feed(b" tail\r\n")
    assert f.next_event() == CommandBytes(b"a APPEND x {10}\r\n0123456789 tail")


def test_line_exactly_at_the_limit():
    line = b"a " + b"x" * (MAX_LINE - 2)
    assert run(line + b"\r\n") == [CommandBytes(line)]
    # the CR arrives alone: not yet over the limit
    assert run(line + b"\r", b"\n") == [CommandBytes(line)]


def test_over_long_line_with_end_in_sight_is_discarded():
    assert run(b"t1 " + b"x" * MAX_LINE + b"\r\nb NOOP\r\n") == [Rejected("t1", REASON_LINE), CommandBytes(b"b NOOP")]


def test_over_long_line_without_end_is_rejected_early_and_memory_stays_bounded():
    f = framer()
    f.feed(b"t2 " + b"y" * (MAX_LINE * 2))
    assert f.next_event() == Rejected("t2", REASON_LINE)
    for _ in range(100):
        f.feed(b"z" * 1000)
        assert f.next_event() is None
        assert f.buffered == 0
    f.feed(b"end\r\nb NOOP\r\n")
    assert drain(f) == [CommandBytes(b"b NOOP")]


def test_over_long_line_ending_in_nonsync_literal_skips_its_octets():
    data = b"t3 APPEND " + b"x" * MAX_LINE + b" {8+}\r\nb NOOP\r\n rest\r\nc NOOP\r\n"
    assert run(data) == [Rejected("t3", REASON_LINE), CommandBytes(b"c NOOP")]
    # the same with the over-long line still unfinished when it is refused
    assert run(data[:MAX_LINE + 5], data[MAX_LINE + 5 :]) == [Rejected("t3", REASON_LINE), CommandBytes(b"c NOOP")]


def test_over_long_continuation_line_keeps_the_tag():
    data = b"t4 LOGIN {3}\r\nabc " + b"p" * MAX_LINE + b"\r\nb NOOP\r\n"
    assert run(data) == [NeedContinuation(3), Rejected("t4", REASON_LINE), CommandBytes(b"b NOOP")]


def test_sync_literal_too_large_is_refused_and_never_read():
    assert run(b"t5 APPEND x {101}\r\nb NOOP\r\n") == [Rejected("t5", REASON_LITERAL), CommandBytes(b"b NOOP")]


def test_nonsync_literal_too_large_is_skipped_with_the_rest_of_the_command():
    message = b"b NOOP\r\n" * 20  # 160 octets that look like commands
    data = b"t6 APPEND x {160+}\r\n" + message + b" more {3+}\r\nc N\r\nd NOOP\r\n"
    assert run(data) == [Rejected("t6", REASON_LITERAL), CommandBytes(b"d NOOP")]
    chunks = [data[i : i + 7] for i in range(0, len(data), 7)]
    assert run(*chunks) == [Rejected("t6", REASON_LITERAL), CommandBytes(b"d NOOP")]


def test_absurd_literal_sizes():
    assert run(b"t7 LOGIN {99999999999999999999999}\r\nb NOOP\r\n") == [
        Rejected("t7", REASON_LITERAL), CommandBytes(b"b NOOP"),
    ]
    f = framer()
    f.feed(b"t8 LOGIN {99999999999999999999999+}\r\nb NOOP\r\n")
    assert drain(f) == [Rejected("t8", REASON_LITERAL)]  # everything after is the literal
    assert f.buffered == 0


def test_command_size_cap_counts_all_literals():
    f = framer(max_command=150)
    f.feed(b"t9 LOGIN {90}\r\n")
    assert f.next_event() == NeedContinuation(90)
    f.feed(b"u" * 90 + b" {90}\r\nb NOOP\r\n")
    assert drain(f) == [Rejected("t9", REASON_COMMAND), CommandBytes(b"b NOOP")]


def test_command_size_cap_with_many_small_literals():
    f = framer(max_command=100)
    f.feed(b"t0 X" + b" {0+}\r\n" * 30 + b"\r\nb NOOP\r\n")
    assert drain(f) == [Rejected("t0", REASON_COMMAND), CommandBytes(b"b NOOP")]


def test_default_command_cap():
    assert framer().max_command == MAX_LITERAL + 2 * MAX_LINE


def test_rejected_without_a_valid_tag():
    assert run(b"+bad " + b"x" * MAX_LINE + b"\r\n") == [Rejected(None, REASON_LINE)]
    assert run(b"x" * (MAX_LINE + 10)) == [Rejected("x" * MAX_LINE, REASON_LINE)]


@pytest.mark.parametrize(
    "line, tag",
    [
        (b"a001 NOOP", "a001"),
        (b"A.b]c NOOP", "A.b]c"),
        (b"a001", "a001"),
        (b"a001\r\n", "a001"),
        (b"+a NOOP", None),
        (b"a+b NOOP", None),
        (b"a*b NOOP", None),
        (b"a%b NOOP", None),
        (b"(a NOOP", None),
        (b"a\"b NOOP", None),
        (b" a NOOP", None),
        (b"", None),
        (b"\xe9t NOOP", None),
    ],
)
def test_tag_of(line, tag):
    assert tag_of(line) == tag


@pytest.mark.parametrize(
    "line, literal",
    [
        (b"a LOGIN {5}", (5, True)),
        (b"a LOGIN {5+}", (5, False)),
        (b"a LOGIN {5}\r", (5, True)),
        (b"a LOGIN {0}", (0, True)),
        (b"a LOGIN {5} x", None),
        (b"a LOGIN {+5}", None),
        (b"a LOGIN {}", None),
        (b"a LOGIN {-1}", None),
        (b"a LOGIN {1234567890123}", (-1, True)),
    ],
)
def test_literal_at_end(line, literal):
    assert literal_at_end(line) == literal


# ---------------------------------------------------------------- plain lines


def test_next_line_after_a_command():
    f = framer()
    f.feed(b"a IDLE\r\nDONE\r\nb NOOP {3}\r\n")
    assert f.next_event() == CommandBytes(b"a IDLE")
    assert f.next_line() == b"DONE"
    assert f.next_event() == NeedContinuation(3)  # back to commands


def test_next_line_has_no_literal_processing():
    f = framer()
    f.feed(b"dGVzdA== {5}\r\n")
    assert f.next_line() == b"dGVzdA== {5}"
    assert f.next_line() is None
    f.feed(b"*\n")
    assert f.next_line() == b"*"


def test_next_line_waits_for_the_end():
    f = framer()
    f.feed(b"DO")
    assert f.next_line() is None
    f.feed(b"NE\r")
    assert f.next_line() is None
    f.feed(b"\n")
    assert f.next_line() == b"DONE"


def test_over_long_plain_line_is_cut():
    f = framer()
    f.feed(b"A" * (MAX_LINE + 10))
    assert f.next_line() == b"A" * MAX_LINE
    f.feed(b"B" * 1000)
    assert f.next_line() is None and f.buffered == 0
    f.feed(b"BB\r\nDONE\r\n")
    assert f.next_line() == b"DONE"
    f.feed(b"C" * MAX_LINE + b"CC\r\n")
    assert f.next_line() == b"C" * MAX_LINE


def test_next_line_in_the_middle_of_a_command_is_a_bug():
    f = framer()
    f.feed(b"a LOGIN {3}\r\n")
    assert f.next_event() == NeedContinuation(3)
    with pytest.raises(RuntimeError):
        f.next_line()
