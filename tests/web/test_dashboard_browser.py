"""The dashboard in a real browser: headless Debian Chromium driven by Selenium.

The appliance gets real traffic first (mail delivered over SMTP to a local mailbox, one
outbound message delivered and one bounced with 550 by an SMTP peer on loopback, reached
as the smarthost so no DNS is needed), then the browser signs in, shows the numbers the API
reports, retries the bounced message, creates a mailbox, changes its password and deletes it. A screenshot is kept at
``$DASHBOARD_SCREENSHOT`` (or under the test's tmp dir); its path is printed.

The runner is paused after the two deliveries, so the retried message stays visibly queued.
Selenium talks to Debian's ``/usr/bin/chromedriver`` (never Selenium Manager: SE_OFFLINE);
the flags keep Chromium off the network, which is closed here.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import smtplib
import time
import urllib.error
import urllib.request
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.conftest import PASSWORD
from tests.e2e.helpers import wait_for
from tests.e2e.outbound_peers import PEER_ACCEPT, SENDER, SmtpPeer, shared_port

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="Debian's chromium and chromium-driver (/usr/bin/chromedriver) are not installed"
)

KEY = "test-api-key-0123456789"
QUEUE_STATUSES = ["queued", "sending", "deferred", "sent", "partial", "bounced", "due", "total"]
CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--window-size=1400,1000", "--lang=en-US",
]
WAIT = 15.0


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture
def peer():
    """Accepts most recipients, answers ``550 5.1.1`` for nouser@ (tests/e2e/outbound_peers.py)."""
    server = SmtpPeer([PEER_ACCEPT], shared_port([PEER_ACCEPT]))
    yield server
    server.stop()


@pytest.fixture
def browser(tmp_path, monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


# ---------------------------------------------------------------------------- helpers

class Api:
    """The appliance's REST API as the test reads it (the same port the page uses)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def call(self, path: str, method: str = "GET", body: dict | None = None, key: str = KEY) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers={"x-api-key": key})
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def get(self, path: str) -> dict:
        status, body = self.call(path)
        assert status == 200, (path, status, body)
        return body


def deliver_local(port: int, count: int) -> list[str]:
    """``count`` messages over SMTP to the local mailbox SENDER; the last one has an attachment."""
    subjects = []
    with smtplib.SMTP("127.0.0.1", port) as client:
        for n in range(1, count + 1):
            message = EmailMessage()
            message["From"] = f"Friend {n} <friend{n}@remote.example>"
            message["To"] = SENDER
            message["Subject"] = f"Dashboard inbound {n}"
            message.set_content(f"Inbound message number {n}.\n")
            if n == count:
                message.add_attachment(b"%PDF-1.4 tiny\n", maintype="application", subtype="pdf", filename="report.pdf")
            client.send_message(message)
            subjects.append(message["Subject"])
    return subjects


def submit_outbound(port: int, recipient: str, subject: str) -> None:
    message = EmailMessage()
    message["From"] = SENDER
    message["To"] = recipient
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.split()[0].lower()}.{time.monotonic_ns()}@example.com>"
    message.set_content(f"Outbound test body for {recipient}.\n")
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.send_message(message)


def outbound_final(app, subject: str) -> dict:
    def done():
        doc = app.stores.collections.outgoing.find_one({"subject": subject})
        return doc if doc and doc["status"] in ("sent", "bounced", "partial") else None

    return wait_for(done, timeout=20)


def text_of(driver, element_id: str) -> str:
    """The element's rendered text, read in one script call (the page redraws every 2 s)."""
    text = driver.execute_script("const e = document.getElementById(arguments[0]); return e ? e.innerText : null", element_id)
    return "" if text is None else text.strip()  # not drawn yet


def attributes(driver, selector: str, name: str) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.getAttribute(arguments[1]))", selector, name)


