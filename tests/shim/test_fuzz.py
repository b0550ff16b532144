"""Property-based fuzzing of every route, in-process.

Whatever the body (any JSON value in any field, raw bytes, broken JSON, lone
surrogates, huge numbers, deep nesting), the content type, the headers, the path or
the method, the shim answers below 500, and every error is OpenAI's envelope with
its four keys. The upstream is the mock (on the test process's loopback server), so
requests that happen to be valid complete with real audio.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mockserver import MockConfig
from shim import Config, create_app
from shim.catalog import FORMATS, MODELS, UPSTREAM_VOICES
from shim.chat import CHAT_FORMATS
from tests.figures import record
from tests.upstream import mock_upstream

# Not traced for coverage (pytest-cov's no_cover): in-process, every request here runs
# thousands of traced lines of shim and mock, which made these tests 3-4x slower; the
# paths they reach are measured by the tests written for them.
pytestmark = pytest.mark.no_cover
EXAMPLES = 400
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CLIENT_KEY = "sk-fuzz-client-key-0001"
TRIED: Counter[str] = Counter()
STATUSES: Counter[int] = Counter()


@dataclass
class Harness:
    portal: BlockingPortal
    open: httpx.AsyncClient  # pass-through keys
    guarded: httpx.AsyncClient  # TTS_SHIM_API_KEYS set

    def send(self, method: str, path: str, *, guarded: bool = False, **kw: Any) -> httpx.Response:
        client = self.guarded if guarded else self.open

        async def go() -> httpx.Response:
            return await client.request(method, path, **kw)

        return self.portal.call(go)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    # Half-second clips at most: a long fuzzed text would otherwise make minutes of audio
    # (one run spent 70 s on a few such examples).
    upstream = mock_upstream(MockConfig(max_audio_seconds=0.5))
    apps = [
        create_app(Config(tts_retries=0, cache=False, upstream_url=upstream.url)),
        # private_catalog: every /v1 route, the model and voice lists included, needs the
        # key (by default the lists are open).
        create_app(
            Config(
                tts_retries=0,
                cache=False,
                client_keys=(CLIENT_KEY,),
                upstream_key="sk-server-fuzz",
                private_catalog=True,
                upstream_url=upstream.url,
            ),
        ),
    ]
    clients = [
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app, raise_app_exceptions=False),
            base_url="http://shim",
            headers={"authorization": "Bearer sk-fuzz-passthrough"},
        )
        for app in apps
    ]
    with start_blocking_portal() as portal, ExitStack() as running:
        for app in apps:
            running.enter_context(
                portal.wrap_async_context_manager(app.router.lifespan_context(app))
            )
        yield Harness(portal, *clients)
        for client in clients:
            portal.call(client.aclose)
    record(
        "fuzz",
        examples=sum(TRIED.values()),
        by_test=dict(TRIED),
        statuses=dict(sorted(STATUSES.items())),
    )


def check(response: httpx.Response, kind: str) -> None:
    """The properties every answer has, whatever was sent."""
    TRIED[kind] += 1
    STATUSES[response.status_code] += 1
    assert response.status_code < 500, response.text[:500]
    assert response.headers.get("x-request-id")
    if response.status_code >= 400:
        body = response.json()
        assert list(body) == ["error"]
        error = body["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["message"], str)
        assert error["message"]
        assert isinstance(error["type"], str)
        assert error["type"]
        assert error["param"] is None or isinstance(error["param"], str)
        assert error["code"] is None or isinstance(error["code"], str)
        if response.status_code == 405:
            assert response.headers.get("allow")
    else:
        media = response.headers["content-type"].split(";")[0]
        if response.request.url.path == "/metrics":  # Prometheus's text format
            assert media == "text/plain"
        else:
            assert media.startswith(("audio/", "application/json", "text/event-stream"))


# -- strategies -------------------------------------------------------------------

surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | surrogates
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def good_or_any(*good: Any) -> st.SearchStrategy[Any]:
    return st.sampled_from(good) | values


models = good_or_any(*MODELS, "gpt-4o", "whisper-1", "")
voices = good_or_any(*UPSTREAM_VOICES, "marin", {"id": "voice_123"})
texts = st.text(min_size=1, max_size=40) | st.just("x" * 4097) | st.just("   ") | values

speech_bodies = (
    st.fixed_dictionaries(
        {},
        optional={
            "model": models,
            "input": texts,
            "voice": voices,
            "instructions": texts,
            "response_format": good_or_any(*FORMATS, "ogg", "MP3"),
            "speed": good_or_any(0.25, 1, 4.0, 4.01, 0, -1, float("nan"), 1e400),
            "stream_format": good_or_any("audio", "sse", "SSE"),
            "extra": values,
        },
    )
    | values
)

parts = st.fixed_dictionaries(
    {}, optional={"type": good_or_any("text", "image_url"), "text": texts}
)
messages = (
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "role": good_or_any("user", "system", "assistant"),
                "content": texts | st.lists(parts | values, max_size=3),
            },
        )
        | values,
        max_size=4,
    )
    | values
)
chat_bodies = (
    st.fixed_dictionaries(
        {},
        optional={
            "model": models,
            "messages": messages,
            "modalities": good_or_any(["audio"], ["text", "audio"], ["text"], []),
            "audio": st.fixed_dictionaries(
                {},
                optional={
                    "voice": voices,
                    "format": good_or_any(*CHAT_FORMATS, "pcm"),
                },
            )
            | values,
            "stream": good_or_any(True, False),
            "stream_options": st.fixed_dictionaries(
                {}, optional={"include_usage": good_or_any(True, False)}
            )
            | values,
            "n": good_or_any(1, 2, 1.0, True),
        },
    )
    | values
)

content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=zz",
        "",
        None,
    ]
)


def valid_json() -> bytes:
    return json.dumps({"model": "tts-1", "input": "Hi."}).encode()


raw_bodies = st.one_of(
    st.binary(max_size=300),
    st.binary(min_size=1, max_size=40).map(lambda junk: valid_json() + junk),  # trailing
    st.integers(1, 30).map(lambda cut: valid_json()[:-cut]),  # truncated
    st.integers(1, 200_000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 200_000).map(lambda depth: b'{"input":' * depth),
    st.sampled_from(
        [
            b"",
            b"   \n",
            b"null",
            b"\xef\xbb\xbf" + valid_json(),  # a UTF-8 byte-order mark
            b'{"model":"tts-1","input":"\\ud800"}',
            b'{"model":"tts-1","input":"\\udfff\\ud800"}',
            b'{"model":"tts-1","input":"\xff\xfe"}',  # invalid UTF-8
            b'{"model":"tts-1","input":"hi","speed":1e400}',
            b'{"model":"tts-1","input":"hi","speed":-1e400}',
            b'{"model":"tts-1","input":"hi","speed":NaN}',
            b'{"model":"tts-1","input":"hi","speed":' + b"9" * 5000 + b"}",
            b'{"model":"tts-1","input":"hi","n":' + b"9" * 4000 + b"}",
            b'{"model":"tts-1","input":"hi"}{"model":"tts-1"}',
            b'{"model":"tts-1","model":["x"],"input":"hi"}',
        ]
    ),
)


# -- the properties ---------------------------------------------------------------


@FUZZ
@given(body=speech_bodies, content_type=content_types)
def test_speech_never_fails_on_any_json(
    harness: Harness, body: Any, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type is not None else {}
    content = json.dumps(body, allow_nan=True).encode()
    check(harness.send("POST", "/v1/audio/speech", content=content, headers=headers), "speech")


@FUZZ
@given(body=chat_bodies, content_type=content_types)
def test_chat_never_fails_on_any_json(
    harness: Harness, body: Any, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type is not None else {}
    content = json.dumps(body, allow_nan=True).encode()
    check(harness.send("POST", "/v1/chat/completions", content=content, headers=headers), "chat")


@FUZZ
@given(
    route=st.sampled_from(["/v1/audio/speech", "/v1/chat/completions"]),
    raw=raw_bodies,
    content_type=content_types,
)
def test_raw_bodies_never_fail(
    harness: Harness, route: str, raw: bytes, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type is not None else {}
    check(harness.send("POST", route, content=raw, headers=headers), "raw")


header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=60,
)


@FUZZ
@given(
    path=st.sampled_from(
        ["/v1/models", "/v1/audio/voices", "/v1/audio/models", "/healthz", "/readyz"]
    )
    | st.text(max_size=40).map(lambda t: "/v1/models/" + quote(t, safe=""))
    | st.text(max_size=40).map(lambda t: "/" + quote(t)),
    query=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3),
    authorization=header_text,
    guarded=st.booleans(),
)
def test_reads_never_fail(
    harness: Harness, path: str, query: dict[str, str], authorization: str, guarded: bool
) -> None:
    headers = {"authorization": authorization.encode("latin-1")}
    response = harness.send("GET", path, params=query, headers=headers, guarded=guarded)
    check(response, "reads")
    if guarded and path.startswith("/v1/"):
        assert response.status_code == 401  # no generated header holds the client key


@FUZZ
@given(
    method=st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "POST"]),
    path=st.sampled_from(
        [
            "/v1/audio/speech",
            "/v1/chat/completions",
            "/v1/models",
            "/v1/models/tts-1",
            "/v1/audio/voices",
            "/healthz",
            "/readyz",
            "/openapi.json",
        ]
    ),
    authorization=header_text,
    guarded=st.booleans(),
)
def test_any_method_on_any_route(
    harness: Harness, method: str, path: str, authorization: str, guarded: bool
) -> None:
    response = harness.send(
        method,
        path,
        headers={"authorization": authorization.encode("latin-1")},
        content=b"{}" if method in ("POST", "PUT", "PATCH") else None,
        guarded=guarded,
    )
    if method == "HEAD":
        TRIED["methods"] += 1
        STATUSES[response.status_code] += 1
        assert response.status_code < 500
    else:
        check(response, "methods")
    if not path.startswith("/v1/"):
        assert response.status_code != 401  # health and the document need no key
