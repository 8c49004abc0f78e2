"""Request/reply on raw trio, on hwsim's actor runtime, and what tracing costs.

Every variant does the same thing: a client task sends ``Ping(i)`` to a server task and
waits for ``i + 1``, one request at a time. Each repetition is a fresh run: start the
server, warm up, time ``n`` round trips, cancel. The run is either plain ``trio.run`` or
``hwsim.run`` (the cycle clock, the seeded scheduler and the deadlock watchdog), so that the
cost of hwsim's runtime can be told apart from the cost of running under its conditions.

The raw trio servers are written as cheaply as the pattern allows (the reply goes with
``send_nowait`` on a fresh channel of capacity 1, which never blocks), so that the
comparison favours raw trio, not hwsim.
"""

from __future__ import annotations

import statistics
from collections.abc import Awaitable, Callable
from functools import partial
from time import perf_counter
from typing import Any

import trio

import hwsim

from .echo import Echo, Ping, UntracedEcho, copy_is_current
from .harness import Figure, Sample, Section, Settings, interleave
from .peers import simpy_event_sample, simpy_stores_sample

WARMUP = 200

# How a repetition is run: trio.run or hwsim.run (both take the async function first).
Runner = Callable[..., Any]

# (request, reply channel) and (request, slot) as the two raw servers receive them.
ChannelRequest = tuple[Ping, trio.MemorySendChannel[int]]


class Slot:
    """Where the raw Event server leaves its reply before setting the event."""

    __slots__ = ("event", "value")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.value = 0


# ---------------------------------------------------------------------- raw trio


async def channel_server(requests: trio.MemoryReceiveChannel[ChannelRequest]) -> None:
    async for msg, reply in requests:
        reply.send_nowait(msg.n + 1)


