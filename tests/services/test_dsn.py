"""RFC 3464 reports parse as multipart/report with the per-recipient fields."""
import email
from datetime import datetime, timezone

from mailappliance.services.dsn import FailedRecipient, build_dsn


def test_report_structure():
    when = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    raw = build_dsn(
        reporting_host="mx.example.com",
        sender="user@example.com",
        failed=[
            FailedRecipient("a@remote.test", "5.1.1", "550 5.1.1 no such user", "mx.remote.test", when),
            FailedRecipient("b@remote.test", "5.4.7", "451 4.4.1 connection refused\r\nInjected: header", None, when, from_remote=False),
        ],
        original=b"Subject: my mail\r\nFrom: user@example.com\r\n\r\nsecret body\r\n",
        arrival=when,
        now=when,
        queue_id="q1",
    )
    message = email.message_from_bytes(raw)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert message["To"] == "<user@example.com>" and message["Auto-Submitted"] == "auto-replied"
    text, status, headers = message.get_payload()
    assert "a@remote.test" in text.get_payload()
    per_message, first, second = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; mx.example.com"
    assert per_message["Arrival-Date"] == "Wed, 01 May 2024 12:00:00 +0000"
    assert (first["Final-Recipient"], first["Action"], first["Status"]) == ("rfc822; a@remote.test", "failed", "5.1.1")
    assert first["Remote-MTA"] == "dns; mx.remote.test" and first["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert second["Diagnostic-Code"].startswith("X-mailappliance; 451 4.4.1 connection refused Injected")
    assert second["Remote-MTA"] is None
    assert headers.get_content_type() == "text/rfc822-headers"
    assert b"Subject: my mail" in raw and b"secret body" not in raw, "headers only, never the body"
