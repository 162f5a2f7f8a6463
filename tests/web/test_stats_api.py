"""``/api/email-stats``, ``/api/{smtp,lmtp,imap}/stats`` and the Mailbox API on API_PORT."""
import imaplib
import smtplib
from datetime import datetime, timedelta, timezone

import pytest
from bson import ObjectId

from tests.conftest import PASSWORD
from tests.e2e.helpers import wait_for
from tests.web.outbound_helpers import call, queue  # noqa: F401 (queue is a fixture)


def test_email_stats_counts_the_queue_records_and_the_last_hour(queue):
    status, stats, _ = call(queue, "/api/email-stats")
    assert status == 200
    assert stats["queue"] == {"queued": 1, "sending": 0, "deferred": 1, "sent": 1, "partial": 1, "bounced": 1, "due": 2, "total": 5}
    assert stats["records"] == {"incoming": 5, "successful": 2, "bounced": 2}
    assert stats["last_24h"] == {"received": 5, "delivered": 2, "bounced": 2}
    assert stats["bounce_types"] == {"hard": 1, "soft": 1}
    minutes = stats["per_minute"]
    assert len(minutes) == 60
    starts = [datetime.fromisoformat(m["minute"]) for m in minutes]
    assert all(b - a == timedelta(minutes=1) for a, b in zip(starts, starts[1:])), "every minute, oldest first"
    generated = datetime.fromisoformat(stats["generated_at"])
    assert starts[-1] == generated.replace(second=0, microsecond=0)
    assert sum(m["received"] for m in minutes) == 5
    assert sum(m["delivered"] for m in minutes) == 2 and sum(m["bounced"] for m in minutes) == 2


def test_email_stats_leave_out_older_than_a_day_and_count_them_in_totals(queue):
    c = queue.stores.collections
    old = c.incoming.find_one()
    day_ago = datetime.now(timezone.utc) - timedelta(hours=25)
    c.incoming.insert_one({**old, "_id": ObjectId.from_datetime(day_ago), "received_at": day_ago})
    stats = call(queue, "/api/email-stats")[1]
    assert stats["records"]["incoming"] == 6 and stats["last_24h"]["received"] == 5
    assert sum(m["received"] for m in stats["per_minute"]) == 5


def test_empty_appliance_stats(appliance):
    status, stats, _ = call(appliance, "/api/email-stats")
    assert status == 200 and stats["queue"]["total"] == 0 and stats["bounce_types"] == {}
    assert len(stats["per_minute"]) == 60 and all(m["received"] == m["delivered"] == m["bounced"] == 0 for m in stats["per_minute"])


@pytest.fixture
def busy(appliance_factory):
    """Every listener on, one SMTP message accepted, one refused, an IMAP login that fails."""
    app = appliance_factory(queue_enabled=False, allow_plaintext_auth=True)
    app.admin.create("user@example.com", PASSWORD)
    with smtplib.SMTP("127.0.0.1", app.ports["smtp"]) as client:
        client.sendmail("a@remote.example", ["user@example.com"], b"Subject: hi\r\n\r\nhello\r\n")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("a@remote.example", ["nobody@example.com"], b"Subject: hi\r\n\r\nhello\r\n")
    with smtplib.LMTP("127.0.0.1", app.ports["lmtp"]) as client:
        client.sendmail("a@remote.example", ["user@example.com"], b"Subject: lmtp\r\n\r\nhello\r\n")
    imap = imaplib.IMAP4("127.0.0.1", app.ports["imap"])
    with pytest.raises(imaplib.IMAP4.error):
        imap.login("user@example.com", "wrong password")
    imap.logout()
    return app


def test_listener_stats_per_port_and_totals(busy):
    status, smtp, _ = call(busy, "/api/smtp/stats")
    assert status == 200 and smtp["protocol"] == "smtp"
    ports = {p["name"]: p for p in smtp["ports"]}
    assert set(ports) == {"smtp", "submission", "smtps"}
    assert ports["smtp"]["port"] == busy.ports["smtp"] and ports["smtps"]["tls"] == "implicit"
    assert ports["smtp"]["messages_accepted"] == 1 and ports["smtp"]["total_connections"] == 1
    assert smtp["totals"]["messages_accepted"] == 1 and smtp["totals"]["total_connections"] == 1
    assert smtp["totals"]["bytes_received"] == sum(p["bytes_received"] for p in smtp["ports"]) > 0
    lmtp = call(busy, "/api/lmtp/stats")[1]
    assert {p["name"] for p in lmtp["ports"]} == {"lmtp", "lmtps"} and lmtp["totals"]["messages_accepted"] == 1
    # A connection's failed logins are added when it ends, just after the client leaves.
    imap = wait_for(lambda: (answer := call(busy, "/api/imap/stats")[1])["totals"]["auth_failures"] and answer)
    assert {p["name"] for p in imap["ports"]} == {"imap", "imaps"} and imap["totals"]["auth_failures"] == 1
    assert all(datetime.fromisoformat(p["started_at"]).tzinfo is not None for p in imap["ports"])
    for protocol in ("smtp", "lmtp", "imap"):
        assert call(busy, f"/api/{protocol}/stats", key=None)[0] == 401
    assert call(busy, "/api/pop3/stats")[0] == 404


def test_mailbox_api_also_on_the_api_port(appliance):
    status, created, _ = call(appliance, "/api/mailboxes", "POST", body={"username": "New@Example.com", "password": PASSWORD})
    assert status == 201 and created["username"] == "new@example.com"
    status, listed, _ = call(appliance, "/api/mailboxes")
    assert status == 200 and [m["username"] for m in listed["mailboxes"]] == ["new@example.com"]
    change = {"oldPassword": PASSWORD, "newPassword": "another good password"}
    assert call(appliance, "/api/mailboxes/new@example.com/change-password", "POST", body=change)[0] == 200
    assert call(appliance, "/api/mailboxes/new@example.com", "DELETE")[0] == 200
    assert call(appliance, "/api/mailboxes/new@example.com")[0] == 404
    assert call(appliance, "/api/mailboxes", key=None)[0] == 401
    assert call(appliance, "/api/email-stats", key=None)[0] == 401
    # The same namespace on the Mailbox API port still works.
    assert call(appliance, "/api/mailboxes", port="mailbox-api")[0] == 200


@pytest.mark.parametrize(
    "body", [[1, 2], {"from": "a@example.com", "to": True}, {"from": "a@example.com", "to": ["b@x.test"], "domain": {}}]
)
def test_ip_selection_probe_rejects_malformed_bodies(appliance, body):
    """Found by schemathesis: a list body or ``"to": true`` was a 500."""
    status, answer, _ = call(appliance, "/api/ip-selection/test", "POST", body=body)
    assert status == 400 and answer["message"]
