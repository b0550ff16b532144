#!/usr/bin/env python3
"""Set up the project's virtual environment, then serve or test.

The README's two quick-start commands are::

    python3 scripts/dev.py serve   # the shim on its embedded mock upstream, no key needed
                                   # (.venv-serve: runtime only; ARGS go to tts-shim serve)
    python3 scripts/dev.py test    # lint, type-check and every test

``test`` with no arguments also runs the contract suite against the oldest ``openai``
SDK the README claims (``.venv-oldest-sdk``), and a user's test file against a wheel of
the package installed in a virtual environment of its own (``.venv-wheel-smoke``).
``test ARGS`` runs lint, type checks and ``pytest ARGS`` only. Either way ``test`` first
runs ``npm ci`` in ``contract_tests/node`` (the Node SDK contract tests) when its package
files changed since the last install.

Only the standard library is used here, so the script runs on a fresh clone with
nothing but Python 3.10+ installed. The environments are reinstalled only when
``pyproject.toml`` changes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("TTS_SHIM_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".tts-shim-installed"
NODE_TESTS = ROOT / "contract_tests" / "node"


def _run(*args: str | Path) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], cwd=ROOT, check=True)


def _fingerprint(extras: str) -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(extras.encode())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def _bin(env: Path) -> Path:
    return env / ("Scripts" if os.name == "nt" else "bin")


def _sibling(suffix: str) -> Path:
    """Another environment beside the main one: ``.venv-<suffix>``."""
    return VENV.with_name(f"{VENV.name}-{suffix}")


def _ensure_other_env(env: Path, *install: str) -> bool:
    """Create ``env`` and ``pip install`` into it, unless already done for this
    ``pyproject.toml``; returns whether it installed."""
    if not (_bin(env) / "python").exists():
        print(f"creating virtual environment in {env}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(env)
    stamp = env / ".tts-shim-installed"
    wanted = _fingerprint(" ".join(install))
    if stamp.exists() and stamp.read_text() == wanted:
        return False
    _run(_bin(env) / "python", "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    _run(_bin(env) / "python", "-m", "pip", "install", "--quiet", *install)
    stamp.write_text(wanted)
    return True


def oldest_sdk() -> str:
    """The floor of ``openai`` in the ``test`` extra: the oldest release we claim."""
    found = re.search(r'"openai>=([0-9][0-9.]*)"', (ROOT / "pyproject.toml").read_text())
    if found is None:
        raise SystemExit("pyproject.toml: no openai>=X.Y.Z in the test extra")
    return found.group(1)


def test_oldest_sdk() -> int:
    """The contract suite against the oldest supported ``openai`` release."""
    env = _sibling("oldest-sdk")
    _ensure_other_env(env, "-e", ".[test]", f"openai=={oldest_sdk()}")
    # The OpenAI and AI/ML contracts, and the README's examples (they must run on every
    # SDK the README claims); contract_tests/reliability (faults, floods, shutdown)
    # exercises the shim, not the SDK, and runs once, in the main suite.
    suites = ["contract_tests/sdk", "contract_tests/upstream", "contract_tests/readme"]
    command = [_bin(env) / "python", "-m", "pytest", *suites, "-x", "-q"]
    print("+", " ".join(map(str, command)), flush=True)
    return subprocess.run([*map(str, command), "-p", "no:cacheprovider"], cwd=ROOT).returncode


def test_bare_install(wheel: Path) -> int:
    """``pip install tts-shim`` with no extras serves against a real upstream (the mock,
    run from the main venv) and has no numpy (scripts/bare_install_check.py)."""
    env = _sibling("bare")
    if not (_bin(env) / "python").exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(env)
    _run(_bin(env) / "python", "-m", "pip", "install", "--quiet", "--force-reinstall", wheel)
    port = _free_port()
    mock = subprocess.Popen([str(BIN / "tts-shim"), "mock", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        check = [str(_bin(env) / "python"), str(ROOT / "scripts" / "bare_install_check.py")]
        print("+", " ".join(check), flush=True)
        return subprocess.run([*check, f"http://127.0.0.1:{port}"], cwd=env).returncode
    finally:
        mock.terminate()
        mock.wait(10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_wheel() -> int:
    """A user's test file against the package installed from a fresh wheel, in a
    scratch directory outside the repository, the plugin loaded by its entry point."""
    env = _sibling("wheel-smoke")
    python = _bin(env) / "python"
    _ensure_other_env(env, "hatchling>=1.18", "pytest>=8", "openai")
    with tempfile.TemporaryDirectory(prefix="tts-shim-wheel-") as scratch:
        dist, project = Path(scratch, "dist"), Path(scratch, "user-project")
        project.mkdir()
        build = ("wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(dist), ".")
        _run(python, "-m", "pip", *build)
        (wheel,) = dist.glob("tts_shim-*.whl")
        deps = env / ".tts-shim-wheel-deps"
        if deps.exists() and deps.read_text() == _fingerprint("testing"):
            _run(python, "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps", wheel)
        else:
            _run(python, "-m", "pip", "install", "--quiet", f"{wheel}[testing]")
            deps.write_text(_fingerprint("testing"))
        if test_bare_install(wheel):
            return 1
        shutil.copy(ROOT / "tests" / "plugin" / "user_project.py", project / "test_user_project.py")
        environ = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        command = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        print("+ (in a scratch project)", " ".join(command), flush=True)
        return subprocess.run(command, cwd=project, env=environ).returncode


#: Programs some tests run, by the Debian package that has them: a real forward proxy
#: (contract_tests/reliability/test_network.py), a real browser
#: (contract_tests/clients/test_browser.py), and curl for the README's shell examples
#: (contract_tests/readme).
SYSTEM_PACKAGES = {
    "tinyproxy": "tinyproxy",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "curl": "curl",
}


def ensure_system_packages() -> None:
    """Install the Debian packages the tests need, where missing and where we can."""
    sbin = ("/usr/sbin", "/usr/bin", "/sbin")
    missing = [
        package
        for program, package in SYSTEM_PACKAGES.items()
        if not shutil.which(program) and not any(Path(d, program).exists() for d in sbin)
    ]
    if not missing:
        return
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        print(f"warning: install {', '.join(missing)} (Debian packages); the tests that "
              "need them will fail", flush=True)  # fmt: skip
        return
    install = (apt, "install", "-y", "-q", "--no-install-recommends", *missing)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env, check=False).returncode != 0:
        _run(apt, "update", "-q")
        subprocess.run(install, env=env, check=True)


def ensure_node_packages() -> None:
    """``npm ci`` in ``contract_tests/node`` (the Node SDK contract tests) when its
    package files changed since the last install. Without npm it says so, and those
    tests fail with their own message."""
    stamp = NODE_TESTS / "node_modules" / ".tts-shim-installed"
    digest = hashlib.sha256()
    for name in ("package.json", "package-lock.json", ".npmrc"):
        digest.update((NODE_TESTS / name).read_bytes())
    if stamp.exists() and stamp.read_text() == digest.hexdigest():
        return
    npm = shutil.which("npm")
    if npm is None:
        print("npm not found: contract_tests/node needs Node.js 20+ and npm", flush=True)
        return
    print("+ (in contract_tests/node) npm ci", flush=True)
    subprocess.run([npm, "ci"], cwd=NODE_TESTS, check=True)
    stamp.write_text(digest.hexdigest())


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
    """``tts-shim serve --mock ARGS`` from ``.venv-serve``, which holds only what serving
    needs (the package and its ``mock`` extra: no test or lint tools). Every argument
    goes through, so ``serve --port 9000`` works, and ``serve --no-mock`` (with
    ``AIMLAPI_KEY`` set) serves the real API."""
    env = _sibling("serve")
    _ensure_other_env(env, "-e", ".[mock]")
    if argv[:1] == ["serve"]:  # the older spelling: dev.py serve serve --mock ...
        argv = argv[1:]
    program = _bin(env) / "tts-shim"
    os.execv(str(program), [str(program), "serve", "--mock", *argv])  # noqa: S606
    return 0  # not reached


def test(argv: list[str]) -> int:
    ensure_env("dev")
    ensure_system_packages()
    _run(BIN / "ruff", "check", ".")
    _run(BIN / "ruff", "format", "--check", ".")
    _run(BIN / "mypy")
    ensure_node_packages()
    # The whole suite runs last, so its summary line closes the output.
    extra = [] if argv else [test_wheel(), test_oldest_sdk()]
    failed = next((code for code in extra if code), 0)
    # The whole run also reports coverage and the slowest tests (README, "Development").
    report = [] if argv else ["--cov", "--cov-report=term:skip-covered", "--durations=15"]
    command = [str(BIN / "python"), "-m", "pytest", *report, *argv]
    result = subprocess.run(command, cwd=ROOT, check=False)
    return failed or result.returncode


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
