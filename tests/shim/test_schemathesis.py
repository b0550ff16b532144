"""Schemathesis against the shim's own ``/openapi.json``, in-process.

Every operation gets schema-driven requests, both kinds, so the document and the
behaviour cannot drift apart:

* positive (data the schema allows): must be accepted, a 2xx, with real audio from the
  mock behind it;
* negative (data the schema forbids): must be refused with a 4xx.

Either way: no 5xx, and the status codes, content types and bodies the document
promises. The upstream is the mock AI/ML API and its CDN, on the test process's
loopback server (:mod:`tests.upstream`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.config import SchemathesisConfig  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from mockserver import MockConfig  # noqa: E402
from shim import Config, create_app  # noqa: E402
from tests.figures import record  # noqa: E402
from tests.upstream import mock_upstream  # noqa: E402

# Schemathesis's ASGI client runs the app's lifespan around every call, and the shim
# builds its upstream client there, so each call gets a fresh one over the same mock.
# Half-second clips at most: long generated texts would otherwise make minutes of audio,
# and what is checked here is the answer, not how long it plays.
upstream = mock_upstream(MockConfig(max_audio_seconds=0.5))
app = create_app(Config(tts_retries=0, cache=False, upstream_url=upstream.url))

# Examples and fuzzing, positive and negative. Not the "coverage" phase: it builds its
# boundary cases while pytest collects (30 s of CPU here, in every xdist worker), and
# the validation's edges are unit-tested in tests/shim/test_contract.py.
# A refused negative case may also be a 413: forbidden data can be bigger than the shim's
# body cap (a long run of escaped surrogates in ``input`` once was), and a 413 is the
# answer the shim documents for it, before any field is read.
REFUSED = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]
SETTINGS = {
    "phases": {"coverage": {"enabled": False}},
    "checks": {"negative_data_rejection": {"expected-statuses": REFUSED}},
}
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", app, config=SchemathesisConfig.from_dict(SETTINGS)
)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    unsupported_method,
]
# Not traced for coverage (pytest-cov's no_cover): in-process, every request here runs
# thousands of traced lines of shim and mock, which made these tests 3-4x slower; the
# paths they reach are measured by the tests written for them.
pytestmark = pytest.mark.no_cover
#: (operation, positive or negative, status) -> calls.
CALLS: Counter[tuple[str, str, int]] = Counter()


def _accepted_if_valid(case: Any, response: Any) -> None:
    """What the document allows, the shim does: a positive case is a 2xx.

    Stricter than schemathesis's own ``positive_data_acceptance``, which lets 404 and
    429 through: here an allowed request that is refused is a bug in the schema or in
    the validation.
    """
    if case.meta.generation.mode.is_positive:
        assert 200 <= response.status_code < 300, (
            f"{case.method} {case.path} refused data its schema allows: "
            f"{response.status_code} {response.text[:300]}\nbody: {case.body!r}"[:2000]
        )


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_shim_keeps_its_own_contract(case: Any) -> None:
    response = case.call(headers={"authorization": "Bearer sk-schemathesis"})
    CALLS[case.operation.label, case.meta.generation.mode.value, response.status_code] += 1
    _accepted_if_valid(case, response)
    case.validate_response(response, checks=CHECKS)


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    """After this module's cases: when every operation was exercised, each accepted data
    its schema allows; and the figures go to docs/reliability.md."""
    yield
    operations = {op for (op, _, _) in CALLS}
    if operations == {operation.label for operation in _operations()}:
        accepted = {op for (op, mode, status) in CALLS if mode == "positive" and status < 300}
        assert accepted == operations
    if CALLS:
        record(
            "schemathesis",
            calls=sum(CALLS.values()),
            positive=sum(n for (_, mode, _), n in CALLS.items() if mode == "positive"),
            server_errors=sum(n for (_, _, status), n in CALLS.items() if status >= 500),
        )


def _operations() -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]
