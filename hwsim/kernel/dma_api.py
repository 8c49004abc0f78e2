"""The DMA mapping API (kernel/dma/mapping.c, direct.c, swiotlb.c, contiguous.c, debug.c and
drivers/iommu/dma-iommu.c), as a plain synchronous model.

A CPU sees virtual addresses, RAM physical ones, a device bus (DMA) addresses. Without an
IOMMU a bus address is the physical address (x86); with one, the device sees I/O virtual
addresses that the IOMMU translates page by page (:meth:`DmaApi.iommu_translate`).

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

import bisect
from collections import OrderedDict
from typing import Protocol

import attrs

from ..devices.ram import RamModel
from ..errors import DmaFault, DmaMappingError, DoubleFree, InvalidFree, OutOfMemory
from ..units import PAGE_SHIFT, PAGE_SIZE
from ..validate import check_int as _check_int
from . import gfp as G
from .buddy import BuddyAllocator
from .cma import CMA_ALIGNMENT as CMA_ALIGNMENT
from .cma import CmaArea
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
from .slab_common import get_order
from .swiotlb import IO_TLB_DEFAULT_SIZE as IO_TLB_DEFAULT_SIZE
from .swiotlb import IO_TLB_SEGSIZE as IO_TLB_SEGSIZE
from .swiotlb import IO_TLB_SHIFT as IO_TLB_SHIFT
from .swiotlb import IO_TLB_SIZE as IO_TLB_SIZE
from .swiotlb import SwiotlbPool
from .vmalloc import VmallocAllocator
from .zones import MAX_PAGE_ORDER

# enum dma_data_direction (include/linux/dma-direction.h)
DMA_BIDIRECTIONAL = 0
DMA_TO_DEVICE = 1
DMA_FROM_DEVICE = 2
DMA_NONE = 3
DIRECTION_NAMES = ("DMA_BIDIRECTIONAL", "DMA_TO_DEVICE", "DMA_FROM_DEVICE", "DMA_NONE")

#: ``DMA_MAPPING_ERROR``: ``~(dma_addr_t)0`` with a 64-bit dma_addr_t.
DMA_MAPPING_ERROR = (1 << 64) - 1

DEFAULT_MAX_SEGMENT_SIZE = 1 << 16  # dma_get_max_seg_size() without dma_parms
DEFAULT_SEGMENT_BOUNDARY = (1 << 32) - 1  # dma_get_seg_boundary() without dma_parms

_GFP_ZONES = G.__GFP_DMA | G.__GFP_DMA32 | G.__GFP_HIGHMEM
_GFP_DMA = G.__GFP_DMA
_GFP_DMA32 = G.__GFP_DMA32
_GFP_DIRECT_RECLAIM = G.__GFP_DIRECT_RECLAIM
_FREED_REMEMBERED = 4096  # unmapped handles kept to tell a double unmap


def DMA_BIT_MASK(n: int) -> int:
    """``DMA_BIT_MASK(n)``: the highest bus address an ``n``-bit device reaches."""
    return (1 << n) - 1


def _check_bits(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"DmaDevice.{what} is a number of address bits, got {value!r}")
    if not 24 <= value <= 64:
        raise ValueError(f"DmaDevice.{what} must be 24..64 bits, got {value}")


@attrs.frozen
class DmaDevice:
    """A device that does DMA: the ``dev`` argument of the DMA API.

    Args:
        name: for messages (``dev_name()``), e.g. ``"0000:00:1f.2"`` or ``"floppy"``.
        dma_mask: address bits of streaming DMA (``dma_set_mask``): 24 for ISA, 32, 64.
        coherent_mask: address bits of coherent memory (``dma_set_coherent_mask``); defaults
            to ``dma_mask``.
        scatter_gather: whether the device takes more than one segment per transfer.
        iommu: whether an IOMMU translates its bus addresses.
        max_segment_size: ``dma_set_max_seg_size`` (default 64 KiB, Linux's without dma_parms).

    Example:
        >>> DmaDevice("floppy", dma_mask=24).limit == 0xFFFFFF
        True
    """

    name: str = attrs.field()
    dma_mask: int = attrs.field(default=32)
    coherent_mask: int = attrs.field(
        default=attrs.Factory(lambda self: self.dma_mask, takes_self=True)
    )
    scatter_gather: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    iommu: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    max_segment_size: int = attrs.field(default=DEFAULT_MAX_SEGMENT_SIZE)

    @name.validator
    def _check_name(self, attribute: attrs.Attribute[str], value: object) -> None:
        if not isinstance(value, str) or not value:
            raise TypeError(f"a DMA device needs a name (str), got {value!r}")

    @dma_mask.validator
    def _check_mask(self, attribute: attrs.Attribute[int], value: object) -> None:
        _check_bits("dma_mask", value)

    @coherent_mask.validator
    def _check_coherent(self, attribute: attrs.Attribute[int], value: object) -> None:
        _check_bits("coherent_mask", value)

    @max_segment_size.validator
    def _check_seg(self, attribute: attrs.Attribute[int], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < PAGE_SIZE:
            raise ValueError(f"DmaDevice.max_segment_size must be >= 4096, got {value!r}")

    @property
    def limit(self) -> int:
        """The highest bus address of streaming DMA: ``*dev->dma_mask``."""
        return DMA_BIT_MASK(self.dma_mask)

    @property
    def coherent_limit(self) -> int:
        """The highest bus address of coherent memory: ``dev->coherent_dma_mask``."""
        return DMA_BIT_MASK(self.coherent_mask)


# ---------------------------------------------------------------------- records


class CacheMaintenance(Protocol):
    """What the DMA API needs of the CPU caches (a
    :class:`~hwsim.devices.coherence.CoherentHierarchy`)."""

    def writeback_range(self, phys: int, size: int) -> int: ...

    def invalidate_range(self, phys: int, size: int) -> int: ...

    def read(self, phys: int, size: int) -> bytes: ...

    def write(self, phys: int, data: bytes | bytearray | memoryview) -> None: ...


@attrs.define
class _Piece:
    """One physically contiguous range of a mapping and where the device sees it."""

    phys: int
    size: int
    bus_phys: int  # what the device touches: phys, or the bounce slots
    slot: int = -1  # first swiotlb slot, -1 if not bounced
    nslots: int = 0


@attrs.define
class _Mapping:
    dev: DmaDevice
    kind: str  # "single", "scather-gather" (dma-debug's spelling), "coherent"
    handle: int
    size: int
    direction: int
    pieces: list[_Piece]
    iova: tuple[int, int] | None = None  # (first IOVA pfn, pages reserved)
    cpu_addr: int = 0
    cma: bool = False
    order: int = 0
    sglist: ScatterList | None = None
    segments: list[tuple[int, int]] = attrs.Factory(list)


@attrs.frozen
class DmaMappingInfo:
    """One live mapping, for scenarios (:meth:`DmaApi.mappings`)."""

    device: str
    kind: str  # "single", "sg" or "coherent"
    handle: int  # the bus address returned (first segment for sg)
    size: int
    direction: str
    phys_ranges: tuple[tuple[int, int], ...]  # (physical address, length)
    segments: tuple[tuple[int, int], ...]  # (bus address, length) as the device sees them
    bounced: bool
    iommu: bool


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


def _direction_name(direction: int) -> str:
    return DIRECTION_NAMES[direction]


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
        self._live: dict[tuple[DmaDevice, int], list[_Mapping]] = {}
        self._sg: dict[int, _Mapping] = {}  # id(sglist) -> mapping
        self._freed: OrderedDict[tuple[DmaDevice, int], str] = OrderedDict()
        self._uncached_starts: list[int] = []
        self._uncached_ends: dict[int, int] = {}
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

    # ------------------------------------------------------------------ checks

    def _check_dev(self, dev: object) -> DmaDevice:
        if not isinstance(dev, DmaDevice):
            raise TypeError(f"dev must be a DmaDevice, got {dev!r}")
        return dev

    def _check_direction(self, direction: object) -> int:
        if isinstance(direction, bool) or not isinstance(direction, int):
            raise TypeError(
                f"direction is DMA_TO_DEVICE, DMA_FROM_DEVICE, ... (int), got {direction!r}"
            )
        if direction not in (DMA_BIDIRECTIONAL, DMA_TO_DEVICE, DMA_FROM_DEVICE):
            raise ValueError(
                f"invalid DMA direction {direction!r} (BUG_ON(!valid_dma_direction(dir))): "
                "a mapping is DMA_TO_DEVICE, DMA_FROM_DEVICE or DMA_BIDIRECTIONAL; DMA_NONE "
                "is only for debugging"
            )
        return direction

    def _check_allocated(self, dev: DmaDevice, phys: int, size: int, what: str) -> None:
        """The range must be RAM that someone allocated (the direct map covers free pages
        too; a device writing into them would corrupt the allocator)."""
        if phys + size > self.ram.size:
            raise DmaMappingError(
                f"DMA-API: {dev.name}: {what} {phys:#x}+{size} is beyond the end of RAM"
            )
        allocated = self.buddy.allocated
        for pfn in range(phys >> PAGE_SHIFT, ((phys + size - 1) >> PAGE_SHIFT) + 1):
            if not any(
                allocated.get(pfn & ~((1 << o) - 1), -1) >= o for o in range(MAX_PAGE_ORDER + 1)
            ):
                raise DmaMappingError(
                    f"DMA-API: {dev.name}: device driver maps memory that is not allocated "
                    f"[{what}] [pfn={pfn:#x}]: map only buffers from kmalloc, alloc_pages or "
                    "dma_alloc_coherent, while they are allocated"
                )

    # ------------------------------------------------------------------ memory and caches

    def _read(self, phys: int, size: int) -> bytes:
        return self.ram.read(phys, size) if self.caches is None else self.caches.read(phys, size)

    def _write(self, phys: int, data: bytes) -> None:
        if self.caches is None:
            self.ram.write(phys, data)
        else:
            self.caches.write(phys, data)

    def _arch_sync_for_device(self, phys: int, size: int) -> None:
        if not self.dma_coherent and self.caches is not None:
            self.lines_written_back += self.caches.writeback_range(phys, size)

    def _arch_sync_for_cpu(self, phys: int, size: int, direction: int) -> None:
        if not self.dma_coherent and self.caches is not None and direction != DMA_TO_DEVICE:
            self.lines_invalidated += self.caches.invalidate_range(phys, size)

    def _bounce(self, dst: int, src: int, size: int) -> None:
        self._write(dst, self._read(src, size))
        self.bounce_bytes += size

    def _piece_for_device(self, p: _Piece, off: int, size: int, direction: int) -> None:
        """``dma_direct_sync_single_for_device`` on part of a piece."""
        if p.slot >= 0 and direction in (DMA_TO_DEVICE, DMA_BIDIRECTIONAL):
            self._bounce(p.bus_phys + off, p.phys + off, size)
        self._arch_sync_for_device(p.bus_phys + off, size)

    def _piece_for_cpu(self, p: _Piece, off: int, size: int, direction: int) -> None:
        """``dma_direct_sync_single_for_cpu`` on part of a piece."""
        self._arch_sync_for_cpu(p.bus_phys + off, size, direction)
        if p.slot >= 0 and direction in (DMA_FROM_DEVICE, DMA_BIDIRECTIONAL):
            self._bounce(p.phys + off, p.bus_phys + off, size)

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
        self._check_dev(dev)
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
        self._check_dev(dev)
        _check_int("iova", iova)
        if not dev.iommu:
            raise ValueError(f"{dev.name} has no IOMMU: its bus addresses are physical")
        return self._domain(dev).translate(dev.name, iova, write)

    def dma_to_phys(self, dev: DmaDevice, dma_addr: int, *, write: bool = False) -> int:
        """Where a device's access to ``dma_addr`` lands: through the IOMMU if it has one,
        else the same address (x86: bus == physical), which must be below its mask."""
        self._check_dev(dev)
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
        self._check_dev(dev)
        _check_int("size", size, 1)
        gfp = G.check_gfp(gfp) & ~_GFP_ZONES
        order = get_order(size)
        npages = -(-size // PAGE_SIZE)
        limit = DMA_BIT_MASK(64) if dev.iommu else dev.coherent_limit
        pfn, from_cma = -1, False
        if self._cma.pages and gfp & _GFP_DIRECT_RECLAIM and size > PAGE_SIZE:
            pfn = self._cma.alloc(npages, min(order, CMA_ALIGNMENT))
            if pfn >= 0 and ((pfn + npages) << PAGE_SHIFT) - 1 > limit:
                self._cma.release(pfn, npages)
                pfn = -1
            from_cma = pfn >= 0
        if pfn < 0:
            pfn = self._alloc_below(dev, order, gfp, limit, size)
        phys = pfn << PAGE_SHIFT
        nbytes = (npages if from_cma else 1 << order) << PAGE_SHIFT
        self._write(phys, bytes(nbytes))
        if not self.dma_coherent:
            if self.caches is not None:
                # arch_dma_prep_coherent: no line of the buffer may stay in a cache.
                self.lines_written_back += self.caches.writeback_range(phys, nbytes)
                self.lines_invalidated += self.caches.invalidate_range(phys, nbytes)
            bisect.insort(self._uncached_starts, phys)
            self._uncached_ends[phys] = phys + nbytes
            if self.caches is not None and hasattr(self.caches, "map_uncached"):
                self.caches.map_uncached(phys, nbytes)  # the CPU's accesses bypass them
        handle, iova = phys, None
        if dev.iommu:
            iova_pfn = self._domain(dev).alloc_iova(npages, dev.coherent_limit)
            if iova_pfn < 0:  # pragma: no cover - 4 GiB of IOVA space per device
                self._undo_coherent(phys, npages, order, from_cma)
                raise OutOfMemory(f"{dev.name}: dma_alloc_coherent: no IOVA space left")
            iova = (iova_pfn, npages)
            self._iommu_map(dev, iova_pfn, [pfn + i for i in range(npages)], DMA_BIDIRECTIONAL)
            handle = iova_pfn << PAGE_SHIFT
        cpu_addr = self.layout.phys_to_virt(phys)
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
        self._live.setdefault((dev, handle), []).append(mapping)
        self._freed.pop((dev, handle), None)
        self.coherent_allocs += 1
        self.cma_allocs += from_cma
        return cpu_addr, handle

    def _alloc_below(self, dev: DmaDevice, order: int, gfp: int, limit: int, size: int) -> int:
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
                pfn = self.buddy.alloc_pages(order, gfp | zone)
            except OutOfMemory as err:
                raise OutOfMemory(f"{dev.name}: dma_alloc_coherent({size}): {err}") from None
            if ((pfn + (1 << order)) << PAGE_SHIFT) - 1 <= limit:
                return pfn
            self.buddy.free_pages(pfn, order)
            if limit < DMA_BIT_MASK(64) and not zone & (_GFP_DMA32 | _GFP_DMA):
                zone = _GFP_DMA32
            elif not zone & _GFP_DMA:
                zone = _GFP_DMA
            else:
                raise OutOfMemory(
                    f"{dev.name}: dma_alloc_coherent({size}): no memory below the "
                    f"{dev.coherent_mask}-bit coherent mask ({limit:#x})"
                )

    def _undo_coherent(self, phys: int, npages: int, order: int, from_cma: bool) -> None:
        pfn = phys >> PAGE_SHIFT
        if from_cma:
            self._cma.release(pfn, npages)
        else:
            self.buddy.free_pages(pfn, order)
        if phys in self._uncached_ends:
            del self._uncached_ends[phys]
            self._uncached_starts.remove(phys)
            if self.caches is not None and hasattr(self.caches, "unmap_uncached"):
                self.caches.unmap_uncached(phys)

    def dma_free_coherent(self, dev: DmaDevice, size: int, cpu_addr: int, dma_addr: int) -> None:
        """``dma_free_coherent()``: give back what :meth:`dma_alloc_coherent` returned.

        Raises:
            InvalidFree: not a live coherent buffer of ``dev``, or another size or CPU
                address than it was allocated with (dma-debug's words).
            DoubleFree: it was freed already.
        """
        self._check_dev(dev)
        _check_int("size", size, 1)
        _check_int("cpu_addr", cpu_addr)
        _check_int("dma_addr", dma_addr)
        mapping = self._find_for_unmap(dev, dma_addr, size, DMA_BIDIRECTIONAL, "coherent")
        if mapping.cpu_addr != cpu_addr:
            raise InvalidFree(
                f"DMA-API: {dev.name}: device driver frees DMA memory with different CPU "
                f"address [device address={dma_addr:#018x}] [size={size} bytes] [cpu alloc "
                f"address={mapping.cpu_addr:#x}] [cpu free address={cpu_addr:#x}]"
            )
        piece = mapping.pieces[0]
        if mapping.iova is not None:
            self._domain(dev).unmap(*mapping.iova)
        self._undo_coherent(piece.phys, piece.size >> PAGE_SHIFT, mapping.order, mapping.cma)
        self._forget(mapping)
        self.coherent_frees += 1

    def is_uncached(self, phys: int) -> bool:
        """Whether the CPU maps ``phys`` uncached: coherent DMA memory on a non-coherent
        platform (x86 PCD/PWT, ARM's memory attributes), which CPU accesses must bypass."""
        i = bisect.bisect_right(self._uncached_starts, phys) - 1
        return i >= 0 and phys < self._uncached_ends[self._uncached_starts[i]]

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
        self._check_dev(dev)
        _check_int("cpu_addr", cpu_addr)
        _check_int("size", size)
        if self.layout.is_vmalloc_addr(cpu_addr):
            self.rejected_vmalloc += 1
            area = self.vmalloc.find_vm_area(cpu_addr) if self.vmalloc is not None else None
            what = f" (the vmalloc area of {area.caller})" if area and area.caller else ""
            raise DmaMappingError(
                f"{dev.name}: rejecting DMA map of vmalloc memory [addr={cpu_addr:#x}]{what}: "
                "vmalloc memory is only virtually contiguous and has no direct-map address. "
                "Build a scatterlist over its pages (vmalloc_to_page; sg_from_vmalloc) and use "
                "dma_map_sg, or allocate the buffer with kmalloc or dma_alloc_coherent"
            )
        if size == 0:
            raise ValueError(f"{dev.name}: dma_map_single of 0 bytes: there is nothing to map")
        direction = self._check_direction(direction)
        if not self.layout.is_direct_map_addr(cpu_addr):
            raise DmaMappingError(
                f"DMA-API: {dev.name}: device driver maps memory from invalid area "
                f"[addr={cpu_addr:#x}] [len={size}]: dma_map_single takes direct-map "
                "(kmalloc, alloc_pages) addresses"
            )
        phys = self.layout.virt_to_phys(cpu_addr)
        self._check_allocated(dev, phys, size, f"addr={cpu_addr:#x} len={size}")
        mapping = self._map_pieces(dev, [(phys, size)], direction, "single")
        if mapping is None:
            raise DmaMappingError(self.log[-1])
        return mapping.handle

    def _map_pieces(
        self, dev: DmaDevice, ranges: list[tuple[int, int]], direction: int, kind: str
    ) -> _Mapping | None:
        """Map physical ranges for ``dev``: allocate everything first (bounce slots or an
        IOVA range), then copy and sync; None (and a log line) when resources run out."""
        pieces: list[_Piece] = []
        segments: list[tuple[int, int]] = []
        iova: tuple[int, int] | None = None
        if dev.iommu:
            npages = sum(-(-((p & (PAGE_SIZE - 1)) + n) // PAGE_SIZE) for p, n in ranges)
            iova_pfn = self._domain(dev).alloc_iova(npages, dev.limit)
            if iova_pfn < 0:
                self.map_failures += 1
                self.log.append(f"{dev.name}: iommu: no IOVA space for {npages} pages")
                return None
            iova = (iova_pfn, npages)
            pos = iova_pfn << PAGE_SHIFT
            pfns: list[int] = []
            seg_open = False
            for phys, n in ranges:
                off = phys & (PAGE_SIZE - 1)
                padded = -(-(off + n) // PAGE_SIZE) * PAGE_SIZE
                pieces.append(_Piece(phys, n, phys))
                first = phys >> PAGE_SHIFT
                pfns.extend(range(first, first + padded // PAGE_SIZE))
                # __finalise_sg: fuse with the open segment when this entry starts a page
                # and the previous one filled its last page.
                last = segments[-1] if segments else None
                if (
                    seg_open
                    and last is not None
                    and off == 0
                    and last[1] + n <= dev.max_segment_size
                    and pos & DEFAULT_SEGMENT_BOUNDARY
                ):
                    segments[-1] = (last[0], last[1] + n)
                else:
                    segments.append((pos + off, n))
                seg_open = off + n == padded
                pos += padded
            self._iommu_map(dev, iova_pfn, pfns, direction)
        else:
            for phys, n in ranges:
                if phys + n - 1 <= dev.limit:
                    pieces.append(_Piece(phys, n, phys))
                    continue
                slot, nslots = self._swiotlb.find(n, dev.limit)
                if slot < 0:
                    for p in pieces:
                        if p.slot >= 0:
                            self._swiotlb.release(p.slot, p.nslots)
                    self.map_failures += 1
                    self.log.append(
                        self._swiotlb.full_message(dev.name, dev.limit, dev.dma_mask, n, nslots)
                    )
                    return None
                self._swiotlb.take(slot, nslots)
                pieces.append(_Piece(phys, n, self._swiotlb.slot_phys(slot), slot, nslots))
            for p in pieces:
                last = segments[-1] if segments else None
                if (
                    last is not None
                    and last[0] + last[1] == p.bus_phys
                    and last[1] + p.size <= dev.max_segment_size
                    and p.bus_phys & DEFAULT_SEGMENT_BOUNDARY
                ):
                    segments[-1] = (last[0], last[1] + p.size)
                else:
                    segments.append((p.bus_phys, p.size))
        if len(segments) > 1 and not dev.scatter_gather:
            if iova is not None:
                self._domain(dev).unmap(iova[0], iova[1])
            for p in pieces:
                if p.slot >= 0:
                    self._swiotlb.release(p.slot, p.nslots)
            self.map_failures += 1
            self.log.append(
                f"{dev.name}: the device cannot do scatter-gather and the list maps to "
                f"{len(segments)} segments: it needs one physically contiguous buffer "
                "(kmalloc, alloc_pages, dma_alloc_coherent)"
            )
            return None
        for p in pieces:
            if p.slot >= 0:
                # swiotlb_tbl_map_single copies whatever the direction (no stale leaks).
                self._bounce(p.bus_phys, p.phys, p.size)
                self.bounces += 1
            self._arch_sync_for_device(p.bus_phys, p.size)
        mapping = _Mapping(
            dev,
            kind,
            segments[0][0],
            sum(n for _, n in ranges),
            direction,
            pieces,
            iova=iova,
            segments=segments,
        )
        self._live.setdefault((dev, mapping.handle), []).append(mapping)
        self._freed.pop((dev, mapping.handle), None)
        self.maps += 1
        return mapping

    def _find_for_unmap(
        self, dev: DmaDevice, dma_addr: int, size: int, direction: int, kind: str
    ) -> _Mapping:
        """dma-debug's ``check_unmap``: the live mapping an unmap names, or the error."""
        where = f"[device address={dma_addr:#018x}] [size={size} bytes]"
        if dma_addr == DMA_MAPPING_ERROR:
            raise InvalidFree(
                f"DMA-API: {dev.name}: device driver tries to free an invalid DMA memory "
                f"address: {dma_addr:#x} is DMA_MAPPING_ERROR; check dma_mapping_error() "
                "after mapping"
            )
        entries = self._live.get((dev, dma_addr), [])
        if not entries:
            linux = (
                f"DMA-API: {dev.name}: device driver tries to free DMA memory it has not "
                f"allocated {where}"
            )
            before = self._freed.get((dev, dma_addr))
            if before is not None:
                raise DoubleFree(f"{linux}: this {before} mapping was already unmapped/freed")
            raise InvalidFree(linux)
        exact = [m for m in entries if m.size == size and m.kind == kind]
        exact = [m for m in exact if m.direction == direction] or exact
        m = exact[0] if exact else entries[0]
        if m.size != size:
            raise InvalidFree(
                f"DMA-API: {dev.name}: device driver frees DMA memory with different size "
                f"[device address={dma_addr:#018x}] [map size={m.size} bytes] "
                f"[unmap size={size} bytes]"
            )
        if m.kind != kind:
            raise InvalidFree(
                f"DMA-API: {dev.name}: device driver frees DMA memory with wrong function "
                f"{where} [mapped as {m.kind}] [unmapped as {kind}]"
            )
        if m.direction != direction:
            raise InvalidFree(
                f"DMA-API: {dev.name}: device driver frees DMA memory with different "
                f"direction {where} [mapped with {_direction_name(m.direction)}] "
                f"[unmapped with {_direction_name(direction)}]"
            )
        return m

    def _forget(self, mapping: _Mapping) -> None:
        key = (mapping.dev, mapping.handle)
        entries = self._live[key]
        entries.remove(mapping)
        if not entries:
            del self._live[key]
            self._freed[key] = mapping.kind
            if len(self._freed) > _FREED_REMEMBERED:
                self._freed.popitem(last=False)

    def _unmap(self, mapping: _Mapping) -> None:
        for p in mapping.pieces:
            self._piece_for_cpu(p, 0, p.size, mapping.direction)
            if p.slot >= 0:
                self._swiotlb.release(p.slot, p.nslots)
        if mapping.iova is not None:
            self._domain(mapping.dev).unmap(*mapping.iova)
        self._forget(mapping)
        self.unmaps += 1

    def dma_unmap_single(self, dev: DmaDevice, dma_addr: int, size: int, direction: int) -> None:
        """``dma_unmap_single()``: end a mapping; the CPU may then read what the device wrote.

        Raises:
            InvalidFree: ``dma_addr`` is not a live single mapping of ``dev``, or the size or
                direction differ from the mapping's (dma-debug's words).
            DoubleFree: it was unmapped already.
        """
        self._check_dev(dev)
        _check_int("dma_addr", dma_addr)
        _check_int("size", size)
        direction = self._check_direction(direction)
        self._unmap(self._find_for_unmap(dev, dma_addr, size, direction, "single"))

    def _find_for_sync(
        self, dev: DmaDevice, dma_addr: int, size: int, direction: int
    ) -> tuple[_Mapping, int]:
        """dma-debug's ``check_sync``: the live single mapping containing the range and the
        offset into it."""
        for (d, _), entries in self._live.items():
            if d != dev:
                continue
            for m in entries:
                if m.kind == "coherent" or len(m.segments) != 1:
                    continue
                start, length = m.segments[0]
                if start <= dma_addr < start + length:
                    if dma_addr + size > start + length:
                        raise DmaMappingError(
                            f"DMA-API: {dev.name}: device driver syncs DMA memory outside "
                            f"allocated range [device address={start:#018x}] [allocation "
                            f"size={length} bytes] [sync offset+size={dma_addr - start + size}]"
                        )
                    if m.direction != DMA_BIDIRECTIONAL and m.direction != direction:
                        raise DmaMappingError(
                            f"DMA-API: {dev.name}: device driver syncs DMA memory with "
                            f"different direction [device address={dma_addr:#018x}] "
                            f"[size={size} bytes] [mapped with {_direction_name(m.direction)}]"
                            f" [synced with {_direction_name(direction)}]"
                        )
                    return m, dma_addr - start
        raise DmaMappingError(
            f"DMA-API: {dev.name}: device driver tries to sync DMA memory it has not allocated "
            f"[device address={dma_addr:#018x}] [size={size} bytes]"
        )

    def _sync(self, dev: DmaDevice, dma_addr: int, size: int, direction: int, cpu: bool) -> None:
        self._check_dev(dev)
        _check_int("dma_addr", dma_addr)
        _check_int("size", size, 1)
        direction = self._check_direction(direction)
        mapping, offset = self._find_for_sync(dev, dma_addr, size, direction)
        pos = 0
        for p in mapping.pieces:
            lo, hi = max(offset, pos), min(offset + size, pos + p.size)
            if lo < hi:
                if cpu:
                    self._piece_for_cpu(p, lo - pos, hi - lo, direction)
                else:
                    self._piece_for_device(p, lo - pos, hi - lo, direction)
            pos += p.size
        self.syncs += 1

    def dma_sync_single_for_cpu(
        self, dev: DmaDevice, dma_addr: int, size: int, direction: int
    ) -> None:
        """``dma_sync_single_for_cpu()``: give (part of) a mapping back to the CPU without
        unmapping it: invalidate its cache lines, copy bounced data back."""
        self._sync(dev, dma_addr, size, direction, cpu=True)

    def dma_sync_single_for_device(
        self, dev: DmaDevice, dma_addr: int, size: int, direction: int
    ) -> None:
        """``dma_sync_single_for_device()``: hand (part of) a mapping to the device again:
        copy into the bounce slots, write dirty lines back."""
        self._sync(dev, dma_addr, size, direction, cpu=False)

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
        self._check_dev(dev)
        if not isinstance(sglist, ScatterList):
            raise TypeError(
                f"dma_map_sg takes a ScatterList (sg_init_table + sg_set_page, or "
                f"sg_from_vmalloc), got {sglist!r}"
            )
        direction = self._check_direction(direction)
        if not sglist.entries:
            raise ValueError(f"{dev.name}: dma_map_sg of an empty scatterlist")
        if id(sglist) in self._sg:
            raise DmaMappingError(
                f"DMA-API: {dev.name}: this scatterlist is mapped already; dma_unmap_sg it first"
            )
        ranges = []
        for i, sg in enumerate(sglist):
            if sg.pfn < 0 or sg.length <= 0:
                raise ValueError(f"{dev.name}: scatterlist entry {i} is not set (sg_set_page)")
            phys = (sg.pfn << PAGE_SHIFT) + sg.offset
            self._check_allocated(dev, phys, sg.length, f"sg entry {i}")
            ranges.append((phys, sg.length))
        mapping = self._map_pieces(dev, ranges, direction, "scather-gather")
        if mapping is None:
            return 0
        mapping.sglist = sglist
        self._sg[id(sglist)] = mapping
        for i, sg in enumerate(sglist):
            sg.dma_address, sg.dma_length = (
                mapping.segments[i] if i < len(mapping.segments) else (0, 0)
            )
        sglist.nents = len(mapping.segments)
        return sglist.nents

    def _find_sg(self, dev: DmaDevice, sglist: object, direction: int, what: str) -> _Mapping:
        if not isinstance(sglist, ScatterList):
            raise TypeError(f"{what} takes the ScatterList given to dma_map_sg, got {sglist!r}")
        mapping = self._sg.get(id(sglist))
        if mapping is None or mapping.dev != dev:
            first = sglist.entries[0] if sglist.entries else SgEntry()
            raise InvalidFree(
                f"DMA-API: {dev.name}: device driver tries to free DMA memory it has not "
                f"allocated [device address={first.dma_address:#018x}] "
                f"[size={first.dma_length} bytes] ({what} of a list that is not mapped)"
            )
        if mapping.direction != direction:
            raise InvalidFree(
                f"DMA-API: {dev.name}: device driver frees DMA memory with different direction "
                f"[device address={mapping.handle:#018x}] [size={mapping.size} bytes] "
                f"[mapped with {_direction_name(mapping.direction)}] "
                f"[unmapped with {_direction_name(direction)}]"
            )
        return mapping

    def dma_unmap_sg(self, dev: DmaDevice, sglist: ScatterList, direction: int) -> None:
        """``dma_unmap_sg()``: end the mapping :meth:`dma_map_sg` made of ``sglist``.

        Raises:
            InvalidFree: the list is not mapped for ``dev``, or with another direction.
        """
        self._check_dev(dev)
        direction = self._check_direction(direction)
        mapping = self._find_sg(dev, sglist, direction, "dma_unmap_sg")
        self._unmap(mapping)
        del self._sg[id(sglist)]
        sglist.nents = 0

    def dma_sync_sg_for_cpu(self, dev: DmaDevice, sglist: ScatterList, direction: int) -> None:
        """``dma_sync_sg_for_cpu()``: :meth:`dma_sync_single_for_cpu` for every entry."""
        self._check_dev(dev)
        direction = self._check_direction(direction)
        for p in self._find_sg(dev, sglist, direction, "dma_sync_sg_for_cpu").pieces:
            self._piece_for_cpu(p, 0, p.size, direction)
        self.syncs += 1

    def dma_sync_sg_for_device(self, dev: DmaDevice, sglist: ScatterList, direction: int) -> None:
        """``dma_sync_sg_for_device()``: :meth:`dma_sync_single_for_device` for every entry."""
        self._check_dev(dev)
        direction = self._check_direction(direction)
        for p in self._find_sg(dev, sglist, direction, "dma_sync_sg_for_device").pieces:
            self._piece_for_device(p, 0, p.size, direction)
        self.syncs += 1

    # ------------------------------------------------------------------ introspection

    def mappings(self) -> list[DmaMappingInfo]:
        """Every live mapping and coherent buffer, by device and handle."""
        out = []
        for (dev, handle), entries in sorted(
            self._live.items(), key=lambda kv: (kv[0][0].name, kv[0][1])
        ):
            for m in entries:
                out.append(
                    DmaMappingInfo(
                        device=dev.name,
                        kind={"scather-gather": "sg"}.get(m.kind, m.kind),
                        handle=handle,
                        size=m.size,
                        direction=_direction_name(m.direction),
                        phys_ranges=tuple((p.phys, p.size) for p in m.pieces),
                        segments=tuple(m.segments) or ((handle, m.size),),
                        bounced=any(p.slot >= 0 for p in m.pieces),
                        iommu=m.iova is not None,
                    )
                )
        return out

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
            live_mappings=sum(len(e) for e in self._live.values()),
            swiotlb_slots=self._swiotlb.nslots,
            swiotlb_used=self._swiotlb.nused,
            cma_pages=self.cma_pages,
            cma_free_pages=self.cma_free_pages,
        )
