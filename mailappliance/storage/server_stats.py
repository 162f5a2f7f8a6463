"""``server_stats``: the listeners' counters, published by each appliance process.

The counters (``ServerStats.as_dict()``) live in the memory of the process that owns
the listening sockets. HTTP apps served by another process (gunicorn, see
``mailappliance/wsgi.py``) read them from here. One document per instance and
listener, ``_id`` = ``"<instance>/<listener name>"``; a TTL index on ``updated_at``
removes the documents of instances that died without saying goodbye.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pymongo import UpdateOne
from pymongo.errors import PyMongoError

from mailappliance.storage.mongo import Collections

# How often an appliance publishes, and how old a document may be and still count as live.
PUBLISH_INTERVAL = 5.0
FRESH_WITHIN = 3 * PUBLISH_INTERVAL


class ServerStatsError(RuntimeError):
    """The counters could not be written or read."""


class ServerStatsStore:
    def __init__(self, collections: Collections) -> None:
        self.c = collections

    def publish(self, instance: str, stats: list[dict]) -> None:
        """Upsert the counters of every listener of ``instance`` in one bulk write."""
        if not stats:
            return
        now = datetime.now(timezone.utc)
        ops = [
            UpdateOne(
                {"_id": f"{instance}/{item['name']}"},
                {"$set": {**item, "instance": instance, "updated_at": now}},
                upsert=True,
            )
            for item in stats
        ]
        try:
            self.c.server_stats.bulk_write(ops, ordered=False)
        except PyMongoError as exc:
            raise ServerStatsError(f"cannot publish listener stats: {exc}") from None

    def read(self, fresh_within_seconds: float = FRESH_WITHIN) -> list[dict]:
        """Listeners of every instance heard from within ``fresh_within_seconds``,
        ordered by instance then port; ``updated_at`` as ISO 8601."""
        since = datetime.now(timezone.utc) - timedelta(seconds=fresh_within_seconds)
        try:
            docs = list(self.c.server_stats.find({"updated_at": {"$gte": since}}))
        except PyMongoError as exc:
            raise ServerStatsError(f"cannot read listener stats: {exc}") from None
        out = []
        for doc in docs:
            doc.pop("_id", None)
            updated = doc.get("updated_at")
            if isinstance(updated, datetime):
                doc["updated_at"] = updated.isoformat()
            out.append(doc)
        out.sort(key=lambda d: (str(d.get("instance", "")), int(d.get("port") or 0), str(d.get("name", ""))))
        return out

