"""IMAP login: password check plus a guard against guessing (RFC 3501 §6.2.3).

Failures are already slowed by the authenticator (one second each). On top of
that, too many failures for one address or from one client IP within a window
lock that address or IP out for a while: the client gets ``NO [UNAVAILABLE]``
without a password check, and the connection stays open.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Callable, Optional

WINDOW_SECONDS = 900.0
MAX_FAILURES_PER_ADDRESS = 10
MAX_FAILURES_PER_IP = 30
LOCKOUT_SECONDS = 900.0
MAX_TRACKED = 100_000  # keys remembered at most; the oldest are forgotten


class LoginGuard:
    """Counts failed logins per address and per client IP in a sliding window."""

    def __init__(
        self,
        per_address: int = MAX_FAILURES_PER_ADDRESS,
        per_ip: int = MAX_FAILURES_PER_IP,
        window: float = WINDOW_SECONDS,
        lockout: float = LOCKOUT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = {"address": per_address, "ip": per_ip}
        self.window = window
        self.lockout = lockout
        self.clock = clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._locked: dict[tuple[str, str], float] = {}

    def locked(self, address: str, ip: str, exempt_ip: bool = False) -> Optional[str]:
        """Why a login must be refused now, or None."""
        now = self.clock()
        keys = [("address", address)] + ([] if exempt_ip else [("ip", ip)])
        for key in keys:
            until = self._locked.get(key)
            if until is not None:
                if until > now:
                    return f"too many failed logins for this {key[0]}"
                del self._locked[key]
        return None

    def failed(self, address: str, ip: str, exempt_ip: bool = False) -> None:
        now = self.clock()
        keys = [("address", address)] + ([] if exempt_ip else [("ip", ip)])
        if len(self._failures) > MAX_TRACKED:
            self._failures.clear()
        for key in keys:
            times = self._failures.setdefault(key, deque())
            times.append(now)
            while times and times[0] < now - self.window:
                times.popleft()
            if len(times) >= self.limits[key[0]]:
                self._locked[key] = now + self.lockout
                times.clear()

    def succeeded(self, address: str) -> None:
        self._failures.pop(("address", address), None)
