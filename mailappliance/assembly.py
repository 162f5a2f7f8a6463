"""The services over one database, assembled the same way wherever they run: in the
appliance (``app.py``, which adds the listeners, IMAP and the queue runner) and in each
gunicorn worker (``wsgi.py``, which serves only the HTTP apps)."""
from __future__ import annotations

from dataclasses import dataclass

from pymongo.database import Database

from mailappliance.services.auth import Authenticator
from mailappliance.services.domains import LocalDomains
from mailappliance.services.inbound import InboundService
from mailappliance.services.mailbox_admin import MailboxAdmin
from mailappliance.services.outbound_setup import Outbound, build_outbound
from mailappliance.services.sending import MessageSender
from mailappliance.settings import Settings
from mailappliance.storage.blobs import BlobStore
from mailappliance.storage.folders import FolderStore
from mailappliance.storage.incoming import IncomingStore
from mailappliance.storage.mailboxes import MailboxStore
from mailappliance.storage.mongo import Collections
from mailappliance.storage.writer import DeliveryWriter


@dataclass
class Stores:
    collections: Collections
    blobs: BlobStore
    folders: FolderStore
    mailboxes: MailboxStore
    incoming: IncomingStore

    @classmethod
    def over(cls, collections: Collections) -> "Stores":
        blobs = BlobStore(collections)
        folders = FolderStore(collections)
        return cls(collections, blobs, folders, MailboxStore(collections, folders, blobs), IncomingStore(collections))


@dataclass
class Core:
    """Stores, the group-commit writer (started), and the services built on them. The
    outbound side is built but not started: only the appliance runs the queue runner."""

    stores: Stores
    domains: LocalDomains
    authenticator: Authenticator
    writer: DeliveryWriter
    inbound: InboundService
    admin: MailboxAdmin
    sender: MessageSender
    outbound: Outbound

    @classmethod
    def over(cls, settings: Settings, db: Database) -> "Core":
        s = settings
        stores = Stores.over(Collections(db))
        domains = LocalDomains(s.allowed_domains, stores.mailboxes.domains)
        authenticator = Authenticator(stores.mailboxes.get)
        writer = DeliveryWriter(stores.collections, stores.folders)
        writer.start()
        inbound = InboundService(stores.mailboxes, domains, authenticator, writer, s.mailbox_quota)
        return cls(
            stores=stores,
            domains=domains,
            authenticator=authenticator,
            writer=writer,
            inbound=inbound,
            admin=MailboxAdmin(stores.mailboxes, domains, authenticator, s.mailbox_quota),
            sender=MessageSender(inbound, s.hostname, s.max_email_size, s.max_recipients),
            # The queue runner, MX delivery, source IPs, DKIM, webhooks (started by the appliance).
            outbound=build_outbound(s, stores.collections, stores.blobs, stores.mailboxes, writer),
        )
