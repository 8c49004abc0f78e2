"""DMA transfers and completion interrupts: what they cost the host (issue 5).

Throughput. Every repetition boots a fresh ``MachineConfig(cpus=1)`` (64 MiB x86_64, DMA
defaults: 4 channels of 8 bytes a cycle, non-coherent, no IOMMU), ``kmalloc``s two buffers
of the transfer size (physically contiguous; 4 MiB is an order-10 block), fills the source
with ``cpu.poke``, maps both with ``dma_map_single`` (bus address == physical address:
64 MiB is below the 32-bit mask, so no bounce) and times MEM_TO_MEM copies, one at a time,
in three variants:

- full path: ``handle = await m.dma.memcpy(dst, src, size)`` then ``await handle.wait()``: a
  message to the controller, the model's work, the timer firing at the completion cycle
  (a clock jump), the handle's event set and the completion interrupt raised (a message to
  the interrupt controller; no handler is registered in this variant);
- model alone: ``m.dma.model.memcpy(dst, src, size, at)``, the controller's model called
  directly, each copy issued when the previous one completes: checks, planning, the byte
  copy and the channel booking, no trio;
- byte copy alone: ``hierarchy.dma_write(dst, hierarchy.dma_read(src, size))``, the functional
  part of the model (RAM's sparse numpy pages, copied page by page).

The three are interleaved round by round (fresh runs), so model / full and copy / full are
paired ratios: the share of host time the model and the byte copy take. The throughput is
the full path's simulated bytes moved per host second.

Interrupt round trip. One run boots the same machine, registers
``await m.kernel.request_irq(m.dma.irq, handler)`` and does 64-byte copies: submit, the
controller completes, raises its line, the interrupt controller delivers to CPU 0
(``LatencyConfig.interrupt`` cycles later), the handler runs on the CPU and sets a
``trio.Event`` the submitting task awaits. Its peers do the same at the same virtual
cycles: raw trio (a client and a device task under ``hwsim.run``: a request through a
memory channel, two sleeps for the transfer and the interrupt latency, an Event set), and
SimPy (a device process that takes the request from a Store, waits a timeout for the
transfer, then a second timeout whose callback succeeds the client's Event).

The issue gives no targets: every ratio here is for information. The host's minor page
faults per transfer are reported with the throughput, because at 4 MiB the model's
temporaries (about 17 MiB a transfer) cost more than the copy itself whenever the host's
allocator hands them fresh pages (see benchmarks/README.md).
"""

from __future__ import annotations

import resource
import statistics
from collections.abc import Awaitable, Callable
from functools import partial
from time import perf_counter
from typing import Any

import attrs
import trio

import hwsim

from .harness import Figure, Sample, Section, Settings, interleave
from .runtime import per_round_trip

try:
    import simpy

    from .peers import per_round_trip as simpy_per_round_trip
except ImportError:  # SimPy is in the optional "bench" extra: pip install -e .[bench]
    HAVE_SIMPY = False
else:
    HAVE_SIMPY = True

SIZES = (4 << 10, 64 << 10, 1 << 20, 4 << 20)
IRQ_BYTES = 64
CONFIG = hwsim.MachineConfig(cpus=1)
# Timed blocks per repetition of a throughput variant (the median block is the figure).
BLOCKS = 5

# Does ``count`` transfers, one after the other.
Transfers = Callable[[int], Awaitable[None]]


@attrs.frozen
class Buffers:
    """Two kmalloc buffers of one size: virtual addresses and the bus addresses mapped."""

    src: int
    dst: int
    src_bus: int
    dst_bus: int
    pattern: bytes


@attrs.frozen
class Run:
    """One repetition: host seconds and virtual cycles per operation, the host's minor page
    faults per operation, and whether the bytes arrived (the full path checks the
    destination's last line after its transfers)."""

    seconds: float
    cycles: float
    faults: float = 0.0
    copied: bool = True


