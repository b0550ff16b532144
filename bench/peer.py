"""The peer the shim is measured against: the LiteLLM proxy doing one speech hop.

``python3 bench/run.py --peer litellm`` installs LiteLLM's proxy into a virtual
environment of its own (``.venv-litellm``, made on first use: it is a large install,
so it stays out of the project's dependencies), writes its ``config.yaml`` into a
temporary directory, and starts it on loopback with one model, ``tts-1``, routed to
an OpenAI-compatible ``/v1/audio/speech`` endpoint (``bench/trivial.py --audio``).
The load generator then sends it the same speech request as the shim, and the CPU of
its process is read from /proc like the shim's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "ENV",
    "MASTER_KEY",
    "MODEL",
    "PACKAGES",
    "READY",
    "VENV",
    "command",
    "config",
    "ensure_installed",
    "version",
    "write_config",
]

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-litellm"
#: LiteLLM's documented proxy install, plus httptools: LiteLLM already runs uvicorn on
#: uvloop, and with httptools its HTTP parsing is the same C parser as the shim's, so the
#: two differ only in the application code above the server.
PACKAGES = ("litellm[proxy]", "httptools")
MODEL = "tts-1"
#: LiteLLM's proxy refuses to start without a master key; requests carry it as their
#: bearer token (the shim's runs are sent the same header with another value).
MASTER_KEY = "sk-bench-litellm-master-key-0000"  # a loopback stand-in
#: Its price table from the installed package: nothing is fetched at start-up.
ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}
READY = "/health/liveliness"


def ensure_installed(venv: Path = VENV) -> Path:
    """The ``litellm`` command in ``venv``, made (venv and install) if it is missing."""
    litellm = venv / "bin" / "litellm"
    if litellm.exists():
        return litellm
    print(f"installing LiteLLM's proxy into {venv} (once; a large install)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *PACKAGES]
    subprocess.run(pip, check=True)
    return litellm


def version(venv: Path = VENV) -> str:
    """The installed LiteLLM's version."""
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "from importlib.metadata import version; print(version('litellm'))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


def config(upstream: str) -> dict[str, Any]:
    """The proxy's configuration: ``tts-1`` through LiteLLM's OpenAI provider to the
    speech endpoint at ``upstream``, everything else at LiteLLM's defaults."""
    return {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": f"{upstream}/v1",
                    "api_key": "sk-bench-upstream",
                },
            }
        ],
        "general_settings": {"master_key": MASTER_KEY},
    }


def write_config(directory: Path, upstream: str) -> Path:
    """``config.yaml`` in ``directory`` (JSON, which is YAML: no YAML writer needed)."""
    path = directory / "config.yaml"
    path.write_text(json.dumps(config(upstream), indent=1) + "\n")
    return path


def command(litellm: Path, config_file: Path) -> list[str]:
    """The proxy's command line, one worker process, ``{port}`` to be filled in."""
    return [
        str(litellm), "--config", str(config_file), "--host", "127.0.0.1",
        "--port", "{port}", "--num_workers", "1",
    ]  # fmt: skip
