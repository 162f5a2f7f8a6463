"""The dashboard's files as served at ``/`` on API_PORT (the browser test drives the page)."""
import re
from pathlib import Path

import pytest

from mailappliance.web.dashboard import STATIC_DIR

KEY = {"x-api-key": "test-api-key-0123456789"}


@pytest.fixture
def http(appliance):
    return dict(appliance.http)["api"].application.test_client()


def test_page_and_assets_need_no_key_and_carry_a_self_only_policy(http):
    page = http.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy and "http" not in policy
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["X-Frame-Options"] == "DENY"
    html = page.get_data(as_text=True)
    assert 'src="/dashboard/app.js"' in html and 'href="/dashboard/style.css"' in html
    for asset, mimetype in (("/dashboard/app.js", "text/javascript"), ("/dashboard/style.css", "text/css")):
        response = http.get(asset)
        assert response.status_code == 200, asset
        assert response.mimetype == mimetype
        assert response.headers["Content-Security-Policy"] == policy
        response.close()
    page.close()


def test_the_api_still_wants_the_key_and_unknown_paths_stay_json_404(http):
    assert http.get("/api/incoming-emails").status_code == 401
    assert http.get("/api/incoming-emails", headers=KEY).status_code == 200
    missing = http.get("/dashboard/nothing-here.js")
    assert missing.status_code == 404
    assert http.get("/dashboard/../__init__.py").status_code == 404


def test_nothing_is_fetched_from_elsewhere_and_data_never_becomes_markup():
    files = {path.name: path.read_text() for path in Path(STATIC_DIR).iterdir()}
    assert sorted(files) == ["app.js", "favicon.svg", "index.html", "style.css"]
    for name, text in files.items():
        outside = [url for url in re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"')]*", text) if "www.w3.org/2000/svg" not in url]
        assert outside == [], f"{name} refers to {outside}"
        assert "@import" not in text
    script = files["app.js"]
    for sink in (r"\.(inner|outer)HTML\b", r"insertAdjacentHTML\(", r"document\.write", r"\beval\(", r"new Function\("):
        assert not re.search(sink, script), sink
    assert "<script>" not in files["index.html"] and " style=" not in files["index.html"], "inline code breaks the CSP"
