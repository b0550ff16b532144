"""A user's test file for the plainest install: ``pip install tts-shim``, and pytest.

``python3 scripts/dev.py test`` copies it, as ``test_user_project.py``, into a scratch
directory and runs it with the Python of ``.venv-bare``, which holds the package from a
freshly built wheel with no extras, and pytest, the user's own: no numpy, no openai, no
respx (scripts/bare_install_check.py). So it calls the shim with the standard library.
It is not collected in the repository itself (its name does not start with ``test_``).
"""

from __future__ import annotations

import importlib.util
import json
import urllib.error
import urllib.request

import pytest

from shim.testing import ShimServer, decode_audio


def _speak(shim: ShimServer, text: str) -> bytes:
    request = urllib.request.Request(  # noqa: S310 (the fixture's http:// URL)
        shim.base_url + "/audio/speech",
        data=json.dumps({"model": "tts-1", "voice": "coral", "input": text}).encode(),
        headers={"content-type": "application/json", "authorization": "Bearer test"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        audio: bytes = response.read()
    return audio


def test_my_app_speaks(tts_shim: ShimServer) -> None:
    assert importlib.util.find_spec("numpy") is None  # what this install is about
    text = "A plain install speaks through the fixture."  # 43 characters: about 2.9 s

    audio = decode_audio(_speak(tts_shim, text), "mp3")

    assert tts_shim.upstream.requests[-1]["json"]["text"] == text
    assert audio.codec.startswith("mp3")
    assert 2.5 < audio.seconds < 3.3


@pytest.mark.tts_mock(steps=[{"status": 429, "times": 2}])
def test_my_app_sees_a_rate_limit(tts_shim: ShimServer) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        _speak(tts_shim, "Hi")

    assert refused.value.code == 429
