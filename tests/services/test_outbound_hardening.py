"""DKIM only for the sender's own domain, secrets kept out of reprs/stats/logs, the
IP-selection circuit breaker, and the outbound services' layering."""
import logging
import subprocess
import time
from pathlib import Path

from mailappliance.services.dkim_signing import DkimSigner
from mailappliance.services.ip_selection import FAILURE_HOLD, IpSelectionService, redact_url
from mailappliance.services.outbound import SmtpOptions
from mailappliance.services.webhooks import WebhookNotifier
from tests.conftest import free_port


def test_dkim_signs_only_when_the_from_domain_is_the_envelope_domain(tmp_path):
    for domain in ("example.com", "test.com"):
        subprocess.run(["openssl", "genrsa", "-out", tmp_path / f"{domain}.pem", "1024"], check=True, capture_output=True)
    signer = DkimSigner(tmp_path, "sel")
    own = b"From: <user@example.com>\r\nSubject: x\r\n\r\nhi\r\n"
    other = b"From: <ceo@test.com>\r\nSubject: x\r\n\r\nhi\r\n"
    assert signer.sign(own, "user@example.com").startswith(b"DKIM-Signature:") and b"d=example.com" in signer.sign(own, "user@example.com")
    assert signer.sign(other, "user@example.com") == other, "no d=test.com signature for a user of example.com"


def test_secrets_are_not_in_reprs_stats_or_webhook_failure_records(caplog):
    assert "s3cret" not in repr(SmtpOptions(helo="h", username="u", password="s3cret"))
    assert redact_url("https://user:pw@api.example:8443/pick?token=abc#x") == "https://api.example:8443/pick"
    service = IpSelectionService(True, "http://user:pw@127.0.0.1:1/ip?key=k", timeout=0.2, retries=0)
    assert service.stats()["apiUrl"] == "http://127.0.0.1:1/ip"
    records = []
    port = free_port()
    hook = WebhookNotifier(True, f"http://u:p@127.0.0.1:{port}/ok?sig=zzz", None, timeout=0.5, retries=0, record_failure=records.append)
    with caplog.at_level(logging.WARNING, logger="mailappliance.webhooks"):
        hook._send({"event": "delivered", "emailId": "1"}, 0)
    assert records[0]["url"] == f"http://127.0.0.1:{port}/ok"
    assert "zzz" not in caplog.text and "u:p@" not in caplog.text


def test_a_failing_ip_selection_api_is_not_asked_again_for_a_while():
    service = IpSelectionService(True, f"http://127.0.0.1:{free_port()}/ip", timeout=0.5, retries=1)
    first = service.select("1", "s@example.com", ["r@a.test"], "a.test")
    calls = service.api_calls
    started = time.monotonic()
    second = service.select("2", "s@example.com", ["r@b.test"], "b.test")
    assert first.ip is None and second.ip is None and second.source == "default"
    assert service.api_calls == calls == 2, f"the API is held as failing for {FAILURE_HOLD} s"
    assert time.monotonic() - started < 0.1 and service.stats()["skippedWhileFailing"] == 1
    service.clear_cache()
    service.select("3", "s@example.com", ["r@c.test"], "c.test")
    assert service.api_calls == 4, "clearing the cache asks again"


def test_outbound_services_do_not_import_pymongo():
    services = Path(__file__).resolve().parents[2] / "mailappliance" / "services"
    names = ["mx", "outbound", "bounces", "queue_runner", "outcomes", "bounce_reports", "ip_selection", "webhooks", "dkim_signing", "dsn", "outbound_setup"]
    for name in names:
        assert "pymongo" not in (services / f"{name}.py").read_text(), name
        assert len((services / f"{name}.py").read_text().splitlines()) < 500, name
