"""Request/reply on raw trio, on hwsim's actor runtime, and what tracing costs.

Every variant does the same thing: a client task sends ``Ping(i)`` to a server task and
waits for ``i + 1``, one request at a time. A repetition is a fresh run: start the server,
warm up, time the round trips in blocks of :data:`~benchmarks.harness.BLOCK`, cancel; it
reports the median block (a block the host preempted does not count). The run is either
plain ``trio.run`` or ``hwsim.run`` (the cycle clock, the seeded scheduler and the deadlock
watchdog), so that the cost of hwsim's runtime can be told apart from the cost of running
under its conditions.

The raw trio servers are written as cheaply as the pattern allows (the reply goes with
``send_nowait`` on a fresh channel of capacity 1, which never blocks), so that the
comparison favours raw trio, not hwsim.

Tracing is measured differently, because its target (off costs < 3 %) is below the noise of
separate runs: the three variants run as three actors in one run, and the client alternates
between them block by block, so that each pair of blocks compared ran a few milliseconds
apart.
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
from .harness import BLOCK, WARMUP, Figure, Sample, Section, Settings, interleave

try:
    from .peers import simpy_event_sample, simpy_stores_sample
except ImportError:  # SimPy is in the optional "bench" extra: pip install -e .[bench]
    HAVE_SIMPY = False
else:
    HAVE_SIMPY = True

# How a repetition is run: trio.run or hwsim.run (both take the async function first).
Runner = Callable[..., Any]

# Does ``count`` round trips.
RoundTrips = Callable[[int], Awaitable[None]]

# (request, reply channel) as the raw channel server receives it.
ChannelRequest = tuple[Ping, trio.MemorySendChannel[int]]


class Slot:
    """Where the raw Event server leaves its reply before setting the event."""

    __slots__ = ("event", "value")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.value = 0


async def per_round_trip(round_trips: RoundTrips, n: int) -> float:
    """Warm up, time ``n`` round trips in blocks; the median block's seconds per round trip."""
    await round_trips(WARMUP)
    times = []
    for _ in range(max(1, n // BLOCK)):
        start = perf_counter()
        await round_trips(BLOCK)
        times.append(perf_counter() - start)
    return statistics.median(times) / BLOCK


# ---------------------------------------------------------------------- raw trio


async def channel_server(requests: trio.MemoryReceiveChannel[ChannelRequest]) -> None:
    async for msg, reply in requests:
        reply.send_nowait(msg.n + 1)


async def raw_channel_client(n: int) -> float:
    """Round trips with a fresh reply channel per request; returns seconds per round trip."""
    send, receive = trio.open_memory_channel[ChannelRequest](1)

    async def round_trips(count: int) -> None:
        for i in range(count):
            reply_send, reply_receive = trio.open_memory_channel[int](1)
            await send.send((Ping(i), reply_send))
            await reply_receive.receive()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(channel_server, receive, name="server")
        result = await per_round_trip(round_trips, n)
        nursery.cancel_scope.cancel()
    return result


async def event_server(requests: trio.MemoryReceiveChannel[tuple[Ping, Slot]]) -> None:
    async for msg, slot in requests:
        slot.value = msg.n + 1
        slot.event.set()


async def raw_event_client(n: int) -> float:
    """Round trips with a per-request Event and value slot; returns seconds per round trip."""
    send, receive = trio.open_memory_channel[tuple[Ping, Slot]](1)

    async def round_trips(count: int) -> None:
        for i in range(count):
            slot = Slot()
            await send.send((Ping(i), slot))
            await slot.event.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(event_server, receive, name="server")
        result = await per_round_trip(round_trips, n)
        nursery.cancel_scope.cancel()
    return result


# ---------------------------------------------------------------------- hwsim


def calls(actor: hwsim.Actor) -> RoundTrips:
    """Round trips through ``actor.call``, as a user's code would write them."""

    async def round_trips(count: int) -> None:
        at = hwsim.current_cycle()
        for i in range(count):
            await actor.call(Ping(i), at)

    return round_trips


async def actor_client(make: Callable[[], hwsim.Actor], n: int) -> float:
    """Round trips to a fresh actor; returns seconds per round trip."""
    actor = make()
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.serve, name="echo")
        result = await per_round_trip(calls(actor), n)
        nursery.cancel_scope.cancel()
    return result


def echo() -> hwsim.Actor:
    return Echo("echo")


def sample(run: Runner, client: Callable[..., Awaitable[float]], *args: Any) -> Sample:
    """A repetition: ``run(client, *args)``."""
    return partial(run, client, *args)


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
    }
    if HAVE_SIMPY:
        variants["simpy_stores"] = ("SimPy, two Stores", partial(simpy_stores_sample, n))
        variants["simpy_event"] = (
            "SimPy, Store + Event per request",
            partial(simpy_event_sample, n),
        )
    samples = interleave({key: run for key, (_, run) in variants.items()}, settings.rounds)
    section = Section(
        f"Request/reply ({settings.rounds} rounds x {n:,} round trips per variant, "
        "each a fresh run)"
    )
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
        "hwsim actor under hwsim.run / under trio.run",
        "hwsim",
        "hwsim_trio",
    )
    if HAVE_SIMPY:
        section.ratio("hwsim_vs_simpy_stores", "hwsim / SimPy two Stores", "hwsim", "simpy_stores")
        section.ratio("hwsim_vs_simpy_event", "hwsim / SimPy Store + Event", "hwsim", "simpy_event")
    else:
        section.notes.append("SimPy is not installed (pip install -e .[bench]): no SimPy figures")
    return section


