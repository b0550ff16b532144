"""The ``tts-shim`` command: ``serve`` (the shim) and ``mock`` (the mock upstream)."""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

import click

from shim.config import Config, ConfigError, Setting, StartupError, settings

__all__ = ["main"]


def _split(values: tuple[str, ...]) -> tuple[str, ...]:
    """Flags may repeat, and their environment variables hold comma-separated lists."""
    return tuple(item.strip() for value in values for item in value.split(",") if item.strip())


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="tts-shim")
def main() -> None:
    """OpenAI-compatible text-to-speech over the AI/ML API."""


def _prices(values: tuple[str, ...]) -> dict[str, float]:
    prices: dict[str, float] = {}
    for item in _split(values):
        model, _, price = item.partition("=")
        try:
            prices[model.strip()] = float(price)
        except ValueError:
            raise click.BadParameter(f"{item!r}: expected MODEL=USD, e.g. tts-1=0.015") from None
    return prices


def _option(name: str, setting: Setting, default: Any, kind: Any) -> click.Option:
    """The ``serve`` option of one setting: the flag, variable, default and help it names."""
    flag = setting.flag or "--" + name.replace("_", "-")
    env = setting.env or "TTS_SHIM_" + name.upper()
    help_text = setting.help
    if setting.choices:
        help_text += f" One of: {', '.join(setting.choices)}."
    shown: bool | str = True if setting.shown is None else setting.shown
    if setting.secret or default is None or default == () or default == {}:
        shown = False
    common: dict[str, Any] = {"envvar": env, "show_envvar": True, "help": help_text}
    if kind is bool:
        # The page shows on/off; click would show the switch's name.
        declared = [f"{flag}/--no-{flag[2:]}", name]
        return click.Option(declared, default=default, show_default=False, **common)
    if kind in (int, float):
        return click.Option([flag, name], type=kind, default=default, show_default=shown, **common)
    if kind is tuple or kind is dict:
        # Flags may repeat; their variables hold comma-separated lists.
        convert = _prices if kind is dict else _split
        common["help"] += " The variable is comma-separated."
        return click.Option(
            [flag, name],
            multiple=True,
            callback=lambda _ctx, _param, values: convert(values),
            show_default=shown,
            **common,
        )
    return click.Option([flag, name], default=default, show_default=shown, **common)


def _kind(hint: Any) -> Any:
    """The Python type a setting's flag parses into, from its field's annotation."""
    if hint in (bool, int, float):
        return hint
    origin = typing.get_origin(hint)
    return origin if origin in (tuple, dict) else str


#: The options of ``serve`` that are not :class:`Config` fields: how it runs, not what
#: the shim is told. Checked by their settings as the fields are.
_SERVE_ONLY: dict[str, tuple[Setting, Any]] = {
    "mock": (
        Setting("Run the bundled mock upstream in this process and use it: no key, no network."),
        False,
    ),
    "mock_port": (
        Setting(
            "With --mock: the loopback port of the embedded mock upstream (0: a free one).",
            low=0,
            high=65535,
        ),
        0,
    ),
}


def _serve_options() -> list[click.Parameter]:
    hints = typing.get_type_hints(Config)
    options: list[click.Parameter] = [
        _option(name, how, default, _kind(hints[name])) for name, how, default in settings()
    ]
    for name, (setting, default) in _SERVE_ONLY.items():
        options.append(_option(name, setting, default, type(default)))
    return options


def _serve(mock: bool, mock_port: int, **options: Any) -> None:
    """Serve OpenAI's /v1/audio/speech, /v1/chat/completions and /v1/models."""
    try:
        _SERVE_ONLY["mock_port"][0].check("mock_port", mock_port)
        config = Config(**options)
        # Imported once the settings parsed; run() checks them before it loads the app.
        from shim.server import run

        run(config, mock=mock, mock_port=mock_port)
    except StartupError as exc:
        raise click.ClickException(str(exc)) from None  # one line: "Error: ...", status 1
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc


serve = click.Command("serve", callback=_serve, params=_serve_options(), help=_serve.__doc__)
main.add_command(serve)


def settings_page() -> str:
    """The settings page (``docs/settings.md``), from ``serve``'s own options: so the
    page and ``tts-shim serve --help`` list the same flags, once each."""
    lines = [
        "# Settings",
        "",
        "<!-- Generated from the options of `tts-shim serve` (shim/config.py):",
        "     python scripts/settings_page.py > docs/settings.md -->",
        "",
        "Every setting is a flag of `tts-shim serve` and an environment variable; in code,",
        "the same names without dashes are the fields of `shim.Config`. A flag wins over",
        "its variable. Repeatable flags take a comma-separated list in their variable.",
        "",
        "| Flag | Variable | Default | What it does |",
        "| --- | --- | --- | --- |",
    ]
    for param in serve.params:
        if not isinstance(param, click.Option):
            continue
        flags = " / ".join(f"`{flag}`" for flag in (*param.opts, *param.secondary_opts))
        if param.is_flag:
            default = "on" if param.default else "off"
        elif isinstance(param.show_default, str):
            default = param.show_default
        elif param.show_default is False:
            default = "none"
        else:
            default = f"`{param.default}`"
        text = (param.help or "").replace("|", "\\|")
        lines.append(f"| {flags} | `{param.envvar}` | {default} | {text} |")
    return "\n".join(lines) + "\n"


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
    """Run the mock AI/ML API and CDN (the one `serve --mock` embeds)."""
    # Imported when used, so the other commands start without loading the mock.
    from mockserver.cli import main as mock_main

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
