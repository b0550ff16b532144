// GET /v1/models and /v1/models/{id}.
import assert from "node:assert/strict";
import { test } from "node:test";
import { OpenAI, VERSION, client } from "./sdk.mjs";

const openai = client();
const SPEECH_MODELS = ["tts-1", "tts-1-hd", "gpt-4o-mini-tts"];

test(`openai ${VERSION}: models.list pages through the speech models`, async () => {
  const ids = [];
  for await (const model of openai.models.list()) {
    assert.equal(model.object, "model");
    assert.equal(typeof model.created, "number");
    assert.equal(typeof model.owned_by, "string");
    ids.push(model.id);
  }
  for (const id of SPEECH_MODELS) {
    assert.ok(ids.includes(id), `${id} in ${ids}`);
    assert.ok(ids.includes(`openai/${id}`), `openai/${id} in ${ids}`);
  }
});

test(`openai ${VERSION}: models.retrieve, bare and openai/ ids`, async () => {
  // Newer SDKs percent-encode the "/" of openai/tts-1-hd in the path; older ones do not.
  for (const id of ["tts-1-hd", "openai/tts-1-hd", "openai/gpt-4o-mini-tts"]) {
    const model = await openai.models.retrieve(id);
    assert.equal(model.id, id);
    assert.equal(model.object, "model");
  }
});

test(`openai ${VERSION}: an unknown model is NotFoundError model_not_found`, async () => {
  await assert.rejects(openai.models.retrieve("gpt-4o"), (error) => {
    assert.ok(error instanceof OpenAI.NotFoundError, error.constructor.name);
    assert.equal(error.status, 404);
    assert.equal(error.code, "model_not_found");
    return true;
  });
});
