"""From a validated request to audio in the client's format: the one data path.

Speech, SSE speech and chat (plain and streamed) all come through :func:`synthesize`
and differ only in how they wrap the bytes. It reads top to bottom::

    take a speech slot                  (or wait in line, or 429)     shim.limits
    plan: the text in pieces            (one piece when short)        shim.split
    reserve what the cache lacks        (the budget: 429)             shim.quota
    for each piece, in order of need, at most --split-parallel ahead:
        cache lookup ── hit ──▶ stored audio                          shim.cache
             │ miss: single flight, one generation per key
        the billed generation call      (never paid twice)            shim.upstream
             counted as it goes out, run to its answer however the request ends
    the first audio bytes in hand, within --deadline
    stream each piece in turn: download, convert, tee into the cache (committed only
    when whole); several pieces stitched into one file                shim.stitch

A cache hit costs nothing, so the budget is checked on the pieces the cache does not
hold: a one-piece plan reserves after its lookup missed, a longer one after asking the
cache which of its pieces it holds (:class:`shim.quota.Bill`).

Pieces are the unit of caching: a short request is a one-piece plan whose audio is
cached in the client's format; the pieces of a long text are made as FLAC (exact at
the joins, one lossy encode at most) and cached as such, so a long text read twice,
or two texts that share a piece, pay once per piece.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import anyio

from shim import audio, errors
from shim.cache import CacheKey, Hit, Miss
from shim.config import MAX_INPUT_CHARS
from shim.context import Calls, RequestContext
from shim.errors import APIError, clean_request_id
from shim.quota import Bill
from shim.split import split_text
from shim.state import State
from shim.stitch import Piece, stitch
from shim.upstream import AudioRef, Upstream

__all__ = ["PIECE_FORMAT", "Job", "Speech", "synthesize"]

logger = logging.getLogger("tts_shim")

#: What the pieces of a split text are generated (and cached) as: lossless, so the
#: joins are exact and the client's format is encoded once, across all pieces.
PIECE_FORMAT = "flac"


@dataclass(frozen=True)
class Job:
    """What decides the audio of one request, and who pays for it."""

    model: str  # the upstream id, e.g. ``openai/tts-1-hd``
    text: str
    voice: str
    format: str  # the format the client gets (chat's ``pcm16`` is ``pcm``)
    key: str  # the AI/ML key that pays
    instructions: str | None = None
    speed: float | None = None
    #: Whose cache entries these are (``None``: the deployment's; see shim.cache.key).
    tenant: str | None = None
    cache_read: bool = True
    cache_write: bool = True

    def body(self, text: str, fmt: str) -> dict[str, Any]:
        """The AI/ML ``POST /v1/tts`` body for one piece; optional fields only when set."""
        body: dict[str, Any] = {
            "model": self.model,
            "text": text,
            "voice": self.voice,
            "response_format": fmt,
        }
        if self.instructions is not None:
            body["style"] = self.instructions
        if self.speed is not None:
            body["speed"] = self.speed
        return body

    def cache_key(self, text: str, fmt: str) -> CacheKey:
        return CacheKey(
            self.model, self.voice, text, fmt, self.instructions, self.speed, self.tenant
        )


class Speech:
    """Audio on its way to the client, its first bytes in hand: iterate it once, or
    ``aclose`` it. ``cache`` is ``HIT``, ``MISS`` or ``BYPASS`` (the first piece's)."""

    def __init__(
        self,
        first: bytes,
        rest: AsyncGenerator[bytes],
        facts: _Facts,
        release: Callable[[], None] | None = None,
    ) -> None:
        self.request_id = clean_request_id(facts.request_id)
        self.cache = facts.cache
        #: All of the audio, when it was in hand with its first bytes (short speech, the
        #: usual case): the path behind it has already run to its end.
        self.whole = first if facts.whole else None
        self._first = first
        self._rest = rest
        self._release = release
        # The downloads ran to their end: nothing left to close.
        self._rest_done = facts.whole
        self._closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            yield self._first
            async for chunk in self._rest:
                yield chunk
            self._rest_done = True
        except audio.TranscodeError as exc:
            raise _transcode_failed(exc, self.request_id) from exc
        except APIError:
            raise
        except Exception as exc:
            # Whatever broke, it ends as an APIError, which the response turns into
            # an aborted transfer (and an ``error`` event first, for SSE clients).
            raise errors.audio_download_failed(
                f"The audio could not be delivered: {type(exc).__name__}.",
                request_id=self.request_id,
            ) from exc
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop the downloads and the transcoder; free the slot. Idempotent: the
        response closes its body and calls its ``on_close``, which may be this too."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._rest_done:
                # Shielded: this runs when the response is cancelled (the client left),
                # and the downloads must still be closed.
                with anyio.CancelScope(shield=True):
                    await self._rest.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


async def synthesize(state: State, job: Job, context: RequestContext) -> Speech:
    """The audio for ``job`` in ``job.format``, its first bytes in hand, paid for
    through the request's bill (on its ``context``, put there by
    :func:`shim.operations.admit`; none: nothing is counted), its timings, cache
    results and upstream attempts noted on ``context``.

    A speech slot is taken first (waiting in line, or a 429) and held until the
    returned :class:`Speech` is closed and every generation it sent has its answer.
    Everything up to the first audio byte must fit in ``--deadline`` seconds, counted
    once the slot is held; after that, the download's idle timeout governs, so long
    audio can stream.
    """
    bill = context.bill
    waited = time.perf_counter()
    try:
        await state.capacity.acquire()
    except BaseException:
        if bill is not None:
            bill.close()
        raise
    release = _ending(state, bill)
    started = time.perf_counter()
    context.queued_ms = (started - waited) * 1000
    try:
        return await _first_audio(state, job, release, context)
    except BaseException:
        release()
        raise
    finally:
        context.upstream_ms = (time.perf_counter() - started) * 1000


def _ending(state: State, bill: Bill | None) -> Callable[[], None]:
    """What ends a request: its bill closed (what it reserved and did not spend given
    back), then its slot freed, once each generation it sent has its answer (the
    AI/ML API is still working on those; see shim/upstream/api.py)."""

    def end() -> None:
        if bill is None:
            state.capacity.release()
            return
        bill.close()
        bill.when_idle(state.capacity.release)

    return end


def plan(state: State, text: str) -> list[str]:
    """The pieces ``text`` is generated in: one, unless splitting is on and the text
    is longer than ``--split-threshold`` characters (or than the upstream takes)."""
    config = state.config
    if not config.split or len(text) <= min(config.split_threshold, MAX_INPUT_CHARS):
        return [text]
    return split_text(text)


@dataclass
class _Facts:
    """What the response says about where its audio came from (filled in as the first
    piece is made)."""

    cache: str = "BYPASS"
    request_id: str | None = None
    #: The first chunk is all of the audio (see :attr:`_Prepared.whole`).
    whole: bool = False


async def _first_audio(
    state: State, job: Job, release: Callable[[], None], context: RequestContext
) -> Speech:
    texts = plan(state, job.text)
    facts = _Facts()
    bill = context.bill
    context.pieces = len(texts)
    if len(texts) == 1:
        chunks = _one_piece(state, job, texts[0], facts, context)
    else:
        if bill is not None:
            # All of it, before the first piece goes out: a budget that cannot pay for
            # the whole text refuses it now, not halfway through the audio.
            await bill.reserve(await _uncached(state, job, texts, bill))
        chunks = _stitched(state, job, texts, facts, context)
    deadline = state.config.deadline
    try:
        with anyio.fail_after(deadline):
            try:
                first = await chunks.__anext__()
            except StopAsyncIteration:
                first = b""
        if facts.whole:
            # Nothing is left to wait for upstream: finish the path now (the cache entry
            # committed, the connection back in its pool), so the response can go out in
            # one piece. Past the deadline's reach: the audio, maybe billed, is in hand,
            # and the cache's calls have time limits of their own.
            async for rest in chunks:
                first += rest
    except BaseException as exc:
        # Whatever stopped us (deadline, bad audio, cancellation), the downloads and
        # the transcoder must not outlive the request.
        with anyio.CancelScope(shield=True):
            await chunks.aclose()
        if isinstance(exc, TimeoutError):
            # Final: the generation request was out, and may have been billed.
            raise errors.timeout(
                f"The AI/ML API did not deliver audio within the shim's {deadline:g} s deadline.",
                request_id=facts.request_id,
            ) from exc
        if isinstance(exc, audio.TranscodeError):
            raise _transcode_failed(exc, facts.request_id) from exc
        raise
    context.cache = facts.cache
    return Speech(first, chunks, facts, release)


# -- one piece --------------------------------------------------------------------------


@dataclass
class _Prepared:
    """One piece made ready: its audio found in the cache, or generated (billed) and
    waiting to be downloaded, with the cache entry it will fill. Whoever prepared it
    closes it (:meth:`aclose`) or finishes it (:meth:`finish`) when done with it."""

    text: str
    format: str
    cache: str
    hit: Hit | None = None
    miss: Miss | None = None
    ref: AudioRef | None = None
    #: Known once the audio is open: its first chunk is all of it (a cached entry read
    #: in one chunk; generated audio that had all arrived and needs no conversion).
    whole: bool = False
    #: Its audio was opened (a download started): finishing it starts that again.
    opened: bool = False
    #: Where its downloads are noted: its request's context's upstream attempts.
    calls: Calls | None = None
    _closed: bool = field(default=False, repr=False)

    @property
    def request_id(self) -> str | None:
        return self.ref.request_id if self.ref is not None else None

    @property
    def unfinished(self) -> bool:
        """Paid for and not yet in the cache, where it could be stored."""
        return _stores(self.miss) and self.ref is not None and not self._closed

    async def audio(self, upstream: Upstream) -> AsyncGenerator[bytes]:
        """The piece's audio in :attr:`format`; a generated one is teed into the cache,
        and committed only when it arrived whole."""
        if self.hit is not None:
            size = self.hit.audio.size
            async for chunk in self.hit.audio.chunks:
                self.whole = len(chunk) == size
                yield chunk
            return
        assert self.ref is not None
        self.opened = True
        # All of it is decoded before it is stored; what is not stored, only its first
        # frames (decoding costs CPU in proportion to the audio).
        stream = await upstream.open(self.ref, decode_all=_stores(self.miss), calls=self.calls)
        self.whole = stream.complete and stream.format == self.format
        try:
            async with aclosing(audio.convert(stream, stream.format, self.format)) as out:
                async for chunk in out:
                    yield chunk
                    if self.miss is not None:
                        await self.miss.write(chunk)
            if self.miss is not None:
                miss, self.miss = self.miss, None  # stored (or refused): nothing to finish
                await miss.commit()
        finally:
            await stream.aclose()

    async def finish(self, upstream: Upstream) -> None:
        """Download the piece into the cache with no one listening: it was paid for, and
        a retry of the request it belonged to then finds it there. A download the client
        had begun starts again from its link (inline audio is still in hand; a binary
        reply's body went with its connection)."""
        try:
            if not self.unfinished:
                return
            assert self.miss is not None
            assert self.ref is not None
            if self.opened:
                if self.ref.url is None and self.ref.inline is None:
                    return
                if not await self.miss.restart():
                    return
            async with aclosing(self.audio(upstream)) as chunks:
                async for _ in chunks:
                    pass
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Let go of the cache entry (a miss not committed stores nothing) and of a
        reply that is the audio itself, if it was never streamed."""
        if self._closed:
            return
        self._closed = True
        if self.hit is not None:
            await self.hit.audio.aclose()
        if self.ref is not None and self.ref.stream is not None:
            await self.ref.stream.aclose()
        if self.miss is not None:
            await self.miss.abort()


async def _uncached(state: State, job: Job, texts: list[str], bill: Bill) -> list[int]:
    """The sizes of the pieces of a split text the cache does not hold now (all of
    them, when the key has no budget to spare the look-ups for)."""
    if state.cache is None or not job.cache_read or not bill.budgeted:
        return [len(text) for text in texts]
    cache = state.cache
    held = await asyncio.gather(*(cache.holds(job.cache_key(text, PIECE_FORMAT)) for text in texts))
    return [len(text) for text, found in zip(texts, held, strict=True) if not found]


def _stores(miss: Miss | None) -> bool:
    """Whether a piece's audio is to be stored (a cache entry to write)."""
    return miss is not None and miss.writer is not None


async def _prepare(
    state: State,
    job: Job,
    text: str,
    fmt: str,
    context: RequestContext,
    *,
    reserve: bool,
    billing: Callable[[], None] | None = None,
) -> _Prepared:
    """Look the piece up in the cache; on a miss, generate it (the billed call, counted
    on the request's bill), its cost reserved first if ``reserve`` (a one-piece plan:
    the lookup said it costs), and ``billing`` told just before it goes out."""
    miss: Miss | None = None
    bill, calls = context.bill, context.upstream_calls
    if state.cache is not None and (job.cache_read or job.cache_write):
        key = job.cache_key(text, fmt)
        found = await state.cache.lookup(key, read=job.cache_read, write=job.cache_write)
        if found is not None:  # None: the store is unreachable, served as uncached
            context.cache_result(isinstance(found, Hit), len(text))
        if isinstance(found, Hit):
            return _Prepared(text, fmt, "HIT", hit=found)
        miss = found
    try:
        if bill is not None and reserve:
            await bill.reserve([len(text)])
        if billing is not None:
            billing()
        # A reply that is the audio itself is opened as it arrives: decoded whole only if
        # it is to be stored, as :meth:`_Prepared.audio` would.
        body, stores = job.body(text, fmt), _stores(miss)
        ref = await state.upstream.generate(body, job.key, bill, decode_all=stores, calls=calls)
    except BaseException:
        if miss is not None:
            await miss.abort()  # lets a follower waiting on this key try
        raise
    cache = "BYPASS" if miss is None else "MISS"
    return _Prepared(text, fmt, cache, miss=miss, ref=ref, calls=calls)


async def _one_piece(
    state: State, job: Job, text: str, facts: _Facts, context: RequestContext
) -> AsyncGenerator[bytes]:
    prepared = await _prepare(state, job, text, job.format, context, reserve=True)
    facts.cache, facts.request_id = prepared.cache, prepared.request_id
    try:
        async with aclosing(prepared.audio(state.upstream)) as chunks:
            async for chunk in chunks:
                facts.whole = prepared.whole
                yield chunk
    finally:
        await prepared.aclose()


# -- several pieces ---------------------------------------------------------------------


async def _stitched(
    state: State, job: Job, texts: list[str], facts: _Facts, context: RequestContext
) -> AsyncGenerator[bytes]:
    """The pieces generated ahead (at most ``--split-parallel`` at a time, in order of
    need), streamed strictly in order and stitched into one file."""
    tasks: list[asyncio.Task[_Prepared]] = []
    billed: set[int] = set()  # the pieces whose generation call went out
    downloads: list[AsyncGenerator[bytes]] = []  # the stitcher leaves closing them to us

    def start_next() -> None:
        if len(tasks) < len(texts):
            index = len(tasks)
            billing = functools.partial(billed.add, index)
            work = _prepare(
                state, job, texts[index], PIECE_FORMAT, context, reserve=False, billing=billing
            )
            tasks.append(asyncio.ensure_future(work))

    for _ in range(max(1, state.config.split_parallel)):
        start_next()

    async def pieces() -> AsyncGenerator[Piece]:
        for index in range(len(texts)):
            prepared = await tasks[index]
            start_next()
            if index == 0:
                facts.cache, facts.request_id = prepared.cache, prepared.request_id
            downloads.append(prepared.audio(state.upstream))
            yield Piece(prepared.format, downloads[-1])

    try:
        async with aclosing(stitch(pieces(), job.format)) as chunks:
            async for chunk in chunks:
                yield chunk
    finally:
        with anyio.CancelScope(shield=True):
            for download in downloads:
                await download.aclose()
        # A piece that failed, or a client that left. What was not started is not paid
        # for; what was paid for is finished into the cache in the background, so a
        # retry pays only for what was never generated; no entry is left half-made.
        paid = [task for index, task in enumerate(tasks) if task.done() or index in billed]
        kept = state.cache is not None and job.cache_write and any(map(_unfinished, paid))
        if kept and state.background.spawn(_finish_pieces(state.upstream, paid)):
            tasks = [task for task in tasks if task not in paid]
        for task in tasks:
            task.cancel()
        await _close_pieces(tasks)


def _unfinished(task: asyncio.Task[_Prepared]) -> bool:
    """Whether the piece ``task`` prepares may still need storing (it is being made, or
    was made and is not in the cache yet)."""
    if not task.done():
        return True
    return not task.cancelled() and task.exception() is None and task.result().unfinished


async def _finish_pieces(upstream: Upstream, tasks: list[asyncio.Task[_Prepared]]) -> None:
    """In the background, once a split request ended early: each paid-for piece in turn
    downloaded into the cache (see :meth:`_Prepared.finish`)."""
    try:
        for task in tasks:
            try:
                await (await task).finish(upstream)
            except Exception as exc:  # this piece is lost; the next may not be
                logger.info("a paid piece was not stored: %s", exc)
    finally:
        for task in tasks:
            task.cancel()
        await _close_pieces(tasks)


async def _close_pieces(tasks: list[asyncio.Task[_Prepared]]) -> None:
    """Wait for the pieces' tasks to end, and let go of what they made."""
    with anyio.CancelScope(shield=True):
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, _Prepared):
                await outcome.aclose()


# -- helpers ----------------------------------------------------------------------------


def _transcode_failed(exc: Exception, request_id: str | None) -> APIError:
    return errors.bad_upstream_audio(
        f"The upstream audio could not be converted to the requested format: {exc}",
        request_id=request_id,
    )
