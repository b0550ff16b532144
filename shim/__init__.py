"""tts-shim: OpenAI's ``/v1/audio/speech`` in front of the AI/ML API's ``/v1/tts``.

The public API is what this module exports (:class:`Config`, :func:`create_app`,
``__version__``), the test helpers in :mod:`shim.testing` and the pytest plugin
(:mod:`shim.plugin`, loaded by its entry point). Every other module is internal: its
names may change in any release.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shim.app import create_app
    from shim.config import Config

__version__ = "0.1.0"

__all__ = ["Config", "__version__", "create_app"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that importing a light submodule (the pytest plugin,
    # which pytest loads in every project where this package is installed) stays cheap.
    if name == "create_app":
        from shim.app import create_app

        return create_app
    if name == "Config":
        from shim.config import Config

        return Config
    raise AttributeError(f"module 'shim' has no attribute {name!r}")
