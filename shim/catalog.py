"""What the shim serves: speech models, voices and audio formats.

Built once at import; the request path only does dictionary look-ups.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "FORMATS",
    "MODELS",
    "UPSTREAM_VOICES",
    "AudioFormat",
    "SpeechModel",
    "resolve_model",
]


@dataclass(frozen=True)
class SpeechModel:
    id: str
    upstream_id: str
    created: int
    #: OpenAI price per 1M characters is not published for audio-output chat, so
    #: usage figures are estimates (see README, "Usage numbers").
    owned_by: str = "openai"


@dataclass(frozen=True)
class AudioFormat:
    name: str
    content_type: str
    #: PyAV (FFmpeg) muxer and encoder used when the shim must transcode.
    muxer: str
    codec: str


# ``created`` values are the dates OpenAI announced each model.
_MODELS = (
    SpeechModel("tts-1", "openai/tts-1", 1699046015),
    SpeechModel("tts-1-hd", "openai/tts-1-hd", 1699046015),
    SpeechModel("gpt-4o-mini-tts", "openai/gpt-4o-mini-tts", 1742403959),
)

#: Every accepted id, bare (``tts-1-hd``) and upstream (``openai/tts-1-hd``) forms.
MODELS: dict[str, SpeechModel] = {
    **{m.id: m for m in _MODELS},
    **{m.upstream_id: m for m in _MODELS},
}

#: The AI/ML API's voice enum. OpenAI's newer ``marin`` and ``cedar`` are not in it.
UPSTREAM_VOICES: tuple[str, ...] = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)

#: OpenAI's ``response_format`` values and the content types the real service sends.
FORMATS: dict[str, AudioFormat] = {
    f.name: f
    for f in (
        AudioFormat("mp3", "audio/mpeg", "mp3", "libmp3lame"),
        AudioFormat("opus", "audio/opus", "ogg", "libopus"),
        AudioFormat("aac", "audio/aac", "adts", "aac"),
        AudioFormat("flac", "audio/flac", "flac", "flac"),
        AudioFormat("wav", "audio/wav", "wav", "pcm_s16le"),
        AudioFormat("pcm", "audio/pcm", "s16le", "pcm_s16le"),
    )
}


def resolve_model(model_id: str) -> SpeechModel | None:
    """Find a model by either id form; ``None`` when the shim does not serve it."""
    return MODELS.get(model_id)
