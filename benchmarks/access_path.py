"""What the memory-access models cost the host: TLB + page walks + L1 + L2 + RAM, batched.

The machine's CPUs do not go through these models yet (they still address physical memory),
so this benchmark drives the model pipeline directly, as a CPU's batched access path will:

    phys, xlat = mmu.translate_many(vaddrs, writes)          # TLB, walks on a miss
    lines = phys // 64 * 64
    hierarchy.access_lines(cpu, lines, writes)                # untimed: statistics only
    hierarchy.timed_access_lines(cpu, lines, writes, at)      # timed: latencies, RAM channel

on a 64 MiB x86_64 model stack built as ``hwsim.boot`` builds it (``RamModel``,
``BuddyAllocator``, ``layout_for``, ``KernelPageTable``, ``VmallocAllocator``, ``Kmalloc`` on a
``SlabAllocator``), with the config defaults for the TLB (64 entries, 4-way), the L1d (32 KiB,
8-way, 64 B lines) and the shared L2 (256 KiB, 8-way) in a ``CoherentHierarchy``. Traces are
cut into batches of ``BATCH`` accesses, one pipeline call each.

Three traces of 8-byte accesses:

- *direct map, sequential*: reads walking a 4 MiB ``kmalloc`` buffer (direct map, 2 MiB pages:
  the TLB hits, the caches stream: one L1 and L2 miss per 64-byte line);
- *vmalloc, sequential*: the same over a 4 MiB ``vmalloc`` buffer (4 KiB pages: a TLB miss and
  a four-level walk per page, 1024 pages against a 64-entry TLB);
- *random 64 KiB*: uniformly random 8-byte slots of a 64 KiB ``kmalloc`` buffer, one in four a
  write: TLB hits, L2 hits, about half L1 hits; and the translation's runs (consecutive
  accesses to one page) are one access long, so ``translate_many`` takes a Python step per
  access.

Against pycachesim (the cache simulator hwsim's caches are tested against) with the same L1
and L2 geometry, fed the same *physical* addresses (it has no TLB: it does less work):

- ``CacheSimulator.load(addr, length=8)`` / ``.store``, one Python call per access: the
  documented API, and the rate (about 1M accesses/s) the 2x target is about;
- ``Cache.backend.load(addr, 8)``: one call per access straight into its C extension,
  the cheapest per-access call pycachesim has (for information);
- ``backend.iterload(addrs, 8)`` (``loadstore`` with writes): the whole trace in one call.

Scaling: the full path (untimed and timed) on the vmalloc trace at growing trace lengths,
and the random trace on 1..8 CPUs (each its own TLB, MMU and L1 under the shared L2, batches
issued round-robin), every CPU on its own 64 KiB buffer (*private*) or all on one (*shared*:
MESI snoops and invalidations).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import partial
from time import perf_counter
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt

import hwsim
from hwsim.config import CacheConfig, LatencyConfig, TlbConfig
from hwsim.devices.cache import CacheModel
from hwsim.devices.coherence import CoherentHierarchy
from hwsim.devices.mmu import MmuModel
from hwsim.devices.paging import X86_64_4LEVEL
from hwsim.devices.ram import RamModel
from hwsim.devices.tlb import TlbModel
from hwsim.kernel.buddy import BuddyAllocator
from hwsim.kernel.kmalloc import Kmalloc
from hwsim.kernel.layout import layout_for
from hwsim.kernel.pagetable import KernelPageTable
from hwsim.kernel.slab import SlabAllocator
from hwsim.kernel.vmalloc import VmallocAllocator

from .harness import Figure, Ratio, Sample, Section, Settings, interleave

RAM = 64 << 20
ARCH = "x86_64"
SEED = 2024
MAX_CPUS = 8
CPU_COUNTS = (1, 2, 4, 8)

SIZE = 8  # bytes per access
LINE = 64
BATCH = 10_000  # accesses per pipeline call
CPU_BATCH = 1_000  # accesses per pipeline call in the CPU scaling (finer interleaving)
STREAM = 4 << 20  # the sequential traces' buffers
WORKING_SET = 64 << 10  # the random trace's buffer
WRITE_EVERY = 4  # the random trace: one access in four is a write

TARGET = 2.0  # untimed full path >= 2x pycachesim's per-call rate
LONG_LENGTH = 1_000_000  # longer scaling traces run once
LONG_BUDGET = 60.0  # seconds: a scaling length predicted to take longer is skipped

L1 = CacheConfig()  # 32 KiB, 8-way, 64 B, LRU, write-back
L2 = CacheConfig(size=256 << 10, ways=8, line=LINE)
LATENCY = LatencyConfig()

Addresses = npt.NDArray[np.uint64]
Writes = npt.NDArray[np.bool_]


# ---------------------------------------------------------------------- the models


@attrs.define
class Stack:
    """The kernel-side models, built once: RAM, the page table, the buffers traced.

    ``clock`` is the cycle the next timed run starts at: every timed run continues from the
    last one's completion, so that it never queues behind an earlier run's RAM bookings.
    """

    ram: RamModel
    cr3: int
    stream: int  # 4 MiB kmalloc buffer (direct map)
    vstream: int  # 4 MiB vmalloc buffer
    sets: list[int]  # MAX_CPUS 64 KiB kmalloc buffers
    clock: int = 0


def build_stack() -> Stack:
    ram = RamModel(size=RAM)
    buddy = BuddyAllocator(RAM >> hwsim.PAGE_SHIFT, ARCH, nr_cpus=1)
    layout = layout_for(ARCH, RAM)
    pagetable = KernelPageTable(buddy, ram, layout)
    vmalloc = VmallocAllocator(buddy, pagetable, layout, ram)
    km = Kmalloc(SlabAllocator(buddy, ram, layout, 1), buddy, ram, layout)
    return Stack(
        ram=ram,
        cr3=pagetable.cr3,
        stream=km.kmalloc(STREAM),
        vstream=vmalloc.vmalloc(STREAM),
        sets=[km.kmalloc(WORKING_SET) for _ in range(MAX_CPUS)],
    )


def new_mmu(stack: Stack) -> MmuModel:
    """A fresh TLB and MMU on the kernel page table, as ``scenarios/address_translation``
    makes one (no A/D updates: the page table keeps a shadow copy of its entries)."""
    mmu = MmuModel(
        stack.ram,
        TlbModel(TlbConfig()),
        mode=X86_64_4LEVEL,
        walk_latency_per_level=LATENCY.ram + -(-8 // LATENCY.ram_bytes_per_cycle),
        tlb_latency=LATENCY.tlb,
        set_accessed_dirty=False,
    )
    mmu.load_cr3(stack.cr3)
    return mmu


def new_hierarchy(stack: Stack, nr_cpus: int) -> CoherentHierarchy:
    """Fresh (cold) caches: one L1d per CPU over a shared L2."""
    ram = stack.ram
    l2 = CacheModel("l2", L2, next_level=None, ram=ram, latency=LATENCY.l2)
    l1s = [
        CacheModel(f"l1d{i}", L1, next_level=l2, ram=ram, latency=LATENCY.l1)
        for i in range(nr_cpus)
    ]
    return CoherentHierarchy(l1s, l2, ram)


# ---------------------------------------------------------------------- traces


@attrs.frozen
class Trace:
    vaddrs: Addresses
    writes: Writes

    def __len__(self) -> int:
        return len(self.vaddrs)


def sequential(base: int, n: int) -> Trace:
    offsets = (np.arange(n, dtype=np.uint64) * np.uint64(SIZE)) % np.uint64(STREAM)
    return Trace(np.uint64(base) + offsets, np.zeros(n, dtype=np.bool_))


def random_slots(base: int, n: int, seed: int) -> Trace:
    rng = np.random.default_rng(seed)
    slots = rng.integers(0, WORKING_SET // SIZE, n, dtype=np.uint64)
    return Trace(np.uint64(base) + slots * np.uint64(SIZE), rng.integers(0, WRITE_EVERY, n) == 0)


TRACES: dict[str, tuple[str, Callable[[Stack, int], Trace]]] = {
    "direct": (
        "direct map seq 4 MiB",
        lambda stack, n: sequential(stack.stream, n),
    ),
    "vmalloc": (
        "vmalloc seq 4 MiB",
        lambda stack, n: sequential(stack.vstream, n),
    ),
    "random": (
        f"random 64 KiB, 1/{WRITE_EVERY} writes",
        lambda stack, n: random_slots(stack.sets[0], n, SEED),
    ),
}


def physical(stack: Stack, trace: Trace) -> npt.NDArray[np.int64]:
    """The trace's physical addresses (set-up, untimed: the inputs of the cache-only runs)."""
    out: list[npt.NDArray[np.int64]] = []
    mmu = new_mmu(stack)
    for lo in range(0, len(trace), BATCH):
        out.append(
            mmu.translate_many(trace.vaddrs[lo : lo + BATCH], trace.writes[lo : lo + BATCH])[0]
        )
    return np.concatenate(out)


