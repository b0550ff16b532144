"""Run by ``scripts/dev.py test`` with the Python of a venv holding only ``pip install
tts-shim`` (no extras): the shim imports and serves against a real upstream (the mock,
run from another venv, at the URL given) without numpy installed.

Standard library only, like dev.py.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def main(upstream: str) -> int:
    assert importlib.util.find_spec("numpy") is None, "numpy is installed without the extra"
    import shim.app  # noqa: F401  (what a user's code imports)

    assert "av" not in sys.modules, "importing the app loaded PyAV"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serve = [str(Path(sys.executable).with_name("tts-shim")), "serve", "--port", str(port)]
    serve += ["--upstream-url", upstream, "--no-cache"]
    proc = subprocess.Popen(serve, stderr=subprocess.PIPE)
    try:
        body = json.dumps({"model": "tts-1", "input": "Without numpy."}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/audio/speech",
            data=body,
            headers={"content-type": "application/json", "authorization": "Bearer sk-bare"},
        )
        for _ in range(100):
            try:
                with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                    audio = response.read()
                break
            except (ConnectionError, OSError):
                time.sleep(0.1)
        else:
            raise AssertionError("the shim never answered")
        assert audio[:3] == b"ID3" or audio[0] == 0xFF, audio[:16]
        print(f"bare install: served {len(audio)} bytes of MP3 without numpy")
        return 0
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