async def raw_channel_client(n: int) -> float:
    """Round trips with a fresh reply channel per request; returns seconds per round trip."""
    send, receive = trio.open_memory_channel[ChannelRequest](1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(channel_server, receive, name="server")
        elapsed = 0.0
        for count in (WARMUP, n):
            start = perf_counter()
            for i in range(count):
                reply_send, reply_receive = trio.open_memory_channel[int](1)
                await send.send((Ping(i), reply_send))
                await reply_receive.receive()
            elapsed = perf_counter() - start
        nursery.cancel_scope.cancel()
    return elapsed / n


async def event_server(requests: trio.MemoryReceiveChannel[tuple[Ping, Slot]]) -> None:
    async for msg, slot in requests:
        slot.value = msg.n + 1
        slot.event.set()


async def raw_event_client(n: int) -> float:
    """Round trips with a per-request Event and value slot; returns seconds per round trip."""
    send, receive = trio.open_memory_channel[tuple[Ping, Slot]](1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(event_server, receive, name="server")
        elapsed = 0.0
        for count in (WARMUP, n):
            start = perf_counter()
            for i in range(count):
                slot = Slot()
                await send.send((Ping(i), slot))
                await slot.event.wait()
            elapsed = perf_counter() - start
        nursery.cancel_scope.cancel()
    return elapsed / n


# ---------------------------------------------------------------------- hwsim


async def actor_client(make: Callable[[], hwsim.Actor], n: int) -> float:
    """Round trips through ``actor.call``; returns seconds per round trip."""
    actor = make()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.serve, name="echo")
        at = hwsim.current_cycle()
        elapsed = 0.0
        for count in (WARMUP, n):
            start = perf_counter()
            for i in range(count):
                await actor.call(Ping(i), at)
            elapsed = perf_counter() - start
        nursery.cancel_scope.cancel()
    return elapsed / n


def echo() -> hwsim.Actor:
    return Echo("echo")


def traced_echo() -> hwsim.Actor:
    return Echo("echo", tracer=hwsim.Tracer())


def untraced_echo() -> hwsim.Actor:
    return UntracedEcho("echo")


def sample(run: Runner, client: Callable[..., Awaitable[float]], *args: Any) -> Sample:
    """A repetition: ``run(client, *args)``."""
    return partial(run, client, *args)


# ---------------------------------------------------------------------- sections


def request_reply(settings: Settings) -> Section:
    """Figures 1-3: µs per round trip on raw trio, hwsim and SimPy, and their ratios."""
    n = settings.round_trips
    variants: dict[str, tuple[str, Sample]] = {
        "trio_channel": (
            "raw trio, reply channel per request (trio.run)",
            sample(trio.run, raw_channel_client, n),
        ),
        "trio_event": (
            "raw trio, Event + value slot (trio.run)",
            sample(trio.run, raw_event_client, n),
        ),
        "trio_channel_hw": (
            "raw trio, reply channel per request (hwsim.run)",
            sample(hwsim.run, raw_channel_client, n),
        ),
        "trio_event_hw": (
            "raw trio, Event + value slot (hwsim.run)",
            sample(hwsim.run, raw_event_client, n),
        ),
        "hwsim": ("hwsim actor.call (hwsim.run)", sample(hwsim.run, actor_client, echo, n)),
        "hwsim_trio": (
            "hwsim actor.call (plain trio.run)",
            sample(trio.run, actor_client, echo, n),
        ),
        "simpy_stores": ("SimPy, two Stores", partial(simpy_stores_sample, n)),
        "simpy_event": ("SimPy, Store + Event per request", partial(simpy_event_sample, n)),
    }
    samples = interleave({key: run for key, (_, run) in variants.items()}, settings.rounds)
    section = Section(f"Request/reply ({n:,} round trips x {settings.rounds} rounds, median)")
    for key, (label, _) in variants.items():
        section.figures.append(Figure.of(key, label, samples[key], "µs/round trip", 1e6))
    section.ratio(
        "hwsim_vs_channel",
        "hwsim / raw trio reply channel, both under hwsim.run",
        "hwsim",
        "trio_channel_hw",
        below=1.25,
        inclusive=True,
    )
    section.ratio(
        "hwsim_vs_event", "hwsim / raw trio Event, both under hwsim.run", "hwsim", "trio_event_hw"
    )
    section.ratio(
        "hwsim_vs_channel_trio",
        "hwsim (hwsim.run) / raw trio reply channel (trio.run)",
        "hwsim",
        "trio_channel",
    )
    section.ratio(
        "hwsim_run_vs_trio_run",
        "hwsim actor: hwsim.run / trio.run (cost of the seeded scheduler, clock, watchdog)",
        "hwsim",
        "hwsim_trio",
    )
    section.ratio("hwsim_vs_simpy_stores", "hwsim / SimPy two Stores", "hwsim", "simpy_stores")
    section.ratio("hwsim_vs_simpy_event", "hwsim / SimPy Store + Event", "hwsim", "simpy_event")
    return section


def tracing(settings: Settings) -> Section:
    """Figure 4: what tracing costs, off and on, against an actor with no tracing code."""
    n = settings.trace_round_trips
    variants: dict[str, tuple[str, Sample]] = {
        "no_code": (
            "no tracing code (Actor.serve copy)",
            sample(hwsim.run, actor_client, untraced_echo, n),
        ),
        "off": ("tracer=None (off)", sample(hwsim.run, actor_client, echo, n)),
        "on": ("tracer=hwsim.Tracer() (on)", sample(hwsim.run, actor_client, traced_echo, n)),
    }
    rounds = settings.trace_rounds
    samples = interleave({key: run for key, (_, run) in variants.items()}, rounds)
    section = Section(f"Tracing ({n:,} round trips x {rounds} rounds, median, under hwsim.run)")
    for key, (label, _) in variants.items():
        section.figures.append(Figure.of(key, label, samples[key], "µs/round trip", 1e6))
    section.ratio("trace_off_vs_no_code", "tracing off / no tracing code", "off", "no_code", below=1.03)
    section.ratio("trace_on_vs_off", "tracing on / tracing off", "on", "off", below=2.0)
    # The per-round ratio, paired: both variants of a round ran within a second of each
    # other, so their quotient cancels slow drift that the medians of each still carry.
    paired = [off / base for off, base in zip(samples["off"], samples["no_code"], strict=True)]
    section.notes.append(
        "tracing off / no code, round by round: "
        + " ".join(f"{r:.3f}" for r in paired)
        + f" (median of the paired ratios: {statistics.median(paired):.3f})"
    )
    if not copy_is_current():
        section.notes.append(
            "Actor.serve has changed since benchmarks/echo.py copied it: the 'no tracing "
            "code' baseline is stale; update UntracedEcho.serve."
        )
    return section
