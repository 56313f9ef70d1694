"""Property-based run of the service against its own /openapi.json (schemathesis).

Every operation gets a bounded number of generated requests, sent with an admin token to the
in-process app over a real redis-server; each answer must not be a 5xx and must conform to
the spec (status code, content type, headers, body schema).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from admin.openapi import spec
from configbus.testing import sample_data
from tests.admin.helpers import app_for, auth, serve
from tests.proxy.helpers import Mock
from tests.support import RedisServer

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def admin_url(redis_server: RedisServer) -> Iterator[str]:
    upstream = Mock("spec").start()  # the providers' discovery and test answer 200
    with serve(app_for(redis_server.url)) as url:
        # Seed the namespace the spec's examples name, so 200 answers get checked too.
        for level in ("INFO", "DEBUG"):
            data = sample_data(upstream_a=upstream.url + "/v1", upstream_b=upstream.url + "/v1")
            data["logging"] = {"level": level}
            httpx.put(
                f"{url}/v1/namespaces/default/config",
                headers=auth("admin"),
                json={"document": data},
            ).raise_for_status()
        try:
            yield url
        finally:
            upstream.service.stop()


schema = schemathesis.openapi.from_dict(spec())


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_spec(case: Any, admin_url: str) -> None:
    if isinstance(case.query, dict):
        # A probe asks the providers a generated document names: keep traffic on loopback.
        case.query.pop("probe", None)
    case.call_and_validate(base_url=admin_url, headers=auth("admin"), checks=CHECKS)


def test_served_spec_is_the_spec(admin_url: str) -> None:
    assert httpx.get(admin_url + "/openapi.json").json() == spec()


def test_spec_lists_every_route() -> None:
    from admin.app import create_app
    from admin.console import console_routes
    from tests.admin.helpers import settings as admin_settings

    app = create_app(admin_settings("redis://127.0.0.1:1/0"))
    console = {(type(r), getattr(r, "path", "")) for r in console_routes()}
    routes = {
        (m, getattr(r, "path", ""))
        for r in app.routes
        if (type(r), getattr(r, "path", "")) not in console  # the web console, not the API
        for m in (getattr(r, "methods", None) or ())
        if m != "HEAD"
    }
    documented = {(m.upper(), p) for p, ops in spec()["paths"].items() for m in ops}
    assert routes == documented
