"""The cache key of one generation: everything that changes the sound, and who paid.

One :class:`CacheKey` names one piece of audio. Its :attr:`~CacheKey.digest` (SHA-256
of a canonical JSON document) is the only name the stores, single flight and metrics
use, so the text and the tenant never reach Redis key names, file names or logs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

__all__ = ["KEY_VERSION", "CacheKey", "tenant_of"]

#: Bumped whenever the canonical form changes, so old entries simply stop matching.
KEY_VERSION = 1

#: Names of one delivered format; chat's ``pcm16`` is the speech endpoint's ``pcm``.
_FORMAT_ALIASES = {"pcm16": "pcm"}


def tenant_of(paying_key: str | None, *, pass_through: bool) -> str | None:
    """The tenant of a request: ``None`` with a server-side key (the deployment shares one
    cache), else a SHA-256 of the client's own key (entries scoped to whoever pays, so
    one client cannot learn what another synthesized). The key itself is never kept."""
    if not pass_through:
        return None
    if not paying_key:
        raise ValueError("a pass-through request has a paying key")
    return hashlib.sha256(paying_key.encode()).hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """What one generation depends on.

    ``text`` is kept exactly as sent: any normalisation (case, whitespace, Unicode)
    could change what is spoken. ``speed`` ``None`` means the upstream's default.
    ``tenant`` comes from :func:`tenant_of`, never a raw key.
    """

    model: str
    voice: str
    text: str
    format: str
    instructions: str | None = None
    speed: float | None = None
    tenant: str | None = None
    digest: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        canonical = {
            "v": KEY_VERSION,
            "model": self.model,
            "voice": self.voice,
            "text": self.text,
            "instructions": self.instructions,
            # 1 and 1.0 are one speed; JSON would spell them differently.
            "speed": None if self.speed is None else float(self.speed),
            "format": _FORMAT_ALIASES.get(self.format, self.format),
            "tenant": self.tenant,
        }
        document = json.dumps(canonical, sort_keys=True, ensure_ascii=False, allow_nan=False)
        digest = hashlib.sha256(document.encode()).hexdigest()
        object.__setattr__(self, "digest", digest)

    def __repr__(self) -> str:
        # The text can be private and long; the digest names the entry well enough.
        return f"CacheKey(model={self.model!r}, voice={self.voice!r}, digest={self.digest[:16]})"