# ---------------------------------------------------------------------- hwsim pipeline


def translate_only(stack: Stack, trace: Trace) -> float:
    mmu = new_mmu(stack)
    translate = mmu.translate_many
    va, w = trace.vaddrs, trace.writes
    start = perf_counter()
    for lo in range(0, len(va), BATCH):
        translate(va[lo : lo + BATCH], w[lo : lo + BATCH])
    return (perf_counter() - start) / len(va)


def caches_only(stack: Stack, trace: Trace, lines: npt.NDArray[np.int64]) -> float:
    access = new_hierarchy(stack, 1).access_lines
    w = trace.writes
    start = perf_counter()
    for lo in range(0, len(w), BATCH):
        access(0, lines[lo : lo + BATCH], w[lo : lo + BATCH])
    return (perf_counter() - start) / len(w)


def full_untimed(stack: Stack, trace: Trace) -> float:
    translate = new_mmu(stack).translate_many
    access = new_hierarchy(stack, 1).access_lines
    va, w = trace.vaddrs, trace.writes
    start = perf_counter()
    for lo in range(0, len(va), BATCH):
        ws = w[lo : lo + BATCH]
        phys, _ = translate(va[lo : lo + BATCH], ws)
        access(0, phys // LINE * LINE, ws)
    return (perf_counter() - start) / len(va)


def full_timed(stack: Stack, trace: Trace) -> float:
    """The timed path: the chain of cache accesses from ``at``, the translation latencies
    added to the clock as one lump per batch (the walks are not booked on the RAM channel),
    and the RAM channel's calendar trimmed to the clock after every batch, as a machine in
    timing mode does."""
    translate = new_mmu(stack).translate_many
    timed = new_hierarchy(stack, 1).timed_access_lines
    forget = stack.ram.forget_before
    va, w = trace.vaddrs, trace.writes
    t = stack.clock
    start = perf_counter()
    for lo in range(0, len(va), BATCH):
        ws = w[lo : lo + BATCH]
        phys, xlat = translate(va[lo : lo + BATCH], ws)
        _, t = timed(0, phys // LINE * LINE, ws, t)
        t += int(xlat.sum())
        forget(t)
    elapsed = perf_counter() - start
    stack.clock = t
    return elapsed / len(va)


# ---------------------------------------------------------------------- pycachesim


def pycachesim_module() -> Any:
    """pycachesim (``cachesim``), or None. Imported at run time: an optional extra."""
    try:
        return importlib.import_module("cachesim")
    except ImportError:
        return None


def geometry(config: CacheConfig) -> tuple[int, int, int]:
    """pycachesim's ``sets, ways, cl_size`` for a hwsim cache."""
    return config.size // (config.ways * config.line), config.ways, config.line


def new_pycachesim(cachesim: Any) -> Any:
    """L1 over L2 over memory, the geometry and policies of the hwsim caches."""
    l2 = cachesim.Cache("L2", *geometry(L2), replacement_policy="LRU")
    l1 = cachesim.Cache("L1", *geometry(L1), replacement_policy="LRU", load_from=l2, store_to=l2)
    memory = cachesim.MainMemory()
    memory.load_to(l2)
    memory.store_from(l2)
    return cachesim.CacheSimulator(l1, memory)


def pycachesim_per_call(cachesim: Any, phys: list[int], writes: list[bool]) -> float:
    """``CacheSimulator.load(addr, length=8)`` (``store`` for a write), once per access."""
    sim = new_pycachesim(cachesim)
    load, store = sim.load, sim.store
    start = perf_counter()
    if any(writes):
        for addr, write in zip(phys, writes, strict=True):
            if write:
                store(addr, length=SIZE)
            else:
                load(addr, length=SIZE)
    else:
        for addr in phys:
            load(addr, length=SIZE)
    return (perf_counter() - start) / len(phys)


def pycachesim_backend(cachesim: Any, phys: list[int], writes: list[bool]) -> float:
    """``backend.load(addr, 8)`` (``store``): one call per access into the C extension."""
    backend = new_pycachesim(cachesim).first_level.backend
    load, store = backend.load, backend.store
    start = perf_counter()
    if any(writes):
        for addr, write in zip(phys, writes, strict=True):
            if write:
                store(addr, SIZE)
            else:
                load(addr, SIZE)
    else:
        for addr in phys:
            load(addr, SIZE)
    return (perf_counter() - start) / len(phys)


Pairs = list[tuple[tuple[int, ...], tuple[int, ...]]]


def pycachesim_batched(cachesim: Any, phys: list[int], pairs: Pairs | None) -> float:
    """The whole trace in one call: ``iterload`` (``loadstore`` when it has writes)."""
    backend = new_pycachesim(cachesim).first_level.backend
    start = perf_counter()
    if pairs is None:
        backend.iterload(phys, SIZE)
    else:
        backend.loadstore(pairs, SIZE)
    return (perf_counter() - start) / len(phys)


# ---------------------------------------------------------------------- comparison


VARIANTS = {
    "xlat": "translate_many only",
    "caches": "access_lines only (lines given)",
    "untimed": "full path, untimed",
    "timed": "full path, timed",
    "pcs_call": "pycachesim sim.load(addr, length=8) per access",
    "pcs_backend": "pycachesim backend.load(addr, 8) per access",
    "pcs_batched": "pycachesim iterload/loadstore, one call",
}


def comparison(settings: Settings, stack: Stack, section: Section) -> None:
    cachesim = pycachesim_module()
    if cachesim is None:
        section.notes.append("pycachesim not installed (pip install -e .[bench]): not compared")
    n = settings.path_accesses
    for key, (label, make) in TRACES.items():
        trace = make(stack, n)
        phys = physical(stack, trace)
        lines = phys // LINE * LINE
        variants: dict[str, Sample] = {
            "xlat": partial(translate_only, stack, trace),
            "caches": partial(caches_only, stack, trace, lines),
            "untimed": partial(full_untimed, stack, trace),
            "timed": partial(full_timed, stack, trace),
        }
        if cachesim is not None:
            plist, wlist = phys.tolist(), trace.writes.tolist()
            pairs: Pairs | None = None
            if any(wlist):
                pairs = [((), (a,)) if w else ((a,), ()) for a, w in zip(plist, wlist, strict=True)]
            variants["pcs_call"] = partial(pycachesim_per_call, cachesim, plist, wlist)
            variants["pcs_backend"] = partial(pycachesim_backend, cachesim, plist, wlist)
            variants["pcs_batched"] = partial(pycachesim_batched, cachesim, plist, pairs)
        samples = interleave(variants, settings.path_rounds)
        for name in variants:
            section.figures.append(
                Figure.of(
                    f"{key}_{name}", f"{label}: {VARIANTS[name]}", samples[name], "µs/access", 1e6
                )
            )
        if cachesim is None:
            continue
        # Time ratios: ours / pycachesim's per-call. <= 0.5 is at least twice its rate.
        section.ratio(
            f"{key}_untimed_vs_pycachesim_call",
            f"{label}: untimed / pycachesim per call (<= 0.5: >= 2x rate)",
            f"{key}_untimed",
            f"{key}_pcs_call",
            below=1 / TARGET,
            inclusive=True,
        )
        section.ratio(
            f"{key}_timed_vs_pycachesim_call",
            f"{label}: timed / pycachesim per call",
            f"{key}_timed",
            f"{key}_pcs_call",
        )
        section.ratio(
            f"{key}_untimed_vs_pycachesim_backend",
            f"{label}: untimed / pycachesim backend.load per call",
            f"{key}_untimed",
            f"{key}_pcs_backend",
        )


# ---------------------------------------------------------------------- scaling


def length_scaling(settings: Settings, stack: Stack, section: Section) -> None:
    """The full path on the vmalloc trace at each length. Lengths above LONG_LENGTH run once;
    a length whose predicted time (linear in the length, from the previous one) exceeds
    LONG_BUDGET is skipped with a note."""
    label, make = TRACES["vmalloc"]
    previous: tuple[int, float] | None = None  # (length, seconds per repetition)
    for n in settings.path_lengths:
        rounds = settings.path_scale_rounds if n <= LONG_LENGTH else 1
        if previous is not None:
            predicted = previous[1] * n / previous[0] * rounds
            if predicted > LONG_BUDGET:
                section.notes.append(
                    f"length {n:,}: skipped, predicted {predicted:.0f} s > {LONG_BUDGET:.0f} s"
                )
                continue
        trace = make(stack, n)
        started = perf_counter()
        samples = interleave(
            {
                "untimed": partial(full_untimed, stack, trace),
                "timed": partial(full_timed, stack, trace),
            },
            rounds,
        )
        previous = (n, (perf_counter() - started) / rounds)
        del trace
        for name in ("untimed", "timed"):
            section.figures.append(
                Figure.of(
                    f"length_{n}_{name}",
                    f"{label}, {n:,} accesses: full path, {name}",
                    samples[name],
                    "µs/access",
                    1e6,
                )
            )
    measured = {fig.key for fig in section.figures}
    lengths = [n for n in settings.path_lengths if f"length_{n}_untimed" in measured]
    if len(lengths) > 1:
        longest, shortest = lengths[-1], lengths[0]
        for name in ("untimed", "timed"):
            # Not paired: the lengths ran in separate rounds.
            section.ratios.append(
                Ratio(
                    f"length_{longest}_vs_{shortest}_{name}",
                    f"vmalloc seq, {name}: time per access at {longest:,} / at {shortest:,}",
                    section.figure(f"length_{longest}_{name}").value
                    / section.figure(f"length_{shortest}_{name}").value,
                )
            )


def cpus_run(stack: Stack, nr_cpus: int, shared: bool, timed: bool, total: int) -> float:
    """``nr_cpus`` CPUs run ``total // nr_cpus`` random accesses each, a batch of CPU_BATCH
    per CPU in turn; each CPU has its own clock (timed), the RAM calendar is trimmed to the
    earliest after every turn. Returns seconds per access."""
    per_cpu = total // nr_cpus
    traces = [
        random_slots(stack.sets[0 if shared else cpu], per_cpu, SEED + cpu)
        for cpu in range(nr_cpus)
    ]
    translates = [new_mmu(stack).translate_many for _ in range(nr_cpus)]
    h = new_hierarchy(stack, nr_cpus)
    access, timed_access, forget = h.access_lines, h.timed_access_lines, stack.ram.forget_before
    clocks = [stack.clock] * nr_cpus
    start = perf_counter()
    for lo in range(0, per_cpu, CPU_BATCH):
        for cpu in range(nr_cpus):
            trace = traces[cpu]
            ws = trace.writes[lo : lo + CPU_BATCH]
            phys, xlat = translates[cpu](trace.vaddrs[lo : lo + CPU_BATCH], ws)
            if timed:
                _, t = timed_access(cpu, phys // LINE * LINE, ws, clocks[cpu])
                clocks[cpu] = t + int(xlat.sum())
            else:
                access(cpu, phys // LINE * LINE, ws)
        if timed:
            forget(min(clocks))
    elapsed = perf_counter() - start
    stack.clock = max(clocks)
    return elapsed / (per_cpu * nr_cpus)


def cpu_scaling(settings: Settings, stack: Stack, section: Section) -> None:
    variants: dict[str, tuple[str, Sample]] = {}
    for shared in (False, True):
        for timed in (False, True):
            for nr in CPU_COUNTS:
                where = "shared" if shared else "private"
                kind = f"{'shared' if shared else 'private'}_{'timed' if timed else 'untimed'}"
                key = f"cpus_{nr}_{kind}"
                variants[key] = (
                    f"random 64 KiB {where}, {nr} CPU{'s' if nr > 1 else ''}: full path, "
                    f"{'timed' if timed else 'untimed'}",
                    partial(cpus_run, stack, nr, shared, timed, settings.path_cpu_accesses),
                )
    samples = interleave({k: run for k, (_, run) in variants.items()}, settings.path_scale_rounds)
    for key, (label, _) in variants.items():
        section.figures.append(Figure.of(key, label, samples[key], "µs/access", 1e6))
    for kind in ("private_untimed", "shared_untimed", "private_timed", "shared_timed"):
        section.ratio(
            f"cpus_{MAX_CPUS}_vs_1_{kind}",
            f"random {kind.replace('_', ' ')}: time per access on {MAX_CPUS} CPUs / on 1",
            f"cpus_{MAX_CPUS}_{kind}",
            f"cpus_1_{kind}",
        )


def access_path(settings: Settings) -> Section:
    """The batched access path against pycachesim, and how it scales."""
    section = Section(
        f"Access path models (TLB + walks + L1 + L2 + RAM; {settings.path_rounds} rounds x "
        f"{settings.path_accesses:,} accesses in batches of {BATCH:,}; scaling: "
        f"{settings.path_scale_rounds} rounds)"
    )
    stack = build_stack()
    comparison(settings, stack, section)
    length_scaling(settings, stack, section)
    cpu_scaling(settings, stack, section)
    section.notes.append(
        "pycachesim is fed the physical addresses (no translation) as a Python list, made "
        "before the clock starts; every repetition starts with cold TLBs and caches"
    )
    section.notes.append(
        "full path = translate_many, then access_lines (untimed) or timed_access_lines "
        "(timed) on the lines of its physical addresses; time ratios: <= 0.5 is >= 2x the rate"
    )
    section.notes.append(
        f"CPU scaling: {settings.path_cpu_accesses:,} random accesses in all, split evenly, in "
        f"batches of {CPU_BATCH:,} issued round-robin; private: each CPU its own 64 KiB "
        "buffer, shared: all CPUs one (MESI snoops)"
    )
    return section
