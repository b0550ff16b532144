"""Whole files: the real sizes in the header when all of the audio is in hand.

Streamed audio must start before its length is known, so WAV goes out with OpenAI's
streaming header (RIFF and ``data`` sizes ``0xFFFFFFFF``) and FLAC with a total-samples
count of 0 ("unknown"). Both are valid, but some readers take them at their word:
Python's ``wave`` module reports 2,147,483,647 frames for such a WAV. When the whole
audio is known before the first byte is sent (a non-streamed chat answer; a cache
hit), :func:`whole_file` writes the file again with its real sizes.

FFmpeg (PyAV) does the writing: its WAV and FLAC muxers fill in the sizes, and the
FLAC total-samples count and MD5, when their output can seek back, which an in-memory
file can. Both formats are lossless, so the samples are exactly those received. Other
formats carry no length in their header and are returned as they are.
"""

from __future__ import annotations

import io

import anyio

from shim import errors
from shim.catalog import FORMATS

__all__ = ["WHOLE_FILE_FORMATS", "whole_file", "whole_file_sync"]

#: Formats whose header holds the length, and that :func:`whole_file` rewrites.
WHOLE_FILE_FORMATS = frozenset({"wav", "flac"})


def whole_file_sync(audio: bytes, fmt: str) -> bytes:
    """``audio`` (a whole ``fmt`` file) with its real sizes in the header. Blocking:
    it runs FFmpeg; :func:`whole_file` runs it in a worker thread."""
    if fmt not in WHOLE_FILE_FORMATS:
        return audio
    import av

    target = FORMATS[fmt]
    out = io.BytesIO()
    # bitexact: no encoder tag, so the header is the plain one the stream had.
    options = {"fflags": "+bitexact"}
    with (
        av.open(io.BytesIO(audio), "r", format=target.muxer) as source,
        av.open(out, "w", format=target.muxer, options=options) as sink,
    ):
        heard = source.streams.audio[0]
        stream = sink.add_stream(target.codec, rate=heard.codec_context.sample_rate, layout="mono")
        for frame in source.decode(heard):
            frame.pts = None  # let the encoder number the samples from 0
            sink.mux(stream.encode(frame))
        sink.mux(stream.encode(None))
    return out.getvalue()


async def whole_file(audio: bytes, fmt: str, request_id: str | None = None) -> bytes:
    """:func:`whole_file_sync` in a worker thread; audio FFmpeg cannot read is a 502
    ``bad_upstream_audio`` (``request_id``: the upstream's, for the error)."""
    if fmt not in WHOLE_FILE_FORMATS:
        return audio
    try:
        return await anyio.to_thread.run_sync(whole_file_sync, audio, fmt)
    except Exception as exc:  # FFmpeg errors come in many classes
        raise errors.bad_upstream_audio(
            f"The upstream {fmt} audio could not be read to its end: {type(exc).__name__}.",
            request_id=request_id,
        ) from exc
