"""Turning untrusted input into a `Document`, reporting every problem at once with its path.

Structural errors come from msgspec (which stops at the first error of a value), so each
top-level section and each list item is converted on its own: one bad provider does not hide
a bad model. Semantic checks (formats, unique names, references that resolve, no fallback
cycles) run on a structurally valid document and also report everything they find.

Replicas run the same checks on every apply, so each one first asks "all fine?" in a single
C-level pass over the whole document and walks item by item, for paths, only when not.
"""

from __future__ import annotations

import ipaddress
import re
import typing
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from itertools import chain
from operator import attrgetter, is_not
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

import msgspec

from configbus.document import (
    PATTERN_HELP,
    Client,
    Document,
    IpRange,
    Model,
    Provider,
    RateLimit,
    pattern_of,
)
from configbus.errors import InvalidDocument, Issue
from configbus.migrations import migrate

# Headers that frame a request: the proxy writes them itself, and a second copy from a
# document would make the request ambiguous to the upstream (request smuggling).
FRAMING_HEADERS = frozenset(
    ("content-length", "transfer-encoding", "connection", "keep-alive", "te", "upgrade")
)
CREDENTIAL_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "api-key", "x-api-key", "x-goog-api-key"}
)
# Query parameters that carry a credential: a key in a URL is stored and shown in plaintext.
CREDENTIAL_PARAMS = frozenset(
    {"key", "api_key", "apikey", "api-key", "x-api-key", "token", "access_token",
     "auth_token", "id_token", "refresh_token", "auth", "authorization", "sig", "signature",
     "secret", "client_secret", "password", "passwd", "pwd", "code", "x-amz-signature",
     "x-amz-credential", "x-amz-security-token", "x-goog-signature", "x-goog-credential"}
)  # fmt: skip
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP token (RFC 9110)
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def _join(prefix: str, suffix: str) -> str:
    if not suffix:
        return prefix
    if suffix.startswith("["):
        return prefix + suffix
    suffix = suffix.lstrip(".")
    return f"{prefix}.{suffix}" if prefix else suffix


def issue_from_msgspec(exc: msgspec.ValidationError | msgspec.DecodeError, prefix: str) -> Issue:
    m = _AT.match(str(exc))
    assert m is not None  # the pattern matches any string
    message = m["msg"].replace("`", "'")
    message = message[0].lower() + message[1:] if message else message
    return Issue(_join(prefix, m["path"] or ""), message)


def _convert_field(value: Any, type_: Any, path: str) -> list[Issue]:
    try:
        msgspec.convert(value, type_, strict=True)
        return []
    except msgspec.ValidationError as exc:
        if isinstance(value, list):
            item_type = getattr(type_, "__args__", (Any,))[0]
            issues = []
            for i, item in enumerate(value):
                try:
                    msgspec.convert(item, item_type, strict=True)
                except msgspec.ValidationError as item_exc:
                    issues.append(issue_from_msgspec(item_exc, f"{path}[{i}]"))
            if issues:
                return issues
        return [issue_from_msgspec(exc, path)]


def structural_issues(data: Any) -> list[Issue]:
    """Every structural problem of `data` as a Document, at item granularity."""
    if not isinstance(data, dict):
        return [Issue("", f"expected an object at the top level, got {type(data).__name__}")]
    fields = {f.encode_name: f for f in msgspec.structs.fields(Document)}
    issues: list[Issue] = []
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            known = ", ".join(sorted(fields))
            issues.append(Issue(str(key), f"unknown field (known fields: {known})"))
            continue
        issues.extend(_convert_field(value, field.type, key))
    return issues


class _FormatCheck(NamedTuple):
    section: str  # a Document field holding a list of items, as encoded
    field: str  # the item's field, as encoded
    items: Callable[[Document], Any]
    get: Callable[[Any], Any]  # item -> str | None
    matches: Callable[[str], object]
    help: str


def _format_checks() -> list[_FormatCheck]:
    # Every patterned field of a section's items, read off the schema
    # (tests/core/test_document.py checks that no patterned field sits elsewhere).
    checks = []
    for section in msgspec.structs.fields(Document):
        if typing.get_origin(section.type) not in (list, tuple):
            continue
        item = typing.get_args(section.type)[0]
        if not (isinstance(item, type) and issubclass(item, msgspec.Struct)):
            continue
        for f in msgspec.structs.fields(item):
            pattern = pattern_of(f.type)
            if pattern is not None:
                matches = re.compile(pattern).fullmatch
                help_ = PATTERN_HELP[pattern]
                checks.append(
                    _FormatCheck(
                        section.encode_name,
                        f.encode_name,
                        attrgetter(section.name),
                        attrgetter(f.name),
                        matches,
                        help_,
                    )
                )
    return checks


