"""The SMTP hand-off against peers on loopback: per-recipient replies, source-address families."""
from mailappliance.services.outbound import SmtpOptions, Target, hand_off
from tests.e2e.outbound_peers import PEER_ACCEPT, SmtpPeer, shared_port


def test_per_recipient_replies_in_one_transaction():
    peer = SmtpPeer([PEER_ACCEPT], shared_port([PEER_ACCEPT]))
    try:
        result = hand_off(
            [Target("mx.accept.test", PEER_ACCEPT, peer.port)],
            SmtpOptions(helo="me.test", connect_timeout=2, command_timeout=2),
            "127.0.0.3",
            "s@example.com",
            ["ok@accept.test", "nouser@accept.test", "defer@accept.test"],
            b"Subject: x\r\n\r\n.leading dot\r\n",
        )
    finally:
        peer.stop()
    replies = {a: (r.code, r.enhanced, r.stage) for a, r in result.replies.items()}
    assert replies == {
        "ok@accept.test": (250, "2.0.0", "data"),
        "nouser@accept.test": (550, "5.1.1", "rcpt"),
        "defer@accept.test": (451, "4.2.0", "rcpt"),
    }
    assert (result.mx_host, result.mx_address, result.source_ip) == ("mx.accept.test", PEER_ACCEPT, "127.0.0.3")
    [message] = peer.received
    assert message.peer_ip == "127.0.0.3" and message.data.endswith(b".leading dot\r\n"), "dot-stuffed and unstuffed"


def test_a_source_ip_of_another_family_than_every_destination_defers():
    result = hand_off([Target("mx", "::1", 25)], SmtpOptions(helo="me.test"), "127.0.0.3", "s@example.com", ["a@b.test"], b"x\r\n")
    [reply] = result.replies.values()
    assert reply.code == 451 and "family" in reply.text and result.tried == []
