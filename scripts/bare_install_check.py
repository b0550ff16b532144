"""Run by ``scripts/dev.py test`` with the Python of a venv holding only ``pip install
tts-shim`` (no extras) and pytest, as a user's plain install does: without numpy,
``tts-shim serve --mock`` speaks (the reply decodes as audio of the text's length), and a
user's test file using the ``tts_shim`` fixture passes.

    python scripts/bare_install_check.py USER_TEST_FILE

Run it from a scratch directory: the test file is copied there and pytest runs there.
Standard library and the installed package only, like dev.py.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

#: How long ``serve --mock`` may take to log its address (imports on a cold, busy machine).
START_LIMIT = 120.0
LISTENING = re.compile(r"tts-shim listening on (http://[^\s\"]+)")
TEXT = "A plain install speaks, with no numpy."  # 38 characters: about 2.5 s


def _served_url(proc: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + START_LIMIT
    while time.monotonic() < deadline:
        found = LISTENING.search(log.read_text(errors="replace"))
        if found:
            return found.group(1)
        if proc.poll() is not None:
            raise AssertionError(f"serve --mock exited {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.1)
    raise AssertionError(f"serve --mock logged no address in {START_LIMIT:.0f} s")


def serve_mock_speaks() -> None:
    """``tts-shim serve --mock`` answers a speech request with audio that decodes."""
    from shim.testing import decode_audio

    serve = [str(Path(sys.executable).with_name("tts-shim")), "serve", "--mock", "--port", "0"]
    with tempfile.TemporaryDirectory(prefix="tts-shim-bare-serve-") as scratch:
        log = Path(scratch, "serve.log")
        with log.open("wb") as sink:
            # No cache: the check writes nothing outside its scratch directory.
            proc = subprocess.Popen([*serve, "--no-cache"], stdout=sink, stderr=sink)
        try:
            url = _served_url(proc, log)
            request = urllib.request.Request(  # noqa: S310 (the http:// URL it logged)
                f"{url}/v1/audio/speech",
                data=json.dumps({"model": "tts-1", "voice": "onyx", "input": TEXT}).encode(),
                headers={"content-type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                audio = response.read()
        finally:
            proc.terminate()
            proc.wait(30)
    decoded = decode_audio(audio, "mp3")
    assert decoded.codec.startswith("mp3"), decoded
    assert 2.2 < decoded.seconds < 2.9, decoded  # the mock reads 15 characters a second
    print(f"bare install: serve --mock spoke {decoded.seconds:.2f} s of MP3", flush=True)


def user_tests_pass(test_file: Path) -> int:
    """pytest on a user's test file, copied into the current directory; its exit status."""
    shutil.copy(test_file, Path.cwd() / "test_user_project.py")
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    return subprocess.run([*pytest, "test_user_project.py"], check=False).returncode


def main(test_file: Path) -> int:
    assert importlib.util.find_spec("numpy") is None, "pip install tts-shim brought numpy"
    import shim.app  # noqa: F401  (what a user's code imports)

    assert "av" not in sys.modules, "importing the app loaded PyAV"
    serve_mock_speaks()
    return user_tests_pass(test_file)


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve()))
