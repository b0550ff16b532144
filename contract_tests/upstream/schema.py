"""The upstream contract, ``aimlapi_tts.schema.json``, as validators.

The file is an OpenAPI 3.1 fragment whose schemas are JSON Schema 2020-12; every
``$ref`` points inside it, so one ``referencing`` registry resolves them all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMA_PATH = Path(__file__).with_name("aimlapi_tts.schema.json")
DOCUMENT: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
OPERATION: dict[str, Any] = DOCUMENT["paths"]["/v1/tts"]["post"]
RESPONSES: dict[str, Any] = OPERATION["responses"]
#: Every status the documents give for ``POST /v1/tts``.
SUCCESS_STATUSES = sorted(int(s) for s in RESPONSES if s.startswith("2"))
ERROR_STATUSES = sorted(int(s) for s in RESPONSES if not s.startswith("2"))

_URI = "urn:tts-shim:aimlapi-tts"
_REGISTRY: Registry[Any] = Registry().with_resource(
    _URI, Resource.from_contents(DOCUMENT, default_specification=DRAFT202012)
)


def _pointer(*parts: str) -> str:
    return "#/" + "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


def validator(pointer: str, **extra: Any) -> Draft202012Validator:
    """A validator for the schema at ``pointer`` in the document (``#/components/...``),
    with ``extra`` keywords alongside."""
    return Draft202012Validator(
        {"$ref": _URI + pointer, **extra},
        registry=_REGISTRY,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


@cache
def component(name: str, *, strict: bool = False) -> Draft202012Validator:
    """``#/components/schemas/<name>``; ``strict`` also forbids undocumented keys."""
    extra = {"unevaluatedProperties": False} if strict else {}
    return validator(_pointer("components", "schemas", name), **extra)


def problems(check: Draft202012Validator, instance: Any) -> str | None:
    """The most relevant validation error, as one line, or ``None`` if valid."""
    error = best_match(check.iter_errors(instance))
    if error is None:
        return None
    where = "/".join(map(str, error.absolute_path)) or "(root)"
    return f"{where}: {error.message}"


def check_request(body: Any, headers: Mapping[str, str]) -> None:
    """A ``POST /v1/tts`` request sends exactly the documented body and headers."""
    for name, check, instance in (
        ("body", component("TtsRequest", strict=True), body),
        ("headers", component("TtsRequestHeaders"), dict(headers)),
    ):
        problem = problems(check, instance)
        assert problem is None, f"undocumented request {name}: {problem}\n{instance!r}"


def check_reply(status: int, headers: Mapping[str, str], body: bytes) -> Any:
    """A ``POST /v1/tts`` reply is one the documents describe; returns the parsed JSON
    (or the raw bytes of a binary reply)."""
    documented = RESPONSES.get(str(status))
    assert documented is not None, f"status {status} is not documented for POST /v1/tts"
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    content = documented["content"]
    assert media_type in content, (
        f"a {status} reply as {media_type!r} is not documented (only {', '.join(content)})"
    )
    for name, spec in documented.get("headers", {}).items():
        value = headers.get(name.lower())
        if value is None:
            assert not spec.get("required", False), f"{status} reply lacks {name}"
            continue
        pointer = _pointer("paths", "/v1/tts", "post", "responses", str(status), "headers", name)
        problem = problems(validator(pointer + "/schema"), value)
        assert problem is None, f"{status} reply header {name}: {problem}"
    if media_type != "application/json":
        signature = content[media_type].get("x-signature", "")
        assert body.startswith(signature.encode()), f"not {media_type}: {body[:16]!r}"
        return body
    parsed = json.loads(body)
    pointer = _pointer("paths", "/v1/tts", "post", "responses", str(status), "content", media_type)
    problem = problems(validator(pointer + "/schema"), parsed)
    assert problem is None, f"undocumented {status} reply: {problem}\n{parsed!r}"
    return parsed
