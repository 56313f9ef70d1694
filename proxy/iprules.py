"""The document's `ip_rules` at run time: who the caller is, may it call, what limits it.

The caller's address is the socket peer's, unless the peer is a trusted proxy: then the
rightmost `X-Forwarded-For` entry that is not itself a trusted proxy (the one the first
trusted hop saw). From any other peer the header is ignored, so nobody can pick the address
they are limited as. IPv4-mapped IPv6 addresses count as their IPv4 address.

Each address's verdict (denied, or the allowances that limit it) is worked out once and
cached, so a request from a known address costs two dict lookups.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from configbus.document import IpRules
from proxy import errors
from proxy.allowance import Allowance
from proxy.limits import FleetLimits

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
DENIED: tuple[Allowance, ...] | None = None
CACHE_SIZE = 65_536  # addresses remembered; the cache starts over when full


def _networks(cidrs: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _address(text: str) -> Address | None:
    try:
        a = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return a.ipv4_mapped
    return a


def _within(a: Address, nets: Sequence[Network]) -> bool:
    return any(a.version == n.version and a in n for n in nets)


class IpPolicy:
    def __init__(self, rules: IpRules, fleet: FleetLimits) -> None:
        self.allow = _networks(rules.allow)
        self.deny = _networks(rules.deny)
        self.trusted = _networks(rules.trusted_proxies)
        self.per_ip = rules.rate_limit
        self.fleet = fleet
        self.ranges = [
            (n, tuple(fleet.allowances_for("range", str(n), r.rate_limit)))
            for n, r in zip(_networks([r.cidr for r in rules.ranges]), rules.ranges, strict=True)
        ]
        self._verdicts: dict[str, tuple[Allowance, ...] | None] = {}
        self._trusted_peers: dict[str, bool] = {}

    @staticmethod
    def needed(rules: IpRules) -> bool:
        return bool(rules.allow or rules.deny or rules.rate_limit or rules.ranges)

    def admit(self, peer: tuple[str, int] | None, forwarded: bytes | None) -> tuple[Allowance, ...]:
        """The allowances limiting a request from socket `peer`; 403 if it is refused."""
        address = self.client_address(peer[0] if peer else "", forwarded)
        found = self.verdict(address)
        if found is None:
            raise errors.ip_denied(address)
        return found

    def client_address(self, peer: str, forwarded: bytes | None) -> str:
        """The address a request is judged as (see the module docstring)."""
        if forwarded is None or not self.trusted:
            return peer
        trusted = self._trusted_peers.get(peer)
        if trusted is None:
            if len(self._trusted_peers) >= CACHE_SIZE:
                self._trusted_peers.clear()
            a = _address(peer)
            trusted = self._trusted_peers[peer] = a is not None and _within(a, self.trusted)
        if not trusted:
            return peer
        hops = forwarded.decode("latin-1").split(",")
        for hop in reversed(hops):
            a = _address(hop)
            if a is None:
                return peer  # a garbled header tells nothing we can believe
            if not _within(a, self.trusted):
                return str(a)
        first = _address(hops[0])
        return str(first) if first is not None else peer

    def verdict(self, address: str) -> tuple[Allowance, ...] | None:
        """None if `address` is refused; else the allowances limiting it."""
        try:
            return self._verdicts[address]
        except KeyError:
            pass
        if len(self._verdicts) >= CACHE_SIZE:
            self._verdicts.clear()
        v = self._verdicts[address] = self._judge(address)
        return v

    def _judge(self, address: str) -> tuple[Allowance, ...] | None:
        a = _address(address)
        if a is None:  # not an IP (a unix socket peer): only allow-listed if no allow list
            return DENIED if self.allow else ()
        if _within(a, self.deny) or (self.allow and not _within(a, self.allow)):
            return DENIED
        out: list[Allowance] = []
        out += self.fleet.allowances_for("ip", str(a), self.per_ip)
        for n, allowances in self.ranges:
            if a.version == n.version and a in n:
                out += allowances
        return tuple(out)
