"""What the machine's access path costs the host: TLB + page walks + L1 + L2 + RAM, batched.

Every figure runs on a booted machine (``hwsim.boot``, 64 MiB x86_64, config defaults: a
64-entry 4-way TLB per CPU whose walker reads the page table through the L1, an L1d of
32 KiB, 8-way, 64 B lines per CPU, a shared 256 KiB 8-way L2, RAM): the CPU issues virtual
addresses into ``kmalloc``/``vmalloc`` buffers in batches of ``BATCH`` accesses,

    cpu.access_nowait(offsets, 8, writes, base=buf)     # atomic: the handlers called directly
    await cpu.access(offsets, 8, writes, base=buf)      # timing: through the actors

each batch being one translation of the whole batch by the CPU's MMU (TLB, walks on a miss)
and one dependent line chain in its L1 (walker reads included), timed, the RAM channel
booked. Every repetition boots a fresh machine (cold TLB and caches) and allocates the
buffers in the same order, so they land at the same addresses every time.

Three traces of 8-byte accesses:

- *direct map, sequential*: reads walking a 4 MiB ``kmalloc`` buffer (direct map, 2 MiB pages:
  the TLB hits, the caches stream: one L1 and L2 miss per 64-byte line);
- *vmalloc, sequential*: the same over a 4 MiB ``vmalloc`` buffer (4 KiB pages: a TLB miss and
  a walk per page, 1024 pages against a 64-entry TLB);
- *random 64 KiB*: uniformly random 8-byte slots of a 64 KiB ``kmalloc`` buffer, one in four a
  write: TLB hits, L2 hits, about half L1 hits.

Against pycachesim (the cache simulator hwsim's caches are tested against) with the same L1
and L2 geometry, fed the same *physical* addresses (``layout.virt_to_phys`` for the kmalloc
buffers, ``kernel.vmalloc_to_pfn`` page by page for the vmalloc one; it has no TLB and no
walker: it does less work):

- ``CacheSimulator.load(addr, length=8)`` / ``.store``, one Python call per access: the
  documented API, and the rate (about 1M accesses/s) the 2x target is about;
- ``Cache.backend.load(addr, 8)``: one call per access straight into its C extension,
  the cheapest per-access call pycachesim has (for information);
- ``backend.iterload(addrs, 8)`` (``loadstore`` with writes): the whole trace in one call.

Scaling: both modes on the vmalloc trace at growing trace lengths, and the random trace on
machines with 1..8 CPUs (each its own TLB, MMU and L1 under the shared L2), every CPU on its
own 64 KiB buffer (*private*) or all on one (*shared*: MESI snoops and invalidations); atomic
batches are issued round-robin from one task, timing batches concurrently, one task per CPU
in a trio nursery (they interleave in virtual time).
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
import trio

import hwsim
from hwsim.config import CacheConfig, CachesConfig

from .harness import Figure, Ratio, Sample, Section, Settings, interleave

SEED = 2024
MAX_CPUS = 8
CPU_COUNTS = (1, 2, 4, 8)

SIZE = 8  # bytes per access
PAGE = hwsim.PAGE_SIZE
BATCH = 10_000  # accesses per cpu.access call
CPU_BATCH = 1_000  # accesses per call in the CPU scaling (finer interleaving)
STREAM = 4 << 20  # the sequential traces' buffers
WORKING_SET = 64 << 10  # the random trace's buffer
WRITE_EVERY = 4  # the random trace: one access in four is a write

TARGET = 2.0  # atomic full path >= 2x pycachesim's per-call rate
TIMING_RATE = 200_000  # timing mode through the actors: >= 200k accesses/s
LONG_LENGTH = 100_000  # longer scaling traces run once
LONG_BUDGET = 60.0  # seconds: a scaling length predicted to take longer is skipped

CONFIG = hwsim.MachineConfig(cpus=1)  # 64 MiB x86_64, the default TLB, L1d and L2
CACHES: CachesConfig = CONFIG.caches

Offsets = npt.NDArray[np.uint64]
Writes = npt.NDArray[np.bool_]


# ---------------------------------------------------------------------- buffers, traces


@attrs.frozen
class Buffers:
    """The buffers a trace runs over, allocated first thing after boot, in this order."""

    stream: int  # 4 MiB kmalloc (direct map)
    vstream: int  # 4 MiB vmalloc
    sets: tuple[int, ...]  # 64 KiB kmalloc each


async def allocate(m: hwsim.Machine, streams: bool, nr_sets: int) -> Buffers:
    stream = vstream = 0
    if streams:
        stream = await m.kernel.kmalloc(STREAM)
        vstream = await m.kernel.vmalloc(STREAM)
    sets = [await m.kernel.kmalloc(WORKING_SET) for _ in range(nr_sets)]
    return Buffers(stream, vstream, tuple(sets))


@attrs.frozen(eq=False)
class Trace:
    """Offsets into one buffer (``"stream"``, ``"vstream"`` or ``"set"``), and which
    accesses are writes (None: all reads)."""

    buffer: str
    offsets: Offsets
    writes: Writes | None

    def __len__(self) -> int:
        return len(self.offsets)

    def base(self, buffers: Buffers) -> int:
        return buffers.sets[0] if self.buffer == "set" else getattr(buffers, self.buffer)

    def batches(self, size: int) -> list[tuple[Offsets, Writes | bool]]:
        """The trace cut into ``cpu.access`` arguments (set-up: before the clock starts)."""
        out: list[tuple[Offsets, Writes | bool]] = []
        for lo in range(0, len(self), size):
            w = False if self.writes is None else self.writes[lo : lo + size]
            out.append((self.offsets[lo : lo + size], w))
        return out


def sequential(buffer: str, n: int) -> Trace:
    offsets = (np.arange(n, dtype=np.uint64) * np.uint64(SIZE)) % np.uint64(STREAM)
    return Trace(buffer, offsets, None)


def random_slots(n: int, seed: int) -> Trace:
    rng = np.random.default_rng(seed)
    slots = rng.integers(0, WORKING_SET // SIZE, n, dtype=np.uint64)
    return Trace("set", slots * np.uint64(SIZE), rng.integers(0, WRITE_EVERY, n) == 0)


TRACES: dict[str, tuple[str, Callable[[int], Trace]]] = {
    "direct": ("direct map seq 4 MiB", partial(sequential, "stream")),
    "vmalloc": ("vmalloc seq 4 MiB", partial(sequential, "vstream")),
    "random": (f"random 64 KiB, 1/{WRITE_EVERY} writes", partial(random_slots, seed=SEED)),
}


# ---------------------------------------------------------------------- hwsim


def machine_run(expect: Buffers, trace: Trace, timing: bool) -> float:
    """Boot a fresh one-CPU machine, allocate the buffers, run ``trace`` on CPU 0 in batches
    of BATCH (atomic: ``access_nowait``; timing: ``await access``); seconds per access."""

    async def body() -> float:
        async with hwsim.boot(CONFIG) as m:
            buffers = await allocate(m, True, 1)
            if buffers != expect:
                raise RuntimeError(f"the buffers moved: {buffers} != {expect}")
            cpu, base = m.cpus[0], trace.base(buffers)
            batches = trace.batches(BATCH)
            if timing:
                access = cpu.access
                start = perf_counter()
                for offs, w in batches:
                    await access(offs, SIZE, w, base=base)
            else:
                access_nowait = cpu.access_nowait
                start = perf_counter()
                for offs, w in batches:
                    access_nowait(offs, SIZE, w, base=base)
            return (perf_counter() - start) / len(trace)

    return hwsim.run(body)


@attrs.frozen
class Reference:
    """What the set-up run found: the buffers' addresses, each trace's physical addresses,
    and the statistics of one atomic run of it (``{unit: {counter: delta}}``)."""

    buffers: Buffers
    phys: dict[str, npt.NDArray[np.int64]]
    stats: dict[str, dict[str, dict[str, int]]]


def reference(traces: dict[str, Trace]) -> Reference:
    """The buffers and the traces' physical addresses (pycachesim's input), from one
    machine; then one untimed atomic run of each trace on a fresh machine, for its counts."""

    async def body() -> tuple[Buffers, dict[str, npt.NDArray[np.int64]]]:
        async with hwsim.boot(CONFIG) as m:
            buffers = await allocate(m, True, 1)
            vpages = range(0, STREAM, PAGE)
            pfns = np.array(
                [await m.kernel.vmalloc_to_pfn(buffers.vstream + p) for p in vpages],
                dtype=np.int64,
            )
            phys: dict[str, npt.NDArray[np.int64]] = {}
            for key, trace in traces.items():
                offs = trace.offsets.astype(np.int64)
                if trace.buffer == "vstream":
                    phys[key] = (pfns[offs // PAGE] * PAGE) | (offs % PAGE)
                else:
                    phys[key] = m.layout.virt_to_phys(trace.base(buffers)) + offs
            return buffers, phys

    async def counts(buffers: Buffers, trace: Trace) -> dict[str, dict[str, int]]:
        async with hwsim.boot(CONFIG) as m:
            await allocate(m, True, 1)
            before = m.stats()
            for offs, w in trace.batches(BATCH):
                m.cpus[0].access_nowait(offs, SIZE, w, base=trace.base(buffers))
            after = m.stats()
        return {
            unit: {k: after[unit][k] - before[unit][k] for k in after[unit]}
            for unit in ("tlb0", "l1d0", "l2")
        }

    buffers, phys = hwsim.run(body)
    stats = {key: hwsim.run(counts, buffers, trace) for key, trace in traces.items()}
    return Reference(buffers, phys, stats)


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
    """L1 over L2 over memory, the geometry and policies of the machine's caches."""
    assert CACHES.l2 is not None
    l2 = cachesim.Cache("L2", *geometry(CACHES.l2), replacement_policy="LRU")
    l1 = cachesim.Cache(
        "L1", *geometry(CACHES.l1d), replacement_policy="LRU", load_from=l2, store_to=l2
    )
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


