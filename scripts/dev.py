#!/usr/bin/env python3
"""Set up the project's virtual environment, then serve or test.

The README's two quick-start commands are::

    python3 scripts/dev.py serve   # the shim on its embedded mock upstream, no key needed
    python3 scripts/dev.py test    # lint, type-check and every test

Only the standard library is used here, so the script runs on a fresh clone with
nothing but Python 3.10+ installed. The environment lives in ``.venv`` and is
reinstalled only when ``pyproject.toml`` changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("TTS_SHIM_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".tts-shim-installed"


def _run(*args: str | Path) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], cwd=ROOT, check=True)


def _fingerprint(extras: str) -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(extras.encode())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def ensure_env(extras: str = "dev") -> None:
    """Create ``.venv`` and install the project (editable) with ``extras``."""
    if not (BIN / "python").exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    wanted = _fingerprint(extras)
    if STAMP.exists() and STAMP.read_text() == wanted:
        return
    _run(BIN / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    _run(BIN / "python", "-m", "pip", "install", "--quiet", "-e", f".[{extras}]")
    STAMP.write_text(wanted)


def serve(argv: list[str]) -> int:
    ensure_env("dev")
    args = argv or ["serve", "--mock"]
    os.execv(str(BIN / "tts-shim"), [str(BIN / "tts-shim"), *args])  # noqa: S606
    return 0  # not reached


def test(argv: list[str]) -> int:
    ensure_env("dev")
    _run(BIN / "ruff", "check", ".")
    _run(BIN / "ruff", "format", "--check", ".")
    _run(BIN / "mypy")
    result = subprocess.run([str(BIN / "python"), "-m", "pytest", *argv], cwd=ROOT, check=False)
    return result.returncode


COMMANDS = {"serve": serve, "test": test}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__)
        return 2
    try:
        return COMMANDS[sys.argv[1]](sys.argv[2:])
    except subprocess.CalledProcessError as exc:
        return exc.returncode or 1


if __name__ == "__main__":
    sys.exit(main())
