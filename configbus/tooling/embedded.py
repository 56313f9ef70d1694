"""An in-process Redis for `configbus up` on machines without one: fakeredis' TCP server.

fakeredis' handler closes a connection after any error reply (a NOSCRIPT, a WRONGTYPE),
which a real Redis never does; redis-py then fails the next command on that connection.
The handler here answers errors and keeps the connection, as Redis does.
"""

from __future__ import annotations

import threading
from typing import Any

from redis.exceptions import ResponseError


def start_embedded_redis(port: int) -> Any:
    """Serve fakeredis (with Lua) on 127.0.0.1:`port` from a daemon thread; returns the server
    (call `shutdown()` and `server_close()` to stop it)."""
    from fakeredis import TcpFakeServer
    from fakeredis._clients._tcp_server import TCPFakeRequestHandler

    class Handler(TCPFakeRequestHandler):
        def setup(self) -> None:
            super().setup()
            client = self.current_client
            read = client.read_response

            def read_response() -> Any:
                try:
                    return read()
                except ResponseError as exc:
                    return exc  # sent as an error reply; the connection stays open

            client.read_response = read_response  # type: ignore[method-assign,assignment]

    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    server.RequestHandlerClass = Handler
    server.daemon_threads = True
    threading.Thread(
        target=server.serve_forever, daemon=True, name="configbus-embedded-redis"
    ).start()
    return server