def pycachesim_pairs(phys: list[int], writes: list[bool]) -> Pairs | None:
    """``loadstore``'s input for a trace with writes (None: all reads, use ``iterload``)."""
    if not any(writes):
        return None
    return [((), (a,)) if w else ((a,), ()) for a, w in zip(phys, writes, strict=True)]


def pycachesim_batched(cachesim: Any, phys: list[int], pairs: Pairs | None) -> float:
    """The whole trace in one call: ``iterload`` (``loadstore`` when it has writes)."""
    backend = new_pycachesim(cachesim).first_level.backend
    start = perf_counter()
    if pairs is None:
        backend.iterload(phys, SIZE)
    else:
        backend.loadstore(pairs, SIZE)
    return (perf_counter() - start) / len(phys)


def pycachesim_misses(cachesim: Any, phys: list[int], pairs: Pairs | None) -> tuple[int, int]:
    """pycachesim's L1 and L2 misses on a trace."""
    sim = new_pycachesim(cachesim)
    l1 = sim.first_level
    if pairs is None:
        l1.backend.iterload(phys, SIZE)
    else:
        l1.backend.loadstore(pairs, SIZE)
    return l1.backend.MISS_count, l1.load_from.backend.MISS_count


# ---------------------------------------------------------------------- comparison


