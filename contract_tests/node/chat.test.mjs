// POST /v1/chat/completions with audio output, plain and streamed.
import assert from "node:assert/strict";
import { afterEach, test } from "node:test";
import { OpenAI, TEXT, VERSION, clearScenario, client, save, scenario } from "./sdk.mjs";

const openai = client();
const ask = (format, more = {}) =>
  openai.chat.completions.create({
    model: "tts-1-hd",
    modalities: ["text", "audio"],
    audio: { voice: "coral", format },
    messages: [{ role: "user", content: TEXT }],
    ...more,
  });

afterEach(clearScenario);

for (const format of ["wav", "mp3", "aac", "flac", "opus", "pcm16"]) {
  test(`openai ${VERSION}: chat audio as ${format}`, async () => {
    const completion = await ask(format);
    assert.equal(completion.object, "chat.completion");
    const [choice] = completion.choices;
    assert.equal(choice.finish_reason, "stop");
    assert.equal(choice.message.role, "assistant");
    assert.equal(choice.message.content, null);
    const { audio } = choice.message;
    assert.match(audio.id, /^audio_/);
    assert.equal(audio.transcript, TEXT);
    assert.equal(audio.expires_at, completion.created + 3600);
    assert.equal(completion.usage.prompt_tokens, TEXT.length);
    assert.equal(completion.usage.completion_tokens, 0);
    save(`chat.${format}`, Buffer.from(audio.data, "base64"));
  });
}

for (const format of ["pcm16", "mp3"]) {
  test(`openai ${VERSION}: streamed chat audio as ${format}`, async () => {
    const stream = await ask(format, { stream: true, stream_options: { include_usage: true } });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);

    const deltas = chunks.filter((c) => c.choices.length).map((c) => c.choices[0].delta);
    assert.equal(deltas[0].role, "assistant");
    const audio = deltas.map((d) => d.audio).filter(Boolean);
    assert.match(audio[0].id, /^audio_/);
    assert.equal(audio[0].transcript, TEXT);
    const fragments = audio.filter((a) => a.data).map((a) => Buffer.from(a.data, "base64"));
    assert.ok(fragments.length > 0);
    assert.ok(audio.some((a) => typeof a.expires_at === "number"));
    assert.equal(chunks.at(-2).choices[0].finish_reason, "stop");
    const usage = chunks.at(-1);
    assert.deepEqual(usage.choices, []);
    assert.equal(usage.usage.prompt_tokens, TEXT.length);
    save(`chat-stream.${format}`, Buffer.concat(fragments));
  });
}

test(`openai ${VERSION}: without include_usage no usage chunk is sent`, async () => {
  const stream = await ask("pcm16", { stream: true });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.ok(chunks.every((c) => c.choices.length === 1 && !c.usage));
});

test(`openai ${VERSION}: a download breaking mid-stream raises APIError`, async () => {
  // Every try of the link is cut (a first download and 2 resumptions, --audio-retries):
  // one cut alone is resumed and the client never sees it.
  await scenario([{ route: "audio", fault: "truncated", times: 3 }]);
  const stream = await ask("wav", { stream: true });
  await assert.rejects(
    async () => {
      for await (const _chunk of stream);
    },
    (error) => error instanceof OpenAI.APIError && /audio/.test(error.message),
  );
});
