"""Outbound records made by the code the queue runner uses, without a network: messages
are relayed into the queue over SMTP (the inbound service writes ``emails``), claimed with
``OutboundQueue.claim`` and finished with the ``Completion`` that ``build_attempt`` makes
from the replies given here (``successful_emails``, ``bounced_emails``, ``history``)."""
from __future__ import annotations

import json
import smtplib
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import Optional

from mailappliance.services.bounces import Reply
from mailappliance.services.ip_selection import Selection
from mailappliance.services.outbound import Handoff
from mailappliance.services.outcomes import DomainResult, RetryPolicy, build_attempt

KEY = "test-api-key-0123456789"
SENDER = "sender@example.com"
OK = Reply(250, "2.0.0 Ok: queued as 1234", stage="data", remote=True)
UNKNOWN_USER = Reply(550, "5.1.1 <x>: Recipient address rejected: User unknown", stage="rcpt", remote=True)
MAILBOX_FULL = Reply(552, "5.2.2 Mailbox full", stage="rcpt", remote=True)
TRY_LATER = Reply(451, "4.3.0 Try again later", stage="rcpt", remote=True)


def relay(app, recipients: list[str], subject: str, sender: str = SENDER, body: str = "Hi there.\r\n", extra: str = "") -> dict:
    """Submit over SMTP from loopback (a relay client): the message is queued in ``emails``."""
    message = (
        f"From: Sender <{sender}>\r\nTo: <{recipients[0]}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@example.com>\r\n{extra}\r\n{body}"
    )
    with smtplib.SMTP("127.0.0.1", app.ports["smtp"]) as client:
        client.sendmail(sender, recipients, message.encode())
    outgoing = app.stores.collections.outgoing
    for _ in range(200):
        doc = outgoing.find_one({"subject": subject})
        if doc is not None:
            return doc
        import gevent

        gevent.sleep(0.02)
    raise AssertionError(f"{subject!r} was not queued")


def attempt(app, replies: dict[str, Reply], now: Optional[datetime] = None, policy: Optional[RetryPolicy] = None) -> dict:
    """Claim every due message and finish each with ``replies`` (per recipient; others
    keep their state); returns ``{email id: outcome}`` from ``OutboundQueue.finish``."""
    queue = app.outbound.queue
    now = now or datetime.now(timezone.utc)
    claimed = queue.claim(100, "test-runner")
    completions = []
    for doc in claimed:
        by_domain: dict[str, dict[str, Reply]] = {}
        for rcpt in doc["recipients"]:
            if rcpt["address"] in replies and rcpt["status"] in ("queued", "deferred"):
                by_domain.setdefault(rcpt["address"].rsplit("@", 1)[1], {})[rcpt["address"]] = replies[rcpt["address"]]
        results = [
            DomainResult(
                domain,
                list(answers),
                Handoff(answers, mx_host=f"mx.{domain}", mx_address="127.0.0.2", tls=True, tried=[f"mx.{domain}"], elapsed=0.01),
                Selection(None, "default"),
            )
            for domain, answers in by_domain.items()
        ]
        made = build_attempt(policy or RetryPolicy(retry_base=0.0), "test-runner", doc, results, now, lambda sender: False)
        completions.append(made.completion)
    return {str(k): v for k, v in queue.finish(completions).items()}


def call(app, path: str, method: str = "GET", key: Optional[str] = KEY, body: Optional[dict] = None, port: str = "api"):
    """``(status, body, headers)`` from the API port; the body is parsed when it is JSON."""
    headers = {"x-api-key": key} if key else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(f"http://127.0.0.1:{app.ports[port]}{path}", data=data, method=method, headers=headers)
    try:
        response = urllib.request.urlopen(request)
    except urllib.error.HTTPError as error:
        response = error
    with response:
        payload = response.read()
        if response.headers.get("Content-Type", "").startswith("application/json"):
            return response.status, json.loads(payload), response.headers
        return response.status, payload, response.headers
