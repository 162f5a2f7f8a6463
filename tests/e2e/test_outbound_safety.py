"""Outbound delivery when things go wrong: mail loops, a connection lost after the final
".", per-stage timeouts, lost leases, a failing sibling domain, retries up to the age limit,
and what bounce reports say about local failures. Real sockets, real embedded database."""
import email
import smtplib

import gevent
import pytest
from bson import ObjectId
from gevent.server import StreamServer

from tests.conftest import free_port, have
from tests.e2e.helpers import stored_messages, stored_raw, wait_for
from tests.e2e.outbound_peers import PEER_ACCEPT, PEER_OTHER, SENDER, SmtpPeer, dns_fixture, outbound_appliance, shared_port

pytestmark = pytest.mark.skipif(not have("dnsmasq"), reason="dnsmasq (dnsmasq-base) is not installed")

FINAL = ("sent", "bounced", "partial")
TWO_MX = (
    "mx-host=two.test,mx1.two.test,10\nmx-host=two.test,mx2.two.test,20\n"
    f"host-record=mx1.two.test,{PEER_ACCEPT}\nhost-record=mx2.two.test,{PEER_OTHER}\n"
)


class ScriptedPeer:
    """An SMTP peer per address: optional greeting delay, optional SMTPUTF8, a delay before
    the reply to the final "." (the message is recorded when the "." arrives)."""

    def __init__(self, addresses, port, end_delay=None, utf8=None, greeting_delay=0.0):
        self.received = []  # (local address, recipients)
        self.end_delay = end_delay or {}
        self.utf8 = utf8 or {}
        self.greeting_delay = greeting_delay
        self.servers = [StreamServer((a, port), self._handle) for a in addresses]
        for server in self.servers:
            server.start()

    def stop(self):
        for server in self.servers:
            server.stop(timeout=1)

    def _handle(self, sock, address):
        local = sock.getsockname()[0]
        stream = sock.makefile("rb")

        def send(text):
            sock.sendall(text.encode() + b"\r\n")

        gevent.sleep(self.greeting_delay)
        send("220 peer ESMTP")
        recipients = []
        try:
            while True:
                line = stream.readline()
                if not line:
                    return
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    send("250-peer")
                    if self.utf8.get(local, True):
                        send("250-SMTPUTF8")
                    send("250 8BITMIME")
                elif verb == b"MAIL":
                    recipients = []
                    send("250 2.1.0 ok")
                elif verb == b"RCPT":
                    rcpt = line.decode().split("<", 1)[1].split(">", 1)[0]
                    if rcpt.startswith("nouser"):
                        send("550 5.1.1 no such user")
                    elif rcpt.startswith("forward"):
                        recipients.append(rcpt)
                        send("252 2.1.5 cannot verify, will attempt delivery")  # any 2xx accepts
                    else:
                        recipients.append(rcpt)
                        send("250 2.1.5 ok")
                elif verb == b"DATA":
                    send("354 go ahead")
                    while stream.readline() not in (b".\r\n", b""):
                        pass
                    self.received.append((local, list(recipients)))
                    gevent.sleep(self.end_delay.get(local, 0))
                    send("250 2.0.0 queued")
                elif verb == b"QUIT":
                    send("221 2.0.0 bye")
                    return
                else:
                    send("250 2.0.0 ok")
        except OSError:
            return
        finally:
            sock.close()


dns = dns_fixture(scope="module")
dns_two_mx = dns_fixture(TWO_MX, scope="module")


def start(appliance_factory, dns, port, **overrides):
    values: dict = dict(queue_retry_base=60, outbound_greeting_timeout=5.0)
    values.update(overrides)
    return outbound_appliance(appliance_factory, dns.servers, port, **values)


def send(app, recipients, subject, sender=SENDER, port=None, options=()):
    message = f"From: <{sender}>\r\nSubject: {subject}\r\n\r\nhi\r\n".encode()
    with smtplib.SMTP("127.0.0.1", port or app.ports["smtp"]) as client:
        client.sendmail(sender, recipients, message, mail_options=list(options))
    return wait_for(lambda: app.stores.collections.outgoing.find_one({"subject": subject}), timeout=10)


def settled(app, doc, predicate, timeout=20):
    return wait_for(lambda: (d := app.stores.collections.outgoing.find_one({"_id": doc["_id"]})) and predicate(d) and d, timeout=timeout)


# ---------------------------------------------------------------------------- mail loops
def test_more_than_50_received_headers_is_refused_as_a_loop(appliance_factory):
    app = appliance_factory(smtp_port=free_port(), queue_enabled=False)
    app.admin.create(SENDER, "correct horse battery")
    hops = lambda n: "".join(f"Received: from hop{i}.example by hop{i + 1}.example; Mon, 1 Jan 2024 00:00:00 +0000\r\n" for i in range(n))  # noqa: E731
    with smtplib.SMTP("127.0.0.1", app.ports["smtp"]) as client:
        client.sendmail("a@remote.example", [SENDER], f"{hops(50)}Subject: fifty\r\n\r\nok\r\n".encode())
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@remote.example", [SENDER], f"{hops(51)}Subject: looping\r\n\r\nno\r\n".encode())
    assert (refused.value.smtp_code, refused.value.smtp_error) == (554, b"5.4.6 Too many hops")
    assert [m["subject"] for m in stored_messages(app, SENDER)] == ["fifty"]


