"""The served Swagger documents against the apps: every ``/api`` operation refuses a
request without the key, and says so (with 503) in the document; no route escapes it."""
import json
import re
import urllib.error
import urllib.request

import pytest

KEY = "test-api-key-0123456789"
METHODS = ("get", "put", "post", "delete", "patch")


def fetch(url, method="GET", key=None, body=None):
    headers = {"x-api-key": key} if key else {}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers


@pytest.mark.parametrize("port_name", ["api", "mailbox-api"])
def test_every_operation_needs_the_key_and_declares_it(appliance, port_name):
    base = f"http://127.0.0.1:{appliance.ports[port_name]}"
    status, body, _ = fetch(base + "/api/swagger.json")
    assert status == 200
    document = json.loads(body)
    operations = 0
    for path, item in document["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "0123456789abcdef01234567", path)
        for method, operation in item.items():
            if method not in METHODS:
                continue
            operations += 1
            assert {"401", "503"} <= set(operation["responses"]), (method, path)
            status, answer, headers = fetch(base + document["basePath"] + concrete, method.upper(), body={} if method in ("post", "put") else None)
            assert status == 401, (method, path, status)
            assert "API key" in json.loads(answer)["message"]
            assert headers["X-Content-Type-Options"] == "nosniff"
            # A wrong key is refused the same way; the right one is not.
            assert fetch(base + document["basePath"] + concrete, method.upper(), key="wrong-key")[0] == 401
    assert operations >= (20 if port_name == "api" else 5)


def test_percent_encoded_key_name_is_redacted_in_the_access_log(appliance):
    """Werkzeug decodes ``api%5Fkey``: it authenticates, so it must not reach the log."""
    from mailappliance.redaction import redact_api_key

    status, _, _ = fetch(f"http://127.0.0.1:{appliance.ports['api']}/api/queue/stats?api%5Fkey={KEY}")
    assert status == 200
    for line in (f"GET /api/queue/stats?api%5Fkey={KEY} HTTP/1.1", f"GET /x?a=1&API_KEY={KEY}&b=2", f"/x?api_key={KEY}"):
        assert KEY not in redact_api_key(line)
