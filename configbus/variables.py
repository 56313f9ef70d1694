"""Every environment variable a configbus process reads, declared once.

A `Variable` is a name, a default, a meaning, a `Reader` (how its text becomes a value and
which values are allowed) and the commands that read it. The settings objects
(`BusSettings`, the admin's and the proxy's) read the environment only through these
declarations, and only the variables that list their command; docs/deploy.md's table and the
deployment checks (tests/deploy) are derived from `VARIABLES`. So a variable cannot exist in
the code and not here, nor be set on a container whose command ignores it.

Commands: `admin` and `proxy` (the services), `client` (the admin client commands:
publish, get, status...), `up` (the local fleet).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from configbus.durability import DEFAULT_ACK_TIMEOUT_MS
from configbus.names import DEFAULT_NAMESPACE
from configbus.registry import (
    BYTES,
    COMMANDS,
    COUNT,
    FERNET_KEYS,
    LOG_FORMATS,
    NAMESPACE_NAME,
    PATH,
    REDIS,
    SECONDS,
    TEXT,
    URL,
    Command,
    Reader,
    Variable,
    at_least_one,
    at_least_zero,
    integer,
    redis_urls,
)
from configbus.rollout import parse_labels
from configbus.store import DEFAULT_INLINE_MAX_BYTES, DEFAULT_RETENTION

__all__ = [
    "ADMIN_BREAKER_FAILURES",
    "ADMIN_BREAKER_RESET_S",
    "ADMIN_HINT_MAX_BYTES",
    "ADMIN_HISTORY_RETENTION",
    "ADMIN_MAX_BODY_BYTES",
    "ADMIN_MAX_IMPORT_BYTES",
    "ADMIN_MIN_REPLICAS_TO_ACK",
    "ADMIN_PUBLISH_LIMIT",
    "ADMIN_PUBLISH_WINDOW_S",
    "ADMIN_REDIS_TIMEOUT_S",
    "ADMIN_REPLICA_ACK_TIMEOUT_S",
    "ADMIN_TOKEN",
    "ADMIN_TOKENS",
    "ADMIN_TOKENS_FILE",
    "ADMIN_URL",
    "COMMANDS",
    "DOCUMENT_NAMED",
    "HEARTBEAT_INTERVAL_S",
    "LOG_FORMAT",
    "NAMESPACE",
    "PROXY_GRACEFUL_TIMEOUT_S",
    "PROXY_MAX_BODY_BYTES",
    "RECONCILE_INTERVAL_S",
    "REDIS_READ_URL",
    "REDIS_URL",
    "REPLICA_ID",
    "REPLICA_LABELS",
    "SECRET_KEYS",
    "SNAPSHOT_PATH",
    "USAGE_FLUSH_S",
    "VARIABLES",
    "Command",
    "Reader",
    "Variable",
    "by_name",
    "read_by",
]

# --------------------------------------------------------------------------------------
# The bus: every process on it

REDIS_URL = Variable[str](
    name="CONFIGBUS_REDIS_URL",
    default="redis://127.0.0.1:6379/0",
    meaning="The bus's Redis; credentials in the URL (`redis://user:password@host:6379/0` "
    "for an ACL user, see docs/acl.md), `rediss://` for TLS (`?ssl_ca_certs=/path/ca.pem`), "
    "`?cluster=true` for a Redis Cluster. With Sentinel: "
    "`redis+sentinel://[user:password@]host:port[,host:port...]/service_name[/db]` "
    "(`rediss+sentinel://` for TLS): the sentinels are asked where the primary is, and "
    "replicas, admins and the limiter follow a new primary after a failover (the "
    "credentials are the Redis servers', the sentinels are asked without them). "
    "`configbus up` uses it when it answers, else starts its own.",
    reader=REDIS,
    commands=frozenset({"admin", "proxy", "up"}),
    required=frozenset({"admin", "proxy"}),
)
REDIS_READ_URL = Variable[str](
    name="CONFIGBUS_REDIS_READ_URL",
    default="",
    meaning="Read replicas of the bus's Redis (`redis://replica-a:6379/0,redis://...`): a "
    "replica reads and listens through one of them (picked by its id, so a fleet spreads "
    "evenly) and writes to `CONFIGBUS_REDIS_URL`; a lagging or dead one is bypassed for the "
    "primary. `replicas`: the primary's own replicas, as the sentinels of a `redis+sentinel://` "
    "`CONFIGBUS_REDIS_URL` name them (a replica per connection, the primary when none is up) "
    "or a `?cluster=true` cluster's. Unset: everything goes to the primary. See docs/scale.md.",
    reader=Reader[str](
        kind="`redis://` URLs, comma-separated, or `replicas`", parse=str, check=redis_urls
    ),
    commands=frozenset({"proxy"}),
)
SECRET_KEYS = Variable[tuple[str, ...]](
    name="CONFIGBUS_SECRET_KEYS",
    default=(),
    meaning="Newest first: the first encrypts, every one decrypts (`configbus keygen`). "
    "Unset: documents with secrets are refused.",
    reader=FERNET_KEYS,
    commands=frozenset({"admin", "proxy", "up"}),
)
NAMESPACE = Variable[str](
    name="CONFIGBUS_NAMESPACE",
    default=DEFAULT_NAMESPACE,
    meaning="The namespace a replica follows, and the client's; the admin serves every "
    "namespace under `/v1/namespaces/{ns}`.",
    reader=NAMESPACE_NAME,
    commands=frozenset({"proxy", "client", "up"}),
)
REPLICA_ID = Variable[str](
    name="CONFIGBUS_REPLICA_ID",
    default="",
    meaning="The replica's name in `configbus status`.",
    reader=TEXT,
    commands=frozenset({"proxy"}),
    shown_default="`<hostname>-<pid>`",
)
REPLICA_LABELS = Variable[dict[str, str]](
    name="CONFIGBUS_REPLICA_LABELS",
    default={},
    meaning="The replica's labels (`zone=eu,tier=canary`), shown in status; a rollout "
    "stage's label selector picks the replicas that carry all of its labels.",
    reader=Reader[dict[str, str]](kind="`key=value` pairs, comma-separated", parse=parse_labels),
    commands=frozenset({"proxy"}),
)
SNAPSHOT_PATH = Variable[Path | None](
    name="CONFIGBUS_SNAPSHOT_PATH",
    default=None,
    meaning="Last-known-good file: a replica that starts while Redis is down serves it "
    "(marked stale).",
    reader=PATH,
    commands=frozenset({"proxy"}),
)
RECONCILE_INTERVAL_S = Variable[float](
    name="CONFIGBUS_RECONCILE_INTERVAL_S",
    default=5.0,
    meaning="How long a replica goes without the store confirming what it runs (a read, or "
    "a hinted record applied) before it reads head again, notification or not (`configbus "
    "up` passes 2 unless set).",
    reader=SECONDS,
    commands=frozenset({"proxy", "up"}),
)
HEARTBEAT_INTERVAL_S = Variable[float](
    name="CONFIGBUS_HEARTBEAT_INTERVAL_S",
    default=5.0,
    meaning="Status heartbeat; a replica is dead after 3 missed.",
    reader=SECONDS,
    commands=frozenset({"proxy"}),
)

# --------------------------------------------------------------------------------------
# The proxy

PROXY_MAX_BODY_BYTES = Variable[int](
    name="CONFIGBUS_PROXY_MAX_BODY_BYTES",
    default=4 * 1024 * 1024,
    meaning="Requests with a larger body get 413.",
    reader=BYTES,
    commands=frozenset({"proxy"}),
)
PROXY_GRACEFUL_TIMEOUT_S = Variable[float](
    name="CONFIGBUS_PROXY_GRACEFUL_TIMEOUT_S",
    # As long as the default provider `timeout_s`: a request in flight at SIGTERM may finish.
    default=30.0,
    meaning="On SIGTERM, how long requests in flight (streams included) may finish before "
    "they are cut; the default is the default provider `timeout_s`.",
    reader=SECONDS,
    commands=frozenset({"proxy"}),
)
USAGE_FLUSH_S = Variable[float](
    name="CONFIGBUS_USAGE_FLUSH_S",
    default=1.0,
    meaning="How often a replica flushes the usage it counted (requests, tokens, cost per "
    "key, model, provider) and the spend of keys and teams with a budget to Redis; each "
    "flush also tells it which keys and teams the fleet has found over budget.",
    reader=SECONDS,
    commands=frozenset({"proxy"}),
)

LOG_FORMAT = Variable[str](
    name="CONFIGBUS_LOG_FORMAT",
    default="text",
    meaning="`json`: one JSON object per log line (time, level, logger, message, and on a "
    "replica's request the request id, config version and trace id); `text`: plain lines.",
    reader=LOG_FORMATS,
    commands=frozenset({"admin", "proxy"}),
)

# --------------------------------------------------------------------------------------
# The admin service

ADMIN_TOKENS = Variable[str](
    name="CONFIGBUS_ADMIN_TOKENS",
    default="",
    meaning="`name:role:token` entries, comma-separated (roles `viewer`, `publisher`, `sre`, "
    "`admin`); `name:role:sha256:<hex>` stores only the token's digest. The admin refuses "
    "to start without a token.",
    reader=Reader[str](kind="`name:role:token` list", parse=str),
    commands=frozenset({"admin"}),
    required=frozenset({"admin"}),
    instead="CONFIGBUS_ADMIN_TOKENS_FILE",
)
ADMIN_TOKENS_FILE = Variable[Path | None](
    name="CONFIGBUS_ADMIN_TOKENS_FILE",
    default=None,
    meaning="A file of `name:role:token` lines (`#` comments), read with `CONFIGBUS_ADMIN_TOKENS`.",
    reader=PATH,
    commands=frozenset({"admin"}),
    required=frozenset({"admin"}),
    instead="CONFIGBUS_ADMIN_TOKENS",
)
ADMIN_MAX_BODY_BYTES = Variable[int](
    name="CONFIGBUS_ADMIN_MAX_BODY_BYTES",
    default=1024 * 1024,
    meaning="Requests with a larger body get 413.",
    reader=BYTES,
    commands=frozenset({"admin"}),
)
ADMIN_MAX_IMPORT_BYTES = Variable[int](
    name="CONFIGBUS_ADMIN_MAX_IMPORT_BYTES",
    default=32 * 1024 * 1024,
    meaning="The same for an import.",
    reader=BYTES,
    commands=frozenset({"admin"}),
)
ADMIN_PUBLISH_LIMIT = Variable[int](
    name="CONFIGBUS_ADMIN_PUBLISH_LIMIT",
    default=30,
    meaning="Write requests per token per window, across every admin instance (429 above).",
    reader=COUNT,
    commands=frozenset({"admin"}),
)
ADMIN_PUBLISH_WINDOW_S = Variable[int](
    name="CONFIGBUS_ADMIN_PUBLISH_WINDOW_S",
    default=60,
    meaning="The publish limit's window.",
    reader=Reader[int](kind="whole seconds (≥ 1)", parse=integer, check=at_least_one),
    commands=frozenset({"admin"}),
)
ADMIN_BREAKER_FAILURES = Variable[int](
    name="CONFIGBUS_ADMIN_BREAKER_FAILURES",
    default=3,
    meaning="Consecutive Redis failures that open the admin's circuit breaker (503 at once).",
    reader=COUNT,
    commands=frozenset({"admin"}),
)
ADMIN_BREAKER_RESET_S = Variable[float](
    name="CONFIGBUS_ADMIN_BREAKER_RESET_S",
    default=5.0,
    meaning="Time the breaker stays open before a probe.",
    reader=SECONDS,
    commands=frozenset({"admin"}),
)
ADMIN_REDIS_TIMEOUT_S = Variable[float](
    name="CONFIGBUS_ADMIN_REDIS_TIMEOUT_S",
    default=1.0,
    meaning="Connect and socket timeout of the admin's Redis calls.",
    reader=SECONDS,
    commands=frozenset({"admin"}),
)
ADMIN_HISTORY_RETENTION = Variable[int](
    name="CONFIGBUS_ADMIN_HISTORY_RETENTION",
    default=DEFAULT_RETENTION,
    meaning="Versions kept per namespace; older ones are trimmed at each publish (head never "
    "is). Export keeps every retained version.",
    reader=COUNT,
    commands=frozenset({"admin"}),
)

ADMIN_HINT_MAX_BYTES = Variable[int](
    name="CONFIGBUS_HINT_MAX_BYTES",
    default=DEFAULT_INLINE_MAX_BYTES,
    meaning="A plain publish whose document is at most this big carries it in the change "
    "hint, so replicas apply it without reading Redis (they still verify it); 0: never. "
    "Redis copies each hint to every subscriber: see docs/scale.md.",
    reader=Reader[int](kind="bytes (0: never)", parse=integer, check=at_least_zero),
    commands=frozenset({"admin"}),
)
ADMIN_MIN_REPLICAS_TO_ACK = Variable[int](
    name="CONFIGBUS_ADMIN_MIN_REPLICAS_TO_ACK",
    default=0,
    meaning="Redis replicas that must acknowledge a publish (Redis `WAIT`) before the admin "
    "answers 201; fewer within `CONFIGBUS_ADMIN_REPLICA_ACK_TIMEOUT_S` answer 503 "
    "`not_replicated` (the version exists on the primary, but a failover now could lose it; "
    "a retry with the same idempotency key waits again). 0: do not wait. Not with "
    "`?cluster=true`.",
    reader=Reader[int](kind="integer (0: do not wait)", parse=integer, check=at_least_zero),
    commands=frozenset({"admin"}),
)
ADMIN_REPLICA_ACK_TIMEOUT_S = Variable[float](
    name="CONFIGBUS_ADMIN_REPLICA_ACK_TIMEOUT_S",
    default=DEFAULT_ACK_TIMEOUT_MS / 1000,
    meaning="How long a publish waits for `CONFIGBUS_ADMIN_MIN_REPLICAS_TO_ACK` replicas.",
    reader=SECONDS,
    commands=frozenset({"admin"}),
)

# --------------------------------------------------------------------------------------
# The admin client commands

ADMIN_URL = Variable[str](
    name="CONFIGBUS_ADMIN_URL",
    default="",
    meaning="The admin service the client commands talk to (`--admin-url`).",
    reader=URL,
    commands=frozenset({"client"}),
)
ADMIN_TOKEN = Variable[str](
    name="CONFIGBUS_ADMIN_TOKEN",
    default="",
    meaning="The client commands' bearer token (`--token`).",
    reader=TEXT,
    commands=frozenset({"client"}),
)

VARIABLES: tuple[Variable[Any], ...] = (
    REDIS_URL,
    REDIS_READ_URL,
    SECRET_KEYS,
    NAMESPACE,
    REPLICA_ID,
    REPLICA_LABELS,
    SNAPSHOT_PATH,
    RECONCILE_INTERVAL_S,
    HEARTBEAT_INTERVAL_S,
    PROXY_MAX_BODY_BYTES,
    PROXY_GRACEFUL_TIMEOUT_S,
    USAGE_FLUSH_S,
    LOG_FORMAT,
    ADMIN_TOKENS,
    ADMIN_TOKENS_FILE,
    ADMIN_MAX_BODY_BYTES,
    ADMIN_MAX_IMPORT_BYTES,
    ADMIN_PUBLISH_LIMIT,
    ADMIN_PUBLISH_WINDOW_S,
    ADMIN_BREAKER_FAILURES,
    ADMIN_BREAKER_RESET_S,
    ADMIN_REDIS_TIMEOUT_S,
    ADMIN_HISTORY_RETENTION,
    ADMIN_HINT_MAX_BYTES,
    ADMIN_MIN_REPLICAS_TO_ACK,
    ADMIN_REPLICA_ACK_TIMEOUT_S,
    ADMIN_URL,
    ADMIN_TOKEN,
)

# Commands that also read variables named by the document: a proxy reads a provider's
# upstream key from the variable its `api_key_env` names.
DOCUMENT_NAMED: Mapping[Command, str] = {"proxy": "a provider's `api_key_env`"}


def by_name(name: str) -> Variable[Any] | None:
    return _BY_NAME.get(name)


def read_by(command: Command) -> tuple[Variable[Any], ...]:
    return tuple(v for v in VARIABLES if command in v.commands)


_BY_NAME = {v.name: v for v in VARIABLES}
