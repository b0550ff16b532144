from __future__ import annotations

from click.testing import CliRunner

from shim.cli import main


def test_serve_help_names_every_environment_variable() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])

    assert result.exit_code == 0
    for variable in (
        "TTS_SHIM_HOST",
        "TTS_SHIM_PORT",
        "AIMLAPI_BASE_URL",
        "AIMLAPI_KEY",
        "TTS_SHIM_API_KEYS",
        "TTS_SHIM_AUDIO_ORIGINS",
        "TTS_SHIM_ALLOW_OPEN",
        "TTS_SHIM_MOCK",
        "TTS_SHIM_TTS_RETRIES",
        "TTS_SHIM_DEADLINE",
    ):
        assert variable in result.output


def test_exposed_server_key_is_refused_at_start_up() -> None:
    result = CliRunner().invoke(
        main, ["serve", "--host", "0.0.0.0"], env={"AIMLAPI_KEY": "secret-server-key"}
    )

    assert result.exit_code == 2
    assert "--allow-open" in result.output
    assert "secret-server-key" not in result.output


def test_mock_subcommand_is_registered() -> None:
    result = CliRunner().invoke(main, ["mock", "--help"])

    assert result.exit_code == 0
    assert "--port" in result.output
