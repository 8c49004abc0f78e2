"""Timing helpers: interleaved repetitions, medians, and the figures and ratios a run reports.

A 2-core CI machine drifts by several percent from one second to the next (other processes,
frequency scaling, the GC). Comparing variants measured one after the other would mostly
measure that drift, so :func:`interleave` alternates the variants round by round, rotating
who goes first, and the figure is the median of the rounds.
"""

from __future__ import annotations

import gc
import statistics
from collections.abc import Callable, Mapping

import attrs

# One repetition of a variant: runs it and returns host seconds per operation.
Sample = Callable[[], float]

# Round trips timed as one block, and done untimed first (to fill caches, specialise code).
BLOCK = 500
WARMUP = 200


@attrs.frozen
class Settings:
    """How hard to try. ``quick()`` is for CI (< 30 s in all), ``full()`` for the figures.

    Attributes:
        mode: "quick" or "full".
        rounds: interleaved repetitions (fresh runs) of each request/reply variant.
        round_trips: round trips timed per repetition, in blocks of BLOCK.
        trace_runs: runs of the tracing benchmark.
        trace_blocks: rounds per tracing run, each one block of every variant.
        cpu_rounds: repetitions of the CPU access benchmarks.
        timing_loads: ``await cpu.load`` calls per repetition.
        atomic_loads: ``cpu.load_nowait`` calls per repetition.
        batch: addresses in one batched ``cpu.access`` call.
        boots: boots of the 64 GiB machine (the median is reported).
        touched_pages: pages the boot probe stores to.
        alloc_rounds: interleaved repetitions of the allocator models (fresh models each).
        alloc_pairs: alloc+free pairs per repetition of the buddy and kmalloc models.
        vmalloc_pairs: vmalloc+vfree pairs per repetition of the vmalloc model.
        alloc_runs: hwsim.run calls per quantum setting for the kernel API through actors.
        alloc_blocks: interleaved blocks of every kernel-call variant per such run.
        path_rounds: interleaved repetitions of the access-path variants (fresh machines).
        path_accesses: accesses per repetition of the access-path comparison.
        path_lengths: trace lengths of the access path's length scaling (above 10^5: once).
        path_scale_rounds: interleaved repetitions of each scaling run.
        path_cpu_accesses: accesses in all (split over the CPUs) of the CPU scaling.
        dma_rounds: interleaved repetitions of the DMA variants (fresh machines).
        dma_transfers: DMA copies timed per repetition, for 4 KiB, 64 KiB, 1 MiB, 4 MiB.
        irq_round_trips: DMA completion interrupt round trips timed per repetition.
    """

    mode: str
    rounds: int
    round_trips: int
    trace_runs: int
    trace_blocks: int
    cpu_rounds: int
    timing_loads: int
    atomic_loads: int
    batch: int
    boots: int
    touched_pages: int
    alloc_rounds: int
    alloc_pairs: int
    vmalloc_pairs: int
    alloc_runs: int
    alloc_blocks: int
    path_rounds: int
    path_accesses: int
    path_lengths: tuple[int, ...]
    path_scale_rounds: int
    path_cpu_accesses: int
    dma_rounds: int
    dma_transfers: tuple[int, int, int, int]
    irq_round_trips: int

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            mode="quick",
            rounds=5,
            round_trips=2_000,
            trace_runs=1,
            trace_blocks=150,
            cpu_rounds=3,
            timing_loads=2_000,
            atomic_loads=20_000,
            batch=100_000,
            boots=10,
            touched_pages=1_000,
            alloc_rounds=5,
            alloc_pairs=20_000,
            vmalloc_pairs=1_000,
            alloc_runs=3,
            alloc_blocks=10,
            path_rounds=3,
            path_accesses=100_000,
            path_lengths=(10_000, 100_000),
            path_scale_rounds=1,
            path_cpu_accesses=50_000,
            dma_rounds=3,
            dma_transfers=(100, 50, 10, 5),
            irq_round_trips=1_000,
        )

    @classmethod
    def full(cls) -> Settings:
        return cls(
            mode="full",
            rounds=25,
            round_trips=6_000,
            trace_runs=5,
            trace_blocks=200,
            cpu_rounds=5,
            timing_loads=20_000,
            atomic_loads=100_000,
            batch=100_000,
            boots=30,
            touched_pages=1_000,
            alloc_rounds=11,
            alloc_pairs=100_000,
            vmalloc_pairs=5_000,
            alloc_runs=4,
            alloc_blocks=30,
            path_rounds=5,
            path_accesses=500_000,
            path_lengths=(10_000, 100_000, 1_000_000, 10_000_000),
            path_scale_rounds=3,
            path_cpu_accesses=200_000,
            dma_rounds=9,
            dma_transfers=(500, 250, 40, 15),
            irq_round_trips=3_000,
        )


