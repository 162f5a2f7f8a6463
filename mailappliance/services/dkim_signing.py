"""DKIM signatures on outgoing mail (RFC 6376) with dkimpy.

A key is configured per signing domain as a PEM file ``DKIM_KEY_DIR/<domain>.pem`` (or
``.key``, ``.private`` as opendkim-genkey writes it); the selector is ``DKIM_SELECTOR``.
Mail is signed only when the From header's domain (what DMARC aligns on) is the envelope
sender's domain, which submission has checked the user owns: an authenticated user of
one hosted domain cannot get a signature of another by writing its address in From.
Mail from a domain without a key, or with a From of another domain, is sent unsigned.
Relaxed/relaxed canonicalization, rsa-sha256 (or ed25519-sha256 for an Ed25519 key).
Keys are cached (at most ``MAX_CACHED_KEYS`` domains).
"""
from __future__ import annotations

import logging
import time
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from pathlib import Path
from typing import Optional

import dkim

log = logging.getLogger("mailappliance.dkim")

KEY_SUFFIXES = (".pem", ".key", ".private")
MISSING_KEY_RECHECK = 60.0  # seconds before looking again for a key that was not there
MAX_CACHED_KEYS = 1000
SIGNED_HEADERS = [
    b"from", b"sender", b"reply-to", b"subject", b"date", b"message-id", b"to", b"cc",
    b"mime-version", b"content-type", b"content-transfer-encoding", b"in-reply-to", b"references",
]


def header_section(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    return raw if end < 0 else raw[: end + 2]


def from_domain(raw: bytes) -> Optional[str]:
    headers = BytesHeaderParser().parsebytes(header_section(raw))
    for _, address in getaddresses([str(v) for v in headers.get_all("From") or []]):
        if "@" in address:
            return address.rsplit("@", 1)[1].strip().lower().rstrip(".")
    return None


class DkimSigner:
    def __init__(self, key_dir: Optional[Path], selector: str = "mail") -> None:
        self.key_dir = Path(key_dir) if key_dir else None
        self.selector = selector
        self._keys: dict[str, tuple[float, Optional[bytes]]] = {}
        self.signed = 0
        self.failures = 0

    @property
    def enabled(self) -> bool:
        return self.key_dir is not None

    def key_for(self, domain: str) -> Optional[bytes]:
        if self.key_dir is None or not domain or "/" in domain or domain.startswith("."):
            return None
        cached = self._keys.get(domain)
        if cached is not None and (cached[1] is not None or cached[0] > time.monotonic()):
            return cached[1]
        key = None
        for suffix in KEY_SUFFIXES:
            path = self.key_dir / f"{domain}{suffix}"
            if path.is_file():
                try:
                    key = path.read_bytes()
                except OSError as exc:
                    log.error("cannot read DKIM key %s: %s", path, exc.strerror)
                break
        if len(self._keys) >= MAX_CACHED_KEYS:
            self._keys.clear()
        self._keys[domain] = (time.monotonic() + MISSING_KEY_RECHECK, key)
        return key

    def sign(self, raw: bytes, envelope_sender: str) -> bytes:
        """``raw`` with a DKIM-Signature header prepended, or unchanged when there is no key."""
        if self.key_dir is None:
            return raw
        envelope_domain = envelope_sender.rsplit("@", 1)[1].lower().rstrip(".") if "@" in envelope_sender else None
        header_domain = from_domain(raw)
        if not envelope_domain or header_domain != envelope_domain:
            return raw
        for domain in (header_domain,):
            key = self.key_for(domain)
            if key is None:
                continue
            try:
                signature = dkim.sign(
                    raw,
                    self.selector.encode(),
                    domain.encode(),
                    key,
                    canonicalize=(b"relaxed", b"relaxed"),
                    include_headers=SIGNED_HEADERS,
                    signature_algorithm=b"ed25519-sha256" if b"BEGIN" not in key else b"rsa-sha256",
                )
            except (dkim.DKIMException, ValueError) as exc:
                self.failures += 1
                log.error("DKIM signing for %s failed: %s; sending unsigned", domain, exc)
                return raw
            self.signed += 1
            return signature + raw
        return raw
