"""The reliability suite: schemathesis over every operation of a real server that serves one bundle of
each kind, with every check, bounded in examples and time.

It asserts what the issue promised a hostile client would find: no server error (5xx) and no status,
content type or body that the OpenAPI schema does not document. The schema cannot say that a
base64 string must decode to an image or that a model is of the kind a route needs, so schema-valid
requests may also be refused with 400/422 (positive data acceptance allows those; everything else
stays as schemathesis ships it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.config import SchemathesisConfig
from test_kinds_contract import CASES

import aiforge
from aiforge.serve.app import create_app
from aiforge.serve.config import ServerConfig
from aiforge.tasks.registry import KINDS
from hardening_helpers import ThreadServer, thread_server

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 12  # per operation and generation mode; about 20 operations


@pytest.fixture(scope="module")
def every_kind_server(request: pytest.FixtureRequest) -> Iterator[tuple[ThreadServer, list[str]]]:
    """One real uvicorn server (as ``aiforge serve`` configures it) serving a bundle of every kind."""
    bundles = [CASES[kind.name].bundle(request) for kind in KINDS]
    runtimes = [aiforge.load(b.path, home=b.home) for b in bundles]
    names = [rt.name for rt in runtimes]
    assert len(set(names)) == len(names), names
    config = ServerConfig(request_timeout_s=20)
    with thread_server(create_app(runtimes, config=config), config) as server:
        yield server, names


def _with_served_names(raw: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """The server's schema, with ``{name}`` path parameters drawn from the served models in positive
    examples (random names would only ever meet 404); negative examples still try others."""
    for item in raw["paths"].values():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] == "name":
                    parameter["schema"] = {"type": "string", "enum": names}
    return raw


@pytest.fixture(scope="module")
def api_schema(every_kind_server: tuple[ThreadServer, list[str]]) -> Any:
    server, names = every_kind_server
    load_all_checks()
    raw = httpx.get(server.url + "/openapi.json", timeout=30).json()
    config = SchemathesisConfig.from_dict({
        "base-url": server.url,
        "checks": {"enabled": True,
                   "positive_data_acceptance": {"expected-statuses": ["2xx", "400", "404", "422"]}},
        "generation": {"max-examples": MAX_EXAMPLES},
    })
    checks = config.projects.get_default().checks
    disabled = [name for name in CHECKS.get_all_names() if not checks.get_by_name(name=name).enabled]
    assert not disabled, f"every check runs (--checks all); disabled: {disabled}"
    return schemathesis.openapi.from_dict(_with_served_names(raw, names), config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_only_documented_non_5xx_statuses(case: Any) -> None:
    case.call_and_validate(timeout=30)
