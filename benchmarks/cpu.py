"""What one CPU access costs the host, in each of the CPU's three modes.

- timing: ``await cpu.load(addr, 8)``: two messages (cpu, then ram) and one sleep until the
  completion cycle, so every access is a distinct virtual timestamp;
- atomic: ``cpu.load_nowait(addr, 8)``: the same models called directly, no messages;
- batched: ``await cpu.access(addrs)``: one message carries a numpy array of addresses
  (``cpu.access_nowait`` is its atomic twin).

Each repetition boots a fresh one-CPU machine, stores to the 1 MiB the loads read (so that
they read real pages, not the zero fill of untouched RAM), then times the loads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from time import perf_counter

import numpy as np
import numpy.typing as npt

import hwsim

from .harness import Figure, Sample, Section, Settings, interleave

SPAN = 1 << 20  # bytes the loads walk through, 64 bytes apart
STRIDE = 64

Body = Callable[[hwsim.Machine, npt.NDArray[np.int64]], Awaitable[float]]


def addresses(n: int) -> npt.NDArray[np.int64]:
    return (np.arange(n, dtype=np.int64) * STRIDE) % SPAN


async def timing_loads(m: hwsim.Machine, addrs: npt.NDArray[np.int64]) -> float:
    cpu = m.cpus[0]
    start = perf_counter()
    for addr in addrs.tolist():
        await cpu.load(addr, 8)
    return perf_counter() - start


async def atomic_loads(m: hwsim.Machine, addrs: npt.NDArray[np.int64]) -> float:
    cpu = m.cpus[0]
    start = perf_counter()
    for addr in addrs.tolist():
        cpu.load_nowait(addr, 8)
    return perf_counter() - start


async def batched(m: hwsim.Machine, addrs: npt.NDArray[np.int64]) -> float:
    start = perf_counter()
    await m.cpus[0].access(addrs)
    return perf_counter() - start


async def batched_atomic(m: hwsim.Machine, addrs: npt.NDArray[np.int64]) -> float:
    start = perf_counter()
    m.cpus[0].access_nowait(addrs)
    return perf_counter() - start


async def on_machine(body: Body, n: int) -> float:
    """Boot a one-CPU machine, fill the span, run ``body``; returns seconds per access."""
    async with hwsim.boot(hwsim.MachineConfig(cpus=1)) as m:
        fill = b"\xa5" * 64
        for addr in range(0, SPAN, 64):
            m.cpus[0].store_nowait(addr, fill)
        addrs = addresses(n)
        await body(m, addrs[: min(n, 100)])  # warm up
        elapsed = await body(m, addrs)
    return elapsed / n


def cpu_access(settings: Settings) -> Section:
    """Figure 6: µs per access (and accesses per second) in timing, atomic and batched mode."""
    variants: dict[str, tuple[str, Sample]] = {
        "timing_load": (
            f"await cpu.load(addr, 8), {settings.timing_loads:,} loads",
            partial(hwsim.run, on_machine, timing_loads, settings.timing_loads),
        ),
        "atomic_load": (
            f"cpu.load_nowait(addr, 8), {settings.atomic_loads:,} loads",
            partial(hwsim.run, on_machine, atomic_loads, settings.atomic_loads),
        ),
        "batched": (
            f"await cpu.access(addrs), {settings.batch:,} addresses in one call",
            partial(hwsim.run, on_machine, batched, settings.batch),
        ),
        "batched_atomic": (
            f"cpu.access_nowait(addrs), {settings.batch:,} addresses in one call",
            partial(hwsim.run, on_machine, batched_atomic, settings.batch),
        ),
    }
    rounds = settings.cpu_rounds
    samples = interleave({key: run for key, (_, run) in variants.items()}, rounds)
    section = Section(f"CPU accesses (one-CPU machine, {rounds} rounds, median)")
    for key, (label, _) in variants.items():
        section.figures.append(Figure.of(key, label, samples[key], "µs/access", 1e6))
    section.ratio("timing_vs_atomic", "timing load / atomic load", "timing_load", "atomic_load")
    section.ratio("atomic_vs_batched", "atomic load / batched access", "atomic_load", "batched")
    section.ratio("timing_vs_batched", "timing load / batched access", "timing_load", "batched")
    return section
