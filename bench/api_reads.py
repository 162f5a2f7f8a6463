"""Time the API's reads of the outbound side on the embedded database with N records.

    python -m bench.api_reads [N]    (default 20000)

Fills a fresh embedded database with N incoming_emails, N emails (mixed statuses),
N successful_emails and N/10 bounced_emails spread over the last 48 hours (ids made at
their event time, as the appliance makes them), then times ``OutboundRecords.stats()``
(``GET /api/email-stats``), the first page of each list and a filtered list, through
the API app's HTTP handler (Flask test client): the first call, then the median of six.

Then the burst: a fresh database holding only a newsletter - N emails and N successful
records made in 17 minutes 20 hours ago (one in 500 bounced) - and the dashboard's first
pages of 10, a rare status and a status with no message.
"""
from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bson import ObjectId

from mailappliance.services.mailbox_admin import MailboxAdmin
from mailappliance.settings import Settings
from mailappliance.storage.blobs import BlobStore
from mailappliance.storage.embedded import EmbeddedDatabase
from mailappliance.storage.folders import FolderStore
from mailappliance.storage.incoming import IncomingStore
from mailappliance.storage.mailboxes import MailboxStore
from mailappliance.storage.mongo import Collections, open_database
from mailappliance.services.outbound_setup import build_outbound
from mailappliance.web import ApiServices, create_api_app

STATUSES = ["sent"] * 80 + ["bounced"] * 5 + ["partial"] * 3 + ["deferred"] * 7 + ["queued"] * 5
KEY = "bench-key"


