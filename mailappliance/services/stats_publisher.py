"""Publishes this process's listener counters to ``server_stats`` every few seconds,
so HTTP apps running in other processes (gunicorn) can serve ``/api/*/stats``."""
from __future__ import annotations

import logging
import os
import socket
from typing import Callable, Optional

import gevent
from gevent.event import Event

from mailappliance.storage.server_stats import PUBLISH_INTERVAL, ServerStatsError, ServerStatsStore

log = logging.getLogger("mailappliance.stats")


def instance_id() -> str:
    """``host:pid``: unique among live processes sharing one database."""
    return f"{socket.gethostname()}:{os.getpid()}"


class StatsPublisher:
    def __init__(
        self,
        store: ServerStatsStore,
        collect: Callable[[], list[dict]],
        instance: Optional[str] = None,
        interval: float = PUBLISH_INTERVAL,
    ) -> None:
        self.store = store
        self.collect = collect
        self.instance = instance or instance_id()
        self.interval = interval
        self._stop = Event()
        self._greenlet: Optional[gevent.Greenlet] = None
        self._failing = False

    def publish(self, final: bool = False) -> bool:
        """One bulk upsert; at ``final`` (shutdown) no connection is open any more."""
        stats = self.collect()
        if final:
            stats = [{**item, "current_connections": 0} for item in stats]
        try:
            self.store.publish(self.instance, stats)
        except ServerStatsError as exc:
            if not self._failing:  # log once per outage, not every few seconds
                log.warning("%s", exc)
            self._failing = True
            return False
        if self._failing:
            log.info("listener stats published again")
        self._failing = False
        return True

    def start(self) -> None:
        self.publish()
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.publish()
            except Exception:  # a bug here must not end publishing for good
                log.exception("listener stats publisher error")

    def stop(self) -> None:
        """Stop the loop and publish once more with no open connections."""
        self._stop.set()
        if self._greenlet is not None:
            self._greenlet.join(timeout=5)
            self._greenlet.kill(block=False)
            self._greenlet = None
            self.publish(final=True)
