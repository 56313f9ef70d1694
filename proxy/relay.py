"""A streamed answer: relayed chunk by chunk, Anthropic's events translated to OpenAI's."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable

import msgspec
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from proxy import anthropic, errors
from proxy.admission import Ticket, UsageScanner
from proxy.h1client import Response, UpstreamError
from proxy.upstream import ProviderRuntime
from proxy.usage import Tally

log = logging.getLogger("proxy.chat")

Headers = list[tuple[bytes, bytes]]


class RelayResponse(StreamingResponse):
    """A streaming response that runs `on_close` once it is done, however it ends."""

    def __init__(
        self,
        content: AsyncGenerator[bytes, None],
        *,
        headers: Headers,
        on_close: Callable[[], None],
        upstream: Response,
    ) -> None:
        super().__init__(content, 200, media_type="text/event-stream")
        # Our headers, raw, replacing the JSON content type of the non-stream path.
        self.raw_headers = [*self.raw_headers, *headers[1:]]
        self._on_close = on_close
        self._content = content
        # Released here too: a generator closed before its first step runs no `finally`
        # (a client gone before the answer started), and the connection must not linger.
        self._upstream = upstream

    def tap(self, feed: Callable[[bytes], None], done: Callable[[], None]) -> None:
        """Show every chunk sent to `feed`, and call `done` once the stream ended whole (not
        when the client went away)."""
        inner = self.body_iterator

        async def tapped() -> AsyncGenerator[bytes, None]:
            async for chunk in inner:
                data = chunk.encode() if isinstance(chunk, str) else bytes(chunk)
                feed(data)
                yield data
            done()

        self.body_iterator = tapped()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self._content.aclose()
            finally:
                self._upstream.release()
                self._on_close()


async def relay(
    resp: Response,
    provider: ProviderRuntime,
    ticket: Ticket | None,
    tally: Tally | None = None,
    *,
    strip: bool = False,
) -> AsyncGenerator[bytes, None]:
    """`strip`: the proxy asked for the usage chunk, the client did not: keep it back."""
    translator = anthropic.StreamTranslator() if provider.type == "anthropic" else None
    # Token limits and usage: read the usage the stream ends with.
    tokens = ticket is not None and ticket.tokens
    usage = UsageScanner(strip=strip) if tokens or tally is not None else None
    try:
        async for chunk in resp.chunks():
            if translator is not None:
                chunk = translator.feed(chunk)
                if not chunk:
                    continue
            if usage is not None:
                if strip:
                    chunk = usage.filter(chunk)
                    if not chunk:
                        continue
                else:
                    usage.feed(chunk)  # what the client gets: OpenAI's chunks
            yield chunk
        if strip and usage is not None:
            rest = usage.rest()
            if rest:
                yield rest
    except (TimeoutError, UpstreamError, msgspec.DecodeError, AttributeError, TypeError,
            KeyError, ValueError) as exc:  # fmt: skip
        # Too late to retry: the client already has part of the answer. Say so in-band.
        # (Malformed upstream events, like a non-object "delta", end up here too.)
        log.warning("stream from %s broke: %r", provider.name, exc)
        yield (
            b"data: "
            + errors.error_body(
                f"upstream {provider.name} stream broke", "upstream_error", "stream_interrupted"
            )
            + b"\n\ndata: [DONE]\n\n"
        )
    finally:
        resp.release()
        if usage is not None:
            if tokens and ticket is not None:
                ticket.settle(usage.used, True)
            if tally is not None:
                tally.done(usage.prompt, usage.completion)
