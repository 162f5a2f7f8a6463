"""Where mail for a domain goes: DNS MX lookup with dnspython (RFC 5321 §5.1, RFC 7505).

* MX records sorted by preference, equal preferences in random order (§5.1).
* No MX record: the domain's own A/AAAA records are the implicit MX (§5.1).
* Null MX (a single ``0 .``, RFC 7505 §3) or NXDOMAIN: a permanent failure.
* Timeouts and server failures: a temporary failure (the message is deferred).

``DNS_SERVERS`` (``host[:port]`` list) replaces the system resolver, so tests run against
dnsmasq on loopback. Answers are cached by dnspython for their TTL.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Optional

import dns.exception
import dns.inet
import dns.name
import dns.nameserver
import dns.resolver

log = logging.getLogger("mailappliance.mx")

# A name that cannot be a DNS name (label over 63 octets, empty label, bad IDNA): no retry helps.
BAD_NAME = (dns.name.LabelTooLong, dns.name.EmptyLabel, dns.name.NameTooLong, dns.name.IDNAException, UnicodeError)


class DnsFailure(Exception):
    """No destination for a domain; ``permanent`` decides bounce versus defer."""

    def __init__(self, text: str, enhanced: str, permanent: bool) -> None:
        super().__init__(text)
        self.text = text
        self.enhanced = enhanced
        self.permanent = permanent


@dataclass
class MxHost:
    name: str
    preference: int
    addresses: list[str] = field(default_factory=list)


class MxResolver:
    def __init__(self, servers: Optional[list[tuple[str, int]]] = None, timeout: float = 5.0) -> None:
        if servers:
            self.resolver = dns.resolver.Resolver(configure=False)
            self.resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in servers]
        else:
            self.resolver = dns.resolver.Resolver()
        self.resolver.timeout = timeout
        self.resolver.lifetime = timeout
        self.resolver.cache = dns.resolver.Cache()
        self.lookups = 0

    def hosts(self, domain: str) -> list[MxHost]:
        """The hosts to try for ``domain``, in order, each with its addresses.

        Raises :class:`DnsFailure`. A domain given as an address literal (``[192.0.2.1]``)
        is delivered to that address.
        """
        self.lookups += 1
        domain = domain.rstrip(".").lower()
        if domain.startswith("[") and domain.endswith("]"):
            literal = domain[1:-1]
            if literal.lower().startswith("ipv6:"):
                literal = literal[5:]
            if not dns.inet.is_address(literal):
                raise DnsFailure(f"bad address literal {domain}", "5.1.2", permanent=True)
            return [MxHost(domain, 0, [literal])]
        try:
            answer = self.resolver.resolve(domain, "MX", raise_on_no_answer=False)
        except BAD_NAME as exc:
            raise DnsFailure(f"bad domain name {domain}: {_short(exc)}", "5.1.2", permanent=True) from None
        except dns.resolver.NXDOMAIN:
            raise DnsFailure(f"domain {domain} does not exist (NXDOMAIN)", "5.1.2", permanent=True) from None
        except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout) as exc:
            raise DnsFailure(f"MX lookup for {domain} failed: {_short(exc)}", "4.4.3", permanent=False) from None
        except dns.exception.DNSException as exc:
            raise DnsFailure(f"MX lookup for {domain} failed: {_short(exc)}", "4.4.3", permanent=False) from None
        records = list(answer.rrset or [])
        if not records:
            hosts = [MxHost(domain, 0)]  # RFC 5321 §5.1: the implicit MX
        else:
            if any(r.exchange.to_text() == "." for r in records):
                if len(records) == 1 and records[0].preference == 0:
                    raise DnsFailure(f"domain {domain} accepts no mail (null MX, RFC 7505)", "5.1.10", permanent=True)
                records = [r for r in records if r.exchange.to_text() != "."]
            by_preference: dict[int, list] = {}
            for record in records:
                by_preference.setdefault(record.preference, []).append(record)
            hosts = []
            for preference in sorted(by_preference):
                group = by_preference[preference]
                random.shuffle(group)
                hosts.extend(MxHost(r.exchange.to_text().rstrip(".").lower(), preference) for r in group)
        temporary: Optional[str] = None
        for host in hosts:
            try:
                host.addresses = self.addresses(host.name)
            except DnsFailure as exc:
                temporary = temporary or exc.text
        usable = [h for h in hosts if h.addresses]
        if usable:
            return usable
        if not records and temporary is None:
            # No MX and no address: nothing will ever accept mail for it.
            raise DnsFailure(f"domain {domain} has no MX and no address record", "5.1.2", permanent=True)
        raise DnsFailure(temporary or f"no address for the MX hosts of {domain}", "4.4.3", permanent=False)

    def addresses(self, name: str) -> list[str]:
        """IPv4 then IPv6 addresses of ``name``; [] when it has none."""
        if dns.inet.is_address(name):
            return [name]
        found: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = self.resolver.resolve(name, rdtype, raise_on_no_answer=False)
            except dns.resolver.NXDOMAIN:
                continue
            except BAD_NAME as exc:
                raise DnsFailure(f"bad host name {name}: {_short(exc)}", "5.1.2", permanent=True) from None
            except dns.exception.DNSException as exc:
                raise DnsFailure(f"address lookup for {name} failed: {_short(exc)}", "4.4.3", permanent=False) from None
            found.extend(r.to_text() for r in (answer.rrset or []))
        return found


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
    return text[:200]
