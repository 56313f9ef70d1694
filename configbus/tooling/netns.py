"""A network namespace with veth links to the host, for a process whose network a test cuts.

    ns = NetNamespace.create()           # needs root and `ip netns`; see `unavailable()`
    try:
        argv = ns.exec_argv([sys.executable, "-m", "configbus", "proxy", ...])
        ...                              # the process reaches the host at ns.redis.host_ip
        ns.link_down("redis")            # the host end goes down: the namespace side loses
        ...                              # carrier, packets vanish, nothing errors at once
        ns.link_up("redis")
    finally:
        ns.destroy()                     # always: deletes the veth pairs and the namespace

Two links, each a veth pair on its own private /30 (host end `.1`/`.5`, namespace end
`.2`/`.6`): `redis`, the one the fault takes down (the process's way to Redis), and
`service`, which stays up (clients reach the process there, and it reaches its upstreams),
so "a replica cut from Redis" is not also a replica cut from its clients. Taking the
*host* end down is a cable pulled at the far side: the namespace keeps its routes and its
sockets, connections stall until their timeouts, new ones do not answer; it is not the
instant "network unreachable" a local interface going down would give.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

BASE = ipaddress.IPv4Network("10.213.0.0/16")  # private; a free /29 of it is picked per run


@dataclass(frozen=True)
class Link:
    name: str  # "redis" or "service"
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str


def unavailable() -> str | None:
    """Why a namespace cannot be made here (not root, no `ip netns`), or None."""
    if os.geteuid() != 0:
        return "network namespaces need root (CI here runs as root)"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        return f"`ip netns` does not work here: {probe.stderr.strip()[:200]}"
    return None


def _ip(*args: str, netns: str | None = None) -> None:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


def _addresses_in_use() -> list[ipaddress.IPv4Network]:
    out = subprocess.run(
        ["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=False
    ).stdout
    nets = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            nets.append(ipaddress.IPv4Interface(parts[parts.index("inet") + 1]).network)
    return nets


def _free_block() -> ipaddress.IPv4Network:
    used = _addresses_in_use()
    for _ in range(100):
        block = ipaddress.IPv4Network(
            (int(BASE.network_address) + 8 * secrets.randbelow(BASE.num_addresses // 8), 29)
        )
        if not any(block.overlaps(u) for u in used):
            return block
    raise RuntimeError(f"no free /29 in {BASE}")


class NetNamespace:
    """One namespace we made, its links, and the cleanup that removes them."""

    def __init__(self, name: str, links: dict[str, Link]) -> None:
        self.name = name
        self.links = links
        self._gone = False
        atexit.register(self.destroy)  # a crashed test still leaves nothing behind

    @property
    def redis(self) -> Link:
        return self.links["redis"]

    @property
    def service(self) -> Link:
        return self.links["service"]

    @classmethod
    def create(cls, prefix: str = "configbus") -> NetNamespace:
        """Make the namespace and its two links; on any failure, remove what was made."""
        reason = unavailable()
        if reason is not None:
            raise RuntimeError(reason)
        tag = secrets.token_hex(3)
        block = _free_block()
        hosts = list(block)
        links = {
            name: Link(name, f"cb{tag}{name[0]}h", f"cb{tag}{name[0]}n",
                       str(hosts[1 + 4 * i]), str(hosts[2 + 4 * i]))
            for i, name in enumerate(("redis", "service"))
        }  # fmt: skip
        ns = cls(f"{prefix}-{tag}", links)
        try:
            _ip("netns", "add", ns.name)
            _ip("link", "set", "lo", "up", netns=ns.name)
            for link in links.values():
                _ip("link", "add", link.host_if, "type", "veth", "peer", "name", link.ns_if)
                _ip("link", "set", link.ns_if, "netns", ns.name)
                _ip("addr", "add", f"{link.host_ip}/30", "dev", link.host_if)
                _ip("addr", "add", f"{link.ns_ip}/30", "dev", link.ns_if, netns=ns.name)
                _ip("link", "set", link.host_if, "up")
                _ip("link", "set", link.ns_if, "up", netns=ns.name)
        except Exception:
            ns.destroy()
            raise
        return ns

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside the namespace (`ip netns exec` execs it: the PID is its own)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def link_down(self, name: str = "redis") -> None:
        _ip("link", "set", self.links[name].host_if, "down")

    def link_up(self, name: str = "redis") -> None:
        _ip("link", "set", self.links[name].host_if, "up")

    def destroy(self) -> None:
        """Remove the links and the namespace (idempotent; errors are ignored, since what
        failed to be made need not be removed)."""
        if self._gone:
            return
        self._gone = True
        for link in self.links.values():
            # Deleting one end of a veth pair deletes both.
            subprocess.run(["ip", "link", "del", link.host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)
        atexit.unregister(self.destroy)

    def __enter__(self) -> NetNamespace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()
