"""The fault matrix: every mock fault on each upstream route, before and during the
audio stream, on real sockets.

For each case: the status and envelope the client gets, how many calls each upstream
route received (the billed generation is retried at most ``tts_retries`` times, the
download ``audio_retries`` times, and nothing after audio bytes reached the client),
and a time bound: every failure before the first byte is answered within the
deadline (plus a scheduling margin), and a failure after it cuts the transfer.
"""

from __future__ import annotations

import base64
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from contract_tests.conftest import LOOPBACK_TLS
from contract_tests.reliability.conftest import (
    FAST,
    MARGIN,
    SPEECH,
    Outcome,
    RawServer,
    call,
    reset,
    routes,
    settle,
)
from mockserver import speech_duration
from mockserver.audio import encode, samples_for
from shim.testing import MockUpstream, ShimServer, decode_audio
from tests.figures import record

CHAT = {"model": "tts-1", "messages": [{"role": "user", "content": "Reliability."}]}
SURVIVED: list[dict[str, Any]] = []


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    """Record what this module's cases measured, whichever of them ran."""
    yield
    if SURVIVED:
        record("faults", cases=len(SURVIVED), results=SURVIVED)


def _survived(case: str, outcome: Outcome) -> None:
    SURVIVED.append({"id": case, "status": outcome.status, "seconds": round(outcome.elapsed, 2)})


@dataclass(frozen=True)
class Case:
    id: str
    steps: list[dict[str, Any]]
    status: int
    code: str | None
    tts: int
    #: Downloads the mock saw; a range where a transport may also, on its own, retry a
    #: GET whose reused keep-alive connection failed before any byte (a stale one).
    audio: int | tuple[int, int]
    settings: dict[str, Any] = field(default_factory=dict)
    #: Whether the client may retry (no ``x-should-retry: false``).
    retryable: bool | None = None
    #: At least this long (seconds): the timeouts were really waited for.
    slower_than: float = 0.0


def api(fault: str | None = None, **step: Any) -> dict[str, Any]:
    return {"route": "tts", **({"fault": fault} if fault else {}), **step}


def cdn(fault: str | None = None, **step: Any) -> dict[str, Any]:
    return {"route": "audio", **({"fault": fault} if fault else {}), **step}


