"""MX resolution against dnsmasq on loopback (RFC 5321 §5.1, RFC 7505)."""
import socket
from collections import Counter

import pytest

from mailappliance.services.mx import DnsFailure, MxResolver
from tests.conftest import have
from tests.e2e.outbound_peers import Dnsmasq

pytestmark = pytest.mark.skipif(not have("dnsmasq"), reason="dnsmasq (dnsmasq-base) is not installed")

RECORDS = """
mx-host=pref.test,mx-b.pref.test,20
mx-host=pref.test,mx-a.pref.test,10
mx-host=pref.test,mx-c.pref.test,10
host-record=mx-a.pref.test,127.0.0.11
host-record=mx-b.pref.test,127.0.0.12
host-record=mx-c.pref.test,127.0.0.13,::1
host-record=aonly.test,127.0.0.14
dns-rr=nullmx.test,15,000000
"""


@pytest.fixture(scope="module")
def resolver():
    server = Dnsmasq(RECORDS)
    yield MxResolver(server.servers, timeout=2)
    server.stop()


def test_preference_order_with_equal_preferences_shuffled(resolver):
    firsts = Counter()
    for _ in range(30):
        resolver.resolver.cache.flush()
        hosts = resolver.hosts("pref.test")
        assert [h.preference for h in hosts] == [10, 10, 20]
        assert hosts[-1].name == "mx-b.pref.test" and hosts[-1].addresses == ["127.0.0.12"]
        firsts[hosts[0].name] += 1
    assert set(firsts) == {"mx-a.pref.test", "mx-c.pref.test"}, "equal preferences in random order"
    assert next(h for h in resolver.hosts("pref.test") if h.name == "mx-c.pref.test").addresses == ["127.0.0.13", "::1"]


def test_no_mx_uses_the_address_record(resolver):
    [host] = resolver.hosts("aonly.test")
    assert (host.name, host.addresses) == ("aonly.test", ["127.0.0.14"])


def test_null_mx_and_nxdomain_are_permanent(resolver):
    with pytest.raises(DnsFailure) as null:
        resolver.hosts("nullmx.test")
    assert null.value.permanent and null.value.enhanced == "5.1.10"
    with pytest.raises(DnsFailure) as missing:
        resolver.hosts("missing.test")
    assert missing.value.permanent and missing.value.enhanced == "5.1.2"


def test_address_literal(resolver):
    [host] = resolver.hosts("[127.0.0.9]")
    assert host.addresses == ["127.0.0.9"]


def test_a_dns_server_that_does_not_answer_is_a_temporary_failure():
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # bound, never answers
    try:
        with pytest.raises(DnsFailure) as timeout:
            MxResolver([("127.0.0.1", silent.getsockname()[1])], timeout=0.5).hosts("example.test")
        assert not timeout.value.permanent and timeout.value.enhanced == "4.4.3"
    finally:
        silent.close()


@pytest.mark.parametrize("domain", ["a" * 64 + ".test", "a..test", "\u00fc" + "a" * 70 + ".test"])
def test_a_name_that_cannot_exist_bounces_instead_of_deferring(domain):
    resolver = MxResolver([("127.0.0.1", 9)], timeout=0.5)  # never asked: the name is refused first
    with pytest.raises(DnsFailure) as failure:
        resolver.hosts(domain)
    assert (failure.value.permanent, failure.value.enhanced) == (True, "5.1.2")
