"""The shim's own OpenAPI 3.1 document, served at ``/openapi.json``.

The request schemas are generated from the models that validate the requests
(:mod:`shim.contract`), so the document and the behaviour cannot drift; the paths and
the response schemas are written here as data. Unknown keys are left open (the shim
ignores them) rather than promising a rejection that never comes.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shim.catalog import FORMATS, MODELS
from shim.contract import MAX_INPUT_CHARS, ChatRequest, SchemaGenerator, SpeechRequest
from shim.operations import openapi_paths
from shim.state import state_of

__all__ = ["document", "openapi_json"]

_JSON = "application/json"
_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref("Error")}}}


_SPEECH_ERRORS = {
    "400": _error("A field is missing or invalid (`param` names it), or the body is not JSON."),
    "401": _error("No upstream key, or a missing or wrong client key."),
    "402": _error("The AI/ML account has no credits left."),
    "403": _error("The AI/ML account may not use this model."),
    "404": _error("The model is not served by this shim (`model_not_found`)."),
    "413": _error("The body is over the shim's size cap (`request_too_large`)."),
    "429": _error(
        "The shim is at capacity, or the AI/ML API is rate limiting (`rate_limit_exceeded`); "
        "see `Retry-After`."
    ),
    "500": _error("The AI/ML API failed, or the shim hit an internal error."),
    "502": _error("The AI/ML API or its CDN was unreachable or answered nonsense."),
    "503": _error("The AI/ML API is unavailable, or the shim is shutting down."),
    "504": _error("No audio arrived within the deadline (`timeout`)."),
}

_KEY_ERRORS = {"401": _error("A client key is required and was missing or wrong.")}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` or ``null``."""
    return {"anyOf": [schema, {"type": "null"}]}


def _request_schemas(input_limit: int) -> dict[str, Any]:
    """The request bodies' schemas, and those they refer to, from the models; the text
    to speak may be ``input_limit`` characters long (the app's setting, which the
    models take at validation time)."""
    _, schemas = models_json_schema(
        [(SpeechRequest, "validation"), (ChatRequest, "validation")],
        ref_template=_REF,
        schema_generator=SchemaGenerator,
    )
    defs: dict[str, Any] = schemas["$defs"]
    defs["SpeechRequest"]["properties"]["input"]["maxLength"] = input_limit
    spoken = defs["Message"]["then"]["properties"]["content"]["anyOf"][0]
    spoken["maxLength"] = input_limit
    return defs


def _schemas(input_limit: int) -> dict[str, Any]:
    return {
        **_request_schemas(input_limit),
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "param", "code"],
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": _nullable({"type": "string"}),
                        "code": _nullable({"type": "string"}),
                    },
                }
            },
        },
        "ChatCompletion": {
            "type": "object",
            "required": ["id", "object", "created", "model", "choices", "usage"],
            "properties": {
                "id": {"type": "string"},
                "object": {"type": "string", "enum": ["chat.completion"]},
                "created": {"type": "integer"},
                "model": {"type": "string"},
                "choices": {"type": "array", "items": {"type": "object"}},
                "usage": {"type": "object"},
            },
        },
        "Model": {
            "type": "object",
            "required": ["id", "object", "created", "owned_by"],
            "properties": {
                "id": {"type": "string"},
                "object": {"type": "string", "enum": ["model"]},
                "created": {"type": "integer"},
                "owned_by": {"type": "string"},
            },
        },
        "ModelList": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {
                "object": {"type": "string", "enum": ["list"]},
                "data": {"type": "array", "items": _ref("Model")},
            },
        },
        "NamedList": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {
                "object": {"type": "string", "enum": ["list"]},
                "data": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "name"],
                        "properties": {"id": {"type": "string"}, "name": {"type": "string"}},
                    },
                },
            },
            "additionalProperties": True,
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string"}},
            "additionalProperties": True,
        },
    }


def _json_body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {_JSON: {"schema": _ref(schema)}}}


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref(schema)}}}


