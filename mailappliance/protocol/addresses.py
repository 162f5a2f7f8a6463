"""Envelope paths and their parameters, RFC 5321 §4.1.2 and §4.1.1.2-3.

``parse_mail_argument("FROM:<a@b.example> SIZE=10")`` returns the address and the
ESMTP parameters. Source routes (``<@relay:user@host>``) are accepted and ignored as
§3.6.1 / Appendix C say, so the *final* mailbox decides where mail goes; quoted local
parts are kept quoted, so ``"user@evil"@local.example`` is a local part at
``local.example``, never a relay to ``evil``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010FFFF]"
_DOT_STRING = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
_QUOTED_STRING = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010FFFF]|\\[\x20-\x7e])*"\Z')
_LABEL = r"(?:[A-Za-z0-9\u0080-\U0010FFFF](?:[A-Za-z0-9\-\u0080-\U0010FFFF]{0,61}[A-Za-z0-9\u0080-\U0010FFFF])?)"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
_ADDRESS_LITERAL = re.compile(r"\[(?:[0-9.]+|IPv6:[0-9A-Fa-f:.]+)\]\Z")
_SOURCE_ROUTE = re.compile(rf"@{_LABEL}(?:\.{_LABEL})*(?:,@{_LABEL}(?:\.{_LABEL})*)*:")
_PARAM_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*\Z")

# RFC 5321 §4.5.3.1.1-3
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256


class AddressError(ValueError):
    """The path or a parameter does not follow RFC 5321 §4.1.2."""


@dataclass(frozen=True)
class Address:
    """A mailbox ``local@domain``; the domain is lower-cased, the local part kept."""

    local: str
    domain: str

    @property
    def address(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def is_ascii(self) -> bool:
        return self.address.isascii()

    @property
    def is_address_literal(self) -> bool:
        return self.domain.startswith("[")

    def __str__(self) -> str:
        return self.address


def parse_mailbox(text: str) -> Address:
    """Parse ``Mailbox = Local-part "@" ( Domain / address-literal )``."""
    at = text.rfind("@")
    if at <= 0 or at == len(text) - 1:
        raise AddressError("address must be local-part@domain")
    local, domain = text[:at], text[at + 1 :]
    if len(local) > MAX_LOCAL_PART and not local.startswith('"'):
        raise AddressError("local part too long")
    if not (_DOT_STRING.match(local) or _QUOTED_STRING.match(local)):
        raise AddressError("bad local part")
    if len(domain) > MAX_DOMAIN:
        raise AddressError("domain too long")
    if not (_DOMAIN.match(domain) or _ADDRESS_LITERAL.match(domain)):
        raise AddressError("bad domain")
    return Address(local, domain.lower())


def _split_path(argument: str) -> tuple[str, str]:
    """Split ``<path> params`` into the bracketed path body and the parameter text."""
    argument = argument.lstrip(" ")
    if not argument.startswith("<"):
        # Tolerate a bare address (some old clients) when it has no spaces.
        path, _, rest = argument.partition(" ")
        if "<" in path or ">" in path:
            raise AddressError("unbalanced angle brackets")
        return path, rest
    # The path ends at the first '>' outside a quoted string.
    in_quotes = False
    escaped = False
    for i, ch in enumerate(argument[1:], start=1):
        if escaped:
            escaped = False
        elif ch == "\\" and in_quotes:
            escaped = True
        elif ch == '"':
            in_quotes = not in_quotes
        elif ch == ">" and not in_quotes:
            rest = argument[i + 1 :]
            if rest and not rest.startswith(" "):
                raise AddressError("text after the path must be parameters")
            return argument[1:i], rest
    raise AddressError("missing '>'")


def parse_params(text: str) -> dict[str, Optional[str]]:
    """``esmtp-param = esmtp-keyword ["=" esmtp-value]``; keywords upper-cased."""
    params: dict[str, Optional[str]] = {}
    for item in text.split():
        keyword, eq, value = item.partition("=")
        if not _PARAM_KEYWORD.match(keyword) or (eq and not value):
            raise AddressError(f"bad parameter {item!r}")
        params[keyword.upper()] = value if eq else None
    return params


def parse_path(argument: str, keyword: str, allow_null: bool) -> tuple[Optional[Address], dict[str, Optional[str]]]:
    """Parse ``FROM:<path> params`` or ``TO:<path> params``.

    Returns ``(None, params)`` for the null path ``<>`` when ``allow_null``.
    """
    head = argument[: len(keyword) + 1]
    if head.upper() != keyword + ":":
        raise AddressError(f"expected {keyword}:")
    path, params_text = _split_path(argument[len(keyword) + 1 :])
    params = parse_params(params_text)
    if len(path) > MAX_PATH:
        raise AddressError("path too long")
    if path == "":
        if allow_null:
            return None, params
        raise AddressError("null path not allowed here")
    if keyword == "TO" and path.lower() == "postmaster":
        # RFC 5321 §4.1.1.3: <Postmaster> without a domain must be accepted;
        # the backend delivers it to postmaster@ the primary local domain.
        return Address("postmaster", ""), params
    route = _SOURCE_ROUTE.match(path)
    if route:
        path = path[route.end() :]
    return parse_mailbox(path), params
