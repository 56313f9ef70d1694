"""Admitting one request against every limit that applies to it, and what it answers.

Order: address (per IP, per range), key, model, global; then, while routing, the provider
of each deployment tried (a provider at its limit is skipped like a failing one). A limit
that refuses gives back what the earlier ones took; a `shadow` limit that would refuse is
counted and named in `x-configbus-shadow-limited`, and the request goes on.

Token limits admit on an estimate (`max_tokens` or `max_completion_tokens`, plus the body's
length / 4 for the prompt) and are corrected with the usage the upstream reports when the
answer ends (`Ticket.settle`), streams included: the relay reads the usage chunk that
`stream_options.include_usage` asks for, which the proxy adds to a streamed request when a
token limit applies.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from proxy import errors
from proxy.allowance import Allowance
from proxy.errors import ProxyError
from proxy.limits import FleetLimits
from proxy.runtime import ClientRuntime, Runtime

Headers = list[tuple[bytes, bytes]]
SHADOW_HEADER = b"x-configbus-shadow-limited"
# A streamed answer's usage chunk is small; a longer unfinished event is not one.
MAX_EVENT_BYTES = 65_536


class Ticket:
    """What one request took from token limits (to settle) and which shadow limits it hit."""

    __slots__ = ("estimate", "shadow", "tokens")

    def __init__(self, estimate: float) -> None:
        self.estimate = estimate
        self.tokens: list[Allowance] = []
        self.shadow: list[Allowance] = []

    def settle(self, used: int | None, ok: bool) -> None:
        """`used`: total tokens the upstream reported; None when it reported none."""
        if not self.tokens:
            return
        if used is not None:
            delta = used - self.estimate
        elif ok:
            return  # no report: the estimate stands
        else:
            delta = -self.estimate  # nothing was generated
        for a in self.tokens:
            a.settle(delta)
        self.tokens = []

    def shadow_header(self) -> tuple[bytes, bytes]:
        names = ",".join(sorted({a.kind for a in self.shadow}))
        return SHADOW_HEADER, names.encode()


def admit(
    fleet: FleetLimits, allowances: Sequence[Allowance], ticket: Ticket, now: float
) -> Allowance | None:
    """Take from each allowance; the first (enforced) one that refuses is returned, and
    the earlier ones get back what they gave."""
    est = ticket.estimate
    for i, a in enumerate(allowances):
        cost = est if a.tokens else 1.0
        if a.take(cost, now):
            if a.tokens:
                ticket.tokens.append(a)
            continue
        fleet.refused(a)
        if a.shadow:
            ticket.shadow.append(a)
            continue
        for b in allowances[:i]:
            if not (b.shadow and b in ticket.shadow):
                b.put_back(est if b.tokens else 1.0)
                if b.tokens:
                    ticket.tokens.remove(b)
        return a
    return None


def admit_request(
    fleet: FleetLimits,
    rt: Runtime,
    client: ClientRuntime,
    model: str,
    req: dict[str, Any],
    body_len: int,
    ip_limits: tuple[Allowance, ...],
    headers: Headers,
) -> Ticket:
    """Take from every limit but the providers' (routing does those); 429 if one refuses.
    The key's x-ratelimit-* headers (and a shadow hit) are added to `headers`."""
    now = time.monotonic()
    ticket = Ticket(estimate_tokens(req, body_len))
    allowances = client.limits + rt.model_limits.get(model, ()) + rt.global_limits
    if ip_limits:
        allowances = ip_limits + allowances
    refused = admit(fleet, allowances, ticket, now)
    if refused is not None:
        raise rate_limited(refused, allowances, now)
    if client.limits:
        headers += limit_headers(client.limits, now)
    if ticket.shadow:
        headers.append(ticket.shadow_header())
    return ticket


