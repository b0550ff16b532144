"""Structured logs: the formats, the scrubbing, and the access log's fields."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.config
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from shim import Config
from shim.logs import ACCESS_LOGGER, JSONFormatter, TextFormatter, log_config
from shim.testing import MockUpstream, ShimServer


def _record(message: str, *args: Any, exc: bool = False, **extra: Any) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("the detail")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("tts_shim", logging.WARNING, __file__, 1, message, args, exc_info)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_lines_are_one_object_each_with_the_traceback_inside() -> None:
    line = JSONFormatter().format(_record("broke: %s", "x", exc=True))

    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "warning"
    assert data["logger"] == "tts_shim"
    assert data["message"] == "broke: x"
    assert "ValueError: the detail" in data["exc"]
    assert data["time"].endswith("Z")


def test_json_lines_survive_lone_surrogates() -> None:
    line = JSONFormatter().format(_record("odd input %s", "\ud800"))

    line.encode("utf-8")  # would raise if the surrogate were written raw
    assert json.loads(line)["message"] == "odd input \ud800"


def test_access_fields_are_top_level_keys() -> None:
    fields = {"request_id": "req_1", "status": 200, "bytes": 10, "route": "/v1/models"}
    data = json.loads(JSONFormatter().format(_record("GET /v1/models 200", access=fields)))

    assert {k: data[k] for k in fields} == fields


@pytest.mark.parametrize("formatter", [JSONFormatter, TextFormatter])
def test_configured_keys_are_scrubbed_from_every_line(formatter: Any) -> None:
    secrets = ("sk-server-abcdef123456", "client-key-98765")
    fmt = formatter(secrets=secrets)

    line = fmt.format(
        _record("upstream said: bad key sk-server-abcdef123456 (client-key-98765)", exc=True)
    )

    assert "sk-server-abcdef123456" not in line
    assert "client-key-98765" not in line
    assert line.count("[redacted]") == 2


def test_very_short_keys_are_not_scrubbed_everywhere() -> None:
    line = TextFormatter(secrets=("a",)).format(_record("a cat sat"))

    assert "a cat sat" in line


def test_text_lines_carry_the_access_fields() -> None:
    fields = {"request_id": "req_9", "method": "POST", "status": 201, "duration_ms": 1.5}
    line = TextFormatter().format(_record("POST /v1/audio/speech 201", access=fields))

    assert "POST /v1/audio/speech 201" in line
    assert "request_id=req_9" in line
    assert "duration_ms=1.5" in line
    assert "method=" not in line  # already in the message


@pytest.fixture
def restore_logging() -> Iterator[None]:
    names = ["", "uvicorn", "uvicorn.error", "uvicorn.access", "tts_shim"]
    saved = {
        name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level,
               logging.getLogger(name).propagate)
        for name in names
    }  # fmt: skip
    yield
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.mark.usefixtures("restore_logging")
def test_the_configuration_sends_everything_through_one_formatter() -> None:
    config = log_config(Config(log_format="json", log_level="info", upstream_key="sk-0123456789"))
    out = io.StringIO()
    logging.config.dictConfig(config)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)

    logging.getLogger("uvicorn.error").info("Started server process")
    logging.getLogger("tts_shim").info("key is sk-0123456789")
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET /?key=x HTTP/1.1" 200')
    logging.getLogger("tts_shim").debug("not at info")

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["logger"] for line in lines] == ["uvicorn.error", "tts_shim"]
    assert lines[1]["message"] == "key is [redacted]"


@pytest.mark.usefixtures("restore_logging")
async def test_upstream_calls_leave_no_line_of_httpx_and_no_cdn_query(shim: Any) -> None:
    logging.config.dictConfig(log_config(Config(log_format="json", log_level="debug")))
    out = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)

    response = await shim().post("/v1/audio/speech", json={"model": "tts-1", "input": "Hi"})

    assert response.status_code == 200
    loggers = [json.loads(line)["logger"] for line in out.getvalue().splitlines()]
    assert "tts_shim.access" in loggers  # the shim's own line is written
    assert not {"httpx", "httpcore"} & set(loggers)  # "HTTP Request: GET <signed url>"
    assert "duration_ms=" not in out.getvalue()  # the CDN link's query string


# -- the access log ---------------------------------------------------------------


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.DEBUG, logger=ACCESS_LOGGER)

    def records() -> list[tuple[int, dict[str, Any]]]:
        return [(r.levelno, r.access) for r in caplog.records if r.name == ACCESS_LOGGER]  # type: ignore[attr-defined]

    return records


async def test_a_speech_request_is_logged_with_timings_and_sizes(shim: Any, access: Any) -> None:
    response = await shim().post(
        "/v1/audio/speech?api_key=sk-in-the-query", json={"model": "tts-1", "input": "Hi"}
    )

    ((level, fields),) = access()
    assert level == logging.INFO
    assert fields["route"] == "/v1/audio/speech"
    assert fields["method"] == "POST"
    assert fields["status"] == 200
    assert fields["bytes"] == len(response.content)
    assert fields["upstream_ms"] >= 0
    assert fields["queued_ms"] >= 0
    assert fields["duration_ms"] >= fields["upstream_ms"]
    assert fields["request_id"].startswith("req_")
    assert "aborted" not in fields
    assert "sk-in-the-query" not in json.dumps(fields)


async def test_routes_are_logged_as_templates_and_refusals_too(shim: Any, access: Any) -> None:
    client = shim(client_keys=("sk-client-0001",), upstream_key="sk-server", private_catalog=True)
    await client.get("/v1/models/tts-1")  # wrong key: 401 before routing
    client.headers["authorization"] = "Bearer sk-client-0001"
    await client.get("/v1/models/openai/tts-1-hd")
    await client.get("/healthz")

    (_, refused), (_, found), (health_level, health) = access()
    assert (refused["status"], refused["route"]) == (401, "/v1/models/tts-1")
    assert (found["status"], found["route"]) == (200, "/v1/models/{model_id:path}")
    assert health_level == logging.DEBUG  # probes do not flood the log
    assert health["route"] == "/healthz"


async def test_an_upstream_request_id_is_logged_beside_ours(
    shim: Any, upstream: MockUpstream, access: Any
) -> None:
    upstream.scenario([{"headers": {"x-request-id": "up-123"}}])

    response = await shim().post("/v1/audio/speech", json={"model": "tts-1", "input": "Hi"})

    ((_, fields),) = access()
    assert response.headers["x-request-id"] == "up-123"
    assert fields["upstream_request_id"] == "up-123"
    assert fields["request_id"].startswith("req_")


def test_a_cut_stream_is_logged_as_aborted(
    tts_shim: ShimServer, tts_mock: MockUpstream, access: Any
) -> None:
    # On real sockets: in process, httpx's ASGITransport reads a reply whole before
    # the shim sees it, so nothing can break off mid-stream there.
    # Cut every time: the first download and both resumptions (--audio-retries 2).
    tts_mock.scenario([{"route": "audio", "fault": "truncated", "times": 3}])
    chunks: list[bytes] = []

    def download() -> None:
        with httpx.stream(
            "POST",
            tts_shim.base_url + "/audio/speech",
            json={"model": "tts-1", "input": "Hi"},
            headers={"authorization": "Bearer sk-test"},
        ) as response:
            assert response.status_code == 200
            chunks.extend(response.iter_raw())

    with pytest.raises(httpx.HTTPError):
        download()

    (fields,) = [fields for _, fields in _settled(access) if fields["route"] == "/v1/audio/speech"]
    assert fields["status"] == 200
    assert fields["aborted"] is True
    assert fields["bytes"] == sum(map(len, chunks))


def _settled(access: Any) -> list[tuple[int, dict[str, Any]]]:
    """The access records, once the server thread has written the last one."""
    for _ in range(200):
        records: list[tuple[int, dict[str, Any]]] = access()
        if records:
            return records
        time.sleep(0.01)
    return []


async def _call(app: Any, body_parts: list[bytes], then_disconnect: bool) -> list[Any]:
    """One request straight into ``app``: the body in parts, then the client gone."""
    parts = [{"type": "http.request", "body": p, "more_body": True} for p in body_parts]
    sent: list[Any] = []

    async def receive() -> Any:
        if parts:
            return parts.pop(0)
        if then_disconnect:
            return {"type": "http.disconnect"}
        await asyncio.Event().wait()

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/audio/speech",
        "raw_path": b"/v1/audio/speech",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"shim"), (b"authorization", b"Bearer sk-own-1234")],
        "server": ("shim", 80),
        "client": ("127.0.0.1", 5000),
    }
    await app(scope, receive, send)
    return sent


async def test_a_client_gone_while_sending_its_body_is_a_499_not_an_error(
    access: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from shim.app import create_app

    app = create_app(Config(cache=False))
    async with app.router.lifespan_context(app):
        await _call(app, [b'{"model": "tts-1", "inp'], then_disconnect=True)

    ((level, fields),) = access()
    assert level == logging.INFO
    assert fields["status"] == 499
    assert fields["client_closed"] is True
    assert "aborted" not in fields
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_request_cut_while_draining_is_one_warning_and_a_503(
    access: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from shim.app import create_app

    app = create_app(Config(cache=False))
    async with app.router.lifespan_context(app):
        capacity = app.state.shim.capacity
        request = asyncio.ensure_future(_call(app, [b'{"model": "tts-1", "inp'], False))
        for _ in range(100):  # until it is reading a body that never ends
            await asyncio.sleep(0)
        assert capacity.requests == 1
        capacity.start_draining()
        request.cancel("Task cancelled, timeout graceful shutdown exceeded")  # as uvicorn does
        sent = await request  # answered, not raised
        in_progress = capacity.requests

    assert sent[0]["status"] == 503
    assert json.loads(sent[1]["body"])["error"]["code"] == "service_unavailable"
    assert in_progress == 0
    ((_, fields),) = access()
    assert fields["status"] == 503
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.getMessage() == (
        f"request {fields['request_id']} cut: the graceful shutdown period ended before it did"
    )


def test_a_response_cut_at_shutdown_is_one_warning_not_a_traceback() -> None:
    from shim.logs import _Tidy

    try:
        raise asyncio.CancelledError("Task cancelled, timeout graceful shutdown exceeded")
    except asyncio.CancelledError:
        record = logging.LogRecord(
            "uvicorn.error", logging.ERROR, __file__, 1, "Exception in ASGI application",
            (), sys.exc_info(),
        )  # fmt: skip

    assert _Tidy().filter(record)
    assert record.levelname == "WARNING"
    assert record.exc_info is None
    assert "graceful timeout" in record.getMessage()


def test_the_end_of_the_graceful_period_is_a_warning_not_an_error() -> None:
    from shim.logs import _Tidy

    record = logging.LogRecord(
        "uvicorn.error", logging.ERROR, __file__, 1,
        "Cancel %s running task(s), timeout graceful shutdown exceeded", (10,), None,
    )  # fmt: skip

    assert _Tidy().filter(record)
    assert record.levelname == "WARNING"
    assert record.getMessage().startswith("Cancel 10 running task(s)")


def test_the_embedded_mock_logs_only_its_errors() -> None:
    from shim.logs import QUIET, _Tidy

    token = QUIET.set(True)
    try:
        info = _Tidy().filter(_record("Started server process"))
        error = logging.LogRecord("mockserver", logging.ERROR, __file__, 1, "boom", (), None)
        kept = _Tidy().filter(error)
    finally:
        QUIET.reset(token)

    assert not info
    assert kept
    assert _Tidy().filter(_record("Started server process"))  # the shim's own: kept


async def test_a_hang_up_told_as_asgi_2_4_tells_it_is_a_499_not_an_error(
    access: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A server speaking ASGI 2.4 (a later uvicorn, say) has ``send`` raise OSError once the
    # client is gone; Starlette turns that into ClientDisconnect.
    from shim.keys import Keys
    from shim.logs import AccessLogMiddleware
    from shim.middleware import GateMiddleware
    from shim.responses import AudioResponse

    closed: list[str] = []

    async def audio() -> Any:
        try:
            for _ in range(100):
                yield b"x" * 10
        finally:
            closed.append("iterator")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await AudioResponse(audio(), "audio/mpeg")(scope, receive, send)

    sent: list[Any] = []

    async def send(message: Any) -> None:
        if len(sent) == 2:
            raise OSError("the client disconnected")
        sent.append(message)

    async def receive() -> Any:
        await asyncio.Event().wait()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "method": "POST",
        "path": "/v1/audio/speech",
        "headers": [],
    }
    await AccessLogMiddleware(GateMiddleware(app, keys=Keys(Config())))(scope, receive, send)

    ((level, fields),) = access()
    assert level == logging.INFO
    assert fields["status"] == 499
    assert fields["client_closed"] is True
    assert closed == ["iterator"]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
