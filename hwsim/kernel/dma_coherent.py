"""Coherent DMA memory: ``dma_alloc_coherent`` and ``dma_free_coherent`` (kernel/dma/direct.c's
``dma_direct_alloc``, contiguous.c, dma-iommu's ``iommu_dma_alloc``).

Where the pages come from (CMA first, then the buddy zone the coherent mask asks for, lower
zones when a block ends above it), how they are prepared on a non-coherent platform, and the
CPU's uncached view of them (:class:`UncachedRanges`).

Like :mod:`hwsim.kernel.dma_streaming`, these are plain functions over a
:class:`~hwsim.kernel.dma_api.DmaApi`, whose methods of the same names call them; the model
holds the state and the counters. The rules are in :mod:`hwsim.kernel.dma_api`'s docstring.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from ..errors import InvalidFree, OutOfMemory
from ..units import PAGE_SHIFT, PAGE_SIZE
from ..validate import check_int as _check_int
from . import gfp as G
from .buddy import BuddyAllocator
from .cma import CMA_ALIGNMENT
from .dma_debug import _Mapping, _Piece
from .dma_device import DMA_BIDIRECTIONAL, DMA_BIT_MASK, DmaDevice
from .dma_device import check_dev as _check_dev
from .slab_common import get_order
from .zones import MAX_PAGE_ORDER

if TYPE_CHECKING:
    from .dma_api import DmaApi

# Module-level: G.__GFP_X inside a class body would be name-mangled.
_GFP_ZONES = G.__GFP_DMA | G.__GFP_DMA32 | G.__GFP_HIGHMEM
_GFP_DMA = G.__GFP_DMA
_GFP_DMA32 = G.__GFP_DMA32
_GFP_DIRECT_RECLAIM = G.__GFP_DIRECT_RECLAIM


class UncachedRanges:
    """The physical ranges the CPU maps uncached: coherent buffers on a non-coherent
    platform, by first address."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: dict[int, int] = {}

    def add(self, phys: int, size: int) -> None:
        bisect.insort(self._starts, phys)
        self._ends[phys] = phys + size

    def remove(self, phys: int) -> bool:
        """Forget the range that starts at ``phys``; whether there was one."""
        if phys not in self._ends:
            return False
        del self._ends[phys]
        self._starts.remove(phys)
        return True

    def covers(self, phys: int) -> bool:
        """Whether a range contains ``phys``."""
        i = bisect.bisect_right(self._starts, phys) - 1
        return i >= 0 and phys < self._ends[self._starts[i]]