BEFORE_THE_STREAM = [
    # The billed generation call: sent again only when it cannot have been billed, that
    # is when the API answered 429 or 5xx with a status line (tts_retries=1). A reply
    # that breaks, stalls or is garbage after the request went out is final.
    Case("api-reset", [api("reset", times=2)], 502, "upstream_unreachable", 1, 0,
         retryable=False),
    Case("api-garbage", [api("garbage", times=2)], 502, "bad_upstream_response", 1, 0,
         retryable=False),
    Case("api-truncated", [api("truncated", times=2)], 502, "upstream_unreachable", 1, 0,
         retryable=False),
    Case("api-slow-body", [api("slow-body", delay_ms=400)], 200, None, 1, 1),
    Case("api-stall", [api(delay_ms=1500, times=2)], 504, "timeout", 1, 0,
         retryable=False, slower_than=0.5),
    Case("api-stall-past-the-deadline", [api(delay_ms=3000)], 504, "timeout", 1, 0,
         settings={"generation_timeout": 10.0, "deadline": 1.0}, retryable=False,
         slower_than=1.0),
    Case("api-500", [api(status=500, times=2)], 500, None, 2, 0, retryable=True),
    Case("api-502", [api(status=502, times=2)], 502, None, 2, 0, retryable=True),
    Case("api-503", [api(status=503, times=2)], 503, "service_unavailable", 2, 0,
         retryable=True),
    Case("api-504", [api(status=504, times=2)], 504, "timeout", 2, 0, retryable=True),
    Case("api-500-then-ok", [api(status=500)], 200, None, 2, 1),
    Case("api-429-long-retry-after", [api(status=429, headers={"retry-after": "30"})], 429,
         "rate_limit_exceeded", 1, 0, retryable=True),
    Case("api-429-then-ok", [api(status=429, headers={"retry-after": "0"})], 200, None, 2, 1),
    Case("api-400", [api(status=400)], 400, None, 1, 0, retryable=False),
    Case("api-401", [api(status=401)], 401, "invalid_api_key", 1, 0, retryable=False),
    Case("api-402", [api(status=402)], 402, "insufficient_quota", 1, 0, retryable=False),
    Case("api-403", [api(status=403)], 403, "insufficient_quota", 1, 0, retryable=False),
    Case("api-404", [api(status=404)], 404, None, 1, 0, retryable=False),
    Case("api-no-audio-in-reply", [api(shape="metadata-only")], 502, "no_audio_in_reply", 1, 0,
         retryable=False),
    Case("api-untrusted-audio-origin", [api(audio_url="http://203.0.113.9/a.mp3")], 502,
         "audio_origin_not_allowed", 1, 0, retryable=False),
    # The CDN download: not billed, retried twice (audio_retries=2) before any byte is
    # sent; a client retry would pay for a new generation, so it is told not to.
    Case("cdn-reset-every-time", [cdn("reset", times=8)], 502, "upstream_unreachable", 1,
         (3, 6), retryable=False),
    Case("cdn-reset-once", [cdn("reset")], 200, None, 1, 2),
    Case("cdn-garbage", [cdn("garbage", times=3)], 502, "bad_upstream_audio", 1, 3,
         retryable=False),
    Case("cdn-signature-junk", [cdn("signature-junk", times=3)], 502, "bad_upstream_audio", 1,
         3, retryable=False),
    Case("cdn-500", [cdn(status=500, times=3)], 502, "audio_download_failed", 1, 3,
         retryable=False),
    Case("cdn-404", [cdn(status=404)], 502, "audio_download_failed", 1, 1, retryable=False),
    Case("cdn-stall", [cdn(delay_ms=1500, times=2)], 504, "timeout", 1, 2,
         settings={"audio_retries": 1}, retryable=False, slower_than=1.0),
    Case("cdn-first-byte-too-slow", [cdn("slow-body", delay_ms=11_000, times=2)], 502,
         "audio_download_failed", 1, 2, settings={"audio_retries": 1}, slower_than=1.0),
]  # fmt: skip


def decodes(audio: bytes, fmt: str = "mp3") -> float:
    """Seconds of audio in ``audio``; raises if it is not a whole, valid file."""
    return decode_audio(audio, fmt).seconds


@pytest.mark.parametrize("case", BEFORE_THE_STREAM, ids=lambda case: case.id)
def test_faults_before_the_first_byte(
    tts_mock: MockUpstream, tts_shim_factory: Callable[..., ShimServer], case: Case
) -> None:
    settings = {**FAST, **case.settings}
    shim = tts_shim_factory(**settings)
    tts_mock.scenario(case.steps)

    outcome = call(shim.url, json_body=SPEECH)

    assert outcome.status == case.status, outcome.body[:300]
    assert outcome.complete
    assert len(routes(tts_mock, "tts")) == case.tts
    low, high = case.audio if isinstance(case.audio, tuple) else (case.audio, case.audio)
    assert low <= len(routes(tts_mock, "audio")) <= high
    assert outcome.elapsed < settings["deadline"] + MARGIN
    assert outcome.elapsed >= case.slower_than
    if case.status == 200:
        assert outcome.headers["content-type"] == "audio/mpeg"
        assert decodes(outcome.body) > 0.5
    else:
        error = outcome.envelope()
        assert error["code"] == case.code
        assert error["type"] in ("server_error", "invalid_request_error", "requests",
                                 "insufficient_quota", "permission_denied")  # fmt: skip
        assert outcome.headers["x-request-id"]
    if case.retryable is not None:
        assert (outcome.headers.get("x-should-retry") != "false") == case.retryable
    state = shim.app.state.shim  # type: ignore[attr-defined]
    settle(state)
    assert state.upstream.stats.open_streams == 0
    assert state.capacity.in_flight == 0
    _survived(case.id, outcome)


