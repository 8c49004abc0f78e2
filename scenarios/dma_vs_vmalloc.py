"""DMA vs vmalloc: a 1 MiB DMA buffer on an aged, fragmented machine, five ways and a wrong one.

What it teaches: why a DMA buffer must be physically contiguous, and what a driver does
about it. A CPU reaches memory through its page tables; a device (without an IOMMU) puts
physical addresses on the bus. kmalloc memory is physically contiguous, so one bus address
and a length describe it, but the buddy allocator only finds 256 contiguous pages while
memory is young. vmalloc always succeeds because it stitches single pages together in
virtual space only - its pages are scattered, so a device cannot be handed "the" address of
it. The Linux answers: a scatterlist (one DMA descriptor per physically contiguous run, for
a scatter-gather controller), an area set aside at boot (CMA, via dma_alloc_coherent), or an
IOMMU that gives the device a contiguous view of scattered pages. And the classic bug: a
driver passes the physical address of the vmalloc buffer's first page with the whole
length, and the device writes over whatever follows that page in physical memory.

What it does. The machine: 64 MiB, one CPU, 8 MiB of CMA, a non-coherent bus (the driver
must unmap/sync before the CPU reads), a DMA controller with scatter-gather. First, the
reference: kmalloc(1 MiB) on the fresh machine, received into and read back. Then the
machine ages (``age``): the page cache (single movable pages) fills memory, reclaim drops a
random half, 1,500 kernel objects (kmalloc 256 B - 8 KiB, unmovable) land in the holes,
reclaim drops 60 % of the rest. /proc/buddyinfo before and after is in ``buddyinfo``. Then
six drivers each get a 1 MiB buffer and let a device (a FIFO peripheral, as a NIC or a disk
receiving data) write 1 MiB of random bytes into it (DEV_TO_MEM), each descriptor naming
the buffer's owner for the controller's naive-driver detector; then the CPU reads the
buffer line by line (16,384 loads, one batched ``cpu.access``, the TLB emptied first) and
the bytes are compared with what the device sent. The IOMMU is machine-wide, so its row
runs on a second machine with ``iommu=True``, aged the same way with the same seed (its
/proc/buddyinfo is the same: ``ageing_same_on_the_iommu_machine``). The CMA area, by
contrast, is reserved at boot on the main machine (``cma=8M`` would do it in Linux): it is
taken before ageing begins, which is its whole point, and no other row touches it. The
controller does scatter-gather, or the scatterlist row could not run; what dma_map_sg says
to a controller without it is in the summary. The naive driver runs last: it wrecks the
machine.

The tables: ``rows`` (did allocation succeed; physically contiguous runs, counted with
``vmalloc_to_pfn`` page by page; the DMA outcome; descriptors; the CPU's TLB misses;
whether the data read was right), ``before_ageing`` (the same for the reference),
``cycles`` (allocation; DMA API calls - building the scatterlist, mapping, unmapping; the
transfer; the CPU's read and the page walks within it), ``why`` (what the kernel said, and
why, in Linux terms), ``summary``, ``naive_driver_victims`` (the pages the naive driver's
device wrote that the buffer does not own, by owner, from ``machine.page_owner``) and
``buddyinfo``. ``--plot FILE`` draws the cycles of each step and the runs, descriptors and
TLB misses of each way.

What to expect (seed 0, the default; measured):

- ageing leaves 34.9 MiB of 49.7 free, and no free block above order 4 (64 KiB): buddyinfo
  goes from 10 order-10 blocks to 2,154 / 1,354 / 636 / 157 / 17 blocks of orders 0-4.
- reference, kmalloc on the fresh machine: 300 cycles, 1 run, dma_map_single 100 cycles, 1
  descriptor, the transfer 131,172 cycles (1 MiB at 8 bytes a cycle, plus the RAM's
  latency), dma_unmap_single 100; the read 1,982,824 cycles (16,384 x 121 for lines from
  RAM, plus one 360-cycle walk: the direct map's 2 MiB pages cost 1 TLB miss); data right.
- ``kmalloc`` after ageing: "page allocation failure: order:8". (0 cycles: hwsim charges
  nothing for a refused request.) The driver gets NULL.
- ``vmalloc + dma_map_single``: vmalloc 86,042 cycles (the machine's first vmalloc also
  allocates the page-table pages of the vmalloc range; a later 1 MiB vmalloc costs 35,590),
  256 runs; "dma: rejecting DMA map of vmalloc memory [addr=0xffffc90000000000] (the vmalloc
  area of mydrv_probe)". Nothing moves.
- ``vmalloc + scatter-gather``: 241 runs (this vmalloc gets some neighbouring pages), so 241
  segments and 241 descriptors (no run reaches the 64 KiB max segment size); the scatterlist
  costs 25,600 cycles (a page-table walk per page, 100 each), map and unmap 100 each; the
  transfer 131,172 cycles again (hwsim charges nothing per descriptor); the read 1,990,620
  cycles: 256 TLB misses, 8,156 cycles of walks - vmalloc's 4 KiB PTEs; data right. The same
  list on a controller without scatter-gather: dma_map_sg returns 0.
- ``dma_alloc_coherent (CMA)``: 100 cycles, 256 pages at pfn 0x1800 inside the CMA area, 1
  run, 1 descriptor, no sync call; the read 1,720,680 cycles: the buffer is mapped uncached
  on this non-coherent bus, so each line comes straight from RAM (105 cycles: TLB 1 + RAM
  104, no L1/L2 lookup), never stale; 1 TLB miss; data right.
- ``vmalloc + IOMMU``: 256 runs, one contiguous range of IOVAs (0xfff00000 up), cut into 16
  segments of 64 KiB by the device's max segment size (Linux's default without
  dma_set_max_seg_size): 16 descriptors. The transfer costs 156,772 cycles: 25,600 more than
  without the IOMMU, 256 IOTLB misses of 100 cycles. The read is the same as with the
  scatterlist; data right. The naive driver on this machine gets a DMAR fault instead of
  corrupting memory ("fault addr 0x3bf7000 ... PTE Write access is not set").
- ``vmalloc, naive driver``: the transfer "succeeds" in 131,172 cycles with status
  ``corruption``: of the 256 pages from the first one, 230 belong to others - 120 free pages,
  48 of slab kmalloc-8k, 42 page-cache pages (alloc_pages), 12 of kmalloc-2k, 6 of
  kmalloc-1k and 2 page-table pages - and only 26 of the buffer's own pages were in range.
  The KASAN-style report ("BUG: KASAN: wild-memory-access in dma channel 3") lists them.
  The two page-table pages are the vmalloc range's own PMD and PTE pages, so the CPU's read
  oopses ("BUG: unable to handle page fault for address: ffffc90000000000"); through the
  direct map, 1 of the buffer's 256 pages (the first) holds the right data. Other seeds
  tell the same story with another ending: with seeds 1, 2 and 6 the smashed page-table
  entries send the read beyond the end of RAM; with seeds 5 and 7 no page table is hit,
  and the CPU reads 1 MiB of wrong data without a fault.

Seeds 0-7 all give: kmalloc fails, map_single rejected, 226-242 scatter-gather segments, CMA 1
run and 1 descriptor, 16 IOMMU descriptors, 215-237 pages corrupted by the naive driver.

What the model leaves out: compaction (Linux could migrate the page-cache pages, not the
slab objects, and might still find 1 MiB after a long wait); a DMA engine's cost per
descriptor (fetching each descriptor from memory); the memset of dma_alloc_coherent; the
slow path's cost of a failing allocation.

Run: ``hwsim run dma_vs_vmalloc --json dma_vs_vmalloc.json --plot dma_vs_vmalloc.png``
"""