# ---------------------------------------------------------------------- tracing

TRACING = {
    "no_code": "no tracing code (Actor.serve copy)",
    "off": "tracer=None (off)",
    "on": "tracer=hwsim.Tracer() (on)",
}


async def tracing_blocks(blocks: int) -> dict[str, list[float]]:
    """One run, three actors; ``blocks`` rounds of one block each; seconds per round trip."""
    actors: dict[str, hwsim.Actor] = {
        "no_code": UntracedEcho("no_code"),
        "off": Echo("off"),
        "on": Echo("on", tracer=hwsim.Tracer()),
    }
    keys = list(actors)
    times: dict[str, list[float]] = {key: [] for key in keys}
    async with trio.open_nursery() as nursery:
        for actor in actors.values():
            await nursery.start(actor.serve, name=actor.name)
        round_trips = {key: calls(actor) for key, actor in actors.items()}
        for key in keys:
            await round_trips[key](WARMUP)
        for b in range(blocks):
            shift = b % len(keys)
            for key in keys[shift:] + keys[:shift]:
                start = perf_counter()
                await round_trips[key](BLOCK)
                times[key].append((perf_counter() - start) / BLOCK)
                tracer = actors[key].tracer
                if tracer is not None:
                    # Keep the record list (and the GC's work) from growing across blocks.
                    tracer.records.clear()
        nursery.cancel_scope.cancel()
    return times


def tracing(settings: Settings) -> Section:
    """Figure 4: what tracing costs, off and on, against an actor with no tracing code."""
    times: dict[str, list[float]] = {key: [] for key in TRACING}
    for _ in range(settings.trace_runs):
        for key, block_times in hwsim.run(tracing_blocks, settings.trace_blocks).items():
            times[key] += block_times
    blocks = len(times["off"])
    section = Section(
        f"Tracing ({blocks:,} rounds x {BLOCK} round trips per variant, interleaved, "
        f"in {settings.trace_runs} hwsim.run calls)"
    )
    for key, label in TRACING.items():
        section.figures.append(Figure.of(key, label, times[key], "µs/round trip", 1e6))
    section.ratio(
        "trace_off_vs_no_code", "tracing off / no tracing code", "off", "no_code", below=1.03
    )
    section.ratio("trace_on_vs_off", "tracing on / tracing off", "on", "off", below=2.0)
    if not copy_is_current():
        section.notes.append(
            "Actor.serve has changed since benchmarks/echo.py copied it: the 'no tracing "
            "code' baseline is stale; update UntracedEcho.serve."
        )
    return section
