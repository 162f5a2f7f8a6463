"""swaks (Debian) against all three SMTP ports and LMTP: what operators type by hand."""
import subprocess

import pytest

from tests.conftest import PASSWORD, have
from tests.e2e.helpers import stored_messages

pytestmark = pytest.mark.skipif(not have("swaks"), reason="swaks is not installed (apt-get install swaks)")


def swaks(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["swaks", "--timeout", "20", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def ready(appliance):
    appliance.admin.create("user@example.com", PASSWORD)
    return appliance


def test_swaks_port25(ready):
    out = swaks("--server", f"127.0.0.1:{ready.ports['smtp']}", "--from", "a@remote.example", "--to", "user@example.com")
    assert out.returncode == 0, out.stdout
    assert "250 2.0.0 Ok: queued as" in out.stdout


def test_swaks_submission_starttls_auth(ready):
    out = swaks(
        "--server", f"127.0.0.1:{ready.ports['submission']}", "--tls",
        "--auth", "PLAIN", "--auth-user", "user@example.com", "--auth-password", PASSWORD,
        "--from", "user@example.com", "--to", "far@elsewhere.example",
    )
    assert out.returncode == 0, out.stdout
    assert "235 2.7.0" in out.stdout
    assert ready.stores.collections.outgoing.count_documents({"status": "queued"}) == 1


def test_swaks_implicit_tls_auth_login(ready):
    out = swaks(
        "--server", f"127.0.0.1:{ready.ports['smtps']}", "--tlsc",
        "--auth", "LOGIN", "--auth-user", "user@example.com", "--auth-password", PASSWORD,
        "--from", "user@example.com", "--to", "user@example.com",
    )
    assert out.returncode == 0, out.stdout
    assert len(stored_messages(ready, "user@example.com")) == 1


def test_swaks_wrong_password_refused(ready):
    out = swaks(
        "--server", f"127.0.0.1:{ready.ports['submission']}", "--tls",
        "--auth", "PLAIN", "--auth-user", "user@example.com", "--auth-password", "not the password",
        "--from", "user@example.com", "--to", "far@elsewhere.example",
    )
    assert out.returncode != 0
    assert "535 5.7.8" in out.stdout
    assert ready.stores.collections.outgoing.count_documents({}) == 0


def test_swaks_lmtp(ready):
    out = swaks("--server", f"127.0.0.1:{ready.ports['lmtp']}", "--protocol", "LMTP", "--from", "a@remote.example", "--to", "user@example.com")
    assert out.returncode == 0, out.stdout
    assert len(stored_messages(ready, "user@example.com")) == 1