from __future__ import annotations

import collections
import itertools
import os
import random
from collections.abc import Awaitable
from typing import Any

import numpy as np

import hwsim
from hwsim.devices.dma import DEV_TO_MEM, DmaDescriptor, FifoPeripheral
from hwsim.kernel.dma_api import DmaDevice

CONFIG = hwsim.MachineConfig(
    ram="64MiB", cpus=1, cma="8MiB", dma=hwsim.DmaConfig(scatter_gather=True)
)

BUFFER_BYTES = 1 << 20  # order 8: 256 pages
PAGE = hwsim.PAGE_SIZE
PAGES = BUFFER_BYTES // PAGE
LINE = 64  # the CPU reads the buffer one cache line at a time
FROM_DEVICE = hwsim.DMA_FROM_DEVICE

# The ways, in the order of the table; SHORT labels the plot.
KMALLOC = "kmalloc"
MAP_SINGLE = "vmalloc + dma_map_single"
SCATTER_GATHER = "vmalloc + scatter-gather (dma_map_sg)"
CMA = "dma_alloc_coherent (CMA)"
IOMMU = "vmalloc + IOMMU (dma_map_sg)"
NAIVE = "vmalloc, naive driver (first page's phys + whole length)"
WAYS = (KMALLOC, MAP_SINGLE, SCATTER_GATHER, CMA, IOMMU, NAIVE)
SHORT = {
    KMALLOC: "kmalloc",
    MAP_SINGLE: "vmalloc +\nmap_single",
    SCATTER_GATHER: "vmalloc +\nSG",
    CMA: "CMA\ncoherent",
    IOMMU: "vmalloc +\nIOMMU",
    NAIVE: "naive\ndriver",
}
# What the ``rows`` and ``cycles`` tables show of each way's record.
ROW_KEYS = ("way", "alloc", "runs", "dma", "descriptors", "tlb_misses", "data_ok")
CYCLE_KEYS = ("way", "alloc_cycles", "dma_api_cycles", "dma_cycles", "read_cycles", "walk_cycles")
KERNEL_OBJECTS = 1500  # slab objects the ageing leaves in the holes
DRIVER = "mydrv_probe"  # the vmalloc caller, as /proc/vmallocinfo and the DMA API name it


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