FORMAT_CHECKS = _format_checks()
_is_set = partial(is_not, None)  # in C: a Python predicate would cost a call per value


def _format_issues(doc: Document) -> list[Issue]:
    issues = []
    for check in FORMAT_CHECKS:
        items = check.items(doc)
        if not all(map(check.matches, filter(_is_set, map(check.get, items)))):
            issues += _mismatches(check, map(check.get, items))
    return issues


def raw_format_issues(data: Any) -> list[Issue]:
    """The format issues of parsed input that is not a Document yet (a structural error
    elsewhere must not hide them): the same checks, on plain dicts and lists."""
    if not isinstance(data, dict):
        return []
    issues = []
    for check in FORMAT_CHECKS:
        items = data.get(check.section)
        values = (
            item.get(check.field) if isinstance(item, dict) else None
            for item in (items if isinstance(items, list) else ())
        )
        issues += _mismatches(check, values)
    return issues


def _mismatches(check: _FormatCheck, values: Iterable[Any]) -> list[Issue]:
    """An issue for each string value (by item index) that does not match its pattern."""
    return [
        Issue(f"{check.section}[{i}].{check.field}", f"expected {check.help}")
        for i, value in enumerate(values)
        if isinstance(value, str) and not check.matches(value)
    ]


_name, _key_sha256, _models = attrgetter("name"), attrgetter("key_sha256"), attrgetter("models")
_provider, _deployments, _weight = (
    attrgetter("provider"),
    attrgetter("deployments"),
    attrgetter("weight"),
)


def semantic_issues(doc: Document) -> list[Issue]:
    """Checks msgspec does not make: formats, uniqueness, references, cycles."""
    issues = _format_issues(doc)
    provider_names = list(map(_name, doc.providers))
    model_names = list(map(_name, doc.models))
    issues += _unique("providers", provider_names)
    issues += _unique("models", model_names)
    issues += _unique("clients", list(map(_name, doc.clients)))
    issues += _unique("clients", list(map(_key_sha256, doc.clients)), what="key_sha256")
    issues += _unique("teams", [t.name for t in doc.teams])

    providers, models = set(provider_names), set(model_names)
    for i, p in enumerate(doc.providers):
        if p.api_key is not None:
            if p.api_key_env is not None:
                issues.append(
                    Issue(f"providers[{i}]", "set either api_key or api_key_env, not both")
                )
            issues += secret_form_issues(p.api_key, f"providers[{i}].api_key")
        issues += url_credential_issues(p.base_url, f"providers[{i}].base_url")
        if p.type == "azure" or p.api_version is not None:
            issues += _azure_issues(p, f"providers[{i}]")
        for h, v in p.headers.items():
            if not _HEADER_NAME.fullmatch(h):
                issues.append(Issue(f"providers[{i}].headers", f"invalid header name {h!r}"))
            elif _HEADER_VALUE_BAD.search(v):
                issues.append(
                    Issue(f"providers[{i}].headers.{h}", "a control character (CR, LF, NUL)")
                )
            elif h.lower() in FRAMING_HEADERS:
                issues.append(
                    Issue(f"providers[{i}].headers.{h}", "set by the proxy for each request")
                )
            elif h.lower() in CREDENTIAL_HEADERS:
                # Header values are stored and shown in plaintext; keys belong in api_key.
                issues.append(
                    Issue(
                        f"providers[{i}].headers.{h}",
                        "credentials go in api_key (encrypted) or api_key_env, not in headers",
                    )
                )

    refs = map(_provider, chain.from_iterable(map(_deployments, doc.models)))
    if not providers.issuperset(refs):
        issues += _unknown_providers(doc, providers)
    for i, m in enumerate(doc.models):
        if m.strategy == "weighted" and not any(map(_weight, m.deployments)):
            issues.append(
                Issue(f"models[{i}].deployments", "at least one deployment needs a weight above 0")
            )
        fb = m.fallbacks
        if fb and (m.name in fb or len(set(fb)) < len(fb) or not models.issuperset(fb)):
            issues += _fallback_issues(i, m.name, fb, models)
    issues += _fallback_cycles(doc)
    if not all(m.purpose == "chat" for m in doc.models):
        issues += _purpose_issues(doc)

    allowed = models | {"*"}
    if not allowed.issuperset(chain.from_iterable(map(_models, doc.clients))):
        for i, c in enumerate(doc.clients):
            for j, name in enumerate(c.models):
                if name not in allowed:
                    issues.append(Issue(f"clients[{i}].models[{j}]", f"unknown model {name!r}"))
    issues += _limit_issues(doc)
    issues += _ip_issues(doc)
    return issues


