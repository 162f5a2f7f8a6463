"""Account passwords: bcrypt hashes, checked off the gevent hub, with a short cache.

bcrypt costs ~0.2 s of CPU by design, so the check runs in gevent's thread pool
(bcrypt releases the GIL) and successful checks are remembered for a few minutes
(like Dovecot's auth cache), keyed by a keyed hash of the password, never the
password itself. Failures are slowed down to make guessing expensive.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import time
from typing import Callable, Optional

import bcrypt
import gevent

BCRYPT_ROUNDS = 12
CACHE_SECONDS = 300.0
FAILURE_DELAY = 1.0
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_BYTES = 72  # bcrypt uses only the first 72 bytes


class PasswordError(ValueError):
    """A new password is not acceptable."""


def check_new_password(password: object) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordError(f"password must be a string of at least {MIN_PASSWORD_LENGTH} characters")
    if len(password.encode("utf-8")) > MAX_PASSWORD_BYTES:
        raise PasswordError(f"password must be at most {MAX_PASSWORD_BYTES} bytes")
    return password


def _in_thread(fn: Callable, *args):
    return gevent.get_hub().threadpool.apply(fn, args)


def hash_password(password: str, rounds: Optional[int] = None) -> str:
    salt = bcrypt.gensalt(rounds or BCRYPT_ROUNDS)
    return _in_thread(bcrypt.hashpw, password.encode("utf-8"), salt).decode("ascii")


def verify_password(password: str, password_hash: str) -> bool:
    try:
        return bool(_in_thread(bcrypt.checkpw, password.encode("utf-8"), password_hash.encode("ascii")))
    except ValueError:  # a damaged hash
        return False


class Authenticator:
    """Checks an address and password against the mailbox store."""

    def __init__(self, lookup: Callable[[str], Optional[dict]], failure_delay: float = FAILURE_DELAY) -> None:
        self.lookup = lookup
        self.failure_delay = failure_delay
        self._secret = os.urandom(32)
        self._cache: dict[str, tuple[bytes, float]] = {}

    def _key(self, password: str, password_hash: str) -> bytes:
        return hmac.new(self._secret, (password_hash + "\0" + password).encode("utf-8"), hashlib.sha256).digest()

    def authenticate(self, username: str, password: str) -> Optional[str]:
        address = username.strip().lower()
        account = self.lookup(address) if "@" in address else None
        if account is not None:
            key = self._key(password, account["password_hash"])
            cached = self._cache.get(address)
            if cached and cached[0] == key and cached[1] > time.monotonic():
                return account["_id"]
            if verify_password(password, account["password_hash"]):
                self._cache[address] = (key, time.monotonic() + CACHE_SECONDS)
                return account["_id"]
        else:
            # Spend the same time as a real check so unknown users cannot be told apart.
            verify_password(password, _DUMMY_HASH)
        if self.failure_delay:
            gevent.sleep(self.failure_delay)
        return None

    def forget(self, address: str) -> None:
        self._cache.pop(address, None)


_DUMMY_HASH = bcrypt.hashpw(b"not a password", bcrypt.gensalt(BCRYPT_ROUNDS)).decode("ascii")
