// POST /v1/audio/speech through the SDK: every format, streamed bodies, SSE events.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import {
  Stream,
  TEXT,
  VERSION,
  clearScenario,
  client,
  concat,
  generations,
  readChunks,
  save,
  scenario,
} from "./sdk.mjs";

const CONTENT_TYPES = {
  mp3: "audio/mpeg",
  opus: "audio/opus",
  aac: "audio/aac",
  flac: "audio/flac",
  wav: "audio/wav",
  pcm: "audio/pcm",
};
const openai = client();
const speak = (params) =>
  openai.audio.speech.create({ model: "tts-1-hd", voice: "coral", input: TEXT, ...params });

afterEach(clearScenario);

for (const [format, contentType] of Object.entries(CONTENT_TYPES)) {
  test(`openai ${VERSION}: speech as ${format}, buffered and streamed alike`, async () => {
    const buffered = await speak({ response_format: format });
    assert.equal(buffered.status, 200);
    assert.equal(buffered.headers.get("content-type"), contentType);
    assert.equal(buffered.headers.get("content-length"), null); // chunked, as OpenAI's
    const bytes = Buffer.from(await buffered.arrayBuffer());
    assert.ok(bytes.length > 0);
    save(`speech.${format}`, bytes);

    // The mock makes the same audio for the same request, so a difference is the relay's.
    const streamed = await speak({ response_format: format });
    assert.deepEqual(concat(await readChunks(streamed.body)), bytes);
  });
}

test(
  `openai ${VERSION}: the first audio reaches response.body while the download goes on`,
  { timeout: 20_000 },
  async () => {
    // The CDN dribbles the file out over a minute, a twentieth every 3 s. A relay that
    // buffered the file could hand nothing over before the minute is up, long after this
    // test's timeout; one that streams hands over the first twentieth.
    await scenario([{ route: "audio", fault: "slow-body", delay_ms: 60_000 }]);
    const response = await speak({ response_format: "wav" });
    const reader = response.body.getReader();
    const first = await reader.read();
    assert.equal(first.done, false);
    assert.equal(Buffer.from(first.value.subarray(0, 4)).toString(), "RIFF");
    await reader.cancel(); // the client leaves; the shim stops the download
  },
);

test(`openai ${VERSION}: every speech field reaches the upstream`, async () => {
  const response = await speak({
    model: "gpt-4o-mini-tts",
    voice: "verse",
    instructions: "Cheerful.",
    speed: 1.5,
    response_format: "flac",
  });
  save("fields.flac", Buffer.from(await response.arrayBuffer()));
  const sent = (await generations()).at(-1).json;
  assert.deepEqual(sent, {
    model: "openai/gpt-4o-mini-tts",
    text: TEXT,
    voice: "verse",
    style: "Cheerful.",
    speed: 1.5,
    response_format: "flac",
  });
});

test(`openai ${VERSION}: stream_format "sse" read as events by the SDK's parser`, async () => {
  const response = await speak({
    response_format: "wav",
    stream_format: "sse",
    instructions: "Calm.",
  });
  assert.match(response.headers.get("content-type"), /^text\/event-stream/);

  const events = [];
  for await (const event of Stream.fromSSEResponse(response, new AbortController()))
    events.push(event);
  const done = events.pop();
  assert.ok(events.length > 0);
  assert.deepEqual(new Set(events.map((e) => e.type)), new Set(["speech.audio.delta"]));
  assert.equal(done.type, "speech.audio.done");
  assert.deepEqual(done.usage, {
    input_tokens: TEXT.length,
    output_tokens: 0,
    total_tokens: TEXT.length,
  });
  save("sse.wav", Buffer.concat(events.map((e) => Buffer.from(e.audio, "base64"))));
});

test(`openai ${VERSION}: a broken download fails the body, never a short file`, async () => {
  // Every try of the link is cut (a first download and 2 resumptions, --audio-retries):
  // one cut alone is resumed and the client never sees it.
  await scenario([{ route: "audio", fault: "truncated", times: 3 }]);
  const response = await speak({ response_format: "mp3" });
  assert.equal(response.status, 200);
  await assert.rejects(readChunks(response.body));
});