def _paths() -> dict[str, Any]:
    binary = {"schema": {"type": "string", "format": "binary"}}
    audio_types = sorted({fmt.content_type for fmt in FORMATS.values()})
    events: dict[str, Any] = {}  # a stream of events; the descriptions say which
    return {
        "/v1/audio/speech": {
            "post": {
                "operationId": "createSpeech",
                "summary": "Generate speech (OpenAI's audio.speech.create).",
                "requestBody": _json_body("SpeechRequest"),
                "responses": {
                    "200": {
                        "description": "The audio, chunked; `text/event-stream` when "
                        "`stream_format` is `sse`. A failure after the first byte aborts "
                        "the transfer.",
                        "content": {
                            **{media: binary for media in audio_types},
                            "text/event-stream": events,
                        },
                    },
                    **_SPEECH_ERRORS,
                },
            }
        },
        "/v1/chat/completions": {
            "post": {
                "operationId": "createChatCompletion",
                "summary": "Speak the last user message (chat with audio output).",
                "requestBody": _json_body("ChatRequest"),
                "responses": {
                    "200": {
                        "description": "A `chat.completion` with the audio base64 in "
                        "`choices[0].message.audio`, or `chat.completion.chunk` events "
                        "when `stream` is true.",
                        "content": {
                            _JSON: {"schema": _ref("ChatCompletion")},
                            "text/event-stream": events,
                        },
                    },
                    **_SPEECH_ERRORS,
                },
            }
        },
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "responses": {"200": _ok("The speech models.", "ModelList"), **_KEY_ERRORS},
            }
        },
        "/v1/models/{model_id}": {
            "get": {
                "operationId": "retrieveModel",
                "parameters": [
                    {
                        "name": "model_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": list(MODELS)},
                        "description": "A bare or `openai/` id; `/` may be sent as `%2F`. "
                        "Any other id is a 404 `model_not_found`.",
                    }
                ],
                "responses": {
                    "200": _ok("The model.", "Model"),
                    "404": _error("Not a model this shim serves."),
                    **_KEY_ERRORS,
                },
            }
        },
        "/v1/audio/voices": {
            "get": {
                "operationId": "listVoices",
                "responses": {
                    "200": _ok("The voices (also under `voices`).", "NamedList"),
                    **_KEY_ERRORS,
                },
            }
        },
        "/v1/audio/models": {
            "get": {
                "operationId": "listSpeechModels",
                "responses": {
                    "200": _ok("The speech models (also under `models`).", "NamedList"),
                    **_KEY_ERRORS,
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "liveness",
                "security": [],
                "responses": {"200": _ok("The process is up.", "Health")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readiness",
                "security": [],
                "responses": {
                    "200": _ok("Ready, with load figures.", "Health"),
                    "503": _ok("Draining for shutdown.", "Health"),
                },
            }
        },
        **openapi_paths(),  # /metrics, /usage, /v1/usage (shim/operations.py)
    }


def document(input_limit: int = MAX_INPUT_CHARS) -> dict[str, Any]:
    """The OpenAPI 3.1 document, as a fresh dict, for an app whose longest text to speak
    is ``input_limit`` characters (``Config.input_limit``)."""
    from shim import __version__

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tts-shim",
            "version": __version__,
            "description": "OpenAI's speech API over the AI/ML API. Every error is OpenAI's "
            "envelope `{error: {message, type, param, code}}`.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {}],
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A client key from TTS_SHIM_API_KEYS when set; else, "
                    "without AIMLAPI_KEY, your AI/ML API key, passed through.",
                }
            },
            "schemas": _schemas(input_limit),
        },
        "paths": _paths(),
    }


@functools.cache
def _rendered(input_limit: int) -> bytes:
    return bytes(JSONResponse(document(input_limit)).body)


async def openapi_json(request: Request) -> Response:
    """``GET /openapi.json``: this document (no key needed; it holds no secrets)."""
    return Response(_rendered(state_of(request).config.input_limit), media_type=_JSON)
