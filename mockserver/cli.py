"""``python -m mockserver`` / ``tts-shim mock``: run the mock on a socket."""

from __future__ import annotations

from typing import Any

import click
import uvicorn

from mockserver.app import create_app
from mockserver.config import DEFAULT_PORT, LOG_LEVELS, RESPONSE_SHAPES, MockConfig, MockConfigError

__all__ = ["main"]

_DEFAULTS = MockConfig()


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--host",
    default=_DEFAULTS.host,
    show_default=True,
    envvar="TTS_MOCK_HOST",
    show_envvar=True,
    help="Interface to listen on. Use 0.0.0.0 to accept connections from other machines.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    envvar="TTS_MOCK_PORT",
    show_envvar=True,
    help="Port to listen on (0 picks a free one).",
)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    envvar="TTS_MOCK_API_KEYS",
    show_envvar=True,
    help=(
        "Accept only this bearer token on POST /v1/tts; repeat the flag for several "
        "(space-separated in the environment variable). Without it any non-empty "
        "token is accepted."
    ),
)
@click.option(
    "--response-shape",
    type=click.Choice(RESPONSE_SHAPES),
    default=_DEFAULTS.response_shape,
    show_default=True,
    envvar="TTS_MOCK_RESPONSE_SHAPE",
    show_envvar=True,
    help=(
        "Success reply of POST /v1/tts, one of the documented variants: url-object "
        '(201, {"audio": {"url": ...}}), url-string (200, {"audio": url, "meta": '
        '{"usage": ...}}), binary (200, the audio as audio/wav), metadata-only (201, '
        "Deepgram-style metadata, no audio). Scenario steps can override it."
    ),
)
@click.option(
    "--cdn-url",
    default=None,
    envvar="TTS_MOCK_CDN_URL",
    show_envvar=True,
    help=(
        "Root of the audio links in replies, e.g. http://localhost:8100 to give the "
        "CDN another origin than the API, as upstream. Default: the root the request "
        "came in on."
    ),
)
@click.option(
    "--journal-size",
    type=click.IntRange(min=0),
    default=_DEFAULTS.journal_size,
    show_default=True,
    envvar="TTS_MOCK_JOURNAL_SIZE",
    show_envvar=True,
    help="Requests kept in the journal (GET /__mock__/requests); older ones are dropped.",
)
@click.option(
    "--max-steps",
    type=click.IntRange(min=1),
    default=_DEFAULTS.max_steps,
    show_default=True,
    envvar="TTS_MOCK_MAX_STEPS",
    show_envvar=True,
    help="Most scenario steps queued at once; pushing more gets a 400.",
)
@click.option(
    "--audio-cache-bytes",
    type=click.IntRange(min=0),
    default=_DEFAULTS.audio_cache_bytes,
    show_default=True,
    envvar="TTS_MOCK_AUDIO_CACHE_BYTES",
    show_envvar=True,
    help="Memory budget of the LRU cache of encoded audio (0 turns it off).",
)
@click.option(
    "--generation-latency",
    default=str(_DEFAULTS.generation_latency),
    show_default=True,
    envvar="TTS_MOCK_GENERATION_LATENCY",
    show_envvar=True,
    help=(
        "Wait before each successful POST /v1/tts reply, as the real service takes to "
        "generate: a fixed part plus a part per character of text, e.g. 0.3s+4ms/char, "
        "250ms, 2ms/char; 'realistic' is 0.3s+4ms/char. Scenario steps can override it "
        "(key 'latency')."
    ),
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default=_DEFAULTS.log_level,
    show_default=True,
    envvar="TTS_MOCK_LOG_LEVEL",
    show_envvar=True,
    help="Server log level.",
)
def main(**options: Any) -> None:
    """Run the offline mock of the AI/ML API's POST /v1/tts and its audio CDN.

    It validates requests as the published OpenAPI documents do, answers in each
    documented success shape, serves real, decodable audio from /generations/...,
    and can be scripted (POST /__mock__/scenario) and inspected
    (GET /__mock__/requests). No network access or API key is needed.
    """
    try:
        config = MockConfig(**options)
    except MockConfigError as exc:
        raise click.UsageError(str(exc)) from None
    uvicorn.run(
        create_app(config),
        host=config.host,
        port=config.port,
        log_level=config.log_level,
    )
