"""Reply meaning (RFC 5321 §4.2, RFC 3463) and the seed's bounce types."""
import pytest

from mailappliance.services.bounces import HARD, PERMANENT, SOFT, TRANSIENT, Reply, blocks_ip, bounce_type, enhanced_code


@pytest.mark.parametrize(
    "code, text, stage, expected",
    [
        (550, "5.1.1 no such user", "rcpt", HARD),
        (550, "5.1.10 null MX", "dns", HARD),
        (550, "User unknown in virtual mailbox table", "rcpt", HARD),
        (552, "5.2.2 mailbox full", "rcpt", SOFT),
        (550, "Mailbox over quota", "rcpt", SOFT),
        (554, "5.7.1 rejected by policy", "rcpt", PERMANENT),
        (552, "5.3.4 message too big", "mail", PERMANENT),
        (451, "4.2.0 try later", "rcpt", TRANSIENT),
    ],
)
def test_bounce_types(code, text, stage, expected):
    assert bounce_type(Reply(code, text, stage=stage)) == expected


def test_exhausted_retries_are_transient_whatever_the_last_reply():
    assert bounce_type(Reply(421, "4.4.2 timeout"), exhausted=True) == TRANSIENT


def test_enhanced_code_must_match_the_reply_class():
    assert enhanced_code("5.1.1 no such user") == "5.1.1"
    assert enhanced_code("no code here") is None
    assert Reply(451, "5.1.1 mismatched").enhanced is None
    assert Reply(250, "2.0.0 Ok").describe() == "250 2.0.0 Ok"
    assert Reply(451, "timeout", "4.4.2").describe() == "451 4.4.2 timeout"


def test_blocked_ip_wording():
    assert blocks_ip(Reply(554, "5.7.1 Service unavailable; client host [1.2.3.4] blocked using zen.spamhaus.org"))
    assert blocks_ip(Reply(421, "4.7.0 IP listed on RBL", stage="connect"))
    assert not blocks_ip(Reply(550, "5.1.1 no such user"))
    assert not blocks_ip(Reply(250, "Ok, not blocked"))


@pytest.mark.parametrize("text", ["5.1.7 bad sender address syntax", "5.1.8 bad sender's system address"])
def test_sender_address_problems_are_not_hard_recipient_bounces(text):
    assert bounce_type(Reply(553, text, stage="mail")) == PERMANENT


def test_last_error_keeps_the_enhanced_code_once():
    from mailappliance.services.outcomes import last_error

    assert last_error({"code": 550, "enhanced_code": "5.1.2", "response": "domain nowhere.example: NXDOMAIN"}) == "550 5.1.2 domain nowhere.example: NXDOMAIN"
    assert last_error({"code": 550, "enhanced_code": "5.1.1", "response": "5.1.1 no such user"}) == "550 5.1.1 no such user"
    assert last_error({"code": 421, "enhanced_code": None, "response": "try later"}) == "421 try later"
