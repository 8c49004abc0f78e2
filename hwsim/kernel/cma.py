"""The contiguous memory area (mm/cma.c, kernel/dma/contiguous.c): a run of pageblocks set
aside at boot, from which :meth:`~hwsim.kernel.dma_api.DmaApi.dma_alloc_coherent` takes
buffers larger than the buddy allocator can give.

Unlike Linux, the area is not lent to movable allocations, so its pages are not in MemFree
(see :mod:`hwsim.kernel.dma_api`'s docstring).
"""

from __future__ import annotations

from ..errors import OutOfMemory
from ..units import PAGE_SHIFT
from . import gfp as G
from .buddy import BuddyAllocator
from .zones import PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER

CMA_ALIGNMENT = 8  # CONFIG_CMA_ALIGNMENT

# Module-level: G.__GFP_X inside a class body would be name-mangled.
_GFP_DMA32 = G.__GFP_DMA32
_GFP_MOVABLE = G.__GFP_MOVABLE
_GFP_NOWARN = G.__GFP_NOWARN


class CmaArea:
    """One CMA area (``struct cma``): ``size`` bytes (``cma=``) reserved from ``buddy`` at
    construction, none for 0; what the kernel prints goes to ``log``."""

    def __init__(self, buddy: BuddyAllocator, size: int, log: list[str]) -> None:
        self.log = log
        self.base_pfn = 0
        self._bitmap = bytearray()
        if size:
            self._reserve(buddy, size)

    def _reserve(self, buddy: BuddyAllocator, size: int) -> None:
        """``dma_contiguous_reserve``: a run of whole pageblocks, below 4 GiB."""
        nr_blocks = -(-size // (PAGEBLOCK_NR_PAGES << PAGE_SHIFT))
        gfp = G.GFP_KERNEL | _GFP_DMA32 | _GFP_MOVABLE | _GFP_NOWARN
        taken: set[int] = set()
        base = -1
        while base < 0:
            try:
                pfn = buddy.alloc_pages(PAGEBLOCK_ORDER, gfp)
            except OutOfMemory:
                break
            taken.add(pfn)
            lo = pfn
            while lo - PAGEBLOCK_NR_PAGES in taken:
                lo -= PAGEBLOCK_NR_PAGES
            hi = pfn + PAGEBLOCK_NR_PAGES
            while hi in taken:
                hi += PAGEBLOCK_NR_PAGES
            if hi - lo >= nr_blocks * PAGEBLOCK_NR_PAGES:
                base = lo
        keep = set() if base < 0 else {base + i * PAGEBLOCK_NR_PAGES for i in range(nr_blocks)}
        for pfn in sorted(taken - keep):
            buddy.free_pages(pfn, PAGEBLOCK_ORDER)
        mib = (nr_blocks * PAGEBLOCK_NR_PAGES) >> (20 - PAGE_SHIFT)
        if base < 0:
            self.log.append(f"cma: Failed to reserve {mib} MiB")
            return
        self.base_pfn = base
        self._bitmap = bytearray(nr_blocks * PAGEBLOCK_NR_PAGES)
        self.log.append(f"cma: Reserved {mib} MiB at {base << PAGE_SHIFT:#018x}")

    def alloc(self, count: int, align: int) -> int:
        """``cma_alloc``: first fit in the bitmap, ``2**align``-page aligned; -1 if none."""
        bitmap = self._bitmap
        step = 1 << align
        first = i = -self.base_pfn % step
        while i + count <= len(bitmap):
            busy = bitmap.find(1, i, i + count)
            if busy < 0:
                bitmap[i : i + count] = b"\x01" * count
                return self.base_pfn + i
            i = first + -(-(busy + 1 - first) // step) * step
        self.log.append(f"cma: cma_alloc: alloc failed, req-size: {count} pages, ret: -12")
        return -1

    def release(self, pfn: int, count: int) -> None:
        """``cma_release``: give back ``count`` pages from ``pfn``."""
        i = pfn - self.base_pfn
        self._bitmap[i : i + count] = bytes(count)

    @property
    def pages(self) -> int:
        """meminfo's CmaTotal, in pages."""
        return len(self._bitmap)

    @property
    def free_pages(self) -> int:
        """meminfo's CmaFree, in pages."""
        return len(self._bitmap) - sum(self._bitmap)
