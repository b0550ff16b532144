"""``tts-shim serve`` refusing to start, or starting without its cache: as a real process.

What a setting names but cannot be used (a cache directory, a keys file) is one line and
an exit, never a traceback or a leaked upstream session; the default cache directory
being unusable (no home, a read-only one) is a warning, and the shim serves uncached.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from contract_tests.conftest import LOOPBACK_TLS, decode
from contract_tests.reliability.conftest import ServeProcess, listening

SPEECH = {"model": "tts-1", "voice": "alloy", "input": "Served without a cache."}


def _blocker(tmp_path: Path) -> Path:
    """A regular file: nothing can be made under it, not even by root (whom permission
    bits do not stop), so it stands for a missing home as well as a read-only one."""
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    return blocker


def _refused(served: ServeProcess) -> str:
    """The one line a refused start-up printed (stdout and stderr together)."""
    assert served.proc.wait(30) != 0
    assert "Traceback" not in served.log
    assert "Unclosed" not in served.log
    assert not listening(served.port)
    [line] = served.log.splitlines()
    return line


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (("--cache-dir", "{blocker}/sub"), {}),  # cannot be created
        (("--mock",), {"TTS_SHIM_CACHE_DIR": "{blocker}"}),  # a file, not a directory
    ],
)
def test_a_given_cache_directory_that_cannot_be_used_is_one_line_and_an_exit(
    serve_process: Callable[..., ServeProcess],
    tmp_path: Path,
    args: tuple[str, ...],
    env: dict[str, str],
) -> None:
    blocker = _blocker(tmp_path)
    args = tuple(arg.format(blocker=blocker) for arg in args)
    env = {name: value.format(blocker=blocker) for name, value in env.items()}
    directory = args[-1] if "--cache-dir" in args else env["TTS_SHIM_CACHE_DIR"]

    served = serve_process(*args, env=env, wait=False)

    line = _refused(served)
    assert line.startswith(f"Error: cannot use the cache directory {directory}: ")


@pytest.mark.parametrize("variable", ["HOME", "XDG_CACHE_HOME"])
def test_an_unusable_default_cache_directory_warns_and_the_shim_serves_uncached(
    serve_process: Callable[..., ServeProcess], tmp_path: Path, variable: str
) -> None:
    blocker = _blocker(tmp_path)
    # No --cache-dir (an empty variable is unset to click), so the default is used.
    env = {"TTS_SHIM_CACHE_DIR": "", "XDG_CACHE_HOME": "", variable: str(blocker)}
    served = serve_process("--mock", env=env)

    response = httpx.post(served.url + "/v1/audio/speech", json=SPEECH, verify=LOOPBACK_TLS)
    served.proc.send_signal(signal.SIGTERM)

    assert response.status_code == 200
    assert response.headers["x-cache"] == "BYPASS"
    assert decode(response.content, "mp3")[2] > 0.5
    assert served.proc.wait(30) == 0
    warnings = [line for line in served.log_lines() if line["level"] == "warning"]
    assert len(warnings) == 1
    assert str(blocker) in warnings[0]["message"]
    assert "serving without a cache" in warnings[0]["message"]
    assert "Traceback" not in served.log
    assert "Unclosed" not in served.log


@pytest.mark.parametrize(
    ("key", "kind"),
    [('"            "', "a space"), ('"sk-shim-bad-0002\\n"', "a line break")],
)
def test_a_keys_file_key_no_client_could_send_stops_start_up_naming_its_line(
    serve_process: Callable[..., ServeProcess], tmp_path: Path, key: str, kind: str
) -> None:
    keys = tmp_path / "keys.toml"
    keys.write_text(
        f'[keys.ok]\nkey = "sk-shim-good-0001"\n\n[keys.broken]\nusd_per_day = 1.0\nkey = {key}\n'
    )

    served = serve_process(
        "--keys-file", str(keys), env={"AIMLAPI_KEY": "sk-server-key-0001"}, wait=False
    )

    line = _refused(served)
    assert line.startswith(f"Error: {keys} line 6: keys.broken.key: the key has {kind}")
    assert "sk-shim-bad" not in served.log


def test_a_ca_bundle_that_cannot_be_read_is_one_line_and_an_exit(
    serve_process: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-bundle.pem"

    served = serve_process("--mock", "--ca-bundle", str(missing), wait=False)

    line = _refused(served)
    assert line.startswith(f"Error: cannot use the CA bundle {missing}: ")
