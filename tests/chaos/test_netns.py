"""The network namespace the soak runs a replica in: a process inside reaches the host over
the `redis` link; with that link down its connections stall (no error, as a cable pulled at
the far end); up again, they work; and nothing is left behind, even when the test fails."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from configbus.tooling.netns import NetNamespace, unavailable

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(unavailable() is not None, reason=str(unavailable())),
]

# Inside the namespace: connect to the host's end of the link and read one line, or say why not.
CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.0) as s:
        s.settimeout(1.0)
        print(s.recv(64).decode().strip())
except OSError as exc:
    print(type(exc).__name__)
"""


@pytest.fixture
def netns() -> Iterator[NetNamespace]:
    ns = NetNamespace.create("configbus-test")
    try:
        yield ns
    finally:
        ns.destroy()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert ns.redis.host_if not in links and ns.service.host_if not in links
    assert (
        ns.name
        not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )


def ask(ns: NetNamespace, port: int) -> str:
    argv = ns.exec_argv([sys.executable, "-c", CLIENT, ns.redis.host_ip, str(port)])
    return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()


def test_a_process_in_the_namespace_is_cut_from_the_host_while_its_link_is_down(
    netns: NetNamespace,
) -> None:
    server = socket.create_server((netns.redis.host_ip, 0))
    port = server.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"hello\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert ask(netns, port) == "hello"
        netns.link_down("redis")
        assert ask(netns, port) == "TimeoutError"  # silence, not a refusal
        netns.link_up("redis")
        assert ask(netns, port) == "hello"
    finally:
        stop.set()
        thread.join(2)
        server.close()
