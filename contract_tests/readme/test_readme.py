"""Every Python and shell example in README.md and docs/ runs, against the mock, as written.

The examples are read from README.md and the docs site's pages (``docs/*.md``) when the
tests are collected (markdown-it-py
finds the fenced ``python`` and ``sh`` blocks), so there is no second copy to drift:
edit an example so that it breaks, and its test fails. ``python3 scripts/dev.py test``
runs them on the newest ``openai`` SDK and again on the oldest the README claims.

How a block runs, by default:

* ``python``: as a user runs it: saved to a file in a scratch directory and run by
  ``python example.py`` (this interpreter: the installed SDK), so code that is not a
  valid script (a module-level ``await`` or ``async with``) fails; the file's lines are
  the page's own, so a traceback's line numbers point into the page.
* ``sh``: ``bash -euo pipefail`` in a scratch directory, with ``curl`` failing on an
  HTTP error status (``--fail-with-body`` is added), ``AIMLAPI_KEY`` set to a dummy
  key, and the package's console scripts on ``PATH``.

Addresses: ``127.0.0.1:8000`` / ``localhost:8000`` (the shim, as the README starts it)
are replaced with a shim on the mock set up as ``dev.py serve`` sets it up (a server-side
key, so clients need none), and ``...:8100`` (the mock) with that mock; both come from
the package's own pytest fixtures. After a block ran, every audio file it wrote
(``.mp3``, ``.wav``, ``.opus``, ``.aac``, ``.flac``, ``.pcm``) must decode.

An HTML comment on the line before a block changes how it runs:

* ``<!-- readme-test: continues -->``: run it after the Python block before it (and
  that block's own predecessors), in the same script (``client`` carries on);
* ``<!-- readme-test: pytest -->``: the block is a user's test file; it is written to
  a scratch project and run by pytest there, the plugin loaded by its entry point;
* ``<!-- readme-test: server -->``: the block starts a server; it is started (ports
  8000 and 8100 replaced with a free one), must answer HTTP on that port, and is
  stopped with SIGTERM;
* ``<!-- readme-test: skip REASON -->``: not run, for the few examples that cannot run
  offline or here (a real key, the registry, the whole test suite); the reason shows
  in the test report.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from markdown_it import MarkdownIt

from shim.server import MOCK_KEY
from shim.testing import MockUpstream, ShimServer, decode_audio, free_port

ROOT = Path(__file__).resolve().parents[2]
#: The pages whose examples run: the README, then the docs site's.
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
LANGUAGES = {"python", "sh"}
_DIRECTIVE = re.compile(r"<!--\s*readme-test:\s*(\w+)\s*(.*?)\s*-->", re.DOTALL)
_KINDS = {"run", "continues", "pytest", "server", "skip"}
_SHIM_ADDRESS = re.compile(r"\b(?:127\.0\.0\.1|localhost):8000\b")
_MOCK_ADDRESS = re.compile(r"\b(?:127\.0\.0\.1|localhost):8100\b")
_IMPORTS_SDK = re.compile(r"^\s*(?:import|from)\s+openai\b", re.MULTILINE)
_AUDIO = {".mp3": "mp3", ".wav": "wav", ".opus": "opus", ".aac": "aac", ".flac": "flac"}
#: A block must finish (or a server must answer) within this many seconds.
LIMIT = 120.0
# Not measured for coverage (pytest-cov's no_cover, and no coverage in the examples'
# processes): they run what users run, which the rest of the suite measures line by line;
# traced, they cost half again as much CPU.
pytestmark = pytest.mark.no_cover

#: The file a Python block is saved to and run as (not a module name users import).
SCRIPT = "example.py"


@dataclass(frozen=True)
class Example:
    """One fenced block of a page (README.md, docs/...): its language, first line of
    code (1-based), the code, how to run it, and, for ``skip``, why not."""

    page: str
    language: str
    line: int
    source: str
    kind: str = "run"
    reason: str = ""
    #: For ``continues``: the Python blocks to run before this one, oldest first.
    before: tuple[Example, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}-{self.language}"

    @property
    def uses_sdk(self) -> bool:
        """Whether it (or a block it continues) imports the ``openai`` SDK."""
        return any(_IMPORTS_SDK.search(block.source) for block in (*self.before, self))


def examples() -> list[Example]:
    """Every page's Python and shell blocks, in order, with their directives."""
    return [example for page in PAGES for example in _page_examples(page)]