def until(driver, condition, what: str, timeout: float = WAIT):
    """Wait for ``condition``; an element redrawn under our feet is tried again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,))
    return wait.until(lambda d: condition(d), message=what)


def click(driver, selector: str) -> None:
    """Click what ``selector`` finds, again if a redraw replaced it in between."""
    def done(d) -> bool:
        d.find_element("css selector", selector).click()
        return True

    until(driver, done, f"click {selector}")


def full_page_png(driver) -> bytes:
    """The whole document, not only the window (Chrome DevTools ``Page.captureScreenshot``)."""
    driver.execute_script("window.scrollTo(0, 0)")
    width, height = driver.execute_script(  # the window's width: the capture lays out without a scroll bar
        "return [Math.max(document.documentElement.scrollWidth, window.innerWidth), document.documentElement.scrollHeight]")
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
    })
    return base64.b64decode(shot["data"])


def number(text: str) -> int:
    return int(text.replace(",", ""))


# ---------------------------------------------------------------------------- the test

def test_dashboard_in_chromium(appliance_factory, peer, browser, tmp_path):
    started = time.monotonic()
    app = appliance_factory(
        smtp_relay_host=PEER_ACCEPT, smtp_relay_port=peer.port, queue_poll_interval=0.05,
        outbound_connect_timeout=2.0, outbound_command_timeout=5.0, queue_retry_base=0.2, queue_max_attempts=3,
    )
    app.admin.create(SENDER, PASSWORD)
    api = Api(app.ports["api"])

    # Real traffic: three messages in, one delivered out, one bounced out (550 5.1.1).
    inbound_subjects = deliver_local(app.ports["smtp"], 3)
    bounced_subject = "Bounce <b>not bold</b> & co"
    submit_outbound(app.ports["smtp"], "friend@accept.test", "Delivered outbound")
    submit_outbound(app.ports["smtp"], "nouser@accept.test", bounced_subject)
    assert outbound_final(app, "Delivered outbound")["status"] == "sent"
    bounced_doc = outbound_final(app, bounced_subject)
    assert bounced_doc["status"] == "bounced"
    bounced_id = str(bounced_doc["_id"])
    app.outbound.stop(5.0)  # pause the runner: a retried message stays queued for the page to show
    wait_for(lambda: api.get("/api/incoming-emails?limit=1")["total"] >= 3)

    # The page and its assets load without a key, with the self-only policy.
    with urllib.request.urlopen(api.base + "/", timeout=10) as response:
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]

    driver = browser
    driver.get(api.base + "/")
    assert driver.title == "mailappliance dashboard"
    assert driver.find_element("id", "signin-panel").is_displayed()
    assert not driver.find_element("id", "dashboard").is_displayed()

    # A wrong key: the 401's message is shown and the dashboard stays closed.
    driver.find_element("id", "api-key").send_keys("not-the-key")
    driver.find_element("id", "sign-in").click()
    until(driver, lambda d: d.find_element("id", "signin-error").is_displayed(), "the sign-in error")
    error = text_of(driver, "signin-error")
    assert error == "Wrong API key (the appliance answered 401).", "said once, not 'wrong key: ... wrong API key'"
    assert not driver.find_element("id", "dashboard").is_displayed()
    assert driver.execute_script("return sessionStorage.length") == 0

    # The right key.
    driver.find_element("id", "api-key").clear()
    driver.find_element("id", "api-key").send_keys(KEY)
    driver.find_element("id", "sign-in").click()
    until(driver, lambda d: d.find_element("id", "dashboard").is_displayed(), "the dashboard after sign-in")
    assert not driver.find_element("id", "signin-panel").is_displayed()
    assert not driver.find_element("id", "signin-error").is_displayed()
    assert driver.execute_script("return sessionStorage.getItem('mailappliance.apiKey')") == KEY

    # Queue counts and the incoming count equal what the API reports (read afresh each try).
    def counts_match(d) -> bool:
        stats = api.get("/api/email-stats")
        shown = {status: text_of(d, f"queue-{status}") for status in QUEUE_STATUSES}
        expected = {status: f"{stats['queue'][status]:,}" for status in QUEUE_STATUSES}
        return shown == expected and text_of(d, "records-incoming") == f"{stats['records']['incoming']:,}"

    until(driver, counts_match, "queue and incoming counts equal to /api/email-stats")
    stats = api.get("/api/email-stats")
    assert (stats["queue"]["sent"], stats["queue"]["bounced"]) == (1, 1)
    incoming_total = api.get("/api/incoming-emails?limit=1")["total"]
    assert incoming_total >= 3 and number(text_of(driver, "records-incoming")) == stats["records"]["incoming"] == incoming_total

    # The chart's totals are the sums of the API's per-minute series.
    for series in ("received", "delivered", "bounced"):
        until(driver, lambda d, s=series: number(text_of(d, f"throughput-total-{s}"))
              == sum(m[s] for m in api.get("/api/email-stats")["per_minute"]), f"chart total {series}")
    assert len(driver.find_elements("css selector", "#throughput-chart svg polyline")) == 3

    # Connections per protocol and port, the latest deliveries, bounces and incoming mail.
    smtp_ports = {str(p["port"]) for p in api.get("/api/smtp/stats")["ports"]}
    assert str(app.ports["smtp"]) in smtp_ports
    until(driver, lambda d: set(attributes(d, "[data-testid=listener-row][data-protocol=smtp]", "data-port")) == smtp_ports,
          "one row per SMTP port")
    for protocol in ("imap", "lmtp"):
        expected = {str(p["port"]) for p in api.get(f"/api/{protocol}/stats")["ports"]}
        assert set(attributes(driver, f"[data-testid=listener-row][data-protocol={protocol}]", "data-port")) == expected, protocol
    smtps_tls = driver.execute_script("return document.querySelector(arguments[0]).cells[3].textContent",
                                      f"[data-testid=listener-row][data-port='{app.ports['smtps']}']")
    assert smtps_tls == "implicit"
    until(driver, lambda d: "friend@accept.test" in text_of(d, "latest-deliveries"), "the delivery in the feed")
    until(driver, lambda d: "nouser@accept.test" in text_of(d, "latest-bounces"), "the bounce in the feed")
    until(driver, lambda d: all(s in text_of(d, "latest-incoming") for s in inbound_subjects), "the incoming mail in the feed")

    # The outbound table, filtered to bounced; open the bounced message.
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("id", "emails-status")).select_by_value("bounced")
    row_selector = f"[data-testid=email-row][data-id='{bounced_id}']"
    until(driver, lambda d: attributes(d, "[data-testid=email-row]", "data-status") == ["bounced"], "only the bounced message listed")
    click(driver, f"{row_selector} [data-testid=email-view]")
    until(driver, lambda d: d.find_element("id", "message-view").is_displayed()
          and d.find_element("id", "message-view").get_attribute("data-id") == bounced_id, "the message view")
    until(driver, lambda d: text_of(d, "message-status") == "bounced", "status bounced in the message view")
    title = driver.find_element("id", "message-title")
    assert title.text == f"Message: {bounced_subject}", "data stays text"
    assert title.find_elements("css selector", "b") == []
    history = driver.find_element("id", "message-history").text
    assert "550 5.1.1" in history and PEER_ACCEPT in history, history
    assert "Subject" in driver.find_element("id", "message-headers").text
    assert "Outbound test body for nouser@accept.test." in text_of(driver, "message-text")
    attempts = api.get(f"/api/emails/{bounced_id}")["history"]
    assert len(driver.find_elements("css selector", "#message-history tbody tr")) == len(attempts) >= 1
    summary = driver.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll('#message-summary dd'), d => [d.dataset.field, d.textContent]))")
    assert summary["Next attempt"] == "\u2014", "a bounced message has no next attempt"
    assert summary["Attempts"] == "1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", summary["Created"]), "the date too, even today"

    # Retry: the page shows it queued, and so do the API and the database.
    driver.find_element("id", "message-retry").click()
    until(driver, lambda d: text_of(d, "message-status") == "queued", "status queued after Retry")
    assert "queued" in text_of(driver, "message-result")
    # The retry gave a fresh budget (attempts 0); the history still has the first attempt.
    until(driver, lambda d: d.execute_script("return document.querySelector('#message-summary [data-field=Attempts]').textContent")
          == "0 since the last retry (1 in total)", "the attempts after Retry")
    assert text_of(driver, "message-summary").count("Next attempt") == 1
    assert api.get(f"/api/emails/{bounced_id}")["status"] == "queued"
    assert app.stores.collections.outgoing.find_one({"_id": bounced_doc["_id"]})["status"] == "queued"
    until(driver, lambda d: text_of(d, "queue-queued") == f"{api.get('/api/email-stats')['queue']['queued']:,}" == "1",
          "the queued count after Retry")

    # Create a mailbox from the form; the API has it.
    driver.find_element("id", "new-username").send_keys("newbox@example.com")
    driver.find_element("id", "new-password").send_keys(PASSWORD)
    driver.find_element("id", "mailbox-create-submit").click()
    until(driver, lambda d: d.find_elements("css selector", "[data-testid=mailbox-row][data-username='newbox@example.com']"),
          "the new mailbox listed")
    created_cell = driver.execute_script(
        "return document.querySelector(\"[data-testid=mailbox-row][data-username='newbox@example.com']\").cells[3].textContent")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", created_cell), created_cell
    assert "newbox@example.com created" in text_of(driver, "mailbox-result")
    status, created = api.call("/api/mailboxes/newbox@example.com")
    assert status == 200 and created["username"] == "newbox@example.com"
    assert app.admin.get("newbox@example.com")["username"] == "newbox@example.com"

    # Change its password from the form (the API then takes the new one as the old), delete it.
    new_password = "another battery staple"
    driver.find_element("id", "passwd-username").send_keys("newbox@example.com")
    driver.find_element("id", "passwd-old").send_keys(PASSWORD)
    driver.find_element("id", "passwd-new").send_keys(new_password)
    driver.find_element("id", "mailbox-password-submit").click()
    until(driver, lambda d: "Password of newbox@example.com changed" in text_of(d, "mailbox-result"), "password changed")
    body = {"oldPassword": new_password, "newPassword": new_password}
    assert api.call("/api/mailboxes/newbox@example.com/change-password", "POST", body)[0] == 200
    click(driver, "[data-testid=mailbox-row][data-username='newbox@example.com'] [data-testid=mailbox-delete]")
    driver.switch_to.alert.accept()
    until(driver, lambda d: not d.find_elements("css selector", "[data-testid=mailbox-row][data-username='newbox@example.com']"),
          "the mailbox gone from the list")
    assert api.call("/api/mailboxes/newbox@example.com")[0] == 404
    driver.find_element("id", "new-username").send_keys("kept@example.com")
    driver.find_element("id", "new-password").send_keys(PASSWORD)
    driver.find_element("id", "mailbox-create-submit").click()
    until(driver, lambda d: d.find_elements("css selector", "[data-testid=mailbox-row][data-username='kept@example.com']"),
          "a second mailbox listed")

    # Every status again: the table lists what the API lists.
    Select(driver.find_element("id", "emails-status")).select_by_value("")
    listed = {e["id"]: e["status"] for e in api.get("/api/emails?limit=25")["emails"]}
    assert listed == {bounced_id: "queued", str(outbound_final(app, "Delivered outbound")["_id"]): "sent"}
    until(driver, lambda d: dict(zip(attributes(d, "[data-testid=email-row]", "data-id"),
                                     attributes(d, "[data-testid=email-row]", "data-status"))) == listed, "all messages listed")

    # The screenshot: the whole page, message view open.
    screenshot = Path(os.environ.get("DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.write_bytes(full_page_png(driver))
    assert screenshot.stat().st_size > 10_000
    print(f"\ndashboard screenshot: {screenshot}")

    # A phone (420 px) and a laptop (1280 px): the page never scrolls sideways (wide tables
    # scroll in their own box), and the chart, drawn at its shown width, keeps readable labels.
    for width in (420, 1280):
        driver.set_window_size(width, 1000)
        until(driver, lambda d, w=width: d.execute_script("return window.innerWidth") == w, f"a {width} px window")
        until(driver, lambda d: abs(d.execute_script(
            "const c = document.getElementById('throughput-chart');"
            "return c.clientWidth - c.querySelector('svg').viewBox.baseVal.width")) <= 8
            or d.execute_script("return document.getElementById('throughput-chart').clientWidth") < 280,
            f"the chart redrawn for {width} px")
        page_width = driver.execute_script("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        wide = driver.execute_script(
            "return Array.from(document.querySelectorAll('body *'), e => [e, e.getBoundingClientRect()])"
            ".filter(([e, r]) => r.right > document.documentElement.clientWidth + 1 && r.width > 0"
            " && !e.closest('.table-wrap, svg') && e.offsetParent !== null)"
            ".slice(0, 8).map(([e, r]) => `${e.tagName}#${e.id}.${e.className} ${Math.round(r.right)}`)")
        assert page_width[0] <= page_width[1], f"the page scrolls sideways at {width} px: {page_width}; too wide: {wide}"
        tick_px = driver.execute_script(
            "return Math.min(...Array.from(document.querySelectorAll('#throughput-chart .tick'), t => t.getBoundingClientRect().height))")
        assert tick_px >= 10, f"chart labels {tick_px:.1f} px high at {width} px"
        narrow = screenshot.with_name(f"{screenshot.stem}-{width}.png")
        narrow.write_bytes(full_page_png(driver))
        print(f"dashboard screenshot at {width} px: {narrow}")

    # Sign out: back to the key form, nothing left in sessionStorage.
    driver.find_element("id", "sign-out").click()
    until(driver, lambda d: d.find_element("id", "signin-panel").is_displayed(), "the sign-in form after sign-out")
    assert driver.execute_script("return sessionStorage.length") == 0

    # No script error and no Content-Security-Policy violation in the console.
    problems = [entry["message"] for entry in driver.get_log("browser")
                if "Content Security Policy" in entry["message"] or "Uncaught" in entry["message"]]
    assert problems == []
    print(f"browser test took {time.monotonic() - started:.1f} s")
