"""Builds the outbound side from the settings: queue store, resolver, IP selection, DKIM,
webhooks and the runner, so ``app.py`` wires it with one call."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from mailappliance.services.dkim_signing import DkimSigner
from mailappliance.services.ip_selection import IpSelectionService
from mailappliance.services.mx import MxResolver
from mailappliance.services.queue_runner import QueueRunner, RunnerConfig
from mailappliance.services.webhooks import WebhookNotifier
from mailappliance.settings import Settings
from mailappliance.storage.blobs import BlobStore
from mailappliance.storage.mailboxes import MailboxStore
from mailappliance.storage.mongo import Collections
from mailappliance.storage.queue import OutboundQueue
from mailappliance.storage.writer import DeliveryWriter


@dataclass
class Outbound:
    queue: OutboundQueue
    resolver: MxResolver
    ip_selection: IpSelectionService
    webhooks: WebhookNotifier
    dkim: DkimSigner
    runner: QueueRunner
    running: bool = False

    def start(self) -> None:
        self.webhooks.start()
        self.runner.start()
        self.running = True

    def stop(self, timeout: float) -> None:
        if self.running:
            self.runner.stop(timeout)
            self.webhooks.stop()
            self.running = False

    def stats(self) -> dict:
        return {"queue": self.queue.stats(), "runner": self.runner.stats(), "webhooks": self.webhooks.stats()}


def build_outbound(
    settings: Settings,
    collections: Collections,
    blobs: BlobStore,
    mailboxes: MailboxStore,
    writer: Optional[DeliveryWriter],
    owner: Optional[str] = None,
) -> Outbound:
    s = settings
    queue = OutboundQueue(collections, blobs, s.queue_lease)
    resolver = MxResolver(s.dns_servers, s.dns_timeout)
    ip_selection = IpSelectionService(
        s.ip_selection_enabled, s.ip_selection_api_url, s.ip_selection_timeout, s.ip_selection_retries, s.fallback_ip, s.ip_selection_cache_ttl
    )
    webhooks = WebhookNotifier(
        s.webhook_enabled,
        s.webhook_success_url,
        s.webhook_failure_url,
        s.webhook_timeout,
        s.webhook_retries,
        s.webhook_retry_base,
        s.webhook_secret,
        record_failure=lambda doc: collections.webhook_failures.insert_one(doc),
    )
    dkim = DkimSigner(s.dkim_key_dir, s.dkim_selector)
    runner = QueueRunner(RunnerConfig.from_settings(s), queue, blobs, mailboxes, writer, resolver, ip_selection, webhooks, dkim, owner)
    return Outbound(queue, resolver, ip_selection, webhooks, dkim, runner)
