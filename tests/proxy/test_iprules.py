"""ip_rules at run time: allow/deny (IPv4, IPv6), X-Forwarded-For from trusted proxies only."""

from __future__ import annotations

import fakeredis
import pytest

from configbus.document import IpRange, IpRules, RateLimit
from proxy.iprules import IpPolicy
from proxy.limits import FleetLimits


@pytest.fixture
def fleet() -> FleetLimits:
    return FleetLimits(fakeredis.FakeAsyncRedis(), "ns", "r1")


RULES = IpRules(
    allow=("192.0.2.0/24", "2001:db8::/32", "127.0.0.1"),
    deny=("192.0.2.66/32", "2001:db8:bad::/48"),
    trusted_proxies=("127.0.0.1/32", "fd00::/8"),
    rate_limit=RateLimit(rpm=60),
    ranges=(IpRange(cidr="2001:db8::/32", rate_limit=RateLimit(rpm=600, tpm=6000)),),
)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("192.0.2.10", True),
        ("192.0.2.66", False),  # denied inside an allowed range: deny wins
        ("198.51.100.1", False),  # not on the allow list
        ("2001:db8::1", True),
        ("2001:db8:bad::1", False),
        ("2001:dead::1", False),
        ("::ffff:192.0.2.10", True),  # IPv4-mapped IPv6 is its IPv4 address
        ("not-an-ip", False),
    ],
)
def test_allow_and_deny_v4_and_v6(fleet: FleetLimits, address: str, allowed: bool) -> None:
    assert (IpPolicy(RULES, fleet).verdict(address) is not None) is allowed


def test_limits_per_address_and_per_range(fleet: FleetLimits) -> None:
    policy = IpPolicy(RULES, fleet)
    v4 = policy.verdict("192.0.2.10")
    v6 = policy.verdict("2001:db8::1")
    assert v4 is not None and [(a.kind, a.name) for a in v4] == [("ip", "192.0.2.10")]
    assert v6 is not None and [(a.kind, a.tokens) for a in v6] == [
        ("ip", False),
        ("range", False),
        ("range", True),
    ]
    other = policy.verdict("2001:db8::2")
    assert other is not None and other[1] is v6[1]  # one range, one shared bucket
    assert other[0] is not v6[0]  # each address its own


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(fleet: FleetLimits) -> None:
    policy = IpPolicy(RULES, fleet)
    xff = b"203.0.113.9, 2001:db8::7"
    assert policy.client_address("127.0.0.1", xff) == "2001:db8::7"
    assert policy.client_address("fd00::1", b"192.0.2.66") == "192.0.2.66"
    # A trusted hop in the chain is skipped: the client is the one before it.
    assert policy.client_address("127.0.0.1", b"192.0.2.10, fd00::9") == "192.0.2.10"
    # From anyone else the header is ignored: the socket address is the client.
    assert policy.client_address("192.0.2.10", b"192.0.2.99") == "192.0.2.10"
    assert policy.client_address("198.51.100.1", xff) == "198.51.100.1"
    # A garbled header from a trusted proxy tells nothing: the proxy's address is used.
    assert policy.client_address("127.0.0.1", b"192.0.2.10, junk") == "127.0.0.1"


def test_no_trusted_proxies_ignores_the_header(fleet: FleetLimits) -> None:
    policy = IpPolicy(IpRules(deny=("192.0.2.0/24",)), fleet)
    assert policy.client_address("127.0.0.1", b"192.0.2.1") == "127.0.0.1"
    assert policy.verdict("127.0.0.1") == ()
    assert policy.verdict("192.0.2.1") is None