@attrs.frozen
class Figure:
    """One measured quantity: the median over its repetitions, and their range.

    Attributes:
        key: a stable identifier (the JSON key; ratios refer to figures by it).
        label: what the table shows.
        value: the median.
        unit: e.g. "µs/round trip".
        low, high: the smallest and largest repetition (equal to value if measured once).
        samples: every repetition, in the order they ran (round by round).
    """

    key: str
    label: str
    value: float
    unit: str
    low: float
    high: float
    samples: tuple[float, ...] = ()

    @classmethod
    def of(cls, key: str, label: str, samples: list[float], unit: str, scale: float) -> Figure:
        """The median figure of ``samples`` (each multiplied by ``scale``, e.g. 1e6 for µs)."""
        scaled = tuple(s * scale for s in samples)
        return cls(key, label, statistics.median(scaled), unit, min(scaled), max(scaled), scaled)

    @classmethod
    def single(cls, key: str, label: str, value: float, unit: str) -> Figure:
        return cls(key, label, value, unit, value, value, (value,))

    @property
    def repeats(self) -> int:
        return len(self.samples)


@attrs.frozen
class Ratio:
    """A ratio of two figures, optionally with a target it should stay under.

    Attributes:
        key: a stable identifier.
        label: what the table shows ("hwsim / raw channel", ...).
        value: the ratio.
        below: the target bound, or None when the ratio is reported for information.
        inclusive: True for "<= below", False for "< below".
        paired: True if ``value`` is the median of per-round quotients (see
            :meth:`Section.ratio`), False if it is the quotient of the two medians.
    """

    key: str
    label: str
    value: float
    below: float | None = None
    inclusive: bool = False
    paired: bool = False

    @property
    def target(self) -> str:
        if self.below is None:
            return ""
        return f"{'<=' if self.inclusive else '<'} {self.below:g}"

    @property
    def passed(self) -> bool | None:
        if self.below is None:
            return None
        return self.value <= self.below if self.inclusive else self.value < self.below


@attrs.define
class Section:
    """The figures and ratios of one benchmark, plus anything the reader should know."""

    title: str
    figures: list[Figure] = attrs.Factory(list)
    ratios: list[Ratio] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)

    def figure(self, key: str) -> Figure:
        for fig in self.figures:
            if fig.key == key:
                return fig
        raise KeyError(key)

    def ratio(
        self,
        key: str,
        label: str,
        numerator: str,
        denominator: str,
        *,
        below: float | None = None,
        inclusive: bool = False,
    ) -> Ratio:
        """Add (and return) the ratio of two of this section's figures, by key.

        When both were measured in the same rounds (as :func:`interleave` does), the ratio
        is the median over rounds of numerator / denominator: the two samples of a round
        ran seconds apart, so their quotient cancels the host's slow swings in speed (on a
        shared machine, whole seconds at 1.5x slower are common), which the two medians,
        taken over different moments, would each still carry.
        """
        top, bottom = self.figure(numerator), self.figure(denominator)
        paired = top.repeats == bottom.repeats > 1
        if paired:
            pairs = zip(top.samples, bottom.samples, strict=True)
            value = statistics.median(a / b for a, b in pairs)
        else:
            value = top.value / bottom.value
        ratio = Ratio(key, label, value, below, inclusive, paired)
        self.ratios.append(ratio)
        return ratio


def interleave(variants: Mapping[str, Sample], rounds: int) -> dict[str, list[float]]:
    """Run every variant ``rounds`` times, alternating, and collect each one's samples.

    Round ``r`` starts with variant ``r mod k`` so that no variant always runs right after
    the same neighbour (a variant that leaves garbage behind would otherwise always slow
    down the same successor). The GC is emptied before every repetition for the same reason.
    """
    names = list(variants)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            samples[name].append(variants[name]())
    return samples
