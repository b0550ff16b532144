"""tts-shim: OpenAI's ``/v1/audio/speech`` in front of the AI/ML API's ``/v1/tts``."""

from shim.app import create_app
from shim.config import Config

__version__ = "0.1.0"

__all__ = ["Config", "__version__", "create_app"]
