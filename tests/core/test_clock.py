"""The cycle clock: integer cycles, jumps to deadlines, no busy spin."""

from __future__ import annotations

import pytest
import trio

import hwsim
from hwsim.core.clock import CycleClock

pytestmark = pytest.mark.hwsim


async def test_sleep_advances_virtual_time_by_exactly_that_many_cycles() -> None:
    start = hwsim.current_cycle()
    await hwsim.sleep(1234)
    assert hwsim.current_cycle() - start == 1234
    assert isinstance(hwsim.current_cycle(), int)


async def test_concurrent_sleepers_wake_in_cycle_order() -> None:
    woke: list[tuple[str, int]] = []

    async def sleeper(name: str, cycles: int) -> None:
        await hwsim.sleep(cycles)
        woke.append((name, hwsim.current_cycle()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper, "c", 300)
        nursery.start_soon(sleeper, "a", 100)
        nursery.start_soon(sleeper, "b", 200)
    assert woke == [("a", 100), ("b", 200), ("c", 300)]


async def test_sleep_until_a_past_cycle_returns_at_once() -> None:
    await hwsim.sleep(50)
    await hwsim.sleep_until(10)
    assert hwsim.current_cycle() == 50


async def test_wait_all_tasks_blocked_wakes_before_time_jumps() -> None:
    seen: list[int] = []

    async def sleeper() -> None:
        await hwsim.sleep(1000)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper)
        await trio.testing.wait_all_tasks_blocked()
        seen.append(hwsim.current_cycle())
    assert seen == [0]
    assert hwsim.current_cycle() == 1000


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
async def test_sleep_rejects_anything_but_a_non_negative_int(bad: object) -> None:
    with pytest.raises(ValueError, match="non-negative int"):
        await hwsim.sleep(bad)  # type: ignore[arg-type]


def test_a_clock_starts_at_a_non_negative_integer() -> None:
    assert CycleClock(5).current_time() == 5.0
    with pytest.raises(ValueError):
        CycleClock(-1)


def test_hwsim_run_returns_the_functions_result() -> None:
    async def main(x: int) -> int:
        await hwsim.sleep(x)
        return hwsim.current_cycle()

    assert hwsim.run(main, 77) == 77


def test_hwsim_run_rejects_a_bad_seed() -> None:
    async def main() -> None:
        pass

    with pytest.raises(ValueError, match="seed"):
        hwsim.run(main, seed=-3)
