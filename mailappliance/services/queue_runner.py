"""The queue runner: greenlets that claim due messages from ``emails`` and deliver them.

* One claim loop leases due work (see ``storage/queue.py``) while fewer than
  ``QUEUE_CONCURRENCY`` messages are in flight; each claimed message is delivered by its
  own greenlet. Its recipients are grouped by domain and each domain gets one connection
  carrying all of them; at most ``QUEUE_DOMAIN_CONCURRENCY`` connections per domain at once.
* A renewal loop extends the leases of everything in flight, so a slow delivery keeps its
  claim and a dead runner's claims expire after ``QUEUE_LEASE``.
* Outcomes are group-committed by one completer greenlet (records, then the guarded
  update of each original, one journal sync per batch), like the inbound writer.
* Afterwards, and never in the way of delivery: webhooks are queued, and a bounce report
  (RFC 3464) goes into the INBOX of a local sender. Reports still owed after a crash are
  listed in ``pending_reports`` and written at the next start.

Per recipient: 2xx → sent; 5xx → bounced; 4xx, timeouts and connection failures →
deferred and retried after ``QUEUE_RETRY_BASE * 2^(attempts-1)`` seconds (at most
``QUEUE_RETRY_MAX``), bounced once ``QUEUE_MAX_ATTEMPTS`` or ``QUEUE_MAX_AGE`` is reached.
"""
from __future__ import annotations

import logging
import os
import random
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Optional

import gevent
from bson import ObjectId
from gevent.event import AsyncResult, Event
from gevent.lock import BoundedSemaphore
from gevent.queue import Queue
from pymongo.errors import PyMongoError

from mailappliance.services import bounces
from mailappliance.services.bounces import Reply
from mailappliance.services.dkim_signing import DkimSigner
from mailappliance.services.dsn import FailedRecipient, build_dsn
from mailappliance.services.ip_selection import IpSelectionService, Selection
from mailappliance.services.mime import summarize
from mailappliance.services.mx import DnsFailure, MxHost, MxResolver
from mailappliance.services.outbound import Handoff, SmtpOptions, hand_off, targets
from mailappliance.services.webhooks import WebhookNotifier
from mailappliance.settings import Settings
from mailappliance.storage.blobs import BlobStore
from mailappliance.storage.mailboxes import MailboxStore
from mailappliance.storage.queue import (
    BOUNCED,
    DEFERRED,
    HISTORY_KEPT,
    PARTIAL,
    PENDING,
    SENT,
    Completion,
    OutboundQueue,
    requeue_fields,
    utcnow,
)
from mailappliance.storage.writer import DeliveryWriter, WriteFailed, WriteRequest

log = logging.getLogger("mailappliance.queue")

MAX_COMPLETION_BATCH = 256
COMPLETION_ATTEMPTS = 3
BACKOFF_JITTER = 0.1
DSN_SWEEP_LIMIT = 1000


