"""The upstream package against the in-process mock: error mapping, the billing rules
of retries, relayed headers, the origin guard, the audio checks, and keys.

What the SDK sees of every documented reply shape and fault is the contract suite's
(``contract_tests/upstream``, ``contract_tests/reliability``); these are the rules
behind it, one test each.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from mockserver.audio import encode
from shim import Config
from shim.errors import APIError, UpstreamError
from shim.responses import StreamAborted
from shim.testing import MockUpstream, decode_audio, free_port
from shim.upstream import Upstream
from shim.upstream.clients import Proxies
from shim.upstream.download import Validators, resume_headers
from shim.upstream.generation import retry_after
from shim.upstream.retry import RetryPolicy
from tests.shim.conftest import CLIENT_TOKEN, generations, inline_audio

BODY = {"model": "tts-1-hd", "input": "Shapes.", "voice": "nova", "response_format": "wav"}
SPEECH = "/v1/audio/speech"


def _downloads(upstream: MockUpstream) -> int:
    return len(upstream.downloads)


# -- reply shapes the mock does not send by itself ------------------------------------


async def test_binary_reply_is_streamed_without_a_cdn(shim: Any, upstream: MockUpstream) -> None:
    upstream.scenario([{"shape": "binary"}])
    response = await shim().post(SPEECH, json=BODY)

    assert response.status_code == 200
    assert decode_audio(response.content, "wav").codec == "pcm_s16le"
    assert _downloads(upstream) == 0


@pytest.mark.parametrize("prefix", ["", "data:audio/wav;base64,"])
async def test_inline_base64_audio(shim: Any, upstream: MockUpstream, prefix: str) -> None:
    audio = encode("nova", 12_000, "wav")
    upstream.scenario([inline_audio(audio, prefix)])

    response = await shim().post(SPEECH, json=BODY)

    assert response.status_code == 200
    assert response.content == audio


# -- errors keep their status; only 429/5xx are tried again -----------------------------


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (400, None, False),
        (401, "invalid_api_key", False),
        (402, "insufficient_quota", False),
        (403, "insufficient_quota", False),
        (404, "model_not_found", False),
        (429, "rate_limit_exceeded", True),
        (500, None, True),
        (502, None, True),
        (503, "service_unavailable", True),
        (504, "timeout", True),
    ],
)
async def test_upstream_errors_keep_their_status(
    shim: Any, upstream: MockUpstream, status: int, code: Any, retryable: bool
) -> None:
    messages = {402: "No credits left", 403: "You've run out of credits.", 404: "Model not found"}
    step: dict[str, Any] = {"status": status, "message": messages.get(status, f"Failure {status}")}
    step.update(times=2, headers={"retry-after": "0"} if status == 429 else {})
    upstream.scenario([step])

    response = await shim(tts_retries=1).post(SPEECH, json=BODY)

    assert response.status_code == status
    error = response.json()["error"]
    assert step["message"] in error["message"]
    assert error["code"] == code
    assert not response.headers["x-request-id"].startswith("req_")  # the upstream's own
    assert ("x-should-retry" in response.headers) is not retryable
    assert generations(upstream) == (2 if retryable else 1)


@pytest.mark.parametrize("retries", [0, 1, 3])
async def test_the_billed_call_retry_count_is_configurable(
    shim: Any, upstream: MockUpstream, retries: int
) -> None:
    upstream.scenario([{"status": 500, "times": 5}])
    response = await shim(tts_retries=retries).post(SPEECH, json=BODY)

    assert response.status_code == 500
    assert generations(upstream) == retries + 1


@pytest.mark.parametrize(
    ("step", "status", "code"),
    [
        ({"fault": "garbage"}, 502, "bad_upstream_response"),
        ({"status": 200, "body": ""}, 502, "bad_upstream_response"),
        ({"status": 200, "body": {"audio": 42}}, 502, "no_audio_in_reply"),
        ({"status": 201, "body": {"metadata": {"request_id": "dg-123"}}}, 502, "no_audio_in_reply"),
        ({"fault": "truncated"}, 502, "upstream_unreachable"),
    ],
)
async def test_a_2xx_that_is_not_usable_is_final_and_billed_once(
    shim: Any, upstream: MockUpstream, step: dict[str, Any], status: int, code: str | None
) -> None:
    upstream.scenario([{**step, "times": 3}])
    response = await shim(tts_retries=2, audio_retries=2).post(SPEECH, json=BODY)

    assert response.status_code == status
    assert code is None or response.json()["error"]["code"] == code
    assert response.headers["x-should-retry"] == "false"
    assert generations(upstream) == 1


async def test_audio_cut_off_in_the_generation_reply_is_a_broken_transfer_billed_once(
    shim: Any, upstream: MockUpstream
) -> None:
    # The reply is the audio itself: its first half is streamed before the cut shows.
    upstream.scenario([{"shape": "binary", "fault": "truncated", "times": 3}])

    with pytest.raises(StreamAborted, match="broke off"):
        await shim(tts_retries=2, audio_retries=2).post(SPEECH, json=BODY)

    assert generations(upstream) == 1


async def test_an_upstream_that_was_never_reached_is_tried_again() -> None:
    # A real closed port: the connection is refused before anything is sent.
    config = Config(upstream_url=f"http://127.0.0.1:{free_port()}", tts_retries=2)
    upstream = Upstream(config)
    try:
        with pytest.raises(APIError) as caught:
            await upstream.open(
                await upstream.generate({"model": "openai/tts-1", "text": "x"}, "key")
            )
    finally:
        await upstream.aclose()

    assert isinstance(caught.value, UpstreamError)  # the upstream layer's own error
    assert caught.value.code == "upstream_unreachable"
    assert caught.value.retryable is True
    assert caught.value.billed is False  # never sent: not billed
    assert upstream.stats.tts_calls == 3


# -- relayed headers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after": "2.500"}, 2.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "-3"}, None),
        ({"retry-after": "9" * 301}, None),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_is_read_only_when_it_is_a_sane_time(
    headers: dict[str, str], seconds: float | None
) -> None:
    assert retry_after(CIMultiDictProxy(CIMultiDict(headers))) == seconds


@pytest.mark.parametrize(
    ("sent", "relayed", "relayed_ms"),
    [("30", "30", "30000"), ("2.500", "3", "2500"), ("86400", "3600", "3600000")],
)
async def test_a_long_retry_after_reaches_the_client_as_whole_capped_seconds(
    shim: Any, upstream: MockUpstream, sent: str, relayed: str, relayed_ms: str
) -> None:
    upstream.scenario([{"status": 429, "headers": {"retry-after": sent}, "times": 4}])
    response = await shim(tts_retries=3, max_retry_wait=1).post(SPEECH, json=BODY)

    assert response.status_code == 429
    assert response.headers["retry-after"] == relayed
    assert response.headers["retry-after-ms"] == relayed_ms
    assert generations(upstream) == 1


async def test_a_short_retry_after_is_waited_out(shim: Any, upstream: MockUpstream) -> None:
    upstream.scenario([{"status": 429, "headers": {"retry-after": "0"}}])
    response = await shim(tts_retries=1).post(SPEECH, json=BODY)

    assert response.status_code == 200
    assert generations(upstream) == 2


@pytest.mark.parametrize(
    "request_id",
    [CLIENT_TOKEN, f"id-{CLIENT_TOKEN}", "two words", "é" * 40, "x" * 129, "x\r\nset-cookie: a=b"],
)
async def test_an_unsafe_upstream_request_id_is_never_relayed(
    shim: Any, upstream: MockUpstream, request_id: str
) -> None:
    body = {"message": "Internal server error", "requestId": request_id, "statusCode": 500}
    headers = {} if "\n" in request_id else {"x-request-id": request_id}  # not a header value
    upstream.scenario([{"status": 500, "headers": headers, "body": body}])
    response = await shim(tts_retries=0).post(SPEECH, json=BODY)

    assert response.status_code == 500
    relayed = response.headers["x-request-id"]
    assert relayed != request_id
    assert relayed.startswith("req_") or not headers  # the shim's own, or the mock's
    assert CLIENT_TOKEN not in str(response.headers.raw) + response.text
    assert "set-cookie" not in response.headers


# -- the CDN ------------------------------------------------------------------------------


async def test_the_download_is_retried_without_billing_again(
    shim: Any, upstream: MockUpstream
) -> None:
    upstream.scenario([{"route": "audio", "status": 503}, {"route": "audio", "fault": "garbage"}])
    response = await shim(audio_retries=2).post(SPEECH, json=BODY)

    assert response.status_code == 200
    assert generations(upstream) == 1
    assert _downloads(upstream) == 3


async def test_a_download_that_keeps_failing_is_a_final_502(
    shim: Any, upstream: MockUpstream
) -> None:
    upstream.scenario([{"route": "audio", "status": 500, "times": 3}])
    response = await shim(audio_retries=2).post(SPEECH, json=BODY)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "audio_download_failed"
    assert response.headers["x-should-retry"] == "false"
    assert generations(upstream) == 1


@pytest.mark.parametrize(
    ("fmt", "step"),
    [
        (
            "pcm",
            {
                "route": "audio",
                "status": 200,
                "body": "<html>ok</html>",
                "headers": {"content-type": "text/html"},
            },
        ),
        ("pcm", {"route": "audio", "headers": {"content-type": "text/html"}}),
        ("mp3", {"route": "audio", "status": 200, "body": "ID3"}),
        ("mp3", {"route": "audio", "status": 200, "body": ""}),
        ("mp3", {"route": "audio", "fault": "garbage"}),
    ],
)
async def test_what_is_not_audio_is_never_relayed(
    shim: Any, upstream: MockUpstream, fmt: str, step: dict[str, Any]
) -> None:
    upstream.scenario([{**step, "times": 3}])
    response = await shim().post(SPEECH, json={**BODY, "response_format": fmt})

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "bad_upstream_audio"
    assert generations(upstream) == 1


async def test_pcm_labelled_as_pcm_is_accepted(shim: Any, upstream: MockUpstream) -> None:
    response = await shim().post(SPEECH, json={**BODY, "response_format": "pcm"})

    assert response.status_code == 200
    assert decode_audio(response.content, "pcm").seconds > 0.2


async def test_audio_over_the_size_cap_is_refused(shim: Any, upstream: MockUpstream) -> None:
    response = await shim(max_audio_bytes=1000).post(SPEECH, json=BODY)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "audio_download_failed"
    assert "size cap" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/a.wav",
        "http://cdn.aimlapi.com/a.wav",  # scheme matters
        "https://cdn.aimlapi.com:8443/a.wav",  # port matters
        "http://169.254.169.254/latest/meta-data",
        "file:///etc/passwd",
    ],
)
async def test_audio_from_untrusted_origins_is_never_fetched(
    shim: Any, upstream: MockUpstream, url: str
) -> None:
    upstream.scenario([{"audio_url": url}])
    response = await shim().post(SPEECH, json=BODY)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "audio_origin_not_allowed"
    assert _downloads(upstream) == 0


async def test_a_link_two_parsers_read_differently_is_refused(
    shim: Any, upstream: MockUpstream
) -> None:
    # urllib reads the trusted mock as this link's host; a browser-style parser, evil.example.
    # The guard checks the one parse the client connects with, which refuses it outright.
    trusted = upstream.url.split("://", 1)[1]
    upstream.scenario([{"audio_url": f"http://evil.example\\@{trusted}/a.wav"}])

    response = await shim().post(SPEECH, json=BODY)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "audio_origin_not_allowed"
    assert _downloads(upstream) == 0


async def test_extra_audio_origins_can_be_allowed(shim: Any, upstream: MockUpstream) -> None:
    # The same server by another name is another origin: localhost, not 127.0.0.1.
    other = upstream.url.replace("127.0.0.1", "localhost")
    origin = "/".join(other.split("/", 3)[:3])
    client = shim(audio_origins=(origin,))
    await client.post(SPEECH, json=BODY)
    path = upstream.downloads[-1]["path"]
    upstream.scenario([{"audio_url": f"{other}{path}"}])

    response = await client.post(SPEECH, json=BODY)

    assert response.status_code == 200
    assert upstream.downloads[-1]["path"] == path


async def test_a_redirect_to_another_origin_is_not_followed(
    shim: Any, upstream: MockUpstream
) -> None:
    upstream.scenario(
        [{"route": "audio", "status": 302, "headers": {"location": "https://evil.example/x.wav"}}]
    )
    response = await shim().post(SPEECH, json=BODY)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "audio_origin_not_allowed"
    assert _downloads(upstream) == 1


async def test_a_redirect_within_allowed_origins_is_followed(
    shim: Any, upstream: MockUpstream
) -> None:
    await shim().post(SPEECH, json=BODY)
    moved = upstream.downloads[-1]["path"]
    location = upstream.url + moved
    upstream.scenario([{"route": "audio", "status": 301, "headers": {"location": location}}])

    response = await shim().post(SPEECH, json=BODY)

    assert response.status_code == 200
    assert decode_audio(response.content, "wav").seconds > 0.2
    assert len(upstream.downloads) == 3
    assert upstream.downloads[-1]["path"] == moved


# -- keys ---------------------------------------------------------------------------------


def _bearer(upstream: MockUpstream) -> str:
    header: str = upstream.requests[-1]["headers"]["authorization"]
    return header


async def test_the_client_token_is_passed_through_without_a_server_key(
    shim: Any, upstream: MockUpstream
) -> None:
    await shim().post(SPEECH, json=BODY)

    assert _bearer(upstream).endswith(CLIENT_TOKEN[-4:])


async def test_a_server_key_replaces_the_client_token(shim: Any, upstream: MockUpstream) -> None:
    await shim(upstream_key="aiml-server-key").post(SPEECH, json=BODY)

    assert _bearer(upstream).endswith("-key")
    assert not _bearer(upstream).endswith(CLIENT_TOKEN[-4:])


async def test_no_key_and_no_token_is_401(shim: Any, upstream: MockUpstream) -> None:
    client = shim()
    del client.headers["authorization"]
    response = await client.post(SPEECH, json=BODY)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert upstream.journal == []


async def test_the_cdn_never_sees_a_key_or_client_headers(
    shim: Any, upstream: MockUpstream
) -> None:
    client = shim(upstream_key="aiml-server-key")
    await client.post(SPEECH, json=BODY, headers={"x-secret": "s", "cookie": "c=1"})

    (download,) = upstream.downloads
    assert not {"authorization", "x-secret", "cookie"} & set(download["headers"])


# -- proxies ------------------------------------------------------------------------------


def test_proxies_are_the_environments_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://tls-proxy:3128")
    monkeypatch.setenv("ALL_PROXY", "http://any-proxy:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    proxies = Proxies.from_config(Config())
    monkeypatch.setenv("HTTPS_PROXY", "http://later:1")  # read once: not seen

    assert proxies.for_url(URL("https://api.aimlapi.com/v1/tts")) == "http://tls-proxy:3128"
    assert proxies.for_url(URL("http://cdn.example/a.mp3")) == "http://any-proxy:3128"
    assert proxies.for_url(URL("https://internal.example/a.mp3")) is None
    # --proxy carries everything, NO_PROXY or not.
    explicit = Proxies.from_config(Config(proxy="http://corp:8080"))
    assert explicit.for_url(URL("https://internal.example/a.mp3")) == "http://corp:8080"


# -- the retry policy ------------------------------------------------------------------


def _failing(errors: list[APIError], calls: list[str], name: str) -> Any:
    """An attempt that raises ``errors`` in turn, then returns ``name``."""

    async def attempt() -> str:
        calls.append(name)
        if errors:
            raise errors.pop(0)
        return name

    return attempt


def _busy() -> APIError:
    return APIError(503, "busy", retryable=True, retry_after=0)


async def test_concurrent_runs_of_one_policy_keep_their_own_counts() -> None:
    # One tenacity controller serves every run (RetryPolicy's docstring says why that is
    # safe): runs interleaved on the event loop must not see each other's attempts.
    policy = RetryPolicy(retries=2, max_wait=1.0)
    calls: list[str] = []
    final = APIError(400, "bad")
    busy = [_busy(), _busy(), _busy()]
    runs = [
        policy.run(_failing([_busy(), _busy()], calls, "twice busy")),
        policy.run(_failing(list(busy), calls, "always busy")),
        policy.run(_failing([final], calls, "refused")),
        policy.run(_failing([], calls, "fine")),
    ]

    outcomes = await asyncio.gather(*runs, return_exceptions=True)

    assert outcomes[0] == "twice busy"
    assert outcomes[1] is busy[-1]  # the last error, as it was
    assert outcomes[2] is final
    assert outcomes[3] == "fine"
    assert [calls.count(n) for n in ("twice busy", "always busy", "refused", "fine")] == [
        3,
        3,
        1,
        1,
    ]


async def test_a_retry_after_over_the_limit_ends_the_retries() -> None:
    policy = RetryPolicy(retries=3, max_wait=0.5)
    calls: list[str] = []
    late = APIError(429, "later", retryable=True, retry_after=30)

    with pytest.raises(APIError) as caught:
        await policy.run(_failing([late], calls, "late"))

    assert caught.value is late
    assert calls == ["late"]


async def test_no_retries_means_one_attempt() -> None:
    calls: list[str] = []

    with pytest.raises(APIError):
        await RetryPolicy(retries=0, max_wait=1.0).run(_failing([_busy()], calls, "once"))

    assert calls == ["once"]


# -- an attempt sent is run to its answer, and counted ---------------------------------


class _Meter:
    """Records what :meth:`Upstream.generate` tells the request's bill."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def sending(self, characters: int) -> None:
        self.calls.append(("sending", characters))

    def answered(self, characters: int, billed: bool) -> None:
        self.calls.append(("answered", characters, billed))


