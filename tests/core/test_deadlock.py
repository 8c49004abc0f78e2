"""Deadlock detection: the run ends with hwsim.Deadlock naming who waits on whom."""

from __future__ import annotations

import time

import attrs
import pytest
import trio

import hwsim
from hwsim.core.actor import Actor, handles


@attrs.frozen
class Ask:
    pass


class Forwarder(Actor):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.peer: Actor | None = None

    @handles(Ask)
    async def _ask(self, msg: Ask, at: int) -> tuple[object, int]:
        assert self.peer is not None
        return await self.peer.call(msg, at)  # type: ignore[no-any-return]


async def two_actors_calling_each_other() -> None:
    async with trio.open_nursery() as nursery:
        cpu, ram = Forwarder("cpu0"), Forwarder("ram")
        cpu.peer, ram.peer = ram, cpu
        await nursery.start(cpu.serve)
        await nursery.start(ram.serve)
        await hwsim.sleep(500)
        await cpu.call(Ask())


def test_a_wait_for_cycle_between_actors_raises_deadlock_naming_the_cycle() -> None:
    with pytest.raises(hwsim.Deadlock) as info:
        hwsim.run(two_actors_calling_each_other)
    message = str(info.value)
    assert "Deadlock at cycle 500" in message
    assert "wait-for cycle: cpu0 -> ram -> cpu0" in message
    assert "two_actors_calling_each_other waits for cpu0 to answer Ask" in message


def test_waiting_on_an_event_nobody_can_set_is_a_deadlock_too() -> None:
    async def main() -> None:
        async with hwsim.boot(hwsim.MachineConfig(cpus=1)):
            await trio.Event().wait()

    with pytest.raises(hwsim.Deadlock) as info:
        hwsim.run(main)
    message = str(info.value)
    assert "no wait-for cycle" in message
    assert "main is blocked outside hwsim" in message
    assert "cpu0 is idle, waiting for a message" in message


def test_a_pending_timer_is_not_a_deadlock() -> None:
    async def main() -> int:
        event = trio.Event()

        async def later() -> None:
            await hwsim.sleep(10_000)
            event.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(later)
            await event.wait()
        return hwsim.current_cycle()

    assert hwsim.run(main) == 10_000


def test_a_thread_that_will_finish_is_not_a_deadlock() -> None:
    async def main() -> str:
        return await trio.to_thread.run_sync(lambda: (time.sleep(0.05), "done")[1])

    assert hwsim.run(main) == "done"


def test_a_deadlocking_pytest_test_fails_with_the_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import attrs, pytest, trio
        import hwsim

        @attrs.frozen
        class Ask:
            pass

        class Forwarder(hwsim.Actor):
            peer = None

            @hwsim.handles(Ask)
            async def _ask(self, msg, at):
                return await self.peer.call(msg, at)

        async def test_stuck(machine):
            async with trio.open_nursery() as nursery:
                a, b = Forwarder("a"), Forwarder("b")
                a.peer, b.peer = b, a
                await nursery.start(a.serve)
                await nursery.start(b.serve)
                await a.call(Ask())
        """
    )
    result = pytester.runpytest_subprocess("-p", "trio", "-q")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Deadlock at cycle 0*", "*wait-for cycle: a -> b -> a*"])
