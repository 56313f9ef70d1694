"""The LLM proxy config document: one strict, frozen msgspec schema.

Field names here are the public format. Every struct forbids unknown fields (a typo is an
error with its path, never silently ignored), is frozen (a snapshot is never mutated after
it is built) and keyword-only. `omit_defaults` makes the canonical encoding drop values equal
to their default, so two documents that mean the same thing encode to the same bytes.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
ENV_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
URL_PATTERN = r"^https?://[^\s/?#]+[^\s]*$"

# What each pattern means, for error messages a person can act on.
PATTERN_HELP = {
    NAME_PATTERN: "a name of letters, digits and . _ : / @ + -, starting with a letter or digit",
    SHA256_PATTERN: "64 lowercase hex digits (sha256 of the client's key)",
    ENV_PATTERN: "an environment variable name",
    URL_PATTERN: "an http:// or https:// URL",
}

# Patterns sit in the JSON schema, not in msgspec's checks: msgspec would call the regex once
# per value, two thirds of a replica's decode time. `validation` matches each pattern against
# all of a document's values in one pass and reports a mismatch with its path.
Name = Annotated[
    str, Meta(min_length=1, max_length=128, extra_json_schema={"pattern": NAME_PATTERN})
]
# A reference to a name: no pattern of its own, since it must equal a `Name` (semantic
# checks report one that does not).
NameRef = Annotated[str, Meta(min_length=1, max_length=128)]
PositiveSeconds = Annotated[float, Meta(gt=0, le=3600)]
Rpm = Annotated[int, Meta(ge=1, le=10_000_000, description="requests per minute")]
Tpm = Annotated[int, Meta(ge=1, le=10_000_000_000, description="tokens per minute")]
Burst = Annotated[int, Meta(ge=1, le=10_000_000_000)]
# An IPv4 or IPv6 address or network (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`); the
# semantic checks parse it, since a pattern cannot tell a valid network from a near miss.
Cidr = Annotated[str, Meta(min_length=2, max_length=64)]
Sha256Hex = Annotated[str, Meta(extra_json_schema={"pattern": SHA256_PATTERN})]
EnvVarName = Annotated[str, Meta(extra_json_schema={"pattern": ENV_PATTERN})]
HttpUrl = Annotated[str, Meta(max_length=2048, extra_json_schema={"pattern": URL_PATTERN})]


def pattern_of(tp: Any) -> str | None:
    """The format pattern of a field type (`X | None` included), if it has one."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else None
    if typing.get_origin(tp) is not typing.Annotated:
        return None
    for meta in typing.get_args(tp)[1:]:
        if isinstance(meta, Meta) and meta.extra_json_schema:
            return meta.extra_json_schema.get("pattern")
    return None


class Base(
    msgspec.Struct,
    forbid_unknown_fields=True,
    frozen=True,
    kw_only=True,
    omit_defaults=True,
    gc=False,
):
    """Strict base: unknown fields are errors, values are immutable, defaults are omitted.
    A document is a tree (no reference cycles), so the garbage collector need not track it:
    decoding is faster and a large document does not lengthen GC pauses on the hot path."""


class Secret(Base, frozen=True, kw_only=True):
    """A secret value in one of three forms; exactly one field is set.

    - `secret`: plaintext, accepted on input only; encrypted before it reaches Redis.
    - `encrypted`: a Fernet token, the stored form; only replicas decrypt it.
    - `masked`: what the admin API shows; sending it back unchanged keeps the stored secret.
    """

    secret: str | None = None
    encrypted: str | None = None
    masked: str | None = None

    def __repr__(self) -> str:
        # Never let a plaintext secret reach a log line or a traceback.
        if self.secret is not None:
            return "Secret(secret='***')"
        if self.encrypted is not None:
            return "Secret(encrypted=...)"
        return f"Secret(masked={self.masked!r})"

    __str__ = __repr__


class RateLimit(Base, frozen=True, kw_only=True):
    """A token bucket (or two: requests and tokens) shared by every replica of the fleet.

    `burst` is the bucket's size: in requests when `rpm` is set (the token bucket then
    holds the same share of a minute, `tpm * burst / rpm`), in tokens when only `tpm` is.
    Unset, a bucket holds one minute's worth. A `shadow` limit is counted and reported but
    never refuses: the way to roll a new limit out safely.
    """

    rpm: Rpm | None = None
    tpm: Tpm | None = None
    burst: Burst | None = None
    shadow: bool = False

    def capacity(self, per_minute: int, *, tokens: bool) -> float:
        """The bucket size of the requests (`tokens=False`) or the tokens dimension."""
        if self.burst is None:
            return float(per_minute)
        if tokens and self.rpm is not None:
            return max(1.0, per_minute * self.burst / self.rpm)
        return float(self.burst)


class CircuitBreaker(Base, frozen=True, kw_only=True):
    failure_threshold: Annotated[int, Meta(ge=1, le=1000)] = 5
    recovery_timeout_s: PositiveSeconds = 30.0
    half_open_max_calls: Annotated[int, Meta(ge=1, le=100)] = 1


class Pool(Base, frozen=True, kw_only=True):
    max_connections: Annotated[int, Meta(ge=1, le=10_000)] = 100
    keepalive_timeout_s: PositiveSeconds = 30.0


# Azure OpenAI's `api-version` query parameter: a date, optionally `-preview`.
ApiVersion = Annotated[str, Meta(min_length=1, max_length=64)]


