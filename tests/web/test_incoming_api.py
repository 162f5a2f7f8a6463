"""``/api/incoming-emails`` and ``/health`` on API_PORT, over a real HTTP socket."""
import json
import smtplib
import urllib.error
import urllib.request

import pytest

from tests.conftest import PASSWORD

KEY = "test-api-key-0123456789"


def get(appliance, path, method="GET"):
    request = urllib.request.Request(f"http://127.0.0.1:{appliance.ports['api']}{path}", method=method, headers={"x-api-key": KEY})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


@pytest.fixture
def received(appliance):
    appliance.admin.create("user@example.com", PASSWORD)
    with smtplib.SMTP("127.0.0.1", appliance.ports["smtp"]) as client:
        for i in range(7):
            client.sendmail("a@remote.example", ["user@example.com"], f"Subject: n{i}\r\n\r\nx\r\n".encode())
    return appliance


def test_pagination_newest_first(received):
    status, page1 = get(received, "/api/incoming-emails?limit=3")
    assert status == 200
    assert page1["total"] == 7 and page1["pages"] == 3
    assert [e["subject"] for e in page1["emails"]] == ["n6", "n5", "n4"]
    _, page3 = get(received, "/api/incoming-emails?limit=3&page=3")
    assert [e["subject"] for e in page3["emails"]] == ["n0"]
    _, lmtp_only = get(received, "/api/incoming-emails?source=lmtp")
    assert lmtp_only["total"] == 0


def test_get_and_delete_one(received):
    _, page = get(received, "/api/incoming-emails?limit=1")
    email_id = page["emails"][0]["id"]
    status, one = get(received, f"/api/incoming-emails/{email_id}")
    assert status == 200 and one["subject"] == "n6" and one["recipients"] == ["user@example.com"]
    assert get(received, f"/api/incoming-emails/{email_id}", "DELETE")[0] == 200
    assert get(received, f"/api/incoming-emails/{email_id}")[0] == 404
    assert get(received, f"/api/incoming-emails/{email_id}", "DELETE")[0] == 404
    assert get(received, "/api/incoming-emails/not-an-id")[0] == 404
    assert received.stores.collections.messages.count_documents({}) == 7, "the mailbox copy stays"


def test_key_required_and_health(received):
    port = received.ports["api"]
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/incoming-emails")
    assert denied.value.code == 401
    assert json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/health"))["status"] == "ok"


def test_bad_paging_values_get_a_plain_message(received):
    status, body = get(received, "/api/incoming-emails?limit=abc")
    assert status == 400
    assert "must be a whole number" in body["errors"]["limit"] and "invalid literal" not in body["errors"]["limit"]
    assert get(received, "/api/incoming-emails?page=0")[0] == 400


def test_role_tells_inbound_from_submission(received):
    _, page = get(received, "/api/incoming-emails?role=mx&limit=1")
    assert page["total"] == 7 and page["emails"][0]["role"] == "mx"
    assert get(received, "/api/incoming-emails?role=submission")[1]["total"] == 0