class Way:
    """One way's record, filled in step by step, each step timed on the virtual clock."""

    def __init__(self, machine: hwsim.Machine, way: str, payload: bytes) -> None:
        self.machine = machine
        self.payload = payload
        self.record: dict[str, Any] = {
            "way": way,
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
        self.record["descriptors"] = len(chain)
        start = m.now
        transfer = await m.dma.submit(chain)
        await transfer.wait()
        self.record["dma_cycles"] = m.now - start
        self.record["dma"] = transfer.status

    async def read(self, buf: int) -> None:
        """The CPU reads the buffer line by line, starting with an empty TLB (the caches as
        the way left them), then the bytes are checked against what the device sent."""
        m = self.machine
        m.flush_tlb_all()
        offsets = np.arange(0, BUFFER_BYTES, LINE, dtype=np.int64)
        try:
            result = await m.cpus[0].access(offsets, sizes=LINE, base=buf)
        except hwsim.SegmentationFault as fault:
            self.record["data_ok"] = False
            self.record["read_fault"] = str(fault).splitlines()[0]
            return
        self.record["tlb_misses"] = result.tlb_misses
        self.record["walk_cycles"] = result.walk_cycles
        self.record["read_cycles"] = result.cycles
        self.record["data_ok"] = m.cpus[0].peek(buf, BUFFER_BYTES) == self.payload

    def count_pages_right(self, pfns: list[int]) -> None:
        """How many of the buffer's pages hold what the device sent for them, read through
        the direct map (functional: no time, no TLB)."""
        cpu, kernel = self.machine.cpus[0], self.machine.kernel
        self.record["pages_right"] = sum(
            cpu.peek(kernel.page_address(pfn), PAGE) == self.payload[i * PAGE : (i + 1) * PAGE]
            for i, pfn in enumerate(pfns)
        )

    def done(self, why: str) -> dict[str, Any]:
        r = self.record
        r["why"] = why
        r["dma_api_cycles"] = r["map_cycles"] + r["sync_cycles"]
        return r


async def contiguous(machine: hwsim.Machine, payload: bytes, way: str = KMALLOC) -> dict[str, Any]:
    """kmalloc: one order-8 block from the buddy allocator, mapped with dma_map_single."""
    w, kernel, dev = Way(machine, way, payload), machine.kernel, machine.dma
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
        "address, one descriptor; dma_unmap_single invalidates the stale cache lines. The "
        "direct map's 2 MiB pages cost the CPU one TLB miss."
    )


async def map_single(machine: hwsim.Machine, payload: bytes) -> dict[str, Any]:
    """vmalloc, then dma_map_single: refused."""
    w, kernel, dev = Way(machine, MAP_SINGLE, payload), machine.kernel, machine.dma
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


async def scatter_gather(machine: hwsim.Machine, payload: bytes, way: str) -> dict[str, Any]:
    """vmalloc, a scatterlist over its pages (vmalloc_to_page), dma_map_sg: one descriptor
    per DMA segment. With the IOMMU the segments are one contiguous range of IOVAs."""
    w, kernel, dev = Way(machine, way, payload), machine.kernel, machine.dma
    buf = await w.timed("alloc_cycles", kernel.vmalloc(BUFFER_BYTES, caller=DRIVER))
    pfns = await vmalloc_pfns(machine, buf)
    w.record["runs"] = count_runs(pfns)
    sglist = await w.timed("map_cycles", kernel.vmalloc_to_sg(buf, BUFFER_BYTES))
    nents = await w.timed("map_cycles", kernel.dma_map_sg(dev, sglist, FROM_DEVICE))
    segments = [(sg.dma_address, sg.dma_length) for sg in sglist.entries[:nents]]
    w.record["segments"] = segments
    w.record["bus_ranges"] = count_runs(
        [bus // PAGE + i for bus, n in segments for i in range(-(-n // PAGE))]
    )
    await w.transfer(segments, pfns[0])
    await w.timed("sync_cycles", kernel.dma_unmap_sg(dev, sglist, FROM_DEVICE))
    await w.read(buf)
    w.count_pages_right(pfns)
    max_seg = dev.device.max_segment_size >> 10
    if machine.config.iommu:
        w.record["kernel_says"] = f"dma_map_sg: {nents} segments, one IOVA range"
        # The naive driver with an IOMMU: a physical address is no IOVA of the device.
        wrong = DmaDescriptor(pfns[0] * PAGE, BUFFER_BYTES, DEV_TO_MEM, peer=FifoPeripheral())
        try:
            await machine.dma.submit(wrong)
        except hwsim.DmaFault as fault:
            w.record["naive_driver_with_iommu"] = "\n".join(str(fault).splitlines()[:2])
        await kernel.vfree(buf)
        return w.done(
            f"The IOMMU maps the {w.record['runs']} scattered pages at one contiguous range "
            f"of I/O virtual addresses, cut into {nents} segments only by the device's "
            f"{max_seg} KiB max segment size. The DMA pays an IOTLB miss per page; the "
            "device reaches nothing it was not given."
        )
    w.record["kernel_says"] = f"dma_map_sg: {nents} segments"
    # The same list for a controller without scatter-gather: dma_map_sg fails (0).
    plain = DmaDevice("dma-nosg", dma_mask=dev.device.dma_mask, scatter_gather=False)
    again = await kernel.vmalloc_to_sg(buf, BUFFER_BYTES)
    w.record["nents_without_scatter_gather"] = await kernel.dma_map_sg(plain, again, FROM_DEVICE)
    w.record["without_scatter_gather"] = machine.dma_api.model.log[-1]
    await kernel.vfree(buf)
    return w.done(
        f"dma_map_sg makes one DMA segment of each physically contiguous run ({w.record['runs']}"
        f" runs; a run longer than the {max_seg} KiB max segment size would be cut): "
        f"{nents} descriptors, which only a scatter-gather controller takes. The CPU reads "
        "through 4 KiB PTEs: a TLB miss per page."
    )


async def coherent(machine: hwsim.Machine, payload: bytes) -> dict[str, Any]:
    """dma_alloc_coherent: physically contiguous memory from the CMA area, no syncs."""
    w, kernel = Way(machine, CMA, payload), machine.kernel
    cpu_addr, handle = await w.timed(
        "alloc_cycles", kernel.dma_alloc_coherent(machine.dma, BUFFER_BYTES)
    )
    pfns = [kernel.virt_to_phys(cpu_addr + i * PAGE) >> hwsim.PAGE_SHIFT for i in range(PAGES)]
    w.record["runs"] = count_runs(pfns)
    dma_api = machine.dma_api.model
    cma = range(dma_api.cma_base_pfn, dma_api.cma_base_pfn + dma_api.cma_pages)
    w.record["from_cma"] = pfns[0] in cma and pfns[-1] in cma
    await w.transfer([(handle, BUFFER_BYTES)], pfns[0])
    await w.read(cpu_addr)
    w.count_pages_right(pfns)
    w.record["kernel_says"] = f"from the CMA area: {PAGES} pages at pfn {pfns[0]:#x}"
    await kernel.dma_free_coherent(machine.dma, BUFFER_BYTES, cpu_addr, handle)
    return w.done(
        "The CMA area was set aside at boot, before memory aged: 256 contiguous pages are "
        "still there. One bus address, one descriptor, no sync calls: on this non-coherent "
        "bus the CPU maps the buffer uncached, so it never reads a stale line."
    )


async def naive(machine: hwsim.Machine, payload: bytes) -> dict[str, Any]:
    """The bug: the device gets the physical address of the vmalloc buffer's first page and
    the whole length, as if the buffer were physically contiguous."""
    w, kernel = Way(machine, NAIVE, payload), machine.kernel
    buf = await w.timed("alloc_cycles", kernel.vmalloc(BUFFER_BYTES, caller=DRIVER))
    pfns = await vmalloc_pfns(machine, buf)
    w.record["runs"] = count_runs(pfns)
    reports_before = len(machine.dma.reports)
    await w.transfer([(pfns[0] * PAGE, BUFFER_BYTES)], pfns[0])
    reports = machine.dma.reports[reports_before:]
    w.record["victims"] = [
        (pfn, owner) for r in reports for pfn, owner in zip(r.pfns, r.owners, strict=True)
    ]
    w.record["kasan"] = str(reports[0]) if reports else ""
    w.record["kernel_says"] = w.record["kasan"].splitlines()[1] if reports else ""
    # Nothing was mapped, so nothing is unmapped: the CPU reads what RAM and caches hold.
    await w.read(buf)
    w.count_pages_right(pfns)
    inside = sum(pfns[0] <= pfn < pfns[0] + PAGES for pfn in pfns)
    w.record["own_pages_in_range"] = inside
    # Not freed: this machine's memory, page tables included, can no longer be trusted.
    oops = " It hit page tables: reading the buffer oopses." if "read_fault" in w.record else ""
    return w.done(
        f"The buffer is {w.record['runs']} physical runs, but the device wrote 1 MiB from "
        f"the first page on: {len(w.record['victims'])} of those pages belong to others "
        f"(free pages, slab, page cache; listed below) and only {inside} of the buffer's own "
        f"pages were in range: {w.record['pages_right']} of its 256 pages got the right data."
        f"{oops}"
    )


# ---------------------------------------------------------------------- the scenario


async def scenario(machine: hwsim.Machine) -> dict[str, Any]:
    seed = machine.config.seed
    payload = random.Random(f"dma_vs_vmalloc payload {seed}").randbytes(BUFFER_BYTES)
    baseline = await contiguous(machine, payload, "kmalloc, on the fresh machine")
    buddyinfo = [buddyinfo_row("fresh", free_blocks_by_order(machine))]
    ageing = await age(machine)
    aged = free_blocks_by_order(machine)
    buddyinfo.append(buddyinfo_row("aged", aged))
    records = {
        KMALLOC: await contiguous(machine, payload),
        MAP_SINGLE: await map_single(machine, payload),
        SCATTER_GATHER: await scatter_gather(machine, payload, SCATTER_GATHER),
        CMA: await coherent(machine, payload),
    }
    # The IOMMU is machine-wide: a second machine, aged the same way with the same seed.
    async with hwsim.boot(machine.config.evolve(iommu=True)) as other:
        await age(other)
        buddyinfo.append(buddyinfo_row("aged, with IOMMU", free_blocks_by_order(other)))
        records[IOMMU] = await scatter_gather(other, payload, IOMMU)
    records[NAIVE] = await naive(machine, payload)  # last: it corrupts the machine
    ways = [records[way] for way in WAYS]
    sg, iommu, bad = records[SCATTER_GATHER], records[IOMMU], records[NAIVE]

    by_owner: dict[str, list[int]] = collections.defaultdict(list)
    for pfn, owner in bad["victims"]:
        by_owner[_owner_kind(owner)].append(pfn)
    summary = {
        "buffer": f"{BUFFER_BYTES >> 20} MiB, {PAGES} pages (order 8), written by the device",
        "free_MiB_after_ageing": buddyinfo[1]["free_MiB"],
        "largest_free_order_after_ageing": max(o for o, n in enumerate(aged) if n),
        **{f"ageing_{key}": value for key, value in ageing.items()},
        "ageing_same_on_the_iommu_machine": _same_counts(buddyinfo[1], buddyinfo[2]),
        "max_segment_size_KiB": machine.dma.device.max_segment_size >> 10,
        "sg_without_scatter_gather": (
            f"dma_map_sg returns {sg['nents_without_scatter_gather']}: "
            + sg["without_scatter_gather"].split(": it needs")[0]
        ),
        "iommu_bus_ranges": iommu["bus_ranges"],
        "naive_victim_pages": len(bad["victims"]),
        "naive_own_pages_in_range": bad["own_pages_in_range"],
        "naive_pages_right": bad["pages_right"],
        "naive_read": bad.get("read_fault", "no fault: wrong data"),
        "naive_driver_with_iommu": iommu.get("naive_driver_with_iommu", "no fault"),
        "kasan_report": _excerpt(bad["kasan"]),
    }
    return {
        "rows": [{k: r[k] for k in ROW_KEYS} for r in ways],
        "before_ageing": [{k: baseline[k] for k in ROW_KEYS}],
        "cycles": [{k: r[k] for k in CYCLE_KEYS} for r in [*ways, baseline]],
        "why": [{"way": r["way"], "kernel_says": r["kernel_says"], "why": r["why"]} for r in ways],
        "summary": summary,
        "naive_driver_victims": [
            {"owner": kind, "pages": len(pfns), "pfns": _pfn_list(pfns)}
            for kind, pfns in sorted(by_owner.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        ],
        "buddyinfo": buddyinfo,
    }


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
    CPU's TLB misses per way. Under each way its outcome; kmalloc on the fresh machine, before
    ageing, is the reference on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [*result["rows"], *result["before_ageing"]]
    cycles = {c["way"]: c for c in result["cycles"]}
    x = np.arange(len(rows))
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 5.8), layout="constrained")

    def bars(ax: Any, series: list[tuple[str, str, str]]) -> None:
        width = 0.8 / len(series)
        for i, (name, key, colour) in enumerate(series):
            values = [r.get(key, cycles[r["way"]].get(key)) for r in rows]
            at = x + (i - (len(series) - 1) / 2) * width
            drawn = ax.bar(at, [v or 0 for v in values], width, color=colour, label=name)
            ax.bar_label(drawn, [f"{v:,}" if v else "" for v in values], fontsize=6, rotation=90)

    bars(
        left,
        [
            ("allocation", "alloc_cycles", "tab:blue"),
            ("DMA API (sg table, map, unmap)", "dma_api_cycles", "tab:purple"),
            ("DMA transfer", "dma_cycles", "tab:orange"),
            ("CPU reads the 1 MiB", "read_cycles", "tab:green"),
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
        ax.set_xticks(x, [_plot_label(r) for r in rows], fontsize="small")
        for tick, r in zip(ax.get_xticklabels(), rows, strict=True):
            ok = r["alloc"] == "ok" and r["dma"] == "ok" and r["data_ok"]
            tick.set_color("green" if ok else "red" if r["dma"] == "corruption" else "dimgray")
    summary = result["summary"]
    fig.suptitle(
        f"A {BUFFER_BYTES >> 20} MiB DMA buffer on an aged machine "
        f"({summary['free_MiB_after_ageing']} MiB free, no free block above order "
        f"{summary['largest_free_order_after_ageing']}; log scales)"
    )
    fig.savefig(path)
    plt.close(fig)


def _plot_label(row: dict[str, Any]) -> str:
    name = SHORT.get(row["way"], "kmalloc,\nfresh machine")
    if row["alloc"] != "ok":
        return f"{name}\nalloc failed"
    outcome = {"ok": "DMA ok", "rejected": "map rejected", "corruption": "CORRUPTION"}
    text = f"{name}\n{outcome.get(row['dma'], row['dma'])}"
    return text + ("\ndata wrong" if row["data_ok"] is False else "")
