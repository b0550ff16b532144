"""Links to generated audio, shaped like the real CDN's, and their parsing.

The real service answers with links such as
``https://cdn.aimlapi.com/generations/hedgehog/1760948051400-99effd93-a38a-43d5-b4e4-76b42afb6e67.mp3``.
The mock's links have the same path shape, with the voice as the folder, and carry
what is needed to regenerate the clip in a query string::

    {root}/generations/{voice}/{epoch ms}-{uuid4}.{format}?duration_ms={milliseconds}

so the server keeps no record of what it generated. A link without ``duration_ms``
(the real example above, say) serves a two-second clip; a folder that is not a voice
name sounds like ``alloy``.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass

from mockserver.audio import FORMATS, max_duration_ms, samples_for
from mockserver.validation import VOICES

__all__ = [
    "AUDIO_PATH_PREFIX",
    "DEFAULT_DURATION_MS",
    "AudioPathError",
    "AudioSpec",
    "audio_url",
    "parse_audio_path",
]

AUDIO_PATH_PREFIX = "/generations/"
DEFAULT_DURATION_MS = 2000

_BUCKET = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NAME = re.compile(r"^(?P<stamp>[0-9]{1,20})-(?P<id>[0-9A-Fa-f-]{1,64})\.(?P<ext>[a-z0-9]{1,8})$")


class AudioPathError(ValueError):
    """The path or query names no clip the mock can serve."""


@dataclass(frozen=True)
class AudioSpec:
    """Everything needed to regenerate one clip."""

    voice: str
    duration_ms: int
    format: str

    @property
    def samples(self) -> int:
        return samples_for(self.duration_ms)


def audio_url(root: str, voice: str, fmt: str, duration_ms: int) -> str:
    """A fresh CDN-style link under ``root`` (e.g. ``http://127.0.0.1:8100``) for a clip."""
    name = f"{int(time.time() * 1000)}-{uuid.uuid4()}.{fmt}"
    return f"{root.rstrip('/')}{AUDIO_PATH_PREFIX}{voice}/{name}?duration_ms={duration_ms}"


def parse_audio_path(bucket: str, name: str, duration_ms: str | None) -> AudioSpec:
    """Read a ``/generations/{bucket}/{name}?duration_ms=...`` request."""
    match = _NAME.match(name)
    if not _BUCKET.match(bucket) or match is None:
        raise AudioPathError("no such object")
    fmt = match["ext"]
    if fmt not in FORMATS:
        raise AudioPathError(f"no such object: unknown extension {fmt!r}")
    if duration_ms is None:
        ms = DEFAULT_DURATION_MS
    elif duration_ms.isascii() and duration_ms.isdigit() and len(duration_ms) <= 12:
        ms = int(duration_ms)
    else:
        raise AudioPathError("no such object: duration_ms must be a whole number")
    if not 1 <= ms <= max_duration_ms(fmt):
        raise AudioPathError(f"no such object: duration_ms must be 1..{max_duration_ms(fmt)}")
    return AudioSpec(voice=bucket if bucket in VOICES else "alloy", duration_ms=ms, format=fmt)
