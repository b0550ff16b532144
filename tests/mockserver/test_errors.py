"""The AI/ML error body."""

from __future__ import annotations

import json
import re

from mockserver.errors import DOCUMENTED_MESSAGES, error_body, error_response, message_for


def test_error_body_fields() -> None:
    data = error_body(503, "/v1/tts", "rid-1")
    assert list(data) == ["message", "path", "requestId", "statusCode", "timestamp"]
    assert (data["message"], data["path"], data["requestId"], data["statusCode"]) == (
        "Service unavailable",
        "/v1/tts",
        "rid-1",
        503,
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["timestamp"])


def test_undocumented_statuses_use_the_reason_phrase() -> None:
    assert message_for(418) == "I'm a Teapot"
    assert message_for(599) == "Error"
    assert all(message_for(status) == text for status, text in DOCUMENTED_MESSAGES.items())


def test_error_response_headers() -> None:
    limited = error_response(429, "/v1/tts", "r")
    assert limited.headers["retry-after"] == "1"
    assert json.loads(limited.body)["statusCode"] == 429
    custom = error_response(429, "/v1/tts", "r", headers={"Retry-After": "30"})
    assert custom.headers["retry-after"] == "30"
    assert "retry-after" not in error_response(503, "/v1/tts", "r").headers
