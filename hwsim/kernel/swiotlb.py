"""The swiotlb bounce-buffer pool (kernel/dma/swiotlb.c): slots below a device's mask through
which dma-direct copies buffers the device cannot reach.

:class:`~hwsim.kernel.dma_api.DmaApi` decides when to bounce and makes the copies; this module
holds the pool and its slot search. The rules (slot and segment sizes, next-fit, where the pool
comes from) are in :mod:`hwsim.kernel.dma_api`'s docstring.
"""

from __future__ import annotations

from ..errors import OutOfMemory
from ..units import PAGE_SHIFT, PAGE_SIZE, format_size
from . import gfp as G
from .buddy import BuddyAllocator
from .slab_common import get_order

IO_TLB_SHIFT = 11
IO_TLB_SIZE = 1 << IO_TLB_SHIFT  # one swiotlb slot: 2 KiB
IO_TLB_SEGSIZE = 128  # slots a mapping may span at most
IO_TLB_DEFAULT_SIZE = 64 << 20
_SEGMENT_BYTES = IO_TLB_SIZE * IO_TLB_SEGSIZE  # 256 KiB
_SEGMENT_ORDER = get_order(_SEGMENT_BYTES)

# Module-level: G.__GFP_X inside a class body would be name-mangled.
_GFP_DMA = G.__GFP_DMA
_GFP_DMA32 = G.__GFP_DMA32
_GFP_NOWARN = G.__GFP_NOWARN


class SwiotlbPool:
    """The bounce pool (``struct io_tlb_mem``): ``size`` bytes, whole 256 KiB segments,
    allocated at construction (``swiotlb_init``); what the kernel prints goes to ``log``."""

    def __init__(self, buddy: BuddyAllocator, size: int, log: list[str]) -> None:
        self.log = log
        self._segments: list[int] = []  # physical base of each 256 KiB segment
        self._reserve(buddy, size // _SEGMENT_BYTES)
        self._used = bytearray(len(self._segments) * IO_TLB_SEGSIZE)
        self._index = 0

    def _reserve(self, buddy: BuddyAllocator, nr_segments: int) -> None:
        """``swiotlb_init``: the bounce pool, in segments from ZONE_DMA first, then below
        4 GiB (see :mod:`hwsim.kernel.dma_api`'s docstring for why not in one piece)."""
        gfp = G.GFP_KERNEL | _GFP_NOWARN
        zone = _GFP_DMA
        while len(self._segments) < nr_segments:
            try:
                pfn = buddy.alloc_pages(_SEGMENT_ORDER, gfp | zone)
            except OutOfMemory:
                if zone == _GFP_DMA:
                    zone = _GFP_DMA32
                    continue
                break
            self._segments.append(pfn << PAGE_SHIFT)
        self._segments.sort()
        if self._segments:
            lo, hi = self._segments[0], self._segments[-1] + _SEGMENT_BYTES - 1
            got = len(self._segments) * _SEGMENT_BYTES
            self.log.append(f"software IO TLB: mapped [mem {lo:#018x}-{hi:#018x}] ({got >> 20}MB)")
        elif nr_segments:
            self.log.append("software IO TLB: Cannot allocate buffer")

    @property
    def nslots(self) -> int:
        """Slots in the pool."""
        return len(self._used)

    @property
    def nused(self) -> int:
        """Slots in use."""
        return sum(self._used)

    def slot_phys(self, slot: int) -> int:
        """The physical address of a slot."""
        return self._segments[slot // IO_TLB_SEGSIZE] + (slot % IO_TLB_SEGSIZE) * IO_TLB_SIZE

    def find(self, size: int, limit: int) -> tuple[int, int]:
        """``swiotlb_find_slots``: (first slot, slots) of a free run ending at or below
        ``limit`` (the device's mask), or (-1, slots)."""
        nslots = -(-size // IO_TLB_SIZE)
        total = len(self._used)
        if not total or nslots > IO_TLB_SEGSIZE:
            return -1, nslots
        stride = PAGE_SIZE // IO_TLB_SIZE if size >= PAGE_SIZE else 1
        start = -(-self._index // stride) * stride % total
        used = self._used
        for k in range(0, total, stride):
            i = (start + k) % total
            if i % IO_TLB_SEGSIZE + nslots > IO_TLB_SEGSIZE:
                continue
            if used.find(1, i, i + nslots) >= 0:
                continue
            if self.slot_phys(i) + size - 1 > limit:
                continue
            return i, nslots
        return -1, nslots

    def take(self, slot: int, nslots: int) -> None:
        """Mark slots used; the next search starts after them (next-fit)."""
        self._used[slot : slot + nslots] = b"\x01" * nslots
        self._index = (slot + nslots) % len(self._used)

    def release(self, slot: int, nslots: int) -> None:
        """Mark slots free again."""
        self._used[slot : slot + nslots] = bytes(nslots)

    def full_message(self, name: str, limit: int, mask_bits: int, size: int, nslots: int) -> str:
        """Why :meth:`find` failed for device ``name`` (mask ``limit``, ``mask_bits`` bits)."""
        if not self._used:
            return (
                f"{name}: DMA addr overflow (mask {limit:#x}) and no swiotlb to bounce "
                f"through: the buffer must be below the device's {mask_bits}-bit mask "
                "(GFP_DMA for 24-bit devices)"
            )
        if nslots > IO_TLB_SEGSIZE:
            why = f"more than {format_size(_SEGMENT_BYTES)}, swiotlb_max_mapping_size()"
        else:
            why = "no free run of slots below the device's mask"
        return (
            f"{name}: swiotlb buffer is full (sz: {size} bytes), total "
            f"{self.nslots} (slots), used {self.nused} (slots): {why}"
        )
