"""Speech-like test audio: synthesis with the standard library, encoding with PyAV, a
bounded cache.

Nothing here is per-request state. A clip is fully described by
``(voice, number of samples, format)``, which is what the CDN links carry, so any
clip can be regenerated on demand and the only memory kept is the byte-bounded
LRU cache of encoded clips.

The waveform is periodic (a fixed rhythm of syllables per voice), so a slice of a
clip of any length can be rendered without rendering what comes before it. The
encoder runs block by block and yields its output as it goes, which is how raw
PCM or WAV clips of hundreds of megabytes are served in constant memory.

No numpy: one period of each voice is computed once (``math``, into an ``array``), and
a clip is that period tiled, which is a copy of bytes; so ``pip install tts-shim`` alone
runs the mock, and the pytest fixtures built on it.
"""

from __future__ import annotations

import functools
import math
import threading
from array import array
from collections import OrderedDict
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
from av.audio.stream import AudioStream

from mockserver.validation import VOICES

__all__ = [
    "CHARS_PER_SECOND",
    "CHUNK_SIZE",
    "FORMATS",
    "MAX_ENCODED_DURATION_MS",
    "MAX_RAW_DURATION_MS",
    "MIN_DURATION",
    "SAMPLE_RATE",
    "AudioCache",
    "AudioFormat",
    "encode",
    "iter_encoded",
    "max_duration_ms",
    "render",
    "samples_for",
    "speech_duration",
]

SAMPLE_RATE = 24_000
#: Roughly how fast the real voices read at speed 1.
CHARS_PER_SECOND = 15.0
#: Even a single character comes back as about half a second of audio.
MIN_DURATION = 0.5
#: Longest compressed clip served: covers 4096 characters at speed 0.25 (about 1092 s).
MAX_ENCODED_DURATION_MS = 20 * 60 * 1000
#: Longest PCM/WAV clip served (about 1 GB); these stream in constant memory.
MAX_RAW_DURATION_MS = 6 * 60 * 60 * 1000
#: Size of the pieces the encoder yields and the server writes.
CHUNK_SIZE = 32 * 1024

# Samples rendered and encoded per step: one second keeps the encoder's calls few while
# its first output arrives quickly.
_BLOCK = SAMPLE_RATE
_PEAK = 0.5
_FADE = SAMPLE_RATE // 100


@dataclass(frozen=True)
class AudioFormat:
    """How one ``response_format`` is encoded and labelled."""

    name: str
    content_type: str
    container: str
    codec: str
    bit_rate: int | None = None

    @property
    def raw(self) -> bool:
        """Uncompressed: cheap to produce at any length."""
        return self.codec == "pcm_s16le"


#: The six formats, as the real service sends them.
FORMATS: dict[str, AudioFormat] = {
    fmt.name: fmt
    for fmt in (
        AudioFormat("mp3", "audio/mpeg", "mp3", "libmp3lame", 64_000),
        AudioFormat("opus", "audio/opus", "ogg", "libopus", 32_000),
        AudioFormat("aac", "audio/aac", "adts", "aac", 64_000),
        AudioFormat("flac", "audio/flac", "flac", "flac"),
        AudioFormat("wav", "audio/wav", "wav", "pcm_s16le"),
        AudioFormat("pcm", "audio/pcm", "s16le", "pcm_s16le"),
    )
}


def speech_duration(text: str, speed: float = 1.0) -> float:
    """Seconds of audio the mock returns for ``text`` read at ``speed``.

    ``max(0.5, len(text) / (15 * speed))``, rounded to the millisecond: about the
    pace of the real voices, twice as fast at speed 2, never shorter than half a
    second.
    """
    seconds = len(text) / (CHARS_PER_SECOND * speed)
    return round(max(MIN_DURATION, seconds), 3)


def samples_for(duration_ms: int) -> int:
    """Number of samples in ``duration_ms`` milliseconds at 24 kHz."""
    return duration_ms * SAMPLE_RATE // 1000


def max_duration_ms(fmt: str) -> int:
    """Longest clip the mock serves in ``fmt``."""
    return MAX_RAW_DURATION_MS if FORMATS[fmt].raw else MAX_ENCODED_DURATION_MS


# Per-voice pitch in Hz: low voices low, bright voices high, all distinct.
_PITCH_HZ = {
    "alloy": 175.0,
    "ash": 118.0,
    "ballad": 132.0,
    "coral": 208.0,
    "echo": 106.0,
    "fable": 152.0,
    "nova": 222.0,
    "onyx": 92.0,
    "sage": 190.0,
    "shimmer": 240.0,
    "verse": 125.0,
}

# One "phrase": (seconds, pitch factor, loudness) per syllable; loudness 0 is the
# gap between words. 1.36 s, about 20 characters at 15 characters a second.
_RHYTHM = (
    (0.18, 1.00, 1.00),
    (0.22, 1.08, 0.80),
    (0.14, 0.95, 0.90),
    (0.10, 1.00, 0.00),
    (0.20, 1.12, 1.00),
    (0.16, 0.98, 0.70),
    (0.24, 0.90, 0.85),
    (0.12, 1.00, 0.00),
)