async def _until(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("step", "billed"),
    [
        ({"shape": "binary"}, True),  # the audio itself: opened, then closed unread
        ({"shape": "url-object"}, True),
        ({"status": 400}, False),  # an error status: nothing was billed
        ({"status": 500, "times": 3}, False),  # and no retry, once nobody waits
    ],
)
async def test_an_attempt_its_request_stopped_waiting_for_still_reaches_the_meter(
    upstream: MockUpstream, step: dict[str, Any], billed: bool
) -> None:
    upstream.scenario([{**step, "delay_ms": 300}])
    upstream_client = Upstream(Config(upstream_url=upstream.url, tts_retries=2))
    meter = _Meter()
    body = {"model": "openai/tts-1", "text": "Hello", "voice": "alloy", "response_format": "wav"}
    try:
        waiting = asyncio.ensure_future(upstream_client.generate(body, "key", meter))
        await _until(lambda: generations(upstream) == 1)  # sent, not yet answered
        waiting.cancel()  # the client left
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert meter.calls == [("sending", 5)]

        await _until(lambda: len(meter.calls) == 2)
        assert meter.calls == [("sending", 5), ("answered", 5, billed)]
        await _until(lambda: upstream_client.stats.open_streams == 0)
        assert upstream_client.stats.open_streams == 0
        assert generations(upstream) == 1
    finally:
        await upstream_client.aclose()


