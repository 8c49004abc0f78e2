"""DMA vs vmalloc: a 1 MiB DMA buffer on an aged, fragmented machine, six ways and a wrong one.

What it teaches: why a DMA buffer must be physically contiguous, what a driver does about it,
and which hardware each answer needs. A CPU reaches memory through its page tables; a device
(without an IOMMU) puts physical addresses on the bus. kmalloc memory is physically
contiguous, so one bus address and a length describe it, but the buddy allocator only finds
256 contiguous pages while memory is young. vmalloc always succeeds because it stitches single
pages together in virtual space only: its pages are scattered, so a device cannot be handed
"the" address of it. The Linux answers: a scatterlist (one DMA descriptor per physically
contiguous run), which needs a scatter-gather controller; an area set aside at boot (CMA, via
dma_alloc_coherent); or an IOMMU that gives the device a contiguous view of scattered pages.
And the classic bug: a driver passes the physical address of the vmalloc buffer's first page
with the whole length, and the device writes over whatever follows that page in RAM.

The machines. The scenario runs on the default embedded board, ``CONFIG = MachineConfig()``
(64 MiB x86_64, 2 CPUs, a 4-channel DMA controller without scatter-gather, 32-bit mask, 64
KiB max segment, a non-coherent bus, no CMA, no IOMMU; ``--seed`` changes only the seed). The
rows that need other hardware run on variant machines that the scenario boots itself from
``CONFIG.evolve(...)``, each one change away from the default, each aged exactly as the
default board with the same seed: ``+ SG controller`` (``dma=DmaConfig(scatter_gather=True)``),
``+ 8 MiB CMA`` (``cma="8MiB"``) and ``+ IOMMU, max seg 4 GiB`` (``iommu=True`` and
``DmaConfig(scatter_gather=True, max_segment_size=4 GiB - 1)``: ``dma_set_max_seg_size(dev,
UINT_MAX)``, as drivers behind an IOMMU do). The ``machines`` table says what each has and
why its row needs it; the ``machine`` column of ``rows`` says where each row ran. The CMA
area must exist before ageing: it is reserved at boot (``cma=8M`` on Linux's command line)
as a run of pageblocks taken before anything could fragment them; no allocation after
ageing could build it. (hwsim does not lend the area to movable allocations, as Linux does,
so that board's page cache fills 8 MiB less: its buddyinfo differs; the SG and IOMMU boards
age to the very same buddyinfo, and the SG board's vmalloc gets the very same pages as the
default board's ``vmalloc + dma_map_sg``.) CPU 0 does all the reading; CPU 1 stays idle.

What it does. First, the reference: kmalloc(1 MiB) on the fresh default board, received into
and read back. Then the board ages (``age``): the page cache (single movable pages) fills
memory, reclaim drops a random half, 1,500 kernel objects (kmalloc 256 B - 8 KiB, unmovable)
land in the holes, reclaim drops 60 % of the rest. /proc/buddyinfo of every board is in
``buddyinfo``. Then each driver gets a 1 MiB buffer and lets a device (a FIFO peripheral, as a
NIC or a disk receiving data) write 1 MiB of random bytes into it (DEV_TO_MEM), each
descriptor naming the buffer's owner for the controller's naive-driver detector; then CPU 0
reads the buffer line by line (16,384 loads, one batched ``cpu.access``, the TLB emptied
first) and the bytes are compared with what the device sent. The naive driver runs last on
the default board: it wrecks it.

The tables: ``machines``; ``rows`` (did allocation succeed; physically contiguous runs,
counted with ``vmalloc_to_pfn`` page by page; the DMA outcome; descriptors; whether the data
read was right); ``before_ageing`` (the same for the reference); ``cycles`` (allocation; DMA
API calls - building the scatterlist, mapping, unmapping; the transfer; the CPU's read, its
TLB misses and the page walks within it); ``transfers`` (each transfer's cycles split into
descriptor fetches, IOTLB misses and moving the data); ``why`` (what the kernel said, and why,
in Linux terms); ``summary``; ``naive_driver_victims`` (the pages the naive driver's device
wrote that the buffer does not own, by owner, from ``machine.page_owner``); ``buddyinfo``.
``--plot FILE`` draws the cycles of each step and the runs, descriptors and TLB misses of each
way, with its machine.

What to expect (seed 0, the default; measured):

- ageing leaves 41.8 MiB of 57.7 free and no free block above order 4 (64 KiB): buddyinfo
  goes from 12 order-10 blocks to 2,444 / 1,594 / 776 / 209 / 19 blocks of orders 0-4.
- reference, kmalloc on the fresh board: 300 cycles, 1 run, dma_map_single 100 cycles, 1
  descriptor, the transfer 131,172 cycles (1 MiB at 8 bytes a cycle, plus the RAM's latency),
  dma_unmap_single 100; the read 1,982,824 cycles (16,384 x 121 for lines from RAM, plus one
  360-cycle walk: the direct map's 2 MiB pages cost 1 TLB miss); data right.
- ``kmalloc`` after ageing: "page allocation failure: order:8", after 11,240 cycles (the
  slab and page-allocator searches, the per-CPU lists drained, the slow path's retries:
  ``ALLOC_FAILURE_CYCLES``; Linux would also reclaim and compact). The driver gets NULL.
- ``vmalloc + dma_map_sg`` on the default board (the first vmalloc after ageing: 86,042
  cycles, which include the page-table pages of the vmalloc range): 256 runs, so 256
  segments; the scatterlist costs 25,600 cycles (a page-table walk per page) and dma_map_sg
  returns 0: "dma: the device cannot do scatter-gather and the list maps to 256 segments".
  Rejected: the controller cannot do scatter-gather. A chain built by hand is refused by the
  controller itself (``DmaDescriptorError``: "controller has no scatter-gather ... got 256
  descriptors"). Nothing moves.
- ``vmalloc + dma_map_single``: vmalloc 60,450 cycles (a later vmalloc's cost depends on the
  per-CPU free lists, which a failing allocation drains: the naive driver's costs 84,870),
  236 runs; "dma: rejecting DMA map of vmalloc memory [addr=0xffffc90000000000] (the vmalloc
  area of mydrv_probe)", after the API's 100-cycle entry checks. Nothing moves.
- ``vmalloc + scatter-gather`` on ``+ SG controller``: the same 256 pages, 256 segments, 256
  descriptors (no run reaches the 64 KiB max segment size); map and unmap 100 cycles each.
  The transfer costs 157,182 cycles: the contiguous 131,172 plus 255 descriptor fetches of
  102 cycles (a 32-byte RAM read each: latency 100 + 2), 26,010 cycles, 20 % slower. The read
  1,990,620 cycles: 256 TLB misses, 8,156 cycles of walks - vmalloc's 4 KiB PTEs; data right.
- ``dma_alloc_coherent (CMA)`` on ``+ 8 MiB CMA`` ("cma: Reserved 8 MiB at
  0x0000000001800000" at boot; after ageing 35.5 MiB free, none above order 4): 100 cycles,
  256 pages at pfn 0x1800 inside the area (/proc/meminfo: CmaTotal 8192 kB, CmaFree 7168 kB
  while it is held), 1 run, 1 descriptor (the default controller would take it), no sync
  call; the transfer 131,172; the read 1,720,680 cycles: the buffer is mapped uncached on this
  non-coherent bus, so each line comes straight from RAM (105 cycles: TLB 1 + RAM 104, no
  L1/L2 lookup), never stale; 1 TLB miss; data right. On the default board, without CMA,
  dma_alloc_coherent falls back to the buddy allocator: "page allocation failure: order:8,
  mode:0xcc4(GFP_KERNEL|GFP_DMA32)".
- ``vmalloc + IOMMU`` on ``+ IOMMU, max seg 4 GiB``: 256 runs, one range of IOVAs
  (0xfff00000 up), 1 segment, 1 descriptor (with the default 64 KiB max segment size it would
  be 16, and 15 descriptor fetches). The transfer costs 156,772 cycles: 25,600 more than a
  contiguous buffer, 256 IOTLB misses of 100 cycles. The read is the same as with the
  scatterlist; data right. The naive driver on this machine gets a DMAR fault instead of
  corrupting memory ("fault addr 0x3bff000 ... PTE Write access is not set").
- ``vmalloc, naive driver`` on the default board: the transfer "succeeds" in 131,172 cycles
  with status ``corruption``: of the 256 pages from the first one, 227 belong to others - 83
  free pages, 55 page-cache pages (alloc_pages), 54 of slab kmalloc-8k, 16 of kmalloc-2k, 13
  of kmalloc-4k, 3 of kmalloc-512, 1 of kmalloc-256 and 2 page-table pages - and only 29 of
  the buffer's own pages were in range; 1 of its 256 pages holds the right data. The
  KASAN-style report ("BUG: KASAN: wild-memory-access in dma channel 1") lists them. The two
  page-table pages are the buffer's own PMD and PTE pages: its PMD entry now holds random
  bytes that read as a 2 MiB page at physical 0xa706868000000, so CPU 0's read stops at its
  first line with a machine check ("machine check: access 0 of the batch ... beyond the end
  of RAM"; the MMU's functional walk names the entry).

Seeds 0-7 all give: kmalloc fails (largest free order 4 or 5), dma_map_single rejected
(231-241 runs), dma_map_sg on the default board returns 0 (254-256 segments), the SG board
takes 254-256 descriptors (transfer 156,978-157,182 cycles, always 131,172 + (descriptors -
1) x 102), CMA 1 run and 1 descriptor, the IOMMU 1 descriptor in 156,772 cycles, the naive
driver corrupts 216-255 pages. Its aftermath depends on whether the buffer's page-table
pages are in range and on the random bytes that land in them: seeds 0, 3, 4 and 7, the PMD
entry reads as a 2 MiB page beyond RAM (a machine check at the first line); seed 2, the PMD
entry and seed 6, the PTE (only the PTE page was hit) read as not present, seed 5, the PMD
entry points to a "table" beyond RAM (all three oops at the first line: "BUG: unable to
handle page fault", the last one with hwsim's "corrupted page table"); seed 1, no page table
is in range and the CPU reads 1 MiB of wrong data without a fault.

What the model leaves out: compaction (Linux could migrate the page-cache pages, not the
slab objects, and might still find 1 MiB after a long wait); CMA pages lent to movable
allocations (and migrated out by cma_alloc); the memset of dma_alloc_coherent; the slow
path's cost of a failing allocation.

Run: ``hwsim run dma_vs_vmalloc --json dma_vs_vmalloc.json --plot dma_vs_vmalloc.png``
"""