def estimate_tokens(req: dict[str, Any], body_len: int) -> float:
    out = req.get("max_completion_tokens") or req.get("max_tokens")
    completion = out if isinstance(out, int) and out > 0 else 0
    return float(body_len // 4 + completion)


def ask_usage(req: dict[str, Any]) -> None:
    """Have a streamed answer end with its usage (OpenAI's `stream_options`)."""
    opts = req.get("stream_options")
    if not isinstance(opts, dict):
        req["stream_options"] = {"include_usage": True}
    elif opts.get("include_usage") is not True:
        req["stream_options"] = {**opts, "include_usage": True}


def asked_usage(req: dict[str, Any]) -> bool:
    """Did the client itself ask for a streamed answer's usage chunk?"""
    opts = req.get("stream_options")
    return isinstance(opts, dict) and opts.get("include_usage") is True


class _Usage(msgspec.Struct):
    total_tokens: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    input_tokens: int = 0  # Anthropic's names
    output_tokens: int = 0


class _WithUsage(msgspec.Struct):
    usage: _Usage | None = None


class _Event(msgspec.Struct):
    """A streamed chunk: a usage-only one (OpenAI's last) has no choices."""

    usage: _Usage | None = None
    choices: list[Any] | None = None


_decode_usage = msgspec.json.Decoder(_WithUsage).decode
_decode_event = msgspec.json.Decoder(_Event).decode


def _reported(body: bytes) -> _Usage | None:
    if b'"usage"' not in body:
        return None
    try:
        return _decode_usage(body).usage
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


def usage_of(body: bytes) -> int | None:
    """Total tokens reported in an answer (or a stream's event), if any."""
    u = _reported(body)
    if u is None:
        return None
    if u.total_tokens is not None:
        return u.total_tokens
    return u.prompt_tokens + u.completion_tokens + u.input_tokens + u.output_tokens


def tokens_of(body: bytes) -> tuple[int, int]:
    """(prompt, completion) tokens an answer reports; (0, 0) when it reports none."""
    u = _reported(body)
    if u is None:
        return 0, 0
    return u.prompt_tokens + u.input_tokens, u.completion_tokens + u.output_tokens


class UsageScanner:
    """Finds the usage in a stream of server-sent events, chunk by chunk.

    With `strip`, the stream passes through `filter` instead of `feed`: whole events only,
    without the usage-only chunk (the proxy asked the upstream for it; the client did not)."""

    __slots__ = ("_rest", "completion", "prompt", "strip", "used")

    def __init__(self, *, strip: bool = False) -> None:
        self._rest = b""
        self.strip = strip
        self.used: int | None = None
        self.prompt = self.completion = 0

    def feed(self, chunk: bytes) -> None:
        data = self._rest + chunk if self._rest else chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            self._rest = data if len(data) < MAX_EVENT_BYTES else b""
            return
        self._rest = data[end + 2 :]
        done = data[:end]
        if b'"usage"' not in done:
            return
        for event in done.split(b"\n\n"):
            if b'"usage"' in event:
                self._event(event)

    def filter(self, chunk: bytes) -> bytes:
        """What of `chunk` to pass on: the events it completes, the usage-only one dropped."""
        data = self._rest + chunk if self._rest else chunk
        end = data.rfind(b"\n\n")
        if end < 0:
            if len(data) < MAX_EVENT_BYTES:
                self._rest = data
                return b""
            self._rest = b""  # too long to be a usage chunk: pass it on as it comes
            return data
        self._rest = data[end + 2 :]
        done = data[: end + 2]
        if b'"usage"' not in done:
            return done
        kept = [e for e in done[:-2].split(b"\n\n") if b'"usage"' not in e or self._event(e)]
        return b"".join(e + b"\n\n" for e in kept)

    def rest(self) -> bytes:
        """The unfinished tail, at the end of the stream."""
        rest, self._rest = self._rest, b""
        return rest

    def _event(self, event: bytes) -> bool:
        """Read an event's usage; whether to pass it on (False: a usage-only chunk)."""
        for line in event.split(b"\n"):
            if line.startswith(b"data:"):
                try:
                    ev = _decode_event(line[5:].strip())
                except (msgspec.DecodeError, msgspec.ValidationError):
                    return True
                u = ev.usage
                if u is None:
                    return True
                self.prompt = u.prompt_tokens + u.input_tokens
                self.completion = u.completion_tokens + u.output_tokens
                self.used = (
                    u.total_tokens if u.total_tokens is not None else self.prompt + self.completion
                )
                return not self.strip or bool(ev.choices)
        return True


# -- answers ----------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """A reset time as OpenAI writes it: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        return f"{round(seconds, 1):g}s"
    m, s = divmod(math.ceil(seconds), 60)
    return f"{m}m{s}s"


_NAMES = {
    dim: tuple(f"x-ratelimit-{what}-{dim}".encode() for what in ("limit", "remaining", "reset"))
    for dim in ("requests", "tokens")
}


def limit_headers(allowances: Sequence[Allowance], now: float) -> Headers:
    """OpenAI's x-ratelimit-* headers for the first requests and tokens limits given."""
    out: Headers = []
    seen_tokens = seen_requests = False
    for a in allowances:
        if a.tokens:
            if seen_tokens:
                continue
            seen_tokens = True
            limit, remaining, reset = _NAMES["tokens"]
        else:
            if seen_requests:
                continue
            seen_requests = True
            limit, remaining, reset = _NAMES["requests"]
        left = a.remaining(now)
        out.append((limit, a.per_minute_bytes))
        out.append((remaining, b"%d" % left))
        out.append((reset, duration((a.capacity - left) / a.rate_per_s).encode()))
    return out


_KIND_TEXT = {
    "global": "the fleet's global limit",
    "provider": "provider '{}'",
    "key": "key '{}'",
    "model": "model '{}'",
    "ip": "address {}",
    "range": "address range {}",
}


def rate_limited(a: Allowance, related: Sequence[Allowance], now: float) -> ProxyError:
    """A 429 naming the limit `a`, with Retry-After and the x-ratelimit-* headers of `a`
    and of the same scope's other dimension (`related`)."""
    dim = "tokens" if a.tokens else "requests"
    what = _KIND_TEXT[a.kind].format(a.name)
    retry = max(1, math.ceil(a.retry_after_s(now)))
    headers = {"retry-after": str(retry)}
    same_scope = [a, *(b for b in related if b is not a and (b.kind, b.name) == (a.kind, a.name))]
    for k, v in limit_headers(same_scope, now):
        headers[k.decode()] = v.decode()
    if not a.tokens:  # the names the proxy answered before OpenAI's, kept for old clients
        headers["x-ratelimit-limit"] = str(a.per_minute)
        headers["x-ratelimit-remaining"] = str(a.remaining(now))
    param = "ip" if a.kind == "range" else a.kind
    return errors.rate_limited(
        f"rate limit reached for {what}: {a.per_minute} {dim} per minute; retry in {retry}s",
        headers,
        param=param,
    )