# -- during the stream ------------------------------------------------------------


STREAMED = [
    (SPEECH, "/v1/audio/speech", "audio"),
    ({**SPEECH, "stream_format": "sse"}, "/v1/audio/speech", "speech-sse"),
    ({**CHAT, "stream": True}, "/v1/chat/completions", "chat-sse"),
]


def _whole_audio(outcome: Outcome, kind: str) -> float:
    """Seconds of audio in a complete answer of ``kind``."""
    if kind == "audio":
        return decodes(outcome.body)
    events = outcome.events()
    assert events[-1] == "[DONE]"
    if kind == "speech-sse":
        data = [
            base64.b64decode(e["audio"]) for e in events[:-1] if e["type"] == "speech.audio.delta"
        ]
        return decodes(b"".join(data))
    fragments = [
        base64.b64decode(e["choices"][0]["delta"]["audio"]["data"])
        for e in events[:-1]
        if e.get("choices") and (e["choices"][0]["delta"].get("audio") or {}).get("data")
    ]
    return decode_audio(b"".join(fragments), "pcm16").seconds


@pytest.mark.parametrize(("body", "path", "kind"), STREAMED)
@pytest.mark.parametrize("ranges", [True, False], ids=["range", "no-range"])
def test_audio_cut_once_is_resumed_without_a_seam(
    tts_mock: MockUpstream,
    tts_shim_factory: Callable[..., ShimServer],
    body: dict[str, Any],
    path: str,
    kind: str,
    ranges: bool,
) -> None:
    shim = tts_shim_factory(**FAST)
    tts_mock.scenario([cdn("truncated"), *([] if ranges else [cdn(ignore_range=True)])])

    outcome = call(shim.url, path=path, json_body=body)

    assert outcome.status == 200
    assert outcome.complete  # resumed from the same link: the client sees no cut
    assert _whole_audio(outcome, kind) > 0.5
    assert len(routes(tts_mock, "tts")) == 1  # nothing generated twice
    first, again = routes(tts_mock, "audio")
    assert again["path"] == first["path"]
    assert again["headers"]["range"].startswith("bytes=")
    assert again["status"] == (206 if ranges else 200)
    assert outcome.elapsed < FAST["deadline"] + MARGIN
    _survived(f"cdn-truncated-once-{kind}-{'range' if ranges else 'no-range'}", outcome)


@pytest.mark.parametrize(("body", "path", "kind"), STREAMED)
def test_audio_cut_every_time_cuts_the_transfer(
    tts_mock: MockUpstream,
    tts_shim_factory: Callable[..., ShimServer],
    body: dict[str, Any],
    path: str,
    kind: str,
) -> None:
    shim = tts_shim_factory(**FAST)
    tts_mock.scenario([cdn("truncated", times=3)])

    outcome = call(shim.url, path=path, json_body=body)

    assert outcome.status == 200  # the status line had gone out with the first bytes
    assert not outcome.complete  # ...so the only honest signal left is the cut
    assert outcome.body  # some audio was relayed before the cut
    assert len(routes(tts_mock, "tts")) == 1
    # Resumed within the download retries (audio_retries=2), cut every time.
    assert len(routes(tts_mock, "audio")) == 3
    if kind != "audio":
        events = outcome.events()
        assert "[DONE]" not in events
        last = events[-1]
        error = last["error"]
        assert error["code"] == "audio_download_failed"
        if kind == "speech-sse":
            assert last["type"] == "error"
    assert outcome.elapsed < FAST["deadline"] + MARGIN
    _survived(f"cdn-truncated-{kind}", outcome)


