"""What the shim serves: speech models, voices and audio formats, and the routes
that list them.

Built once at import; the request path only does dictionary look-ups.

``/v1/audio/voices`` and ``/v1/audio/models`` are not OpenAI endpoints; the front ends
that call them (Open WebUI among them) read ``voices`` / ``models`` keys, while
OpenAI-style list readers expect ``{"object": "list", "data": [...]}``. Both keys are
sent, holding the same entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shim import errors
from shim.errors import APIError

__all__ = [
    "FORMATS",
    "MODELS",
    "UPSTREAM_VOICES",
    "AudioFormat",
    "SpeechModel",
    "list_models",
    "list_speech_models",
    "list_voices",
    "resolve_model",
    "retrieve_model",
    "unknown_model",
]


@dataclass(frozen=True)
class SpeechModel:
    id: str
    upstream_id: str
    created: int
    #: OpenAI price per 1M characters is not published for audio-output chat, so
    #: usage figures are estimates (see README, "Usage numbers").
    owned_by: str = "openai"


@dataclass(frozen=True)
class AudioFormat:
    name: str
    content_type: str
    #: PyAV (FFmpeg) muxer and encoder used when the shim must transcode.
    muxer: str
    codec: str


# ``created`` values are the dates OpenAI announced each model.
_MODELS = (
    SpeechModel("tts-1", "openai/tts-1", 1699046015),
    SpeechModel("tts-1-hd", "openai/tts-1-hd", 1699046015),
    SpeechModel("gpt-4o-mini-tts", "openai/gpt-4o-mini-tts", 1742403959),
)

#: Every accepted id, bare (``tts-1-hd``) and upstream (``openai/tts-1-hd``) forms.
MODELS: dict[str, SpeechModel] = {
    **{m.id: m for m in _MODELS},
    **{m.upstream_id: m for m in _MODELS},
}

#: The AI/ML API's voice enum. OpenAI's newer ``marin`` and ``cedar`` are not in it.
UPSTREAM_VOICES: tuple[str, ...] = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)

#: OpenAI's ``response_format`` values and the content types the real service sends.
FORMATS: dict[str, AudioFormat] = {
    f.name: f
    for f in (
        AudioFormat("mp3", "audio/mpeg", "mp3", "libmp3lame"),
        AudioFormat("opus", "audio/opus", "ogg", "libopus"),
        AudioFormat("aac", "audio/aac", "adts", "aac"),
        AudioFormat("flac", "audio/flac", "flac", "flac"),
        AudioFormat("wav", "audio/wav", "wav", "pcm_s16le"),
        AudioFormat("pcm", "audio/pcm", "s16le", "pcm_s16le"),
    )
}


def resolve_model(model_id: str) -> SpeechModel | None:
    """Find a model by either id form; ``None`` when the shim does not serve it."""
    return MODELS.get(model_id)


def unknown_model(model: str, param: str = "model") -> APIError:
    """The 404 OpenAI sends for a model it does not serve."""
    return errors.model_not_found(
        f"The model `{model}` does not exist or is not served by this shim, which serves "
        "only the speech models tts-1, tts-1-hd and gpt-4o-mini-tts.",
        param,
    )


# -- the catalogue routes ---------------------------------------------------------------


def _model(model_id: str, model: SpeechModel) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": model.created, "owned_by": model.owned_by}


async def list_models(request: Request) -> Response:
    """``GET /v1/models``: every speech model, in both id forms."""
    data = [_model(model_id, model) for model_id, model in MODELS.items()]
    return JSONResponse({"object": "list", "data": data})


async def retrieve_model(request: Request) -> Response:
    """``GET /v1/models/{id}``; the id may contain ``/``, raw or as ``%2F`` (the
    server decodes the path before routing, so both arrive the same)."""
    model_id: str = request.path_params["model_id"]
    model = resolve_model(model_id)
    if model is None:
        raise unknown_model(model_id)
    return JSONResponse(_model(model_id, model))


async def list_voices(request: Request) -> Response:
    """``GET /v1/audio/voices``: the voices the AI/ML API speaks, as ``{id, name}``."""
    voices = [{"id": voice, "name": voice.capitalize()} for voice in UPSTREAM_VOICES]
    return JSONResponse({"object": "list", "data": voices, "voices": voices})


async def list_speech_models(request: Request) -> Response:
    """``GET /v1/audio/models``: the speech models as ``{id, name}``, for front ends
    that build a model picker from it."""
    models = [{"id": model_id, "name": model_id} for model_id in MODELS]
    return JSONResponse({"object": "list", "data": models, "models": models})
