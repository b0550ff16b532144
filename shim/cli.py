"""The ``tts-shim`` command: ``serve`` (the shim) and ``mock`` (the mock upstream)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from shim.config import DEFAULT_UPSTREAM_URL, Config, ConfigError, StartupError

__all__ = ["main"]


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    """Flags may repeat, and their environment variables hold comma-separated lists."""
    return tuple(item.strip() for value in values for item in value.split(",") if item.strip())


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="tts-shim")
def main() -> None:
    """OpenAI-compatible text-to-speech over the AI/ML API."""


@main.command()
@click.option(
    "--host",
    envvar="TTS_SHIM_HOST",
    show_envvar=True,
    default="127.0.0.1",
    help="Address to listen on. Anything but loopback exposes your key; see --allow-open.",
)
@click.option(
    "--port",
    envvar="TTS_SHIM_PORT",
    show_envvar=True,
    default=8000,
    type=int,
    help="Port to listen on.",
)
@click.option(
    "--upstream-url",
    envvar="AIMLAPI_BASE_URL",
    show_envvar=True,
    default=DEFAULT_UPSTREAM_URL,
    help="AI/ML API root, with or without /v1.",
)
@click.option(
    "--upstream-key",
    envvar="AIMLAPI_KEY",
    show_envvar=True,
    default=None,
    show_default=False,
    help="Server-side AI/ML key. Prefer the environment variable: flags show in ps. "
    "Unset: each client's bearer token is passed through as the key.",
)
@click.option(
    "--client-key",
    "client_keys",
    envvar="TTS_SHIM_API_KEYS",
    show_envvar=True,
    multiple=True,
    help="Key clients must send (repeatable; the variable is "
    "comma-separated). Unset: no client authentication.",
)
@click.option(
    "--audio-origin",
    "audio_origins",
    envvar="TTS_SHIM_AUDIO_ORIGINS",
    show_envvar=True,
    multiple=True,
    help="Extra scheme://host[:port] the audio may be fetched from, besides the "
    "upstream's own origin and https://cdn.aimlapi.com (repeatable).",
)
@click.option(
    "--allow-open",
    envvar="TTS_SHIM_ALLOW_OPEN",
    show_envvar=True,
    is_flag=True,
    help="Allow a non-loopback address with a server-side key and no client keys.",
)
@click.option(
    "--upstream-key-header",
    envvar="TTS_SHIM_UPSTREAM_KEY_HEADER",
    show_envvar=True,
    default=None,
    show_default=False,
    help="With client keys and no AIMLAPI_KEY: the request header in which each client "
    "sends its own AI/ML key (e.g. X-AIMLAPI-Key), its shim key being the bearer token.",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    envvar="TTS_SHIM_CORS_ORIGINS",
    show_envvar=True,
    multiple=True,
    help="Web page origin (scheme://host[:port], or *) allowed to call the shim from a "
    "browser (repeatable; the variable is comma-separated). Unset: requests carrying any "
    "Origin are refused with 403.",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    envvar="TTS_SHIM_ALLOWED_HOSTS",
    show_envvar=True,
    multiple=True,
    help="Extra Host name[:port] to answer to (repeatable; * for any). On loopback the "
    "bound address and localhost are allowed, other Hosts get 421; on other addresses "
    "the check is off unless this is set.",
)
@click.option(
    "--send-timeout",
    envvar="TTS_SHIM_SEND_TIMEOUT",
    show_envvar=True,
    default=30.0,
    type=click.FloatRange(0, min_open=True),
    help="Seconds a client may take no data before its response is cut and its slot freed.",
)
@click.option(
    "--mock/--no-mock",
    envvar="TTS_SHIM_MOCK",
    show_envvar=True,
    default=False,
    help="Run the bundled mock upstream in this process and use it: no key, no network.",
)
@click.option(
    "--mock-port",
    envvar="TTS_SHIM_MOCK_PORT",
    show_envvar=True,
    default=0,
    type=click.IntRange(0, 65535),
    help="With --mock: the loopback port of the embedded mock upstream (0: a free one).",
)
@click.option(
    "--private-catalog",
    envvar="TTS_SHIM_PRIVATE_CATALOG",
    show_envvar=True,
    is_flag=True,
    help="With client keys, require one for /v1/models and /v1/audio/voices|models too. "
    "Off: these static lists answer without a key (Open WebUI reads them without one).",
)
@click.option(
    "--tts-retries",
    envvar="TTS_SHIM_TTS_RETRIES",
    show_envvar=True,
    default=1,
    type=click.IntRange(0, 5),
    help="Retries of the billed generation call (429, 5xx, connection errors).",
)
@click.option(
    "--audio-retries",
    envvar="TTS_SHIM_AUDIO_RETRIES",
    show_envvar=True,
    default=2,
    type=click.IntRange(0, 10),
    help="Retries of the audio download, before any byte reached the client.",
)
@click.option(
    "--max-retry-wait",
    envvar="TTS_SHIM_MAX_RETRY_WAIT",
    show_envvar=True,
    default=5.0,
    type=click.FloatRange(0),
    help="Longest Retry-After (seconds) the shim waits out itself; longer ones go to the client.",
)
@click.option(
    "--connect-timeout",
    envvar="TTS_SHIM_CONNECT_TIMEOUT",
    show_envvar=True,
    default=5.0,
    type=click.FloatRange(0, min_open=True),
    help="Seconds to open a connection upstream.",
)
@click.option(
    "--generation-timeout",
    envvar="TTS_SHIM_GENERATION_TIMEOUT",
    show_envvar=True,
    default=60.0,
    type=click.FloatRange(0, min_open=True),
    help="Seconds to wait for the generation reply.",
)
@click.option(
    "--download-timeout",
    envvar="TTS_SHIM_DOWNLOAD_TIMEOUT",
    show_envvar=True,
    default=30.0,
    type=click.FloatRange(0, min_open=True),
    help="Longest silence (seconds) while downloading audio.",
)
@click.option(
    "--deadline",
    envvar="TTS_SHIM_DEADLINE",
    show_envvar=True,
    default=90.0,
    type=click.FloatRange(0, min_open=True),
    help="Seconds from request to first audio byte, retries included.",
)
@click.option(
    "--max-audio-bytes",
    envvar="TTS_SHIM_MAX_AUDIO_BYTES",
    show_envvar=True,
    default=256 * 1024 * 1024,
    type=click.IntRange(1),
    help="Largest audio the shim will relay.",
)
@click.option(
    "--max-chat-audio-bytes",
    envvar="TTS_SHIM_MAX_CHAT_AUDIO_BYTES",
    show_envvar=True,
    default=32 * 1024 * 1024,
    type=click.IntRange(1),
    help="Largest audio in a non-streamed chat answer (held whole in memory); stream for more.",
)
@click.option(
    "--max-body-bytes",
    envvar="TTS_SHIM_MAX_BODY_BYTES",
    show_envvar=True,
    default=1024 * 1024,
    type=click.IntRange(1),
    help="Largest request body accepted (413 above).",
)
@click.option(
    "--proxy",
    envvar="TTS_SHIM_PROXY",
    show_envvar=True,
    default=None,
    help="Proxy URL for upstream requests. Unset: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY "
    "from the environment, minus NO_PROXY.",
)
@click.option(
    "--ca-bundle",
    envvar="TTS_SHIM_CA_BUNDLE",
    show_envvar=True,
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="PEM file of CAs trusted for upstream TLS. Unset: SSL_CERT_FILE / SSL_CERT_DIR "
    "when set, else the certifi bundle.",
)
@click.option(
    "--max-input-chars",
    envvar="TTS_SHIM_MAX_INPUT_CHARS",
    show_envvar=True,
    default=100_000,
    type=click.IntRange(1),
    help="Longest text to speak (characters); 4096 restores OpenAI's limit.",
)
@click.option(
    "--split/--no-split",
    envvar="TTS_SHIM_SPLIT",
    show_envvar=True,
    default=True,
    help="Split long texts into pieces generated ahead and stitched into one stream "
    "(off: texts over 4096 characters are refused).",
)
@click.option(
    "--split-threshold",
    envvar="TTS_SHIM_SPLIT_THRESHOLD",
    show_envvar=True,
    default=1000,
    type=click.IntRange(1),
    help="Texts longer than this (characters) are split; the first piece is short.",
)
@click.option(
    "--split-parallel",
    envvar="TTS_SHIM_SPLIT_PARALLEL",
    show_envvar=True,
    default=3,
    type=click.IntRange(1, 16),
    help="Pieces of one request generated at once.",
)
@click.option(
    "--max-concurrency",
    envvar="TTS_SHIM_MAX_CONCURRENCY",
    show_envvar=True,
    default=64,
    type=click.IntRange(0),
    help="Speech and chat requests served at once (upstream call and audio stream); 0: no cap.",
)
@click.option(
    "--max-queue",
    envvar="TTS_SHIM_MAX_QUEUE",
    show_envvar=True,
    default=128,
    type=click.IntRange(0),
    help="Requests waiting for a slot when all are busy; more get 429 with Retry-After.",
)
@click.option(
    "--queue-timeout",
    envvar="TTS_SHIM_QUEUE_TIMEOUT",
    show_envvar=True,
    default=10.0,
    type=click.FloatRange(0),
    help="Longest wait (seconds) for a slot before a 429.",
)
@click.option(
    "--graceful-timeout",
    envvar="TTS_SHIM_GRACEFUL_TIMEOUT",
    show_envvar=True,
    default=30.0,
    type=click.FloatRange(0),
    help="On SIGTERM, seconds in-flight audio gets to finish before it is cut; then exit 0.",
)
@click.option(
    "--keep-alive-timeout",
    envvar="TTS_SHIM_KEEP_ALIVE_TIMEOUT",
    show_envvar=True,
    default=30.0,
    type=click.FloatRange(0, min_open=True),
    help="Seconds an idle client connection is kept for its next request.",
)
@click.option(
    "--log-format",
    envvar="TTS_SHIM_LOG_FORMAT",
    show_envvar=True,
    default="json",
    type=click.Choice(["json", "text"]),
    help="Log lines as JSON objects or text.",
)
@click.option(
    "--log-level",
    envvar="TTS_SHIM_LOG_LEVEL",
    show_envvar=True,
    default="info",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    help="Least severe log level shown.",
)
@click.option(
    "--cache/--no-cache",
    envvar="TTS_SHIM_CACHE",
    show_envvar=True,
    default=True,
    help="Cache generated audio, so a repeated request is neither paid nor waited for again.",
)
@click.option(
    "--cache-dir",
    envvar="TTS_SHIM_CACHE_DIR",
    show_envvar=True,
    default=None,
    show_default=False,
    help="Directory of the embedded cache. Unset: the user's cache directory.",
)
@click.option(
    "--cache-max-bytes",
    envvar="TTS_SHIM_CACHE_MAX_BYTES",
    show_envvar=True,
    default=1024**3,
    type=click.IntRange(1),
    help="Size bound of the embedded cache; least recently used audio is evicted first.",
)
@click.option(
    "--cache-ttl",
    envvar="TTS_SHIM_CACHE_TTL",
    show_envvar=True,
    default=30 * 24 * 3600.0,
    type=click.FloatRange(0, min_open=True),
    help="Seconds cached audio is kept (default 30 days).",
)
@click.option(
    "--redis-url",
    envvar="TTS_SHIM_REDIS_URL",
    show_envvar=True,
    default=None,
    show_default=False,
    help="redis://host:port/db: replicas share the cache and generate each audio once. "
    "Prefer the environment variable if it holds a password: flags show in ps.",
)
@click.option(
    "--keys-file",
    envvar="TTS_SHIM_KEYS_FILE",
    show_envvar=True,
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="TOML file of named client keys with limits (README, 'Keys and limits'); "
    "re-read on SIGHUP.",
)
@click.option(
    "--metrics-key",
    envvar="TTS_SHIM_METRICS_KEY",
    show_envvar=True,
    default=None,
    show_default=False,
    help="Bearer token GET /metrics and GET /usage require. Unset: they are open.",
)
@click.option(
    "--price",
    "prices",
    envvar="TTS_SHIM_PRICES",
    show_envvar=True,
    multiple=True,
    callback=lambda _ctx, _param, values: _prices(values),
    help="MODEL=USD per 1,000 characters, for spend estimates and budgets (repeatable; "
    "the variable is comma-separated). Defaults: tts-1=0.015, tts-1-hd=0.03, "
    "gpt-4o-mini-tts=0.015.",
)
def serve(
    mock: bool,
    mock_port: int,
    client_keys: tuple[str, ...],
    audio_origins: tuple[str, ...],
    cors_origins: tuple[str, ...],
    allowed_hosts: tuple[str, ...],
    **options: object,
) -> None:
    """Serve OpenAI's /v1/audio/speech, /v1/chat/completions and /v1/models."""
    try:
        config = Config(
            client_keys=_split(client_keys),
            audio_origins=_split(audio_origins),
            cors_origins=_split(cors_origins),
            allowed_hosts=_split(allowed_hosts),
            **options,  # type: ignore[arg-type]
        )
        if mock:
            _mock_command()  # a clear message now, if the mock extra is missing
        # Imported once the settings parsed; run() checks them before it loads the app.
        from shim.server import run

        run(config, mock=mock, mock_port=mock_port)
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None  # one line: "Error: ...", status 1
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


