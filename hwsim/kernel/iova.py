"""The IOMMU's view of one device (drivers/iommu/iova.c and dma-iommu.c): its I/O virtual
address space, allocated top-down and size-aligned, and the page table the IOMMU walks.

:class:`~hwsim.kernel.dma_api.DmaApi` keeps one :class:`IovaDomain` per device with an IOMMU.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

from ..errors import DmaFault
from ..units import PAGE_SHIFT, PAGE_SIZE

IOMMU_READ, IOMMU_WRITE = 1, 2
IOVA_RANGE_CACHE_MAX_SIZE = 6
MSI_WINDOW = (0xFEE00000 >> PAGE_SHIFT, (0xFEEFFFFF >> PAGE_SHIFT) + 1)  # x86 IOAPIC/MSI
_LIMIT_32BIT = (1 << 32) - 1  # DMA_BIT_MASK(32)


class IovaDomain:
    """One device's I/O virtual address space (``struct iova_domain``) and page table."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int]] = [MSI_WINDOW]  # sorted [start, end) pfns in use
        self.ptes: dict[int, tuple[int, int]] = {}  # iova pfn -> (pfn, IOMMU_READ|WRITE)
        #: Called as ``flush(iova_pfn, npages)`` after an unmap: the IOTLB invalidation.
        self.iotlb_flush: Callable[[int, int], None] | None = None

    def alloc(self, npages: int, limit_pfn: int) -> int:
        """``alloc_iova``: the highest size-aligned free range ending at or below
        ``limit_pfn``; -1 if none."""
        size = npages
        if size < 1 << (IOVA_RANGE_CACHE_MAX_SIZE - 1):
            size = 1 << (size - 1).bit_length()
        align = 1 << (size - 1).bit_length()
        hi = limit_pfn + 1
        for start, end in reversed([(0, 0), *self.ranges]):
            if end >= hi:
                hi = min(hi, start)
                continue
            candidate = (hi - size) & ~(align - 1)
            if candidate >= max(end, 1):
                bisect.insort(self.ranges, (candidate, candidate + size))
                return candidate
            hi = start
        return -1

    def free(self, start: int) -> None:
        """``free_iova``: release the range that starts at ``start``.

        Raises:
            ValueError: no allocated range starts there (nothing changes).
        """
        i = bisect.bisect_left(self.ranges, (start, 0))
        if i == len(self.ranges) or self.ranges[i][0] != start:
            raise ValueError(f"free_iova: no IOVA range starts at pfn {start:#x}")
        del self.ranges[i]

    def alloc_iova(self, npages: int, limit: int) -> int:
        """``iommu_dma_alloc_iova``: below 4 GiB first (a single-address-cycle address for
        PCI), then anywhere below the mask ``limit``; -1 if none."""
        iova = -1
        if limit > _LIMIT_32BIT:
            iova = self.alloc(npages, _LIMIT_32BIT >> PAGE_SHIFT)
        if iova < 0:
            iova = self.alloc(npages, limit >> PAGE_SHIFT)
        return iova

    def map(self, iova_pfn: int, pfns: list[int], prot: int) -> None:
        """Point the pages from ``iova_pfn`` on at ``pfns``, with ``prot`` (IOMMU_READ/WRITE)."""
        for i, pfn in enumerate(pfns):
            self.ptes[iova_pfn + i] = (pfn, prot)

    def unmap(self, iova_pfn: int, npages: int) -> None:
        """Clear ``npages`` pages from ``iova_pfn`` and free the range that starts there."""
        for i in range(npages):
            self.ptes.pop(iova_pfn + i, None)
        self.free(iova_pfn)
        if self.iotlb_flush is not None:
            self.iotlb_flush(iova_pfn, npages)

    def lookup(self, iova_pfn: int) -> tuple[int, bool, bool] | None:
        """The IOMMU's view of one page: ``(pfn, readable, writable)`` or None."""
        pte = self.ptes.get(iova_pfn)
        return (
            None if pte is None else (pte[0], bool(pte[1] & IOMMU_READ), bool(pte[1] & IOMMU_WRITE))
        )

    def translate(self, name: str, iova: int, write: bool) -> int:
        """The physical address of device ``name``'s access to ``iova``.

        Raises:
            DmaFault: no mapping covers ``iova``, or it does not allow the access.
        """
        pte = self.ptes.get(iova >> PAGE_SHIFT)
        need = IOMMU_WRITE if write else IOMMU_READ
        if pte is None or not pte[1] & need:
            kind, reason = ("Write", 5) if write else ("Read", 6)
            text = f"PTE {kind} access is not set"
            why = (
                "no mapping covers it: the device used an address it was not given, or one "
                "already unmapped"
                if pte is None
                else f"the page is mapped for the other direction only ({kind.lower()} not "
                "allowed): map the buffer with the direction the device really uses"
            )
            raise DmaFault(
                f"DMAR: [DMA {kind} NO_PASID] Request device [{name}] fault addr "
                f"{iova:#x} [fault reason {reason:#04x}] {text}: {why}"
            )
        return (pte[0] << PAGE_SHIFT) | (iova & (PAGE_SIZE - 1))