from __future__ import annotations

import collections
import itertools
import os
import random
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import numpy as np

import hwsim
from hwsim.devices.dma import DESCRIPTOR_BYTES, DEV_TO_MEM, DmaDescriptor, FifoPeripheral

# The default embedded board; ``hwsim run --seed N`` replaces the seed.
CONFIG = hwsim.MachineConfig(seed=0)

BUFFER_BYTES = 1 << 20  # order 8: 256 pages
PAGE = hwsim.PAGE_SIZE
PAGES = BUFFER_BYTES // PAGE
LINE = 64  # the CPU reads the buffer one cache line at a time
FROM_DEVICE = hwsim.DMA_FROM_DEVICE
CMA_BYTES = 8 << 20
UINT_MAX = (1 << 32) - 1  # dma_set_max_seg_size(dev, UINT_MAX), as NVMe and many IOMMU users do
READER = 0  # the CPU that reads the buffers (the default board has two; CPU 1 stays idle)

# The machines: the default board and the three variants, each one change away from it.
DEFAULT = "default"
SG_BOARD = "+ SG controller"
CMA_BOARD = "+ 8 MiB CMA"
IOMMU_BOARD = "+ IOMMU, max seg 4 GiB"

# The ways, in the order of the table; SHORT labels the plot.
KMALLOC = "kmalloc"
MAP_SINGLE = "vmalloc + dma_map_single"
SG_REJECTED = "vmalloc + dma_map_sg"
SCATTER_GATHER = "vmalloc + scatter-gather"
CMA = "dma_alloc_coherent (CMA)"
IOMMU = "vmalloc + IOMMU"
NAIVE = "vmalloc, naive driver"
FRESH = "kmalloc, fresh machine"
WAYS = (KMALLOC, MAP_SINGLE, SG_REJECTED, SCATTER_GATHER, CMA, IOMMU, NAIVE)
SHORT = {
    KMALLOC: "kmalloc",
    MAP_SINGLE: "vmalloc +\nmap_single",
    SG_REJECTED: "vmalloc +\nmap_sg, no SG",
    SCATTER_GATHER: "vmalloc +\nSG controller",
    CMA: "CMA\ncoherent",
    IOMMU: "vmalloc +\nIOMMU",
    NAIVE: "naive\ndriver",
    FRESH: "kmalloc,\nfresh machine",
}
# What the ``rows``, ``cycles`` and ``transfers`` tables show of each way's record.
ROW_KEYS = ("way", "machine", "alloc", "runs", "dma", "descriptors", "data_ok")
CYCLE_KEYS = {
    "way": "way",
    "alloc": "alloc_cycles",
    "dma_api": "dma_api_cycles",
    "transfer": "dma_cycles",
    "read": "read_cycles",
    "tlb_misses": "tlb_misses",
    "walks": "walk_cycles",
}
TRANSFER_KEYS = {
    "way": "way",
    "descriptors": "descriptors",
    "transfer": "dma_cycles",
    "fetches": "fetch_cycles",
    "iotlb": "iotlb_cycles",
    "moving_data": "data_cycles",
}
KERNEL_OBJECTS = 1500  # slab objects the ageing leaves in the holes
DRIVER = "mydrv_probe"  # the vmalloc caller, as /proc/vmallocinfo and the DMA API name it