@pytest.mark.parametrize("decode_all", [True, False])
async def test_a_binary_reply_opened_as_it_arrives_is_checked_as_its_caller_asks(
    upstream: MockUpstream, monkeypatch: pytest.MonkeyPatch, decode_all: bool
) -> None:
    # The attempt's own task opens it, before the caller has it: every frame decoded
    # only for audio that is to be cached (shim.synthesis passes whether it is).
    import shim.upstream.api as api

    asked: list[bool] = []
    real = api.open_stream

    async def spy(*args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs["decode_all"])
        return await real(*args, **kwargs)

    monkeypatch.setattr(api, "open_stream", spy)
    upstream.scenario([{"shape": "binary"}])
    upstream_client = Upstream(Config(upstream_url=upstream.url))
    body = {"model": "openai/tts-1", "text": "Hello", "voice": "alloy", "response_format": "wav"}
    try:
        ref = await upstream_client.generate(body, "key", decode_all=decode_all)
        assert ref.stream is not None  # opened in the attempt
        stream = await upstream_client.open(ref, decode_all=not decode_all)
        data = b"".join([chunk async for chunk in stream])
        await stream.aclose()
    finally:
        await upstream_client.aclose()

    assert asked == [decode_all]  # once, as the generation was asked; not reopened
    assert decode_audio(data, "wav").seconds > 0


