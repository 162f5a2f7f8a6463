"""Modified UTF-7 folder names (RFC 3501 §5.1.3)."""
import pytest

from mailappliance.protocol.imap import utf7

PAIRS = [
    ("INBOX", "INBOX"),
    ("", ""),
    ("&", "&-"),
    ("A&B", "A&-B"),
    ("&&", "&-&-"),
    ("Entwürfe", "Entw&APw-rfe"),
    ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # the RFC's own example
    ("Gesendete Objekte", "Gesendete Objekte"),
    ("é", "&AOk-"),
    ("éé", "&AOkA6Q-"),
    ("a\U0001F600b", "a&2D3eAA-b"),  # outside the BMP: a surrogate pair
    ("tab\there", "tab&AAk-here"),
    ("Ünïcödé & more", "&ANw-n&AO8-c&APY-d&AOk- &- more"),
]


@pytest.mark.parametrize("name, encoded", PAIRS)
def test_encode(name, encoded):
    assert utf7.encode(name) == encoded


@pytest.mark.parametrize("name, encoded", PAIRS)
def test_decode(name, encoded):
    assert utf7.decode(encoded) == name


@pytest.mark.parametrize("name", ["Привет", "a/b/c", "&-&", "x" * 300, "日本語&english", "\u00ff" * 7])
def test_round_trip(name):
    assert utf7.decode(utf7.encode(name)) == name


@pytest.mark.parametrize(
    "lenient, meaning",
    [
        ("&AGEAYgBj-", "abc"),  # printable ASCII inside a run
        ("&AOk-&AOk-", "éé"),  # two adjacent runs
        ("&AOl-", "é"),  # non-zero padding bits
        ("Entwürfe", "Entwürfe"),  # raw non-ASCII (clients assuming UTF-8)
    ],
)
def test_decode_accepts_non_canonical_forms(lenient, meaning):
    assert utf7.decode(lenient) == meaning


@pytest.mark.parametrize(
    "bad",
    [
        "&",  # unterminated
        "abc&AOk",  # unterminated run
        "&AO*-",  # not in the alphabet
        "&AO/-",  # '/' is ',' in modified base64
        "&A-",  # a single base64 character carries no octet
        "&AOkA-",  # odd number of octets
        "&2D0-",  # a lone high surrogate
        "&AOk=-",  # padding is not used
    ],
)
def test_decode_rejects_invalid(bad):
    with pytest.raises(ValueError):
        utf7.decode(bad)
