"""The buddy page allocator (mm/page_alloc.c), as a plain synchronous model.

What follows Linux (x86, 4 KiB pages, v6.x):

- orders 0..MAX_PAGE_ORDER (10); a block of order n starts at a multiple of 2**n; the buddy
  of ``pfn`` at order n is ``pfn ^ (1 << n)``;
- ``__rmqueue_smallest``: scan orders upward in the wanted migratetype, take the list head,
  split keeping the LOWER half and putting each upper half on the free list one order down;
- ``__rmqueue_fallback``: steal from another migratetype (Linux's fallback order), largest
  block first, claiming the whole pageblock when the kernel would (order >= pageblock_order/2
  or an unmovable/reclaimable request, and at least half of the pageblock free);
- ``__free_one_page``: merge with the buddy while it is free, of the same order and in the
  same zone, up to order 10;
- zones with watermarks and lowmem_reserve computed as the kernel computes them; the fast
  path checks the low watermark, the slow path the min watermark, GFP_ATOMIC may dip below
  min (ALLOC_MIN_RESERVE and ALLOC_NON_BLOCK), fallback runs only to lower zones;
- per-CPU page lists for order 0 (batch and high as ``zone_batchsize``/``zone_highsize``):
  pages there are not on the free lists and not in NR_FREE_PAGES, as in the kernel;
- ``nr_free`` per order counts blocks.

Where it simplifies: no reclaim or compaction (nothing here is reclaimable yet), so
GFP_KERNEL and GFP_NOWAIT differ only in that a failing GFP_KERNEL allocation first drains
the per-CPU lists and retries, as ``__alloc_pages_direct_reclaim`` does; the pageblock-claim
rule counts free pages only (not the "alike" allocated pages the kernel also counts);
HighAtomic, CMA and isolation migratetypes are not modelled yet.

Timing: each zone has a lock; operations on the free lists hold it for a cost in cycles, and
an operation that finds it held waits (counted as contention). Per-CPU list hits take no lock.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import attrs

from ..core.actor import Actor, handles
from ..errors import DoubleFree, HwsimError, InvalidFree, OutOfMemory
from ..units import PAGE_SHIFT, format_size
from . import gfp as G
from .zones import (
    MAX_PAGE_ORDER,
    NR_PAGE_ORDERS,
    PAGEBLOCK_NR_PAGES,
    PAGEBLOCK_ORDER,
    WMARK_LOW,
    WMARK_MIN,
    ZONE_DMA,
    ZONE_DMA32,
    ZONE_HIGHMEM,
    ZONE_NORMAL,
    PerCpuPages,
    Zone,
    build_zones,
    pcp_batch,
    setup_watermarks,
)

# Module-level aliases: inside a class body Python would mangle G.__GFP_X names.
_GFP_DIRECT_RECLAIM = G.__GFP_DIRECT_RECLAIM
_GFP_DMA = G.__GFP_DMA
_GFP_DMA32 = G.__GFP_DMA32
_GFP_HIGH = G.__GFP_HIGH
_GFP_HIGHMEM = G.__GFP_HIGHMEM
_GFP_NOWARN = G.__GFP_NOWARN

ALLOC_MIN_RESERVE = 0x1  # __GFP_HIGH: may use half of the min reserve
ALLOC_NON_BLOCK = 0x2  # cannot sleep: a further quarter

# Linux's fallbacks[] table: where each migratetype may steal from, in order.
FALLBACKS = {
    G.MIGRATE_UNMOVABLE: (G.MIGRATE_RECLAIMABLE, G.MIGRATE_MOVABLE),
    G.MIGRATE_MOVABLE: (G.MIGRATE_RECLAIMABLE, G.MIGRATE_UNMOVABLE),
    G.MIGRATE_RECLAIMABLE: (G.MIGRATE_UNMOVABLE, G.MIGRATE_MOVABLE),
}

# Costs in cycles (a page allocation is a few hundred ns on a 3 GHz core).
PCP_CYCLES = 60
LOCKED_CYCLES = 250
PER_BLOCK_CYCLES = 30
#: What a failed allocation costs besides its free-list searches: __alloc_pages_slowpath's
#: retries and warn_alloc's report. (Linux would also reclaim and compact, which can take
#: milliseconds; hwsim has neither, so its failures are cheap.)
ALLOC_FAILURE_CYCLES = 2000


@attrs.frozen
class Reservation:
    """Memory the kernel keeps for itself at boot (memblock), never on the free lists."""

    start_pfn: int
    end_pfn: int
    name: str


def _can_steal_fallback(order: int, start_mt: int) -> bool:
    """``can_steal_fallback()``: may a request claim the pageblock of a block of ``order``?"""
    return (
        order >= PAGEBLOCK_ORDER // 2
        or start_mt == G.MIGRATE_RECLAIMABLE
        or start_mt == G.MIGRATE_UNMOVABLE
    )


def boot_reservations(nr_pages: int, arch: str) -> list[Reservation]:
    """What memblock hands out before the buddy allocator starts, as on a real boot.

    The first MiB (BIOS, real-mode trampoline; x86 always reserves it), the kernel image
    (loaded at 16 MiB, CONFIG_PHYSICAL_START, or at 1 MiB on machines too small for that)
    and the ``struct page`` array (64 bytes a page), which memblock allocates top-down.
    """
    mib = (1 << 20) >> PAGE_SHIFT
    image_pages = (4 if nr_pages >= 64 * mib else 2) * mib
    image_start = 16 * mib if nr_pages >= 32 * mib else 1 * mib
    memmap_pages = -(-(nr_pages * 64) >> PAGE_SHIFT)
    lowmem_end = min(nr_pages, 896 * mib) if arch == "i386" else nr_pages
    return [
        Reservation(0, mib, "BIOS and real-mode area"),
        Reservation(image_start, image_start + image_pages, "kernel image"),
        Reservation(lowmem_end - memmap_pages, lowmem_end, "struct page array (mem_map)"),
    ]


@attrs.frozen
class BuddyStatistics:
    """Counters of the page allocator (the ``buddy`` entry of ``Machine.stats()``)."""

    allocs: int
    frees: int
    failures: int
    pcp_hits: int
    pcp_refills: int
    pcp_drains: int
    splits: int
    merges: int
    steals: int
    lock_acquisitions: int
    lock_contended: int
    lock_wait_cycles: int
    nr_free_pages: int
    nr_pcp_pages: int
    nr_allocated_pages: int


class BuddyAllocator:
    """The page allocator of one machine (one NUMA node, node 0).

    Args:
        nr_pages: physical pages of RAM.
        arch: "x86_64" or "i386" (decides the zones).
        nr_cpus: number of CPUs (one per-CPU page list per CPU and zone).

    Example:
        >>> buddy = BuddyAllocator(nr_pages=16384)        # 64 MiB
        >>> pfn = buddy.alloc_pages(3)
        >>> pfn % 8
        0
        >>> buddy.free_pages(pfn, 3)
    """

    def __init__(self, nr_pages: int, arch: str = "x86_64", nr_cpus: int = 1) -> None:
        if nr_pages < PAGEBLOCK_NR_PAGES:
            raise ValueError(f"the buddy allocator needs at least {PAGEBLOCK_NR_PAGES} pages")
        self.nr_pages = nr_pages
        self.arch = arch
        self.nr_cpus = nr_cpus
        self.zones = build_zones(arch, nr_pages)
        self.reservations = boot_reservations(nr_pages, arch)
        nr_pageblocks = -(-nr_pages // PAGEBLOCK_NR_PAGES)
        # memmap_init() marks every pageblock movable at boot.
        self.pageblock_mt = bytearray([G.MIGRATE_MOVABLE]) * nr_pageblocks
        # Zone boundaries are pageblock-aligned (16 MiB, 4 GiB, 896 MiB), so a pageblock's
        # zone is a byte lookup: free_pages finds the zone without searching.
        self.pageblock_zone = bytearray(nr_pageblocks)
        for zone in self.zones:
            first, last = zone.start_pfn >> PAGEBLOCK_ORDER, -(-zone.end_pfn >> PAGEBLOCK_ORDER)
            if zone.end_pfn > zone.start_pfn:
                self.pageblock_zone[first:last] = bytes([zone.index]) * (last - first)
        self.allocated: dict[int, int] = {}  # head pfn -> order
        self.free_block: dict[int, tuple[int, int]] = {}  # head pfn -> (order, migratetype)
        self.log: list[str] = []  # what the kernel would have printed (dmesg)
        self.allocs = self.frees = self.failures = 0
        self.pcp_hits = self.pcp_refills = self.pcp_drains = 0
        self.splits = self.merges = self.steals = 0
        self.lock_acquisitions = self.lock_contended = self.lock_wait_cycles = 0
        self._lock_until = [0] * len(self.zones)
        self._op_cycles = 0
        self._op_locks: list[int] = []
        self._gfp_cache: dict[int, tuple[int, int, tuple[Zone, ...], int]] = {}
        self._boot()

    # ------------------------------------------------------------------ boot

    def _boot(self) -> None:
        reserved = sorted((r.start_pfn, r.end_pfn) for r in self.reservations)
        for zone in self.zones:
            zone.present_pages = zone.spanned_pages
            if not zone.present_pages:
                continue
            pos = zone.start_pfn
            for start, end in [*reserved, (zone.end_pfn, zone.end_pfn)]:
                start = min(max(start, zone.start_pfn), zone.end_pfn)
                end = max(min(end, zone.end_pfn), zone.start_pfn)
                if start > pos:
                    self._free_range_at_boot(zone, pos, start)
                pos = max(pos, end)
            zone.managed_pages = zone.free_pages
        setup_watermarks(self.zones, highmem=self.arch == "i386")
        for zone in self.zones:
            batch = pcp_batch(zone)
            high = max(zone.watermark[WMARK_LOW] // self.nr_cpus, batch << 2)
            zone.pcp = [
                PerCpuPages(
                    lists=[deque() for _ in range(G.MIGRATE_PCPTYPES)],
                    high=high,
                    batch=max(1, batch),
                )
                for _ in range(self.nr_cpus)
            ]
        self.boot_free_blocks = dict(self.free_block)

    def _free_range_at_boot(self, zone: Zone, start: int, end: int) -> None:
        """``__free_pages_memory``: largest aligned blocks, added to the list tails in order."""
        pfn = start
        while pfn < end:
            order = min(MAX_PAGE_ORDER, (pfn & -pfn).bit_length() - 1 if pfn else MAX_PAGE_ORDER)
            while pfn + (1 << order) > end:
                order -= 1
            self._add_to_free_list(zone, pfn, order, G.MIGRATE_MOVABLE, tail=True)
            zone.free_pages += 1 << order
            pfn += 1 << order

    # ------------------------------------------------------------------ free lists

    def _add_to_free_list(
        self, zone: Zone, pfn: int, order: int, mt: int, tail: bool = False
    ) -> None:
        area = zone.free_area[order][mt]
        area[pfn] = None
        if not tail:
            area.move_to_end(pfn, last=False)
        zone.nr_free[order] += 1
        self.free_block[pfn] = (order, mt)

    def _del_from_free_list(self, zone: Zone, pfn: int, order: int, mt: int) -> None:
        del zone.free_area[order][mt][pfn]
        zone.nr_free[order] -= 1
        del self.free_block[pfn]

    def zone_of(self, pfn: int) -> Zone:
        """The zone a page frame belongs to."""
        for zone in self.zones:
            if zone.start_pfn <= pfn < zone.end_pfn:
                return zone
        raise ValueError(f"pfn {pfn:#x} is outside RAM (max pfn {self.nr_pages - 1:#x})")

    # ------------------------------------------------------------------ gfp decoding

    def _decode(self, gfp: int) -> tuple[int, int, tuple[Zone, ...], int]:
        """(migratetype, highest zone index, zonelist, alloc flags) for a gfp mask."""
        cached = self._gfp_cache.get(gfp) if gfp.__class__ is int else None
        if cached is not None:
            return cached
        G.check_gfp(gfp)
        if gfp & _GFP_DMA:
            high = ZONE_DMA
        elif gfp & _GFP_DMA32:
            high = ZONE_DMA32 if self.arch == "x86_64" else ZONE_NORMAL
        elif gfp & _GFP_HIGHMEM and self.arch == "i386":
            high = ZONE_HIGHMEM
        else:
            high = ZONE_NORMAL
        zonelist = tuple(z for z in reversed(self.zones[: high + 1]) if z.managed_pages)
        flags = 0
        if gfp & _GFP_HIGH:
            flags |= ALLOC_MIN_RESERVE
        if not gfp & _GFP_DIRECT_RECLAIM:
            flags |= ALLOC_NON_BLOCK
        decoded = (G.gfp_migratetype(gfp), high, zonelist, flags)
        self._gfp_cache[gfp] = decoded
        return decoded

    # ------------------------------------------------------------------ allocation

    def alloc_pages(self, order: int = 0, gfp: int = G.GFP_KERNEL, cpu: int = 0) -> int:
        """Allocate a naturally aligned block of ``2**order`` pages; return its first pfn.

        Raises:
            OutOfMemory: no zone the gfp mask allows can satisfy it
                ("page allocation failure: order:N, mode:0x...").
            ValueError, TypeError: order outside 0..MAX_PAGE_ORDER, bad gfp flags or cpu.
        """
        self._op_cycles = 0
        self._op_locks.clear()
        pfn = self._alloc(order, gfp, cpu)
        self.allocated[pfn] = order
        self.allocs += 1
        return pfn

    def check_order(self, order: object) -> int:
        """Return ``order`` if it is an int in 0..MAX_PAGE_ORDER; raise TypeError/ValueError."""
        if isinstance(order, bool) or not isinstance(order, int):
            raise TypeError(f"order must be an int, got {order!r}")
        if not 0 <= order <= MAX_PAGE_ORDER:
            raise ValueError(
                f"order {order} is outside 0..MAX_PAGE_ORDER ({MAX_PAGE_ORDER}): the largest "
                f"block is {format_size(1 << (MAX_PAGE_ORDER + PAGE_SHIFT))}"
            )
        return order

    def _check_cpu(self, cpu: object) -> int:
        if isinstance(cpu, bool) or not isinstance(cpu, int) or not 0 <= cpu < self.nr_cpus:
            raise ValueError(f"cpu must be 0..{self.nr_cpus - 1}, got {cpu!r}")
        return cpu

    def _alloc(self, order: int, gfp: int, cpu: int) -> int:
        if order.__class__ is not int or not 0 <= order <= MAX_PAGE_ORDER:
            self.check_order(order)
        if cpu.__class__ is not int or not 0 <= cpu < self.nr_cpus:
            self._check_cpu(cpu)
        mt, high, zonelist, flags = self._decode(gfp)
        pfn = self._get_page_from_freelist(order, mt, high, zonelist, WMARK_LOW, 0, cpu)
        if pfn >= 0:
            return pfn
        # Slow path: the min watermark, with the reserves GFP_ATOMIC may use.
        pfn = self._get_page_from_freelist(order, mt, high, zonelist, WMARK_MIN, flags, cpu)
        if pfn >= 0:
            return pfn
        if gfp & _GFP_DIRECT_RECLAIM and self.nr_pcp_pages():
            # __alloc_pages_direct_reclaim: drain the per-CPU lists, then try again.
            self.drain_all_pages()
            pfn = self._get_page_from_freelist(order, mt, high, zonelist, WMARK_MIN, flags, cpu)
            if pfn >= 0:
                return pfn
        self.failures += 1
        self._op_cycles += ALLOC_FAILURE_CYCLES
        message = (
            f"page allocation failure: order:{order}, mode:{G.format_gfp(gfp)}, nodemask=(null)"
        )
        if not gfp & _GFP_NOWARN:
            self.log.append(f"swapper/{cpu}: {message}")
        free = ", ".join(f"{z.name}: {z.free_pages * 4}kB" for z in self.zones if z.managed_pages)
        raise OutOfMemory(
            f"{message}: no free block of order >= {order} above the watermarks in the zones "
            f"this gfp mask allows (free: {free}). A driver must handle NULL here; large "
            "buffers that need not be physically contiguous belong in vmalloc/kvmalloc."
        )

    def _get_page_from_freelist(
        self,
        order: int,
        mt: int,
        high: int,
        zonelist: tuple[Zone, ...],
        wmark: int,
        flags: int,
        cpu: int,
    ) -> int:
        for zone in zonelist:
            free = zone.free_pages - ((1 << order) - 1)
            mark = zone.watermark[wmark]
            if flags & ALLOC_MIN_RESERVE:
                mark -= mark // 2
                if flags & ALLOC_NON_BLOCK:
                    mark -= mark // 4
            if free <= mark + zone.lowmem_reserve[high]:
                continue
            if order:
                nr_free = zone.nr_free
                for o in range(order, NR_PAGE_ORDERS):
                    if nr_free[o]:
                        break
                else:
                    continue
                # rmqueue() under the zone lock (_take_lock, inlined: this is the hot path)
                self._op_locks.append(zone.index)
                self._op_cycles += LOCKED_CYCLES
                self.lock_acquisitions += 1
                pfn = self._rmqueue(zone, order, mt)
            else:
                pfn = self._rmqueue_pcp(zone, mt, cpu)
            if pfn >= 0:
                return pfn
        return -1

    def _take_lock(self, zone: Zone, cycles: int) -> None:
        self._op_locks.append(zone.index)
        self._op_cycles += cycles
        self.lock_acquisitions += 1

    def _rmqueue_pcp(self, zone: Zone, mt: int, cpu: int) -> int:
        pcp = zone.pcp[cpu]
        lst = pcp.lists[mt]
        if not lst:
            self._take_lock(zone, LOCKED_CYCLES)
            self.pcp_refills += 1
            for _ in range(pcp.batch):
                pfn = self._rmqueue(zone, 0, mt)
                if pfn < 0:
                    break
                lst.append(pfn)  # rmqueue_bulk adds to the tail: the list keeps pfn order
                pcp.count += 1
                self._op_cycles += PER_BLOCK_CYCLES
            if not lst:
                return -1
        else:
            self.pcp_hits += 1
            self._op_cycles += PCP_CYCLES
        pcp.count -= 1
        return lst.popleft()

    def _rmqueue(self, zone: Zone, order: int, mt: int) -> int:
        """``__rmqueue``: smallest fitting block of the wanted type, else steal, else -1."""
        pfn = self._rmqueue_smallest(zone, order, mt)
        if pfn < 0 and self._rmqueue_fallback(zone, order, mt):
            pfn = self._rmqueue_smallest(zone, order, mt)
        return pfn

    def _rmqueue_smallest(self, zone: Zone, order: int, mt: int) -> int:
        free_area = zone.free_area
        for current in range(order, NR_PAGE_ORDERS):
            area = free_area[current][mt]
            if area:
                pfn, _ = area.popitem(last=False)
                zone.nr_free[current] -= 1
                del self.free_block[pfn]
                # expand(): keep the lower half, give back each upper half one order down.
                while current > order:
                    current -= 1
                    self._add_to_free_list(zone, pfn + (1 << current), current, mt)
                    self.splits += 1
                    self._op_cycles += PER_BLOCK_CYCLES
                zone.free_pages -= 1 << order
                return pfn
        return -1

    def _rmqueue_fallback(self, zone: Zone, order: int, start_mt: int) -> bool:
        """``__rmqueue_fallback``: move a block from another migratetype to ``start_mt``."""
        found: tuple[int, int] | None = None
        for current in range(MAX_PAGE_ORDER, order - 1, -1):
            for fallback in FALLBACKS[start_mt]:
                if zone.free_area[current][fallback]:
                    found = (current, fallback)
                    break
            if found:
                break
        if found is None:
            return False
        current, fallback = found
        can_steal = _can_steal_fallback(current, start_mt)
        if not can_steal and start_mt == G.MIGRATE_MOVABLE and current > order:
            # find_smallest: a movable request that cannot claim the pageblock takes the
            # smallest block that fits, leaving big unmovable-type blocks whole.
            for smaller in range(order, NR_PAGE_ORDERS):
                fb = next((f for f in FALLBACKS[start_mt] if zone.free_area[smaller][f]), None)
                if fb is not None:
                    current, fallback = smaller, fb
                    break
            can_steal = _can_steal_fallback(current, start_mt)
        pfn = next(iter(zone.free_area[current][fallback]))
        self.steals += 1
        if current >= PAGEBLOCK_ORDER:
            self._del_from_free_list(zone, pfn, current, fallback)
            for block in range(pfn >> PAGEBLOCK_ORDER, (pfn + (1 << current)) >> PAGEBLOCK_ORDER):
                self.pageblock_mt[block] = start_mt
            self._add_to_free_list(zone, pfn, current, start_mt)
            return True
        if can_steal:
            block = pfn >> PAGEBLOCK_ORDER
            first = block << PAGEBLOCK_ORDER
            heads = [
                p
                for p in range(first, first + PAGEBLOCK_NR_PAGES)
                if p in self.free_block and self.free_block[p][1] != start_mt
            ]
            free_in_block = sum(1 << self.free_block[p][0] for p in heads)
            if free_in_block >= PAGEBLOCK_NR_PAGES // 2:
                self.pageblock_mt[block] = start_mt
                for p in heads:
                    o, m = self.free_block[p]
                    self._del_from_free_list(zone, p, o, m)
                    self._add_to_free_list(zone, p, o, start_mt)
                return True
        self._del_from_free_list(zone, pfn, current, fallback)
        self._add_to_free_list(zone, pfn, current, start_mt)
        return True

    def alloc_pages_bulk(self, nr_pages: int, gfp: int = G.GFP_KERNEL, cpu: int = 0) -> list[int]:
        """``alloc_pages_bulk``: up to ``nr_pages`` order-0 pages in one call.

        Returns as many pages as could be had (possibly fewer, as the kernel's does); raises
        OutOfMemory only if not even one page could be allocated.
        """
        if isinstance(nr_pages, bool) or not isinstance(nr_pages, int) or nr_pages < 1:
            raise ValueError(f"nr_pages must be a positive int, got {nr_pages!r}")
        if cpu.__class__ is not int or not 0 <= cpu < self.nr_cpus:
            self._check_cpu(cpu)
        mt, high, zonelist, _ = self._decode(gfp)
        self._op_cycles = 0
        self._op_locks.clear()
        pfns: list[int] = []
        allocated = self.allocated
        # __alloc_pages_bulk: the first zone with nr_pages to spare above its low watermark
        # serves the batch from this CPU's list, refilling the list as it empties.
        for zone in zonelist:
            if zone.free_pages - nr_pages <= zone.watermark[WMARK_LOW] + zone.lowmem_reserve[high]:
                continue
            while len(pfns) < nr_pages:
                pfn = self._rmqueue_pcp(zone, mt, cpu)
                if pfn < 0:
                    break
                allocated[pfn] = 0
                pfns.append(pfn)
            break
        self.allocs += len(pfns)
        # Whatever is still missing comes one page at a time, the normal way (and may fail).
        while len(pfns) < nr_pages:
            try:
                pfn = self._alloc(0, gfp | _GFP_NOWARN if pfns else gfp, cpu)
            except OutOfMemory:
                if not pfns:
                    raise
                self.failures -= 1  # a short bulk allocation is not a failure
                break
            allocated[pfn] = 0
            self.allocs += 1
            pfns.append(pfn)
        return pfns

    # ------------------------------------------------------------------ freeing

    def free_pages(self, pfn: int, order: int = 0, cpu: int = 0) -> None:
        """Give back a block from :meth:`alloc_pages`.

        Raises:
            DoubleFree: the block is already free.
            InvalidFree: ``pfn`` was never handed out with this order (reserved memory, the
                middle of a block, a wrong order, a page outside RAM).
        """
        self._op_cycles = 0
        self._op_locks.clear()
        got = self.allocated.get(pfn) if pfn.__class__ is int else None  # a list is unhashable
        if got is None or got != order or order.__class__ is not int:
            self._reject_free(pfn, order)
        if cpu.__class__ is not int or not 0 <= cpu < self.nr_cpus:
            self._check_cpu(cpu)
        del self.allocated[pfn]
        self.frees += 1
        zone = self.zones[self.pageblock_zone[pfn >> PAGEBLOCK_ORDER]]
        mt = self.pageblock_mt[pfn >> PAGEBLOCK_ORDER]
        if order == 0:
            pcp = zone.pcp[cpu]
            pcp.lists[mt].appendleft(pfn)
            pcp.count += 1
            self._op_cycles += PCP_CYCLES
            if pcp.count >= pcp.high:
                self._take_lock(zone, LOCKED_CYCLES)
                self._free_pcppages_bulk(zone, pcp, pcp.batch)
            return
        self._op_locks.append(zone.index)
        self._op_cycles += LOCKED_CYCLES
        self.lock_acquisitions += 1
        self._free_one_page(zone, pfn, order, mt)

    def _free_pcppages_bulk(self, zone: Zone, pcp: PerCpuPages, count: int) -> None:
        """Return ``count`` pages from the cold tails of a per-CPU list, round-robin."""
        mt = 0
        while count > 0 and pcp.count > 0:
            lst = pcp.lists[mt]
            if lst:
                pfn = lst.pop()
                pcp.count -= 1
                count -= 1
                self._free_one_page(zone, pfn, 0, self.pageblock_mt[pfn >> PAGEBLOCK_ORDER])
                self._op_cycles += PER_BLOCK_CYCLES
            mt = (mt + 1) % G.MIGRATE_PCPTYPES

    def _free_one_page(self, zone: Zone, pfn: int, order: int, mt: int) -> None:
        """``__free_one_page``: merge with free buddies, then put on the list head."""
        zone.free_pages += 1 << order
        free_block = self.free_block
        while order < MAX_PAGE_ORDER:
            buddy = pfn ^ (1 << order)
            info = free_block.get(buddy)
            if info is None or info[0] != order or not zone.start_pfn <= buddy < zone.end_pfn:
                break
            self._del_from_free_list(zone, buddy, order, info[1])
            self.merges += 1
            self._op_cycles += PER_BLOCK_CYCLES
            pfn &= buddy
            order += 1
        if order >= PAGEBLOCK_ORDER:
            # A free block spanning whole pageblocks has one type.
            first = pfn >> PAGEBLOCK_ORDER
            n = 1 << (order - PAGEBLOCK_ORDER)
            self.pageblock_mt[first : first + n] = bytes([mt]) * n
        # buddy_merge_likely(): if the buddy one order up is free, this block will probably
        # merge soon, so put it at the tail and hand out other blocks first.
        to_tail = False
        if order < MAX_PAGE_ORDER - 1:
            higher_buddy = (pfn & ~(1 << order)) ^ (1 << (order + 1))
            info = free_block.get(higher_buddy)
            to_tail = (
                info is not None
                and info[0] == order + 1
                and zone.start_pfn <= higher_buddy < zone.end_pfn
            )
        self._add_to_free_list(zone, pfn, order, mt, tail=to_tail)

    def drain_all_pages(self) -> None:
        """``drain_all_pages``: return every per-CPU list to the free lists."""
        for zone in self.zones:
            for pcp in zone.pcp:
                if pcp.count:
                    self.pcp_drains += 1
                    self._free_pcppages_bulk(zone, pcp, pcp.count)

    def _reject_free(self, pfn: object, order: object) -> None:
        """Raise the error that describes a bad free_pages() call; change nothing."""
        if isinstance(pfn, bool) or not isinstance(pfn, int):
            raise TypeError(f"free_pages takes a pfn (int), got {pfn!r}")
        order = self.check_order(order)
        if not 0 <= pfn < self.nr_pages:
            raise InvalidFree(
                f"free_pages: pfn {pfn:#x} is not a page of this machine "
                f"(RAM has pfns 0..{self.nr_pages - 1:#x})"
            )
        got = self.allocated.get(pfn)
        if got is not None:
            raise InvalidFree(
                f"free_pages: pfn {pfn:#x} was allocated with order {got}, freed with order "
                f"{order}: free a block with the order it was allocated with"
            )
        for res in self.reservations:
            if res.start_pfn <= pfn < res.end_pfn:
                raise InvalidFree(
                    f"free_pages: pfn {pfn:#x} is reserved ({res.name}) and was never allocated"
                )
        if self._is_free(pfn):
            raise DoubleFree(
                f"free_pages: double free of pfn {pfn:#x} (order {order}): the page is already "
                "free (BUG: Bad page state: page_ref_count(page) == 0)"
            )
        block = self.block_of(pfn)
        if block is not None and block[0] != pfn:
            head, got = block
            raise InvalidFree(
                f"free_pages: pfn {pfn:#x} is inside the order-{got} block allocated at pfn "
                f"{head:#x}; free that block with free_pages({head:#x}, {got})"
            )
        raise InvalidFree(f"free_pages: pfn {pfn:#x} was not allocated by alloc_pages")

    def block_of(self, pfn: int) -> tuple[int, int] | None:
        """The allocated block holding page ``pfn``: ``(head pfn, order)``, or None (a free,
        per-CPU-listed or reserved page)."""
        allocated = self.allocated
        for order in range(NR_PAGE_ORDERS):
            head = pfn & ~((1 << order) - 1)
            got = allocated.get(head)
            if got is not None and got >= order:
                return head, got
        return None

    def _is_free(self, pfn: int) -> bool:
        for o in range(NR_PAGE_ORDERS):
            head = pfn & ~((1 << o) - 1)
            info = self.free_block.get(head)
            if info is not None and info[0] >= o:
                return True
        return any(pfn in lst for z in self.zones for pcp in z.pcp for lst in pcp.lists)

    # ------------------------------------------------------------------ timing

    def charge(self, at: int) -> int:
        """Turn the last operation's cost into a completion cycle, with zone-lock contention."""
        start = at
        for index in self._op_locks:
            held = self._lock_until[index]
            if held > start:
                self.lock_contended += 1
                self.lock_wait_cycles += held - start
                start = held
        done = start + self._op_cycles
        for index in self._op_locks:
            self._lock_until[index] = done
        return done

    def timed_alloc_pages(self, order: int, gfp: int, cpu: int, at: int) -> tuple[int, int]:
        pfn = self.alloc_pages(order, gfp, cpu)
        return pfn, self.charge(at)

    def timed_free_pages(self, pfn: int, order: int, cpu: int, at: int) -> tuple[None, int]:
        self.free_pages(pfn, order, cpu)
        return None, self.charge(at)

    def timed_alloc_pages_bulk(self, nr: int, gfp: int, cpu: int, at: int) -> tuple[list[int], int]:
        pfns = self.alloc_pages_bulk(nr, gfp, cpu)
        # One lock round trip for the batch, not one per page.
        self._op_locks[:] = sorted(set(self._op_locks))
        return pfns, self.charge(at)

    # ------------------------------------------------------------------ introspection

    def nr_free_pages(self) -> int:
        """NR_FREE_PAGES summed over zones (per-CPU list pages not included, as in Linux)."""
        return sum(z.free_pages for z in self.zones)

    def nr_pcp_pages(self) -> int:
        return sum(z.pcp_pages for z in self.zones)

    def nr_allocated_pages(self) -> int:
        return sum(1 << o for o in self.allocated.values())

    def managed_pages(self) -> int:
        return sum(z.managed_pages for z in self.zones)

    def statistics(self) -> BuddyStatistics:
        return BuddyStatistics(
            allocs=self.allocs,
            frees=self.frees,
            failures=self.failures,
            pcp_hits=self.pcp_hits,
            pcp_refills=self.pcp_refills,
            pcp_drains=self.pcp_drains,
            splits=self.splits,
            merges=self.merges,
            steals=self.steals,
            lock_acquisitions=self.lock_acquisitions,
            lock_contended=self.lock_contended,
            lock_wait_cycles=self.lock_wait_cycles,
            nr_free_pages=self.nr_free_pages(),
            nr_pcp_pages=self.nr_pcp_pages(),
            nr_allocated_pages=self.nr_allocated_pages(),
        )

    def check_invariants(self) -> None:
        """Assert the allocator's books balance (used by the property tests)."""
        for zone in self.zones:
            pages = 0
            for order in range(NR_PAGE_ORDERS):
                count = 0
                for mt in range(G.MIGRATE_PCPTYPES):
                    for pfn in zone.free_area[order][mt]:
                        assert self.free_block[pfn] == (order, mt), (pfn, order, mt)
                        assert pfn % (1 << order) == 0, f"pfn {pfn:#x} unaligned for order {order}"
                        assert zone.start_pfn <= pfn and pfn + (1 << order) <= zone.end_pfn
                        count += 1
                assert zone.nr_free[order] == count
                pages += count << order
            assert zone.free_pages == pages, (zone.name, zone.free_pages, pages)
            assert zone.pcp_pages == sum(len(lst) for p in zone.pcp for lst in p.lists)
        reserved = sum(r.end_pfn - r.start_pfn for r in self.reservations)
        total = self.nr_free_pages() + self.nr_pcp_pages() + self.nr_allocated_pages()
        assert total + reserved == self.nr_pages, (total, reserved, self.nr_pages)


# ---------------------------------------------------------------------- the actor


@attrs.frozen
class AllocPages:
    order: int
    gfp: int
    cpu: int


@attrs.frozen
class FreePages:
    pfn: int
    order: int
    cpu: int


@attrs.frozen
class AllocPagesBulk:
    nr_pages: int
    gfp: int
    cpu: int


class BuddyService(Actor):
    """The page allocator as a service: answers AllocPages/FreePages/AllocPagesBulk."""

    def __init__(self, model: BuddyAllocator, **kwargs: Any) -> None:
        super().__init__("buddy", **kwargs)
        self.model = model

    def refusal_done(self, exc: HwsimError, at: int) -> int | None:
        """A failed allocation costs the search and the drained lists it did."""
        return self.model.charge(at) if isinstance(exc, OutOfMemory) else None

    @handles(AllocPages)
    def _alloc(self, msg: AllocPages, at: int) -> tuple[int, int]:
        return self.model.timed_alloc_pages(msg.order, msg.gfp, msg.cpu, at)

    @handles(FreePages)
    def _free(self, msg: FreePages, at: int) -> tuple[None, int]:
        return self.model.timed_free_pages(msg.pfn, msg.order, msg.cpu, at)

    @handles(AllocPagesBulk)
    def _bulk(self, msg: AllocPagesBulk, at: int) -> tuple[list[int], int]:
        return self.model.timed_alloc_pages_bulk(msg.nr_pages, msg.gfp, msg.cpu, at)

    def statistics(self) -> BuddyStatistics:
        return self.model.statistics()
