"""The queue runner: greenlets that claim due messages from ``emails`` and deliver them.

* One claim loop leases due work (see ``storage/queue.py``) while fewer than
  ``QUEUE_CONCURRENCY`` messages are in flight; each claimed message is delivered by its
  own greenlet. Its recipients are grouped by domain and each domain gets one connection
  carrying all of them; at most ``QUEUE_DOMAIN_CONCURRENCY`` connections per domain at once.
* A renewal loop extends the leases of everything in flight, so a slow delivery keeps its
  claim and a dead runner's claims expire after ``QUEUE_LEASE``. A lease found lost (or
  not renewed for half its length) stops its delivery before DATA, so two runners never
  hand the same recipient over at once.
* Outcomes (built in ``outcomes.py``) are group-committed by one completer greenlet
  (records, then the guarded update of each original, one journal sync per batch), like
  the inbound writer. When the database fails, the batch is retried while its leases
  last (they keep being renewed), rather than dropped and delivered again.
* Afterwards, and never in the way of delivery: webhooks are queued, and a bounce report
  (RFC 3464, ``bounce_reports.py``) goes into the INBOX of a local sender; a periodic sweep
  writes any report still owed. A completion that was lost fires neither.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import gevent
from bson import ObjectId
from gevent.event import AsyncResult, Event
from gevent.lock import BoundedSemaphore
from gevent.queue import Queue

from mailappliance.services import bounces
from mailappliance.services.bounce_reports import ReportWriter
from mailappliance.services.bounces import Reply
from mailappliance.services.dkim_signing import DkimSigner
from mailappliance.services.ip_selection import IpSelectionService, Selection
from mailappliance.services.mx import DnsFailure, MxHost, MxResolver
from mailappliance.services.outbound import Handoff, SmtpOptions, hand_off, targets
from mailappliance.services.outcomes import DomainResult, RetryPolicy, build_attempt
from mailappliance.services.webhooks import WebhookNotifier
from mailappliance.settings import Settings
from mailappliance.storage.blobs import BlobStore
from mailappliance.storage.mailboxes import MailboxStore
from mailappliance.storage.queue import PENDING, Completion, OutboundQueue, QueueStoreError, requeue_fields, utcnow
from mailappliance.storage.writer import DeliveryWriter

log = logging.getLogger("mailappliance.queue")

MAX_COMPLETION_BATCH = 256
COMPLETION_RETRY_PAUSE = 0.2  # seconds, times the attempt number, at most COMPLETION_RETRY_MAX
COMPLETION_RETRY_MAX = 2.0
DSN_SWEEP_INTERVAL = 60.0  # seconds between looks for bounce reports still owed
LEASE_SAFETY = 0.5  # DATA only while more than this fraction of the lease is left


@dataclass
class RunnerConfig:
    hostname: str
    concurrency: int = 50
    domain_concurrency: int = 20
    retry_base: float = 60.0
    retry_max: float = 4 * 3600.0
    max_attempts: int = 0  # 0: no limit, max_age decides
    max_age: float = 5 * 24 * 3600.0
    lease: float = 300.0
    poll_interval: float = 1.0
    smtp: SmtpOptions = field(default_factory=lambda: SmtpOptions(helo="localhost"))
    relay_host: Optional[str] = None
    relay_smtp: Optional[SmtpOptions] = None

    @classmethod
    def from_settings(cls, s: Settings) -> "RunnerConfig":
        smtp = SmtpOptions(
            helo=s.hostname,
            port=s.outbound_smtp_port,
            connect_timeout=s.outbound_connect_timeout,
            greeting_timeout=s.outbound_greeting_timeout,
            command_timeout=s.outbound_command_timeout,
            data_init_timeout=s.outbound_data_init_timeout,
            data_block_timeout=s.outbound_data_block_timeout,
            data_end_timeout=s.outbound_data_end_timeout,
            tls=s.outbound_tls,
        )
        relay = None
        if s.smtp_relay_host:
            relay = SmtpOptions(
                helo=s.hostname,
                port=s.smtp_relay_port,
                connect_timeout=s.outbound_connect_timeout,
                greeting_timeout=s.outbound_greeting_timeout,
                command_timeout=s.outbound_command_timeout,
                data_init_timeout=s.outbound_data_init_timeout,
                data_block_timeout=s.outbound_data_block_timeout,
                data_end_timeout=s.outbound_data_end_timeout,
                tls="may",
                require_tls=bool(s.smtp_relay_user),
                username=s.smtp_relay_user,
                password=s.smtp_relay_password,
            )
        return cls(
            hostname=s.hostname,
            concurrency=s.queue_concurrency,
            domain_concurrency=s.queue_domain_concurrency,
            retry_base=s.queue_retry_base,
            retry_max=s.queue_retry_max,
            max_attempts=s.queue_max_attempts,
            max_age=s.queue_max_age,
            lease=s.queue_lease,
            poll_interval=s.queue_poll_interval,
            smtp=smtp,
            relay_host=s.smtp_relay_host,
            relay_smtp=relay,
        )

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(self.retry_base, self.retry_max, self.max_attempts, self.max_age)


class QueueRunner:
    def __init__(
        self,
        config: RunnerConfig,
        queue: OutboundQueue,
        blobs: BlobStore,
        mailboxes: MailboxStore,
        writer: Optional[DeliveryWriter],
        resolver: MxResolver,
        ip_selection: IpSelectionService,
        webhooks: WebhookNotifier,
        dkim: DkimSigner,
        owner: Optional[str] = None,
    ) -> None:
        self.config = config
        self.queue = queue
        self.resolver = resolver
        self.ip_selection = ip_selection
        self.webhooks = webhooks
        self.dkim = dkim
        self.reports = ReportWriter(config.hostname, queue, blobs, mailboxes, writer)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{ObjectId()}"
        self._inflight: dict[ObjectId, ObjectId] = {}  # email id -> lease token
        self._lease_until: dict[ObjectId, float] = {}  # email id -> monotonic expiry as last renewed
        self._lost: set[ObjectId] = set()
        self._domain_slots: dict[str, BoundedSemaphore] = {}
        self._wakeup = Event()
        self._backlog = False
        self._stopping = False
        self._greenlets: list[gevent.Greenlet] = []
        self._deliveries: set[gevent.Greenlet] = set()
        self._background: set[gevent.Greenlet] = set()  # report writes
        self._completions: Queue = Queue()
        self._completer: Optional[gevent.Greenlet] = None
        self.counters = {"attempts": 0, "delivered": 0, "deferred": 0, "bounced": 0, "lost_leases": 0, "claimed": 0, "errors": 0}

    # ------------------------------------------------------------------ lifecycle
    @property
    def alive(self) -> bool:
        return bool(self._greenlets) and all(not g.dead for g in self._greenlets)

    def start(self) -> None:
        self._stopping = False
        self._completer = gevent.spawn(self._complete_loop)
        self._greenlets = [gevent.spawn(self._claim_loop), gevent.spawn(self._renew_loop), gevent.spawn(self._sweep_loop), self._completer]
        log.info(
            "queue runner %s started: %d deliveries at once, %d per domain", self.owner, self.config.concurrency, self.config.domain_concurrency
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Claim nothing more; let deliveries in progress end (bounded); hand back the rest."""
        if not self._greenlets:
            return
        self._stopping = True
        self._wakeup.set()
        gevent.joinall(list(self._deliveries), timeout=timeout)
        unfinished = dict(self._inflight)
        gevent.killall(list(self._deliveries), timeout=2)
        self._completions.put(None)
        if self._completer is not None:
            self._completer.join(10)
        gevent.killall(self._greenlets + list(self._background), timeout=2)
        self._greenlets = []
        if unfinished:
            try:
                self.queue.release(unfinished)
                log.info("handed back %d unfinished deliveries", len(unfinished))
            except QueueStoreError as exc:
                log.warning("could not hand back %d deliveries (their leases will expire): %s", len(unfinished), exc)

    def wake(self) -> None:
        """New mail was queued: look for due work now."""
        self._wakeup.set()

    def stats(self) -> dict[str, Any]:
        return {"owner": self.owner, "inFlight": len(self._inflight), "concurrency": self.config.concurrency, **self.counters}

    def _spawn_background(self, function: Any, *args: Any) -> None:
        job = gevent.spawn(function, *args)
        self._background.add(job)
        job.link(self._background.discard)

    # ------------------------------------------------------------------ claiming and leases
    def _claim_loop(self) -> None:
        while not self._stopping:
            try:
                if self._claim_once():
                    continue
            except QueueStoreError as exc:
                log.error("claiming due mail failed: %s", exc)
            except Exception:  # a bug here must not stop delivery for good
                log.exception("queue runner claim loop error")
            self._wakeup.clear()
            self._wakeup.wait(self.config.poll_interval)

    def _claim_once(self) -> bool:
        """Claim what the free slots can take; True when there may be more due right now."""
        threshold = max(1, min(10, self.config.concurrency // 4))
        free = self.config.concurrency - len(self._inflight)
        if free < threshold and (free <= 0 or self._inflight):
            return False
        started = time.monotonic()
        claimed = self.queue.claim(free, self.owner, frozenset(self._inflight))
        self._backlog = len(claimed) == free
        for n, doc in enumerate(claimed):
            if self._stopping:
                self.queue.release({d["_id"]: d["lease"] for d in claimed[n:]})
                return False
            self._inflight[doc["_id"]] = doc["lease"]
            self._lease_until[doc["_id"]] = started + self.config.lease
            self.counters["claimed"] += 1
            delivery = gevent.spawn(self._process, doc)
            self._deliveries.add(delivery)
            delivery.link(self._deliveries.discard)
        return self._backlog

    def _renew_loop(self) -> None:
        while not self._stopping:
            gevent.sleep(self.config.lease / 3)
            try:
                self.renew_leases()
            except Exception:
                log.exception("queue runner lease renewal error")

    def renew_leases(self) -> None:
        """Extend every lease held; remember those found lost (taken over or deleted)."""
        held = {e: lease for e, lease in self._inflight.items() if e not in self._lost}
        if not held:
            return
        started = time.monotonic()
        try:
            kept = self.queue.renew(held)
        except QueueStoreError as exc:
            log.warning("renewing %d leases failed: %s", len(held), exc)
            return
        for email_id in held:
            if email_id in kept:
                if email_id in self._lease_until:
                    self._lease_until[email_id] = started + self.config.lease
            elif email_id in self._inflight:
                self._lost.add(email_id)
                self.counters["lost_leases"] += 1
                log.warning("%s: lease lost (taken over or deleted); its delivery stops before DATA", email_id)

    def holds_lease(self, email_id: ObjectId) -> bool:
        """True while the lease is known held with at least LEASE_SAFETY of it left."""
        if email_id in self._lost:
            return False
        until = self._lease_until.get(email_id)
        return until is not None and until - time.monotonic() > self.config.lease * LEASE_SAFETY

    def _slot(self, domain: str) -> BoundedSemaphore:
        slot = self._domain_slots.get(domain)
        if slot is None:
            if len(self._domain_slots) > 10_000:
                self._domain_slots = {d: s for d, s in self._domain_slots.items() if s.counter < self.config.domain_concurrency}
            slot = self._domain_slots[domain] = BoundedSemaphore(self.config.domain_concurrency)
        return slot

    # ------------------------------------------------------------------ one message
    def _process(self, doc: dict) -> None:
        email_id = doc["_id"]
        name = doc.get("queue_id", email_id)
        try:
            if doc.get("delete_requested"):
                self.queue.delete_claimed(doc)
                log.info("%s: deleted as requested", name)
                return
            attempt = self._attempt(doc)
            completion = attempt.completion
            if email_id in self._lost:
                outcome = "lost"
            else:
                outcome = self._commit(completion)
            if outcome == "flagged":
                outcome = self.queue.finish_flagged(completion, requeue_fields(completion.update["$set"]["recipients"], utcnow()) or {})
                log.info("%s: %s as requested during delivery", name, outcome)
            if outcome == "lost":
                self.counters["lost_leases"] += email_id not in self._lost
                log.warning("%s: lease lost during delivery (taken over or deleted); outcome not recorded here", name)
                self.queue.supersede(completion)
                return
            self.counters["attempts"] += 1
            self.counters["delivered"] += attempt.delivered
            self.counters["bounced"] += attempt.bounced
            self.counters["deferred"] += attempt.deferred
            for event in attempt.events:
                self.webhooks.notify(event)
            if completion.report and outcome != "deleted":
                self._spawn_background(self.reports.write, completion.report["_id"])
        except Exception:
            self.counters["errors"] += 1
            log.exception("%s: delivery attempt failed unexpectedly; it will be retried when its lease expires", name)
        finally:
            self._inflight.pop(email_id, None)
            self._lease_until.pop(email_id, None)
            self._lost.discard(email_id)
            if self._backlog:
                self._wakeup.set()

    def _attempt(self, doc: dict) -> Any:
        sender = doc.get("from") or ""
        pending = [r["address"] for r in doc["recipients"] if r.get("status") in PENDING]
        results: list[DomainResult] = []
        try:
            raw: Optional[bytes] = self.queue.read_raw(doc)
        except (KeyError, ValueError) as exc:
            log.error("%s: message bytes missing or damaged (%s)", doc.get("queue_id"), exc)
            raw = None
        if raw is None:
            lost = Reply(554, "message content lost from the queue store", "5.3.0", stage="local")
            results.append(DomainResult("", pending, Handoff(replies={r: lost for r in pending}), Selection(None, "none")))
        else:
            raw = self.dkim.sign(raw, sender)
            groups: dict[str, list[str]] = {}
            for address in pending:
                groups.setdefault(address.rsplit("@", 1)[-1].lower(), []).append(address)
            if len(groups) == 1:
                [(domain, rcpts)] = groups.items()
                results.append(self._deliver_domain_safely(doc, domain, rcpts, raw))
            else:
                jobs = [gevent.spawn(self._deliver_domain_safely, doc, d, rcpts, raw) for d, rcpts in groups.items()]
                try:
                    gevent.joinall(jobs)
                finally:
                    gevent.killall([job for job in jobs if not job.dead], timeout=2)
                for job, (domain, rcpts) in zip(jobs, groups.items()):
                    results.append(job.value if job.successful() and job.value is not None else _failed(domain, rcpts, "delivery stopped"))
        return build_attempt(self.config.policy, self.owner, doc, results, utcnow(), self.reports.wants_report)

    def _deliver_domain_safely(self, doc: dict, domain: str, recipients: list[str], raw: bytes) -> DomainResult:
        """One domain's delivery; an unexpected error defers its recipients (451), not the others."""
        try:
            return self._deliver_domain(doc, domain, recipients, raw)
        except Exception as exc:
            self.counters["errors"] += 1
            log.exception("%s: delivery to %s failed unexpectedly", doc.get("queue_id", doc["_id"]), domain)
            return _failed(domain, recipients, f"local error: {exc.__class__.__name__}")

    def _deliver_domain(self, doc: dict, domain: str, recipients: list[str], raw: bytes) -> DomainResult:
        sender = doc.get("from") or ""
        with self._slot(domain):
            options = self.config.smtp
            try:
                if self.config.relay_host:
                    assert self.config.relay_smtp is not None
                    options = self.config.relay_smtp
                    hosts = [MxHost(self.config.relay_host, 0, self.resolver.addresses(self.config.relay_host))]
                    if not hosts[0].addresses:
                        raise DnsFailure(f"relay host {self.config.relay_host} has no address", "4.4.3", permanent=False)
                else:
                    hosts = self.resolver.hosts(domain)
            except DnsFailure as failure:
                reply = Reply(550 if failure.permanent else 451, failure.text, failure.enhanced, stage="dns")
                return DomainResult(domain, recipients, Handoff(replies={r: reply for r in recipients}), Selection(None, "none"))
            selection = self._source_ip(doc, domain, recipients)
            email_id = doc["_id"]
            handoff = hand_off(
                targets(hosts, options.port), options, selection.ip, sender, recipients, raw, domain=domain, may_send=lambda: self.holds_lease(email_id)
            )
            if any(bounces.blocks_ip(reply) for reply in handoff.replies.values()) and selection.ip:
                self.ip_selection.forget(sender, domain)
            return DomainResult(domain, recipients, handoff, selection)

    def _source_ip(self, doc: dict, domain: str, recipients: list[str]) -> Selection:
        """The address used before for these recipients (unless it was blocked), else a new choice."""
        previous = {r.get("ip") for r in doc["recipients"] if r["address"] in recipients and r.get("attempts")}
        blocked = any(r.get("ip_blocked") for r in doc["recipients"] if r["address"] in recipients)
        if len(previous) == 1 and not blocked:
            [ip] = previous
            if ip is None:
                if not self.ip_selection.enabled:
                    return Selection(None, "default")
            elif self.ip_selection.is_local(ip):
                return Selection(ip, "sticky")
        return self.ip_selection.select(str(doc["_id"]), doc.get("from") or "", recipients, domain)

    # ------------------------------------------------------------------ group commit
    def _commit(self, completion: Completion) -> str:
        result: AsyncResult = AsyncResult()
        self._completions.put((completion, result))
        return result.get()

    def _complete_loop(self) -> None:
        while True:
            item = self._completions.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < MAX_COMPLETION_BATCH and not self._completions.empty():
                nxt = self._completions.get_nowait()
                if nxt is None:
                    self._completions.put(None)
                    break
                batch.append(nxt)
            self._finish_batch(batch)

    def _finish_batch(self, batch: list[tuple[Completion, AsyncResult]]) -> None:
        """Record a batch; on a database failure retry while the leases last (the renewal
        loop keeps extending them), so an outage shorter than the lease loses nothing."""
        attempt = 0
        while batch:
            attempt += 1
            try:
                outcome = self.queue.finish([c for c, _ in batch])
            except QueueStoreError as exc:
                expired = [(c, r) for c, r in batch if self._lease_until.get(c.email_id, 0.0) <= time.monotonic() or self._stopping]
                if expired:
                    log.error(
                        "recording %d delivery outcomes failed until their leases ran out: %s; they will be retried after the leases expire",
                        len(expired),
                        exc,
                    )
                    for _, result in expired:
                        result.set_exception(exc)
                    batch = [item for item in batch if item not in expired]
                if attempt == 1:
                    log.warning("recording %d delivery outcomes failed (%s); retrying while the leases last", len(batch), exc)
                gevent.sleep(min(COMPLETION_RETRY_MAX, COMPLETION_RETRY_PAUSE * attempt))
                continue
            for completion, result in batch:
                result.set(outcome[completion.email_id])
            return

    # ------------------------------------------------------------------ bounce reports
    def _sweep_loop(self) -> None:
        while not self._stopping:
            try:
                self.reports.sweep()
            except Exception:
                log.exception("bounce report sweep error")
            gevent.sleep(DSN_SWEEP_INTERVAL)


def _failed(domain: str, recipients: list[str], why: str) -> DomainResult:
    reply = Reply(451, why, "4.3.0", stage="local")
    return DomainResult(domain, recipients, Handoff(replies={r: reply for r in recipients}), Selection(None, "none"))
