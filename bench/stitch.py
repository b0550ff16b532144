"""CPU cost of long text: splitting, and stitching pieces into one stream.

    python3 bench/stitch.py [--minutes 1] [--pieces 6]

Stitching: ``--pieces`` clips from the mock's generator (a minute of audio in all, by
default), each in the format the client asked for (what the shim requests upstream)
and, second column, in FLAC (a lossless source), stitched by ``shim.stitch.stitch``.
CPU time is ``time.process_time``, which counts the transcoder's worker thread too,
reported as seconds of CPU per minute of audio. Encoders run at FFmpeg's default
settings, as ``shim.audio.convert`` uses them.

Splitting: ``shim.split.split_text`` on 100,000 characters of three kinds of text.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")


async def stitch_cpu(clips: list[bytes], source: str, target: str) -> float:
    from shim.stitch import Piece, stitch

    async def chunks(data: bytes) -> AsyncIterator[bytes]:
        for offset in range(0, len(data), 32 * 1024):
            yield data[offset : offset + 32 * 1024]

    async def pieces() -> AsyncIterator[Piece]:
        for data in clips:
            yield Piece(source, chunks(data))

    start = time.process_time()
    async for _ in stitch(pieces(), target):
        pass
    return time.process_time() - start


def split_cpu() -> list[tuple[str, float, int]]:
    from shim.split import split_text

    kinds = {
        "prose (the docs)": (ROOT / "docs" / "usage.md").read_text(),
        "short sentences with decimals": "Pi is about 3.14. The end is near. ",
        "no punctuation": "word ",
    }
    rows = []
    for name, unit in kinds.items():
        text = (unit * (100_000 // len(unit) + 1))[:100_000]
        start = time.process_time()
        pieces = split_text(text)
        rows.append((name, time.process_time() - start, len(pieces)))
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--pieces", type=int, default=6)
    args = parser.parse_args()

    from mockserver.audio import SAMPLE_RATE, encode

    per_piece = int(args.minutes * 60 * SAMPLE_RATE / args.pieces)
    voices = ("alloy", "nova", "onyx", "coral", "echo", "sage")
    print(f"stitching {args.pieces} pieces, {args.minutes:g} min of audio in all")
    print(f"{'target':8} {'CPU s/min, same-format pieces':>30} {'CPU s/min, FLAC pieces':>24}")
    flac = [encode(voices[i % len(voices)], per_piece, "flac") for i in range(args.pieces)]
    for target in FORMATS:
        same = [encode(voices[i % len(voices)], per_piece, target) for i in range(args.pieces)]
        from_same = await stitch_cpu(same, target, target) / args.minutes
        from_flac = await stitch_cpu(flac, "flac", target) / args.minutes
        print(f"{target:8} {from_same:30.3f} {from_flac:24.3f}")
    print()
    print(f"{'splitting 100,000 characters':40} {'CPU s':>8} {'pieces':>7}")
    for name, seconds, count in split_cpu():
        print(f"{name:40} {seconds:8.3f} {count:7}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from bench.run import reexec_in_venv

    reexec_in_venv(__file__)
    asyncio.run(main())
