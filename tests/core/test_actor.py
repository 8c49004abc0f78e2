"""The actor runtime: request/reply, errors at the caller, crashes, cancellation."""

from __future__ import annotations

import attrs
import pytest
import trio

import hwsim
from hwsim.core.actor import Actor, handles

pytestmark = pytest.mark.hwsim


@attrs.frozen
class Ping:
    n: int


@attrs.frozen
class Fail:
    kind: str


@attrs.frozen
class Slow:
    cycles: int


class Echo(Actor):
    def __init__(self, name: str = "echo", **kwargs: object) -> None:
        super().__init__(name, **kwargs)  # type: ignore[arg-type]
        self.seen: list[int] = []

    @handles(Ping)
    def _ping(self, msg: Ping, at: int) -> tuple[int, int]:
        self.seen.append(msg.n)
        return msg.n + 1, at + 3

    @handles(Fail)
    def _fail(self, msg: Fail, at: int) -> tuple[None, int]:
        if msg.kind == "hwsim":
            raise hwsim.OutOfMemory("page allocation failure: order:11")
        if msg.kind == "value":
            raise ValueError("bad argument")
        raise KeyError("a bug")

    @handles(Slow)
    async def _slow(self, msg: Slow, at: int) -> tuple[int, int]:
        await trio.sleep(msg.cycles)
        return msg.cycles, at + msg.cycles


async def started(nursery: trio.Nursery, *actors: Actor) -> None:
    for actor in actors:
        await nursery.start(actor.serve, name=actor.name)


async def test_a_call_returns_the_handlers_value_and_completion_cycle() -> None:
    async with trio.open_nursery() as nursery:
        echo = Echo()
        await started(nursery, echo)
        assert await echo.call(Ping(41), at=10) == (42, 13)
        assert await echo.call(Ping(1)) == (2, 3)
        nursery.cancel_scope.cancel()


async def test_calls_do_not_advance_virtual_time_by_themselves() -> None:
    async with trio.open_nursery() as nursery:
        echo = Echo()
        await started(nursery, echo)
        for i in range(100):
            await echo.call(Ping(i))
        assert hwsim.current_cycle() == 0
        assert echo.seen == list(range(100))
        nursery.cancel_scope.cancel()


async def test_a_refused_request_raises_at_the_caller_naming_the_actor() -> None:
    async with trio.open_nursery() as nursery:
        echo = Echo("ram")
        await started(nursery, echo)
        with pytest.raises(hwsim.OutOfMemory) as info:
            await echo.call(Fail("hwsim"))
        assert info.value.actor == "ram"
        assert any("actor 'ram'" in note for note in info.value.__notes__)
        with pytest.raises(ValueError, match="bad argument"):
            await echo.call(Fail("value"))
        # The actor is still serving after refusing.
        assert await echo.call(Ping(1)) == (2, 3)
        nursery.cancel_scope.cancel()


async def test_an_unknown_message_is_refused_with_a_type_error() -> None:
    async with trio.open_nursery() as nursery:
        echo = Echo()
        await started(nursery, echo)
        with pytest.raises(TypeError, match="echo does not understand Slowly"):

            @attrs.frozen
            class Slowly:
                pass

            await echo.call(Slowly())
        nursery.cancel_scope.cancel()


async def test_a_bug_in_a_handler_crashes_the_machine_with_an_error_naming_the_actor() -> None:
    with pytest.raises(hwsim.ActorCrashed, match="actor 'dma' crashed: KeyError") as info:
        async with hwsim.boot(hwsim.MachineConfig(cpus=1)), trio.open_nursery() as nursery:
            echo = Echo("dma")
            await started(nursery, echo)
            await echo.call(Fail("bug"))
    assert isinstance(info.value.__cause__, KeyError)


async def test_calling_a_stopped_actor_raises_actor_crashed() -> None:
    echo = Echo()
    async with trio.open_nursery() as nursery:
        await started(nursery, echo)
        nursery.cancel_scope.cancel()
    with pytest.raises(hwsim.ActorCrashed, match="not running"):
        await echo.call(Ping(1))


async def test_a_cancelled_caller_withdraws_its_queued_request() -> None:
    async with trio.open_nursery() as nursery:
        slow, echo = Echo("slow"), Echo()
        await started(nursery, slow, echo)
        nursery.start_soon(slow.call, Slow(100))
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(10):
            await slow.call(Ping(7))  # queued behind Slow(100): withdrawn at cycle 10
        assert hwsim.current_cycle() == 10
        await trio.sleep(200)
        assert slow.seen == []  # Ping(7) never ran
        nursery.cancel_scope.cancel()


async def test_requests_from_several_tasks_are_all_answered() -> None:
    results: dict[int, int] = {}
    async with trio.open_nursery() as nursery:
        echo = Echo()
        await started(nursery, echo)

        async def client(k: int) -> None:
            for i in range(10):
                value, _ = await echo.call(Ping(100 * k + i))
                results[100 * k + i] = value

        async with trio.open_nursery() as clients:
            for k in range(5):
                clients.start_soon(client, k)
        nursery.cancel_scope.cancel()
    assert results == {100 * k + i: 100 * k + i + 1 for k in range(5) for i in range(10)}


async def test_posted_messages_are_handled_without_a_reply() -> None:
    async with trio.open_nursery() as nursery:
        echo = Echo()
        await started(nursery, echo)
        echo.post(Ping(5))
        echo.post(Ping(6))
        assert await echo.call(Ping(7)) == (8, 3)
        assert echo.seen == [5, 6, 7]
        nursery.cancel_scope.cancel()


async def test_a_failing_posted_message_crashes_the_actor() -> None:
    with pytest.raises(hwsim.ActorCrashed, match="failed on a posted Fail message"):
        async with hwsim.boot(hwsim.MachineConfig(cpus=1)), trio.open_nursery() as nursery:
            echo = Echo()
            await started(nursery, echo)
            echo.post(Fail("value"))
            await trio.sleep(1)


def test_an_actor_needs_a_name() -> None:
    with pytest.raises(ValueError, match="non-empty name"):
        Echo("")
