"""SIGTERM: stop accepting, let in-flight audio finish within ``--graceful-timeout``,
cut what is still running after it, and exit 0 either way. A real process."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from contract_tests.conftest import LOOPBACK_TLS
from contract_tests.reliability.conftest import AUTH, MARGIN, ServeProcess, listening
from shim.testing import decode_audio
from tests.figures import record

TEXT = "Please keep talking while the shim shuts down around you. " * 2


@dataclass
class Stream:
    """A speech download running in a thread; ``started`` once the first bytes arrive."""

    url: str
    text: str = TEXT
    started: threading.Event = field(default_factory=threading.Event)
    body: bytearray = field(default_factory=bytearray)
    status: int | None = None
    complete: bool = False
    error: str | None = None

    def run(self) -> threading.Thread:
        thread = threading.Thread(target=self._read, daemon=True)
        thread.start()
        return thread

    def _read(self) -> None:
        body = {"model": "tts-1", "voice": "alloy", "input": self.text}
        try:
            with (
                httpx.Client(timeout=30, verify=LOOPBACK_TLS) as client,
                client.stream("POST", self.url + "/v1/audio/speech", json=body, headers=AUTH) as r,
            ):
                self.status = r.status_code
                for chunk in r.iter_raw():
                    self.body += chunk
                    self.started.set()
            self.complete = True
        except httpx.HTTPError as exc:
            self.error = repr(exc)
        finally:
            self.started.set()


def _refuses_connections(port: int, within: float = 2.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not listening(port):
            return True
        time.sleep(0.02)
    return False


def test_sigterm_lets_the_stream_finish_then_exits_0(
    serve_process: Callable[..., ServeProcess],
) -> None:
    served = serve_process("--mock", "--graceful-timeout", "10")
    served.scenario([{"route": "audio", "fault": "slow-body", "delay_ms": 2000}])
    stream = Stream(served.url)
    reader = stream.run()
    assert stream.started.wait(10)

    signalled = time.monotonic()
    served.terminate()
    refused = _refuses_connections(served.port)
    reader.join(20)
    code = served.proc.wait(20)
    took = time.monotonic() - signalled

    assert refused  # no new connections once draining
    assert stream.status == 200
    assert stream.complete, stream.error
    assert decode_audio(bytes(stream.body), "mp3").frames > 24_000
    assert code == 0
    assert took < 10  # it waited for the stream, not for the grace period
    messages = [line["message"] for line in served.log_lines()]
    assert any(m.startswith("draining: 1 request(s) in flight") for m in messages)
    access = [line for line in served.log_lines() if line["logger"] == "tts_shim.access"]
    assert access[-1]["status"] == 200
    assert "aborted" not in access[-1]
    record("shutdown", drained_stream_bytes=len(stream.body), seconds_after_sigterm=round(took, 2))


def test_a_stream_longer_than_the_grace_period_is_cut(
    serve_process: Callable[..., ServeProcess],
) -> None:
    grace = 0.5
    served = serve_process("--mock", "--graceful-timeout", str(grace))
    served.scenario([{"route": "audio", "fault": "slow-body", "delay_ms": 8000}])
    stream = Stream(served.url)
    reader = stream.run()
    assert stream.started.wait(10)

    signalled = time.monotonic()
    served.terminate()
    code = served.proc.wait(20)
    took = time.monotonic() - signalled
    reader.join(10)

    assert code == 0
    assert stream.status == 200
    assert not stream.complete  # cut: the client sees a broken transfer, not a short file
    assert stream.error is not None
    assert grace <= took < grace + 3.0
    record("shutdown_cut", grace=grace, seconds_after_sigterm=round(took, 2))


def test_ten_streams_cut_at_the_end_of_the_grace_period_are_one_line_each(
    serve_process: Callable[..., ServeProcess],
) -> None:
    # Before: up to 9 of them still cleaning up after the app had closed its cache and
    # upstream clients, and "Exception in ASGI application" tracebacks (a CancelledError
    # in the disk cache's open, through asyncio.to_thread) when the event loop cancelled
    # what was left; uvicorn's "Cancel 10 running task(s)" an error.
    grace, count = 3.0, 10
    served = serve_process("--mock", "--graceful-timeout", str(grace))
    served.scenario([{"route": "audio", "fault": "slow-body", "delay_ms": 30_000, "times": count}])
    streams = [Stream(served.url, f"Stream {n}: {TEXT}") for n in range(count)]
    readers = [stream.run() for stream in streams]
    for stream in streams:
        assert stream.started.wait(20)

    signalled = time.monotonic()
    served.terminate()
    code = served.proc.wait(grace + 10)
    took = time.monotonic() - signalled
    for reader in readers:
        reader.join(10)
    lines = served.log_lines()
    messages = [line["message"] for line in lines]
    cut = [line for line in lines if "cut: the graceful shutdown period ended" in line["message"]]
    access = [line for line in lines if line["logger"] == "tts_shim.access"]
    closed = messages.index("Application shutdown complete.")

    assert code == 0
    assert grace <= took < grace + 3 * MARGIN
    for stream in streams:
        assert stream.status == 200
        assert stream.body  # it was streaming
        assert not stream.complete  # and saw a broken transfer, not a short file
    assert len(cut) == count  # one line per cut stream
    assert {line["level"] for line in cut} == {"warning"}
    assert {line["request_id"] for line in access} == {line["message"].split()[1] for line in cut}
    assert all(line.get("aborted") is True for line in access)
    assert max(lines.index(line) for line in cut) < closed  # cleaned up before the app closed
    assert "Traceback" not in served.log
    assert "Exception in ASGI application" not in served.log
    assert [line for line in lines if line["level"] in ("error", "critical")] == []
    record("shutdown_cut_streams", streams=count, grace=grace, seconds_after_sigterm=round(took, 2))


def test_during_the_shutdown_delay_readyz_is_503_and_requests_are_served(
    serve_process: Callable[..., ServeProcess],
) -> None:
    # Without --shutdown-delay the listener closes on SIGTERM (a prober's connection is
    # refused: the first test); with it, readiness says 503 while work is still served.
    delay = 2.0
    served = serve_process("--mock", "--shutdown-delay", str(delay))

    signalled = time.monotonic()
    served.terminate()
    while (ready := httpx.get(served.url + "/readyz", verify=LOOPBACK_TLS)).status_code == 200:
        assert time.monotonic() - signalled < MARGIN
    speech = httpx.post(
        served.url + "/v1/audio/speech",
        json={"model": "tts-1", "voice": "alloy", "input": TEXT},
        headers=AUTH,
        timeout=30,
        verify=LOOPBACK_TLS,
    )
    answered = time.monotonic() - signalled
    refused = _refuses_connections(served.port, within=delay + MARGIN)
    closed = time.monotonic() - signalled
    code = served.proc.wait(20)

    assert ready.status_code == 503
    assert ready.json()["status"] == "draining"
    assert speech.status_code == 200
    assert decode_audio(speech.content, "mp3").frames > 0
    assert answered < delay
    assert refused
    assert delay <= closed < delay + 2 * MARGIN
    assert code == 0
    assert any(
        m.startswith("shutting down in 2 s")
        for m in [line["message"] for line in served.log_lines()]
    )
    record("shutdown_delay", delay=delay, refused_after_s=round(closed, 2))


def test_an_idle_shim_exits_0_at_once(serve_process: Callable[..., ServeProcess]) -> None:
    served = serve_process("--mock")
    assert httpx.get(served.url + "/readyz", verify=LOOPBACK_TLS).json()["status"] == "ready"

    signalled = time.monotonic()
    served.terminate()
    code = served.proc.wait(20)

    assert code == 0
    assert time.monotonic() - signalled < 3.0


def test_a_second_ctrl_c_ends_the_shutdown_delay_and_exits_0(
    serve_process: Callable[..., ServeProcess],
) -> None:
    # The shim owns SIGINT/SIGTERM (not uvicorn's handlers, which would re-raise the
    # signal once stopped): the first Ctrl-C starts the pause, the second ends it.
    delay = 60.0
    served = serve_process("--mock", "--shutdown-delay", str(delay))

    served.proc.send_signal(signal.SIGINT)
    while httpx.get(served.url + "/readyz", verify=LOOPBACK_TLS).status_code == 200:
        assert served.proc.poll() is None
    assert served.proc.poll() is None  # pausing, still serving
    served.proc.send_signal(signal.SIGINT)
    code = served.proc.wait(2 * MARGIN + 5)

    assert code == 0
    messages = [line["message"] for line in served.log_lines()]
    assert any(m.startswith("shutting down in 60 s") for m in messages)
    assert any(m.startswith("draining: 0 request(s) in flight") for m in messages)
    assert not any("KeyboardInterrupt" in m for m in messages)