class Provider(Base, frozen=True, kw_only=True):
    name: Name
    # openai: any OpenAI-compatible API; anthropic: the Messages API; azure: Azure OpenAI
    # (`base_url` is the resource URL, each deployment's `model` an Azure deployment name).
    type: Literal["openai", "anthropic", "azure"] = "openai"
    base_url: HttpUrl
    # Azure only (and required there): the `api-version` query parameter.
    api_version: ApiVersion | None = None
    api_key: Secret | None = None
    api_key_env: EnvVarName | None = None
    timeout_s: PositiveSeconds = 30.0
    connect_timeout_s: PositiveSeconds = 5.0
    max_retries: Annotated[int, Meta(ge=0, le=10)] = 2
    headers: dict[str, str] = {}
    rate_limit: RateLimit | None = None
    # None means: use the document's `circuit_breaker` defaults.
    circuit_breaker: CircuitBreaker | None = None
    pool: Pool = Pool()
    enabled: bool = True


UsdPerMillion = Annotated[float, Meta(ge=0, le=1e6, description="US dollars per million tokens")]


class Price(Base, frozen=True, kw_only=True):
    """What a deployment's tokens cost, for usage cost and budgets."""

    input_per_million: UsdPerMillion = 0.0
    output_per_million: UsdPerMillion = 0.0


class Deployment(Base, frozen=True, kw_only=True):
    provider: NameRef
    model: Annotated[str, Meta(min_length=1, max_length=256)]
    weight: Annotated[int, Meta(ge=0, le=10_000)] = 1
    price: Price | None = None


class ResponseCache(Base, frozen=True, kw_only=True):
    """Exact-match answers kept fleet-wide in Redis (see the proxy's `cache` module)."""

    ttl_s: Annotated[int, Meta(ge=1, le=30 * 86400)] = 300
    max_entry_bytes: Annotated[int, Meta(ge=1, le=16 * 1024 * 1024)] = 262_144


class Model(Base, frozen=True, kw_only=True):
    name: Name
    # What the model serves: `/v1/chat/completions` or `/v1/embeddings`.
    purpose: Literal["chat", "embeddings"] = "chat"
    deployments: Annotated[tuple[Deployment, ...], Meta(min_length=1)]
    # weighted: pick by weight, then try the others; ordered: always in the listed order.
    strategy: Literal["weighted", "ordered"] = "weighted"
    fallbacks: tuple[NameRef, ...] = ()
    params: dict[str, Any] = {}
    # Fleet-wide, over every client of this public model.
    rate_limit: RateLimit | None = None
    # None: answers are not cached.
    cache: ResponseCache | None = None


class Budget(Base, frozen=True, kw_only=True):
    """A spend limit in US dollars over a period: a UTC calendar day or month, or in total.
    Spend is what the replicas counted from the upstreams' reported usage and the prices of
    the deployments that served it."""

    limit_usd: Annotated[float, Meta(gt=0, le=1e12)]
    period: Literal["day", "month", "total"] = "month"


class Team(Base, frozen=True, kw_only=True):
    """A group of client keys (from the key collection) with a budget they share."""

    name: Name
    budget: Budget | None = None


class Client(Base, frozen=True, kw_only=True):
    name: Name
    key_sha256: Sha256Hex
    models: tuple[str, ...] = msgspec.field(default_factory=lambda: ("*",))
    rate_limit: RateLimit | None = None
    enabled: bool = True


class RateLimits(Base, frozen=True, kw_only=True):
    # The whole fleet's traffic, every client and model together.
    global_: RateLimit | None = msgspec.field(default=None, name="global")
    # Applied to clients / providers / models that set no `rate_limit` of their own.
    client_default: RateLimit | None = None
    provider_default: RateLimit | None = None
    model_default: RateLimit | None = None


class IpRange(Base, frozen=True, kw_only=True):
    cidr: Cidr
    rate_limit: RateLimit


class IpRules(Base, frozen=True, kw_only=True):
    """Who may call, by address. A request's address is its socket's, unless the socket is
    a trusted proxy: then the rightmost `X-Forwarded-For` entry that is not one."""

    allow: tuple[Cidr, ...] = ()
    deny: tuple[Cidr, ...] = ()
    trusted_proxies: tuple[Cidr, ...] = ()
    # Each address on its own bucket.
    rate_limit: RateLimit | None = None
    # Each range on one bucket shared by its addresses.
    ranges: tuple[IpRange, ...] = ()


class Logging(Base, frozen=True, kw_only=True):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"


# The schema the code reads; older documents are migrated to it (`configbus.migrations`).
# A document without `schema_version` is schema 1, the format before documents carried it,
# which is also the field's default: so the canonical bytes (defaults omitted) of every
# schema-1 document stay what they were, and a later schema is always stored explicitly.
CURRENT_SCHEMA = 1
UNVERSIONED_SCHEMA = 1


class Document(Base, frozen=True, kw_only=True):
    """The whole config of one namespace."""

    schema_version: Annotated[int, Meta(ge=1)] = UNVERSIONED_SCHEMA
    providers: tuple[Provider, ...] = ()
    models: tuple[Model, ...] = ()
    clients: tuple[Client, ...] = ()
    teams: tuple[Team, ...] = ()
    rate_limits: RateLimits = RateLimits()
    ip_rules: IpRules = IpRules()
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    logging: Logging = Logging()
    metadata: dict[str, str | int | float | bool | None] = {}

    def provider(self, name: str) -> Provider | None:
        return next((p for p in self.providers if p.name == name), None)

    def model(self, name: str) -> Model | None:
        return next((m for m in self.models if m.name == name), None)
