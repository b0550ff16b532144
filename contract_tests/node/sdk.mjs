// What every test file shares: the SDK under test, the servers and the output folder,
// all named by the environment that test_node_sdk.py sets for `node --test`.
import { writeFileSync } from "node:fs";
import { join } from "node:path";

function env(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(
      `${name} is not set: run these tests through contract_tests/node/test_node_sdk.py`,
    );
  }
  return value;
}

/** The npm alias of the SDK under test, "openai-v5", "-v6" or "-v7" (see package.json). */
export const PACKAGE = env("TTS_OPENAI_PACKAGE");
export const { default: OpenAI } = await import(PACKAGE);
export const { Stream } = await import(`${PACKAGE}/streaming`);
export const { VERSION } = await import(`${PACKAGE}/version`);

/** The shim's base URL (ends in /v1), the mock upstream's root, and the text spoken. */
export const BASE_URL = env("TTS_SHIM_BASE_URL");
export const MOCK_URL = env("TTS_MOCK_URL");
export const TEXT = env("TTS_TEXT");
const AUDIO_DIR = env("TTS_AUDIO_DIR");

/** A client on the shim; no SDK retries, so every error reaches the test as sent. */
export function client(options = {}) {
  return new OpenAI({ baseURL: BASE_URL, apiKey: "sk-test-key-0000", maxRetries: 0, ...options });
}

/** Keep audio for the pytest side, which decodes it with PyAV once node is done. */
export function save(name, bytes) {
  writeFileSync(join(AUDIO_DIR, name), bytes);
}

async function mock(method, path, body) {
  const init = { method, headers: { "content-type": "application/json" } };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(`${MOCK_URL}/__mock__/${path}`, init);
  if (!response.ok)
    throw new Error(`mock ${method} ${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

/** Queue scenario steps on the mock (README, "Scenarios"). */
export const scenario = (steps) => mock("POST", "scenario", { steps });
/** Drop any step a test queued and did not use. */
export const clearScenario = () => mock("DELETE", "scenario");
/** The mock's journal entries for POST /v1/tts, oldest first. */
export const generations = async () =>
  (await mock("GET", "requests")).requests.filter((e) => e.route === "tts");

/** Every chunk of a ReadableStream, read one at a time as they arrive. */
export async function readChunks(body) {
  const reader = body.getReader();
  const chunks = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return chunks;
    chunks.push(value);
  }
}

export const concat = (chunks) => Buffer.concat(chunks.map((chunk) => Buffer.from(chunk)));