VARIANTS = {
    "atomic": "cpu.access_nowait (atomic)",
    "timing": "await cpu.access (timing, actors)",
    "pcs_call": "pycachesim sim.load(addr, length=8) per access",
    "pcs_backend": "pycachesim backend.load(addr, 8) per access",
    "pcs_batched": "pycachesim iterload/loadstore, one call",
}


def comparison(settings: Settings, section: Section) -> Buffers:
    """The three traces, atomic and timing, against pycachesim; returns the buffers."""
    cachesim = pycachesim_module()
    if cachesim is None:
        section.notes.append("pycachesim not installed (pip install -e .[bench]): not compared")
    n = settings.path_accesses
    traces = {key: make(n) for key, (_, make) in TRACES.items()}
    ref = reference(traces)
    budget = 1e6 / TIMING_RATE  # µs per access
    for key, (label, _) in TRACES.items():
        trace = traces[key]
        variants: dict[str, Sample] = {
            "atomic": partial(machine_run, ref.buffers, trace, False),
            "timing": partial(machine_run, ref.buffers, trace, True),
        }
        stats = ref.stats[key]
        counts = (
            f"{label}: hwsim {stats['tlb0']['misses']:,} TLB misses, L1 misses "
            f"{stats['l1d0']['load_misses'] + stats['l1d0']['store_misses']:,} (walker's "
            f"included), L2 misses {stats['l2']['load_misses'] + stats['l2']['store_misses']:,}"
        )
        if cachesim is not None:
            plist, wlist = ref.phys[key].tolist(), [False] * n
            if trace.writes is not None:
                wlist = trace.writes.tolist()
            pairs = pycachesim_pairs(plist, wlist)
            variants["pcs_call"] = partial(pycachesim_per_call, cachesim, plist, wlist)
            variants["pcs_backend"] = partial(pycachesim_backend, cachesim, plist, wlist)
            variants["pcs_batched"] = partial(pycachesim_batched, cachesim, plist, pairs)
            l1, l2 = pycachesim_misses(cachesim, plist, pairs)
            counts += f"; pycachesim L1 misses {l1:,}, L2 misses {l2:,}"
        section.notes.append(counts)
        samples = interleave(variants, settings.path_rounds)
        for name in variants:
            section.figures.append(
                Figure.of(
                    f"{key}_{name}", f"{label}: {VARIANTS[name]}", samples[name], "µs/access", 1e6
                )
            )
        timing = section.figure(f"{key}_timing")
        section.ratios.append(
            Ratio(
                f"{key}_timing_vs_budget",
                f"{label}: timing / {budget:g} µs budget (>= {TIMING_RATE // 1000}k accesses/s)",
                timing.value / budget,
                below=1.0,
                inclusive=True,
            )
        )
        section.ratio(
            f"{key}_timing_vs_atomic", f"{label}: timing / atomic", f"{key}_timing", f"{key}_atomic"
        )
        if cachesim is None:
            continue
        # Time ratios: ours / pycachesim's per-call. <= 0.5 is at least twice its rate.
        section.ratio(
            f"{key}_atomic_vs_pycachesim_call",
            f"{label}: atomic / pycachesim per call (<= 0.5: >= 2x rate)",
            f"{key}_atomic",
            f"{key}_pcs_call",
            below=1 / TARGET,
            inclusive=True,
        )
        section.ratio(
            f"{key}_timing_vs_pycachesim_call",
            f"{label}: timing / pycachesim per call",
            f"{key}_timing",
            f"{key}_pcs_call",
        )
        section.ratio(
            f"{key}_atomic_vs_pycachesim_backend",
            f"{label}: atomic / pycachesim backend.load per call",
            f"{key}_atomic",
            f"{key}_pcs_backend",
        )
    return ref.buffers


