"""The work requests leave behind: bounded, and waited for or cancelled at shutdown."""

from __future__ import annotations

import asyncio

from shim.background import Background


async def test_work_runs_to_its_end_and_is_forgotten() -> None:
    background = Background(limit=2)
    done = asyncio.Event()

    async def work() -> None:
        done.set()

    assert background.spawn(work())
    await background.aclose(grace=10)

    assert done.is_set()
    assert len(background) == 0


async def test_beyond_the_limit_work_is_refused_and_never_runs() -> None:
    background = Background(limit=1)
    release = asyncio.Event()
    ran: list[str] = []

    async def work(name: str) -> None:
        ran.append(name)
        await release.wait()

    assert background.spawn(work("first"))
    refused = work("second")
    assert not background.spawn(refused)
    assert refused.cr_frame is None  # closed, not left to warn "never awaited"
    release.set()
    await background.aclose(grace=10)

    assert ran == ["first"]


async def test_shutdown_cancels_what_outlasts_the_grace_and_takes_no_more() -> None:
    background = Background(limit=4)
    cleaned: list[bool] = []

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append(True)

    background.spawn(forever())
    await asyncio.sleep(0)  # let it start
    await background.aclose(grace=0)

    assert cleaned == [True]  # cancelled, and its clean-up ran before aclose returned
    assert len(background) == 0

    async def late() -> None:
        raise AssertionError("work after shutdown must not run")

    assert not background.spawn(late())
