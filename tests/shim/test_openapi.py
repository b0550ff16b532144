"""``/openapi.json``: a valid OpenAPI 3.1 document covering exactly the routes served,
with the request schemas of the models that validate."""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.routing import Route

from shim import Config
from shim.app import routes
from shim.catalog import FORMATS, UPSTREAM_VOICES
from shim.contract import ChatRequest, SpeechRequest
from shim.openapi import document


def test_the_document_is_valid_openapi() -> None:
    validator = pytest.importorskip("openapi_spec_validator")

    validator.validate(document())


def test_every_served_route_is_documented_and_nothing_else() -> None:
    served: set[tuple[str, str]] = set()
    for route in routes():
        assert isinstance(route, Route)
        if route.path == "/openapi.json":
            continue
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        served.update((path, method.lower()) for method in route.methods or () if method != "HEAD")
    documented = {(path, method) for path, item in document()["paths"].items() for method in item}

    assert served == documented


def test_the_enums_are_the_catalogue() -> None:
    speech = document()["components"]["schemas"]["SpeechRequest"]["properties"]

    assert speech["voice"]["anyOf"] == [
        {"type": "string", "enum": list(UPSTREAM_VOICES)},
        {"type": "null"},
    ]
    assert speech["response_format"]["enum"] == list(FORMATS)


def test_the_request_schemas_are_the_models() -> None:
    schemas = document()["components"]["schemas"]
    refs = "#/components/schemas/{model}"

    for model in (SpeechRequest, ChatRequest):
        generated = model.model_json_schema(ref_template=refs)
        generated.pop("$defs", None)
        assert {k: v for k, v in schemas[model.__name__].items() if k != "properties"} == {
            k: v for k, v in generated.items() if k != "properties"
        }
        assert set(schemas[model.__name__]["properties"]) == set(generated["properties"])


async def test_the_document_is_served_without_a_key(shim: Any) -> None:
    client = shim(client_keys=("sk-client-0001",), upstream_key="sk-server")
    client.headers.pop("authorization")

    response = await client.get("/openapi.json")

    assert response.status_code == 200
    assert response.json() == document(Config().input_limit)
    assert "sk-server" not in response.text
    assert "sk-client" not in response.text


@pytest.mark.parametrize(("settings", "limit"), [({}, 100_000), ({"split": False}, 4096)])
async def test_the_document_states_the_apps_own_input_limit(
    shim: Any, settings: dict[str, Any], limit: int
) -> None:
    served = (await shim(**settings).get("/openapi.json")).json()["components"]["schemas"]

    assert served["SpeechRequest"]["properties"]["input"]["maxLength"] == limit
    assert served["SpeechRequest"]["properties"]["instructions"]["anyOf"][0]["maxLength"] == 4096
