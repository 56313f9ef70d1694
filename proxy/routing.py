"""Routing tables: a public model name → the deployments to try, in order.

`weighted` picks the first deployment at random in proportion to the weights, then tries
the others in listed order; `ordered` always uses the listed order. A weight of 0 keeps a
deployment as a backup that is never picked first. After a model's own deployments come
its `fallbacks` (other public models), each with its own deployments, in listed order.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, Literal, TypeVar

P = TypeVar("P")


class Target(Generic[P]):
    """One deployment: which provider serves it, under which upstream model name, at which
    URL (None: the provider's own), and what its tokens cost (integer pico-dollars per
    prompt and completion token)."""

    __slots__ = ("model", "price_in", "price_out", "provider", "url")

    def __init__(
        self,
        provider: P,
        model: str,
        url: str | None = None,
        price_in: int = 0,
        price_out: int = 0,
    ) -> None:
        self.provider = provider
        self.model = model
        self.url = url
        self.price_in = price_in
        self.price_out = price_out

    def __repr__(self) -> str:
        return f"Target({self.provider!r}, {self.model!r})"


class Route(Generic[P]):
    """A public model: its deployments, strategy, fallbacks and default params."""

    __slots__ = (
        "_cum", "_total", "cache", "fallbacks", "name", "params", "purpose", "strategy",
        "targets",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        targets: Sequence[Target[P]],
        weights: Sequence[int],
        *,
        strategy: Literal["weighted", "ordered"] = "weighted",
        fallbacks: Sequence[str] = (),
        params: Mapping[str, Any] | None = None,
        purpose: str = "chat",
        cache: Any = None,
    ) -> None:
        self.name = name
        self.purpose = purpose
        # The model's response cache (`proxy.cache.ModelCache`), None when it has none.
        self.cache = cache
        self.targets = tuple(targets)
        self.strategy = strategy
        self.fallbacks = tuple(fallbacks)
        self.params = dict(params or {})
        self._cum = list(itertools.accumulate(weights))
        self._total = self._cum[-1] if self._cum else 0

    def order(self, rand: Callable[[], float] = random.random) -> Sequence[Target[P]]:
        """The deployments in the order to try them for one request."""
        t = self.targets
        if self.strategy == "ordered" or len(t) < 2 or self._total <= 0:
            return t
        i = bisect.bisect_right(self._cum, rand() * self._total)
        if i >= len(t):
            i = len(t) - 1
        if i == 0:
            return t
        return (t[i], *t[:i], *t[i + 1 :])


def plan(
    routes: Mapping[str, Route[P]], model: str, rand: Callable[[], float] = random.random
) -> Iterator[tuple[Route[P], Target[P]]]:
    """Every (route, deployment) to try for `model`: its own, then each fallback's."""
    route = routes[model]
    for target in route.order(rand):
        yield route, target
    for name in route.fallbacks:
        fb = routes.get(name)
        if fb is None:
            continue
        for target in fb.order(rand):
            yield fb, target