def _page_examples(path: Path) -> list[Example]:
    page = path.relative_to(ROOT).as_posix()
    tokens = MarkdownIt().parse(path.read_text(encoding="utf-8"))
    found: list[Example] = []
    previous_python: Example | None = None  # a block continues one of its own page
    for index, token in enumerate(tokens):
        if token.type != "fence" or token.info.strip() not in LANGUAGES:
            continue
        assert token.map is not None
        kind, reason = "run", ""
        before = tokens[index - 1] if index else None
        if before is not None and before.type == "html_block":
            directive = _DIRECTIVE.search(before.content)
            if directive:
                kind, reason = directive.group(1), directive.group(2)
        line = token.map[0] + 2
        example = Example(page, token.info.strip(), line, token.content, kind, reason)
        if kind == "continues":
            assert previous_python is not None, f"{example.id}: nothing before it to continue"
            chain = (*previous_python.before, previous_python)
            example = Example(page, example.language, line, example.source, kind, "", chain)
        if example.language == "python":
            previous_python = example
        found.append(example)
    return found


EXAMPLES = examples()


def test_the_readme_has_examples_and_every_directive_is_known() -> None:
    assert sum(e.language == "python" for e in EXAMPLES) >= 5
    assert sum(e.language == "sh" for e in EXAMPLES) >= 5
    for example in EXAMPLES:
        assert example.kind in _KINDS, f"{example.id}: unknown readme-test directive"
        assert example.kind != "skip" or example.reason, f"{example.id}: skip needs a reason"
    assert {"README.md", "docs/reliability.md"} <= {e.page for e in EXAMPLES}
    # Skips stay few, so that the pages' code is what gets run.
    assert sum(e.kind == "skip" for e in EXAMPLES) <= 8


def _addresses(source: str, shim: str, mock: str) -> str:
    return _MOCK_ADDRESS.sub(mock, _SHIM_ADDRESS.sub(shim, source))