# ---------------------------------------------------------------------- scaling

MODES = ("atomic", "timing")


def length_scaling(settings: Settings, section: Section, buffers: Buffers) -> None:
    """Both modes on the vmalloc trace at each length. Lengths above LONG_LENGTH run once;
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
        trace = make(n)
        started = perf_counter()
        samples = interleave(
            {mode: partial(machine_run, buffers, trace, mode == "timing") for mode in MODES},
            rounds,
        )
        previous = (n, (perf_counter() - started) / rounds)
        del trace
        for mode in MODES:
            section.figures.append(
                Figure.of(
                    f"length_{n}_{mode}",
                    f"{label}, {n:,} accesses: {mode}",
                    samples[mode],
                    "µs/access",
                    1e6,
                )
            )
    measured = {fig.key for fig in section.figures}
    lengths = [n for n in settings.path_lengths if f"length_{n}_atomic" in measured]
    if len(lengths) > 1:
        longest, shortest = lengths[-1], lengths[0]
        for mode in MODES:
            # Not paired: the lengths ran in separate rounds.
            section.ratios.append(
                Ratio(
                    f"length_{longest}_vs_{shortest}_{mode}",
                    f"vmalloc seq, {mode}: time per access at {longest:,} / at {shortest:,}",
                    section.figure(f"length_{longest}_{mode}").value
                    / section.figure(f"length_{shortest}_{mode}").value,
                )
            )


def cpus_run(nr_cpus: int, shared: bool, timing: bool, total: int) -> float:
    """A fresh ``nr_cpus``-CPU machine; each CPU runs ``total // nr_cpus`` random accesses
    (its own seed) on its own 64 KiB buffer or, ``shared``, all on the first, in batches of
    CPU_BATCH. Atomic: one task issues the batches round-robin (CPU 0, 1, ..., then again);
    timing: one task per CPU in a nursery, each awaiting its batches, interleaved in virtual
    time. Returns seconds per access."""
    per_cpu = total // nr_cpus
    batches = [random_slots(per_cpu, SEED + cpu).batches(CPU_BATCH) for cpu in range(nr_cpus)]

    async def body() -> float:
        async with hwsim.boot(attrs.evolve(CONFIG, cpus=nr_cpus)) as m:
            sets = (await allocate(m, False, 1 if shared else nr_cpus)).sets
            bases = [sets[0 if shared else cpu] for cpu in range(nr_cpus)]
            if timing:

                async def issue(cpu: int) -> None:
                    access, base = m.cpus[cpu].access, bases[cpu]
                    for offs, w in batches[cpu]:
                        await access(offs, SIZE, w, base=base)

                start = perf_counter()
                async with trio.open_nursery() as nursery:
                    for cpu in range(nr_cpus):
                        nursery.start_soon(issue, cpu)
            else:
                calls = [c.access_nowait for c in m.cpus]
                start = perf_counter()
                for turn in zip(*batches, strict=True):
                    for cpu, (offs, w) in enumerate(turn):
                        calls[cpu](offs, SIZE, w, base=bases[cpu])
            return (perf_counter() - start) / (per_cpu * nr_cpus)

    return hwsim.run(body)


def cpu_scaling(settings: Settings, section: Section) -> None:
    total = settings.path_cpu_accesses
    variants: dict[str, tuple[str, Sample]] = {}
    for where in ("private", "shared"):
        for mode in MODES:
            for nr in CPU_COUNTS:
                variants[f"cpus_{nr}_{where}_{mode}"] = (
                    f"random 64 KiB {where}, {nr} CPU{'s' if nr > 1 else ''}: {mode}",
                    partial(cpus_run, nr, where == "shared", mode == "timing", total),
                )
    samples = interleave({k: run for k, (_, run) in variants.items()}, settings.path_scale_rounds)
    for key, (label, _) in variants.items():
        section.figures.append(Figure.of(key, label, samples[key], "µs/access", 1e6))
    for where in ("private", "shared"):
        for mode in MODES:
            kind = f"{where}_{mode}"
            section.ratio(
                f"cpus_{MAX_CPUS}_vs_1_{kind}",
                f"random {where} {mode}: time per access on {MAX_CPUS} CPUs / on 1",
                f"cpus_{MAX_CPUS}_{kind}",
                f"cpus_1_{kind}",
            )


def access_path(settings: Settings) -> Section:
    """The machine's batched access path against pycachesim, and how it scales."""
    section = Section(
        f"Access path (cpu.access: TLB + walks + L1 + L2 + RAM; {settings.path_rounds} rounds "
        f"x {settings.path_accesses:,} accesses in batches of {BATCH:,}; scaling: "
        f"{settings.path_scale_rounds} rounds)"
    )
    buffers = comparison(settings, section)
    length_scaling(settings, section, buffers)
    cpu_scaling(settings, section)
    section.notes.append(
        "every repetition boots a fresh machine (cold TLB and caches); pycachesim is fed the "
        "same physical addresses (no translation, no walker) as a Python list, made before "
        "the clock starts"
    )
    section.notes.append(
        f"atomic = cpu.access_nowait, timing = await cpu.access (quantum 0: one clock jump per "
        f"batch); time ratios: <= 0.5 is >= 2x the rate; budget {1e6 / TIMING_RATE:g} µs = "
        f"{TIMING_RATE // 1000}k accesses/s"
    )
    section.notes.append(
        f"CPU scaling: {settings.path_cpu_accesses:,} random accesses in all, split evenly, in "
        f"batches of {CPU_BATCH:,}; atomic: issued round-robin from one task, timing: one task "
        "per CPU in a nursery, interleaved in virtual time; private: each CPU its own 64 KiB "
        "buffer, shared: all CPUs one (MESI snoops)"
    )
    return section
