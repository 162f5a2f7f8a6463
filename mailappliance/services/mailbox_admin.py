"""Creating, listing, deleting mailboxes and changing passwords (the seed's MailboxAPI logic).

Addresses are validated with the same RFC 5321 grammar the SMTP server uses and
lower-cased; passwords are bcrypt-hashed. The REST layer only translates errors.
"""
from __future__ import annotations

import logging

from mailappliance.protocol.addresses import AddressError, parse_mailbox
from mailappliance.services.auth import Authenticator, check_new_password, hash_password, verify_password
from mailappliance.services.domains import LocalDomains
from mailappliance.storage.mailboxes import MailboxExists, MailboxStore


# One line per change an operator made, like postsuper's: what, and to which mailbox.
log = logging.getLogger("mailappliance.admin")


class InvalidRequest(ValueError):
    """Bad input; the message is safe to show to the caller."""


class NotFound(LookupError):
    pass


class Conflict(Exception):
    pass


class Forbidden(Exception):
    pass


def normalize_address(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest("username must be an email address such as user@example.com")
    text = value.strip()
    try:
        address = parse_mailbox(text)
    except AddressError as exc:
        raise InvalidRequest(f"{text!r} is not a valid email address: {exc}") from None
    if address.is_address_literal or "." not in address.domain and address.domain != "localhost":
        raise InvalidRequest(f"{text!r} needs a domain name such as example.com")
    if address.local.startswith('"'):
        raise InvalidRequest("quoted local parts are not supported for mailboxes")
    return address.address.lower()


class MailboxAdmin:
    def __init__(self, store: MailboxStore, domains: LocalDomains, authenticator: Authenticator, default_quota: int = 0) -> None:
        self.store = store
        self.domains = domains
        self.authenticator = authenticator
        self.default_quota = default_quota

    def create(self, username: object, password: object, quota: object = None) -> dict:
        address = normalize_address(username)
        domain = address.rsplit("@", 1)[1]
        if not self.domains.accepts_new_mailbox(domain):
            raise InvalidRequest(f"domain {domain} is not in ALLOWED_DOMAINS ({', '.join(sorted(self.domains.configured))})")
        try:
            check_new_password(password)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        quota_bytes = self.default_quota
        if quota is not None:
            if not isinstance(quota, int) or isinstance(quota, bool) or quota < 0:
                raise InvalidRequest("quota must be a whole number of bytes (0 for unlimited)")
            quota_bytes = quota
        try:
            doc = self.store.create(address, hash_password(password), quota_bytes)  # type: ignore[arg-type]
        except MailboxExists:
            raise Conflict(f"mailbox {address} already exists") from None
        self.domains.invalidate()
        log.info("mailbox created: %s (quota %s)", address, quota_bytes or "unlimited")
        return public(doc, 0)

    def list(self, page: int = 1, limit: int = 100) -> tuple[list[dict], int]:
        docs = self.store.page((page - 1) * limit, limit)
        used = self.store.usage([d["_id"] for d in docs])
        return [public(d, used.get(d["_id"], 0)) for d in docs], self.store.count()

    def get(self, username: str) -> dict:
        address = normalize_address(username)
        doc = self.store.get(address)
        if doc is None:
            raise NotFound(f"no mailbox {username}")
        return public(doc, self.store.usage([address]).get(address, 0))

    def delete(self, username: str) -> None:
        address = normalize_address(username)
        if not self.store.delete(address):
            raise NotFound(f"no mailbox {address}")
        self.authenticator.forget(address)
        self.domains.invalidate()
        log.info("mailbox deleted: %s (with its folders and messages)", address)

    def change_password(self, username: str, old: object, new: object) -> None:
        address = normalize_address(username)
        doc = self.store.get(address)
        if doc is None:
            raise NotFound(f"no mailbox {address}")
        if not isinstance(old, str) or not old:
            raise InvalidRequest("oldPassword is required")
        try:
            check_new_password(new)
        except ValueError as exc:
            raise InvalidRequest(f"newPassword: {exc}") from None
        if not verify_password(old, doc["password_hash"]):
            log.warning("password change refused: wrong old password for %s", address)
            raise Forbidden("oldPassword is wrong")
        self.store.set_password_hash(address, hash_password(new))  # type: ignore[arg-type]
        self.authenticator.forget(address)
        log.info("password changed: %s", address)


def public(doc: dict, used_bytes: int) -> dict:
    return {
        "username": doc["_id"],
        "domain": doc.get("domain"),
        "quota": doc.get("quota", 0),
        "usedBytes": used_bytes,
        "createdAt": doc["created_at"].isoformat() if doc.get("created_at") else None,
    }


__all__ = ["MailboxAdmin", "InvalidRequest", "NotFound", "Conflict", "Forbidden", "normalize_address"]
