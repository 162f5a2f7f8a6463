"""SASL pieces shared by SMTP AUTH (RFC 4954) and IMAP AUTHENTICATE (RFC 3501 §6.2.2).

Pure functions: base64 responses in, credentials or an error out.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Optional, Union

MECHANISMS = ("PLAIN", "LOGIN")
LOGIN_USERNAME_PROMPT = "VXNlcm5hbWU6"  # base64 "Username:" (draft-murchison-sasl-login)
LOGIN_PASSWORD_PROMPT = "UGFzc3dvcmQ6"  # base64 "Password:"
CANCEL = "*"  # RFC 4954 §4, RFC 3501 §6.2.2


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


BAD_BASE64 = "bad-base64"
MALFORMED = "malformed"


def decode_base64(text: str) -> Optional[bytes]:
    """Strict base64 (RFC 4648 §4); None when it is not."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def decode_text(text: str) -> Optional[str]:
    """A base64 response holding UTF-8 text (LOGIN's username and password)."""
    decoded = decode_base64(text)
    if decoded is None:
        return None
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        return None


def parse_plain(response: str) -> Union[Credentials, str]:
    """RFC 4616 §2: ``[authzid] NUL authcid NUL passwd``; ``=`` is an empty response.

    Returns :class:`Credentials`, or ``BAD_BASE64`` / ``MALFORMED``. An authzid
    other than the authcid itself (acting as someone else) is ``MALFORMED``.
    """
    decoded = b"" if response == "=" else decode_base64(response)
    if decoded is None:
        return BAD_BASE64
    parts = decoded.split(b"\x00")
    if len(parts) != 3:
        return MALFORMED
    try:
        authzid, authcid, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        return MALFORMED
    if not authcid or (authzid and authzid.lower() != authcid.lower()):
        return MALFORMED
    return Credentials(authcid, password)
