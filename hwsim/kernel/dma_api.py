"""The DMA mapping API (kernel/dma/mapping.c, direct.c, swiotlb.c, contiguous.c, debug.c and
drivers/iommu/dma-iommu.c), as a plain synchronous model.

A CPU sees virtual addresses, RAM physical ones, a device bus (DMA) addresses. Without an
IOMMU a bus address is the physical address (x86); with one, the device sees I/O virtual
addresses that the IOMMU translates page by page (:meth:`DmaApi.iommu_translate`).

:class:`DmaApi` holds the state and the public entry points; the work is in one module per
idea: :mod:`~hwsim.kernel.dma_device` (the device, directions and masks),
:mod:`~hwsim.kernel.dma_coherent` (coherent memory), :mod:`~hwsim.kernel.dma_streaming`
(streaming mappings, single and scatter-gather), :mod:`~hwsim.kernel.dma_debug` (the records
of live mappings and dma-debug's checks), with :mod:`~hwsim.kernel.swiotlb`,
:mod:`~hwsim.kernel.cma` and :mod:`~hwsim.kernel.iova` below them.

What follows Linux (v6.x):

- ``dma_map_single`` of a vmalloc address is refused: ``rejecting DMA map of vmalloc memory``
  (``dma_map_single_attrs``); a direction outside the enum is a BUG_ON; memory outside the
  direct map is dma-debug's ``device driver maps memory from invalid area``;
- dma-direct: a buffer whose bus range ends above the device's mask (``dma_capable``) is
  bounced through swiotlb: 2 KiB slots (IO_TLB_SIZE), a mapping never crosses a segment of
  IO_TLB_SEGSIZE (128) slots, so at most 256 KiB bounce at once; mappings of a page or more
  start on a page; the slot search is next-fit. Mapping always copies the buffer into the
  slots (since the 2022 info-leak fix, for DMA_FROM_DEVICE too); unmap and sync_for_cpu copy
  back for DMA_FROM_DEVICE/BIDIRECTIONAL, sync_for_device copies in for
  DMA_TO_DEVICE/BIDIRECTIONAL. A full pool is ``swiotlb buffer is full``;
- cache maintenance on a non-coherent platform, arm64's ``arch_sync_dma_for_device`` (clean
  the lines, whatever the direction, so that no dirty line can be evicted over the device's
  data later) and ``arch_sync_dma_for_cpu`` (invalidate, except for DMA_TO_DEVICE), applied to
  the range the device really uses (the bounce slots when bouncing). With
  ``dma_coherent=True`` (x86's snooping bus) there is none;
- ``dma_alloc_coherent``: the zone modifiers of the caller's gfp are dropped, CMA is tried
  first (blocking gfp and more than a page; ``cma_alloc`` aligned to ``min(order, 8)``), then
  buddy pages of ``get_order(size)`` in the zone the coherent mask asks for
  (``dma_direct_optimal_gfp_mask``: <= 24 bits GFP_DMA, <= 32 bits GFP_DMA32), retried with
  GFP_DMA32 and then GFP_DMA when the block ends above the mask; the memory is zeroed, and on
  a non-coherent platform its cache lines are cleaned and invalidated
  (``arch_dma_prep_coherent``) and the range is mapped uncached (:meth:`DmaApi.is_uncached`);
- dma-iommu: IOVAs are allocated top-down, size-aligned (sizes under 32 pages rounded up to a
  power of two), below 4 GiB first for devices with a wider mask, never in the x86 MSI window
  0xfee00000-0xfeefffff; pages are mapped IOMMU_READ for DMA_TO_DEVICE, IOMMU_WRITE for
  DMA_FROM_DEVICE, both for DMA_BIDIRECTIONAL; a scatterlist goes into ONE IOVA range and its
  entries fuse into one segment where one ends and the next starts on a page boundary
  (``__finalise_sg``); an access outside is a DMAR fault (:class:`~hwsim.DmaFault`);
- dma-debug's checks, in its words: unmapping what was not mapped ("device driver tries to
  free DMA memory it has not allocated"), with another size, direction or function, syncing
  outside a mapping.

Where it differs, on purpose:

- errors are exceptions: ``dma_map_single`` raises :class:`~hwsim.DmaMappingError` where Linux
  returns DMA_MAPPING_ERROR (``dma_mapping_error`` exists for code written the Linux way);
  dma-debug's complaints about unmaps raise :class:`~hwsim.InvalidFree` (and
  :class:`~hwsim.DoubleFree` for a handle unmapped before, which dma-debug cannot tell from a
  wild one), about syncs :class:`~hwsim.DmaMappingError`. ``dma_map_sg`` keeps Linux's "0 on
  failure" for lack of resources (the reason goes to :attr:`DmaApi.log`); bad arguments raise;
- ``dma_map_sg`` without an IOMMU merges entries that are contiguous on the bus (up to the
  device's max segment size, never across its 4 GiB segment boundary), as dma-api.rst allows
  ("The implementation is free to merge several consecutive sglist entries"); current
  dma-direct maps them one to one and leaves merging to ``sg_alloc_table_from_pages``. A
  device without scatter-gather accepts only a list that merges into one segment;
- the swiotlb pool always exists (``swiotlb_size=0`` turns it off); x86_64 sets it up only
  with more than 4 GiB of RAM. It is taken in 256 KiB segments from ZONE_DMA first, then
  below 4 GiB, so that ISA (24-bit) devices can bounce through it; Linux allocates it in one
  piece below 4 GiB, out of reach of such devices. Slot searches skip slots above the mask;
- the CMA area is a run of pageblocks taken from the buddy allocator at construction (below
  4 GiB) and not lent to movable allocations, so its pages are not in MemFree;
- with an IOMMU, coherent memory is physically contiguous and reached through the direct map
  (Linux may build it from scattered pages and vmap them).
"""