def minor_faults() -> int:
    """The host's minor page faults in this process so far (fresh memory touched)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def format_size(size: int) -> str:
    """``4 KiB``, ``4 MiB``: the sizes as the table shows them."""
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"


def pattern(size: int) -> bytes:
    return (bytes(range(256)) * (-(-size // 256)))[:size]


async def buffers(m: hwsim.Machine, size: int) -> Buffers:
    src = await m.kernel.kmalloc(size)
    dst = await m.kernel.kmalloc(size)
    data = pattern(size)
    m.cpus[0].poke(src, data)  # real pages in RAM, caches cold
    src_bus = await m.kernel.dma_map_single(m.dma, src, size, hwsim.DMA_TO_DEVICE)
    dst_bus = await m.kernel.dma_map_single(m.dma, dst, size, hwsim.DMA_FROM_DEVICE)
    return Buffers(src, dst, src_bus, dst_bus, data)


# ---------------------------------------------------------------------- throughput


def full_path(m: hwsim.Machine, b: Buffers, size: int) -> Transfers:
    dma = m.dma

    async def transfers(count: int) -> None:
        for _ in range(count):
            handle = await dma.memcpy(b.dst_bus, b.src_bus, size)
            await handle.wait()

    return transfers


def model_alone(m: hwsim.Machine, b: Buffers, size: int) -> Transfers:
    model = m.dma.model
    at = m.now

    async def transfers(count: int) -> None:
        nonlocal at
        for _ in range(count):
            at = model.memcpy(b.dst_bus, b.src_bus, size, at).done

    return transfers


def copy_alone(m: hwsim.Machine, b: Buffers, size: int) -> Transfers:
    h = m.hierarchy
    if m.config.dma_coherent:
        read, write = h.dma_read_coherent, h.dma_write_coherent
    else:
        read, write = h.dma_read, h.dma_write

    async def transfers(count: int) -> None:
        for _ in range(count):
            write(b.dst_bus, read(b.src_bus, size))

    return transfers


# (machine, buffers, size) -> the transfer loop
Variant = Callable[[hwsim.Machine, Buffers, int], Transfers]


async def per_transfer(variant: Variant, size: int, n: int) -> Run:
    """Boot, map two buffers, warm up, time ``n`` transfers in blocks; the median block."""
    async with hwsim.boot(CONFIG) as m:
        b = await buffers(m, size)
        transfers = variant(m, b, size)
        await transfers(max(1, n // 10))  # the destination's RAM pages made, code warm
        block = max(1, n // BLOCKS)
        times = []
        start_cycle, start_faults = m.now, minor_faults()
        for _ in range(max(1, n // block)):
            start = perf_counter()
            await transfers(block)
            times.append(perf_counter() - start)
        done = len(times) * block
        cycles = (m.now - start_cycle) / done
        faults = (minor_faults() - start_faults) / done
        copied = True
        if variant is full_path:
            await m.kernel.dma_unmap_single(m.dma, b.dst_bus, size, hwsim.DMA_FROM_DEVICE)
            copied = m.cpus[0].peek(b.dst + size - 64, 64) == b.pattern[-64:]
    return Run(statistics.median(times) / block, cycles, faults, copied)


# ---------------------------------------------------------------------- interrupt round trip


class Completion:
    """Where the interrupt handler finds the event the submitting task waits on."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = trio.Event()


async def hwsim_irq(n: int) -> Run:
    """64-byte copies, each completion signalled by the DMA interrupt's handler."""
    async with hwsim.boot(CONFIG) as m:
        b = await buffers(m, IRQ_BYTES)
        completion = Completion()

        async def handler(irq: int) -> None:
            completion.event.set()

        await m.kernel.request_irq(m.dma.irq, handler, name="bench-dma")
        dma = m.dma
        count = 0

        async def round_trips(k: int) -> None:
            nonlocal count
            count += k
            for _ in range(k):
                done = completion.event = trio.Event()
                await dma.memcpy(b.dst_bus, b.src_bus, IRQ_BYTES)
                await done.wait()

        start_cycle = m.now
        seconds = await per_round_trip(round_trips, n)
        return Run(seconds, (m.now - start_cycle) / count)


