"""The errors module: named constructors, immutable errors, and the one mapping of
upstream failures onto OpenAI's envelope."""

from __future__ import annotations

import copy
import json
import pathlib

import pytest

from shim import errors
from shim.errors import APIError, UpstreamError


def test_an_error_cannot_be_changed_only_copied() -> None:
    error = errors.audio_download_failed("cut", retryable=True)

    with pytest.raises(AttributeError):
        error.retryable = False  # type: ignore[misc]
    final = error.with_(retryable=False, request_id="req-1", billed=True)

    assert (error.retryable, error.request_id, error.billed) == (True, None, False)
    assert (final.retryable, final.request_id, final.billed) == (False, "req-1", True)
    assert isinstance(final, UpstreamError)
    assert final.kind == "audio_download_failed"
    assert final.body() == error.body()


def test_a_copy_keeps_a_request_id_it_had_and_drops_an_unsafe_one() -> None:
    known = errors.bad_upstream_audio("odd", request_id="first")
    unknown = errors.bad_upstream_audio("odd")

    assert known.with_(request_id="second").request_id == "first"
    assert unknown.with_(request_id="bad\r\nid").request_id is None


def test_an_error_survives_copy_and_deepcopy_whole() -> None:
    budget = errors.insufficient_quota("spent", resets_in=60)
    upstream = errors.from_upstream(503, "down", retry_after=2.0, request_id="r-1")

    for error in (budget, upstream):
        for again in (copy.copy(error), copy.deepcopy(error)):
            assert type(again) is type(error)
            assert again.__dict__ == error.__dict__
    assert copy.deepcopy(upstream).kind == "status"
    assert dict(copy.copy(budget).headers) == {"retry-after": "60", "retry-after-ms": "60000"}


def test_each_upstream_kind_has_its_envelope() -> None:
    made = {
        errors.upstream_timeout("t"): (504, "timeout"),
        errors.upstream_unreachable("u"): (502, "upstream_unreachable"),
        errors.bad_upstream_response("r"): (502, "bad_upstream_response"),
        errors.no_audio_in_reply("n"): (502, "no_audio_in_reply"),
        errors.audio_origin_not_allowed("o"): (502, "audio_origin_not_allowed"),
        errors.audio_download_failed("d"): (502, "audio_download_failed"),
        errors.audio_too_large("l"): (502, "audio_too_large"),
        errors.bad_upstream_audio("b"): (502, "bad_upstream_audio"),
    }
    for error, (status, code) in made.items():
        assert (error.status, error.type, error.code) == (status, "server_error", code)


def test_an_upstream_status_keeps_its_status_and_says_whether_to_retry() -> None:
    credit = errors.from_upstream(403, "Not enough credit balance")
    limited = errors.from_upstream(429, "slow down", retry_after=2.5, request_id="r-9")
    refused = errors.from_upstream(400, "")

    assert (credit.status, credit.code, credit.retryable) == (403, "insufficient_quota", False)
    assert (limited.status, limited.code, limited.retryable) == (429, "rate_limit_exceeded", True)
    assert (limited.retry_after, limited.request_id, limited.upstream_status) == (2.5, "r-9", 429)
    assert refused.message == "AI/ML API error 400: The AI/ML API answered with status 400."
    assert not refused.billed
    assert not refused.retryable


def test_the_response_carries_the_envelope_and_the_retry_headers() -> None:
    response = errors.rate_limit_exceeded("busy", retry_after=1.5).response("rid")
    final = errors.invalid("voice", "no such voice").response("rid", {"allow": "POST"})

    assert json.loads(bytes(response.body)) == {
        "error": {
            "message": "busy",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    assert response.status_code == 429
    assert (response.headers["retry-after"], response.headers["retry-after-ms"]) == ("2", "1500")
    assert "x-should-retry" not in response.headers
    assert (final.status_code, final.headers["x-should-retry"]) == (400, "false")
    assert final.headers["allow"] == "POST"


def test_errors_are_made_only_in_the_errors_module() -> None:
    shim = pathlib.Path(errors.__file__).parent
    makers = [
        str(path.relative_to(shim))
        for path in shim.rglob("*.py")
        if path.name != "errors.py" and "APIError(" in path.read_text()
    ]

    assert makers == []
    assert issubclass(UpstreamError, APIError)
