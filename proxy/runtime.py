"""The runtime snapshot: everything a request needs, built from one document.

Its routes, clients and settings never change once built; what moves is bookkeeping (the
requests in flight, retirement) and the state its providers carry (breaker, limiter).

    build(document, previous) → Runtime   (the watcher swaps it in)

Providers whose settings did not change are carried over from `previous` (same object:
same pool, breaker, limiter). A snapshot counts its in-flight requests; once it is retired
(a newer one is in) and drained, it gives up its providers, and a provider no snapshot owns
closes its pool.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

import msgspec

from configbus.breaker import BreakerState
from configbus.clientkeys import ClientKey
from configbus.document import Budget, Document, Price, RateLimit
from configbus.keyset import KeyFollower
from configbus.usage import pico_per_token
from proxy.allowance import Allowance
from proxy.cache import model_cache
from proxy.iprules import IpPolicy
from proxy.limits import FleetLimits
from proxy.routing import Route, Target
from proxy.upstream import ProviderRuntime

_encode = msgspec.json.Encoder().encode


class ClientRuntime:
    __slots__ = ("all_models", "budget", "key_id", "limits", "models", "name", "rpm", "team")

    def __init__(
        self,
        name: str,
        models: Collection[str],
        rpm: int | None,
        limits: tuple[Allowance, ...] = (),
        *,
        key_id: str | None = None,
        team: str | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.name = name
        self.all_models = "*" in models
        self.models = frozenset(models)
        self.rpm = rpm
        self.limits = limits  # the key's allowances (requests, tokens)
        # A key of the collection has an id (usage and budgets are kept by it); a client of
        # the document has only its name.
        self.key_id = key_id
        self.team = team
        self.budget = budget

    def may_use(self, model: str) -> bool:
        return self.all_models or model in self.models


class Runtime:
    """One config version, ready to serve."""

    def __init__(
        self,
        doc: Document,
        providers: dict[str, ProviderRuntime],
        routes: dict[str, Route[ProviderRuntime]],
        clients: dict[str, ClientRuntime],
        *,
        model_limits: dict[str, tuple[Allowance, ...]] | None = None,
        global_limits: tuple[Allowance, ...] = (),
        ip: IpPolicy | None = None,
        keys: KeyFollower | None = None,
        key_client: Callable[[ClientKey], ClientRuntime] | None = None,
    ) -> None:
        self.doc = doc
        # The key collection (live: it changes between documents) and what its entries
        # become here, made on first use and kept while the entry is the same object.
        self.keys = keys
        self._key_client = key_client
        self._key_clients: dict[str, tuple[ClientKey, ClientRuntime]] = {}
        # Limits beside the key's and the providers': per public model, fleet-wide, by address.
        self.model_limits = model_limits or {}
        self.global_limits = global_limits
        self.ip = ip
        # Team budgets, by team name (a key's own budget is on its ClientRuntime).
        self.team_budgets = {t.name: t.budget for t in doc.teams if t.budget is not None}
        self.any_limits = bool(
            global_limits or self.model_limits or ip or any(c.limits for c in clients.values())
            or any(p.limits for p in providers.values())
        )  # fmt: skip
        self.providers = providers
        self.routes = routes
        self.clients = clients
        self.log_level = doc.logging.level
        self.model_names = tuple(sorted(routes))
        self.inflight = 0
        self.retired = False
        for p in providers.values():
            p.own()

    def key_client(self, sha256: str) -> ClientRuntime | None:
        """The collection's key with this hash, if it may be used now."""
        if self.keys is None or self._key_client is None:
            return None
        entry = self.keys.table.find(sha256, time.time())
        if entry is None:
            return None
        cached = self._key_clients.get(entry.id)
        if cached is not None and cached[0] is entry:
            return cached[1]
        client = self._key_client(entry)
        self._key_clients[entry.id] = (entry, client)
        return client

    def acquire(self) -> None:
        self.inflight += 1

    def release(self) -> None:
        self.inflight -= 1
        if self.inflight == 0 and self.retired:
            self._drain()

    def retire(self) -> None:
        """A newer snapshot is serving; let go of providers once the last request ends."""
        if not self.retired:
            self.retired = True
            if self.inflight == 0:
                self._drain()

    def _drain(self) -> None:
        providers, self.providers = self.providers, {}
        for p in providers.values():
            p.disown()

    def models_body(self, client: ClientRuntime) -> bytes:
        return _encode(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "configbus"}
                    for m in self.model_names
                    if client.may_use(m)
                ],
            }
        )