def test_an_address_literal_pointing_back_here_bounces_instead_of_looping(appliance_factory, dns):
    port = free_port()
    app = start(appliance_factory, dns, port, smtp_port=port)
    doc = send(app, ["x@[127.0.0.1]"], "loop")
    doc = settled(app, doc, lambda d: d["status"] in FINAL)
    [rcpt] = doc["recipients"]
    assert (rcpt["status"], rcpt["code"], rcpt["enhanced_code"]) == ("bounced", 554, "5.4.6")
    assert rcpt["response"] == "mail for [127.0.0.1] loops back to myself"
    gevent.sleep(0.5)
    assert app.stores.collections.outgoing.count_documents({}) == 1, "no copy was queued again"
    [report] = wait_for(lambda: stored_messages(app, SENDER) or None)
    status = email.message_from_bytes(stored_raw(app, report)).get_payload()[1].get_payload()[1]
    assert status["Status"] == "5.4.6" and not str(status["Diagnostic-Code"]).startswith("smtp;")


# ---------------------------------------------------------------------------- after the final "."
def test_a_timeout_after_the_final_dot_defers_and_never_tries_the_next_mx(appliance_factory, dns_two_mx):
    port = shared_port([PEER_ACCEPT, PEER_OTHER])
    peer = ScriptedPeer([PEER_ACCEPT, PEER_OTHER], port, end_delay={PEER_ACCEPT: 4.0})
    try:
        app = start(appliance_factory, dns_two_mx, port, outbound_data_end_timeout=1.0)
        doc = send(app, ["a@two.test", "nouser@two.test"], "dup")
        doc = settled(app, doc, lambda d: d["attempts"] >= 1)
        gevent.sleep(1)
        assert peer.received == [(PEER_ACCEPT, ["a@two.test"])], "the backup MX never got a second copy"
        rc = {r["address"]: r for r in doc["recipients"]}
        assert (rc["a@two.test"]["status"], rc["a@two.test"]["enhanced_code"]) == ("deferred", "4.4.2")
        assert "after end of data; message may be sent more than once" in rc["a@two.test"]["response"]
        assert (rc["nouser@two.test"]["status"], rc["nouser@two.test"]["enhanced_code"]) == ("bounced", "5.1.1"), "RCPT 5xx kept"
    finally:
        peer.stop()


def test_any_2xx_rcpt_reply_accepts_the_recipient(appliance_factory, dns_two_mx):
    port = shared_port([PEER_ACCEPT, PEER_OTHER])
    peer = ScriptedPeer([PEER_ACCEPT, PEER_OTHER], port)
    try:
        app = start(appliance_factory, dns_two_mx, port)
        doc = settled(app, send(app, ["forward@two.test"], "252"), lambda d: d["status"] in FINAL)
        assert doc["status"] == "sent" and peer.received == [(PEER_ACCEPT, ["forward@two.test"])]
    finally:
        peer.stop()


def test_smtputf8_refused_by_one_mx_tries_the_next(appliance_factory, dns_two_mx):
    port = shared_port([PEER_ACCEPT, PEER_OTHER])
    peer = ScriptedPeer([PEER_ACCEPT, PEER_OTHER], port, utf8={PEER_ACCEPT: False})
    try:
        app = start(appliance_factory, dns_two_mx, port)
        doc = send(app, ["jörg@two.test"], "utf8", options=["SMTPUTF8"])
        doc = settled(app, doc, lambda d: d["status"] in FINAL)
        assert doc["status"] == "sent" and peer.received == [(PEER_OTHER, ["jörg@two.test"])]
    finally:
        peer.stop()


# ---------------------------------------------------------------------------- timeouts
def test_the_greeting_has_its_own_timeout_longer_than_connect(appliance_factory, dns_two_mx):
    port = shared_port([PEER_ACCEPT, PEER_OTHER])
    peer = ScriptedPeer([PEER_ACCEPT, PEER_OTHER], port, greeting_delay=1.0)
    try:
        app = start(appliance_factory, dns_two_mx, port, outbound_connect_timeout=0.3, outbound_greeting_timeout=5.0)
        doc = settled(app, send(app, ["a@two.test"], "slow greeting"), lambda d: d["status"] in FINAL)
        assert doc["status"] == "sent" and peer.received == [(PEER_ACCEPT, ["a@two.test"])]
    finally:
        peer.stop()