# -- resuming a cut download ------------------------------------------------------------


def _validators(**changes: Any) -> Validators:
    fields: dict[str, Any] = {
        "content_type": "audio/mpeg",
        "total": 1000,
        "etag": None,
        "last_modified": None,
        "encoded": False,
    }
    return Validators(**{**fields, **changes})


@pytest.mark.parametrize(
    ("first", "headers"),
    [
        ({}, {"range": "bytes=400-"}),
        ({"etag": '"abc"'}, {"range": "bytes=400-", "if-range": '"abc"'}),
        # A weak ETag may not be used in If-Range; the date then stands in.
        ({"etag": 'W/"abc"', "last_modified": "Tue, 01 Dec 2026 10:00:00 GMT"},
         {"range": "bytes=400-", "if-range": "Tue, 01 Dec 2026 10:00:00 GMT"}),
        ({"etag": 'W/"abc"'}, {"range": "bytes=400-"}),
        # A compressed body's ranges count compressed bytes: the whole file, skipped.
        ({"encoded": True, "etag": '"abc"'}, {}),
    ],
)  # fmt: skip
def test_what_a_resumption_asks_the_cdn_for(first: dict[str, Any], headers: dict[str, str]) -> None:
    assert resume_headers(400, _validators(**first)) == headers


async def test_a_binary_reply_cut_mid_body_is_not_resumed(
    shim: Any, upstream: MockUpstream
) -> None:
    # The audio is the billed reply itself: there is no link to fetch it from again.
    upstream.scenario([{"shape": "binary", "fault": "cut", "cut_after": 5000}])

    with pytest.raises(StreamAborted):
        await shim().post(SPEECH, json={**BODY, "input": "Shapes. " * 30})
    assert generations(upstream) == 1
    assert _downloads(upstream) == 0