def variants(config: hwsim.MachineConfig) -> dict[str, tuple[hwsim.MachineConfig, str, str]]:
    """The variant machines: name -> (config, what changes, why the row needs it)."""
    return {
        SG_BOARD: (
            config.evolve(dma=attrs.evolve(config.dma, scatter_gather=True)),
            "dma=DmaConfig(scatter_gather=True)",
            "dma_map_sg gives one segment per physically contiguous run; only a controller "
            "that follows a chain of descriptors can take more than one. It fetches each "
            "chained descriptor from RAM: the transfer gets slower.",
        ),
        CMA_BOARD: (
            config.evolve(cma=CMA_BYTES),
            "cma=8MiB (Linux: cma=8M)",
            "After ageing no free block of order 8 is left; 256 contiguous pages exist only "
            "in an area set aside at boot, before anything could fragment it. Without it "
            "dma_alloc_coherent falls back to the buddy allocator and fails.",
        ),
        IOMMU_BOARD: (
            config.evolve(
                iommu=True,
                dma=attrs.evolve(config.dma, scatter_gather=True, max_segment_size=UINT_MAX),
            ),
            "iommu=True, dma=DmaConfig(scatter_gather=True, max_segment_size=4 GiB - 1)",
            "The IOMMU maps scattered pages at one range of I/O virtual addresses; the "
            "device's max segment size (dma_set_max_seg_size, 64 KiB by default) is raised "
            "so that dma_map_sg does not cut that range: one descriptor.",
        ),
    }


# ---------------------------------------------------------------------- ageing


def free_blocks_by_order(machine: hwsim.Machine) -> list[int]:
    """/proc/buddyinfo's free blocks per order, summed over the zones."""
    totals = [0] * (hwsim.MAX_PAGE_ORDER + 1)
    for line in machine.proc.read("buddyinfo").splitlines():
        counts = [int(x) for x in line.split()[4:]]
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
    return totals


def buddyinfo_row(machine_name: str, counts: list[int]) -> dict[str, Any]:
    free = sum(n << order for order, n in enumerate(counts)) * PAGE
    return {
        "machine": machine_name,
        **{f"o{order}": n for order, n in enumerate(counts)},
        "free_MiB": round(free / (1 << 20), 1),
    }


async def age(machine: hwsim.Machine) -> dict[str, int]:
    """Age the machine as a long-running one ages: the page cache fills memory, reclaim
    drops a random half of it, kernel objects (inodes, dentries, socket buffers: slab
    memory, unmovable) land in the holes, and reclaim drops most of the page cache again.
    Plenty of memory is free afterwards, but no free block of order 8 is left.
    ``machine.random`` decides everything, so two machines with one seed age alike.
    """
    kernel, rng = machine.kernel, machine.random
    cache: list[int] = []
    while True:  # the page cache: movable single pages, taken in bulk
        pfns = await kernel.alloc_pages_bulk(64, hwsim.GFP_HIGHUSER_MOVABLE)
        cache.extend(pfns)
        if len(pfns) < 64:
            break
    filled = len(cache)
    cache = await reclaim(kernel, cache, rng, share=0.5)
    gfp = hwsim.GFP_KERNEL | hwsim.GFP_NOWARN
    for _ in range(KERNEL_OBJECTS):  # kept: the kernel still uses them
        await kernel.kmalloc(rng.choice([256, 512, 1024, 2048, 4096, 8192]), gfp)
    cache = await reclaim(kernel, cache, rng, share=0.6)
    return {
        "page_cache_pages_filled": filled,
        "page_cache_pages_left": len(cache),
        "kernel_objects": KERNEL_OBJECTS,
    }


async def reclaim(
    kernel: hwsim.Kernel, pages: list[int], rng: random.Random, share: float
) -> list[int]:
    """Free each page with probability ``share`` (no LRU here: which pages go is random);
    return the pages kept."""
    kept = []
    for pfn in pages:
        if rng.random() < share:
            await kernel.free_pages(pfn)
        else:
            kept.append(pfn)
    return kept


# ---------------------------------------------------------------------- the ways


