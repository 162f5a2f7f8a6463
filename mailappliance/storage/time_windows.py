"""Newest-first pages read by windows of an indexed date, for a database where a sort with
a limit reads every match.

What the embedded server costs (measured on 20,000 documents in a 17-minute burst,
bench/api_reads.py): any read of a range on a date index reads every key in it, about
20 us each, whatever the query asks for - ``find().limit(11)`` 406 ms,
``count_documents(limit=11)`` 408 ms, ``aggregate([$match, $limit: 1])`` 423 ms,
``maxTimeMS=5`` aborts only after 277 ms - while an empty range costs 0.4 ms. So no read
can tell that a range holds "more than a page" without paying for all of it, and a page
costs what the windows it reads hold. Hence:

* windows go back from now, doubling in width while they are empty (cheap);
* where a query's page ended the last time is remembered (:class:`PageEnds`): a window
  that would reach below that point stops there, so a repeated read (the dashboard's
  polls) reads the page plus what arrived since, not the whole burst the page sits in
  (after a burst only the first read of a process pays for the burst);
* when the number of matches is known (an exact total counted anyway), the walk stops
  once they are all read instead of going back to 1970;
* an equality on a field with an index of its own (``status``) is checked here
  (``where``), not sent: the embedded server then reads that field's index instead of
  the date range - every ``sent`` message for each window, 355 ms for an empty one
  (a ``hint`` of the date index is no better: 444 ms for 123 documents).

The result is always ``find(query).sort([(key, -1), ("_id", -1)]).skip(skip).limit(limit)``
over the documents whose ``key`` is a date within the bounds: the windows are contiguous
and disjoint, so where they start never changes what is returned.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from typing import Any, Hashable, Optional

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
END_OF_TIME = datetime(9999, 12, 31, tzinfo=timezone.utc)
FIRST_WINDOW = timedelta(seconds=2)
PAGE_ENDS_KEPT = 256


def clamp(when: datetime) -> datetime:
    """An aware UTC time within what BSON dates hold (naive means UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    try:
        when = when.astimezone(timezone.utc)
    except OverflowError:  # year 1 east of UTC, year 9999 west of it
        return EPOCH if when.year < 1970 else END_OF_TIME
    return min(max(when, EPOCH), END_OF_TIME)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class PageEnds:
    """Where the last page of each query ended (the ``key`` of its last document), for the
    ``PAGE_ENDS_KEPT`` queries used last. Only where windows start depends on it, never
    what a page holds: a stale or wrong entry costs reads, not correctness."""

    def __init__(self, kept: int = PAGE_ENDS_KEPT) -> None:
        self.kept = kept
        self._ends: OrderedDict[Hashable, datetime] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: Hashable) -> Optional[datetime]:
        with self._lock:
            end = self._ends.get(name)
            if end is not None:
                self._ends.move_to_end(name)
            return end

    def put(self, name: Hashable, end: datetime) -> None:
        with self._lock:
            self._ends[name] = end
            self._ends.move_to_end(name)
            while len(self._ends) > self.kept:
                self._ends.popitem(last=False)


def newest_key(key: str):
    return lambda d: (d.get(key) or EPOCH, d["_id"])


def newest_first(
    collection,
    query: dict,
    key: str,
    skip: int,
    limit: int,
    projection: Optional[dict] = None,
    since: Optional[datetime] = None,
    until: Optional[datetime] = None,
    matches: Optional[int] = None,
    page_ends: Optional[PageEnds] = None,
    where: Optional[dict] = None,
) -> list[dict]:
    """``find(query).sort(key, -1).skip(skip).limit(limit)`` read by windows of the indexed
    date ``key``, newest first (ties by ``_id``, newest first).

    The first window is everything from a moment ago on (later times included, in case of
    clock skew); each older window is twice as wide as the one before, until enough
    documents were read, ``matches`` (the number of matching documents, when known) were
    all read, or ``since`` (else 1970) is passed. A window that would reach below where
    this query's page ended the last time (``page_ends``) stops there, and the next one
    starts small again. ``where``: equalities the documents must also meet, checked on
    what the windows return (the fields must be in ``projection``).
    """
    wanted = skip + limit
    if limit <= 0 or (matches is not None and matches <= skip):
        return []
    enough = wanted if matches is None else min(wanted, matches)
    floor = clamp(since) if since is not None else EPOCH
    upper: Optional[datetime] = clamp(until) if until is not None else None  # None: open above
    name = (collection.full_name, key, repr(sorted(query.items())), repr(sorted((where or {}).items())), floor, upper, wanted)
    cut = page_ends.get(name) if page_ends is not None else None
    if cut is not None and not (floor < cut and (upper is None or cut < upper)):
        cut = None
    lo = max(floor, min(upper or END_OF_TIME, utcnow()) - FIRST_WINDOW)
    width = FIRST_WINDOW
    found: list[dict] = []
    while True:
        restart = False
        if cut is not None and lo <= cut:
            lo, cut, restart = cut, None, True
        bound: dict[str, Any] = {"$gte": lo}
        if upper is not None:
            bound["$lt"] = upper
        docs = list(collection.find({**query, key: bound}, projection))
        if where:
            docs = [d for d in docs if all(d.get(f) == v for f, v in where.items())]
        docs.sort(key=newest_key(key), reverse=True)
        found.extend(docs)
        if len(found) >= enough or lo <= floor:
            break
        upper = lo
        width = FIRST_WINDOW if restart else width * 2
        lo = max(floor, lo - width)
    if page_ends is not None and len(found) >= enough and found[enough - 1].get(key) is not None:
        page_ends.put(name, clamp(found[enough - 1][key]))
    return found[skip:wanted]
