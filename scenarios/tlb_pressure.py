"""TLB pressure: vmalloc memory needs a TLB entry per 4 KiB page, kmalloc memory one per 2 MiB.

What it teaches: a buffer's mapping decides what it costs the TLB, not its size. kmalloc
memory lives in the kernel's direct map, which x86_64 maps with 2 MiB pages: a 4 MiB kmalloc
buffer (the largest kmalloc there is, one order-10 block) is two TLB entries. vmalloc
stitches single pages together behind 4 KiB PTEs: the same 4 MiB is 1024 pages, 1024 TLB
entries, and a four-level walk (PGD, PUD, PMD, PTE) for every page the TLB does not hold.
The machine's TLB has 64 entries (16 sets of 4 ways): its reach is 256 KiB of vmalloc
memory, 128 MiB of direct map. That is one reason the kernel prefers kmalloc, and why
kvmalloc tries kmalloc first.

What it does, on one CPU with the default 64-entry TLB, 32 KiB L1d and 256 KiB L2: it
kmallocs 4 MiB and vmallocs 4 MiB, then reads each buffer with three access patterns, each
a batched ``cpu.access`` of 64-byte loads:

- ``sequential``: every 64-byte line in address order (65,536 loads, all 4 MiB). The
  caches miss on every line either way; vmalloc walks once per page, i.e. once every 64
  loads, so the walks are diluted in the RAM latency;
- ``page_stride``: one line per 4 KiB page, in address order (1,024 loads). Each page's
  line is picked at random, so the lines spread over the cache sets and fit in the L2 (at
  offset 0 in every page they would pile into a few sets and miss for that reason alone - a
  different lesson);
- ``random_pages``: the same 1,024 lines, pages in a random order. ``machine.random`` picks
  the lines and the order, so the seed decides them.

Each pattern runs on each buffer twice from a clean start (TLB and caches emptied, as
``__flush_tlb_all()`` and ``wbinvd`` would, outside the measurement): ``cold``, then at once
``warm``. Every row is the difference of ``machine.stats()`` across one batch: TLB misses
and page walks (``tlb0``), the walks' cycles (the walker's reads go through the L1, so a
page-table line in the cache is cheap), the batch's cycles, cycles per byte read, the share
of the cycles spent walking, and L1/L2 misses (walker reads included). ``vmalloc_vs_kmalloc``
puts the two buffers side by side. Finally random bytes stored through each buffer - also across
a 4 KiB boundary (two PTEs in the vmalloc buffer) and the 2 MiB boundary (two PMD entries
in the kmalloc buffer) - are loaded back (``data_read_back_ok``).

What to expect (seed 0, the default; seeds 1 and 7 give the same TLB counts and cycles
within 1 %): kmalloc misses the TLB twice per cold pass - one walk per 2 MiB page,
three entries (PGD, PUD, PMD) - and never when warm. vmalloc misses 1,024 times in every
pass, cold or warm: 1,024 pages cannot stay in 64 entries. In every row of
``vmalloc_vs_kmalloc`` the extra cycles equal the extra walk cycles: the walks are the
whole difference.

- ``sequential``: every load misses the L1 and the L2 either way (4 MiB streams through a
  256 KiB L2), 121 cycles each: 1.891 cycles per byte for kmalloc. vmalloc's 1,024 walks
  cost 31,232 cycles warm (~30.5 each: the three upper-level entries hit in the L1, the PTE
  line - 8 PTEs - misses to RAM once every 8 pages), 0.39 % of its 7.96 M cycles: 1.898
  cycles per byte, 1.004x kmalloc's time. When every load goes to RAM anyway, the walks
  disappear in the noise. kmalloc's cold pass walks twice for 720 cycles: the second walk,
  at the 2 MiB boundary, finds its entries evicted by the first 2 MiB of data.
- ``page_stride`` cold: every load misses to RAM again (121.4 cycles for kmalloc), and
  vmalloc adds a walk to each: 151.8 cycles per load, 20.3 % of them walking, 1.25x. Warm,
  the 1,024 lines (64 KiB) hit in the L2: kmalloc needs 17 cycles per load (TLB 1 + L1 4 +
  L2 12), vmalloc 34.5, because its walks (17.5 cycles each, PTE lines from the L1 or L2)
  are now half its time (50.7 %): 2.03x kmalloc's time for the same data.
- ``random_pages``: the same, 1.25x cold and 1.98x warm (49.5 % walking). A random order is
  no worse for the walker here: each PTE line serves 8 walks spread over the pass and
  stays in the L1 between them, so fewer walker reads miss the L1 than in address order
  (59 against 128 warm).

``buffers`` shows the mappings, read from the page tables: the kmalloc buffer is two PMD
entries, the vmalloc buffer 1,024 PTEs. Its pages happen to be physically contiguous here
too (1,022 of the 1,023 follow the previous one: a fresh machine's allocator hands out
neighbours), which changes nothing: the TLB caches what the page tables say, and they say
4 KiB. (Linux maps plain vmalloc()
memory with 4 KiB pages too; only vmalloc_huge() callers may get PMD mappings.)
What the model leaves out makes some numbers larger or smaller than on a desktop CPU: it has
one TLB level, as a small embedded core does (a big x86 core adds a second-level TLB of a
thousand or two entries, which would hold all 1,024 pages warm); no paging-structure
caches, so each walk reads all four levels (12 of a warm walk's 17.5 cycles are the upper
three); and no prefetcher or overlapping misses, so a sequential read is latency-bound at
121 cycles a line instead of streaming.

``--plot FILE`` draws TLB misses and cycles per load, split into walks and the rest.

Run: ``hwsim run tlb_pressure --plot tlb_pressure.png``
"""

