"""Memory zones and their watermarks (mm/page_alloc.c, include/linux/mmzone.h).

x86_64: DMA = [0, 16 MiB), DMA32 = [16 MiB, 4 GiB), Normal = [4 GiB, end).
i386:   DMA = [0, 16 MiB), Normal = [16 MiB, 896 MiB), HighMem = [896 MiB, end).

A zone is populated only if RAM reaches into it; empty zones are kept (so zone indices are
fixed, as in the kernel) but /proc/buddyinfo skips them.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from math import isqrt

import attrs

from ..units import PAGE_SHIFT

MAX_PAGE_ORDER = 10
NR_PAGE_ORDERS = MAX_PAGE_ORDER + 1
PAGEBLOCK_ORDER = 9
PAGEBLOCK_NR_PAGES = 1 << PAGEBLOCK_ORDER
PAGE_ALLOC_COSTLY_ORDER = 3
NR_MIGRATETYPES = 3  # Unmovable, Movable, Reclaimable

ZONE_DMA, ZONE_DMA32, ZONE_NORMAL, ZONE_HIGHMEM = 0, 1, 2, 3
ZONE_NAMES = ("DMA", "DMA32", "Normal", "HighMem")

_MIB = 1 << 20
# Zone boundaries in pfns, per architecture: (zone index, first pfn, end pfn or None = RAM end).
ZONE_LAYOUT = {
    "x86_64": (
        (ZONE_DMA, 0, (16 * _MIB) >> PAGE_SHIFT),
        (ZONE_DMA32, (16 * _MIB) >> PAGE_SHIFT, (4096 * _MIB) >> PAGE_SHIFT),
        (ZONE_NORMAL, (4096 * _MIB) >> PAGE_SHIFT, None),
    ),
    "i386": (
        (ZONE_DMA, 0, (16 * _MIB) >> PAGE_SHIFT),
        (ZONE_NORMAL, (16 * _MIB) >> PAGE_SHIFT, (896 * _MIB) >> PAGE_SHIFT),
        (ZONE_HIGHMEM, (896 * _MIB) >> PAGE_SHIFT, None),
    ),
}

# sysctl_lowmem_reserve_ratio defaults (mm/page_alloc.c), by zone index.
LOWMEM_RESERVE_RATIO = (256, 256, 32, 0)
WATERMARK_SCALE_FACTOR = 10  # vm.watermark_scale_factor default
WMARK_MIN, WMARK_LOW, WMARK_HIGH = 0, 1, 2


@attrs.define(eq=False)
class PerCpuPages:
    """``struct per_cpu_pages``: one CPU's cache of order-0 pages for one zone."""

    lists: list[deque[int]]  # per migratetype; the left end is the list head (hot end)
    count: int = 0
    high: int = 0
    batch: int = 1


@attrs.define(eq=False)
class Zone:
    """One zone: its span, its free lists, its watermarks.

    ``free_area[order][migratetype]`` is an ordered set of block-head pfns; the first entry
    is the list head (where the kernel allocates from and adds freed pages to).
    ``nr_free[order]`` counts blocks, not pages, as /proc/buddyinfo shows them.
    """

    index: int
    name: str
    start_pfn: int
    end_pfn: int  # exclusive; == start_pfn for an empty zone
    present_pages: int = 0
    managed_pages: int = 0
    free_pages: int = 0  # NR_FREE_PAGES: pages on the buddy free lists (not on pcp lists)
    watermark: list[int] = attrs.Factory(lambda: [0, 0, 0])
    lowmem_reserve: list[int] = attrs.Factory(list)
    free_area: list[list[OrderedDict[int, None]]] = attrs.Factory(
        lambda: [[OrderedDict() for _ in range(NR_MIGRATETYPES)] for _ in range(NR_PAGE_ORDERS)]
    )
    nr_free: list[int] = attrs.Factory(lambda: [0] * NR_PAGE_ORDERS)
    pcp: list[PerCpuPages] = attrs.Factory(list)

    @property
    def spanned_pages(self) -> int:
        return self.end_pfn - self.start_pfn

    @property
    def populated(self) -> bool:
        return self.present_pages > 0

    def contains(self, pfn: int) -> bool:
        return self.start_pfn <= pfn < self.end_pfn

    @property
    def pcp_pages(self) -> int:
        return sum(p.count for p in self.pcp)


def build_zones(arch: str, nr_pages: int) -> list[Zone]:
    """The zones of a machine with ``nr_pages`` pages, indexed by zone number (gaps empty)."""
    zones: list[Zone] = []
    for index, name in enumerate(ZONE_NAMES):
        zones.append(Zone(index=index, name=name, start_pfn=0, end_pfn=0))
    for index, start, end in ZONE_LAYOUT[arch]:
        stop = nr_pages if end is None else min(end, nr_pages)
        if start < stop:
            zones[index].start_pfn, zones[index].end_pfn = start, stop
        else:
            zones[index].start_pfn = zones[index].end_pfn = min(start, nr_pages)
    return zones


def pcp_batch(zone: Zone) -> int:
    """``zone_batchsize()``: how many pages a per-CPU list moves at a time."""
    batch = min(zone.managed_pages >> 10, (1 << 20) >> PAGE_SHIFT)
    batch //= 4
    if batch < 1:
        batch = 1
    # rounddown_pow_of_two(batch + batch / 2) - 1: a batch that is not a power of two
    # avoids cache-colour aliasing.
    n = batch + batch // 2
    return (1 << (n.bit_length() - 1)) - 1 if n > 1 else 1


def min_free_kbytes(lowmem_kbytes: int) -> int:
    """``calculate_min_free_kbytes()``: sqrt(lowmem_kbytes * 16), clamped to [128, 262144]."""
    return max(128, min(262144, isqrt(lowmem_kbytes * 16)))


def setup_watermarks(zones: list[Zone], *, highmem: bool = False) -> int:
    """``__setup_per_zone_wmarks()`` and ``setup_per_zone_lowmem_reserve()``.

    Args:
        zones: every zone, indexed by zone number.
        highmem: the kernel has a HighMem zone (i386); its min is clamped to [32, 128]
            pages even when the zone is empty.

    Returns min_free_kbytes.
    """
    lowmem_pages = sum(z.managed_pages for z in zones if z.index != ZONE_HIGHMEM)
    mfk = min_free_kbytes(lowmem_pages << (PAGE_SHIFT - 10))
    pages_min = mfk >> (PAGE_SHIFT - 10)
    for zone in zones:
        share = pages_min * zone.managed_pages // lowmem_pages if lowmem_pages else 0
        if zone.index == ZONE_HIGHMEM and highmem:
            # Highmem's min only limits GFP_HIGHMEM|__GFP_HIGH users; kept small.
            wmin = max(32, min(128, zone.managed_pages // 1024))
        else:
            wmin = share
        tmp = max(share >> 2, zone.managed_pages * WATERMARK_SCALE_FACTOR // 10000)
        zone.watermark = [wmin, wmin + tmp, wmin + 2 * tmp]
    for i, zone in enumerate(zones):
        reserve = [0] * len(zones)
        managed = 0
        for j in range(i + 1, len(zones)):
            managed += zones[j].managed_pages
            ratio = LOWMEM_RESERVE_RATIO[i]
            reserve[j] = managed // ratio if ratio and zone.managed_pages else 0
        zone.lowmem_reserve = reserve
    return mfk
