"""The fake clock's settle waits for quiescence, not for a fixed number of loop turns."""

from __future__ import annotations

import asyncio

import pytest

from tests import fakeclock
from tests.fakeclock import FakeClock


async def test_settle_runs_a_chain_longer_than_any_fixed_number_of_turns_to_its_end():
    done: list[int] = []

    async def chain(turns: int) -> None:
        for _ in range(turns):
            await asyncio.sleep(0)
        done.append(turns)

    asyncio.create_task(chain(500))
    await FakeClock().settle()
    assert done == [500]


async def test_advance_wakes_a_sleeper_whose_wake_up_takes_many_turns():
    clock, seen = FakeClock(), []

    async def sleeper() -> None:
        await clock.sleep_until(clock.time() + 10)
        for _ in range(300):
            await asyncio.sleep(0)
        seen.append(clock.time())

    asyncio.create_task(sleeper())
    await clock.advance(10)
    assert seen == [1_800_000_010.0]


async def test_settle_fails_on_a_loop_that_never_gets_quiet(monkeypatch):
    monkeypatch.setattr(fakeclock, "QUIET_WITHIN", 1000)

    async def spin() -> None:
        while True:
            await asyncio.sleep(0)

    task = asyncio.create_task(spin())
    with pytest.raises(AssertionError, match="did not get quiet within 1000 turns"):
        await FakeClock().settle()
    task.cancel()
