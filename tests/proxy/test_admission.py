"""What admission answers: estimates, usage found in answers and streams, 429s and headers."""

from __future__ import annotations

import fakeredis

from configbus.document import RateLimit
from proxy.admission import (
    UsageScanner,
    ask_usage,
    duration,
    estimate_tokens,
    limit_headers,
    rate_limited,
    usage_of,
)
from proxy.limits import FleetLimits


def test_estimate_is_the_prompt_length_over_four_plus_max_tokens() -> None:
    assert estimate_tokens({"max_tokens": 100}, 400) == 200
    assert estimate_tokens({"max_completion_tokens": 7, "max_tokens": 100}, 40) == 17
    assert estimate_tokens({}, 41) == 10


def test_stream_usage_is_asked_for_without_dropping_the_clients_options() -> None:
    req: dict[str, object] = {"stream_options": {"other": 1}}
    ask_usage(req)
    assert req["stream_options"] == {"other": 1, "include_usage": True}


def test_usage_of_an_answer() -> None:
    assert usage_of(b'{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":4}}') == 7
    assert usage_of(b'{"usage":{"total_tokens":11,"prompt_tokens":1}}') == 11
    assert usage_of(b'{"id":"x"}') is None
    assert usage_of(b'{"usage":null}') is None


def test_usage_found_in_a_stream_split_anywhere() -> None:
    stream = (
        b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":9,'
        b'"total_tokens":14}}\n\ndata: [DONE]\n\n'
    )
    for cut in range(1, len(stream)):
        s = UsageScanner()
        s.feed(stream[:cut])
        s.feed(stream[cut:])
        assert s.used == 14, cut


def test_duration_reads_like_openais() -> None:
    assert [duration(x) for x in (0.02, 1.5, 6.0, 360.0)] == ["20ms", "1.5s", "6s", "6m0s"]


def test_429_names_the_limit_with_openais_headers() -> None:
    fleet = FleetLimits(fakeredis.FakeAsyncRedis(), "ns", "r1")
    req, tok = fleet.allowances_for("key", "team-a", RateLimit(rpm=300, tpm=9000, burst=30))
    err = rate_limited(tok, (req, tok), 0.0)
    assert err.status == 429 and err.param == "key"
    assert "key 'team-a'" in err.message and "9000 tokens per minute" in err.message
    assert err.headers is not None
    assert err.headers["x-ratelimit-limit-tokens"] == "9000"
    assert err.headers["x-ratelimit-limit-requests"] == "300"
    assert {"x-ratelimit-remaining-requests", "x-ratelimit-reset-tokens"} <= set(err.headers)
    assert int(err.headers["retry-after"]) >= 1
    names = [k for k, _ in limit_headers((req, tok), 0.0)]
    assert names == [
        b"x-ratelimit-limit-requests",
        b"x-ratelimit-remaining-requests",
        b"x-ratelimit-reset-requests",
        b"x-ratelimit-limit-tokens",
        b"x-ratelimit-remaining-tokens",
        b"x-ratelimit-reset-tokens",
    ]