def count_runs(pfns: list[int]) -> int:
    """Physically contiguous runs: a new one wherever a page does not follow the previous."""
    return 1 + sum(b != a + 1 for a, b in itertools.pairwise(pfns))


async def vmalloc_pfns(machine: hwsim.Machine, buf: int) -> list[int]:
    """The page frame behind each page of a vmalloc buffer (``vmalloc_to_pfn``)."""
    return [await machine.kernel.vmalloc_to_pfn(buf + i * PAGE) for i in range(PAGES)]


def descriptor_fetch_cycles(config: hwsim.MachineConfig) -> int:
    """What the engine pays to fetch one chained descriptor: a RAM read of DESCRIPTOR_BYTES."""
    return config.latency.ram + -(-DESCRIPTOR_BYTES // config.latency.ram_bytes_per_cycle)


class Way:
    """One way's record, filled in step by step, each step timed on the virtual clock."""

    def __init__(self, machine: hwsim.Machine, board: str, way: str, payload: bytes) -> None:
        self.machine = machine
        self.payload = payload
        self.record: dict[str, Any] = {
            "way": way,
            "machine": board,
            "alloc": "ok",
            "runs": None,
            "dma": "not started",
            "descriptors": 0,
            "tlb_misses": None,
            "data_ok": None,
            "alloc_cycles": 0,
            "map_cycles": 0,
            "dma_cycles": 0,
            "sync_cycles": 0,
            "fetch_cycles": 0,
            "iotlb_cycles": 0,
            "read_cycles": None,
            "walk_cycles": None,
            "pages_right": None,
            "kernel_says": "",
        }

    async def timed(self, key: str, step: Awaitable[Any]) -> Any:
        """Await ``step``; add the cycles it took to ``record[key]``."""
        start = self.machine.now
        try:
            return await step
        finally:
            self.record[key] += self.machine.now - start

    async def transfer(self, segments: list[tuple[int, int]], owner_pfn: int) -> None:
        """The device receives the payload into ``segments`` (bus address, length), one
        descriptor each, each naming the buffer's owner for the naive-driver detector."""
        m = self.machine
        peer = FifoPeripheral(self.payload)
        owner = m.page_owner.owner_of(owner_pfn)
        chain = [
            DmaDescriptor(bus, n, DEV_TO_MEM, peer=peer, expected_owner=owner)
            for bus, n in segments
        ]
        iommu = m.dma.model.iommu
        misses = iommu.statistics().iotlb_misses if iommu is not None else 0
        self.record["descriptors"] = len(chain)
        start = m.now
        transfer = await m.dma.submit(chain)
        await transfer.wait()
        r = self.record
        r["dma_cycles"] = m.now - start
        r["dma"] = transfer.status
        # The parts of the transfer's time that are not moving data (the model's costs):
        r["fetch_cycles"] = (len(chain) - 1) * descriptor_fetch_cycles(m.config)
        if iommu is not None:
            r["iotlb_misses"] = iommu.statistics().iotlb_misses - misses
            r["iotlb_cycles"] = r["iotlb_misses"] * iommu.walk_cycles
        r["data_cycles"] = r["dma_cycles"] - r["fetch_cycles"] - r["iotlb_cycles"]

    async def read(self, buf: int) -> None:
        """CPU 0 reads the buffer line by line, starting with an empty TLB (the caches as
        the way left them), then the bytes are checked against what the device sent."""
        m = self.machine
        cpu = m.cpus[READER]
        m.flush_tlb_all()
        offsets = np.arange(0, BUFFER_BYTES, LINE, dtype=np.int64)
        try:
            result = await cpu.access(offsets, sizes=LINE, base=buf)
        except hwsim.SegmentationFault as fault:
            self.record["data_ok"] = False
            index = getattr(fault, "index", None)
            self.record["read_fault"] = {
                "first_line": str(fault).splitlines()[0],
                "hwsim_says": next(
                    (line for line in str(fault).splitlines() if line.startswith("hwsim:")), ""
                ),
                "address": None if fault.address is None else f"{fault.address:#x}",
                "lines_read": index,
            }
            return
        self.record["tlb_misses"] = result.tlb_misses
        self.record["walk_cycles"] = result.walk_cycles
        self.record["read_cycles"] = result.cycles
        self.record["data_ok"] = cpu.peek(buf, BUFFER_BYTES) == self.payload

    def count_pages_right(self, pfns: list[int]) -> None:
        """How many of the buffer's pages hold what the device sent for them, read through
        the direct map (functional: no time, no TLB)."""
        cpu, kernel = self.machine.cpus[READER], self.machine.kernel
        self.record["pages_right"] = sum(
            cpu.peek(kernel.page_address(pfn), PAGE) == self.payload[i * PAGE : (i + 1) * PAGE]
            for i, pfn in enumerate(pfns)
        )

    def done(self, why: str) -> dict[str, Any]:
        r = self.record
        r["why"] = why
        r["dma_api_cycles"] = r["map_cycles"] + r["sync_cycles"]
        return r


async def contiguous(
    machine: hwsim.Machine, board: str, payload: bytes, way: str = KMALLOC
) -> dict[str, Any]:
    """kmalloc: one order-8 block from the buddy allocator, mapped with dma_map_single."""
    w, kernel, dev = Way(machine, board, way, payload), machine.kernel, machine.dma
    try:
        buf = await w.timed("alloc_cycles", kernel.kmalloc(BUFFER_BYTES))
    except hwsim.OutOfMemory as error:
        w.record["alloc"] = "failed"
        w.record["kernel_says"] = str(error).split(": no free block")[0]
        largest = max(o for o, n in enumerate(free_blocks_by_order(machine)) if n)
        return w.done(
            "kmalloc of 1 MiB needs an order-8 block: 256 physically contiguous pages. "
            f"Ageing left plenty of free memory but no block above order {largest}: some "
            "allocated page (slab, page cache) sits in every aligned 1 MiB. The driver gets "
            "NULL."
        )
    pfns = [kernel.virt_to_phys(buf + i * PAGE) >> hwsim.PAGE_SHIFT for i in range(PAGES)]
    w.record["runs"] = count_runs(pfns)
    bus = await w.timed("map_cycles", kernel.dma_map_single(dev, buf, BUFFER_BYTES, FROM_DEVICE))
    await w.transfer([(bus, BUFFER_BYTES)], pfns[0])
    await w.timed("sync_cycles", kernel.dma_unmap_single(dev, bus, BUFFER_BYTES, FROM_DEVICE))
    await w.read(buf)
    w.count_pages_right(pfns)
    w.record["kernel_says"] = f"dma_map_single: bus address {bus:#x}"
    await kernel.kfree(buf)
    return w.done(
        "kmalloc memory is one physically contiguous block in the direct map: one bus "
        "address, one descriptor, which the default controller takes; dma_unmap_single "
        "invalidates the stale cache lines. The direct map's 2 MiB pages cost the CPU one "
        "TLB miss."
    )


async def map_single(machine: hwsim.Machine, board: str, payload: bytes) -> dict[str, Any]:
    """vmalloc, then dma_map_single: refused."""
    w, kernel, dev = Way(machine, board, MAP_SINGLE, payload), machine.kernel, machine.dma
    buf = await w.timed("alloc_cycles", kernel.vmalloc(BUFFER_BYTES, caller=DRIVER))
    w.record["runs"] = count_runs(await vmalloc_pfns(machine, buf))
    try:
        await w.timed("map_cycles", kernel.dma_map_single(dev, buf, BUFFER_BYTES, FROM_DEVICE))
    except hwsim.DmaMappingError as error:
        w.record["dma"] = "rejected"
        w.record["kernel_says"] = str(error).split(": vmalloc memory is")[0]
    await kernel.vfree(buf)
    return w.done(
        "dma_map_single takes a direct-map address: one physical range. A vmalloc buffer "
        f"has none, it is {w.record['runs']} physical runs glued together by the page "
        "tables, so the DMA API refuses (Linux returns DMA_MAPPING_ERROR) and the device "
        "never starts."
    )


async def scatter_gather(
    machine: hwsim.Machine, board: str, payload: bytes, way: str
) -> dict[str, Any]:
    """vmalloc, a scatterlist over its pages (vmalloc_to_page), dma_map_sg: one descriptor
    per DMA segment. With the IOMMU the segments are one contiguous range of IOVAs; on a
    controller without scatter-gather dma_map_sg returns 0."""
    w, kernel, dev = Way(machine, board, way, payload), machine.kernel, machine.dma
    buf = await w.timed("alloc_cycles", kernel.vmalloc(BUFFER_BYTES, caller=DRIVER))
    pfns = await vmalloc_pfns(machine, buf)
    w.record["runs"] = count_runs(pfns)
    w.record["pfns"] = pfns
    sglist = await w.timed("map_cycles", kernel.vmalloc_to_sg(buf, BUFFER_BYTES))
    nents = await w.timed("map_cycles", kernel.dma_map_sg(dev, sglist, FROM_DEVICE))
    w.record["nents"] = nents
    max_seg = machine.config.dma.max_segment_size
    if nents == 0:
        return await _without_scatter_gather(w, buf, pfns)
    segments = [(sg.dma_address, sg.dma_length) for sg in sglist.entries[:nents]]
    w.record["bus_ranges"] = count_runs(
        [bus // PAGE + i for bus, n in segments for i in range(-(-n // PAGE))]
    )
    await w.transfer(segments, pfns[0])
    await w.timed("sync_cycles", kernel.dma_unmap_sg(dev, sglist, FROM_DEVICE))
    await w.read(buf)
    w.count_pages_right(pfns)
    r = w.record
    if machine.config.iommu:
        r["kernel_says"] = f"dma_map_sg: {nents} segment{'s' * (nents != 1)}, one IOVA range"
        r["iova"] = f"{segments[0][0]:#x}"
        # The naive driver with an IOMMU: a physical address is no IOVA of the device.
        wrong = DmaDescriptor(pfns[0] * PAGE, BUFFER_BYTES, DEV_TO_MEM, peer=FifoPeripheral())
        try:
            await machine.dma.submit(wrong)
        except hwsim.DmaFault as fault:
            r["naive_driver_with_iommu"] = "\n".join(str(fault).splitlines()[:2])
        await kernel.vfree(buf)
        return w.done(
            f"The IOMMU maps the {r['runs']} scattered pages at one contiguous range of I/O "
            f"virtual addresses; with the max segment size raised to 4 GiB - 1 dma_map_sg "
            f"leaves it whole: {nents} descriptor{'s' * (nents != 1)} (a controller without "
            "scatter-gather would take it too). The transfer pays an IOTLB miss per page "
            f"({r['iotlb_cycles']:,} cycles) instead of descriptor fetches; the device "
            "reaches nothing it was not given."
        )
    r["kernel_says"] = f"dma_map_sg: {nents} segments"
    cut = "none cut" if nents == r["runs"] else f"{nents - r['runs']} more segments from cuts"
    await kernel.vfree(buf)
    return w.done(
        f"dma_map_sg makes one DMA segment of each physically contiguous run ({r['runs']} "
        f"runs; {cut} at the {max_seg >> 10} KiB max segment size): {nents} descriptors. "
        f"The engine fetches each chained descriptor from RAM ({nents - 1} x "
        f"{descriptor_fetch_cycles(machine.config)} = {r['fetch_cycles']:,} cycles), so the "
        "transfer is slower than a contiguous one. The CPU reads through 4 KiB PTEs: a TLB "
        "miss per page."
    )


async def _without_scatter_gather(w: Way, buf: int, pfns: list[int]) -> dict[str, Any]:
    """dma_map_sg returned 0 on a controller without scatter-gather; a driver that builds
    the chain itself is refused by the controller (DmaDescriptorError); nothing moves."""
    machine, r = w.machine, w.record
    r["dma"] = "rejected"
    said = machine.dma_api.model.log[-1]
    r["kernel_says"] = "dma_map_sg returns 0: " + said.split(": it needs")[0]
    runs: list[list[int]] = []
    for pfn in pfns:
        if runs and pfn == runs[-1][-1] + 1:
            runs[-1].append(pfn)
        else:
            runs.append([pfn])
    peer = FifoPeripheral()  # empty: nothing will move (and the refusal's note stays short)
    chain = [DmaDescriptor(run[0] * PAGE, len(run) * PAGE, DEV_TO_MEM, peer=peer) for run in runs]
    try:
        await machine.dma.submit(chain)
    except hwsim.DmaDescriptorError as error:
        r["chain_on_this_controller"] = str(error).split(". ")[0]
    await machine.kernel.vfree(buf)
    return w.done(
        "Rejected: the controller cannot do scatter-gather. The scatterlist maps to "
        f"{r['runs']} segments and a transfer on this controller is one contiguous bus range, "
        "so dma_map_sg returns 0 (a driver must check it) and the device never starts; a "
        "chain built by hand is refused by the controller itself."
    )


async def coherent(machine: hwsim.Machine, board: str, payload: bytes) -> dict[str, Any]:
    """dma_alloc_coherent: physically contiguous memory from the CMA area, no syncs."""
    w, kernel = Way(machine, board, CMA, payload), machine.kernel
    cpu_addr, handle = await w.timed(
        "alloc_cycles", kernel.dma_alloc_coherent(machine.dma, BUFFER_BYTES)
    )
    pfns = [kernel.virt_to_phys(cpu_addr + i * PAGE) >> hwsim.PAGE_SHIFT for i in range(PAGES)]
    r = w.record
    r["runs"] = count_runs(pfns)
    dma_api = machine.dma_api.model
    cma = range(dma_api.cma_base_pfn, dma_api.cma_base_pfn + dma_api.cma_pages)
    r["from_cma"] = pfns[0] in cma and pfns[-1] in cma
    r["meminfo"] = ", ".join(
        " ".join(line.split())
        for line in machine.proc.read("meminfo").splitlines()
        if line.startswith("Cma")
    )
    await w.transfer([(handle, BUFFER_BYTES)], pfns[0])
    await w.read(cpu_addr)
    w.count_pages_right(pfns)
    r["kernel_says"] = f"from the CMA area: {PAGES} pages at pfn {pfns[0]:#x}"
    await kernel.dma_free_coherent(machine.dma, BUFFER_BYTES, cpu_addr, handle)
    return w.done(
        "The CMA area was set aside at boot, before memory aged: 256 contiguous pages are "
        "still there. One bus address, one descriptor (the default controller would do), no "
        "sync calls: on this non-coherent bus the CPU maps the buffer uncached, so it never "
        "reads a stale line."
    )


async def coherent_without_cma(machine: hwsim.Machine) -> str:
    """dma_alloc_coherent on the aged default board, which has no CMA area."""
    try:
        cpu_addr, handle = await machine.kernel.dma_alloc_coherent(machine.dma, BUFFER_BYTES)
    except hwsim.OutOfMemory as error:
        return "fails: " + str(error).splitlines()[0].split(": no free block")[0]
    await machine.kernel.dma_free_coherent(machine.dma, BUFFER_BYTES, cpu_addr, handle)
    return "succeeds"


async def naive(machine: hwsim.Machine, board: str, payload: bytes) -> dict[str, Any]:
    """The bug: the device gets the physical address of the vmalloc buffer's first page and
    the whole length, as if the buffer were physically contiguous."""
    w, kernel = Way(machine, board, NAIVE, payload), machine.kernel
    buf = await w.timed("alloc_cycles", kernel.vmalloc(BUFFER_BYTES, caller=DRIVER))
    pfns = await vmalloc_pfns(machine, buf)
    r = w.record
    r["runs"] = count_runs(pfns)
    reports_before = len(machine.dma.reports)
    await w.transfer([(pfns[0] * PAGE, BUFFER_BYTES)], pfns[0])
    reports = machine.dma.reports[reports_before:]
    r["victims"] = [
        (pfn, owner) for rep in reports for pfn, owner in zip(rep.pfns, rep.owners, strict=True)
    ]
    r["kasan"] = str(reports[0]) if reports else ""
    r["kernel_says"] = r["kasan"].splitlines()[1] if reports else ""
    # Nothing was mapped, so nothing is unmapped: the CPU reads what RAM and caches hold.
    await w.read(buf)
    fault = r.get("read_fault")
    if fault is not None and fault["first_line"].startswith("machine check"):
        # Which entry maps the buffer now: the MMU's functional walk (no time, no TLB).
        leaf = machine.mmus[READER].model.walk(buf)
        size = leaf.page_size
        fault["leaf_level"] = leaf.steps[-1].level
        fault["leaf_size"] = f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
        fault["leaf_phys"] = f"{leaf.phys:#x}"
    w.count_pages_right(pfns)
    inside = sum(pfns[0] <= pfn < pfns[0] + PAGES for pfn in pfns)
    r["own_pages_in_range"] = inside
    # Not freed: this machine's memory, page tables included, can no longer be trusted.
    return w.done(
        f"The device was given the first page's physical address and 1 MiB, but the buffer "
        f"is {r['runs']} physical runs: of the 256 pages the device wrote, "
        f"{len(r['victims'])} belong to others (free pages, slab, page cache; listed below) "
        f"and only {inside} are the buffer's own; {r['pages_right']} of its 256 pages got "
        f"the right data. {_aftermath(r)}"
    )


def _aftermath(r: dict[str, Any]) -> str:
    """What the CPU's read of the buffer ran into after the naive driver's transfer."""
    fault = r.get("read_fault")
    if fault is None:
        return "No page table was hit: the CPU reads 1 MiB of wrong data without a fault."
    n = fault["lines_read"]
    where = "at its first line" if not n else f"after {n:,} lines"
    if fault["first_line"].startswith("machine check"):
        return (
            f"It overwrote the buffer's page tables: its {_entry(fault['leaf_level'])} now "
            f"holds random bytes that read as a {fault['leaf_size']} page at "
            f"{fault['leaf_phys']}, beyond the end of RAM, and CPU 0's read stops {where} "
            "with a machine check."
        )
    says = fault["hwsim_says"]
    level = next((lv for lv in ("PGD", "PUD", "PMD", "PTE") if f"the {lv} entry" in says), "")
    state = (
        "points to a table beyond the end of RAM"
        if "corrupted entry" in says
        else "now reads as not present"
    )
    return (
        f"It overwrote the buffer's page tables: its {_entry(level)} {state}, and CPU 0's "
        f"read oopses {where}."
    )


# ---------------------------------------------------------------------- the scenario


async def scenario(machine: hwsim.Machine) -> dict[str, Any]:
    config = machine.config
    seed = config.seed
    payload = random.Random(f"dma_vs_vmalloc payload {seed}").randbytes(BUFFER_BYTES)
    baseline = await contiguous(machine, DEFAULT, payload, FRESH)
    buddyinfo = [buddyinfo_row("default, fresh", free_blocks_by_order(machine))]
    ageing = await age(machine)
    aged = free_blocks_by_order(machine)
    buddyinfo.append(buddyinfo_row("default, aged", aged))
    records = {
        KMALLOC: await contiguous(machine, DEFAULT, payload),
        # The machine's first vmalloc after ageing, as on the variant machines: the same pages.
        SG_REJECTED: await scatter_gather(machine, DEFAULT, payload, SG_REJECTED),
        MAP_SINGLE: await map_single(machine, DEFAULT, payload),
    }
    no_cma = await coherent_without_cma(machine)
    # Each variant boots with its hardware and is aged exactly as the default board.
    others = variants(config)
    runs: dict[str, Callable[[hwsim.Machine], Awaitable[dict[str, Any]]]] = {
        SG_BOARD: lambda m: scatter_gather(m, SG_BOARD, payload, SCATTER_GATHER),
        CMA_BOARD: lambda m: coherent(m, CMA_BOARD, payload),
        IOMMU_BOARD: lambda m: scatter_gather(m, IOMMU_BOARD, payload, IOMMU),
    }
    machines = [
        {
            "machine": DEFAULT,
            "hardware": _describe(config),
            "why": "The board as it ships: what a driver meets first.",
        }
    ]
    for name, (variant_config, hardware, why) in others.items():
        async with hwsim.boot(variant_config) as other:
            await age(other)
            buddyinfo.append(buddyinfo_row(f"{name}, aged", free_blocks_by_order(other)))
            record = await runs[name](other)
            records[record["way"]] = record
            if name == CMA_BOARD:
                said = other.dma_api.model.log
                record["cma_reserved"] = next((s for s in said if s.startswith("cma:")), "")
        machines.append({"machine": name, "hardware": hardware, "why": why})
    records[NAIVE] = await naive(machine, DEFAULT, payload)  # last: it wrecks the board
    ways = [records[way] for way in WAYS]
    rejected, sg, cma, iommu, bad = (
        records[k] for k in (SG_REJECTED, SCATTER_GATHER, CMA, IOMMU, NAIVE)
    )

    by_owner: dict[str, list[int]] = collections.defaultdict(list)
    for pfn, owner in bad["victims"]:
        by_owner[_owner_kind(owner)].append(pfn)
    aged_alike = [row["machine"] for row in buddyinfo[2:] if _same_counts(buddyinfo[1], row)]
    cma_aged = next(row for row in buddyinfo if row["machine"].startswith(CMA_BOARD))
    summary = {
        "buffer": f"{BUFFER_BYTES >> 20} MiB, {PAGES} pages (order 8), written by the device",
        "free_MiB_after_ageing": buddyinfo[1]["free_MiB"],
        "largest_free_order_after_ageing": max(o for o, n in enumerate(aged) if n),
        **{f"ageing_{key}": value for key, value in ageing.items()},
        "same_buddyinfo_after_ageing": "; ".join(
            name.removesuffix(", aged") for name in aged_alike
        ),
        "cma_board_after_ageing": (
            f"{cma_aged['free_MiB']} MiB free, no free block above order "
            f"{max(o for o in range(hwsim.MAX_PAGE_ORDER + 1) if cma_aged[f'o{o}'])} (the "
            "area is not lent to the page cache: 8 MiB less to fill)"
        ),
        "same_pages_on_the_sg_board": rejected["pfns"] == sg["pfns"],
        "chain_on_the_default_controller": rejected.get("chain_on_this_controller", ""),
        "descriptor_fetch_cycles": descriptor_fetch_cycles(config),
        "coherent_without_cma": no_cma,
        "cma_reserved_at_boot": cma.get("cma_reserved", ""),
        "cma_meminfo_with_the_buffer": cma.get("meminfo", ""),
        "iommu_bus_ranges": iommu["bus_ranges"],
        "iommu_iova": iommu.get("iova", ""),
        "iommu_iotlb_misses": iommu.get("iotlb_misses", 0),
        "naive_victim_pages": len(bad["victims"]),
        "naive_page_table_pages_hit": len(by_owner.get("page table", [])),
        "naive_own_pages_in_range": bad["own_pages_in_range"],
        "naive_pages_right": bad["pages_right"],
        "naive_read": _read_outcome(bad),
        "naive_driver_with_iommu": iommu.get("naive_driver_with_iommu", "no fault"),
        "kasan_report": _excerpt(bad["kasan"]),
    }
    return {
        "machines": machines,
        "rows": [{k: r[k] for k in ROW_KEYS} for r in ways],
        "before_ageing": [{k: baseline[k] for k in ROW_KEYS}],
        "cycles": [{k: r[v] for k, v in CYCLE_KEYS.items()} for r in [*ways, baseline]],
        "transfers": [
            {k: r.get(v) for k, v in TRANSFER_KEYS.items()}
            for r in [*ways, baseline]
            if r["dma"] in ("ok", "corruption")
        ],
        "why": [{"way": r["way"], "kernel_says": r["kernel_says"], "why": r["why"]} for r in ways],
        "summary": summary,
        "naive_driver_victims": [
            {"owner": kind, "pages": len(pfns), "pfns": _pfn_list(pfns)}
            for kind, pfns in sorted(by_owner.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        ],
        "buddyinfo": buddyinfo,
    }


def _describe(config: hwsim.MachineConfig) -> str:
    """The default board in a line: "MachineConfig(): 64 MiB x86_64, 2 CPUs, ..."."""
    dma = config.dma
    return (
        f"MachineConfig(): {config.ram >> 20} MiB {config.arch}, {config.cpus} CPUs, "
        f"{dma.channels}-channel DMA controller "
        f"{'with' if dma.scatter_gather else 'without'} scatter-gather, {dma.mask_bits}-bit "
        f"mask, max segment {dma.max_segment_size >> 10} KiB, "
        f"{'coherent' if config.dma_coherent else 'non-coherent'} bus, "
        f"{'CMA' if config.cma else 'no CMA'}, {'IOMMU' if config.iommu else 'no IOMMU'}"
    )


def _entry(level: str) -> str:
    """A level's entry by name: "PMD entry", but "PTE" (already an entry); "entry" if unknown."""
    return "PTE" if level == "PTE" else f"{level} entry".strip()


def _read_outcome(record: dict[str, Any]) -> str:
    fault = record.get("read_fault")
    if fault is None:
        return "no fault: wrong data"
    text: str = fault["first_line"]
    if not text.startswith("machine check") and fault["lines_read"] is not None:
        text += f" (at line {fault['lines_read']:,} of {BUFFER_BYTES // LINE:,})"
    return text + (f"\n{fault['hwsim_says']}" if fault["hwsim_says"] else "")


def _same_counts(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a[key] == b[key] for key in a if key != "machine")


def _owner_kind(owner: str | None) -> str:
    """An owner without its addresses: "slab kmalloc-8k", "page table", "free page"."""
    if owner is None:
        return "none (free page)"
    return owner.split(" 0x")[0].split(" pfn")[0]


def _pfn_list(pfns: list[int], shown: int = 4) -> str:
    text = ", ".join(f"{pfn:#x}" for pfn in pfns[:shown])
    return text + (f", ... (+{len(pfns) - shown})" if len(pfns) > shown else "")


def _excerpt(report: str, pages: int = 3) -> str:
    """The KASAN-style report with its first few pages (all of them are in the victims)."""
    lines = report.splitlines()
    head = [line for line in lines if not line.startswith("page: ")]
    listed = [line for line in lines if line.startswith("page: ")]
    more = [f"... ({len(listed) - pages} more pages)"] if len(listed) > pages else []
    return "\n".join([*head[1:4], *listed[:pages], *more, *head[4:-1]])


# ---------------------------------------------------------------------- the plot


def plot(result: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Left: the cycles of each step (allocation, DMA API calls, the transfer, the CPU's
    read) per way, log scale. Right: physically contiguous runs, DMA descriptors and the
    CPU's TLB misses per way. Under each way its machine and outcome; kmalloc on the fresh
    default board, before ageing, is the reference on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [*result["rows"], *result["before_ageing"]]
    cycles = {c["way"]: c for c in result["cycles"]}
    x = np.arange(len(rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(17, 6.2), layout="constrained")

    def bars(ax: Any, series: list[tuple[str, str, str]]) -> None:
        """One bar per way and series; ``key`` names a cycles column, or a rows column."""
        width = 0.8 / len(series)
        for i, (name, key, colour) in enumerate(series):
            values = [cycles[r["way"]].get(key, r.get(key)) for r in rows]
            at = x + (i - (len(series) - 1) / 2) * width
            drawn = ax.bar(at, [v or 0 for v in values], width, color=colour, label=name)
            ax.bar_label(drawn, [f"{v:,}" if v else "" for v in values], fontsize=6, rotation=90)

    bars(
        left,
        [
            ("allocation", "alloc", "tab:blue"),
            ("DMA API (sg table, map, unmap)", "dma_api", "tab:purple"),
            ("DMA transfer", "transfer", "tab:orange"),
            ("CPU 0 reads the 1 MiB", "read", "tab:green"),
        ],
    )
    left.set_ylim(1, 3e8)
    left.set_ylabel("cycles")
    left.set_title("What each way costs (no bar: the step never ran)")
    bars(
        right,
        [
            ("physically contiguous runs", "runs", "tab:gray"),
            ("DMA descriptors", "descriptors", "tab:orange"),
            ("TLB misses of the CPU's read", "tlb_misses", "tab:red"),
        ],
    )
    right.set_ylim(0.5, 3e4)
    right.set_title("Contiguity and its price")
    for ax in (left, right):
        ax.set_yscale("log")
        ax.legend(fontsize="small", loc="upper left", ncols=2)
        ax.set_xticks(x, [_plot_label(r) for r in rows], fontsize="x-small")
        for tick, r in zip(ax.get_xticklabels(), rows, strict=True):
            ok = r["alloc"] == "ok" and r["dma"] == "ok" and r["data_ok"]
            tick.set_color("green" if ok else "red" if r["dma"] == "corruption" else "dimgray")
    summary = result["summary"]
    fig.suptitle(
        f"A {BUFFER_BYTES >> 20} MiB DMA buffer on an aged machine "
        f"({summary['free_MiB_after_ageing']} MiB free, no free block above order "
        f"{summary['largest_free_order_after_ageing']}; log scales); the default board and "
        "variants with one more piece of hardware"
    )
    fig.savefig(path)
    plt.close(fig)


def _plot_label(row: dict[str, Any]) -> str:
    board = row["machine"].replace(", ", ",\n")
    name = f"{SHORT.get(row['way'], row['way'])}\n[{board}]"
    if row["alloc"] != "ok":
        return f"{name}\nalloc failed"
    outcome = {"ok": "DMA ok", "rejected": "rejected", "corruption": "CORRUPTION"}
    text = f"{name}\n{outcome.get(row['dma'], row['dma'])}"
    return text + ("\ndata wrong" if row["data_ok"] is False else "")
