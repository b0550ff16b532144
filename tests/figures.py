"""Figures the reliability tests measure, collected for ``docs/reliability.md``.

Set ``TTS_SHIM_FIGURES=/path/figures.jsonl`` and each measuring test appends one JSON
line (``{"section": ..., ...}``); unset, :func:`record` does nothing.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

__all__ = ["record"]

_lock = threading.Lock()


def record(section: str, **values: Any) -> None:
    path = os.environ.get("TTS_SHIM_FIGURES")
    if not path:
        return
    line = json.dumps({"section": section, **values}, default=str)
    with _lock, open(path, "a", encoding="utf-8") as out:
        out.write(line + "\n")
