#!/usr/bin/env python3
"""Set up the project's virtual environment, then serve or test.

The README's two quick-start commands are::

    python3 scripts/dev.py serve   # the shim on its embedded mock upstream, no key needed
                                   # (.venv-serve: runtime only; ARGS go to tts-shim serve)
    python3 scripts/dev.py test    # lint, type-check and every test

``test`` with no arguments also runs the SDK contract suite and the README's examples
against the oldest ``openai`` SDK the README claims (``.venv-oldest-sdk``), and a user's
test file against a wheel of the package installed in a virtual environment of its own
(``.venv-wheel-smoke``), and again with nothing but the package and pytest installed
(``.venv-bare``: ``serve --mock`` speaks and the fixtures work, without numpy), beside the
main pytest run (pytest-xdist), and prints how long the tests took, set-up excluded.
``test ARGS`` runs lint, type checks and ``pytest ARGS`` only. Either way ``test`` first
sets up what the tests need: the environments, Debian's packages, and ``npm ci`` in
``contract_tests/node`` when its package files changed.

Only the standard library is used here, so the script runs on a fresh clone with
nothing but Python 3.10+ installed. The environments are reinstalled only when
``pyproject.toml`` changes.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import venv
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

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


def _oldest_sdk_env() -> Path:
    env = _sibling("oldest-sdk")
    _ensure_other_env(env, "-e", ".[test]", f"openai=={oldest_sdk()}")
    return env


def test_oldest_sdk() -> subprocess.CompletedProcess[str]:
    """The SDK contract suite and the README's examples against the oldest supported
    ``openai`` release, output captured (it runs beside the main suite)."""
    # What the SDK's version changes: the calls it makes and how it reads the replies
    # (contract_tests/sdk), and whether the README's examples that import it run on every
    # SDK the README claims (its shell examples, and Python that never imports the SDK,
    # are marked without_sdk). contract_tests/upstream and reliability hold the shim's
    # side, whatever the SDK, and run once, in the main suite.
    suites = ["contract_tests/sdk", "contract_tests/readme"]
    command: list[str | Path] = [_bin(_oldest_sdk_env()) / "python", "-m", "pytest"]
    command += [*suites, "-m", "not without_sdk", "-x", "-q"]
    return _capture([*command, "-p", "no:cacheprovider"])


def _capture(
    command: list[str | Path], *, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with its output (both streams, in order) kept for later."""
    line = "+ " + " ".join(map(str, command))
    result = subprocess.run(
        [str(a) for a in command],
        cwd=cwd,
        env=_test_environ() if env is None else env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    result.stdout = f"{line}\n{result.stdout}"
    return result


def _test_environ() -> dict[str, str]:
    """The environment the tests run in: this one, but writing bytecode caches.

    Some machines set ``PYTHONDONTWRITEBYTECODE``. pytest then rewrites the asserts of
    every plugin package (schemathesis, hypothesis, this one...) from source in every
    process it starts, and every ``tts-shim serve`` a test starts compiles the package
    again: about a minute of CPU over the suite, on a two-core machine.
    """
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _user_environ() -> dict[str, str]:
    """The tests' environment without a ``PYTHONPATH`` or ``PYTHONHOME``, so a user's
    project imports the package installed in its venv, not this checkout."""
    environ = _test_environ()
    for name in ("PYTHONPATH", "PYTHONHOME"):
        environ.pop(name, None)
    return environ


def _bare_env() -> Path:
    """``pip install .`` alone (no extras), then pytest, as a user's project adds it:
    what resolves must not include numpy."""
    env = _sibling("bare")
    _ensure_other_env(env, ".", "pytest>=8")
    return env


def _reinstall(env: Path, wheel: Path) -> list[str | Path]:
    """The command that puts the fresh wheel over the one set-up installed in ``env``;
    the dependencies stay."""
    pip = [_bin(env) / "python", "-m", "pip", "install", "--quiet"]
    return [*pip, "--force-reinstall", "--no-deps", wheel]


def test_bare_install(wheel: Path) -> subprocess.CompletedProcess[str]:
    """``pip install tts-shim`` with no extras (and pytest): ``tts-shim serve --mock``
    speaks, and a user's test file using the ``tts_shim`` fixture passes, with no numpy
    installed (scripts/bare_install_check.py, in a scratch directory)."""
    env = _bare_env()
    installed = _capture(_reinstall(env, wheel))
    if installed.returncode:
        return installed
    check: list[str | Path] = [_bin(env) / "python", ROOT / "scripts" / "bare_install_check.py"]
    check.append(ROOT / "tests" / "plugin" / "bare_user_project.py")
    with tempfile.TemporaryDirectory(prefix="tts-shim-bare-") as scratch:
        result = _capture(check, cwd=Path(scratch), env=_user_environ())
    result.stdout = installed.stdout + result.stdout
    return result


def _wheel_env() -> Path:
    """The package with its ``testing`` extra, as a user's project installs it."""
    env = _sibling("wheel-smoke")
    _ensure_other_env(env, "hatchling>=1.18", "pytest>=8", "openai", ".[testing]")
    return env


def test_wheel() -> subprocess.CompletedProcess[str]:
    """A user's test file against the package installed from a fresh wheel, in a
    scratch directory outside the repository, the plugin loaded by its entry point;
    then the same wheel with no extras (:func:`test_bare_install`). Output captured."""
    env = _wheel_env()
    python = _bin(env) / "python"
    log: list[str] = []

    def step(command: list[str | Path], **options: Any) -> bool:
        result = _capture(command, **options)
        log.append(result.stdout)
        return result.returncode == 0

    def done(ok: bool) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess([], 0 if ok else 1, "".join(log))

    with tempfile.TemporaryDirectory(prefix="tts-shim-wheel-") as scratch:
        dist, project = Path(scratch, "dist"), Path(scratch, "user-project")
        project.mkdir()
        build = ("wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(dist), ".")
        if not step([python, "-m", "pip", *build]):
            return done(False)
        (wheel,) = dist.glob("tts_shim-*.whl")
        if not step(_reinstall(env, wheel)):
            return done(False)
        bare = test_bare_install(wheel)
        log.append(bare.stdout)
        if bare.returncode:
            return done(False)
        shutil.copy(ROOT / "tests" / "plugin" / "user_project.py", project / "test_user_project.py")
        user_tests: list[str | Path] = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        return done(step(user_tests, cwd=project, env=_user_environ()))


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


def _serve_env() -> Path:
    env = _sibling("serve")
    _ensure_other_env(env, "-e", ".")
    return env


def serve(argv: list[str]) -> int:
    """``tts-shim serve --mock ARGS`` from ``.venv-serve``, which holds only what serving
    needs (the package, mock included: no test or lint tools). Every argument
    goes through, so ``serve --port 9000`` works, and ``serve --no-mock`` (with
    ``AIMLAPI_KEY`` set) serves the real API."""
    env = _serve_env()
    if argv[:1] == ["serve"]:  # the older spelling: dev.py serve serve --mock ...
        argv = argv[1:]
    program = _bin(env) / "tts-shim"
    os.execv(str(program), [str(program), "serve", "--mock", *argv])  # noqa: S606
    return 0  # not reached


def _set_up(whole: bool) -> None:
    """Everything the tests need installed, so the timed part installs nothing."""
    ensure_env("dev")
    ensure_system_packages()
    ensure_node_packages()
    _serve_env()  # tests/scripts/test_dev.py runs `dev.py serve`
    if whole:
        _oldest_sdk_env()
        _wheel_env()
        _bare_env()


#: pytest-xdist workers for the main run. The tests mostly wait (on servers, processes,
#: timeouts), so a few more workers than the two cores of the machine we measure on.
WORKERS = "3"


def test(argv: list[str]) -> int:
    whole = not argv
    _set_up(whole)
    started = time.monotonic()
    environ = _test_environ()
    _run(BIN / "ruff", "check", ".")
    _run(BIN / "ruff", "format", "--check", ".")
    with tempfile.TemporaryDirectory() as site:  # the docs site builds, links and all
        _run(BIN / "mkdocs", "build", "--strict", "--quiet", "--site-dir", site)
    with ThreadPoolExecutor(max_workers=3) as pool:
        # Beside the main run, their output kept for its end: the type check, and (the
        # whole run) the oldest SDK and the wheel.
        side: dict[str, Future[subprocess.CompletedProcess[str]]] = {
            "mypy --strict": pool.submit(_capture, [BIN / "mypy"]),
        }
        if whole:
            side["oldest openai SDK"] = pool.submit(test_oldest_sdk)
            side["wheel and bare install"] = pool.submit(test_wheel)
        # The whole run also reports coverage and the slowest tests (README, "Development").
        report = ["--cov", "--cov-report=term:skip-covered", "--durations=15"] if whole else []
        parallel = ["-n", WORKERS, "--dist", "worksteal"] if whole else []
        command = [str(BIN / "python"), "-m", "pytest", *parallel, *report, *argv]
        print("+", " ".join(command), flush=True)
        main_code = subprocess.run(command, cwd=ROOT, env=environ, check=False).returncode
        results = {name: future.result() for name, future in side.items()}
    for name, result in results.items():
        print(f"\n==== {name} ====\n{result.stdout.rstrip()}", flush=True)
    took = time.monotonic() - started
    verdicts = [f"pytest: {'passed' if main_code == 0 else 'FAILED'}"] + [
        f"{name}: {'passed' if r.returncode == 0 else 'FAILED'}" for name, r in results.items()
    ]
    print(f"\n{'; '.join(verdicts)}. Tests took {took:.0f} s (set-up excluded).", flush=True)
    return main_code or next((r.returncode for r in results.values() if r.returncode), 0)


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
