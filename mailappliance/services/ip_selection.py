"""Which local address a delivery leaves from (the seed's IPSelectionService).

With ``IP_SELECTION_ENABLED`` the operator's API is asked before a delivery: a POST of
JSON ``{"emailId", "from", "to": [...], "domain"}`` to ``IP_SELECTION_API_URL``, answered
by ``{"ip": "A.B.C.D"}`` (IPv6 too). Answers are cached per (sender, domain) for
``IP_SELECTION_CACHE_TTL`` seconds. When the API fails, times out or names an address
this host does not have, ``FALLBACK_IP`` is used if this host has it, else the default
route (no binding) - and the reason is logged. An API that gave no answer at all (every
retry failed or timed out) is not asked again for ``FAILURE_HOLD`` seconds, so deliveries
do not each wait for its timeouts. Its URL is shown without credentials or query.

The operator endpoints of the seed (``/api/ip-selection/stats``, ``clear-cache``, ``test``)
are :meth:`stats`, :meth:`clear_cache` and :meth:`select` with ``use_cache=False``.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import socket
import time
import urllib.error
import urllib.request
import urllib.parse
from dataclasses import asdict, dataclass
from typing import Optional

log = logging.getLogger("mailappliance.ip_selection")

RETRY_PAUSE = 0.2  # seconds between attempts, times the attempt number
MAX_ANSWER_BYTES = 4096
MAX_CACHE_ENTRIES = 10_000
FAILURE_HOLD = 30.0  # seconds the API is not asked again after it failed (circuit breaker)


def redact_url(url: Optional[str]) -> Optional[str]:
    """``url`` without credentials, query or fragment (they may hold secrets), for logs and stats."""
    if not url:
        return url
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "<unparsable URL>"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass
class Selection:
    ip: Optional[str]  # None: the default route
    source: str  # "api", "cache", "fallback", "default", "disabled"
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def is_local_address(ip: str) -> bool:
    """True when a socket can be bound to ``ip`` on this host."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((str(address), 0))
        return True
    except OSError:
        return False


def redact_text(text: str, url: Optional[str]) -> str:
    """``text`` with ``url`` (as given) replaced by its redacted form."""
    return text.replace(url, redact_url(url) or "") if url else text


class IpSelectionService:
    def __init__(
        self,
        enabled: bool,
        api_url: Optional[str],
        timeout: float = 5.0,
        retries: int = 3,
        fallback_ip: Optional[str] = None,
        cache_ttl: float = 300.0,
    ) -> None:
        self.enabled = enabled and bool(api_url)
        self.api_url = api_url
        self.timeout = timeout
        self.retries = max(0, retries)
        self.fallback_ip = fallback_ip
        self.cache_ttl = cache_ttl
        self._cache: dict[tuple[str, str], tuple[float, str]] = {}
        self._local: dict[str, bool] = {}
        self.hits = 0
        self.misses = 0
        self.api_calls = 0
        self.api_failures = 0
        self.fallbacks = 0
        self.skipped = 0  # API calls not made while it was held as failing
        self._failing_until = 0.0
        self._failing_why = ""
        if enabled and not api_url:
            log.warning("IP_SELECTION_ENABLED is set but IP_SELECTION_API_URL is not: using the default route")

    # ------------------------------------------------------------------ selection
    def select(self, email_id: str, sender: str, recipients: list[str], domain: str, use_cache: bool = True) -> Selection:
        if not self.enabled:
            return Selection(None, "disabled")
        key = (sender.lower(), domain.lower())
        if use_cache:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > time.monotonic():
                self.hits += 1
                return Selection(cached[1], "cache")
            self.misses += 1
        ip: Optional[str]
        problem: Optional[str]
        if use_cache and time.monotonic() < self._failing_until:
            self.skipped += 1
            ip, problem = None, f"{self._failing_why} (not asked again for {FAILURE_HOLD:.0f} s)"
        else:
            ip, problem, answered = self._ask(email_id, sender, recipients, domain)
            if not answered:
                self._failing_until = time.monotonic() + FAILURE_HOLD
                self._failing_why = problem or "the API failed"
        if ip is not None:
            if use_cache:
                if len(self._cache) >= MAX_CACHE_ENTRIES:
                    self._cache.clear()
                self._cache[key] = (time.monotonic() + self.cache_ttl, ip)
            return Selection(ip, "api")
        self.fallbacks += 1
        if self.fallback_ip and self.is_local(self.fallback_ip):
            log.warning("IP selection for %s (to %s): %s; using FALLBACK_IP %s", email_id, domain, problem, self.fallback_ip)
            return Selection(self.fallback_ip, "fallback", problem or "")
        why = problem or ""
        if self.fallback_ip:
            why += f"; FALLBACK_IP {self.fallback_ip} is not an address of this host"
        log.warning("IP selection for %s (to %s): %s; using the default route", email_id, domain, why)
        return Selection(None, "default", why)

    def forget(self, sender: str, domain: str) -> None:
        """Drop a cached answer (the remote side blocked that address)."""
        self._cache.pop((sender.lower(), domain.lower()), None)

    def is_local(self, ip: str) -> bool:
        known = self._local.get(ip)
        if known is None:
            known = self._local[ip] = is_local_address(ip)
        return known

    def _ask(self, email_id: str, sender: str, recipients: list[str], domain: str) -> tuple[Optional[str], Optional[str], bool]:
        """The API's answer if usable, else (None, why); and whether it answered at all."""
        assert self.api_url is not None
        body = json.dumps({"emailId": email_id, "from": sender, "to": recipients, "domain": domain}).encode()
        problem = "no answer"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(RETRY_PAUSE * attempt)
            self.api_calls += 1
            request = urllib.request.Request(
                self.api_url, data=body, method="POST", headers={"content-type": "application/json", "accept": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read(MAX_ANSWER_BYTES)
            except urllib.error.HTTPError as exc:
                problem = f"the API answered HTTP {exc.code}"
                self.api_failures += 1
                continue
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", None) or exc
                problem = f"the API failed: {redact_text(str(reason), self.api_url)[:200] or exc.__class__.__name__}"
                self.api_failures += 1
                continue
            try:
                answer = json.loads(payload)
                ip = str(ipaddress.ip_address(str(answer["ip"]).strip()))
            except (ValueError, KeyError, TypeError):
                self.api_failures += 1
                return None, f"the API answered something that is not {{\"ip\": address}}: {payload[:100]!r}", True
            if not self.is_local(ip):
                return None, f"the API chose {ip}, which is not an address of this host", True
            return ip, None, True
        return None, problem, False

    # ------------------------------------------------------------------ operator view
    def stats(self) -> dict:
        now = time.monotonic()
        live = sum(1 for expires, _ in self._cache.values() if expires > now)
        lookups = self.hits + self.misses
        return {
            "enabled": self.enabled,
            "apiUrl": redact_url(self.api_url),
            "fallbackIp": self.fallback_ip,
            "cacheTtlSeconds": self.cache_ttl,
            "cacheSize": live,
            "hits": self.hits,
            "misses": self.misses,
            "hitRate": round(self.hits / lookups, 4) if lookups else 0.0,
            "apiCalls": self.api_calls,
            "apiFailures": self.api_failures,
            "fallbacks": self.fallbacks,
            "skippedWhileFailing": self.skipped,
        }

    def clear_cache(self) -> int:
        count = len(self._cache)
        self._cache.clear()
        self._failing_until = 0.0
        return count