async def trio_irq(transfer: int, latency: int, n: int) -> Run:
    """Raw trio: a device task sleeps for the transfer and the interrupt, then sets the
    client's Event (under hwsim.run: the same virtual cycles, the same two clock jumps)."""
    send, receive = trio.open_memory_channel[trio.Event](1)
    count = 0

    async def device() -> None:
        async for done in receive:
            await trio.sleep(transfer)  # the copy
            await trio.sleep(latency)  # the interrupt on its way to the CPU
            done.set()  # the handler

    async def round_trips(k: int) -> None:
        nonlocal count
        count += k
        for _ in range(k):
            done = trio.Event()
            await send.send(done)
            await done.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(device, name="device")
        start_cycle = hwsim.current_cycle()
        seconds = await per_round_trip(round_trips, n)
        cycles = (hwsim.current_cycle() - start_cycle) / count
        nursery.cancel_scope.cancel()
    return Run(seconds, cycles)


def simpy_irq(transfer: int, latency: int, n: int) -> Run:
    """SimPy: a device process, a timeout for the copy, a second one whose callback (the
    handler) succeeds the client's Event."""
    env = simpy.Environment()
    requests = simpy.Store(env)
    count = 0

    def handler(done: simpy.Event, irq: simpy.Event) -> None:
        done.succeed()

    def device() -> Any:
        while True:
            done = yield requests.get()
            yield env.timeout(transfer)  # the copy
            env.timeout(latency).callbacks.append(partial(handler, done))  # the interrupt

    def client(k: int) -> Any:
        nonlocal count
        count += k
        for _ in range(k):
            done = env.event()
            requests.put(done)
            yield done

    env.process(device())
    seconds = simpy_per_round_trip(env, client, n)
    return Run(seconds, env.now / count)


# ---------------------------------------------------------------------- the section

VARIANTS: dict[str, tuple[str, Variant]] = {
    "full": ("full path: await dma.memcpy, await handle.wait()", full_path),
    "model": ("model alone: dma.model.memcpy (no trio)", model_alone),
    "copy": ("byte copy alone: dma_read + dma_write", copy_alone),
}


def measured(run: Callable[[], Run], runs: list[Run]) -> Sample:
    """A repetition that keeps its whole :class:`Run` and gives interleave the seconds."""

    def sample() -> float:
        result = run()
        runs.append(result)
        return result.seconds

    return sample


def irq_cycles() -> tuple[int, int]:
    """The cycles a 64-byte copy takes and the interrupt's latency, from one transfer."""

    async def probe() -> int:
        async with hwsim.boot(CONFIG) as m:
            b = await buffers(m, IRQ_BYTES)
            handle = await m.dma.memcpy(b.dst_bus, b.src_bus, IRQ_BYTES)
            record = await handle.wait()
            return record.done - record.start

    return hwsim.run(probe), CONFIG.latency.interrupt