from __future__ import annotations

import itertools
import os
import random
from typing import Any

import numpy as np
import numpy.typing as npt

import hwsim

CONFIG = hwsim.MachineConfig(ram="64MiB", cpus=1, tlb=hwsim.TlbConfig(entries=64, ways=4))

BUFFER_BYTES = 4 << 20  # kmalloc's maximum: one order-10 block
LINE = 64  # bytes per load: one cache line
PAGE = hwsim.PAGE_SIZE
PAGES = BUFFER_BYTES // PAGE
PATTERNS = ("sequential", "page_stride", "random_pages")
PASSES = ("cold", "warm")
BUFFERS = ("kmalloc", "vmalloc")


def access_patterns(rng: random.Random) -> dict[str, npt.NDArray[np.int64]]:
    """Byte offsets into a buffer, one per 64-byte load, for each pattern."""
    pages = np.arange(PAGES, dtype=np.int64)
    # One line of each page, at random: the lines spread over the cache sets. (At the same
    # offset in every page they would share a few sets and miss for that reason alone.)
    line_in_page = np.array([rng.randrange(PAGE // LINE) for _ in range(PAGES)]) * LINE
    order = list(range(PAGES))
    rng.shuffle(order)
    shuffled = np.array(order, dtype=np.int64)
    return {
        "sequential": np.arange(0, BUFFER_BYTES, LINE, dtype=np.int64),
        "page_stride": pages * PAGE + line_in_page,
        "random_pages": shuffled * PAGE + line_in_page[shuffled],
    }


def cold_start(machine: hwsim.Machine) -> None:
    """Empty every TLB and cache, untimed and outside any measurement: what
    ``__flush_tlb_all()`` (kernel mappings are global, so global entries too) and
    ``wbinvd`` (write back, then invalidate) would leave behind."""
    machine.flush_tlb_all()
    machine.wbinvd()


async def measure(
    machine: hwsim.Machine, buf: int, offsets: npt.NDArray[np.int64]
) -> dict[str, Any]:
    """One batch of 64-byte loads at ``buf + offsets`` on CPU 0; the counters it moved."""
    before = machine.stats()
    result = await machine.cpus[0].access(offsets, sizes=LINE, base=buf)
    after = machine.stats()

    def delta(unit: str, counter: str) -> int:
        return after[unit][counter] - before[unit][counter]

    nbytes = len(offsets) * LINE
    walk_cycles = delta("tlb0", "walk_cycles")
    # Two views of one batch that must agree: the TLB's counters and the CPU's result.
    assert walk_cycles == result.walk_cycles
    assert delta("tlb0", "misses") == result.tlb_misses
    assert delta("cpu0", "cycles") == result.cycles
    return {
        "loads": len(offsets),
        "tlb_misses": delta("tlb0", "misses"),
        "walks": delta("tlb0", "walks"),
        "walk_cycles": walk_cycles,
        "cycles": result.cycles,
        "cycles_per_byte": result.cycles / nbytes,
        "cycles_per_load": result.cycles / len(offsets),
        "walk_share_pct": 100 * walk_cycles / result.cycles,
        "l1_misses": delta("l1d0", "load_misses") + delta("l1d0", "store_misses"),
        "l2_misses": delta("l2", "load_misses") + delta("l2", "store_misses"),
    }


async def read_back(machine: hwsim.Machine, buf: int, rng: random.Random) -> bool:
    """Store 256 random bytes at a few places of ``buf`` (one across a page boundary and
    one across the 2 MiB boundary) and load them back."""
    cpu = machine.cpus[0]
    places = (0, PAGE - 100, (2 << 20) - 128, BUFFER_BYTES - 256)
    patterns = [rng.randbytes(256) for _ in places]
    for offset, data in zip(places, patterns, strict=True):
        await cpu.store(buf + offset, data)
    loaded = [await cpu.load(buf + offset, 256) for offset in places]
    return loaded == patterns


def describe_mapping(machine: hwsim.Machine, name: str, buf: int) -> dict[str, Any]:
    """How the page tables map ``buf``: page size, the TLB entries it needs (distinct
    pages), and how many of its 4 KiB pieces follow the previous one in physical memory.
    Functional walks: no TLB, no statistics, no time."""
    walk = machine.mmus[0].model.walk
    walks = [walk(buf + offset) for offset in range(0, BUFFER_BYTES, PAGE)]
    sizes = {t.page_size for t in walks}
    pages = {t.vaddr // t.page_size for t in walks}
    pfns = [t.pfn for t in walks]
    return {
        "buffer": name,
        "address": f"{buf:#x}",
        "mapped_by": "/".join(sorted({t.level for t in walks})),
        "page_size": "/".join(f"{s >> 10} KiB" if s < 1 << 20 else f"{s >> 20} MiB" for s in sizes),
        "tlb_entries_needed": len(pages),
        "4k_pieces_physically_after_previous": sum(b == a + 1 for a, b in itertools.pairwise(pfns)),
    }


async def scenario(machine: hwsim.Machine) -> dict[str, Any]:
    kernel = machine.kernel
    buffers = {
        "kmalloc": await kernel.kmalloc(BUFFER_BYTES),
        "vmalloc": await kernel.vmalloc(BUFFER_BYTES),
    }
    mappings = [describe_mapping(machine, name, buf) for name, buf in buffers.items()]
    patterns = access_patterns(machine.random)

    runs: list[dict[str, Any]] = []
    for pattern in PATTERNS:
        for name, buf in buffers.items():
            cold_start(machine)
            for pass_ in PASSES:
                row = await measure(machine, buf, patterns[pattern])
                runs.append({"pattern": pattern, "buffer": name, "pass": pass_, **row})

    by_key = {(r["pattern"], r["buffer"], r["pass"]): r for r in runs}
    comparison = []
    for pattern in PATTERNS:
        for pass_ in PASSES:
            k, v = by_key[pattern, "kmalloc", pass_], by_key[pattern, "vmalloc", pass_]
            extra = v["cycles"] - k["cycles"]
            comparison.append(
                {
                    "pattern": pattern,
                    "pass": pass_,
                    "kmalloc_cycles": k["cycles"],
                    "vmalloc_cycles": v["cycles"],
                    "vmalloc_slowdown": v["cycles"] / k["cycles"],
                    "extra_cycles": extra,
                    "extra_walk_cycles": v["walk_cycles"] - k["walk_cycles"],
                    "extra_tlb_misses": v["tlb_misses"] - k["tlb_misses"],
                }
            )

    read_back_ok = True
    for buf in buffers.values():
        read_back_ok &= await read_back(machine, buf, machine.random)
    tlb = machine.config.tlb
    seq = {b: by_key["sequential", b, "cold"] for b in BUFFERS}
    page_walk = {b: by_key["page_stride", b, "warm"] for b in BUFFERS}
    return {
        "summary": {
            "buffer_bytes": BUFFER_BYTES,
            "tlb_entries": tlb.entries,
            "tlb_ways": tlb.ways,
            "tlb_reach_with_4k_pages_KiB": tlb.entries * PAGE >> 10,
            "tlb_reach_with_2m_pages_MiB": tlb.entries * 2,
            "sequential_cold_kmalloc_tlb_misses": seq["kmalloc"]["tlb_misses"],
            "sequential_cold_vmalloc_tlb_misses": seq["vmalloc"]["tlb_misses"],
            "page_stride_warm_vmalloc_slowdown": (
                page_walk["vmalloc"]["cycles"] / page_walk["kmalloc"]["cycles"]
            ),
            "data_read_back_ok": read_back_ok,
        },
        "buffers": mappings,
        "runs": runs,
        "vmalloc_vs_kmalloc": comparison,
    }


def plot(result: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Left: TLB misses per pass (log scale). Right: cycles per load, the page-walk part
    hatched, for each pattern and pass, kmalloc and vmalloc side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = result["runs"]
    groups = [(p, s) for p in PATTERNS for s in PASSES]
    x = np.arange(len(groups))
    width = 0.38
    colours = {"kmalloc": "tab:blue", "vmalloc": "tab:orange"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), layout="constrained")
    for i, buffer in enumerate(BUFFERS):
        rows = {(r["pattern"], r["pass"]): r for r in runs if r["buffer"] == buffer}
        at = x + (i - 0.5) * width
        misses = [rows[g]["tlb_misses"] for g in groups]
        # On a log scale 0 has no bar: draw a stub and write the true count on top.
        bars = left.bar(at, [max(m, 0.5) for m in misses], width, color=colours[buffer])
        bars.set_label(buffer)
        left.bar_label(bars, [f"{m:,}" for m in misses], fontsize="x-small")
        per_load = [rows[g]["cycles"] / rows[g]["loads"] for g in groups]
        walk = [rows[g]["walk_cycles"] / rows[g]["loads"] for g in groups]
        rest = [a - b for a, b in zip(per_load, walk, strict=True)]
        right.bar(at, rest, width, color=colours[buffer], label=f"{buffer}: data")
        right.bar(
            at,
            walk,
            width,
            bottom=rest,
            color=colours[buffer],
            hatch="//",
            edgecolor="black",
            label=f"{buffer}: page walks",
        )
    labels = [f"{p.replace('_', ' ')}\n{s}" for p, s in groups]
    for ax in (left, right):
        ax.set_xticks(x, labels, fontsize="small")
    left.legend(fontsize="small", loc="upper right")
    right.legend(fontsize="small", loc="upper center", ncols=2)
    right.set_ylim(0, 1.35 * max(r["cycles"] / r["loads"] for r in runs))
    left.set_yscale("log")
    left.set_ylim(0.3, 2e4)
    left.set_ylabel("TLB misses per pass")
    left.set_title("TLB misses: 2 MiB direct map vs 4 KiB vmalloc pages")
    right.set_ylabel("cycles per 64-byte load")
    right.set_title("Where the cycles go")
    fig.savefig(path)
    plt.close(fig)