from __future__ import annotations

from typing import Protocol

import attrs

from ..devices.ram import RamModel
from ..errors import DmaFault
from ..validate import check_int as _check_int
from . import dma_coherent, dma_streaming
from . import gfp as G
from .buddy import BuddyAllocator
from .cma import CMA_ALIGNMENT as CMA_ALIGNMENT
from .cma import CmaArea
from .dma_coherent import UncachedRanges
from .dma_debug import DmaDebug
from .dma_debug import DmaMappingInfo as DmaMappingInfo
from .dma_device import DEFAULT_MAX_SEGMENT_SIZE as DEFAULT_MAX_SEGMENT_SIZE
from .dma_device import DEFAULT_SEGMENT_BOUNDARY as DEFAULT_SEGMENT_BOUNDARY
from .dma_device import DIRECTION_NAMES as DIRECTION_NAMES
from .dma_device import DMA_BIDIRECTIONAL as DMA_BIDIRECTIONAL
from .dma_device import DMA_BIT_MASK as DMA_BIT_MASK
from .dma_device import DMA_FROM_DEVICE as DMA_FROM_DEVICE
from .dma_device import DMA_MAPPING_ERROR as DMA_MAPPING_ERROR
from .dma_device import DMA_NONE as DMA_NONE
from .dma_device import DMA_TO_DEVICE as DMA_TO_DEVICE
from .dma_device import DmaDevice as DmaDevice
from .dma_device import check_dev as _check_dev
from .iova import IOMMU_READ as IOMMU_READ
from .iova import IOMMU_WRITE as IOMMU_WRITE
from .iova import IOVA_RANGE_CACHE_MAX_SIZE as IOVA_RANGE_CACHE_MAX_SIZE
from .iova import MSI_WINDOW as MSI_WINDOW
from .iova import IovaDomain
from .layout import Layout
from .scatterlist import ScatterList as ScatterList
from .scatterlist import SgEntry as SgEntry
from .scatterlist import sg_from_vmalloc as sg_from_vmalloc
from .scatterlist import sg_init_table as sg_init_table
from .scatterlist import sg_set_buf as sg_set_buf
from .scatterlist import sg_set_page as sg_set_page
from .swiotlb import IO_TLB_DEFAULT_SIZE as IO_TLB_DEFAULT_SIZE
from .swiotlb import IO_TLB_SEGSIZE as IO_TLB_SEGSIZE
from .swiotlb import IO_TLB_SHIFT as IO_TLB_SHIFT
from .swiotlb import IO_TLB_SIZE as IO_TLB_SIZE
from .swiotlb import SwiotlbPool
from .vmalloc import VmallocAllocator


