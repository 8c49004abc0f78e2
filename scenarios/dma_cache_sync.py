"""Caches versus DMA: without the right dma_sync_* the CPU or the device reads stale bytes.

What it teaches: a DMA controller reads and writes RAM, not the CPU caches. On a bus that
does not snoop (ARM and many SoCs; hwsim's default, ``dma_coherent=False``) a write-back
cache and a device can disagree about a buffer, and the streaming DMA API is what
reconciles them: ``dma_map_single`` / ``dma_sync_single_for_device`` clean (write back) the
buffer's dirty lines before the device reads RAM, ``dma_unmap_single`` /
``dma_sync_single_for_cpu`` invalidate its lines before the CPU reads what the device wrote.
Forget either and the reader sees the old bytes. ``dma_alloc_coherent`` memory needs no
sync at all (it is mapped uncached here, so every CPU access pays RAM's latency), and on a
snooping bus (x86, ``dma_coherent=True``) neither does streaming memory.

What it does. The default machine: two CPUs, a 32 KiB L1d each, a 256 KiB L2, a
non-coherent bus and a DMA controller without an IOMMU (bus address == physical address,
``virt_to_phys``, or the handle dma_map_single returns). Each case takes a fresh 512-byte
buffer (8 cache lines) from kmalloc, or from dma_alloc_coherent where stated, whose
previous contents OLD the device has put in RAM (a DEV_TO_MEM transfer before the case; no
cache holds the buffer). The case then moves NEW bytes (random, from ``machine.random``) one
way: CPU 0 works through kernel virtual addresses (``cpu.store``, ``cpu.load``: its final
read is one 64-byte load per line), the device is the DMA controller with a FIFO peripheral
at the other end (a MEM_TO_DEV descriptor to read the buffer, DEV_TO_MEM to write it), and
what the reader got is compared with NEW and OLD line by line:

1. ``DMA_TO_DEVICE``, no DMA API: the CPU stores NEW, the device reads the buffer;
2. the same with ``dma_map_single`` before the device starts (``dma_unmap_single`` after);
3. ``DMA_FROM_DEVICE``, no DMA API: the CPU reads the buffer (caching OLD), the device
   writes NEW, the CPU reads it again;
4. the same inside ``dma_map_single`` ... ``dma_unmap_single``, the CPU reading after the
   unmap;
5. the subtle one: no line of the buffer is cached when it is mapped (``DMA_FROM_DEVICE``),
   as if the map had invalidated them all, but the driver peeks at its first 8 bytes (a
   status word) while the device owns it, before the device's write lands. ``5a`` then
   reads without a sync (before the unmap), ``5b`` after ``dma_sync_single_for_cpu``;
6. ``dma_alloc_coherent`` memory, no DMA API call: ``6a`` the CPU writes and the device
   reads, ``6b`` the CPU reads, the device writes, the CPU reads;
7. on a second machine, ``evolve(dma_coherent=True)`` (a snooping bus, same seed): ``7a``
   is case 1, ``7b`` case 3, ``7c`` case 2.

The tables: ``cases`` (the sequence, the API calls, NEW (``expected``), OLD and what the
reader ``saw`` as 8-byte hex prefixes, ``per_line``: N where a line held NEW, O where it
held OLD, and ``correct``), ``cache_work`` (the buffer's lines in CPU 0's L1 when the reader
read, and what the case did to ``m.stats()`` up to that read: ``dma_api`` lines written back
and invalidated, ``l1d0`` write-backs; the cycles of the CPU's read), ``why`` (each outcome in
Linux terms), ``cpu_read_cost`` (cycles per line of a first and a second read, one 64-byte
load per line, of a kmalloc buffer and of dma_alloc_coherent memory) and ``summary``.
``--plot FILE`` draws each case's lines, coloured by what the reader saw.

What to expect (measured; every seed gives the same table but for the bytes - seeds 0, 1,
7 and 123 checked):

- 1 and 3 are stale on all 8 lines. In 1 the L1 holds NEW in 8 dirty lines and the device
  reads OLD from RAM. In 3 the CPU's 8 loads hit 8 clean lines of OLD: 40 cycles (5 a line,
  TLB 1 + L1 4) - a stale read is a fast one.
- 2 is correct: the map wrote back 8 lines (``dma_api``: one clean per line address, as
  one ``dc cvac`` per line cleans every level) and the L1 made 8 write-backs. The lines
  stay in the L1, clean: arm64 cleans, it does not invalidate, for the device.
- 4 is correct: the map found nothing dirty (0 written back); the unmap invalidated 8 lines
  (each held in the L1 and the L2), so the read missed to RAM: 968 cycles, 121 a line.
- 5a is stale in line 0 only (``ONNNNNNN``): the peek cached it again, with OLD, and
  nothing invalidated it; the 7 lines nobody touched are right (852 cycles: 1 hit and 7
  misses). 5b is correct: the sync invalidated line 0 (in the L1 and the L2). That
  is why ``arch_sync_dma_for_cpu`` invalidates at sync_for_cpu and unmap rather than
  trusting the map (since 2022 arm64's map only cleans a DMA_FROM_DEVICE buffer): the CPU,
  or its prefetcher, may load a line while the device owns the buffer. The rule: don't
  touch a buffer the device owns; sync_for_cpu before reading.
- 6a and 6b are correct with no DMA API call and no line ever cached. 6b's read costs 840
  cycles, 105 a line (TLB 1 + RAM 104: no cache is looked up, so less than a miss's 121,
  but never a hit). ``cpu_read_cost``: kmalloc memory 121 cycles a line cold and 5 warm,
  dma_alloc_coherent memory 105 both times - 21 times a warm cached read.
- 7a, 7b and 7c are correct. The snooping bus serves the device's read from the 8 dirty L1
  lines (7a) and invalidates the CPU's copies when the device writes (7b: no line in the L1
  at the read, 968 cycles); dma_map_single writes back 0 lines (7c: dma-direct skips cache
  maintenance for a coherent device). There, dma_alloc_coherent memory is cached like any
  other: 121 then 5 cycles a line.

What the model leaves out: no prefetcher and no speculative loads, so only the driver's own
peek re-caches a line in case 5 (real CPUs may do it unasked, which is why the rule has no
exception); and a transfer's bytes land when it is submitted (hwsim's atomic view), so the
peek comes before the submission to find OLD.

Run: ``hwsim run dma_cache_sync --plot dma_cache_sync.png``
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

import hwsim
from hwsim.devices.dma import DEV_TO_MEM, MEM_TO_DEV, DmaDescriptor, FifoPeripheral

CONFIG = hwsim.MachineConfig()

BUFFER_BYTES = 512  # kmalloc-512: 8 cache lines, line aligned
LINE = 64
LINES = BUFFER_BYTES // LINE
PREFIX = 8  # bytes shown of what the reader saw
PEEK = 8  # the status word case 5's driver peeks at
TO_DEVICE = "DMA_TO_DEVICE"
FROM_DEVICE = "DMA_FROM_DEVICE"


class Case:
    """One case on one buffer: the bytes it starts with (OLD, in RAM only) and moves (NEW),
    the DMA API calls made, and the counters when it started."""

    def __init__(self, machine: hwsim.Machine, kind: str, cpu_addr: int, bus: int) -> None:
        self.m = machine
        self.kind = kind
        self.cpu = machine.cpus[0]
        self.addr = cpu_addr
        self.bus = bus  # what the device is given: the physical address, no IOMMU here
        self.phys = machine.kernel.virt_to_phys(cpu_addr)
        self.old = machine.random.randbytes(BUFFER_BYTES)
        self.new = machine.random.randbytes(BUFFER_BYTES)
        self.calls: list[str] = []
        self.lines_at_read = ""
        self.read_cycles: int | None = None
        self.before: dict[str, dict[str, int]] = {}
        self.at_read: dict[str, dict[str, int]] = {}

    @classmethod
    async def kmalloc(cls, machine: hwsim.Machine) -> Case:
        buf = await machine.kernel.kmalloc(BUFFER_BYTES)
        return await cls(machine, "kmalloc", buf, machine.kernel.virt_to_phys(buf)).start()

    @classmethod
    async def coherent(cls, machine: hwsim.Machine) -> Case:
        cpu_addr, handle = await machine.kernel.dma_alloc_coherent(machine.dma, BUFFER_BYTES)
        return await cls(machine, "dma_alloc_coherent", cpu_addr, handle).start()

    async def start(self) -> Case:
        """The device leaves OLD in RAM (a previous transfer); no cache holds the buffer."""
        await self.device_writes(self.old)
        assert self.l1_lines() == "none", "a fresh buffer is not cached"
        self.before = self.m.stats()
        return self

    # -- the two sides

    async def device_writes(self, data: bytes, bus: int | None = None) -> None:
        """A DEV_TO_MEM transfer of ``data`` into the buffer, waited for."""
        at = self.bus if bus is None else bus
        desc = DmaDescriptor(at, len(data), DEV_TO_MEM, peer=FifoPeripheral(data))
        await (await self.m.dma.submit(desc)).wait()

    async def device_reads(self, bus: int | None = None) -> bytes:
        """A MEM_TO_DEV transfer of the buffer, waited for: the bytes the device got."""
        fifo = FifoPeripheral()
        at = self.bus if bus is None else bus
        self.lines_at_read, self.at_read = self.l1_lines(), self.m.stats()
        await (
            await self.m.dma.submit(DmaDescriptor(at, BUFFER_BYTES, MEM_TO_DEV, peer=fifo))
        ).wait()
        return bytes(fifo.received)

    async def cpu_reads(self) -> bytes:
        """CPU 0 reads the buffer, one 64-byte load per line."""
        self.lines_at_read, self.at_read = self.l1_lines(), self.m.stats()
        data = b"".join(
            [await self.cpu.load(self.addr + i, LINE) for i in range(0, BUFFER_BYTES, LINE)]
        )
        self.read_cycles = self.m.stats()["cpu0"]["cycles"] - self.at_read["cpu0"]["cycles"]
        return data

    async def api(self, name: str, *args: int) -> Any:
        """``m.kernel.<name>(m.dma, *args)``, noted in ``api_calls``."""
        self.calls.append(name)
        return await getattr(self.m.kernel, name)(self.m.dma, *args)

    # -- what happened

    def l1_lines(self) -> str:
        """The buffer's lines in CPU 0's L1: ``"8 dirty"``, ``"1 clean"``, ``"none"``."""
        l1 = self.m.hierarchy.l1s[0]
        first = self.phys // LINE
        states = [l1.line_state(ln) for ln in range(first, first + LINES)]
        counts = ((states.count(2), "dirty"), (states.count(1), "clean"))
        return ", ".join(f"{n} {state}" for n, state in counts if n) or "none"

    def per_line(self, saw: bytes) -> str:
        """N where a line of ``saw`` is NEW, O where it is OLD, ? otherwise."""
        marks = []
        for i in range(0, BUFFER_BYTES, LINE):
            chunk = saw[i : i + LINE]
            marks.append(
                "N"
                if chunk == self.new[i : i + LINE]
                else "O"
                if chunk == self.old[i : i + LINE]
                else "?"
            )
        return "".join(marks)

    def record(
        self, name: str, direction: str, sequence: str, saw: bytes, why: str
    ) -> dict[str, Any]:
        def delta(unit: str, counter: str) -> int:
            """What the case did to a counter until the reader read."""
            return self.at_read[unit][counter] - self.before[unit][counter]

        per_line = self.per_line(saw)
        return {
            "case": name,
            "bus": "snooping" if self.m.config.dma_coherent else "non-coherent",
            "buffer": self.kind,
            "direction": direction,
            "sequence": sequence,
            "api_calls": ", ".join(self.calls) or "none",
            "expected": self.new[:PREFIX].hex(),
            "old": self.old[:PREFIX].hex(),
            "saw": saw[:PREFIX].hex(),
            "per_line": per_line,
            "correct": saw == self.new,
            "old_lines_seen": per_line.count("O"),
            "l1_lines_at_read": self.lines_at_read,
            "dma_api_lines_written_back": delta("dma_api", "lines_written_back"),
            "dma_api_lines_invalidated": delta("dma_api", "lines_invalidated"),
            "l1d0_writebacks": delta("l1d0", "writebacks"),
            "cpu_read_cycles": self.read_cycles,
            "why": why,
        }


# ---------------------------------------------------------------------- the cases
# Each returns its row. ``name`` lets case 7 reuse cases 1-3 on the snooping machine.


async def to_device_unsynced(m: hwsim.Machine, name: str = "1") -> dict[str, Any]:
    c = await Case.kmalloc(m)
    await c.cpu.store(c.addr, c.new)
    saw = await c.device_reads()
    why = (
        "snooping bus: the device's read is served from the dirty L1 lines, as x86 does"
        if m.config.dma_coherent
        else "NEW sits dirty in the CPU's write-back L1; the bus does not snoop, so the device "
        "read RAM, which still held OLD. No dma_map_single, so no arch_sync_dma_for_device "
        "cleaned the lines"
    )
    return c.record(name, TO_DEVICE, "CPU stores NEW; device reads", saw, why)


async def to_device_mapped(m: hwsim.Machine, name: str = "2") -> dict[str, Any]:
    c = await Case.kmalloc(m)
    await c.cpu.store(c.addr, c.new)
    handle = await c.api("dma_map_single", c.addr, BUFFER_BYTES, hwsim.DMA_TO_DEVICE)
    saw = await c.device_reads(handle)
    await c.api("dma_unmap_single", handle, BUFFER_BYTES, hwsim.DMA_TO_DEVICE)
    why = (
        "dma-direct skips cache maintenance for a coherent device: the map wrote nothing "
        "back (it is still needed: swiotlb, an IOMMU and dma-debug work through it)"
        if m.config.dma_coherent
        else "dma_map_single ran arch_sync_dma_for_device: every dirty line written back to "
        "RAM (arm64's dc cvac) before the device started; unmap invalidates nothing for "
        "DMA_TO_DEVICE"
    )
    return c.record(name, TO_DEVICE, "CPU stores NEW; map; device reads; unmap", saw, why)


async def from_device_unsynced(m: hwsim.Machine, name: str = "3") -> dict[str, Any]:
    c = await Case.kmalloc(m)
    await c.cpu.load(c.addr, BUFFER_BYTES)
    await c.device_writes(c.new)
    saw = await c.cpu_reads()
    why = (
        "snooping bus: the device's write invalidated the CPU's copies, so the load missed "
        "and read NEW from RAM"
        if m.config.dma_coherent
        else "the CPU's first read left OLD in its L1 (and the L2); the device wrote RAM "
        "behind them and nothing invalidated them (no dma_sync_single_for_cpu or "
        "dma_unmap_single): every load hit a stale line"
    )
    return c.record(name, FROM_DEVICE, "CPU reads; device writes NEW; CPU reads", saw, why)


async def from_device_mapped(m: hwsim.Machine) -> dict[str, Any]:
    c = await Case.kmalloc(m)
    await c.cpu.load(c.addr, BUFFER_BYTES)
    handle = await c.api("dma_map_single", c.addr, BUFFER_BYTES, hwsim.DMA_FROM_DEVICE)
    await c.device_writes(c.new, handle)
    await c.api("dma_unmap_single", handle, BUFFER_BYTES, hwsim.DMA_FROM_DEVICE)
    saw = await c.cpu_reads()
    why = (
        "the map cleaned the lines (none dirty) and left them cached; dma_unmap_single ran "
        "arch_sync_dma_for_cpu, which invalidates them, so the loads missed and fetched the "
        "device's bytes from RAM"
    )
    return c.record(
        "4", FROM_DEVICE, "CPU reads; map; device writes NEW; unmap; CPU reads", saw, why
    )


async def peek_while_device_owns(m: hwsim.Machine, sync: bool) -> dict[str, Any]:
    c = await Case.kmalloc(m)
    handle = await c.api("dma_map_single", c.addr, BUFFER_BYTES, hwsim.DMA_FROM_DEVICE)
    await c.cpu.load(c.addr, PEEK)  # the bug: a look at the status word the device owns
    await c.device_writes(c.new, handle)
    if sync:
        await c.api("dma_sync_single_for_cpu", handle, BUFFER_BYTES, hwsim.DMA_FROM_DEVICE)
    saw = await c.cpu_reads()
    await c.api("dma_unmap_single", handle, BUFFER_BYTES, hwsim.DMA_FROM_DEVICE)
    if sync:
        name, after = "5b", "sync_for_cpu; CPU reads; unmap"
        why = (
            "the same peek, but dma_sync_single_for_cpu invalidated the re-cached line "
            "before the read: arch_sync_dma_for_cpu invalidates at sync/unmap because the "
            "CPU (or its prefetcher) may load lines while the device owns the buffer"
        )
    else:
        name, after = "5a", "CPU reads; unmap"
        why = (
            "no line was cached at map time, but the peek at the status word while the "
            "device owned the buffer cached line 0 again, with OLD in it; read before any "
            "sync_for_cpu, that line is stale (the 7 lines nobody touched are right)"
        )
    sequence = f"map; CPU peeks {PEEK} bytes; device writes NEW; {after}"
    return c.record(name, FROM_DEVICE, sequence, saw, why)


async def coherent_to_device(m: hwsim.Machine) -> dict[str, Any]:
    c = await Case.coherent(m)
    await c.cpu.store(c.addr, c.new)
    saw = await c.device_reads()
    why = (
        "dma_alloc_coherent memory is mapped uncached on a non-coherent bus (its lines were "
        "cleaned and invalidated once, by arch_dma_prep_coherent): the CPU's stores went "
        "straight to RAM"
    )
    return c.record("6a", TO_DEVICE, "CPU stores NEW; device reads", saw, why)


async def coherent_from_device(m: hwsim.Machine) -> dict[str, Any]:
    c = await Case.coherent(m)
    await c.cpu.load(c.addr, BUFFER_BYTES)
    await c.device_writes(c.new)
    saw = await c.cpu_reads()
    why = (
        "uncached: no line was ever cached, every load went to RAM and saw the device's "
        "write at once. The price is RAM's latency on every access (cpu_read_cost)"
    )
    return c.record("6b", FROM_DEVICE, "CPU reads; device writes NEW; CPU reads", saw, why)


async def read_cost(m: hwsim.Machine, kind: str) -> dict[str, Any]:
    """Cycles per line of two reads of a buffer the CPU has not cached, one 64-byte load
    per line (a batched ``cpu.access``)."""
    if kind == "kmalloc":
        c = await Case.kmalloc(m)
    else:
        c = await Case.coherent(m)
    offsets = np.arange(0, BUFFER_BYTES, LINE, dtype=np.int64)
    first = await c.cpu.access(offsets, sizes=LINE, base=c.addr)
    second = await c.cpu.access(offsets, sizes=LINE, base=c.addr)
    return {
        "bus": "snooping" if m.config.dma_coherent else "non-coherent",
        "buffer": kind,
        "mapped_uncached": m.dma_api.model.is_uncached(c.phys),
        "first_read_cycles_per_line": int(first.latencies.sum()) // LINES,
        "second_read_cycles_per_line": int(second.latencies.sum()) // LINES,
    }


async def scenario(machine: hwsim.Machine) -> dict[str, Any]:
    rows = [
        await to_device_unsynced(machine),
        await to_device_mapped(machine),
        await from_device_unsynced(machine),
        await from_device_mapped(machine),
        await peek_while_device_owns(machine, sync=False),
        await peek_while_device_owns(machine, sync=True),
        await coherent_to_device(machine),
        await coherent_from_device(machine),
    ]
    cost = [await read_cost(machine, "kmalloc"), await read_cost(machine, "dma_alloc_coherent")]
    # dma_coherent is machine-wide: a second machine with a snooping bus, same seed.
    async with hwsim.boot(machine.config.evolve(dma_coherent=True)) as x86:
        rows += [
            await to_device_unsynced(x86, "7a"),
            await from_device_unsynced(x86, "7b"),
            await to_device_mapped(x86, "7c"),
        ]
        cost.append(await read_cost(x86, "dma_alloc_coherent"))

    keys = ("case", "bus", "buffer", "direction", "sequence", "api_calls")
    cases = [
        {k: r[k] for k in (*keys, "expected", "old", "saw", "per_line", "correct")} for r in rows
    ]
    work = [
        {
            k: r[k]
            for k in (
                "case",
                "l1_lines_at_read",
                "dma_api_lines_written_back",
                "dma_api_lines_invalidated",
                "l1d0_writebacks",
                "cpu_read_cycles",
                "old_lines_seen",
            )
        }
        for r in rows
    ]
    by_case = {r["case"]: r for r in rows}
    return {
        "summary": {
            "buffer_bytes": BUFFER_BYTES,
            "cache_lines": LINES,
            "stale_cases": ", ".join(r["case"] for r in rows if not r["correct"]),
            "correct_cases": ", ".join(r["case"] for r in rows if r["correct"]),
            "map_to_device_lines_written_back": by_case["2"]["dma_api_lines_written_back"],
            "unmap_from_device_lines_invalidated": by_case["4"]["dma_api_lines_invalidated"],
            "coherent_read_cycles_per_line": cost[1]["second_read_cycles_per_line"],
            "cached_read_cycles_per_line": cost[0]["second_read_cycles_per_line"],
        },
        "cases": cases,
        "cache_work": work,
        "why": [{"case": r["case"], "why": r["why"]} for r in rows],
        "cpu_read_cost": cost,
    }


def plot(result: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """One row per case, one cell per cache line of the buffer: green where the reader saw
    the new bytes, red where it saw the old ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    cases = result["cases"]
    grid = np.array([[{"N": 1, "O": 0}.get(ch, 0.5) for ch in r["per_line"]] for r in cases])
    colours = ListedColormap(["tab:red", "lightgrey", "tab:green"])
    fig, ax = plt.subplots(figsize=(10, 0.42 * len(cases) + 1.8), layout="constrained")
    ax.imshow(grid, cmap=colours, vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(LINES), [f"line {i}" for i in range(LINES)], fontsize="small")
    ax.set_yticks(range(len(cases)), [_label(r) for r in cases], fontsize="small")
    ax.set_xticks(np.arange(-0.5, LINES), minor=True)
    ax.set_yticks(np.arange(-0.5, len(cases)), minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    for y, r in enumerate(cases):
        ax.text(LINES - 0.3, y, "correct" if r["correct"] else "STALE", va="center")
    ax.legend(
        handles=[
            Patch(color="tab:green", label="the reader saw the new bytes"),
            Patch(color="tab:red", label="the reader saw the old (stale) bytes"),
        ],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.06),
        ncols=2,
        fontsize="small",
    )
    fig.suptitle("Caches versus DMA: what the reader of each 64-byte line saw")
    fig.savefig(path)
    plt.close(fig)


def _label(row: dict[str, Any]) -> str:
    """``"5b  from device, kmalloc: map, sync_for_cpu, unmap"``: a case in a few words."""
    direction = "to device" if row["direction"] == TO_DEVICE else "from device"
    buffer = "coherent" if row["buffer"] == "dma_alloc_coherent" else row["buffer"]
    calls = row["api_calls"].replace("dma_", "").replace("_single", "")
    if "peeks" in row["sequence"]:
        calls = calls.replace("map, ", "map, peek, ", 1)
    bus = ", snooping bus" if row["bus"] == "snooping" else ""
    return (
        f"{row['case']}  {direction}, {buffer}{bus}: {calls if calls != 'none' else 'no DMA API'}"
    )
