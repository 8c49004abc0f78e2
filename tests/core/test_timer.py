"""The machine's timer: calls at virtual cycles, in a fixed order, and never a false alarm."""

from __future__ import annotations

import pytest
import trio

import hwsim
from hwsim.core.timer import Timer


def test_calls_run_at_their_cycle_in_cycle_then_schedule_order() -> None:
    async def main() -> list[tuple[str, int]]:
        timer, fired = Timer(), []
        async with trio.open_nursery() as nursery:
            await nursery.start(timer.serve)
            for name, cycle in (("c", 30), ("a", 10), ("b", 30), ("late", 5)):
                timer.call_at(cycle, lambda n=name: fired.append((n, hwsim.current_cycle())))
            await hwsim.sleep(20)
            timer.call_at(0, lambda: fired.append(("past", hwsim.current_cycle())))
            await hwsim.sleep(20)
            nursery.cancel_scope.cancel()
        assert timer.statistics().fired == 5
        return fired

    assert hwsim.run(main) == [("late", 5), ("a", 10), ("past", 20), ("c", 30), ("b", 30)]


def test_bad_calls_are_refused() -> None:
    timer = Timer()
    with pytest.raises(TypeError, match="cycle is an int"):
        timer.call_at(1.5, lambda: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        timer.call_at(1, None)  # type: ignore[arg-type]
    assert timer.statistics().scheduled == 0


def test_an_idle_timer_does_not_hide_a_deadlock() -> None:
    async def main() -> None:
        async with hwsim.boot(hwsim.MachineConfig(cpus=1)):
            await trio.Event().wait()  # nothing will ever set it

    with pytest.raises(hwsim.Deadlock):
        hwsim.run(main)


def test_a_pending_completion_is_not_a_deadlock() -> None:
    async def main() -> int:
        async with hwsim.boot(hwsim.MachineConfig(cpus=1)) as m:
            buf = m.kernel.virt_to_phys(await m.kernel.kmalloc(4096))
            transfer = await m.dma.memcpy(buf, buf, 4096)
            await transfer.wait()  # only the timer can wake this task
            return m.now - transfer.done

    assert hwsim.run(main) == 0