@functools.lru_cache(maxsize=len(VOICES))
def _phrase(voice: str) -> array[int]:
    """One period of ``voice``'s waveform, s16 (bounded: one array per voice)."""
    index = VOICES.index(voice)
    # Rotate the rhythm and vary the overtones so voices differ in more than pitch.
    shift = index % len(_RHYTHM)
    rhythm = _RHYTHM[shift:] + _RHYTHM[:shift]
    overtones = (1.0, 0.35 + 0.06 * (index % 4), 0.18 + 0.05 * (index % 3), 0.08)
    w1, w2, w3, w4 = overtones
    norm = sum(overtones)
    base = _PITCH_HZ[voice]
    sin, pi = math.sin, math.pi
    period = array("h")
    for seconds, pitch, loudness in rhythm:
        n = round(seconds * SAMPLE_RATE)
        if not loudness:  # the gap between words
            period.frombytes(bytes(2 * n))
            continue
        frequency = base * pitch
        cycles = 0.0
        samples = []
        for i in range(n):
            position = i / n
            # Each syllable's pitch falls slightly, as speech intonation does.
            cycles += frequency * (1.0 - 0.06 * position)
            phase = 2.0 * pi * cycles / SAMPLE_RATE
            wave = w1 * sin(phase) + w2 * sin(2 * phase) + w3 * sin(3 * phase) + w4 * sin(4 * phase)
            # A raised-cosine envelope starts and ends each syllable at zero: no clicks.
            envelope = sin(pi * position) ** 2
            samples.append(round(loudness * envelope * wave / norm * _PEAK * 32767.0))
        period.extend(samples)
    return period


def render(voice: str, total: int, start: int = 0, stop: int | None = None) -> array[int]:
    """Samples ``start:stop`` of ``voice``'s clip of ``total`` samples (s16 in the
    machine's byte order, mono, 24 kHz), as an ``array('h')``.

    Unknown voices (a CDN bucket name, say) sound like ``alloy``.
    """
    stop = total if stop is None else min(stop, total)
    count = max(0, stop - start)
    period = _phrase(voice if voice in _PITCH_HZ else "alloy")
    # The clip is the period repeated: slices and repeats of arrays are copies of bytes.
    samples = period[start % len(period) :][:count]
    whole, rest = divmod(count - len(samples), len(period))
    samples.extend(period * whole)
    samples.extend(period[:rest])
    # Fade the last few milliseconds so a clip cut mid-syllable does not click.
    for i in range(max(start, total - _FADE), stop):
        samples[i - start] = round(samples[i - start] * ((total - i) / _FADE))
    return samples


def _frame(samples: array[int], pts: int) -> av.AudioFrame:
    """A mono s16 PyAV frame holding ``samples``, which start at sample ``pts``."""
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(samples))
    frame.planes[0].update(samples.tobytes())
    frame.sample_rate = SAMPLE_RATE
    frame.pts = pts
    frame.time_base = Fraction(1, SAMPLE_RATE)
    return frame


class _Sink:
    """A write-only file for PyAV; without ``seek`` muxers write streaming headers.

    That matters for WAV: the real service streams it with its sizes set to
    0xFFFFFFFF, and FFmpeg's WAV muxer leaves them so when it cannot seek back.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def iter_encoded(voice: str, total: int, fmt: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Encode ``voice``'s clip of ``total`` samples as ``fmt``, yielding it in pieces.

    Memory use does not depend on ``total``. Blocking (it runs the encoder); call
    it from a worker thread in async code.
    """
    spec = FORMATS[fmt]
    sink = _Sink()
    # bitexact keeps encoder version strings out, so output is the same everywhere.
    container = av.open(sink, mode="w", format=spec.container, options={"fflags": "+bitexact"})
    pending = bytearray()
    try:
        stream = container.add_stream(spec.codec, rate=SAMPLE_RATE)
        assert isinstance(stream, AudioStream)
        stream.layout = "mono"
        if spec.bit_rate:
            stream.bit_rate = spec.bit_rate
        for start in range(0, total, _BLOCK):
            frame = _frame(render(voice, total, start, start + _BLOCK), start)
            for packet in stream.encode(frame):
                container.mux(packet)
            pending += sink.drain()
            while len(pending) >= chunk_size:
                yield bytes(pending[:chunk_size])
                del pending[:chunk_size]
        for packet in stream.encode(None):
            container.mux(packet)
    finally:
        # Also runs when a client goes away mid-stream and the generator is closed.
        container.close()
    pending += sink.drain()
    for offset in range(0, len(pending), chunk_size):
        yield bytes(pending[offset : offset + chunk_size])


def encode(voice: str, total: int, fmt: str) -> bytes:
    """The whole encoded clip at once (fine for short clips)."""
    return b"".join(iter_encoded(voice, total, fmt))


AudioKey = tuple[str, int, str]


class AudioCache:
    """Thread-safe LRU of encoded clips, bounded by their total size in bytes.

    Keyed by ``(voice, samples, format)``. A clip bigger than a quarter of the
    budget is never cached, so one huge clip cannot flush everything else.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_bytes // 4
        self._entries: OrderedDict[AudioKey, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._size

    def get(self, key: AudioKey) -> bytes | None:
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
            return data

    def put(self, key: AudioKey, data: bytes) -> bool:
        """Keep ``data``, evicting the least recently used; ``False`` if too big."""
        if len(data) > self.max_entry_bytes:
            return False
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._entries[key] = data
            self._size += len(data)
            while self._size > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._size -= len(evicted)
        return True

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._size = 0

    def iter_bytes(self, voice: str, total: int, fmt: str) -> Generator[bytes, None, None]:
        """The clip in pieces: from the cache, or encoded now and cached once complete.

        Blocking on a miss; call it from a worker thread in async code.
        """
        key = (voice, total, fmt)
        cached = self.get(key)
        if cached is not None:
            for offset in range(0, len(cached), CHUNK_SIZE):
                yield cached[offset : offset + CHUNK_SIZE]
            return
        kept: list[bytes] | None = []
        kept_size = 0
        for chunk in iter_encoded(voice, total, fmt):
            if kept is not None:
                kept.append(chunk)
                kept_size += len(chunk)
                if kept_size > self.max_entry_bytes:
                    kept = None  # too big to cache; stop holding on to it
            yield chunk
        if kept is not None:
            self.put(key, b"".join(kept))
