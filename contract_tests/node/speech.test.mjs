// POST /v1/audio/speech through the SDK: every format, streamed bodies, SSE events.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { Stream, TEXT, VERSION, clearScenario, client, concat, readChunks, save, scenario } from "./sdk.mjs";

const CONTENT_TYPES = {
  mp3: "audio/mpeg",
  opus: "audio/opus",
  aac: "audio/aac",
  flac: "audio/flac",
  wav: "audio/wav",
  pcm: "audio/pcm",
};
const openai = client();
const speak = (params) => openai.audio.speech.create({ model: "tts-1-hd", voice: "coral", input: TEXT, ...params });

afterEach(clearScenario);

for (const [format, contentType] of Object.entries(CONTENT_TYPES)) {
  test(`openai ${VERSION}: speech as ${format}, buffered and streamed, the same bytes`, async () => {
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

test(`openai ${VERSION}: a slow download reaches the body in pieces, as it arrives`, async () => {
  // The CDN dribbles the file out in up to 20 pieces; a relay that buffered the whole
  // file would hand it over in one piece at the end.
  await scenario([{ route: "audio", fault: "slow-body", delay_ms: 2000 }]);
  const response = await speak({ response_format: "wav" });
  const chunks = await readChunks(response.body);
  assert.ok(chunks.length > 1, `${chunks.length} chunk(s)`);
  save("slow.wav", concat(chunks));
});

test(`openai ${VERSION}: instructions, speed and every voice field are accepted`, async () => {
  const response = await speak({
    model: "gpt-4o-mini-tts",
    voice: "verse",
    instructions: "Cheerful.",
    speed: 1.5,
    response_format: "flac",
  });
  save("fields.flac", Buffer.from(await response.arrayBuffer()));
});

test(`openai ${VERSION}: stream_format "sse" is read as speech events by the SDK's parser`, async () => {
  const response = await speak({ response_format: "wav", stream_format: "sse", instructions: "Calm." });
  assert.match(response.headers.get("content-type"), /^text\/event-stream/);

  const events = [];
  for await (const event of Stream.fromSSEResponse(response, new AbortController())) events.push(event);
  const done = events.pop();
  assert.ok(events.length > 0);
  assert.deepEqual(new Set(events.map((e) => e.type)), new Set(["speech.audio.delta"]));
  assert.equal(done.type, "speech.audio.done");
  assert.deepEqual(done.usage, { input_tokens: TEXT.length, output_tokens: 0, total_tokens: TEXT.length });
  save("sse.wav", Buffer.concat(events.map((e) => Buffer.from(e.audio, "base64"))));
});

test(`openai ${VERSION}: a download that breaks off fails the body, never a short file`, async () => {
  await scenario([{ route: "audio", fault: "truncated" }]);
  const response = await speak({ response_format: "mp3" });
  assert.equal(response.status, 200);
  await assert.rejects(readChunks(response.body));
});
