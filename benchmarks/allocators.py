"""What the kernel's allocators cost the host: the models in a plain loop, and through the actors.

Model level: the synchronous models (:class:`~hwsim.kernel.buddy.BuddyAllocator`, the kmalloc
model on the slab allocator, :class:`~hwsim.kernel.vmalloc.VmallocAllocator`) called from a
plain Python loop, with fresh 64 MiB x86_64 models for every repetition. The figure is µs per
alloc+free pair (the ``rate`` column: pairs per second); each has a budget it should stay
within, reported as the ratio "time / budget" with target <= 1.

Actor level: ``machine.kernel.alloc_pages``/``free_pages`` in a booted one-CPU machine, against
the runtime's request/reply floor (``actor.call(Ping)`` to an echo actor) measured in the same
run, block by block, so that each quotient compares blocks run milliseconds apart. Measured
with ``quantum=0`` (every kernel call sleeps until its completion cycle: a virtual-time jump
per call) and with a quantum so large that the CPU never has to wait for global time; plus
``alloc_pages_bulk`` (one round trip for many pages) as µs per page.

The kmalloc figures need the kmalloc model (``hwsim.kernel.kmalloc``) and, through the
actors, ``machine.kernel.kmalloc``; both are looked up at run time and reported as "not
available yet" while missing.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from functools import partial
from itertools import islice
from time import perf_counter
from typing import TypeVar

import attrs
import trio

import hwsim
from hwsim.devices.ram import RamModel
from hwsim.kernel.buddy import BuddyAllocator
from hwsim.kernel.kmalloc import Kmalloc
from hwsim.kernel.layout import Layout, layout_for
from hwsim.kernel.pagetable import KernelPageTable
from hwsim.kernel.slab import SlabAllocator
from hwsim.kernel.vmalloc import VmallocAllocator

from .echo import Echo, Ping
from .harness import Figure, Ratio, Sample, Section, Settings, interleave

T = TypeVar("T")

RAM = 64 << 20
ARCH = "x86_64"
SEED = 2024

WORKING_SET = 64  # live blocks/objects of the mixed workloads
MAX_MIXED_ORDER = 4  # buddy mixed: orders 0..4
KMALLOC_MIN, KMALLOC_MAX = 8, 8192  # kmalloc mixed: sizes log-uniform in 8..8192 bytes
VMALLOC_SIZE = 64 << 10
MODEL_BLOCK = 1_000  # alloc+free pairs timed as one block (model level)
VMALLOC_BLOCK = 100

CALL_BLOCK = 250  # alloc+free pairs per block through the actors (500 calls)
ECHO_BLOCK = 500  # actor.call round trips per block
BULK = 64  # pages per alloc_pages_bulk call
BULK_BLOCK = 16  # bulk calls per block (1024 pages)
BIG_QUANTUM = 10**9  # cycles: the CPU never waits for global time in these runs

# Model-level budgets in µs per alloc+free pair, by figure key (1e6 / the target rate).
BUDGETS = {
    "buddy_order0": 1e6 / 500_000,
    "buddy_mixed": 1e6 / 300_000,
    "kmalloc_mixed": 1e6 / 400_000,
    "vmalloc_64k": 1e6 / 20_000,
}
CALL_TARGET = 1.5  # kernel call / actor.call floor


# ---------------------------------------------------------------------- model level


@attrs.frozen
class Models:
    """One fresh machine's worth of allocator models, wired as ``hwsim.boot`` wires them."""

    ram: RamModel
    buddy: BuddyAllocator
    layout: Layout
    pagetable: KernelPageTable
    vmalloc: VmallocAllocator


def fresh_models() -> Models:
    ram = RamModel(size=RAM)
    buddy = BuddyAllocator(RAM >> hwsim.PAGE_SHIFT, ARCH, nr_cpus=1)
    layout = layout_for(ARCH, RAM)
    pagetable = KernelPageTable(buddy, ram, layout)
    return Models(ram, buddy, layout, pagetable, VmallocAllocator(buddy, pagetable, layout, ram))


def build_kmalloc(models: Models) -> Kmalloc:
    """The kmalloc model (on its own SLUB allocator) over fresh models."""
    slabs = SlabAllocator(models.buddy, models.ram, models.layout, 1)
    return Kmalloc(slabs, models.buddy, models.ram, models.layout)


