"""An offline stand-in for the AI/ML API's ``POST /v1/tts`` and the CDN behind it.

Use it in-process (``httpx.ASGITransport(create_app())``), on a socket from a
test (``BackgroundServer(create_app())``), or from the command line
(``python -m mockserver`` / ``tts-shim mock``).
"""

from mockserver.app import create_app
from mockserver.audio import speech_duration
from mockserver.config import RESPONSE_SHAPES, MockConfig, MockConfigError
from mockserver.journal import Journal
from mockserver.latency import GenerationLatency, parse_latency
from mockserver.scenario import Scenario, ScenarioError, Step
from mockserver.server import BackgroundServer
from mockserver.validation import FORMATS, MODELS, VOICES

__all__ = [
    "FORMATS",
    "MODELS",
    "RESPONSE_SHAPES",
    "VOICES",
    "BackgroundServer",
    "GenerationLatency",
    "Journal",
    "MockConfig",
    "MockConfigError",
    "Scenario",
    "ScenarioError",
    "Step",
    "create_app",
    "parse_latency",
    "speech_duration",
]
