"""A bare aiohttp pass-through to an upstream: the baseline the proxy is compared with."""

import sys

import aiohttp
import uvloop
from aiohttp import web

UPSTREAM, PORT = sys.argv[1], int(sys.argv[2])


async def forward(request: web.Request) -> web.Response:
    session: aiohttp.ClientSession = request.app["session"]
    async with session.post(
        UPSTREAM + request.path,
        data=await request.read(),
        headers={"content-type": "application/json"},
    ) as resp:
        return web.Response(
            body=await resp.read(), status=resp.status, content_type="application/json"
        )


async def make_app() -> web.Application:
    app = web.Application()
    app["session"] = aiohttp.ClientSession()
    app.on_cleanup.append(lambda a: a["session"].close())
    app.router.add_post("/v1/chat/completions", forward)
    return app


if __name__ == "__main__":
    web.run_app(
        make_app(),
        host="127.0.0.1",
        port=PORT,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )
