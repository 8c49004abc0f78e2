"""The IOMMU: devices see I/O virtual addresses, translated per 4 KiB page through an IOTLB.

With an IOMMU (``MachineConfig(iommu=True)``) a device's bus addresses are IOVAs; the DMA API
maps scattered pages to one contiguous IOVA range, and a device access outside every mapping
is a DMA fault (Intel VT-d's "DMAR: DRHD: handling fault" report).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import attrs

from ..errors import DmaFault
from ..units import PAGE_SHIFT, PAGE_SIZE
from ..validate import check_int

IOMMU_WALK_CYCLES = 100  # an IOTLB miss: the IOMMU walks its page table


@attrs.frozen
class IommuStatistics:
    """What the IOMMU has done so far."""

    mapped_pages: int
    translations: int
    iotlb_hits: int
    iotlb_misses: int
    faults: int


class IommuModel:
    """An IOMMU: an IOVA page → pfn map for one device, with an LRU IOTLB in front.

    Unmapping invalidates the IOTLB entries at once (Linux's strict mode, ``iommu.strict=1``).

    Example:
        >>> iommu = IommuModel()
        >>> iommu.map(0x10000, 0x5000, 8192)
        >>> hex(iommu.translate(0x11008, write=False)[0])
        '0x6008'

    Args:
        iotlb_entries: IOTLB capacity in pages.
        walk_cycles: what an IOTLB miss costs (the page-table walk).
        device: the PCI name used in fault messages.
        page_table: where a walk looks IOVA pages up, ``page -> (pfn, read, write)`` or
            None: the kernel's I/O page table for this device (``map``/``unmap`` here are
            then not used; the kernel calls :meth:`invalidate` when it unmaps). Default:
            the model's own table.
    """

    def __init__(
        self,
        *,
        iotlb_entries: int = 64,
        walk_cycles: int = IOMMU_WALK_CYCLES,
        device: str = "00:04.0",
        page_table: Callable[[int], tuple[int, bool, bool] | None] | None = None,
    ) -> None:
        if iotlb_entries < 1:
            raise ValueError(f"iotlb_entries must be >= 1, got {iotlb_entries}")
        if walk_cycles < 0:
            raise ValueError(f"walk_cycles must be >= 0, got {walk_cycles}")
        self.iotlb_entries = iotlb_entries
        self.walk_cycles = walk_cycles
        self.device = device
        self._ptes: dict[int, tuple[int, bool, bool]] = {}  # iova pfn -> (pfn, read, write)
        self._lookup = self._ptes.get if page_table is None else page_table
        self._iotlb: OrderedDict[int, tuple[int, bool, bool]] = OrderedDict()
        self._translations = self._hits = self._misses = self._faults = 0

    def map(
        self, iova: int, phys: int, size: int, *, read: bool = True, write: bool = True
    ) -> None:
        """Map ``size`` bytes (rounded up to pages) of IOVA space at ``iova`` onto ``phys``.

        Raises:
            ValueError: unaligned addresses, a size < 1, or an IOVA page already mapped.
            TypeError: an argument that is not an int.
        """
        check_int("iova", iova)
        check_int("phys", phys)
        check_int("size", size)
        if iova % PAGE_SIZE or phys % PAGE_SIZE or iova < 0 or phys < 0:
            raise ValueError(f"iommu_map: {iova:#x} -> {phys:#x} is not page aligned")
        if size < 1:
            raise ValueError(f"iommu_map: size must be >= 1, got {size}")
        pages = range(iova >> PAGE_SHIFT, (iova + size + PAGE_SIZE - 1) >> PAGE_SHIFT)
        busy = [p for p in pages if p in self._ptes]
        if busy:
            raise ValueError(f"iommu_map: IOVA {busy[0] << PAGE_SHIFT:#x} is already mapped")
        base = phys >> PAGE_SHIFT
        for i, page in enumerate(pages):
            self._ptes[page] = (base + i, read, write)

    def unmap(self, iova: int, size: int) -> None:
        """Unmap the pages of ``[iova, iova + size)`` and drop them from the IOTLB.

        Raises:
            ValueError: a size < 1, or a page of the range is not mapped (nothing is
                unmapped then).
            TypeError: an argument that is not an int.
        """
        check_int("iova", iova)
        check_int("size", size, 1)
        pages = range(iova >> PAGE_SHIFT, (iova + size + PAGE_SIZE - 1) >> PAGE_SHIFT)
        missing = [p for p in pages if p not in self._ptes]
        if missing:
            raise ValueError(f"iommu_unmap: IOVA {missing[0] << PAGE_SHIFT:#x} is not mapped")
        for page in pages:
            del self._ptes[page]
            self._iotlb.pop(page, None)

    def invalidate(self, iova_pfn: int, npages: int) -> None:
        """Drop IOVA pages from the IOTLB (what the kernel does after unmapping them, in
        strict mode: ``iommu.strict=1``)."""
        for page in range(iova_pfn, iova_pfn + npages):
            self._iotlb.pop(page, None)

    def iova_to_phys(self, iova: int) -> int | None:
        """The physical address ``iova`` maps to, or None (``iommu_iova_to_phys``); no
        statistics, no IOTLB."""
        pte = self._lookup(iova >> PAGE_SHIFT)
        return None if pte is None else (pte[0] << PAGE_SHIFT) | (iova & (PAGE_SIZE - 1))

    def translate(self, iova: int, *, write: bool) -> tuple[int, int]:
        """Translate a device access: ``(phys, cycles)``, cycles being the walk on a miss.

        Raises:
            DmaFault: the page is not mapped, or not for this kind of access (in the words
                of Intel's VT-d driver).
        """
        page = iova >> PAGE_SHIFT
        self._translations += 1
        pte = self._iotlb.get(page)
        cycles = 0
        if pte is not None:
            self._hits += 1
            self._iotlb.move_to_end(page)
        else:
            self._misses += 1
            cycles = self.walk_cycles
            pte = self._lookup(page)
        if pte is None or not pte[2 if write else 1]:
            self._faults += 1
            kind, reason, what = ("Write", 0x05, "Write") if write else ("Read", 0x06, "Read")
            raise DmaFault(
                "DMAR: DRHD: handling fault status reg 2\n"
                f"DMAR: [DMA {kind} NO_PASID] Request device [{self.device}] fault addr "
                f"{iova & ~(PAGE_SIZE - 1):#x} [fault reason {reason:#04x}] PTE {what} access "
                "is not set\n"
                "The device used an I/O virtual address that was not mapped for it: map the "
                "buffer with dma_map_single/dma_map_sg first and keep it mapped until the "
                "transfer completes."
            )
        if page not in self._iotlb:
            self._iotlb[page] = pte
            if len(self._iotlb) > self.iotlb_entries:
                self._iotlb.popitem(last=False)
        return (pte[0] << PAGE_SHIFT) | (iova & (PAGE_SIZE - 1)), cycles

    def statistics(self) -> IommuStatistics:
        return IommuStatistics(
            mapped_pages=len(self._ptes),
            translations=self._translations,
            iotlb_hits=self._hits,
            iotlb_misses=self._misses,
            faults=self._faults,
        )
