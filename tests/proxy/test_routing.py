from __future__ import annotations

from collections import Counter

import pytest

from proxy.routing import Route, Target, plan


def route(
    name: str, weights: list[int], strategy: str = "weighted", fallbacks: tuple[str, ...] = ()
) -> Route[str]:
    targets = [Target(f"{name}-p{i}", f"{name}-model{i}") for i in range(len(weights))]
    return Route(
        name,
        targets,
        weights,
        strategy=strategy,  # type: ignore[arg-type]
        fallbacks=fallbacks,
    )


def providers(r: Route[str], x: float) -> list[str]:
    return [t.provider for t in r.order(lambda: x)]


@pytest.mark.parametrize(
    ("x", "first"),
    [(0.0, "m-p0"), (0.09, "m-p0"), (0.1, "m-p1"), (0.39, "m-p1"), (0.4, "m-p2"), (0.99, "m-p2")],
)
def test_weighted_picks_first_by_weight_then_listed_order(x: float, first: str) -> None:
    r = route("m", [1, 3, 6])
    order = providers(r, x)
    assert order[0] == first
    assert sorted(order) == ["m-p0", "m-p1", "m-p2"]
    assert order[1:] == [p for p in ["m-p0", "m-p1", "m-p2"] if p != first]


def test_weighted_distribution_follows_weights() -> None:
    import random

    rnd = random.Random(7)
    r = route("m", [1, 3])
    firsts = Counter(r.order(rnd.random)[0].provider for _ in range(4000))
    assert 0.7 < firsts["m-p1"] / 4000 < 0.8


def test_zero_weight_is_never_first_but_stays_a_backup() -> None:
    r = route("m", [0, 5])
    for x in (0.0, 0.5, 0.999):
        assert providers(r, x) == ["m-p1", "m-p0"]


def test_ordered_ignores_weights() -> None:
    r = route("m", [1, 100], strategy="ordered")
    assert providers(r, 0.9) == ["m-p0", "m-p1"]


def test_plan_tries_own_deployments_then_fallbacks_in_order() -> None:
    routes = {
        "m": route("m", [1, 1], "ordered", fallbacks=("f1", "gone", "f2")),
        "f1": route("f1", [1]),
        "f2": route("f2", [1]),
    }
    got = [(r.name, t.provider, t.model) for r, t in plan(routes, "m", lambda: 0.0)]
    assert got == [
        ("m", "m-p0", "m-model0"),
        ("m", "m-p1", "m-model1"),
        ("f1", "f1-p0", "f1-model0"),
        ("f2", "f2-p0", "f2-model0"),
    ]


def test_route_without_deployments_goes_straight_to_fallbacks() -> None:
    routes = {"m": route("m", [], fallbacks=("f",)), "f": route("f", [1])}
    assert [t.provider for _, t in plan(routes, "m")] == ["f-p0"]
