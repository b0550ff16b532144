"""``tts-shim serve --mock``: a new user's first run, as a real process."""

from __future__ import annotations

import signal
from collections.abc import Callable

import openai

from contract_tests.conftest import decode
from contract_tests.reliability.conftest import ServeProcess


def test_serve_mock_speaks_with_no_key_and_exits_cleanly(
    serve_process: Callable[..., ServeProcess],
) -> None:
    served = serve_process("--mock")
    client = openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)

    audio = client.audio.speech.create(
        model="tts-1-hd", voice="coral", input="Hello from the mock.", response_format="mp3"
    ).content

    codec, rate, seconds = decode(audio, "mp3")
    assert codec.startswith("mp3")
    assert rate == 24_000
    assert seconds > 0.5
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(15) == 0
    assert "unused" not in served.log  # the client's key is never logged