def rate_limits_of(doc: Document) -> Iterable[tuple[str, RateLimit | None]]:
    """Every `rate_limit` of the document with its path."""
    rl = doc.rate_limits
    yield "rate_limits.global", rl.global_
    yield "rate_limits.client_default", rl.client_default
    yield "rate_limits.provider_default", rl.provider_default
    yield "rate_limits.model_default", rl.model_default
    yield "ip_rules.rate_limit", doc.ip_rules.rate_limit
    sections: list[tuple[str, Sequence[Provider | Model | Client | IpRange]]] = [
        ("providers", doc.providers),
        ("models", doc.models),
        ("clients", doc.clients),
        ("ip_rules.ranges", doc.ip_rules.ranges),
    ]
    for section, items in sections:
        for i, item in enumerate(items):
            yield f"{section}[{i}].rate_limit", item.rate_limit


def _limit_issues(doc: Document) -> list[Issue]:
    return [
        Issue(path, "set rpm, tpm or both")
        for path, limit in rate_limits_of(doc)
        if limit is not None and limit.rpm is None and limit.tpm is None
    ]


def _ip_issues(doc: Document) -> list[Issue]:
    rules = doc.ip_rules
    issues = []
    lists = [
        ("ip_rules.allow", rules.allow),
        ("ip_rules.deny", rules.deny),
        ("ip_rules.trusted_proxies", rules.trusted_proxies),
        ("ip_rules.ranges", tuple(r.cidr for r in rules.ranges)),
    ]
    for path, cidrs in lists:
        suffix = ".cidr" if path == "ip_rules.ranges" else ""
        for i, cidr in enumerate(cidrs):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                issues.append(
                    Issue(
                        f"{path}[{i}]{suffix}",
                        f"expected an IPv4 or IPv6 address or CIDR, got {cidr!r}",
                    )
                )
    return issues


