// Errors: the SDK raises the class OpenAI's API would make it raise, with the envelope's
// param and code, and the request id the shim sends (x-request-id).
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { OpenAI, TEXT, VERSION, clearScenario, client, generations, scenario } from "./sdk.mjs";

const openai = client();
const speak = (params) =>
  openai.audio.speech.create({ model: "tts-1-hd", voice: "coral", input: TEXT, ...params });
const chat = (params) =>
  openai.chat.completions.create({
    model: "tts-1-hd",
    audio: { voice: "coral", format: "wav" },
    messages: [{ role: "user", content: TEXT }],
    ...params,
  });

afterEach(clearScenario);

/** Awaits a rejection of class `cls`, checks what every error carries, returns it. */
async function raises(promise, cls, { status, param = null, code = null }) {
  let error;
  await assert.rejects(promise, (caught) => {
    error = caught;
    return true;
  });
  assert.ok(
    error instanceof cls,
    `${error.constructor.name} (${error.message}) is not ${cls.name}`,
  );
  assert.equal(error.status, status);
  assert.equal(error.param, param);
  assert.equal(error.code, code);
  assert.deepEqual(Object.keys(error.error).sort(), ["code", "message", "param", "type"]);
  assert.ok(error.requestID, "error.requestID is empty");
  assert.equal(error.requestID, error.headers.get("x-request-id"));
  return error;
}

const INVALID = [
  ["speech speed 9", () => speak({ speed: 9 }), "speed"],
  ["speech voice marin", () => speak({ voice: "marin" }), "voice"],
  ["speech empty input", () => speak({ input: "" }), "input", "empty_string"],
  ["speech format ogg", () => speak({ response_format: "ogg" }), "response_format"],
  ["speech stream_format chunked", () => speak({ stream_format: "chunked" }), "stream_format"],
  ["chat text-only modalities", () => chat({ modalities: ["text"] }), "modalities"],
  [
    "chat pcm (not pcm16)",
    () => chat({ audio: { voice: "coral", format: "pcm" } }),
    "audio.format",
  ],
  [
    "chat too long",
    () => chat({ messages: [{ role: "user", content: "x".repeat(100001) }] }),
    "messages",
    "string_above_max_length",
  ],
];

for (const [name, call, param, code = null] of INVALID) {
  test(`openai ${VERSION}: ${name}: BadRequestError on ${param}, nothing generated`, async () => {
    const before = (await generations()).length;
    const error = await raises(call(), OpenAI.BadRequestError, { status: 400, param, code });
    assert.equal(error.type, "invalid_request_error");
    assert.match(error.requestID, /^req_/); // the shim's own: nothing went upstream
    assert.equal((await generations()).length, before);
  });
}

test(`openai ${VERSION}: a chat model is NotFoundError model_not_found`, async () => {
  for (const call of [() => speak({ model: "gpt-4o" }), () => chat({ model: "gpt-4o" })]) {
    const error = await raises(call(), OpenAI.NotFoundError, {
      status: 404,
      param: "model",
      code: "model_not_found",
    });
    assert.equal(error.type, "invalid_request_error");
  }
});

// Upstream statuses (README, "Errors"); 5xx are retried once by the shim, so queued twice.
const UPSTREAM = [
  [401, "AuthenticationError", "invalid_api_key", 1],
  [402, "APIError", "insufficient_quota", 1],
  [403, "PermissionDeniedError", "insufficient_quota", 1],
  [429, "RateLimitError", "rate_limit_exceeded", 1],
  [500, "InternalServerError", null, 2],
  [503, "InternalServerError", "service_unavailable", 2],
];

for (const [status, className, code, tries] of UPSTREAM) {
  test(`openai ${VERSION}: upstream ${status}: ${className} ${code}, speech and chat`, async () => {
    // A Retry-After beyond the shim's --max-retry-wait goes to the client, unretried.
    const headers = status === 429 ? { "Retry-After": "30" } : undefined;
    for (const call of [speak, chat]) {
      await scenario([{ status, times: tries, ...(headers && { headers }) }]);
      const before = (await generations()).length;
      const error = await raises(call({}), OpenAI[className], { status, code });
      assert.equal((await generations()).length, before + tries);
      if (status === 429) assert.equal(error.headers.get("retry-after"), "30");
    }
  });
}