class CacheMaintenance(Protocol):
    """What the DMA API needs of the CPU caches (a
    :class:`~hwsim.devices.coherence.CoherentHierarchy`)."""

    def writeback_range(self, phys: int, size: int) -> int: ...

    def invalidate_range(self, phys: int, size: int) -> int: ...

    def read(self, phys: int, size: int) -> bytes: ...

    def write(self, phys: int, data: bytes | bytearray | memoryview) -> None: ...


@attrs.frozen
class DmaStatistics:
    """Counters of the DMA API (the ``dma_api`` entry of ``Machine.stats()``)."""

    maps: int
    unmaps: int
    bounces: int
    bounce_bytes: int
    syncs: int
    iommu_maps: int
    rejected_vmalloc: int
    map_failures: int
    coherent_allocs: int
    coherent_frees: int
    cma_allocs: int
    lines_written_back: int
    lines_invalidated: int
    live_mappings: int
    swiotlb_slots: int
    swiotlb_used: int
    cma_pages: int
    cma_free_pages: int


class DmaApi:
    """The DMA API of one machine.

    Args:
        buddy: the page allocator (coherent buffers, swiotlb pool, CMA area).
        layout: the kernel's address layout (direct map, vmalloc space).
        ram: physical memory.
        caches: the CPU caches (for cache maintenance and the bounce copies, which the CPU
            makes); None when the machine has none.
        vmalloc: for the rejection message, which names the area.
        dma_coherent: True for a bus that snoops the CPU caches (x86): no maintenance.
        cma: bytes of CMA area (``cma=``), 0 for none.
        swiotlb_size: bytes of bounce pool; None for min(64 MiB, RAM / 8).

    Example:
        >>> from hwsim.kernel.layout import layout_for
        >>> ram, buddy = RamModel(size=64 << 20), BuddyAllocator(16384)
        >>> dma = DmaApi(buddy, layout_for("x86_64", 64 << 20), ram, dma_coherent=True)
        >>> dev = DmaDevice("floppy", dma_mask=24)
        >>> cpu_addr, handle = dma.dma_alloc_coherent(dev, 8192)
        >>> handle < 16 << 20
        True
        >>> dma.dma_free_coherent(dev, 8192, cpu_addr, handle)
    """

    def __init__(
        self,
        buddy: BuddyAllocator,
        layout: Layout,
        ram: RamModel,
        *,
        caches: CacheMaintenance | None = None,
        vmalloc: VmallocAllocator | None = None,
        dma_coherent: bool = False,
        cma: int = 0,
        swiotlb_size: int | None = None,
    ) -> None:
        if not isinstance(buddy, BuddyAllocator):
            raise TypeError(f"buddy must be a BuddyAllocator, got {buddy!r}")
        if not isinstance(layout, Layout):
            raise TypeError(f"layout must be a Layout, got {layout!r}")
        if not isinstance(ram, RamModel):
            raise TypeError(f"ram must be a RamModel, got {ram!r}")
        if not isinstance(dma_coherent, bool):
            raise TypeError(f"dma_coherent must be True or False, got {dma_coherent!r}")
        _check_int("cma", cma)
        if swiotlb_size is None:
            swiotlb_size = min(IO_TLB_DEFAULT_SIZE, ram.size // 8)
        _check_int("swiotlb_size", swiotlb_size)
        self.buddy = buddy
        self.layout = layout
        self.ram = ram
        self.caches = caches
        self.vmalloc = vmalloc
        self.dma_coherent = dma_coherent
        self.log: list[str] = []  # what the kernel would have printed (dmesg)
        # The private state is the model's, but dma_coherent's and dma_streaming's functions,
        # which do the work of the methods of the same names, read and update it too.
        self._debug = DmaDebug()  # the live mappings, dma-debug's records
        self._uncached = UncachedRanges()
        self._domains: dict[DmaDevice, IovaDomain] = {}
        self.maps = self.unmaps = self.bounces = self.bounce_bytes = self.syncs = 0
        self.iommu_maps = self.rejected_vmalloc = self.map_failures = 0
        self.coherent_allocs = self.coherent_frees = self.cma_allocs = 0
        self.lines_written_back = self.lines_invalidated = 0
        self._cma = CmaArea(buddy, cma, self.log)
        self._swiotlb = SwiotlbPool(buddy, swiotlb_size, self.log)

    @property
    def cma_base_pfn(self) -> int:
        """The first page of the CMA area (0 without one)."""
        return self._cma.base_pfn

    @property
    def cma_pages(self) -> int:
        """meminfo's CmaTotal, in pages."""
        return self._cma.pages

    @property
    def cma_free_pages(self) -> int:
        """meminfo's CmaFree, in pages."""
        return self._cma.free_pages

    # ------------------------------------------------------------------ memory and caches

    def _read(self, phys: int, size: int) -> bytes:
        return self.ram.read(phys, size) if self.caches is None else self.caches.read(phys, size)

    def _write(self, phys: int, data: bytes) -> None:
        if self.caches is None:
            self.ram.write(phys, data)
        else:
            self.caches.write(phys, data)

    # ------------------------------------------------------------------ iommu

    def _domain(self, dev: DmaDevice) -> IovaDomain:
        domain = self._domains.get(dev)
        if domain is None:
            domain = self._domains[dev] = IovaDomain()
        return domain

    def _iommu_map(self, dev: DmaDevice, iova_pfn: int, pfns: list[int], direction: int) -> None:
        prot = {
            DMA_BIDIRECTIONAL: IOMMU_READ | IOMMU_WRITE,
            DMA_TO_DEVICE: IOMMU_READ,
            DMA_FROM_DEVICE: IOMMU_WRITE,
        }[direction]
        self._domain(dev).map(iova_pfn, pfns, prot)
        self.iommu_maps += 1

    def iommu_domain(self, dev: DmaDevice) -> IovaDomain:
        """The I/O page table of ``dev`` (created empty on first use): what the machine's
        IOMMU walks for that device."""
        _check_dev(dev)
        if not dev.iommu:
            raise ValueError(f"{dev.name} has no IOMMU: its bus addresses are physical")
        return self._domain(dev)

    def iommu_translate(self, dev: DmaDevice, iova: int, *, write: bool = False) -> int:
        """What the IOMMU does with a device's access: the physical address of ``iova``.

        Raises:
            DmaFault: no mapping covers ``iova``, or it does not allow the access (a DMAR
                fault, in Intel VT-d's words).
            ValueError: the device has no IOMMU (its bus addresses are physical).
        """
        _check_dev(dev)
        _check_int("iova", iova)
        if not dev.iommu:
            raise ValueError(f"{dev.name} has no IOMMU: its bus addresses are physical")
        return self._domain(dev).translate(dev.name, iova, write)

    def dma_to_phys(self, dev: DmaDevice, dma_addr: int, *, write: bool = False) -> int:
        """Where a device's access to ``dma_addr`` lands: through the IOMMU if it has one,
        else the same address (x86: bus == physical), which must be below its mask."""
        _check_dev(dev)
        _check_int("dma_addr", dma_addr)
        if dev.iommu:
            return self.iommu_translate(dev, dma_addr, write=write)
        if dma_addr > dev.limit or dma_addr >= self.ram.size:
            raise DmaFault(
                f"{dev.name}: bus address {dma_addr:#x} is beyond what the device reaches "
                f"(mask {dev.limit:#x}) or beyond RAM"
            )
        return dma_addr

    # ------------------------------------------------------------------ coherent

    def dma_alloc_coherent(
        self, dev: DmaDevice, size: int, gfp: int = G.GFP_KERNEL
    ) -> tuple[int, int]:
        """``dma_alloc_coherent()``: zeroed, physically contiguous memory the CPU and the
        device share without syncs; returns ``(cpu_addr, dma_addr)``.

        Raises:
            OutOfMemory: no memory below the device's coherent mask (Linux returns NULL).
        """
        return dma_coherent.dma_alloc_coherent(self, dev, size, gfp)

    def dma_free_coherent(self, dev: DmaDevice, size: int, cpu_addr: int, dma_addr: int) -> None:
        """``dma_free_coherent()``: give back what :meth:`dma_alloc_coherent` returned.

        Raises:
            InvalidFree: not a live coherent buffer of ``dev``, or another size or CPU
                address than it was allocated with (dma-debug's words).
            DoubleFree: it was freed already.
        """
        dma_coherent.dma_free_coherent(self, dev, size, cpu_addr, dma_addr)

    def is_uncached(self, phys: int) -> bool:
        """Whether the CPU maps ``phys`` uncached: coherent DMA memory on a non-coherent
        platform (x86 PCD/PWT, ARM's memory attributes), which CPU accesses must bypass."""
        return self._uncached.covers(phys)

    # ------------------------------------------------------------------ streaming: single

    def dma_map_single(self, dev: DmaDevice, cpu_addr: int, size: int, direction: int) -> int:
        """``dma_map_single()``: the bus address at which ``dev`` may access ``size`` bytes
        of the direct-map (kmalloc or page) buffer at ``cpu_addr``.

        Raises:
            DmaMappingError: a vmalloc address ("rejecting DMA map of vmalloc memory"),
                memory outside the direct map or not allocated, or no way to reach it (swiotlb
                full, no IOVA space). Linux returns DMA_MAPPING_ERROR for these.
            ValueError, TypeError: size 0, DMA_NONE or another invalid direction.
        """
        return dma_streaming.dma_map_single(self, dev, cpu_addr, size, direction)

    def dma_unmap_single(self, dev: DmaDevice, dma_addr: int, size: int, direction: int) -> None:
        """``dma_unmap_single()``: end a mapping; the CPU may then read what the device wrote.

        Raises:
            InvalidFree: ``dma_addr`` is not a live single mapping of ``dev``, or the size or
                direction differ from the mapping's (dma-debug's words).
            DoubleFree: it was unmapped already.
        """
        dma_streaming.dma_unmap_single(self, dev, dma_addr, size, direction)

    def dma_sync_single_for_cpu(
        self, dev: DmaDevice, dma_addr: int, size: int, direction: int
    ) -> None:
        """``dma_sync_single_for_cpu()``: give (part of) a mapping back to the CPU without
        unmapping it: invalidate its cache lines, copy bounced data back."""
        dma_streaming.dma_sync_single(self, dev, dma_addr, size, direction, cpu=True)

    def dma_sync_single_for_device(
        self, dev: DmaDevice, dma_addr: int, size: int, direction: int
    ) -> None:
        """``dma_sync_single_for_device()``: hand (part of) a mapping to the device again:
        copy into the bounce slots, write dirty lines back."""
        dma_streaming.dma_sync_single(self, dev, dma_addr, size, direction, cpu=False)

    @staticmethod
    def dma_mapping_error(dev: DmaDevice, dma_addr: int) -> bool:
        """``dma_mapping_error()``: whether ``dma_addr`` is DMA_MAPPING_ERROR."""
        return dma_addr == DMA_MAPPING_ERROR

    # ------------------------------------------------------------------ streaming: sg

    def dma_map_sg(self, dev: DmaDevice, sglist: ScatterList, direction: int) -> int:
        """``dma_map_sg()``: map every entry; return the number of DMA segments (entries that
        are contiguous on the bus are merged; with an IOMMU the list gets one IOVA range), or
        0 when the mapping failed (the reason is in :attr:`log`), as Linux does.

        The segments are in the first ``nents`` entries' ``dma_address``/``dma_length``.

        Raises:
            TypeError, ValueError: not a ScatterList, an empty or unset entry, a bad
                direction; DmaMappingError: memory that is not allocated RAM, or a list that
                is mapped already.
        """
        return dma_streaming.dma_map_sg(self, dev, sglist, direction)

    def dma_unmap_sg(self, dev: DmaDevice, sglist: ScatterList, direction: int) -> None:
        """``dma_unmap_sg()``: end the mapping :meth:`dma_map_sg` made of ``sglist``.

        Raises:
            InvalidFree: the list is not mapped for ``dev``, or with another direction.
        """
        dma_streaming.dma_unmap_sg(self, dev, sglist, direction)

    def dma_sync_sg_for_cpu(self, dev: DmaDevice, sglist: ScatterList, direction: int) -> None:
        """``dma_sync_sg_for_cpu()``: :meth:`dma_sync_single_for_cpu` for every entry."""
        dma_streaming.dma_sync_sg(self, dev, sglist, direction, cpu=True)

    def dma_sync_sg_for_device(self, dev: DmaDevice, sglist: ScatterList, direction: int) -> None:
        """``dma_sync_sg_for_device()``: :meth:`dma_sync_single_for_device` for every entry."""
        dma_streaming.dma_sync_sg(self, dev, sglist, direction, cpu=False)

    # ------------------------------------------------------------------ introspection

    def device_ranges(
        self, dev: DmaDevice, dma_addr: int | None = None, sglist: ScatterList | None = None
    ) -> list[tuple[int, int]]:
        """The physical ranges the device reaches through a live single mapping (by its
        handle) or scatterlist: the bounce slots when bounced, the pages the IOMMU maps
        otherwise. Empty when there is no such mapping (the unmap then reports it)."""
        if sglist is not None:
            mapping = self._debug.sg.get(id(sglist))
            found = [] if mapping is None else [mapping]
        else:
            found = [m for m in self._debug.live.get((dev, dma_addr), []) if m.kind == "single"]  # type: ignore[arg-type]
        return [(p.bus_phys, p.size) for m in found for p in m.pieces]

    def mappings(self) -> list[DmaMappingInfo]:
        """Every live mapping and coherent buffer, by device and handle."""
        return self._debug.mappings()

    def statistics(self) -> DmaStatistics:
        return DmaStatistics(
            maps=self.maps,
            unmaps=self.unmaps,
            bounces=self.bounces,
            bounce_bytes=self.bounce_bytes,
            syncs=self.syncs,
            iommu_maps=self.iommu_maps,
            rejected_vmalloc=self.rejected_vmalloc,
            map_failures=self.map_failures,
            coherent_allocs=self.coherent_allocs,
            coherent_frees=self.coherent_frees,
            cma_allocs=self.cma_allocs,
            lines_written_back=self.lines_written_back,
            lines_invalidated=self.lines_invalidated,
            live_mappings=self._debug.live_mappings(),
            swiotlb_slots=self._swiotlb.nslots,
            swiotlb_used=self._swiotlb.nused,
            cma_pages=self.cma_pages,
            cma_free_pages=self.cma_free_pages,
        )