def _prices(values: tuple[str, ...]) -> dict[str, float]:
    prices: dict[str, float] = {}
    for item in _split(values):
        model, _, price = item.partition("=")
        try:
            prices[model.strip()] = float(price)
        except ValueError:
            raise click.BadParameter(f"{item!r}: expected MODEL=USD, e.g. tts-1=0.015") from None
    return prices


@main.command()
@click.option(
    "--url",
    envvar="TTS_SHIM_URL",
    show_envvar=True,
    default="http://127.0.0.1:8000",
    help="The running shim to ask (its GET /usage).",
)
@click.option(
    "--metrics-key",
    envvar="TTS_SHIM_METRICS_KEY",
    show_envvar=True,
    default=None,
    show_default=False,
    help="The shim's --metrics-key, if it has one.",
)
@click.option("--days", default=7, type=click.IntRange(1, 92), help="Days to show, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def usage(url: str, metrics_key: str | None, days: int, as_json: bool) -> None:
    """Usage per client key and UTC day: requests, characters, estimated USD."""
    import json

    import httpx

    headers = {"authorization": f"Bearer {metrics_key}"} if metrics_key else {}
    try:
        response = httpx.get(
            url.rstrip("/") + "/usage", params={"days": days}, headers=headers, timeout=10
        )
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from exc
    if response.status_code != 200:
        raise click.ClickException(f"{url} answered {response.status_code}: {response.text}")
    report = response.json()
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{'day':<12}{'key':<24}{'requests':>10}{'characters':>12}{'usd':>12}")
    for day in report["days"]:
        for name, row in day["keys"].items():
            click.echo(
                f"{day['day']:<12}{name:<24}{row['requests']:>10}{row['characters']:>12}"
                f"{row['usd']:>12.6f}"
            )


@main.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def mock(ctx: click.Context) -> None:
    """Run the mock AI/ML API and CDN (needs the mock extra: pip install 'tts-shim[mock]')."""
    mock_main = _mock_command()
    mock_main.main(args=ctx.args, prog_name=f"{ctx.find_root().info_name} mock")


@main.group()
def cache() -> None:
    """Inspect or empty the audio cache that `serve` uses with the same options."""


def _cache_options(command: Callable[..., None]) -> Callable[..., None]:
    command = click.option(
        "--redis-url",
        envvar="TTS_SHIM_REDIS_URL",
        show_envvar=True,
        default=None,
        show_default=False,
        help="The Redis cache, instead of the embedded one.",
    )(command)
    return click.option(
        "--cache-dir",
        envvar="TTS_SHIM_CACHE_DIR",
        show_envvar=True,
        default=None,
        show_default=False,
        help="Directory of the embedded cache. Unset: the user's cache directory.",
    )(command)


def _run_on_store(cache_dir: str | None, redis_url: str | None, job: str) -> Any:
    import asyncio

    from shim.cache import open_store

    async def run() -> Any:
        store = open_store(Config(cache_dir=cache_dir, redis_url=redis_url))
        assert store is not None
        try:
            return await (store.stats() if job == "stats" else store.clear())
        finally:
            await store.aclose()

    from shim.cache import CacheUnavailable

    try:
        return asyncio.run(run())
    except (ConfigError, CacheUnavailable) as exc:
        raise click.ClickException(str(exc)) from exc


@cache.command()
@_cache_options
def stats(cache_dir: str | None, redis_url: str | None) -> None:
    """Entries and bytes in the cache."""
    found = _run_on_store(cache_dir, redis_url, "stats")
    click.echo(f"entries: {found.entries}\nbytes: {found.bytes}")


@cache.command()
@_cache_options
@click.confirmation_option(prompt="Delete every cached audio entry?")
def clear(cache_dir: str | None, redis_url: str | None) -> None:
    """Delete every cached entry (later requests generate, and pay, again)."""
    removed = _run_on_store(cache_dir, redis_url, "clear")
    click.echo(f"removed {removed} entries")


def _add_mock_command() -> None:
    from mockserver.cli import main as mock_command

    main.add_command(mock_command, name="mock")


def _mock_command() -> click.Command:
    # Imported when used: the mock needs numpy, which only the ``mock`` extra installs.
    try:
        from mockserver.cli import main as mock_main
    except ImportError as exc:
        raise click.UsageError(MOCK_EXTRA_MISSING.format(missing=exc.name)) from exc
    return mock_main


#: What ``--mock`` and ``tts-shim mock`` say when the mock's packages are missing.
MOCK_EXTRA_MISSING = (
    "the bundled mock needs the 'mock' extra ({missing} is not installed): "
    "pip install 'tts-shim[mock]'"
)
