"""What one CPU access costs the host, in each of the CPU's three modes.

Every access takes the machine's real path: a virtual address, translated by the CPU's MMU
(64-entry TLB; a miss walks the page table through the L1), then the L1d, the shared L2 and
RAM.

- timing: ``await cpu.load(buf + off, 8)``: messages to the CPU, its MMU and its L1, and
  one sleep until the completion cycle, so every access is a distinct virtual timestamp;
- atomic: ``cpu.load_nowait(buf + off, 8)``: the same handlers called directly, no messages;
- batched: ``await cpu.access(offsets, base=buf)``: one message to the MMU translates the
  whole array, one to the L1 runs its lines as a dependent chain (``cpu.access_nowait`` is
  its atomic twin).

Each repetition boots a fresh one-CPU machine, ``kmalloc``s a 1 MiB buffer (direct map,
2 MiB pages: after the first access the TLB hits), writes all of it with ``cpu.poke`` (so
that the loads read real pages, not the zero fill of untouched RAM; the caches stay cold),
then times the loads: one every
64 bytes, so every load is a new line, and the 1 MiB does not fit the 256 KiB L2.
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

# (machine, buffer, offsets into it) -> host seconds
Body = Callable[[hwsim.Machine, int, npt.NDArray[np.int64]], Awaitable[float]]


def offsets(n: int) -> npt.NDArray[np.int64]:
    return (np.arange(n, dtype=np.int64) * STRIDE) % SPAN


async def timing_loads(m: hwsim.Machine, buf: int, offs: npt.NDArray[np.int64]) -> float:
    cpu = m.cpus[0]
    addrs = [buf + off for off in offs.tolist()]
    start = perf_counter()
    for addr in addrs:
        await cpu.load(addr, 8)
    return perf_counter() - start


async def atomic_loads(m: hwsim.Machine, buf: int, offs: npt.NDArray[np.int64]) -> float:
    cpu = m.cpus[0]
    addrs = [buf + off for off in offs.tolist()]
    start = perf_counter()
    for addr in addrs:
        cpu.load_nowait(addr, 8)
    return perf_counter() - start


async def batched(m: hwsim.Machine, buf: int, offs: npt.NDArray[np.int64]) -> float:
    start = perf_counter()
    await m.cpus[0].access(offs, base=buf)
    return perf_counter() - start


async def batched_atomic(m: hwsim.Machine, buf: int, offs: npt.NDArray[np.int64]) -> float:
    start = perf_counter()
    m.cpus[0].access_nowait(offs, base=buf)
    return perf_counter() - start


async def on_machine(body: Body, n: int) -> float:
    """Boot a one-CPU machine, kmalloc and fill the span, run ``body``; returns seconds per
    access."""
    async with hwsim.boot(hwsim.MachineConfig(cpus=1)) as m:
        buf = await m.kernel.kmalloc(SPAN)
        m.cpus[0].poke(buf, b"\xa5" * SPAN)  # functional write: real pages, caches cold
        offs = offsets(n)
        await body(m, buf, offs[: min(n, 100)])  # warm up
        elapsed = await body(m, buf, offs)
    return elapsed / n


def cpu_access(settings: Settings) -> Section:
    """Figure 6: µs per access (and accesses per second) in timing, atomic and batched mode."""
    variants: dict[str, tuple[str, Sample]] = {
        "timing_load": (
            f"await cpu.load(buf + off, 8), {settings.timing_loads:,} loads",
            partial(hwsim.run, on_machine, timing_loads, settings.timing_loads),
        ),
        "atomic_load": (
            f"cpu.load_nowait(buf + off, 8), {settings.atomic_loads:,} loads",
            partial(hwsim.run, on_machine, atomic_loads, settings.atomic_loads),
        ),
        "batched": (
            f"await cpu.access(offs, base=buf), {settings.batch:,} addresses in one call",
            partial(hwsim.run, on_machine, batched, settings.batch),
        ),
        "batched_atomic": (
            f"cpu.access_nowait(offs, base=buf), {settings.batch:,} addresses in one call",
            partial(hwsim.run, on_machine, batched_atomic, settings.batch),
        ),
    }
    rounds = settings.cpu_rounds
    samples = interleave({key: run for key, (_, run) in variants.items()}, rounds)
    section = Section(
        f"CPU accesses (one-CPU machine, 1 MiB kmalloc buffer, a load per line, {rounds} "
        "rounds, median)"
    )
    for key, (label, _) in variants.items():
        section.figures.append(Figure.of(key, label, samples[key], "µs/access", 1e6))
    section.ratio("timing_vs_atomic", "timing load / atomic load", "timing_load", "atomic_load")
    section.ratio("atomic_vs_batched", "atomic load / batched access", "atomic_load", "batched")
    section.ratio("timing_vs_batched", "timing load / batched access", "timing_load", "batched")
    return section