def test_audio_cut_after_its_last_byte_is_complete(
    tts_mock: MockUpstream, tts_shim_factory: Callable[..., ShimServer]
) -> None:
    # Every byte arrived, the end of the chunked body did not: the resumption asks for
    # what is past the end, the CDN's 416 says there is nothing, and the audio is whole.
    duration_ms = round(speech_duration(SPEECH["input"]) * 1000)
    size = len(encode(SPEECH["voice"], samples_for(duration_ms), "mp3"))
    shim = tts_shim_factory(**FAST)
    tts_mock.scenario([cdn("cut", cut_after=size)])

    outcome = call(shim.url, json_body=SPEECH)

    assert outcome.status == 200
    assert outcome.complete
    assert len(outcome.body) == size
    _, again = routes(tts_mock, "audio")
    assert (again["headers"]["range"], again["status"]) == (f"bytes={size}-", 416)
    _survived("cdn-cut-after-the-last-byte", outcome)


#: The first download, cut (with an ETag), then the file behind the link changed.
FIRST_CUT = cdn("cut", cut_after=20_000, headers={"etag": '"v1"'})  # streamed: no length
NOT_THE_SAME = {
    "other-content-type": [FIRST_CUT, cdn(audio_format="wav")],
    "other-bytes": [FIRST_CUT, cdn(ignore_range=True, body="not the audio sent " * 12000)],
    "other-etag": [FIRST_CUT, cdn(headers={"etag": '"v2"'})],
    "wrong-range": [
        FIRST_CUT,
        cdn(status=206, headers={"content-range": "bytes 0-99/100"}, body="x" * 100),
    ],
    # The first reply announced its length; the second is another size.
    "other-length": [
        cdn("truncated", headers={"etag": '"v1"'}),
        cdn(ignore_range=True, body="not the audio sent " * 12000),
    ],
}


@pytest.mark.parametrize("change", list(NOT_THE_SAME), ids=list(NOT_THE_SAME))
def test_a_resumed_download_of_other_audio_cuts_the_transfer(
    tts_mock: MockUpstream, tts_shim_factory: Callable[..., ShimServer], change: str
) -> None:
    shim = tts_shim_factory(**FAST)
    tts_mock.scenario(NOT_THE_SAME[change])

    outcome = call(shim.url, json_body={**SPEECH, "input": "Reliability. " * 20})

    assert outcome.status == 200
    assert not outcome.complete  # never spliced: the transfer is cut instead
    _, again = routes(tts_mock, "audio")  # and not tried again: it is not the same
    assert again["headers"]["if-range"] == '"v1"'  # a changed file comes whole, not ranged
    assert len(routes(tts_mock, "tts")) == 1
    state = shim.app.state.shim  # type: ignore[attr-defined]
    settle(state)
    assert state.upstream.stats.open_streams == 0
    _survived(f"cdn-resumed-{change}", outcome)


def test_a_resumption_that_fails_is_tried_again_within_the_retries(
    tts_mock: MockUpstream, tts_shim_factory: Callable[..., ShimServer]
) -> None:
    shim = tts_shim_factory(**FAST)
    tts_mock.scenario([cdn("cut", cut_after=20_000), cdn(status=503)])

    outcome = call(shim.url, json_body={**SPEECH, "input": "Reliability. " * 20})

    assert outcome.status == 200
    assert outcome.complete
    assert [e["status"] for e in routes(tts_mock, "audio")] == [200, 503, 206]
    assert decodes(outcome.body) == pytest.approx(speech_duration("Reliability. " * 20), abs=0.15)
    _survived("cdn-resumption-503-then-ok", outcome)


def test_truncated_audio_for_a_whole_chat_answer_is_a_502(
    tts_mock: MockUpstream, tts_shim_factory: Callable[..., ShimServer]
) -> None:
    shim = tts_shim_factory(**FAST)
    tts_mock.scenario([cdn("truncated", times=3)])

    outcome = call(shim.url, path="/v1/chat/completions", json_body=CHAT)

    assert outcome.status == 502  # not streamed: the whole answer is built first
    assert outcome.envelope()["code"] == "audio_download_failed"
    assert outcome.headers["x-should-retry"] == "false"
    assert len(routes(tts_mock, "audio")) == 3
    _survived("cdn-truncated-chat", outcome)