def dma(settings: Settings) -> Section:
    """DMA throughput for 4 KiB..4 MiB copies, and one completion interrupt round trip."""
    rounds, trips = settings.dma_rounds, settings.irq_round_trips
    runs: dict[str, list[Run]] = {}
    variants: dict[str, Sample] = {}
    for size, n in zip(SIZES, settings.dma_transfers, strict=True):
        for name, (_, variant) in VARIANTS.items():
            key = f"{name}_{size}"
            runs[key] = []
            variants[key] = measured(partial(hwsim.run, per_transfer, variant, size, n), runs[key])
    transfer, latency = irq_cycles()
    irq: dict[str, tuple[str, Callable[[], Run]]] = {
        "irq_hwsim": (
            f"IRQ round trip: hwsim ({IRQ_BYTES} B memcpy, IRQ, handler on CPU 0)",
            partial(hwsim.run, hwsim_irq, trips),
        ),
        "irq_trio": (
            "IRQ round trip: raw trio, client + device task (hwsim.run)",
            partial(hwsim.run, trio_irq, transfer, latency, trips),
        ),
    }
    if HAVE_SIMPY:
        irq["irq_simpy"] = (
            "IRQ round trip: SimPy, Store + Event, two timeouts",
            partial(simpy_irq, transfer, latency, trips),
        )
    for key, (_, run) in irq.items():
        runs[key] = []
        variants[key] = measured(run, runs[key])
    samples = interleave(variants, rounds)

    counts = "/".join(str(n) for n in settings.dma_transfers)
    section = Section(
        f"DMA (1-CPU 64 MiB machine; memcpy between two kmalloc buffers, {counts} transfers "
        f"per repetition; {trips:,} interrupt round trips; {rounds} rounds, each a fresh run)"
    )
    for size in SIZES:
        tag = format_size(size)
        for name, (label, _) in VARIANTS.items():
            key = f"{name}_{size}"
            section.figures.append(
                Figure.of(f"dma_{key}", f"{tag}: {label}", samples[key], "µs/transfer", 1e6)
            )
        section.figures.append(
            Figure.of(
                f"dma_rate_{size}",
                f"{tag}: simulated MiB moved per host second (full path)",
                [size / s for s in samples[f"full_{size}"]],
                "MiB/host s",
                1 / (1 << 20),
            )
        )
        section.figures.append(
            Figure.of(
                f"dma_faults_{size}",
                f"{tag}: host page faults per transfer (full path)",
                [r.faults for r in runs[f"full_{size}"]],
                "faults/transfer",
                1,
            )
        )
        cycles = runs[f"full_{size}"][0].cycles
        section.figures.append(
            Figure.single(
                f"dma_cycles_{size}",
                f"{tag}: simulated cycles per transfer ({size / cycles:.1f} B/cycle)",
                cycles,
                "cycles/transfer",
            )
        )
    for key, (label, _) in irq.items():
        section.figures.append(Figure.of(f"dma_{key}", label, samples[key], "µs/round trip", 1e6))
    section.figures.append(
        Figure.single(
            "dma_irq_cycles",
            f"IRQ round trip: simulated cycles ({transfer} copy + {latency} IRQ)",
            runs["irq_hwsim"][0].cycles,
            "cycles/round trip",
        )
    )

    for size in SIZES:
        tag = format_size(size)
        section.ratio(
            f"dma_model_share_{size}",
            f"{tag}: model alone / full path",
            f"dma_model_{size}",
            f"dma_full_{size}",
        )
        section.ratio(
            f"dma_copy_share_{size}",
            f"{tag}: byte copy alone / full path",
            f"dma_copy_{size}",
            f"dma_full_{size}",
        )
    section.ratio(
        "dma_irq_vs_trio", "IRQ round trip: hwsim / raw trio", "dma_irq_hwsim", "dma_irq_trio"
    )
    if HAVE_SIMPY:
        section.ratio(
            "dma_irq_vs_simpy", "IRQ round trip: hwsim / SimPy", "dma_irq_hwsim", "dma_irq_simpy"
        )
    else:
        section.notes.append("SimPy is not installed (pip install -e .[bench]): no SimPy figures")
    section.notes.extend(notes(section, runs))
    return section


def notes(section: Section, runs: dict[str, list[Run]]) -> list[str]:
    """The full path's cost split, and anything that went wrong."""
    parts = []
    for size in SIZES:
        full, model, copy = (section.figure(f"dma_{name}_{size}").value for name in VARIANTS)
        parts.append(
            f"{format_size(size)} {full:,.0f} µs = copy {copy:,.0f} + rest of the model "
            f"{model - copy:,.0f} + runtime {full - model:,.0f}"
        )
    out = ["where the full path's host time goes (medians, µs): " + "; ".join(parts)]
    for size in SIZES:
        faults = section.figure(f"dma_faults_{size}").value
        if faults * 4096 >= size:  # fresh host memory every transfer: several times its size
            out.append(
                f"{format_size(size)}: {faults:,.0f} host page faults per transfer "
                f"({faults * 4096 / (1 << 20):.0f} MiB of fresh memory): the host's allocator "
                "gave the model's temporaries new pages every time; faulting them in costs more "
                "than the copy itself (see benchmarks/README.md)"
            )
    bad = [format_size(size) for size in SIZES if not all(r.copied for r in runs[f"full_{size}"])]
    if bad:
        out.append(f"the destination did not hold the source's bytes after the copy: {bad}")
    cycles = {key: runs[key][0].cycles for key in runs if key.startswith("irq_")}
    if len(set(cycles.values())) > 1:
        out.append(f"the round trip variants differ in virtual cycles: {cycles}")
    return out
