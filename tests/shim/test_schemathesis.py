"""Schemathesis against the shim's own ``/openapi.json``, in-process.

Every operation gets schema-driven requests, valid and invalid: no 5xx, the status
codes, content types and bodies the document promises, and schema-violating
requests rejected. The upstream is the mock, in-process, so valid requests are
answered with real audio.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from mockserver import MockConfig  # noqa: E402
from mockserver import create_app as create_mock_app  # noqa: E402
from shim import Config, create_app  # noqa: E402
from shim.testing import CDN_URL  # noqa: E402
from tests.figures import record  # noqa: E402

# Two-second clips at most: long generated texts would otherwise make minutes of audio.
mock = create_mock_app(MockConfig(cdn_url=CDN_URL, max_audio_seconds=2.0))
shim_app = create_app(Config(tts_retries=0), transport=httpx.ASGITransport(mock))
# schemathesis's client runs the app's lifespan before the first call.
schema = schemathesis.openapi.from_asgi("/openapi.json", shim_app)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
    unsupported_method,
]
CALLS: list[int] = []


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_shim_keeps_its_own_contract(case: Any) -> None:
    response = case.call(headers={"authorization": "Bearer sk-schemathesis"})
    CALLS.append(response.status_code)
    case.validate_response(response, checks=CHECKS)


def test_zz_report() -> None:
    assert CALLS, "schemathesis generated no calls"
    record("schemathesis", calls=len(CALLS), server_errors=sum(s >= 500 for s in CALLS))
