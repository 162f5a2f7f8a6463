"""Test fixtures: the real embedded database, and the appliance on free loopback ports.

The suite runs on the gevent hub like the appliance (patched before anything else
is imported). One SecantusDB child serves the whole run (or ``MONGODB_URL`` when
set); each test gets its own database on it, so tests never see each other's data.
"""
from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import pymongo  # noqa: E402
import pytest  # noqa: E402

import mailappliance.services.auth as auth  # noqa: E402
from mailappliance.app import Appliance, setup_logging  # noqa: E402
from mailappliance.settings import Settings  # noqa: E402
from mailappliance.storage.embedded import EmbeddedDatabase  # noqa: E402
from mailappliance.storage.mongo import Collections, connect, ensure_indexes  # noqa: E402

# Cheap hashes keep account set-up fast; the production cost is BCRYPT_ROUNDS = 12.
auth.BCRYPT_ROUNDS = 4

PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory):
    """URL (without database) of the database server the tests use."""
    url = os.environ.get("MONGODB_URL", "")
    if url and url != "embedded":
        yield url.split("?")[0].rsplit("/", 1)[0] if url.count("/") > 2 else url
        return
    server = EmbeddedDatabase(tmp_path_factory.mktemp("embedded-db"), cache_size="256M")
    server.start()
    try:
        yield f"mongodb://127.0.0.1:{server.port}"
    finally:
        server.stop()


def _db_url(server: str, name: str) -> str:
    options = "directConnection=true&journal=true&retryWrites=false" if "127.0.0.1" in server else "journal=true"
    return f"{server}/{name}?{options}"


@pytest.fixture
def db_url(mongo_server):
    name = "t_" + uuid.uuid4().hex[:12]
    url = _db_url(mongo_server, name)
    yield url
    client = pymongo.MongoClient(url)
    client.drop_database(name)
    client.close()


@pytest.fixture
def collections(db_url):
    client = connect(db_url)
    db = client.get_default_database()
    ensure_indexes(db)
    yield Collections(db)
    client.close()


def make_settings(tmp_path: Path, db_url: str, **overrides) -> Settings:
    values = dict(
        host="127.0.0.1",
        hostname="mx.test.example",
        smtp_port=-1,
        submission_port=-1,
        smtps_port=-1,
        lmtp_port=-1,
        lmtp_ssl_port=-1,
        lmtp_ssl_enabled=True,
        imap_port=-1,
        imap_ssl_port=-1,
        api_port=-1,
        mailbox_api_port=-1,
        mailbox_api_key="test-api-key-0123456789",
        allowed_domains=["example.com", "test.com"],
        mongodb_url=db_url,
        data_dir=tmp_path / "data",
        shutdown_timeout=5.0,
        log_level="warning",
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def appliance_factory(tmp_path, db_url):
    started = []

    def start(**overrides) -> Appliance:
        settings = make_settings(tmp_path, db_url, **overrides)
        setup_logging(settings)
        app = Appliance(settings)
        app.start()
        app.authenticator.failure_delay = 0.05
        started.append(app)
        return app

    yield start
    for app in started:
        if not app.stopped.is_set():
            app.stop()


@pytest.fixture
def appliance(appliance_factory):
    return appliance_factory()


@pytest.fixture
def mailbox(appliance):
    """``user@example.com`` with PASSWORD."""
    appliance.admin.create("user@example.com", PASSWORD)
    return "user@example.com"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def have(command: str) -> bool:
    return shutil.which(command) is not None