def dma_alloc_coherent(api: DmaApi, dev: DmaDevice, size: int, gfp: int) -> tuple[int, int]:
    """:meth:`DmaApi.dma_alloc_coherent <hwsim.kernel.dma_api.DmaApi.dma_alloc_coherent>`."""
    _check_dev(dev)
    _check_int("size", size, 1)
    gfp = G.check_gfp(gfp) & ~_GFP_ZONES
    order = get_order(size)
    npages = -(-size // PAGE_SIZE)
    limit = DMA_BIT_MASK(64) if dev.iommu else dev.coherent_limit
    pfn, from_cma = -1, False
    if api._cma.pages and gfp & _GFP_DIRECT_RECLAIM and size > PAGE_SIZE:
        pfn = api._cma.alloc(npages, min(order, CMA_ALIGNMENT))
        if pfn >= 0 and ((pfn + npages) << PAGE_SHIFT) - 1 > limit:
            api._cma.release(pfn, npages)
            pfn = -1
        from_cma = pfn >= 0
    if pfn < 0:
        pfn = _alloc_below(api.buddy, dev, order, gfp, limit, size)
    phys = pfn << PAGE_SHIFT
    nbytes = (npages if from_cma else 1 << order) << PAGE_SHIFT
    api._write(phys, bytes(nbytes))
    if not api.dma_coherent:
        if api.caches is not None:
            # arch_dma_prep_coherent: no line of the buffer may stay in a cache.
            api.lines_written_back += api.caches.writeback_range(phys, nbytes)
            api.lines_invalidated += api.caches.invalidate_range(phys, nbytes)
        api._uncached.add(phys, nbytes)
        if api.caches is not None and hasattr(api.caches, "map_uncached"):
            api.caches.map_uncached(phys, nbytes)  # the CPU's accesses bypass them
    handle, iova = phys, None
    if dev.iommu:
        iova_pfn = api._domain(dev).alloc_iova(npages, dev.coherent_limit)
        if iova_pfn < 0:  # pragma: no cover - 4 GiB of IOVA space per device
            _undo_coherent(api, phys, npages, order, from_cma)
            raise OutOfMemory(f"{dev.name}: dma_alloc_coherent: no IOVA space left")
        iova = (iova_pfn, npages)
        api._iommu_map(dev, iova_pfn, [pfn + i for i in range(npages)], DMA_BIDIRECTIONAL)
        handle = iova_pfn << PAGE_SHIFT
    cpu_addr = api.layout.phys_to_virt(phys)
    mapping = _Mapping(
        dev,
        "coherent",
        handle,
        size,
        DMA_BIDIRECTIONAL,
        [_Piece(phys, nbytes, phys)],
        iova=iova,
        cpu_addr=cpu_addr,
        cma=from_cma,
        order=order,
    )
    api._debug.add(mapping)
    api.coherent_allocs += 1
    api.cma_allocs += from_cma
    return cpu_addr, handle


def _alloc_below(
    buddy: BuddyAllocator, dev: DmaDevice, order: int, gfp: int, limit: int, size: int
) -> int:
    """``__dma_direct_alloc_pages``: the zone the mask asks for, lower ones if the block
    ends above it."""
    if order > MAX_PAGE_ORDER:
        raise OutOfMemory(
            f"{dev.name}: dma_alloc_coherent({size}): order {order} is above "
            f"MAX_PAGE_ORDER ({MAX_PAGE_ORDER}): buffers over 4 MiB need CMA (cma=)"
        )
    if limit <= DMA_BIT_MASK(24):
        zone = _GFP_DMA
    elif limit <= DMA_BIT_MASK(32):
        zone = _GFP_DMA32
    else:
        zone = 0
    while True:
        try:
            pfn = buddy.alloc_pages(order, gfp | zone)
        except OutOfMemory as err:
            raise OutOfMemory(f"{dev.name}: dma_alloc_coherent({size}): {err}") from None
        if ((pfn + (1 << order)) << PAGE_SHIFT) - 1 <= limit:
            return pfn
        buddy.free_pages(pfn, order)
        if limit < DMA_BIT_MASK(64) and not zone & (_GFP_DMA32 | _GFP_DMA):
            zone = _GFP_DMA32
        elif not zone & _GFP_DMA:
            zone = _GFP_DMA
        else:
            raise OutOfMemory(
                f"{dev.name}: dma_alloc_coherent({size}): no memory below the "
                f"{dev.coherent_mask}-bit coherent mask ({limit:#x})"
            )


def _undo_coherent(api: DmaApi, phys: int, npages: int, order: int, from_cma: bool) -> None:
    pfn = phys >> PAGE_SHIFT
    if from_cma:
        api._cma.release(pfn, npages)
    else:
        api.buddy.free_pages(pfn, order)
    if (
        api._uncached.remove(phys)
        and api.caches is not None
        and hasattr(api.caches, "unmap_uncached")
    ):
        api.caches.unmap_uncached(phys)


def dma_free_coherent(api: DmaApi, dev: DmaDevice, size: int, cpu_addr: int, dma_addr: int) -> None:
    """:meth:`DmaApi.dma_free_coherent <hwsim.kernel.dma_api.DmaApi.dma_free_coherent>`."""
    _check_dev(dev)
    _check_int("size", size, 1)
    _check_int("cpu_addr", cpu_addr)
    _check_int("dma_addr", dma_addr)
    mapping = api._debug.find_for_unmap(dev, dma_addr, size, DMA_BIDIRECTIONAL, "coherent")
    if mapping.cpu_addr != cpu_addr:
        raise InvalidFree(
            f"DMA-API: {dev.name}: device driver frees DMA memory with different CPU "
            f"address [device address={dma_addr:#018x}] [size={size} bytes] [cpu alloc "
            f"address={mapping.cpu_addr:#x}] [cpu free address={cpu_addr:#x}]"
        )
    piece = mapping.pieces[0]
    # Giving the pages back is the only step that can refuse (pages freed behind the API's
    # back): it goes first, so that a refusal leaves the IOVA mapping and the record intact.
    _undo_coherent(api, piece.phys, piece.size >> PAGE_SHIFT, mapping.order, mapping.cma)
    if mapping.iova is not None:
        api._domain(dev).unmap(*mapping.iova)
    api._debug.forget(mapping)
    api.coherent_frees += 1