@dataclass
class RunnerConfig:
    hostname: str
    concurrency: int = 50
    domain_concurrency: int = 20
    retry_base: float = 60.0
    retry_max: float = 4 * 3600.0
    max_attempts: int = 10
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
            command_timeout=s.outbound_command_timeout,
            tls=s.outbound_tls,
        )
        relay = None
        if s.smtp_relay_host:
            relay = SmtpOptions(
                helo=s.hostname,
                port=s.smtp_relay_port,
                connect_timeout=s.outbound_connect_timeout,
                command_timeout=s.outbound_command_timeout,
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


@dataclass
class DomainResult:
    domain: str
    recipients: list[str]
    handoff: Handoff
    selection: Selection


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
        self.blobs = blobs
        self.mailboxes = mailboxes
        self.writer = writer
        self.resolver = resolver
        self.ip_selection = ip_selection
        self.webhooks = webhooks
        self.dkim = dkim
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{ObjectId()}"
        self._inflight: dict[ObjectId, ObjectId] = {}  # email id -> lease token
        self._domain_slots: dict[str, BoundedSemaphore] = {}
        self._wakeup = Event()
        self._backlog = False
        self._stopping = False
        self._greenlets: list[gevent.Greenlet] = []
        self._deliveries: set[gevent.Greenlet] = set()
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
        self._greenlets = [gevent.spawn(self._claim_loop), gevent.spawn(self._renew_loop), self._completer]
        gevent.spawn(self._sweep_reports)
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
        gevent.killall(self._greenlets, timeout=2)
        self._greenlets = []
        if unfinished:
            try:
                self.queue.release(unfinished)
                log.info("handed back %d unfinished deliveries", len(unfinished))
            except PyMongoError as exc:
                log.warning("could not hand back %d deliveries (their leases will expire): %s", len(unfinished), exc)

    def wake(self) -> None:
        """New mail was queued: look for due work now."""
        self._wakeup.set()

    def stats(self) -> dict[str, Any]:
        return {"owner": self.owner, "inFlight": len(self._inflight), "concurrency": self.config.concurrency, **self.counters}

    # ------------------------------------------------------------------ claiming
    def _claim_loop(self) -> None:
        while not self._stopping:
            try:
                if self._claim_once():
                    continue
            except PyMongoError as exc:
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
        claimed = self.queue.claim(free, self.owner, frozenset(self._inflight))
        self._backlog = len(claimed) == free
        for n, doc in enumerate(claimed):
            if self._stopping:
                self.queue.release({d["_id"]: d["lease"] for d in claimed[n:]})
                return False
            self._inflight[doc["_id"]] = doc["lease"]
            self.counters["claimed"] += 1
            delivery = gevent.spawn(self._process, doc)
            self._deliveries.add(delivery)
            delivery.link(self._deliveries.discard)
        return self._backlog

    def _renew_loop(self) -> None:
        while not self._stopping:
            gevent.sleep(self.config.lease / 3)
            try:
                self.queue.renew(dict(self._inflight))
            except PyMongoError as exc:
                log.warning("renewing %d leases failed: %s", len(self._inflight), exc)
            except Exception:
                log.exception("queue runner lease renewal error")

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
        try:
            if doc.get("delete_requested"):
                self.queue.delete_claimed(doc)
                log.info("%s: deleted as requested", doc.get("queue_id", email_id))
                return
            completion, events, reports = self._attempt(doc)
            outcome = self._commit(completion)
            if outcome == "flagged":
                outcome = self.queue.finish_flagged(completion, requeue_fields(completion.update["$set"]["recipients"], utcnow()) or {})
                log.info("%s: %s as requested during delivery", doc.get("queue_id", email_id), outcome)
            if outcome == "lost":
                self.counters["lost_leases"] += 1
                log.warning("%s: lease lost during delivery (taken over or deleted); outcome not recorded here", doc.get("queue_id", email_id))
                return
            for event in events:
                self.webhooks.notify(event)
            if reports:
                gevent.spawn(self._write_report, email_id)
        except Exception:
            self.counters["errors"] += 1
            log.exception("%s: delivery attempt failed unexpectedly; it will be retried when its lease expires", doc.get("queue_id", email_id))
        finally:
            self._inflight.pop(email_id, None)
            if self._backlog:
                self._wakeup.set()

    def _attempt(self, doc: dict) -> tuple[Completion, list[dict], bool]:
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
                results.append(self._deliver_domain(doc, domain, rcpts, raw))
            else:
                jobs = [gevent.spawn(self._deliver_domain, doc, d, rcpts, raw) for d, rcpts in groups.items()]
                gevent.joinall(jobs, raise_error=True)
                results.extend(job.value for job in jobs)
        return self._outcome(doc, results, utcnow())

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
            handoff = hand_off(targets(hosts, options.port), options, selection.ip, sender, recipients, raw)
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

    # ------------------------------------------------------------------ outcome
    def _outcome(self, doc: dict, results: list[DomainResult], now: datetime) -> tuple[Completion, list[dict], bool]:
        c = self.config
        attempts = int(doc.get("attempts", 0)) + 1
        age_from = doc.get("retry_from") or doc.get("created_at") or now
        too_old = (now - age_from).total_seconds() >= c.max_age
        sender = doc.get("from") or ""
        by_address: dict[str, tuple[Reply, DomainResult]] = {}
        for result in results:
            for address, reply in result.handoff.replies.items():
                by_address[address] = (reply, result)
        recipients, successful, bounced, history = [], [], [], []
        delivered_now, bounced_now, failed_reports = [], [], []
        for rcpt in doc["recipients"]:
            if rcpt["address"] not in by_address:
                recipients.append(rcpt)
                continue
            reply, result = by_address[rcpt["address"]]
            handoff = result.handoff
            entry = dict(rcpt)
            entry.update(
                attempts=int(rcpt.get("attempts", 0)) + 1,
                last_attempt_at=now,
                code=reply.code,
                enhanced_code=reply.enhanced,
                response=reply.text,
                mx_host=handoff.mx_host,
                ip=result.selection.ip,
                tls=handoff.tls,
            )
            entry.pop("ip_blocked", None)
            common = {
                "email_id": doc["_id"],
                "queue_id": doc.get("queue_id"),
                "message_id": doc.get("message_id"),
                "from": sender,
                "recipient": rcpt["address"],
                "code": reply.code,
                "enhanced_code": reply.enhanced,
                "response": reply.text,
                "mx_host": handoff.mx_host,
                "mx_address": handoff.mx_address,
                "ip": result.selection.ip,
                "ip_source": result.selection.source,
                "tls": handoff.tls,
                "attempts": entry["attempts"],
                "runner": self.owner,
            }
            if reply.ok:
                record_id = ObjectId()
                entry.update(status=SENT, delivered_at=now, record_id=record_id)
                successful.append({"_id": record_id, **common, "status": SENT, "delivered_at": now})
                delivered_now.append(entry)
            elif reply.permanent or entry["attempts"] >= c.max_attempts or too_old:
                exhausted = not reply.permanent
                kind = bounces.bounce_type(reply, exhausted=exhausted)
                reason = reply.describe()
                if exhausted:
                    reason = f"gave up after {entry['attempts']} attempts: {reason}"
                record_id = ObjectId()
                status = reply.enhanced if reply.permanent and reply.enhanced else ("5.4.7" if exhausted else "5.0.0")
                entry.update(status=BOUNCED, bounced_at=now, bounce_type=kind, record_id=record_id)
                bounced.append({"_id": record_id, **common, "status": BOUNCED, "bounce_type": kind, "reason": reason, "bounced_at": now})
                bounced_now.append(entry)
                failed_reports.append(
                    FailedRecipient(rcpt["address"], status, reason, handoff.mx_host, now, from_remote=reply.stage not in ("dns", "local"))
                )
            else:
                entry["status"] = DEFERRED
                if bounces.blocks_ip(reply):
                    entry["ip_blocked"] = True
            recipients.append(entry)
            self._log_recipient(doc, entry, reply, result)
        for result in results:
            first = next(iter(result.handoff.replies.values()), None)
            history.append(
                {
                    "at": now,
                    "domain": result.domain,
                    "recipients": len(result.recipients),
                    "mx_host": result.handoff.mx_host,
                    "tried": result.handoff.tried,
                    "ip": result.selection.ip,
                    "ip_source": result.selection.source,
                    "tls": result.handoff.tls,
                    "reply": first.describe() if first else None,
                    "seconds": round(result.handoff.elapsed, 3),
                }
            )
        left = [r for r in recipients if r.get("status") in PENDING]
        if left:
            status = DEFERRED
            delay = min(c.retry_max, c.retry_base * (2 ** (attempts - 1))) * random.uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER)
            next_at = now + timedelta(seconds=delay)
        else:
            states = {r.get("status") for r in recipients}
            status = SENT if states == {SENT} else BOUNCED if states == {BOUNCED} else PARTIAL
            next_at = now
        errors = [r for r in recipients if r.get("status") in (DEFERRED, BOUNCED) and r.get("last_attempt_at") == now]
        update: dict[str, Any] = {
            "$set": {
                "recipients": recipients,
                "status": status,
                "attempts": attempts,
                "next_attempt_at": next_at,
                "last_attempt_at": now,
                "updated_at": now,
                "last_error": f"{errors[0]['code']} {errors[0].get('response', '')}"[:500] if errors else None,
            },
            "$unset": {"lease": "", "lease_owner": "", "lease_until": "", "claimed_at": ""},
            "$push": {"history": {"$each": history, "$slice": -HISTORY_KEPT}},
        }
        if successful:
            update["$push"]["successful_ids"] = {"$each": [r["_id"] for r in successful]}
        if bounced:
            update["$push"]["bounced_ids"] = {"$each": [r["_id"] for r in bounced]}
        reports = bool(failed_reports) and self._wants_report(sender)
        if reports:
            update["$set"]["dsn"] = "pending"
            update["$push"]["dsn_pending_for"] = {"$each": [r.address for r in failed_reports]}
        self.counters["attempts"] += 1
        self.counters["delivered"] += len(delivered_now)
        self.counters["bounced"] += len(bounced_now)
        self.counters["deferred"] += sum(1 for r in recipients if r.get("status") == DEFERRED and r.get("last_attempt_at") == now)
        events = []
        for kind, entries in (("delivered", delivered_now), ("bounced", bounced_now)):
            if entries:
                events.append(self._event(kind, doc, entries, status, attempts, now))
        return Completion(doc["_id"], doc["lease"], update, successful, bounced, reports), events, reports

    def _wants_report(self, sender: str) -> bool:
        """A report goes to a local mailbox only; never to <> (RFC 5321 §4.5.5)."""
        if not sender or self.writer is None:
            return False
        try:
            return self.mailboxes.lookup(sender.lower()) is not None
        except PyMongoError:
            return True  # decide when writing it

    def _event(self, kind: str, doc: dict, entries: list[dict], status: str, attempts: int, now: datetime) -> dict:
        first = entries[0]
        return {
            "event": kind,
            "emailId": str(doc["_id"]),
            "queueId": doc.get("queue_id"),
            "messageId": doc.get("message_id"),
            "from": doc.get("from") or "",
            "to": [e["address"] for e in entries],
            "status": status,
            "smtpCode": first.get("code"),
            "enhancedCode": first.get("enhanced_code"),
            "response": first.get("response"),
            "bounceType": first.get("bounce_type"),
            "attempts": attempts,
            "ip": first.get("ip"),
            "mxHost": first.get("mx_host"),
            "tls": first.get("tls"),
            "recipients": [
                {
                    "address": e["address"],
                    "status": e["status"],
                    "smtpCode": e.get("code"),
                    "enhancedCode": e.get("enhanced_code"),
                    "response": e.get("response"),
                    "bounceType": e.get("bounce_type"),
                    "mxHost": e.get("mx_host"),
                    "ip": e.get("ip"),
                }
                for e in entries
            ],
            "timestamp": now.isoformat(),
        }

    def _log_recipient(self, doc: dict, entry: dict, reply: Reply, result: DomainResult) -> None:
        handoff = result.handoff
        relay = f"{handoff.mx_host}[{handoff.mx_address}]" if handoff.mx_host else "none"
        log.info(
            "%s: to=<%s> relay=%s ip=%s tls=%s attempt=%d status=%s (%s)",
            doc.get("queue_id", doc["_id"]),
            entry["address"],
            relay,
            result.selection.ip or "default",
            "yes" if handoff.tls else "no",
            entry["attempts"],
            entry["status"],
            reply.describe()[:300],
        )

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
        for attempt in range(1, COMPLETION_ATTEMPTS + 1):
            try:
                outcome = self.queue.finish([c for c, _ in batch])
                break
            except PyMongoError as exc:
                if attempt == COMPLETION_ATTEMPTS:
                    log.error("recording %d delivery outcomes failed: %s; they will be retried after their leases expire", len(batch), exc)
                    for _, result in batch:
                        result.set_exception(exc)
                    return
                gevent.sleep(0.2 * attempt)
        for completion, result in batch:
            result.set(outcome[completion.email_id])

    # ------------------------------------------------------------------ bounce reports
    def _sweep_reports(self) -> None:
        try:
            for email_id in self.queue.pending_reports(DSN_SWEEP_LIMIT):
                self._write_report(email_id)
        except PyMongoError as exc:
            log.warning("could not look for bounce reports still owed: %s", exc)

    def _write_report(self, email_id: ObjectId) -> None:
        """Put an RFC 3464 report for the recipients in ``dsn_pending_for`` into the sender's INBOX."""
        try:
            if not self.queue.claim_report(email_id):
                return  # another runner is writing it
            doc = self.queue.get(email_id)
            if doc is None or doc.get("dsn") != "pending":
                self.queue.forget_report(email_id)
                return
            addresses = list(doc.get("dsn_pending_for") or [])
            sender = (doc.get("from") or "").lower()
            mailbox = self.mailboxes.lookup(sender) if sender else None
            if mailbox is None or self.writer is None or not addresses:
                self.queue.report_written(email_id, addresses, None)
                return
            try:
                original: Optional[bytes] = self.blobs.read(doc["blob"], doc["size"])
            except (KeyError, ValueError):
                original = None
            failed = []
            for rcpt in doc["recipients"]:
                if rcpt["address"] in addresses:
                    status = rcpt.get("enhanced_code") if (rcpt.get("code") or 0) >= 500 and rcpt.get("enhanced_code") else "5.4.7" if (rcpt.get("code") or 0) < 500 else "5.0.0"
                    failed.append(
                        FailedRecipient(
                            rcpt["address"],
                            status,
                            f"{rcpt.get('code')} {rcpt.get('response', '')}",
                            rcpt.get("mx_host"),
                            rcpt.get("last_attempt_at"),
                        )
                    )
            now = utcnow()
            report = b"Return-Path: <>\r\n" + build_dsn(
                reporting_host=self.config.hostname,
                sender=sender,
                failed=failed,
                original=original,
                arrival=doc.get("created_at"),
                now=now,
                queue_id=doc.get("queue_id") or "",
            )
            summary = summarize(report)
            blob_id = ObjectId()
            message_id = ObjectId()
            request = WriteRequest(
                received_at=now,
                blobs=[(blob_id, report, 1)],
                messages=[
                    {
                        "_id": message_id,
                        "mailbox": mailbox["_id"],
                        "folder": mailbox["inbox"],
                        "flags": [],
                        "internal_date": now,
                        "size": len(report),
                        "blob": blob_id,
                        "queue_id": doc.get("queue_id"),
                        **summary.message_fields(),
                    }
                ],
            )
            self.writer.submit(request)
            self.queue.report_written(email_id, addresses, message_id)
            log.info("%s: bounce report for %d recipient(s) put into %s's INBOX", doc.get("queue_id"), len(failed), sender)
        except (PyMongoError, WriteFailed) as exc:
            log.error("bounce report for %s not written yet (%s); retried at the next start", email_id, exc)
        except Exception:
            log.exception("bounce report for %s failed", email_id)