def _environment(scratch: Path) -> dict[str, str]:
    """Console scripts of this environment on ``PATH``, and a ``curl`` that fails on an
    HTTP error status; no settings of the developer's own leak in."""
    wrappers = scratch.parent / f"{scratch.name}-bin"
    wrappers.mkdir()
    real_curl = shutil.which("curl")
    assert real_curl is not None, "the README's shell examples need curl (Debian: curl)"
    curl = wrappers / "curl"
    curl.write_text(f'#!/bin/sh\nexec {real_curl} --fail-with-body "$@"\n')
    curl.chmod(0o755)
    # Nor coverage's start-up hook (``patch = subprocess``): these are a user's programs,
    # not measured (see ``pytestmark``).
    own = ("AIMLAPI_", "TTS_SHIM_", "COVERAGE_PROCESS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(own)}
    path = os.pathsep.join([str(wrappers), str(Path(sys.executable).parent), env["PATH"]])
    env.update(PATH=path, AIMLAPI_KEY="sk-readme-example-0000", PYTHONUNBUFFERED="1")
    return env


def _check_audio_files(scratch: Path) -> None:
    for path in scratch.iterdir():
        data = path.read_bytes() if path.is_file() else b""
        if path.suffix == ".pcm":
            assert data, f"{path.name} is empty"
            assert len(data) % 2 == 0, f"{path.name} is not whole 16-bit samples"
        elif path.suffix in _AUDIO:
            assert decode_audio(data, _AUDIO[path.suffix]).seconds > 0, path.name


def _completed(proc: subprocess.CompletedProcess[str], example: Example) -> None:
    assert proc.returncode == 0, (
        f"{example.id} failed ({proc.returncode}):\n{example.source}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    )


def _script(blocks: list[tuple[int, str]], cwd: Path) -> list[str]:
    """Save the blocks, in order, as one script whose lines are the page's lines (blank
    lines in between), and return the command that runs it as a user would."""
    lines: list[str] = []
    for line, source in blocks:
        assert len(lines) < line, f"line {line}: blocks out of order"
        lines += [""] * (line - 1 - len(lines)) + source.splitlines()
    (cwd / SCRIPT).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [sys.executable, SCRIPT]


def _run_python(example: Example, env: dict[str, str], cwd: Path, shim: str, mock: str) -> None:
    blocks = [(e.line, _addresses(e.source, shim, mock)) for e in (*example.before, example)]
    proc = subprocess.run(
        _script(blocks, cwd),
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=LIMIT,
    )
    _completed(proc, example)


def _bash() -> str:
    bash = shutil.which("bash")
    assert bash is not None, "the README's shell examples need bash"
    return bash


def _run_sh(example: Example, env: dict[str, str], cwd: Path, shim: str, mock: str) -> None:
    proc = subprocess.run(
        [_bash(), "-euo", "pipefail", "-c", _addresses(example.source, shim, mock)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=LIMIT,
    )
    _completed(proc, example)


def _run_pytest(example: Example, env: dict[str, str], cwd: Path) -> None:
    (cwd / "test_readme_example.py").write_text(example.source)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_readme_example.py"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=LIMIT,
    )
    _completed(proc, example)
    assert re.search(r"\b[1-9]\d* passed\b", proc.stdout), proc.stdout
    assert not re.search(r"\b(failed|error|skipped)\b", proc.stdout), proc.stdout


def _answers(port: int, proc: subprocess.Popen[str]) -> httpx.Response:
    deadline = time.monotonic() + LIMIT
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the server exited with {proc.returncode}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.1)
            continue
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
    raise AssertionError(f"nothing listened on port {port} within {LIMIT} s")


def _run_server(example: Example, env: dict[str, str], cwd: Path) -> None:
    port = free_port()
    source = re.sub(r"\b(?:8000|8100)\b", str(port), example.source)
    if example.language == "python":
        command = _script([(example.line, source)], cwd)
    else:
        command = [_bash(), "-euo", "pipefail", "-c", source]
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # SIGTERM reaches bash's child too
    )
    try:
        response = _answers(port, proc)
        # The shim has /healthz; the mock answers it with its own 404 body: HTTP either way.
        assert response.status_code in (200, 404), response.text
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


# The oldest-SDK run (dev.py) leaves out, with ``-m "not without_sdk"``, the examples the
# SDK's version cannot change: shell, and Python that never imports it.
@pytest.mark.parametrize(
    "example",
    [
        pytest.param(e, id=e.id, marks=() if e.uses_sdk else pytest.mark.without_sdk)
        for e in EXAMPLES
    ],
)
def test_the_example_runs(
    example: Example,
    tts_shim_factory: Callable[..., ShimServer],
    tts_mock: MockUpstream,
    tmp_path: Path,
) -> None:
    if example.kind == "skip":
        pytest.skip(f"{example.page}: {example.reason}")
    scratch = tmp_path / "work"
    scratch.mkdir()
    env = _environment(scratch)
    # As `tts-shim serve --mock` (dev.py serve) runs: the server holds the mock's key.
    shim = tts_shim_factory(upstream_key=MOCK_KEY).url.split("://", 1)[1]
    mock = tts_mock.url.split("://", 1)[1]
    if example.kind == "pytest":
        _run_pytest(example, env, scratch)
    elif example.kind == "server":
        _run_server(example, env, scratch)
    elif example.language == "python":
        _run_python(example, env, scratch, shim, mock)
    else:
        _run_sh(example, env, scratch, shim, mock)
    _check_audio_files(scratch)
