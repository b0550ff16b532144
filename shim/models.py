"""The catalogue routes: ``/v1/models`` (OpenAI's shape) and the voice and speech-model
lists that OpenAI-style front ends read.

``/v1/audio/voices`` and ``/v1/audio/models`` are not OpenAI endpoints; the front ends
that call them (Open WebUI among them) read ``voices`` / ``models`` keys, while
OpenAI-style list readers expect ``{"object": "list", "data": [...]}``. Both keys are
sent, holding the same entries.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shim.catalog import MODELS, UPSTREAM_VOICES, SpeechModel, resolve_model
from shim.speech import unknown_model

__all__ = ["list_models", "list_speech_models", "list_voices", "retrieve_model"]


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