def test_default_timeouts_are_rfc_5321_and_retries_reach_the_age_limit():
    from mailappliance.services.queue_runner import RunnerConfig
    from mailappliance.settings import Settings

    defaults = Settings()
    smtp = RunnerConfig.from_settings(defaults).smtp
    assert (smtp.greeting_timeout, smtp.command_timeout, smtp.data_init_timeout, smtp.data_block_timeout, smtp.data_end_timeout) == (
        300.0, 300.0, 120.0, 180.0, 600.0
    )
    policy = RunnerConfig.from_settings(defaults).policy
    assert defaults.queue_max_attempts == 0 and not policy.exhausted(1000, too_old=False) and policy.exhausted(1, too_old=True)
    assert "password=" not in repr(Settings(smtp_relay_password="s3cret", webhook_secret="hush"))
    assert "s3cret" not in repr(Settings(smtp_relay_password="s3cret")) and "hush" not in repr(Settings(webhook_secret="hush"))


def test_without_an_attempt_limit_a_deferred_recipient_keeps_being_retried(appliance_factory, dns):
    peer = SmtpPeer([PEER_ACCEPT], shared_port([PEER_ACCEPT]))
    try:
        app = start(appliance_factory, dns, peer.port, queue_retry_base=0.01, queue_retry_max=0.02, queue_max_attempts=0)
        doc = settled(app, send(app, ["defer@accept.test"], "keeps trying"), lambda d: d["attempts"] >= 12, timeout=30)
        assert doc["status"] in ("deferred", "sending") and doc["recipients"][0]["status"] in ("deferred", "queued")
    finally:
        peer.stop()


# ---------------------------------------------------------------------------- leases
def test_a_delivery_whose_lease_was_lost_does_not_go_on_to_data(appliance_factory, dns):
    peer = SmtpPeer([PEER_ACCEPT], shared_port([PEER_ACCEPT]))

    def slow_rcpt(address):
        gevent.sleep(5)
        return "250 2.1.5 Ok"

    peer.behaviour[PEER_ACCEPT].rcpt = slow_rcpt
    try:
        app = start(appliance_factory, dns, peer.port, queue_lease=10)
        doc = send(app, ["a@accept.test"], "stolen")
        outgoing = app.stores.collections.outgoing
        wait_for(lambda: peer.connections)
        thief = ObjectId()  # another runner took the message over (as after an expired lease)
        assert outgoing.update_one({"_id": doc["_id"], "status": "sending"}, {"$set": {"lease": thief}}).modified_count == 1
        wait_for(lambda: app.outbound.runner.counters["lost_leases"] >= 1, timeout=10)
        gevent.sleep(3)
        assert peer.received == [], "no DATA once the lease was lost"
        after = outgoing.find_one({"_id": doc["_id"]})
        assert after["lease"] == thief and after["recipients"][0]["status"] == "queued", "the new holder's state is untouched"
        assert app.stores.collections.successful.count_documents({"email_id": doc["_id"]}) == 0
    finally:
        peer.stop()


# ---------------------------------------------------------------------------- sibling domains
def test_an_error_in_one_domain_defers_only_its_recipients(appliance_factory, dns, monkeypatch):
    peer = SmtpPeer([PEER_ACCEPT, PEER_OTHER], shared_port([PEER_ACCEPT, PEER_OTHER]))
    try:
        app = start(appliance_factory, dns, peer.port)
        resolver = app.outbound.runner.resolver
        real = resolver.hosts

        def hosts(domain):
            if domain == "other.test":
                raise RuntimeError("a bug")
            return real(domain)

        monkeypatch.setattr(resolver, "hosts", hosts)
        doc = settled(app, send(app, ["a@accept.test", "b@other.test"], "siblings"), lambda d: d["attempts"] >= 1)
        rc = {r["address"]: r for r in doc["recipients"]}
        assert rc["a@accept.test"]["status"] == "sent"
        assert (rc["b@other.test"]["status"], rc["b@other.test"]["code"]) == ("deferred", 451)
    finally:
        peer.stop()


# ---------------------------------------------------------------------------- bounce reports
def test_a_report_for_a_local_failure_has_no_smtp_diagnostic(appliance_factory, dns):
    app = start(appliance_factory, dns, free_port())
    doc = settled(app, send(app, ["x@nullmx.test"], "null mx report"), lambda d: d["status"] in FINAL)
    assert doc["recipients"][0]["enhanced_code"] == "5.1.10"
    [report] = wait_for(lambda: stored_messages(app, SENDER) or None)
    raw = stored_raw(app, report)
    status = email.message_from_bytes(raw).get_payload()[1].get_payload()[1]
    assert status["Status"] == "5.1.10"
    assert str(status["Diagnostic-Code"]).startswith("X-mailappliance;") and b"smtp;" not in raw
    assert status["Remote-MTA"] is None
    wait_for(lambda: app.stores.collections.pending_reports.count_documents({}) == 0)
    assert report["_id"] in app.stores.collections.outgoing.find_one({"_id": doc["_id"]})["dsn_message_ids"]
