"""The configuration reference, generated: the document's from the schema (README.md), the
environment's from the settings registry, configbus.variables (README.md and docs/deploy.md).

    python -m configbus.tooling.reference            # print the document reference (markdown)
    python -m configbus.tooling.reference --write    # rewrite every copy between its markers

A test fails when a copy differs from what the code says, and when a field has no
description here, so the reference cannot drift from the code.
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any

import msgspec

from configbus import document as d
from configbus import variables
from configbus.document import PATTERN_HELP, pattern_of

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- reference:start -->", "<!-- reference:end -->"
ENV_START, ENV_END = "<!-- variables:start -->", "<!-- variables:end -->"

SECTIONS: list[type[msgspec.Struct]] = [
    d.Document, d.Provider, d.Secret, d.Pool, d.RateLimit, d.CircuitBreaker,
    d.Model, d.Deployment, d.Price, d.ResponseCache, d.Client, d.Team, d.Budget, d.RateLimits, d.IpRules, d.IpRange, d.Logging,
]  # fmt: skip

DESCRIPTIONS: dict[str, str] = {
    "Document.schema_version": "The document format's version; an older one is migrated on "
    "input and on read (`configbus migrate FILE` shows the result), a newer one refused.",
    "Document.providers": "Upstream LLM APIs the replicas call.",
    "Document.models": "Public model names clients ask for, and where they go.",
    "Document.clients": "Who may call the replicas: bearer keys stored as sha256 hashes.",
    "Document.teams": "Teams of client keys (from the key collection) and the budget each "
    "team's keys share.",
    "Document.rate_limits": "The fleet's global limit, and defaults for clients, providers "
    "and models without a `rate_limit`.",
    "Document.ip_rules": "Allow and deny lists by address, per-address and per-range limits, "
    "and the proxies whose `X-Forwarded-For` is believed.",
    "Document.circuit_breaker": "Breaker settings for providers without their own.",
    "Document.logging": "Replica log level, applied live on every replica.",
    "Document.metadata": "Free key/value notes (owner, ticket...). Not interpreted.",
    "Provider.name": "Unique name, referenced by `models[].deployments[].provider`.",
    "Provider.type": "`openai`: any OpenAI-compatible API (OpenAI, OpenRouter, vLLM, Ollama, "
    "llama.cpp, Together, Groq, xAI...). `anthropic`: the Messages API. `azure`: Azure "
    "OpenAI (`base_url` is the resource URL, each deployment's `model` the Azure deployment "
    "name, the key goes in the `api-key` header).",
    "Provider.api_version": "Azure only, and required there: the `api-version` query "
    "parameter, e.g. `2024-10-21`.",
    "Provider.base_url": "API root, e.g. `https://api.openai.com/v1`.",
    "Provider.api_key": "The upstream key as a secret: encrypted before it reaches Redis.",
    "Provider.api_key_env": "Or: the name of an environment variable of the replica holding it.",
    "Provider.timeout_s": "Whole-request timeout (first byte for streams).",
    "Provider.connect_timeout_s": "TCP + TLS connect timeout.",
    "Provider.max_retries": "Retries on connect errors, timeouts, 429 and 5xx "
    "(never after a stream started).",
    "Provider.headers": "Extra HTTP headers sent upstream; stored in plaintext, so credential "
    "headers (Authorization, api-key, x-api-key...) are refused: use `api_key`. `Host` names a "
    "virtual host; framing headers (Content-Length, Transfer-Encoding, Connection, Keep-Alive, "
    "TE, Upgrade) and values with control characters are refused.",
    "Provider.rate_limit": "What the whole fleet sends to the provider (a deployment whose "
    "provider is at its limit is skipped, as if it were down).",
    "Provider.circuit_breaker": "Overrides the document's `circuit_breaker`.",
    "Provider.pool": "Connection pool of this provider (kept across reloads while unchanged).",
    "Provider.enabled": "`false` takes the provider out of routing without deleting it.",
    "Secret.secret": "Plaintext; accepted on input only.",
    "Secret.encrypted": "A Fernet token: the stored form.",
    "Secret.masked": "What the admin API shows; send it back unchanged to keep the secret.",
    "Pool.max_connections": "Open connections to the provider at most.",
    "Pool.keepalive_timeout_s": "Idle connections close after this long.",
    "RateLimit.rpm": "Requests per minute, fleet-wide (a token bucket refilled at this rate).",
    "RateLimit.tpm": "Tokens (prompt + completion) per minute, fleet-wide: admitted on an "
    "estimate, corrected with the upstream's reported usage when the answer ends.",
    "RateLimit.burst": "Bucket size: requests when `rpm` is set (the token bucket then holds "
    "the same share of a minute), tokens when only `tpm` is. Unset: one minute's worth.",
    "RateLimit.shadow": "`true`: counted and reported (metrics, status, the "
    "`x-configbus-shadow-limited` header) but never refuses.",
    "CircuitBreaker.failure_threshold": "Consecutive failures that open the breaker.",
    "CircuitBreaker.recovery_timeout_s": "Time open before half-open probes are let through.",
    "CircuitBreaker.half_open_max_calls": "Probes allowed at once while half-open.",
    "Model.name": "The name clients put in `model`.",
    "Model.deployments": "Where the model runs (at least one).",
    "Model.strategy": "`weighted`: pick by weight, then try the others; "
    "`ordered`: always in the listed order.",
    "Model.fallbacks": "Other public model names, tried in order when every deployment fails.",
    "Model.params": "Default request parameters, under the request's own values.",
    "Model.rate_limit": "Fleet-wide, over every client asking for this model.",
    "Model.purpose": "`chat` (`/v1/chat/completions`) or `embeddings` (`/v1/embeddings`); "
    "asked on the other endpoint it answers 400. Fallbacks serve the same purpose.",
    "Model.cache": "Exact-match response cache, fleet-wide in Redis; unset: no cache. A change "
    "of the model's routing misses the old entries.",
    "ResponseCache.ttl_s": "How long an answer is kept, in seconds.",
    "ResponseCache.max_entry_bytes": "Answers larger than this are not kept.",
    "Deployment.provider": "A `providers[].name`.",
    "Deployment.model": "The model name sent to that provider.",
    "Deployment.weight": "Share of traffic under `weighted` (0 drains it).",
    "Deployment.price": "What this deployment's tokens cost: usage cost and budgets.",
    "Price.input_per_million": "US dollars per million prompt tokens.",
    "Price.output_per_million": "US dollars per million completion tokens.",
    "Team.name": "The name client keys give as their `team`.",
    "Team.budget": "A spend limit shared by every key of the team.",
    "Budget.limit_usd": "The spend limit in US dollars.",
    "Budget.period": "`day` or `month` (UTC calendar), or `total`.",
    "Client.name": "Unique name, shown in logs and metrics.",
    "Client.key_sha256": "sha256 (hex) of the client's bearer key; the key itself is never stored.",
    "Client.models": "Public model names this client may use; `*` for all.",
    "Client.rate_limit": "This key's limit across the whole fleet.",
    "Client.enabled": "`false` makes the key answer 401 everywhere.",
    "RateLimits.global": "The whole fleet's traffic, every client and model together.",
    "RateLimits.client_default": "For clients without `rate_limit` (each on its own bucket).",
    "RateLimits.provider_default": "For providers without `rate_limit`.",
    "RateLimits.model_default": "For models without `rate_limit`.",
    "IpRules.allow": "Addresses or CIDRs (IPv4, IPv6) allowed; empty allows all. Others get 403.",
    "IpRules.deny": "Addresses or CIDRs refused with 403 (checked before `allow`).",
    "IpRules.trusted_proxies": "Proxies whose `X-Forwarded-For` is believed; from any other "
    "peer the header is ignored and the socket address is used.",
    "IpRules.rate_limit": "A limit for each client address on its own.",
    "IpRules.ranges": "Limits shared by every address of a CIDR range.",
    "IpRange.cidr": "An IPv4 or IPv6 CIDR.",
    "IpRange.rate_limit": "The range's shared limit.",
    "Logging.level": "DEBUG, INFO, WARNING, ERROR or CRITICAL.",
}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        base, *metas = typing.get_args(tp)
        name = _type_name(base)
        for meta in metas:
            if isinstance(meta, msgspec.Meta):
                bounds = [
                    f"{op} {getattr(meta, attr)}"
                    for attr, op in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))
                    if getattr(meta, attr) is not None
                ]
                if meta.min_length:
                    bounds.append(f"at least {meta.min_length}")
                if bounds:
                    name += f" ({', '.join(bounds)})"
        pattern = pattern_of(tp)
        if pattern in PATTERN_HELP:
            name += f": {PATTERN_HELP[pattern]}"
        return name
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " \\| ".join(_type_name(a) for a in args)
    if origin in (list, tuple):  # tuple[X, ...]: a JSON list, immutable once decoded
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"map {_type_name(k)} → {_type_name(v)}"
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return f"[{tp.__name__}](#{tp.__name__.lower()})"
    if tp is typing.Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _default(f: msgspec.structs.FieldInfo) -> str:
    if f.required:
        return "required"
    value = f.default_factory() if f.default is msgspec.NODEFAULT else f.default
    if value is None:
        return "—"
    if isinstance(value, msgspec.Struct):
        return "defaults"
    return f"`{msgspec.json.encode(value).decode()}`"


def missing_descriptions() -> list[str]:
    return [
        f"{s.__name__}.{f.encode_name}"
        for s in SECTIONS
        for f in msgspec.structs.fields(s)
        if f"{s.__name__}.{f.encode_name}" not in DESCRIPTIONS
    ]


def render() -> str:
    out = []
    for struct in SECTIONS:
        out.append(f"#### {struct.__name__}\n")
        out.append("| field | type | default | meaning |\n|---|---|---|---|")
        for f in msgspec.structs.fields(struct):
            key = f"{struct.__name__}.{f.encode_name}"
            out.append(
                f"| `{f.encode_name}` | {_type_name(f.type)} | {_default(f)} | "
                f"{DESCRIPTIONS.get(key, '')} |"
            )
        out.append("")
    return "\n".join(out)


def _env_default(var: variables.Variable[Any]) -> str:
    if var.shown_default:
        return var.shown_default
    value = var.default
    if value in (None, "", ()):
        return "—"
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def _env_meaning(var: variables.Variable[Any]) -> str:
    if not var.required:
        return var.meaning
    who = ", ".join(c for c in variables.COMMANDS if c in var.required)
    alt = f" (or `{var.instead}`)" if var.instead else ""
    return f"{var.meaning} **Required**{alt} by {who}."


def render_variables() -> str:
    """The table of every environment variable, from configbus.variables."""
    out = ["| variable | read by | default | value | meaning |", "|---|---|---|---|---|"]
    for var in variables.VARIABLES:
        who = ", ".join(c for c in variables.COMMANDS if c in var.commands)
        out.append(
            f"| `{var.name}` | {who} | {_env_default(var)} | {var.reader.kind} | "
            f"{_env_meaning(var)} |"
        )
    for command, what in variables.DOCUMENT_NAMED.items():
        out.append(f"\n`{command}` also reads the variable named by {what}.")
    return "\n".join(out)


# File → the (start, end, render) sections generated in it.
TARGETS: dict[Path, list[tuple[str, str, Any]]] = {
    ROOT / "README.md": [(START, END, render), (ENV_START, ENV_END, render_variables)],
    ROOT / "docs" / "deploy.md": [(ENV_START, ENV_END, render_variables)],
}


def section(text: str, start: str = START, end: str = END) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def splice(text: str, start: str = START, end: str = END, body: str | None = None) -> str:
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{render() if body is None else body}\n{end}{tail}"


def main() -> int:
    if "--write" in sys.argv:
        for path, sections in TARGETS.items():
            text = path.read_text()
            for start, end, make in sections:
                text = splice(text, start, end, make())
            path.write_text(text)
    else:
        print(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
