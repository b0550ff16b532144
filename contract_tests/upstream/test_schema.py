"""The upstream schema itself: well formed, saying what we mean, and faithful to the
published AI/ML OpenAPI documents where those are at hand."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from contract_tests.upstream.schema import DOCUMENT, component, problems

# No upstream, no network: safe to run with --live too.
pytestmark = pytest.mark.live(billed=0)

ROOT = Path(__file__).resolve().parents[2]
#: The published documents, kept beside the repository (see CONTRACT.md); override with
#: TTS_SHIM_AIMLAPI_DOCS. Not shipped in the sdist, where the cross-check is skipped.
PUBLISHED = Path(
    os.environ.get("TTS_SHIM_AIMLAPI_DOCS", ROOT.parent / "shared" / "reference" / "aimlapi")
)
DOC_EXAMPLE_URL = (
    "https://cdn.aimlapi.com/generations/hedgehog/"
    "1760948051400-99effd93-a38a-43d5-b4e4-76b42afb6e67.mp3"
)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_every_component_is_a_valid_json_schema_and_every_ref_resolves() -> None:
    schemas = DOCUMENT["components"]["schemas"]
    for schema in schemas.values():
        Draft202012Validator.check_schema(schema)
    refs = set(_refs(DOCUMENT))
    assert refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in schemas, f"{ref} points nowhere"


ERROR = {
    "message": "Too Many Requests",
    "path": "/v1/tts",
    "requestId": "5f0c5d52-6a3e-4c43-9d0d-8f4f3b2f3a11",
    "statusCode": 429,
    "timestamp": "2026-04-02T10:11:12.345Z",
}


@pytest.mark.parametrize(
    ("name", "instance", "valid"),
    [
        # The documents' own examples.
        ("UrlObjectReply", {"audio": {"url": DOC_EXAMPLE_URL}}, True),
        (
            "UrlStringReply",
            {
                "audio": DOC_EXAMPLE_URL,
                "meta": {"usage": {"credits_used": 120000, "usd_spent": 0.06}},
            },
            True,
        ),
        ("UrlStringReply", {"audio": DOC_EXAMPLE_URL, "meta": None}, True),
        ("UrlStringReply", {"audio": DOC_EXAMPLE_URL, "meta": {"usage": None}}, True),
        ("UrlStringReply", {"audio": DOC_EXAMPLE_URL}, True),
        (
            "UrlStringReply",
            {"audio": DOC_EXAMPLE_URL, "meta": {"usage": {"credits_used": 5}}},
            True,
        ),
        ("Error429", ERROR, True),
        ("Error429", {**ERROR, "statusCode": "429"}, True),
        (
            "Error429",
            {
                **ERROR,
                "message": "Free-tier limit: You've reached your free limit for the hour. Get...",
            },
            True,
        ),
        ("Error400", {**ERROR, "message": 'Body validation error! Required at "text"'}, True),
        # What they rule out.
        ("UrlObjectReply", {"audio": DOC_EXAMPLE_URL}, False),
        ("UrlObjectReply", {"audio": {"href": DOC_EXAMPLE_URL}}, False),
        ("UrlStringReply", {"audio": "not a url"}, False),
        (
            "UrlStringReply",
            {"audio": DOC_EXAMPLE_URL, "meta": {"usage": {"usd_spent": 0.06}}},
            False,
        ),
        (
            "UrlStringReply",
            {"audio": DOC_EXAMPLE_URL, "meta": {"usage": {"credits_used": "5"}}},
            False,
        ),
        ("MetadataReply", {"metadata": {}}, False),
        ("Error", {**ERROR, "statusCode": "Too many"}, False),
        ("Error", {**ERROR, "statusCode": 200}, False),
        ("Error", {**ERROR, "timestamp": "yesterday"}, False),
        ("Error", {key: v for key, v in ERROR.items() if key != "requestId"}, False),
        ("Error429", {**ERROR, "message": "Slow down"}, False),
        ("TtsRequest", {"model": "openai/tts-1"}, False),
        ("TtsRequest", {"model": "tts-1", "text": "Hi"}, False),
        ("TtsRequest", {"model": "openai/tts-1", "text": "Hi", "stream": True}, False),
        ("TtsRequest", {"model": "openai/tts-1", "text": "Hi", "voice": "marin"}, False),
        ("TtsRequestHeaders", {"authorization": "Bearer k", "content-type": "text/plain"}, False),
        (
            "TtsRequestHeaders",
            {
                "authorization": "Bearer k",
                "content-type": "application/json",
                "x-stainless-os": "L",
            },
            False,
        ),
    ],
)
def test_the_schema_says_what_the_documents_say(name: str, instance: Any, valid: bool) -> None:
    assert (problems(component(name), instance) is None) is valid


# -- cross-check with the published OpenAPI documents ------------------------------------


def _published() -> list[Path]:
    if not PUBLISHED.is_dir():
        pytest.skip(
            f"the published AI/ML OpenAPI documents are not at {PUBLISHED} (they sit beside "
            "the repository, not in it: an sdist has none); set TTS_SHIM_AIMLAPI_DOCS to check"
        )
    documents = sorted(PUBLISHED.glob("*.openapi.json"))
    if not documents:
        pytest.skip(f"no *.openapi.json in {PUBLISHED}")
    return documents


def _post(path: Path) -> dict[str, Any]:
    document = json.loads(path.read_text(encoding="utf-8"))
    post: dict[str, Any] = document["paths"]["/v1/tts"]["post"]
    return post


def _request_schema(post: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = post["requestBody"]["content"]["application/json"]["schema"]
    return schema


OURS = DOCUMENT["components"]["schemas"]["TtsRequest"]
#: Keywords whose value must be the same in the published documents and ours.
COMPARED = ("type", "minLength", "maxLength", "minimum", "maximum", "default")


def test_our_request_schema_has_the_published_fields_rules_and_defaults() -> None:
    models: set[str] = set()
    for path in _published():
        published = _request_schema(_post(path))
        assert set(published["properties"]) == set(OURS["properties"]), path.name
        assert set(published["required"]) == set(OURS["required"]), path.name
        for field, theirs in published["properties"].items():
            ours = OURS["properties"][field]
            for keyword in COMPARED:
                assert theirs.get(keyword) == ours.get(keyword), f"{path.name}: {field}.{keyword}"
            if field == "model":
                models.update(theirs["enum"])
            elif "enum" in theirs:
                assert theirs["enum"] == ours["enum"], f"{path.name}: {field}.enum"
    assert models == set(OURS["properties"]["model"]["enum"])


def _probes(model: str) -> list[dict[str, Any]]:
    """Bodies on and around every rule of the request schema."""
    base = {"model": model, "text": "Hi"}
    probes: list[dict[str, Any]] = [base, {"text": "Hi"}, {"model": model}, {**base, "model": "x"}]
    for text in ("", "x", "x" * 4096, "x" * 4097, 5):
        probes.append({**base, "text": text})
    for voice in (*OURS["properties"]["voice"]["enum"], "marin", "Alloy", None):
        probes.append({**base, "voice": voice})
    for fmt in (*OURS["properties"]["response_format"]["enum"], "ogg", "pcm16"):
        probes.append({**base, "response_format": fmt})
    for speed in (0.24, 0.25, 1, 2.5, 4, 4.01, "1", True):
        probes.append({**base, "speed": speed})
    for stream in (False, True, "false"):
        probes.append({**base, "stream": stream})
    for style in ("Calmly.", 3):
        probes.append({**base, "style": style})
    return probes


def test_our_request_schema_accepts_and_rejects_what_the_published_ones_do() -> None:
    ours = component("TtsRequest")
    for path in _published():
        published_schema = _request_schema(_post(path))
        # OpenAPI 3.0 schemas without ``nullable`` read the same as JSON Schema here.
        assert "nullable" not in json.dumps(published_schema)
        published = Draft202012Validator(published_schema)
        (model,) = published_schema["properties"]["model"]["enum"]
        for body in _probes(model):
            expected = published.is_valid(body)
            assert (problems(ours, body) is None) is expected, f"{path.name}: {body!r}"


def test_the_published_code_samples_validate_against_our_request_schema() -> None:
    for path in _published():
        samples = _post(path).get("x-codeSamples", [])
        curl = next(s["source"] for s in samples if s["lang"] == "cURL")
        match = re.search(r"--data '(\{.*\})'", curl, re.S)
        assert match is not None, f"{path.name}: no JSON body in the cURL sample"
        body = json.loads(match.group(1))
        assert problems(component("TtsRequest", strict=True), body) is None, path.name
        assert "--header 'Authorization: Bearer " in curl
        assert "--header 'Content-Type: application/json'" in curl


def test_our_success_replies_include_the_published_ones() -> None:
    ours = DOCUMENT["paths"]["/v1/tts"]["post"]["responses"]
    for path in _published():
        for status, reply in _post(path)["responses"].items():
            assert status in ours, f"{path.name}: status {status} missing from ours"
            assert set(reply["content"]) <= set(ours[status]["content"]), path.name
            schema = reply["content"]["application/json"]["schema"]
            assert schema["properties"]["audio"] == {"type": "string", "format": "uri"}
            usage = schema["properties"]["meta"]["properties"]["usage"]
            assert schema["properties"]["meta"]["nullable"]
            assert usage["nullable"]
            current = DOCUMENT["components"]["schemas"]["Usage"]
            assert set(usage["required"]) == set(current["required"]), path.name
            assert {k: v["type"] for k, v in usage["properties"].items()} == {
                k: v["type"] for k, v in current["properties"].items()
            }
            # The published example reply, built from the documents' example values.
            example = {
                "audio": DOC_EXAMPLE_URL,
                "meta": {"usage": {k: v["example"] for k, v in usage["properties"].items()}},
            }
            assert problems(component("UrlStringReply"), example) is None
