"""Mailbox API (seed: Mailbox Management API) against the real database."""
import json
import smtplib
import urllib.request

import pytest

from tests.conftest import PASSWORD

KEY = {"x-api-key": "test-api-key-0123456789"}


@pytest.fixture
def http(appliance):
    app = appliance.http[0][1].application
    return app.test_client()


def create(http, username="user@example.com", password=PASSWORD, **extra):
    return http.post("/api/mailboxes", json={"username": username, "password": password, **extra}, headers=KEY)


def test_key_required_header_or_query(http):
    assert http.get("/api/mailboxes").status_code == 401
    assert http.get("/api/mailboxes", headers={"x-api-key": "wrong"}).status_code == 401
    assert http.get("/api/mailboxes", headers=KEY).status_code == 200
    assert http.get("/api/mailboxes?api_key=test-api-key-0123456789").status_code == 200


def test_create_list_conflict_and_normalisation(http):
    response = create(http, "Alice@Example.COM")
    assert response.status_code == 201
    assert response.json["username"] == "alice@example.com"
    assert create(http, "alice@example.com").status_code == 409
    listing = http.get("/api/mailboxes", headers=KEY).json
    assert listing["total"] == 1 and listing["mailboxes"][0]["username"] == "alice@example.com"
    assert "password_hash" not in json.dumps(listing) and PASSWORD not in json.dumps(listing)


@pytest.mark.parametrize(
    "body,fragment",
    [
        ({"username": "not-an-address", "password": PASSWORD}, "not a valid email address"),
        ({"username": "a@example.com", "password": "short"}, "at least 8"),
        ({"username": "a@example.com"}, "password"),
        ({"username": "a@elsewhere.example", "password": PASSWORD}, "ALLOWED_DOMAINS"),
        ({"username": "a@example.com", "password": PASSWORD, "quota": -1}, "quota"),
    ],
)
def test_bad_input_is_400_with_a_message(http, body, fragment):
    response = http.post("/api/mailboxes", json=body, headers=KEY)
    assert response.status_code == 400
    assert fragment in response.json["message"]


def test_non_json_body_is_400(http):
    response = http.post("/api/mailboxes", data="username=x", headers=KEY)
    assert response.status_code == 400


def test_change_password(appliance, http):
    create(http)
    url = "/api/mailboxes/user@example.com/change-password"
    assert http.post(url, json={"oldPassword": "wrong one!", "newPassword": "new password 1"}, headers=KEY).status_code == 403
    assert http.post(url, json={"oldPassword": PASSWORD, "newPassword": "short"}, headers=KEY).status_code == 400
    assert http.post("/api/mailboxes/ghost@example.com/change-password", json={"oldPassword": "x", "newPassword": "y" * 9}, headers=KEY).status_code == 404
    assert http.post(url, json={"oldPassword": PASSWORD, "newPassword": "new password 1"}, headers=KEY).status_code == 200
    assert appliance.authenticator.authenticate("user@example.com", "new password 1") == "user@example.com"
    assert appliance.authenticator.authenticate("user@example.com", PASSWORD) is None


def test_delete_cascades_and_404(appliance, http):
    create(http)
    with smtplib.SMTP("127.0.0.1", appliance.ports["smtp"]) as client:
        client.sendmail("a@remote.example", ["user@example.com"], b"Subject: x\r\n\r\nx\r\n")
    c = appliance.stores.collections
    assert c.messages.count_documents({}) == 1
    assert http.delete("/api/mailboxes/User@example.com", headers=KEY).status_code == 200
    assert c.messages.count_documents({}) == 0 and c.folders.count_documents({}) == 0
    assert c.raw.count_documents({}) == 0
    assert http.delete("/api/mailboxes/user@example.com", headers=KEY).status_code == 404
    with smtplib.SMTP("127.0.0.1", appliance.ports["smtp"]) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("a@remote.example", ["user@example.com"], b"x\r\n")


def test_swagger_documents_the_endpoints_over_http(appliance):
    port = appliance.ports["mailbox-api"]
    spec = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/swagger.json"))
    assert set(spec["paths"]) >= {"/mailboxes", "/mailboxes/{address}", "/mailboxes/{address}/change-password"}
    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/api/docs").read()
    assert b"swagger" in page.lower()
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/api/docs/").read() == page, "trailing slash redirects"
    health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/health"))
    assert health == {"status": "ok", "database": "reachable"}
