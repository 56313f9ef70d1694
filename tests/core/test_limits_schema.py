"""The document's limits: old shorthand still valid, new fields checked with their paths."""

from __future__ import annotations

import json
from typing import Any

import pytest

from configbus.codec import canonical
from configbus.errors import InvalidDocument
from configbus.testing import sample_data
from configbus.validation import to_document


def _with(**changes: Any) -> dict[str, Any]:
    data = sample_data()
    data.update(changes)
    return data


def test_a_document_of_before_keeps_its_meaning() -> None:
    data = sample_data()
    assert data["clients"][0]["rate_limit"] == {"rpm": 600}
    limit = to_document(data).clients[0].rate_limit
    assert limit is not None and (limit.rpm, limit.tpm, limit.burst, limit.shadow) == (
        600,
        None,
        None,
        False,
    )
    assert limit.capacity(600, tokens=False) == 600  # a minute's worth, as the window was


def test_every_kind_of_limit_round_trips() -> None:
    data = _with(
        rate_limits={
            "global": {"rpm": 1000, "tpm": 100_000, "burst": 100},
            "model_default": {"tpm": 5000, "shadow": True},
        },
        ip_rules={
            "allow": ["10.0.0.0/8", "2001:db8::/32"],
            "deny": ["10.6.6.6"],
            "trusted_proxies": ["192.0.2.1"],
            "rate_limit": {"rpm": 60},
            "ranges": [{"cidr": "10.1.0.0/16", "rate_limit": {"rpm": 600}}],
        },
    )
    data["models"][0]["rate_limit"] = {"rpm": 10}
    doc = to_document(data)
    assert doc.rate_limits.global_ is not None and doc.rate_limits.global_.burst == 100
    assert b'"rate_limits":{"global":{"rpm":1000,"tpm":100000,"burst":100}' in canonical(doc)
    assert to_document(json.loads(canonical(doc))) == doc


@pytest.mark.parametrize(
    ("changes", "path", "message"),
    [
        ({"rate_limits": {"global": {}}}, "rate_limits.global", "set rpm, tpm or both"),
        ({"rate_limits": {"global": {"burst": 5}}}, "rate_limits.global", "set rpm, tpm"),
        ({"ip_rules": {"deny": ["10.0.0.0/8", "10.0.0.300"]}}, "ip_rules.deny[1]", "IPv4 or IPv6"),
        ({"ip_rules": {"allow": ["2001:db8::/200"]}}, "ip_rules.allow[0]", "IPv4 or IPv6"),
        (
            {"ip_rules": {"ranges": [{"cidr": "xyz", "rate_limit": {"rpm": 1}}]}},
            "ip_rules.ranges[0].cidr",
            "IPv4 or IPv6",
        ),
    ],
)
def test_limit_errors_name_the_path(changes: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(InvalidDocument) as err:
        to_document(_with(**changes))
    assert any(i.path == path and message in i.message for i in err.value.issues), err.value.issues


def test_a_key_limit_without_rpm_or_tpm_is_refused() -> None:
    data = sample_data()
    data["clients"][0]["rate_limit"] = {"shadow": True}
    with pytest.raises(InvalidDocument) as err:
        to_document(data)
    assert [i.path for i in err.value.issues] == ["clients[0].rate_limit"]
