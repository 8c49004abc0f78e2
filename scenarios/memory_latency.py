"""Cache, TLB and RAM latency and bandwidth, and two CPUs queueing for one memory channel.

What it teaches: a load is not "a RAM access". It goes CPU -> TLB (a page walk on a miss) ->
the CPU's L1d -> the shared L2 -> RAM, and costs the sum of the levels it reaches. With the
default latencies (``tlb`` 1, ``l1`` 4, ``l2`` 12, RAM ``100 + ceil(64 / 16)`` = 104 for a
64-byte line): an L1 hit costs 1 + 4 = 5 cycles, an L2 hit 1 + 4 + 12 = 17, a line from RAM
1 + 4 + 12 + 104 = 121. A TLB miss adds a walk whose page-table entries are read through the
same caches: from RAM when cold (120 each), from the L1 when warm (4 each). The L1s are kept
coherent (MESI), so one CPU reads what another has just written, out of the other's cache.
And the one memory channel is shared, but it is only busy for the 4-cycle transfer of each
line, not the 100 cycles of latency: latency-bound streams barely feel each other.

What it does, on the default machine (2 CPUs, 32 KiB 8-way L1d each, 256 KiB L2, 64-entry
TLB; every buffer from ``kmalloc``/``vmalloc``, so every address is a kernel virtual one):

1. ``single_access``: CPU 0, on a cold machine, times single 8-byte loads against the
   formula: the first touch of a kmalloc page (TLB miss, a 3-level walk of the direct map's
   2 MiB pages, PGD/PUD/PMD entries all from RAM), an L1 hit, a line never touched (RAM),
   an L2 hit (the line pushed out of its L1 set by ``ways`` other lines 4 KiB apart, which
   map to the same set), the first touch of a vmalloc page (4 KiB pages: a 4-level walk
   from RAM) and of the next vmalloc page (the same walk, its entries now in the L1).
2. ``exchange``: both CPUs at once store 16 random 64-byte lines into their own kmalloc
   buffer, then each loads the other CPU's lines back: ``data_read_back_ok`` says the bytes
   read equal those written. Each of those loads finds the line Modified in the other L1:
   a snoop, a write-back to L2 and a cache-to-cache fill (tlb + l1 + snoop 30 + l2 = 47).
3. ``streaming``: each CPU reads a 1 MiB kmalloc buffer (4 x L2) line by line, 16384
   dependent 8-byte loads in one batched ``cpu.access()``, alone, then both at the same time.

What to expect (seed 0; the same seed gives the same JSON, and seeds 0 to 5 all give these
numbers, only which CPU's stream waits changes): ``single_access`` measures exactly its
``expected`` column: 481 for the first touch of a kmalloc page (1 + 3 x 120 + 120, of which
360 are the walk), 5 for an L1 hit, 121 from RAM, 17 from the L2, 601 for the first touch of
a vmalloc page (1 + 4 x 120 + 120) and 137 for the next one (1 + 4 x 4 + 120: the walker
finds its four entries in the L1). The exchange reads back right with 32 snoops and 32
cache-to-cache transfers, every cross load 47 cycles, as expected; each store costs 121 (a
read for ownership from RAM), CPU 1's first 169 (its walk finds the entries CPU 0's walks
left in the L2: 3 x 16), which keeps the two CPUs' stores 48 cycles apart: they never
collide on the channel. Streaming alone costs exactly 121.0 cycles per access (16384 x 121
= 1,982,464 cycles: every line misses the L1 and the L2). Together, the stream that reaches
the channel second finds its first transfer taken and waits 4 cycles; from then on the two
run in step, 4 cycles apart, and never meet again: ``contended_extra_cycles_max`` is 4,
``contended_wall_cycles`` 1,982,468, ``contended_cycles_per_access`` 121.0001,
``slowdown_max`` 1.000002 (the table rounds both to 121.0 and 1.000), the channel is busy
``channel_busy_share`` = 2 x 16384 x 4 / 1,982,468 = 0.066 of the time and
``contended_ram_queued_cycles`` is 4. A workload with many misses in flight (a DMA engine)
would queue; one dependent chain per CPU cannot: latency, not bandwidth, is its limit. The
``ram`` table's ``queued_cycles`` (132) also counts the 32 dirty exchange lines the first
stream evicts from the L2: their posted write-backs wait behind the fills (4 cycles each),
no CPU waits for them.

Run it::

    hwsim run memory_latency --seed 3 --json memory_latency.json
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from statistics import mean
from typing import Any

import numpy as np
import trio

import hwsim

CONFIG = hwsim.MachineConfig(cpus=2)

LINE = 64
LINES = 16
STREAM_BYTES = 1 << 20
# Entries a walk reads on x86_64: the direct map (kmalloc) uses 2 MiB pages, so PGD, PUD
# and a PMD with PSE; vmalloc maps 4 KiB pages, one more level (PTE).
DIRECT_MAP_WALK_LEVELS = 3
VMALLOC_WALK_LEVELS = 4


def latencies(machine: hwsim.Machine) -> dict[str, int]:
    """What each level costs a load of one line, from the machine's config."""
    lat = machine.config.latency
    l2 = lat.l2 if machine.config.caches.l2 is not None else 0
    ram = lat.ram + -(-LINE // lat.ram_bytes_per_cycle)
    return {
        "tlb": lat.tlb,
        "l1": lat.l1,
        "l2": l2,
        "ram": ram,
        "miss": lat.l1 + l2 + ram,  # a line (or a page-table entry) from RAM
        "snoop": machine.hierarchy.snoop_latency,
    }


async def time_single_accesses(machine: hwsim.Machine) -> list[dict[str, Any]]:
    """CPU 0 alone, caches cold: one 8-byte load at each level, against the formula."""
    cpu = machine.cpus[0]
    c = latencies(machine)
    l1 = machine.config.caches.l1d
    same_set = l1.size // l1.ways  # lines this far apart share an L1 set
    buf = await machine.kernel.kmalloc((l1.ways + 1) * same_set)
    vbuf = await machine.kernel.vmalloc(2 * hwsim.PAGE_SIZE)
    rows: list[dict[str, Any]] = []

    async def timed(access: str, addr: int, expected: int, formula: str) -> None:
        walk_cycles = machine.stats()["tlb0"]["walk_cycles"]
        start = machine.now
        await cpu.load(addr, 8)
        rows.append(
            {
                "access": access,
                "cycles": machine.now - start,
                "expected": expected,
                "formula": formula,
                "walk_cycles": machine.stats()["tlb0"]["walk_cycles"] - walk_cycles,
            }
        )

    n, v = DIRECT_MAP_WALK_LEVELS, VMALLOC_WALK_LEVELS
    await timed(
        "first touch, kmalloc page",
        buf,
        c["tlb"] + n * c["miss"] + c["miss"],
        f"tlb + {n} x (l1 + l2 + ram) + l1 + l2 + ram",
    )
    await timed("L1 hit", buf, c["tlb"] + c["l1"], "tlb + l1")
    await timed("L2 miss (RAM)", buf + LINE, c["tlb"] + c["miss"], "tlb + l1 + l2 + ram")
    # Push buf's line out of the L1: after ``ways`` newer lines in its set, LRU has no room
    # left for it. The L2 keeps it (those lines spread over several L2 sets).
    for way in range(1, l1.ways + 1):
        await cpu.load(buf + way * same_set, 8)
    await timed("L1 miss, L2 hit", buf, c["tlb"] + c["l1"] + c["l2"], "tlb + l1 + l2")
    await timed(
        "first touch, vmalloc page",
        vbuf,
        c["tlb"] + v * c["miss"] + c["miss"],
        f"tlb + {v} x (l1 + l2 + ram) + l1 + l2 + ram",
    )
    await timed(
        "next vmalloc page",
        vbuf + hwsim.PAGE_SIZE,
        c["tlb"] + v * c["l1"] + c["miss"],
        f"tlb + {v} x l1 + l1 + l2 + ram",
    )
    return rows


async def exchange_data(machine: hwsim.Machine) -> dict[str, Any]:
    """Both CPUs write lines concurrently; each then reads the other's lines back."""
    cpus = machine.cpus
    bufs = [await machine.kernel.on_cpu(i).kmalloc(LINE * LINES) for i in range(len(cpus))]
    patterns = [machine.random.randbytes(LINE * LINES) for _ in cpus]
    cycles: dict[str, list[int]] = {"store": [], "load": []}
    read_back: list[bytes] = [b""] * len(cpus)
    before = machine.stats()["coherence"]

    async def write(i: int) -> None:
        for line in range(LINES):
            start = machine.now
            chunk = patterns[i][line * LINE : (line + 1) * LINE]
            await cpus[i].store(bufs[i] + line * LINE, chunk)
            cycles["store"].append(machine.now - start)

    async def read(i: int) -> None:
        other = (i + 1) % len(cpus)
        data = bytearray()
        for line in range(LINES):
            start = machine.now
            data += await cpus[i].load(bufs[other] + line * LINE, LINE)
            cycles["load"].append(machine.now - start)
        read_back[other] = bytes(data)

    await in_parallel(write, range(len(cpus)))
    await in_parallel(read, range(len(cpus)))
    after = machine.stats()["coherence"]
    c = latencies(machine)
    return {
        "ok": read_back == patterns,
        "exchange": {
            "lines_per_cpu": LINES,
            "store_cycles_min": min(cycles["store"]),
            "store_cycles_max": max(cycles["store"]),
            "cross_load_cycles_min": min(cycles["load"]),
            "cross_load_cycles_max": max(cycles["load"]),
            "cross_load_expected": c["tlb"] + c["l1"] + c["snoop"] + c["l2"],
            **{key: after[key] - before[key] for key in after},
        },
    }


async def in_parallel(fn: Callable[[int], Awaitable[None]], cpus: Iterable[int]) -> None:
    """Run ``fn(i)`` for each CPU number ``i``, all at the same time, one task each."""
    async with trio.open_nursery() as nursery:
        for i in cpus:
            nursery.start_soon(fn, i)


async def stream(
    machine: hwsim.Machine, bufs: list[int], cpus: list[int]
) -> tuple[dict[int, hwsim.BatchResult], dict[str, int]]:
    """The given CPUs each read their buffer, line by line, at the same time; return their
    results and what the RAM did meanwhile."""
    results: dict[int, hwsim.BatchResult] = {}
    before = machine.stats()["ram"]
    offsets = np.arange(0, STREAM_BYTES, LINE, dtype=np.int64)

    async def run(i: int) -> None:
        results[i] = await machine.cpus[i].access(offsets, 8, base=bufs[i])

    await in_parallel(run, cpus)
    after = machine.stats()["ram"]
    return results, {key: after[key] - before[key] for key in after}


async def streaming(machine: hwsim.Machine) -> dict[str, Any]:
    """Each CPU streams its buffer alone, then all at once: the cost of sharing a channel."""
    everyone = list(range(len(machine.cpus)))
    bufs = [await machine.kernel.on_cpu(i).kmalloc(STREAM_BYTES) for i in everyone]
    # Walk each buffer's page before the runs, so that every run measures the caches and
    # the channel, not a page walk the first run pays and the others do not. The line
    # touched is the buffer's last: the stream (four times the L2) pushes it out of the L1
    # and the L2 long before it gets there, so every access of every run still misses.
    for i in everyone:
        await machine.cpus[i].load(bufs[i] + STREAM_BYTES - LINE, 8)
    alone: dict[int, hwsim.BatchResult] = {}
    for i in everyone:
        results, _ = await stream(machine, bufs, [i])
        alone[i] = results[i]
    together, ram = await stream(machine, bufs, everyone)
    start = min(r.start for r in together.values())
    wall = max(r.done for r in together.values()) - start

    rows: list[dict[str, Any]] = []
    per_access: dict[str, list[float]] = {"alone": [], "together": []}
    slowdowns: list[float] = []
    for i in everyone:
        baseline = alone[i].cycles / alone[i].accesses
        for run, result in (("alone", alone[i]), ("together", together[i])):
            cycles_per_access = result.cycles / result.accesses
            per_access[run].append(cycles_per_access)
            if run == "together":
                slowdowns.append(cycles_per_access / baseline)
            rows.append(
                {
                    "cpu": machine.cpus[i].name,
                    "run": run,
                    "accesses": result.accesses,
                    "cycles": result.cycles,
                    "cycles_per_access": cycles_per_access,
                    "slowdown": cycles_per_access / baseline,
                    "tlb_misses": result.tlb_misses,
                }
            )
    c = latencies(machine)
    return {
        "summary": {
            "alone_cycles_per_access": mean(per_access["alone"]),
            "expected_cycles_per_access": c["tlb"] + c["miss"],
            "contended_cycles_per_access": mean(per_access["together"]),
            "slowdown_max": max(slowdowns),
            # The table rounds the two lines above to 4 digits; the cycles lost show it all.
            "contended_extra_cycles_max": max(
                together[i].cycles - alone[i].cycles for i in everyone
            ),
            "contended_wall_cycles": wall,
            "channel_busy_share": ram["busy_cycles"] / wall,
            "contended_ram_queued_cycles": ram["queued_cycles"],
        },
        "rows": rows,
    }


async def scenario(machine: hwsim.Machine) -> dict[str, Any]:
    # The single accesses go first, while every cache and TLB is still cold.
    single = await time_single_accesses(machine)
    data = await exchange_data(machine)
    streams = await streaming(machine)
    lat = machine.config.latency
    caches = machine.config.caches
    stats = machine.stats()
    return {
        "data_read_back_ok": data["ok"],
        **streams["summary"],
        "config": {
            "cpus": machine.config.cpus,
            "seed": machine.config.seed,
            "tlb_entries": machine.config.tlb.entries,
            "l1d_bytes": caches.l1d.size,
            "l1d_ways": caches.l1d.ways,
            "l2_bytes": 0 if caches.l2 is None else caches.l2.size,
            "line_bytes": caches.l1d.line,
            "latency_tlb": lat.tlb,
            "latency_l1": lat.l1,
            "latency_l2": lat.l2,
            "latency_ram": lat.ram,
            "ram_bytes_per_cycle": lat.ram_bytes_per_cycle,
            "snoop_latency": machine.hierarchy.snoop_latency,
        },
        "single_access": single,
        "exchange": data["exchange"],
        "streaming": streams["rows"],
        "tlb0": stats["tlb0"],
        "l1d0": stats["l1d0"],
        "l2": stats["l2"],
        "ram": stats["ram"],
    }