def url_credential_issues(url: str, path: str) -> list[Issue]:
    """A URL carrying a credential (`user:key@`, `?key=`): refused like a credential header.
    The message names the place, never the value."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []  # the format check reports a URL it cannot read
    issues = []
    if "@" in parts.netloc:
        issues.append(
            Issue(path, "credentials go in api_key (encrypted) or api_key_env, not in the URL "
                  "(user:password@)")
        )  # fmt: skip
    names = sorted(
        {n for n, _ in parse_qsl(parts.query, keep_blank_values=True)
         if n.lower() in CREDENTIAL_PARAMS}
    )  # fmt: skip
    if names:
        issues.append(
            Issue(path, f"credentials go in api_key (encrypted) or api_key_env, not in the "
                  f"URL's query (parameter {', '.join(repr(n) for n in names)})")
        )  # fmt: skip
    return issues


_API_VERSION = re.compile(r"[A-Za-z0-9._-]+")


def _azure_issues(p: Provider, path: str) -> list[Issue]:
    if p.type != "azure":
        return [Issue(f"{path}.api_version", "only an azure provider takes api_version")]
    if p.api_version is None:
        return [
            Issue(f"{path}.api_version", "required for an azure provider (Azure OpenAI's "
                  "api-version, e.g. '2024-10-21')")
        ]  # fmt: skip
    issues = []
    if not _API_VERSION.fullmatch(p.api_version):
        issues.append(
            Issue(f"{path}.api_version", "expected letters, digits and . _ - (e.g. '2024-10-21')")
        )
    if "?" in p.base_url or "#" in p.base_url:
        issues.append(
            Issue(f"{path}.base_url", "an azure base_url is the resource URL, without a query "
                  "(api-version goes in api_version)")
        )  # fmt: skip
    return issues


def _purpose_issues(doc: Document) -> list[Issue]:
    """An embeddings model has no Anthropic deployment; a fallback serves the same purpose."""
    anthropic = {p.name for p in doc.providers if p.type == "anthropic"}
    purpose = {m.name: m.purpose for m in doc.models}
    issues = []
    for i, m in enumerate(doc.models):
        if m.purpose == "embeddings":
            for j, d in enumerate(m.deployments):
                if d.provider in anthropic:
                    issues.append(
                        Issue(f"models[{i}].deployments[{j}].provider", f"provider "
                              f"{d.provider!r} is anthropic: the Messages API has no embeddings")
                    )  # fmt: skip
        for j, name in enumerate(m.fallbacks):
            other = purpose.get(name)
            if other is not None and other != m.purpose:
                issues.append(
                    Issue(f"models[{i}].fallbacks[{j}]", f"model {name!r} serves {other}, "
                          f"not {m.purpose} like {m.name!r}")
                )  # fmt: skip
    return issues


def _unknown_providers(doc: Document, providers: set[str]) -> list[Issue]:
    return [
        Issue(f"models[{i}].deployments[{j}].provider", f"unknown provider {d.provider!r}")
        for i, m in enumerate(doc.models)
        for j, d in enumerate(m.deployments)
        if d.provider not in providers
    ]


def _fallback_issues(i: int, name: str, fallbacks: Sequence[str], models: set[str]) -> list[Issue]:
    issues = []
    seen: set[str] = set()
    for j, f in enumerate(fallbacks):
        if f == name:
            issues.append(
                Issue(f"models[{i}].fallbacks[{j}]", "a model cannot fall back to itself")
            )
        elif f not in models:
            issues.append(Issue(f"models[{i}].fallbacks[{j}]", f"unknown model {f!r}"))
        elif f in seen:
            issues.append(Issue(f"models[{i}].fallbacks[{j}]", f"duplicate fallback {f!r}"))
        seen.add(f)
    return issues


def secret_form_issues(secret: Any, path: str) -> list[Issue]:
    forms = [f for f in ("secret", "encrypted", "masked") if getattr(secret, f) is not None]
    if len(forms) != 1:
        return [Issue(path, "set exactly one of 'secret', 'encrypted' or 'masked'")]
    if forms[0] == "secret" and not secret.secret:
        return [Issue(f"{path}.secret", "must not be empty")]
    return []


def _unique(section: str, names: list[str], what: str = "name") -> list[Issue]:
    if len(set(names)) == len(names):
        return []
    first: dict[str, int] = {}
    issues = []
    for i, name in enumerate(names):
        if name in first:
            issues.append(
                Issue(
                    f"{section}[{i}].{what}",
                    f"duplicate {what} {name!r} (first at {section}[{first[name]}])",
                )
            )
        else:
            first[name] = i
    return issues


def _fallback_cycles(doc: Document) -> list[Issue]:
    """Each fallback cycle once, in linear time (three-colour depth-first search)."""
    # Only models with fallbacks can be on a cycle; the rest are leaves.
    graph = {m.name: m.fallbacks for m in doc.models if m.fallbacks}
    done: set[str] = set()
    issues = []
    for root in graph:
        if root in done:
            continue
        path: list[str] = [root]
        on_path = {root}
        stack = [iter(graph[root])]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                node = path.pop()
                on_path.discard(node)
                done.add(node)
            elif nxt in on_path:
                if nxt != path[-1]:  # a self-reference is reported on its own
                    cycle = [*path[path.index(nxt) :], nxt]
                    index = next(i for i, m in enumerate(doc.models) if m.name == cycle[0])
                    issues.append(
                        Issue(f"models[{index}].fallbacks", "fallback cycle: " + " -> ".join(cycle))
                    )
            elif nxt in graph and nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                stack.append(iter(graph[nxt]))
    return issues


def to_document(data: Any) -> Document:
    """Convert a parsed JSON/YAML/TOML value into a checked Document, or raise InvalidDocument.
    A document of an older schema is migrated first (`configbus.migrations`)."""
    data, _ = migrate(data)
    try:
        doc = msgspec.convert(data, Document, strict=True)
    except msgspec.ValidationError:
        issues = structural_issues(data) + raw_format_issues(data)
        raise InvalidDocument(issues or [Issue("", "invalid document")]) from None
    issues = semantic_issues(doc)
    if issues:
        raise InvalidDocument(issues)
    return doc