def per_pair(block: Callable[[int], None], pairs: int, size: int) -> float:
    """One untimed block, then ``pairs`` in timed blocks of ``size``: median seconds per pair."""
    block(size)
    times = []
    for _ in range(max(1, pairs // size)):
        start = perf_counter()
        block(size)
        times.append(perf_counter() - start)
    return statistics.median(times) / size


def schedule(choose: Callable[[random.Random], T], count: int) -> list[tuple[int, T]]:
    """A seeded list of (slot of the working set to replace, what to allocate in its place).

    Made before the clock starts, so that the random number generator is not timed.
    """
    rng = random.Random(SEED)
    return [(rng.randrange(WORKING_SET), choose(rng)) for _ in range(count)]


def buddy_order0(pairs: int) -> float:
    """``free_pages(alloc_pages(0), 0)``: the per-CPU list fast path."""
    buddy = fresh_models().buddy
    alloc, free = buddy.alloc_pages, buddy.free_pages

    def block(n: int) -> None:
        for _ in range(n):
            free(alloc(0), 0)

    return per_pair(block, pairs, MODEL_BLOCK)


def buddy_mixed(pairs: int) -> float:
    """64 live blocks of orders 0..4; each step frees a random one and allocates a new one."""
    buddy = fresh_models().buddy
    alloc, free = buddy.alloc_pages, buddy.free_pages
    plan = iter(schedule(random_order, WORKING_SET + pairs + MODEL_BLOCK))
    orders = [order for _, order in islice(plan, WORKING_SET)]
    pfns = [alloc(order) for order in orders]

    def block(n: int) -> None:
        for slot, order in islice(plan, n):
            free(pfns[slot], orders[slot])
            pfns[slot] = alloc(order)
            orders[slot] = order

    return per_pair(block, pairs, MODEL_BLOCK)


def random_order(rng: random.Random) -> int:
    return rng.randrange(MAX_MIXED_ORDER + 1)


def kmalloc_size(rng: random.Random) -> int:
    """Log-uniform in KMALLOC_MIN..KMALLOC_MAX: every kmalloc cache gets its share."""
    return min(KMALLOC_MAX, int(KMALLOC_MIN * (KMALLOC_MAX / KMALLOC_MIN) ** rng.random()))


def kmalloc_mixed(build: Callable[[Models], Kmalloc], pairs: int) -> float:
    """64 live objects of 8..8192 bytes; each step kfrees a random one and kmallocs anew."""
    km = build(fresh_models())
    kmalloc, kfree = km.kmalloc, km.kfree
    plan = iter(schedule(kmalloc_size, WORKING_SET + pairs + MODEL_BLOCK))
    addrs = [kmalloc(size) for _, size in islice(plan, WORKING_SET)]

    def block(n: int) -> None:
        for slot, size in islice(plan, n):
            kfree(addrs[slot])
            addrs[slot] = kmalloc(size)

    return per_pair(block, pairs, MODEL_BLOCK)


def vmalloc_64k(pairs: int) -> float:
    """``vfree(vmalloc(64 KiB))``: 16 pages from the buddy allocator, mapped and unmapped."""
    vm = fresh_models().vmalloc
    vmalloc, vfree = vm.vmalloc, vm.vfree

    def block(n: int) -> None:
        for _ in range(n):
            vfree(vmalloc(VMALLOC_SIZE))

    return per_pair(block, pairs, VMALLOC_BLOCK)


def model_level(settings: Settings, section: Section) -> None:
    pairs = settings.alloc_pairs
    variants: dict[str, tuple[str, Sample]] = {
        "buddy_order0": (
            "buddy alloc_pages(0) + free_pages",
            partial(buddy_order0, pairs),
        ),
        "buddy_mixed": (
            f"buddy orders 0..{MAX_MIXED_ORDER}, {WORKING_SET} live, free random + alloc",
            partial(buddy_mixed, pairs),
        ),
    }
    variants["kmalloc_mixed"] = (
        f"kmalloc {KMALLOC_MIN}..{KMALLOC_MAX} B, {WORKING_SET} live, free random + alloc",
        partial(kmalloc_mixed, build_kmalloc, pairs),
    )
    variants["vmalloc_64k"] = (
        "vmalloc(64 KiB) + vfree",
        partial(vmalloc_64k, settings.vmalloc_pairs),
    )
    samples = interleave({key: run for key, (_, run) in variants.items()}, settings.alloc_rounds)
    for key, (label, _) in variants.items():
        section.figures.append(
            Figure.of(key, f"model: {label}", samples[key], "µs/alloc+free", 1e6)
        )
    for key in variants:
        budget = BUDGETS[key]
        fig = section.figure(key)
        section.ratios.append(
            Ratio(
                f"{key}_vs_budget",
                f"model {key}: time / {budget:.3g} µs budget (>= {1e6 / budget / 1e3:g}k pairs/s)",
                fig.value / budget,
                below=1.0,
                inclusive=True,
            )
        )


# ---------------------------------------------------------------------- through the actors


async def actor_blocks(quantum: int, blocks: int) -> dict[str, list[float]]:
    """One machine, one echo actor; ``blocks`` rounds of one block of every variant.

    Returns host seconds per call (per page for the bulk path), one entry per block.
    """
    async with (
        hwsim.boot(hwsim.MachineConfig(cpus=1, quantum=quantum)) as m,
        trio.open_nursery() as nursery,
    ):
        echo = Echo("echo")
        await nursery.start(echo.serve, name="echo")
        kernel = m.kernel
        buddy = kernel.buddy_model

        async def echo_calls() -> float:
            at = hwsim.current_cycle()
            start = perf_counter()
            for i in range(ECHO_BLOCK):
                await echo.call(Ping(i), at)
            return (perf_counter() - start) / ECHO_BLOCK

        async def page_calls() -> float:
            alloc, free = kernel.alloc_pages, kernel.free_pages
            start = perf_counter()
            for _ in range(CALL_BLOCK):
                await free(await alloc(0), 0)
            return (perf_counter() - start) / (2 * CALL_BLOCK)

        async def bulk_calls() -> float:
            bulk = kernel.alloc_pages_bulk
            got: list[int] = []
            start = perf_counter()
            for _ in range(BULK_BLOCK):
                got += await bulk(BULK)
            elapsed = perf_counter() - start
            for pfn in got:  # untimed; straight into the model (the actor is idle)
                buddy.free_pages(pfn, 0, 0)
            return elapsed / len(got)

        variants = {"echo": echo_calls, "pages": page_calls, "bulk": bulk_calls}
        sizes = [size for _, size in schedule(kmalloc_size, CALL_BLOCK)]

        async def kmalloc_calls() -> float:
            start = perf_counter()
            for size in sizes:
                await kernel.kfree(await kernel.kmalloc(size))
            return (perf_counter() - start) / (2 * CALL_BLOCK)

        variants["kmalloc"] = kmalloc_calls

        keys = list(variants)
        for key in keys:  # warm up
            await variants[key]()
        times: dict[str, list[float]] = {key: [] for key in keys}
        for b in range(blocks):
            shift = b % len(keys)
            for key in keys[shift:] + keys[:shift]:
                times[key].append(await variants[key]())
        nursery.cancel_scope.cancel()
    return times


QUANTA = {"q0": 0, "qbig": BIG_QUANTUM}
QUANTUM_LABEL = {"q0": "quantum=0", "qbig": "quantum=10^9"}
CALL_LABELS = {
    "echo": ("await actor.call(Ping) floor (echo, same run)", "µs/call"),
    "pages": ("await kernel.alloc_pages(0) / free_pages", "µs/call"),
    "bulk": (f"await kernel.alloc_pages_bulk({BULK})", "µs/page"),
    "kmalloc": (
        f"await kernel.kmalloc({KMALLOC_MIN}..{KMALLOC_MAX}) / kfree",
        "µs/call",
    ),
}


def actor_level(settings: Settings, section: Section) -> None:
    times: dict[str, dict[str, list[float]]] = {q: {} for q in QUANTA}
    for r in range(settings.alloc_runs):
        order = list(QUANTA) if r % 2 == 0 else list(reversed(QUANTA))
        for q in order:
            for key, block_times in hwsim.run(
                actor_blocks, QUANTA[q], settings.alloc_blocks
            ).items():
                times[q].setdefault(key, []).extend(block_times)
    for q, by_key in times.items():
        for key, (label, unit) in CALL_LABELS.items():
            if key in by_key:
                section.figures.append(
                    Figure.of(f"{key}_{q}", f"{label}, {QUANTUM_LABEL[q]}", by_key[key], unit, 1e6)
                )
    for q in QUANTA:
        section.ratio(
            f"pages_call_vs_floor_{q}",
            f"alloc_pages/free_pages call / actor.call floor, {QUANTUM_LABEL[q]}",
            f"pages_{q}",
            f"echo_{q}",
            below=CALL_TARGET,
            inclusive=True,
        )
    for q in QUANTA:
        section.ratio(
            f"bulk_page_vs_call_{q}",
            f"alloc_pages_bulk({BULK}) per page / alloc_pages call, {QUANTUM_LABEL[q]}",
            f"bulk_{q}",
            f"pages_{q}",
        )
    for q in QUANTA:
        section.ratio(
            f"kmalloc_call_vs_floor_{q}",
            f"kmalloc/kfree call / actor.call floor, {QUANTUM_LABEL[q]}",
            f"kmalloc_{q}",
            f"echo_{q}",
        )
    section.notes.append(
        "quantum=0: every kernel call sleeps until its completion cycle (a virtual-time jump "
        "through trio's run loop per call), which the echo floor does not; the 1.5x target is "
        "about the quantum=10^9 configuration (see benchmarks/README.md)"
    )


def allocators(settings: Settings) -> Section:
    """The allocators' throughput as models, and the kernel API's cost through the actors."""
    section = Section(
        f"Allocators (model: {settings.alloc_rounds} rounds x {settings.alloc_pairs:,} pairs, "
        f"fresh 64 MiB models; actors: {settings.alloc_runs} runs x {settings.alloc_blocks} "
        "interleaved blocks per quantum)"
    )
    model_level(settings, section)
    actor_level(settings, section)
    return section