def _prices(price: Price | None) -> tuple[int, int]:
    """A deployment's price as pico-dollars per prompt and completion token."""
    if price is None:
        return 0, 0
    return pico_per_token(price.input_per_million), pico_per_token(price.output_per_million)


class Builder:
    """Builds runtime snapshots; the watcher calls `build(doc, previous)`."""

    def __init__(
        self,
        *,
        on_breaker: Callable[[str, BreakerState], None] | None = None,
        env: dict[str, str] | None = None,
        limits: FleetLimits | None = None,
        keys: KeyFollower | None = None,
    ) -> None:
        self.keys = keys
        self.on_breaker = on_breaker
        self.env = env
        self.limits = limits  # None: no limit is enforced (tools, tests of routing)

    def build(self, doc: Document, prev: Runtime | None) -> Runtime:
        old = prev.providers if prev is not None else {}
        providers: dict[str, ProviderRuntime] = {}
        default_rpm = doc.rate_limits.provider_default
        for p in doc.providers:
            if not p.enabled:
                continue
            rl = p.rate_limit or default_rpm
            fresh = ProviderRuntime(
                p,
                p.circuit_breaker or doc.circuit_breaker,
                rl,
                limits=self._allowances("provider", p.name, rl),
                on_breaker=self.on_breaker,
                env=self.env,
            )
            kept = old.get(p.name)
            if kept is not None and kept.same_settings(fresh):
                providers[p.name] = kept
            else:
                providers[p.name] = fresh
                if self.on_breaker is not None:  # export the new breaker's state from the start
                    self.on_breaker(p.name, fresh.breaker.state)
        routes: dict[str, Route[ProviderRuntime]] = {}
        for m in doc.models:
            pairs = [
                (Target(pr, d.model, pr.url_for(m.purpose, d.model), *_prices(d.price)), d.weight)
                for d in m.deployments
                if (pr := providers.get(d.provider)) is not None
            ]
            routes[m.name] = Route(
                m.name,
                [t for t, _ in pairs],
                [w for _, w in pairs],
                strategy=m.strategy,
                fallbacks=m.fallbacks,
                params=m.params,
                purpose=m.purpose,
                cache=None if m.cache is None else model_cache(doc, m.name),
            )
        client_default = doc.rate_limits.client_default
        clients: dict[str, ClientRuntime] = {}
        for c in doc.clients:
            if c.enabled:
                rl = c.rate_limit or client_default
                clients[c.key_sha256] = ClientRuntime(
                    c.name, c.models, rl.rpm if rl else None, self._allowances("key", c.name, rl)
                )
        model_limits = {}
        for m in doc.models:
            found = self._allowances("model", m.name, m.rate_limit or doc.rate_limits.model_default)
            if found:
                model_limits[m.name] = found
        ip = None
        if self.limits is not None and IpPolicy.needed(doc.ip_rules):
            ip = IpPolicy(doc.ip_rules, self.limits)
        return Runtime(
            doc,
            providers,
            routes,
            clients,
            model_limits=model_limits,
            global_limits=self._allowances("global", "fleet", doc.rate_limits.global_),
            ip=ip,
            keys=self.keys,
            key_client=lambda e: self._key_client(e, client_default),
        )

    def _key_client(self, e: ClientKey, default: RateLimit | None) -> ClientRuntime:
        rl = e.rate_limit or default
        return ClientRuntime(
            e.name,
            e.models,
            rl.rpm if rl else None,
            self._allowances("key", e.id, rl),
            key_id=e.id,
            team=e.team,
            budget=e.budget,
        )

    def _allowances(self, kind: str, name: str, limit: RateLimit | None) -> tuple[Allowance, ...]:
        if self.limits is None or limit is None:
            return ()
        return tuple(self.limits.allowances_for(kind, name, limit))
