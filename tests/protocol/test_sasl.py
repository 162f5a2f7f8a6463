"""SASL PLAIN and LOGIN decoding (RFC 4616, RFC 4954), shared by SMTP and IMAP."""
import base64

import pytest

from mailappliance.protocol import sasl


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def test_plain_with_and_without_authzid():
    assert sasl.parse_plain(b64(b"\0user@example.com\0pw")) == sasl.Credentials("user@example.com", "pw")
    assert sasl.parse_plain(b64(b"User@example.com\0user@example.com\0pw")) == sasl.Credentials("user@example.com", "pw")


@pytest.mark.parametrize(
    "response,error",
    [
        ("not base64!", sasl.BAD_BASE64),
        ("=", sasl.MALFORMED),  # empty response
        (b64(b"only-one-part"), sasl.MALFORMED),
        (b64(b"boss@example.com\0user@example.com\0pw"), sasl.MALFORMED),  # acting as someone else
        (b64(b"\0\0pw"), sasl.MALFORMED),
        (b64(b"\0\xff\xfe\0pw"), sasl.MALFORMED),
    ],
)
def test_plain_errors(response, error):
    assert sasl.parse_plain(response) == error


def test_login_text():
    assert sasl.decode_text(b64("jörg".encode())) == "jörg"
    assert sasl.decode_text(b64(b"\xff")) is None
    assert sasl.decode_text("%%%") is None
