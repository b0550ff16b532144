"""Stitching: several pieces' audio, one after another, as one continuous file.

A long text is generated piece by piece (:mod:`shim.split`); the client must still
receive one file in the format it asked for. Concatenating encoded files is exact
only for raw PCM: WAV would carry a header per piece, Ogg a new logical stream with
its granule positions starting again, FLAC a second ``fLaC`` stream, and MP3 and AAC
the encoder's delay and padding at every join (tens of milliseconds of silence,
heard as a click or a gap). So every other target is decoded piece by piece and
re-encoded by one encoder and one muxer that run across all pieces
(:func:`shim.audio.transcode`): one header, one stream, timestamps that run on.

Pieces are taken strictly in order and streamed as they arrive: the first piece's
audio leaves before the next piece is even asked for. Only the encoder's last
partial frame (at most 2,048 samples: 85 ms) waits for the next piece, because
flushing it would put padding at the join. A piece that fails, or holds no audio,
raises: the stream is never silently short.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable
from contextlib import aclosing
from typing import NamedTuple

from shim.audio import TranscodeError, convert, transcode

__all__ = ["Piece", "stitch"]

# Ogg pages are written every second by default; ask for one at least every 100 ms
# of audio, so the end of a piece is not held back while the next one is generated.
_OGG_OPTIONS = {"page_duration": "100000"}


class Piece(NamedTuple):
    """One piece's audio: its bytes as they download, and the format they are in
    (what :func:`shim.upstream.stream.identify` said of its first bytes)."""

    format: str
    chunks: AsyncIterable[bytes]


async def stitch(pieces: AsyncIterable[Piece], target: str) -> AsyncGenerator[bytes]:
    """Yield ``pieces``, in order, as one stream of ``target`` format audio.

    Each piece is read to its end before the next is requested. For ``pcm`` the
    pieces are concatenated (those in another format converted first); every other
    target is re-encoded once, across all pieces. A plan of one piece should use
    :func:`shim.audio.convert`, which passes matching formats through untouched.
    Raises :class:`~shim.audio.TranscodeError` if a piece cannot be decoded or holds
    no audio, and whatever a piece's iterator raises. The caller owns the pieces'
    iterators (the downloads) and closes them; closing this generator stops the
    encoder's thread.
    """
    if target == "pcm":
        async for piece in pieces:
            async for chunk in _pcm(piece):
                yield chunk
        return
    options = _OGG_OPTIONS if target == "opus" else None
    # aclosing: a consumer that stops early stops the worker thread now, not at GC.
    async with aclosing(transcode(pieces, target, muxer_options=options)) as encoded_chunks:
        async for encoded in encoded_chunks:
            yield encoded


async def _pcm(piece: Piece) -> AsyncGenerator[bytes]:
    """One piece as raw PCM; its length must be whole samples, or the next piece would
    be read a byte off."""
    size = 0
    async for chunk in convert(piece.chunks, piece.format, "pcm"):
        size += len(chunk)
        yield chunk
    if size == 0:
        raise TranscodeError("a piece held no audio")
    if size % 2:
        raise TranscodeError(f"a piece of raw PCM ended mid-sample ({size} bytes)")
