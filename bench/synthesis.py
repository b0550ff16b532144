#!/usr/bin/env python3
"""How long the mock takes to make its audio (mockserver.audio), per format.

    python3 bench/synthesis.py                 # this checkout; prints the figures
    python3 bench/synthesis.py --against REV   # and mockserver/audio.py as of git REV,
                                               # side by side in this process
    python3 bench/synthesis.py --against REV --write   # also the "synthesis" section of
                                                       # docs/benchmarks.md

CPU time (``time.process_time``) of, per version: one period of every voice (what each
process computes once per voice, on its first clip in that voice); each format's clip of
``--seconds`` of audio, encoded whole, the periods already made (what the mock does for
a request that misses its audio cache); and the samples alone for a minute of audio.
Medians of ``--rounds``, the two versions' rounds interleaved so that other load on the
machine falls on both. The older version is checked to give the same samples and bytes.
Runs under the project's ``.venv`` (re-executes itself there); an older version that
used numpy needs it installed (the ``test`` extra has it).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import SYNTHESIS_END, SYNTHESIS_START, write_section  # noqa: E402
from bench.run import machine, reexec_in_venv  # noqa: E402

FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
VOICE = "coral"


def load_at(rev: str, scratch: Path) -> ModuleType:
    """``mockserver/audio.py`` as it was at git ``rev``, imported under another name."""
    source = subprocess.run(
        ["git", "show", f"{rev}:mockserver/audio.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    path = scratch / "audio_then.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("audio_then", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def cpu_ms(work: Callable[[], Any]) -> float:
    start = time.process_time()
    work()
    return (time.process_time() - start) * 1000


def measure(versions: dict[str, ModuleType], rounds: int, seconds: float) -> dict[str, Any]:
    """Median CPU ms per version: ``periods`` (all voices), ``render`` (a minute of
    samples) and one entry per format (a clip of ``seconds``, encoded)."""
    from mockserver.validation import VOICES

    samples: dict[str, list[float]] = {}

    def record(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    for _ in range(rounds):
        for name, audio in versions.items():
            periods = cpu_ms(lambda a=audio: [a._phrase.__wrapped__(v) for v in VOICES])
            record(f"{name}/periods", periods / len(VOICES))
            for voice in VOICES:
                audio._phrase(voice)  # the cache warm, as in a running mock
            minute = audio.samples_for(60_000)
            record(f"{name}/render", cpu_ms(lambda a=audio, n=minute: a.render(VOICE, n)))
            clip = audio.samples_for(round(seconds * 1000))
            for fmt in FORMATS:
                spent = cpu_ms(lambda a=audio, f=fmt, n=clip: a.encode(VOICE, n, f))
                record(f"{name}/{fmt}", spent)
    return {key: statistics.median(values) for key, values in samples.items()}


def same_output(now: ModuleType, then: ModuleType, seconds: float) -> dict[str, bool]:
    """Whether both versions give the same samples (every voice) and bytes (each format)."""
    from mockserver.validation import VOICES

    clip = now.samples_for(round(seconds * 1000))
    same = {
        "samples": all(bytes(now.render(v, clip)) == then.render(v, clip).tobytes() for v in VOICES)
    }
    for fmt in FORMATS:
        same[fmt] = now.encode(VOICE, clip, fmt) == then.encode(VOICE, clip, fmt)
    return same


def section(figures: dict[str, Any], rev: str, settings: dict[str, Any]) -> str:
    m = settings["machine"]
    same = settings["same"]

    from mockserver.validation import VOICES

    ratios = [figures[f"now/{key}"] / figures[f"then/{key}"] for key in ("render", *FORMATS)]
    low, high = min(ratios), max(ratios)
    now_all = figures["now/periods"] * len(VOICES)
    then_all = figures["then/periods"] * len(VOICES)
    extra = figures["now/periods"] - figures["then/periods"]
    if all(same.values()):
        same_text = "Same output: every voice's samples, and each format's bytes, are identical."
    else:
        differ = ", ".join(key for key, equal in same.items() if not equal)
        same_text = f"Output **differs** from numpy's: {differ}."

    def row(label: str, key: str) -> str:
        now, then = figures[f"now/{key}"], figures[f"then/{key}"]
        return f"| {label} | {then:.1f} | {now:.1f} | {now / then:.2f}x |"

    lines = [
        SYNTHESIS_START,
        "## The mock's audio: synthesis without numpy",
        "",
        f"`python3 bench/synthesis.py --against {rev} --write`, {m['date']}, {m['cpu']} "
        f"({m['cores']} cores, shared with other work), Python {m['python']}. CPU time in one "
        f"process, median of {settings['rounds']} rounds, the two versions' rounds "
        f"interleaved: *numpy* is `mockserver/audio.py` at {rev}, *stdlib* this one "
        "(`math` and `array`, frames handed to PyAV as bytes).",
        "",
        "| CPU ms | numpy | stdlib | stdlib / numpy |",
        "|---|---|---|---|",
        row("one voice's period (once per voice and process)", "periods"),
        row("a minute of samples, periods made (`render`)", "render"),
        *(
            row(f"{settings['seconds']:g} s clip, {fmt} (`encode`, periods made)", fmt)
            for fmt in FORMATS
        ),
        "",
        f"Per request the stdlib version takes {low:.2f}x-{high:.2f}x numpy's CPU; making "
        f"a voice's period costs {extra:.1f} ms more, once, on the first clip a process "
        f"makes in that voice (all {len(VOICES)} voices: {now_all:.0f} ms against "
        f"{then_all:.0f} ms). {same_text}",
        SYNTHESIS_END,
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    reexec_in_venv(__file__)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", metavar="REV", help="compare with audio.py at git REV")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=3.0, help="clip length per format")
    parser.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = parser.parse_args()
    if args.write and not args.against:
        parser.error("--write needs --against")

    from mockserver import audio

    with tempfile.TemporaryDirectory(prefix="tts-shim-synthesis-") as scratch:
        versions = {"now": audio}
        if args.against:
            versions["then"] = load_at(args.against, Path(scratch))
        figures = measure(versions, args.rounds, args.seconds)
        same = same_output(audio, versions["then"], args.seconds) if args.against else {}
    for key, value in figures.items():
        print(f"{key:16} {value:9.2f} ms")
    if same:
        print("same output:", ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in same.items()))
    if args.write:
        settings = {"rounds": args.rounds, "seconds": args.seconds, "same": same}
        settings["machine"] = machine()
        write_section(ROOT / "docs" / "benchmarks.md", section(figures, args.against, settings))
        print("wrote docs/benchmarks.md (synthesis section)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