def fill(c: Collections, n: int) -> None:
    now = datetime.now(timezone.utc)
    rnd = random.Random(1)

    def when() -> datetime:
        return now - timedelta(seconds=rnd.uniform(0, 48 * 3600))

    for name, count in (("incoming", n), ("emails", n), ("successful", n), ("bounced", n // 10)):
        batch = []
        for i in range(count):
            at = when()
            oid = ObjectId.from_datetime(at)
            oid = ObjectId(oid.binary[:4] + ObjectId().binary[4:])  # unique, made "at" that time
            address = f"user{i % 500}@dest{i % 37}.example"
            if name == "incoming":
                doc = {"_id": oid, "sender": "a@b.example", "recipients": [address], "subject": f"s{i}", "size": 2000,
                       "received_at": at, "source": "smtp", "role": "mx", "status": "queued"}
                coll = c.incoming
            elif name == "emails":
                status = rnd.choice(STATUSES)
                doc = {"_id": oid, "queue_id": str(oid), "from": "sender@example.com", "to": [address],
                       "recipients": [{"address": address, "status": status if status != "partial" else "sent", "attempts": 1}],
                       "subject": f"s{i}", "message_id": f"<{i}@x>", "size": 2000, "blob": ObjectId(), "status": status,
                       "attempts": 1, "next_attempt_at": at + timedelta(minutes=5), "created_at": at, "updated_at": at,
                       "source": "esmtp", "history": [{"at": at, "domain": "dest.example", "reply": "250 ok"}]}
                coll = c.outgoing
            else:
                doc = {"_id": oid, "email_id": ObjectId(), "from": "sender@example.com", "recipient": address, "code": 250,
                       "response": "2.0.0 ok", "mx_host": "mx.dest.example", "attempts": 1, "tls": True}
                if name == "successful":
                    doc.update(status="sent", delivered_at=at)
                    coll = c.successful
                else:
                    doc.update(status="bounced", bounced_at=at, bounce_type=rnd.choice(["hard", "soft", "permanent"]))
                    coll = c.bounced
            batch.append(doc)
            if len(batch) == 1000:
                coll.insert_many(batch, ordered=False)
                batch = []
        if batch:
            coll.insert_many(batch, ordered=False)


def fill_burst(c: Collections, n: int) -> None:
    """``n`` emails and ``n`` delivery records in a 17-minute burst that ended 20 hours ago."""
    start = datetime.now(timezone.utc) - timedelta(hours=20, minutes=17)
    rnd = random.Random(2)
    emails, records = [], []
    for i in range(n):
        at = start + timedelta(seconds=rnd.uniform(0, 17 * 60))
        oid = ObjectId(ObjectId.from_datetime(at).binary[:4] + ObjectId().binary[4:])
        address = f"user{i}@dest{i % 37}.example"
        status = "bounced" if i % 500 == 0 else "sent"
        emails.append({"_id": oid, "queue_id": str(oid), "from": "news@example.com", "to": [address],
                       "recipients": [{"address": address, "status": status, "attempts": 1}], "subject": "News",
                       "message_id": f"<{i}@news>", "size": 2000, "blob": ObjectId(), "status": status, "attempts": 1,
                       "next_attempt_at": at, "created_at": at, "updated_at": at, "source": "api", "history": []})
        records.append({"_id": oid, "email_id": oid, "from": "news@example.com", "recipient": address, "code": 250,
                        "response": "2.0.0 ok", "mx_host": "mx.dest.example", "attempts": 1, "tls": True,
                        "status": "sent", "delivered_at": at})
        if len(emails) == 1000:
            c.outgoing.insert_many(emails, ordered=False)
            c.successful.insert_many(records, ordered=False)
            emails, records = [], []
    if emails:
        c.outgoing.insert_many(emails, ordered=False)
        c.successful.insert_many(records, ordered=False)


def api(url: str, tmp: str, c: Collections):
    settings = Settings(mongodb_url=url, data_dir=Path(tmp) / "data", queue_enabled=False)
    blobs = BlobStore(c)
    folders = FolderStore(c)
    mailboxes = MailboxStore(c, folders, blobs)
    outbound = build_outbound(settings, c, blobs, mailboxes, None)
    services = ApiServices(KEY, lambda: None, IncomingStore(c), MailboxAdmin(mailboxes, None, None, 0), outbound)  # type: ignore[arg-type]
    return create_api_app(services).test_client()


def timed(client, path: str, runs: int = 7) -> tuple[float, float, int]:
    """(first call, median of the following ones) in ms, and the response size."""
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(path, headers={"x-api-key": KEY})
        samples.append(time.perf_counter() - started)
        assert response.status_code == 200, (path, response.status_code, response.get_data(as_text=True)[:300])
    return samples[0] * 1000, statistics.median(samples[1:]) * 1000, len(response.get_data())


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedDatabase(Path(tmp), cache_size="256M")
        server.start()
        try:
            client, db = open_database(server.url)
            c = Collections(db)
            started = time.perf_counter()
            fill(c, n)
            print(f"filled {n} incoming, {n} emails, {n} successful, {n // 10} bounced in {time.perf_counter() - started:.1f} s")
            app = api(server.url, tmp, c)
            for path in (
                "/api/email-stats",
                "/api/emails?limit=50",
                "/api/emails?limit=50&status=deferred",
                "/api/emails?limit=50&sort=-updated_at",
                "/api/emails?limit=50&recipient=dest3.example",
                "/api/successful-emails?limit=50",
                "/api/successful-emails?limit=50&page=20",
                "/api/bounced-emails?limit=50&bounce_type=hard",
                "/api/incoming-emails?limit=50",
                "/api/queue/stats",
            ):
                first, ms, size = timed(app, path)
                print(f"first {first:7.1f} ms, then {ms:7.1f} ms  {size:7d} B  GET {path}")
            client.close()

            url = server.url.replace("/mailappliance?", "/burst?")
            client, db = open_database(url)
            c = Collections(db)
            assert db.name == "burst", db.name
            fill_burst(c, n)
            print(f"burst: {n} emails and {n} successful records in 17 minutes, 20 hours ago")
            app = api(url, tmp, c)
            for path in (
                "/api/successful-emails?limit=10",
                "/api/emails?limit=10",
                "/api/emails?limit=10&status=bounced",
                "/api/emails?limit=10&status=sent",
                "/api/emails?limit=10&status=queued",
                "/api/successful-emails?limit=10&page=3",
                "/api/email-stats",
            ):
                first, ms, size = timed(app, path)
                print(f"first {first:7.1f} ms, then {ms:7.1f} ms  {size:7d} B  GET {path}")
            client.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
