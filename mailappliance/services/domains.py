"""Which domains are local: ``ALLOWED_DOMAINS``, or else the domains that have mailboxes."""
from __future__ import annotations

import time
from typing import Callable, Iterable, Optional

REFRESH_SECONDS = 10.0


class LocalDomains:
    def __init__(self, configured: Iterable[str], load: Callable[[], set[str]]) -> None:
        self.order = [d.lower().rstrip(".") for d in configured]
        self.configured = set(self.order)
        self._load = load
        self._dynamic: set[str] = set()
        self._loaded_at = 0.0

    @property
    def fixed(self) -> bool:
        """True when ALLOWED_DOMAINS names the local domains."""
        return bool(self.configured)

    def all(self) -> set[str]:
        if self.fixed:
            return set(self.configured)
        if time.monotonic() - self._loaded_at > REFRESH_SECONDS:
            self._dynamic = set(self._load())
            self._loaded_at = time.monotonic()
        return set(self._dynamic)

    def is_local(self, domain: str) -> bool:
        return domain.lower().rstrip(".") in self.all()

    def accepts_new_mailbox(self, domain: str) -> bool:
        return not self.fixed or domain in self.configured

    def primary(self) -> Optional[str]:
        domains = self.order if self.fixed else sorted(self.all())
        return domains[0] if domains else None

    def invalidate(self) -> None:
        self._loaded_at = 0.0
