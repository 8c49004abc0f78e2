"""RAM latency and bandwidth, and two CPUs queueing for one memory channel.

What it teaches: hwsim's RAM answers an access of n bytes in
``latency.ram + ceil(n / latency.ram_bytes_per_cycle)`` cycles (100 + n/16 by default): a
fixed latency plus a transfer that occupies the one memory channel. Requesters that want the
channel at the same time queue for it, so a CPU can be slower when another one uses memory at
the same moment, even though each works on its own buffer.

What it does, on the default machine (2 CPUs, physical addresses, no caches yet):

1. Both CPUs at once store 16 random 64-byte lines into their own buffer, then each loads
   the other CPU's lines back: ``data_read_back_ok`` says the bytes read equal those written.
2. Single accesses of 8 B, 64 B and 4 KiB are timed against the formula (``single_access``).
3. Each CPU streams 64 KiB (1024 dependent 64-byte reads, one batched ``cpu.access()``)
   alone, then both stream at the same time (``streaming``).

What to expect: single accesses match the formula exactly (64 B: 104 cycles, 4 KiB: 356).
Alone, a streaming CPU needs 104 cycles per access. The channel only books the 4-cycle
transfers, not the 100 cycles of latency after them, so it is busy for 4 of every 104 cycles
of a stream and two streams have plenty of room. Together, the stream that reaches the
channel second finds its first transfer taken and waits 4 cycles; from then on the two
streams run in step, 4 cycles apart, and never meet again. So ``contended_cycles_per_access``
is just above the alone figure (104.002: 4 cycles more over 1024 accesses), one CPU's
``slowdown`` is just above 1, ``contended_wall_cycles`` is the alone time plus 4, and
``channel_busy_share`` is about 2 x 4/104 = 0.077. A batched ``cpu.access()`` stream contends
as the same accesses issued one by one would: the individual stores and loads of step 1,
interleaved, also wait at most one transfer (``interleaved_*_cycles_max``: 108), and
``ram.queued_cycles`` counts every cycle a request waited. Which CPU goes first depends on
the seed; the same seed gives the same numbers.

Run it::

    hwsim run memory_latency --seed 3 --json memory_latency.json
"""

from __future__ import annotations

from statistics import mean
from typing import Any

import numpy as np
import trio

import hwsim

CONFIG = hwsim.MachineConfig(cpus=2)

LINE = 64
LINES = 16
STREAM_BYTES = 64 << 10
# Each CPU gets its own megabyte of physical memory, well clear of address 0.
BUFFER_BASE = 1 << 20
BUFFER_STRIDE = 1 << 20


def buffer(cpu: int) -> int:
    return BUFFER_BASE + cpu * BUFFER_STRIDE


async def exchange_data(machine: hwsim.Machine) -> dict[str, Any]:
    """Both CPUs write lines concurrently; each then reads the other's lines back."""
    cpus = machine.cpus
    patterns = [machine.random.randbytes(LINE * LINES) for _ in cpus]
    cycles: dict[str, list[int]] = {"store": [], "load": []}
    read_back: list[bytes] = [b""] * len(cpus)

    async def write(i: int) -> None:
        for line in range(LINES):
            start = machine.now
            chunk = patterns[i][line * LINE : (line + 1) * LINE]
            await cpus[i].store(buffer(i) + line * LINE, chunk)
            cycles["store"].append(machine.now - start)

    async def read(i: int) -> None:
        other = (i + 1) % len(cpus)
        data = bytearray()
        for line in range(LINES):
            start = machine.now
            data += await cpus[i].load(buffer(other) + line * LINE, LINE)
            cycles["load"].append(machine.now - start)
        read_back[other] = bytes(data)

    async with trio.open_nursery() as nursery:
        for i in range(len(cpus)):
            nursery.start_soon(write, i)
    async with trio.open_nursery() as nursery:
        for i in range(len(cpus)):
            nursery.start_soon(read, i)
    return {
        "ok": read_back == patterns,
        "store_cycles": cycles["store"],
        "load_cycles": cycles["load"],
    }


async def time_single_accesses(machine: hwsim.Machine) -> list[dict[str, Any]]:
    """One CPU alone: how long a load or a store of a given size takes, vs the formula."""
    cpu = machine.cpus[0]
    lat = machine.config.latency
    rows: list[dict[str, Any]] = []
    for kind, size in [("load", 8), ("load", 64), ("load", 4096), ("store", 64), ("store", 4096)]:
        start = machine.now
        if kind == "load":
            await cpu.load(buffer(0), size)
        else:
            await cpu.store(buffer(0), bytes(size))
        rows.append(
            {
                "access": kind,
                "bytes": size,
                "cycles": machine.now - start,
                "formula": lat.ram + -(-size // lat.ram_bytes_per_cycle),
            }
        )
    return rows


async def stream(
    machine: hwsim.Machine, cpus: list[int]
) -> tuple[dict[int, hwsim.BatchResult], int]:
    """The given CPUs each read their 64 KiB buffer at the same time; return their results
    and the RAM channel's busy cycles during the run."""
    results: dict[int, hwsim.BatchResult] = {}
    busy_before = machine.stats()["ram"]["busy_cycles"]

    async def run(i: int) -> None:
        addrs = np.arange(buffer(i), buffer(i) + STREAM_BYTES, LINE, dtype=np.int64)
        results[i] = await machine.cpus[i].access(addrs, LINE)

    async with trio.open_nursery() as nursery:
        for i in cpus:
            nursery.start_soon(run, i)
    return results, machine.stats()["ram"]["busy_cycles"] - busy_before


async def scenario(machine: hwsim.Machine) -> dict[str, Any]:
    data = await exchange_data(machine)
    single = await time_single_accesses(machine)

    everyone = list(range(len(machine.cpus)))
    alone: dict[int, hwsim.BatchResult] = {}
    for i in everyone:
        results, _ = await stream(machine, [i])
        alone[i] = results[i]
    together, busy = await stream(machine, everyone)
    start = min(r.start for r in together.values())
    wall = max(r.done for r in together.values()) - start

    rows: list[dict[str, Any]] = []
    per_access: dict[str, list[float]] = {"alone": [], "together": []}
    for i in everyone:
        baseline = alone[i].cycles / alone[i].accesses
        for run, result in (("alone", alone[i]), ("together", together[i])):
            cycles_per_access = result.cycles / result.accesses
            per_access[run].append(cycles_per_access)
            rows.append(
                {
                    "cpu": machine.cpus[i].name,
                    "run": run,
                    "accesses": result.accesses,
                    "cycles": result.cycles,
                    "cycles_per_access": cycles_per_access,
                    "slowdown": cycles_per_access / baseline,
                }
            )
    lat = machine.config.latency
    return {
        "data_read_back_ok": data["ok"],
        "interleaved_store_cycles_max": max(data["store_cycles"]),
        "interleaved_load_cycles_max": max(data["load_cycles"]),
        "alone_cycles_per_access": mean(per_access["alone"]),
        "contended_cycles_per_access": mean(per_access["together"]),
        "contended_wall_cycles": wall,
        "channel_busy_share": busy / wall,
        "config": {
            "cpus": machine.config.cpus,
            "seed": machine.config.seed,
            "ram_latency": lat.ram,
            "ram_bytes_per_cycle": lat.ram_bytes_per_cycle,
        },
        "single_access": single,
        "streaming": rows,
        "ram": machine.stats()["ram"],
    }
