"""Delivery notifications to the operator's URLs (the seed's Webhook Notifications).

With ``WEBHOOK_ENABLED``, every final outcome is POSTed as JSON: deliveries to
``WEBHOOK_SUCCESS_URL``, bounces to ``WEBHOOK_FAILURE_URL``. With ``WEBHOOK_SECRET`` the
request carries ``X-Signature: sha256=<hex HMAC-SHA256 of the exact body>``.

Notifications never hold up delivery: :meth:`WebhookNotifier.notify` only puts the event
on an in-memory queue that a few sender greenlets drain. A failed POST (connection error,
timeout ``WEBHOOK_TIMEOUT``, non-2xx answer) is retried ``WEBHOOK_RETRIES`` times with
doubling pauses, scheduled so one slow endpoint does not stall the others; an event that
still fails is recorded in ``webhook_failures``. Events still queued when the process is
killed are lost (the delivery itself is recorded in the database either way).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import Callable, Optional

import gevent
from gevent.queue import Queue

from mailappliance.services.ip_selection import redact_url

log = logging.getLogger("mailappliance.webhooks")

SENDERS = 4
MAX_QUEUED = 100_000
SIGNATURE_HEADER = "X-Signature"


def shown_url(url: str) -> str:
    return redact_url(url) or ""


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    def __init__(
        self,
        enabled: bool,
        success_url: Optional[str],
        failure_url: Optional[str],
        timeout: float = 10.0,
        retries: int = 3,
        retry_base: float = 2.0,
        secret: Optional[str] = None,  # never logged or shown
        record_failure: Optional[Callable[[dict], None]] = None,
    ) -> None:
        self.enabled = enabled and bool(success_url or failure_url)
        self.urls = {"delivered": success_url, "bounced": failure_url}
        self.timeout = timeout
        self.retries = max(0, retries)
        self.retry_base = retry_base
        self.secret = secret
        self.record_failure = record_failure
        self._queue: Queue = Queue(MAX_QUEUED)
        self._senders: list[gevent.Greenlet] = []
        self._retrying: set[gevent.Greenlet] = set()
        self.sent = 0
        self.failed = 0
        self.retried = 0
        self.dropped = 0

    def start(self) -> None:
        if self.enabled and not self._senders:
            self._senders = [gevent.spawn(self._run) for _ in range(SENDERS)]

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued (bounded by ``timeout``), then stop."""
        deadline = gevent.get_hub().loop.now() + timeout
        while not self._queue.empty() and gevent.get_hub().loop.now() < deadline:
            gevent.sleep(0.05)
        gevent.killall(self._senders + list(self._retrying), timeout=2)
        self._senders = []

    def notify(self, event: dict) -> None:
        """Queue ``event`` (its ``event`` key picks the URL); never blocks."""
        if not self.enabled or not self.urls.get(event.get("event", "")):
            return
        try:
            self._queue.put_nowait((event, 0))
        except gevent.queue.Full:
            self.dropped += 1
            log.error("webhook queue full; dropped the %s event of %s", event.get("event"), event.get("emailId"))

    @property
    def pending(self) -> int:
        return self._queue.qsize() + len(self._retrying)

    def _run(self) -> None:
        while True:
            event, attempt = self._queue.get()
            try:
                self._send(event, attempt)
            except Exception:  # never let one event stop a sender
                log.exception("webhook sender error")

    def _send(self, event: dict, attempt: int) -> None:
        url = self.urls[event["event"]]
        assert url is not None
        body = json.dumps(event, separators=(",", ":"), default=str).encode()
        headers = {"content-type": "application/json", "user-agent": "mailappliance-webhook"}
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, body)
        request = urllib.request.Request(url, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                response.read(1024)
            self.sent += 1
            return
        except urllib.error.HTTPError as exc:
            problem = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            problem = str(getattr(exc, "reason", None) or exc).replace(url, shown_url(url))[:200] or exc.__class__.__name__
        if attempt < self.retries:
            self.retried += 1
            pause = self.retry_base * (2**attempt)
            log.info("webhook %s for %s failed (%s); retry %d in %.1f s", event["event"], event.get("emailId"), problem, attempt + 1, pause)
            later = gevent.spawn_later(pause, self._requeue, event, attempt + 1)
            self._retrying.add(later)
            later.link(self._retrying.discard)
            return
        self.failed += 1
        shown = redact_url(url)
        log.warning("webhook %s for %s to %s failed after %d attempts: %s", event["event"], event.get("emailId"), shown, attempt + 1, problem)
        if self.record_failure is not None:
            try:
                self.record_failure(
                    {"event": event, "url": shown, "error": problem, "attempts": attempt + 1, "failed_at": datetime.now(timezone.utc)}
                )
            except Exception as exc:
                log.error("could not record the webhook failure: %s", exc)

    def _requeue(self, event: dict, attempt: int) -> None:
        self._queue.put((event, attempt))

    def stats(self) -> dict:
        return {"enabled": self.enabled, "sent": self.sent, "failed": self.failed, "retried": self.retried, "dropped": self.dropped, "pending": self.pending}