def test_a_slow_cdn_is_relayed_whole_past_the_deadline(
    tts_mock: MockUpstream, tts_shim_factory: Callable[..., ShimServer]
) -> None:
    # The deadline covers the wait for the first byte; after it, only silence longer
    # than download_timeout stops a download, so long or slow audio still arrives.
    shim = tts_shim_factory(**{**FAST, "deadline": 1.0})
    tts_mock.scenario([cdn("slow-body", delay_ms=1600)])

    outcome = call(shim.url, json_body={**SPEECH, "input": "A longer sentence to speak. " * 3})

    assert outcome.status == 200
    assert outcome.complete
    assert outcome.elapsed > 1.5
    assert decodes(outcome.body) > 1.0
    _survived("cdn-slow-body", outcome)


def _mp3(mock: MockUpstream) -> bytes:
    reply = httpx.post(
        mock.url + "/v1/tts",
        json={"model": "openai/tts-1", "text": "A clip for the raw server. " * 4, "voice": "alloy"},
        headers={"authorization": "Bearer k"},
        verify=LOOPBACK_TLS,
    )
    return httpx.get(reply.json()["audio"]["url"], verify=LOOPBACK_TLS).content


@pytest.mark.parametrize("how", ["stall", "reset"])
def test_a_cdn_that_breaks_mid_body_cuts_the_transfer_in_time(
    tts_mock: MockUpstream,
    tts_shim_factory: Callable[..., ShimServer],
    raw_server: Callable[..., RawServer],
    how: str,
) -> None:
    audio = _mp3(tts_mock)

    def half_then_break(conn: socket.socket, number: int) -> None:
        head = f"HTTP/1.1 200 OK\r\ncontent-type: audio/mpeg\r\ncontent-length: {len(audio)}"
        conn.sendall(head.encode() + b"\r\n\r\n" + audio[: len(audio) // 2])
        if how == "stall":
            cdn_server.stall(5)
        else:
            reset(conn)

    cdn_server = raw_server(half_then_break)
    shim = tts_shim_factory(**FAST, audio_origins=(cdn_server.url,))
    tts_mock.reset()
    tts_mock.scenario([api(audio_url=cdn_server.url + "/generations/x/clip.mp3")])

    outcome = call(shim.url, json_body=SPEECH)

    assert outcome.status == 200
    assert not outcome.complete
    assert 0 < len(outcome.body) < len(audio)
    # Resumed twice (audio_retries=2; this CDN ignores Range: the same half again,
    # skipped), broken every time.
    assert cdn_server.connections == 3
    tries = FAST["audio_retries"] + 1
    bound = tries * FAST["download_timeout"] + MARGIN if how == "stall" else MARGIN
    assert outcome.elapsed < bound
    state = shim.app.state.shim  # type: ignore[attr-defined]
    settle(state)
    assert state.upstream.stats.open_streams == 0
    _survived(f"cdn-raw-{how}-mid-body", outcome)


NOT_HTTP = {
    "not-http": b"garbage garbage\r\n\r\n",
    "bad-header": b"HTTP/1.1 200 OK\r\nBad Header: x\r\ncontent-length: 2\r\n\r\n{}",
    "bad-chunk": b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
    "short-json": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    b"content-length: 100\r\n\r\n{",
}


@pytest.mark.parametrize("reply", list(NOT_HTTP), ids=list(NOT_HTTP))
def test_an_api_that_does_not_speak_http_is_a_final_502(
    tts_shim_factory: Callable[..., ShimServer],
    raw_server: Callable[..., RawServer],
    reply: str,
) -> None:
    def answer(conn: socket.socket, number: int) -> None:
        conn.sendall(NOT_HTTP[reply])

    api_server = raw_server(answer)
    shim = tts_shim_factory(**FAST, upstream_url=api_server.url)

    outcome = call(shim.url, json_body=SPEECH)

    assert outcome.status == 502, outcome.body
    assert outcome.envelope()["type"] == "server_error"
    assert outcome.headers["x-should-retry"] == "false"  # the request went out: maybe billed
    assert api_server.connections == 1  # never sent again
    assert outcome.elapsed < FAST["deadline"] + MARGIN
    _survived(f"api-raw-{reply}", outcome)
