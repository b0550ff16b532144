"""The official ``openai`` npm package against the shim on the mock, with Node's own runner.

``node --test`` runs the ``*.test.mjs`` files beside this one, once for each SDK major in
``package.json`` (npm aliases, installed side by side by ``npm ci``, which
``python3 scripts/dev.py test`` runs): speech in every format, streamed bodies, SSE read
as events, chat plain and streamed, models and the error classes. The JS saves the audio
it got; it is decoded here, with PyAV, once node is done.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from contract_tests.conftest import decode
from mockserver.audio import speech_duration
from shim.testing import ShimServer

HERE = Path(__file__).resolve().parent
#: The npm aliases in package.json, one per major: the oldest release whose
#: ``audio.speech.create`` takes every field the shim serves (``stream_format`` came in
#: 5.7.0), then the newest of each later major: 6.x (what ``npm install openai`` picks
#: on Node.js 20, as 7 declares Node.js 22) and 7.x.
PACKAGES = ("openai-v5", "openai-v6", "openai-v7")
TEXT = "The quick brown fox jumps over the lazy dog."
CODECS = {
    "mp3": "mp3",
    "opus": "opus",
    "aac": "aac",
    "flac": "flac",
    "wav": "pcm_s16le",
    "pcm": "pcm_s16le",
    "pcm16": "pcm_s16le",
}
#: What the JS saves, and at which speed it was spoken.
SAVED = {
    **{f"speech.{fmt}": 1.0 for fmt in ("mp3", "opus", "aac", "flac", "wav", "pcm")},
    "fields.flac": 1.5,
    "sse.wav": 1.0,
    **{f"chat.{fmt}": 1.0 for fmt in ("wav", "mp3", "aac", "flac", "opus", "pcm16")},
    "chat-stream.pcm16": 1.0,
    "chat-stream.mp3": 1.0,
}


#: How the testing page's sentence "Three majors run side by side" spells the count.
_COUNT = {2: "Two", 3: "Three", 4: "Four"}


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail(
            "node is not on PATH: contract_tests/node needs Node.js 20 or newer and npm",
            pytrace=False,
        )
    return node


def _installed(package: str) -> str:
    """The SDK version under ``package``, failing unless it is the locked one."""
    lock = json.loads((HERE / "package-lock.json").read_text())
    wanted: str = lock["packages"][f"node_modules/{package}"]["version"]
    manifest = HERE / "node_modules" / package / "package.json"
    found = json.loads(manifest.read_text())["version"] if manifest.exists() else None
    if found != wanted:
        pytest.fail(
            f"openai {wanted} ({package}) is not installed in contract_tests/node "
            f"(found {found}): run `npm ci` there, as `python3 scripts/dev.py test` does",
            pytrace=False,
        )
    return wanted


@pytest.mark.parametrize("package", PACKAGES)
def test_the_node_sdk_against_the_shim(package: str, tts_shim: ShimServer, tmp_path: Path) -> None:
    node, version = _node(), _installed(package)
    # The SDK reads OPENAI_* (base URL, key, organization): none of the caller's may leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env |= {
        "TTS_OPENAI_PACKAGE": package,
        "TTS_SHIM_BASE_URL": tts_shim.base_url,
        "TTS_MOCK_URL": tts_shim.upstream.url,
        "TTS_TEXT": TEXT,
        "TTS_AUDIO_DIR": str(tmp_path),
        "NO_COLOR": "1",
    }
    # One file at a time: the error cases queue steps on the one mock all files share.
    command = [node, "--test", "--test-concurrency=1", "--test-reporter=spec"]
    command += ["--test-timeout=60000", *sorted(p.name for p in HERE.glob("*.test.mjs"))]
    result = subprocess.run(
        command, cwd=HERE, env=env, capture_output=True, text=True, timeout=600, check=False
    )

    output = f"node --test, openai {version}:\n{result.stdout}\n{result.stderr}"
    assert result.returncode == 0, output
    assert f"openai {version}:" in result.stdout, output  # the tests named the SDK they ran
    counts = dict(re.findall(r"^\S+ (tests|pass) (\d+)$", result.stdout, re.MULTILINE))
    assert int(counts.get("tests", 0)) > 0, output
    assert counts["pass"] == counts["tests"], output

    # The audio the SDK handed over decodes, in the codec asked for, at the mock's length.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(SAVED)
    for name, speed in SAVED.items():
        fmt = name.rsplit(".", 1)[1]
        codec, rate, seconds = decode((tmp_path / name).read_bytes(), fmt)
        assert codec.startswith(CODECS[fmt]), name
        assert rate == (48_000 if fmt == "opus" else 24_000), name  # Opus decodes at 48 kHz
        assert seconds == pytest.approx(speech_duration(TEXT, speed), abs=0.15), name

    # And the mock made them: every format, always for the text the tests sent.
    made = [e["json"] for e in tts_shim.upstream.requests if e["status"] in (200, 201)]
    assert {body["response_format"] for body in made} >= {"mp3", "opus", "aac", "flac", "wav"}
    assert {body["text"] for body in made} == {TEXT}


def test_the_majors_are_stated_the_same_everywhere() -> None:
    manifest = json.loads((HERE / "package.json").read_text())
    lock = json.loads((HERE / "package-lock.json").read_text())["packages"]
    readme = (HERE.parents[1] / "docs" / "testing.md").read_text()

    assert tuple(manifest["devDependencies"]) == PACKAGES
    versions = {package: lock[f"node_modules/{package}"]["version"] for package in PACKAGES}
    oldest, *later = PACKAGES
    wanted = manifest["devDependencies"]
    assert wanted[oldest] == f"npm:openai@{versions[oldest]}"  # exact: the floor
    assert f"| `{oldest}` | {versions[oldest]} |" in readme
    for package in later:
        major = versions[package].split(".")[0]
        assert wanted[package].startswith(f"npm:openai@^{major}."), package  # its major only
        assert f"| `{package}` | {major}.x, locked in `package-lock.json` |" in readme
    for package, version in versions.items():
        assert package == f"openai-v{version.split('.')[0]}"
    # The testing page's sentence says how many majors the table lists.
    assert f"{_COUNT[len(PACKAGES)]} majors run side by side" in readme
