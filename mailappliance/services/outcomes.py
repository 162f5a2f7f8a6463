"""What one delivery attempt writes back: per-recipient statuses, outcome records, the
guarded update of the original, webhook events and the bounce report owed.

Per recipient: 2xx → sent; 5xx → bounced; 4xx, timeouts and connection failures →
deferred and retried after ``QUEUE_RETRY_BASE * 2^(attempts-1)`` seconds (at most
``QUEUE_RETRY_MAX``), bounced once ``QUEUE_MAX_AGE`` (or a non-zero ``QUEUE_MAX_ATTEMPTS``)
is reached. The report's ids (the report's own, the INBOX message's and its blob's) and
its per-recipient content (RFC 3464 Status, diagnostic, whether it came from a remote
server) are chosen here, so writing the report later is idempotent.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Optional

from bson import ObjectId

from mailappliance.services import bounces
from mailappliance.services.bounces import Reply
from mailappliance.services.ip_selection import Selection
from mailappliance.services.outbound import Handoff
from mailappliance.storage.queue import BOUNCED, DEFERRED, HISTORY_KEPT, PARTIAL, PENDING, SENT, Completion

log = logging.getLogger("mailappliance.queue")

BACKOFF_JITTER = 0.1


@dataclass
class RetryPolicy:
    retry_base: float = 60.0
    retry_max: float = 4 * 3600.0
    max_attempts: int = 0  # 0: no limit, max_age decides
    max_age: float = 5 * 24 * 3600.0

    def delay(self, attempts: int) -> float:
        base = min(self.retry_max, self.retry_base * (2 ** min(attempts - 1, 64)))
        return base * random.uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER)

    def exhausted(self, attempts: int, too_old: bool) -> bool:
        return too_old or (self.max_attempts > 0 and attempts >= self.max_attempts)


@dataclass
class DomainResult:
    domain: str
    recipients: list[str]
    handoff: Handoff
    selection: Selection


@dataclass
class Attempt:
    completion: Completion
    events: list[dict] = field(default_factory=list)
    delivered: int = 0
    bounced: int = 0
    deferred: int = 0


def build_attempt(
    policy: RetryPolicy,
    owner: str,
    doc: dict,
    results: list[DomainResult],
    now: datetime,
    wants_report: Callable[[str], bool],
) -> Attempt:
    attempts = int(doc.get("attempts", 0)) + 1
    age_from = doc.get("retry_from") or doc.get("created_at") or now
    too_old = (now - age_from).total_seconds() >= policy.max_age
    sender = doc.get("from") or ""
    by_address: dict[str, tuple[Reply, DomainResult]] = {}
    for result in results:
        for address, reply in result.handoff.replies.items():
            by_address[address] = (reply, result)
    recipients: list[dict] = []
    successful: list[dict] = []
    bounced: list[dict] = []
    delivered_now: list[dict] = []
    bounced_now: list[dict] = []
    failed_report: list[dict] = []
    deferred = 0
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
            "runner": owner,
        }
        if reply.ok:
            record_id = ObjectId()
            entry.update(status=SENT, delivered_at=now, record_id=record_id)
            successful.append({"_id": record_id, **common, "status": SENT, "delivered_at": now})
            delivered_now.append(entry)
        elif reply.permanent or policy.exhausted(entry["attempts"], too_old):
            exhausted = not reply.permanent
            kind = bounces.bounce_type(reply, exhausted=exhausted)
            reason = reply.describe()
            if exhausted:
                reason = f"gave up after {entry['attempts']} attempts: {reason}"
            record_id = ObjectId()
            entry.update(status=BOUNCED, bounced_at=now, bounce_type=kind, record_id=record_id)
            bounced.append({"_id": record_id, **common, "status": BOUNCED, "bounce_type": kind, "reason": reason, "bounced_at": now})
            bounced_now.append(entry)
            failed_report.append(
                {
                    "address": rcpt["address"],
                    "status": bounces.dsn_status(reply, exhausted),
                    "diagnostic": reason,
                    "remote_mta": handoff.mx_host if reply.remote else None,
                    "last_attempt": now,
                    "from_remote": reply.remote and not exhausted,
                }
            )
        else:
            entry["status"] = DEFERRED
            deferred += 1
            if bounces.blocks_ip(reply):
                entry["ip_blocked"] = True
        recipients.append(entry)
        log_recipient(doc, entry, reply, result)
    history = [
        {
            "at": now,
            "domain": result.domain,
            "recipients": len(result.recipients),
            "mx_host": result.handoff.mx_host,
            "tried": result.handoff.tried,
            "ip": result.selection.ip,
            "ip_source": result.selection.source,
            "tls": result.handoff.tls,
            "reply": first.describe() if (first := next(iter(result.handoff.replies.values()), None)) else None,
            "seconds": round(result.handoff.elapsed, 3),
        }
        for result in results
    ]
    if any(r.get("status") in PENDING for r in recipients):
        status = DEFERRED
        next_at = now + timedelta(seconds=policy.delay(attempts))
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
            "last_error": last_error(errors[0]) if errors else None,
        },
        "$unset": {"lease": "", "lease_owner": "", "lease_until": "", "claimed_at": ""},
        "$push": {"history": {"$each": history, "$slice": -HISTORY_KEPT}},
    }
    if successful:
        update["$push"]["successful_ids"] = {"$each": [r["_id"] for r in successful]}
    if bounced:
        update["$push"]["bounced_ids"] = {"$each": [r["_id"] for r in bounced]}
    report: Optional[dict] = None
    if failed_report and wants_report(sender):
        report = {
            "_id": ObjectId(),
            "email_id": doc["_id"],
            "sender": sender,
            "addresses": [f["address"] for f in failed_report],
            "failed": failed_report,
            "message_id": ObjectId(),
            "blob_id": ObjectId(),
            "at": now,
        }
        update["$set"]["dsn"] = "pending"
        update["$push"]["dsn_pending_for"] = {"$each": report["addresses"]}
    events = [
        event(kind, doc, entries, status, attempts, now)
        for kind, entries in (("delivered", delivered_now), ("bounced", bounced_now))
        if entries
    ]
    completion = Completion(doc["_id"], doc["lease"], update, successful, bounced, report)
    return Attempt(completion, events, len(delivered_now), len(bounced_now), deferred)


def last_error(entry: dict) -> str:
    """``550 5.1.1 text``: the reply with its RFC 3463 code, as the attempt history shows it."""
    text = entry.get("response") or ""
    enhanced = entry.get("enhanced_code")
    if enhanced and not text.startswith(enhanced):
        text = f"{enhanced} {text}"
    return f"{entry['code']} {text}".strip()[:500]


def event(kind: str, doc: dict, entries: list[dict], status: str, attempts: int, now: datetime) -> dict:
    """The webhook payload of one outcome (README: Webhooks)."""
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


def log_recipient(doc: dict, entry: dict, reply: Reply, result: DomainResult) -> None:
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
