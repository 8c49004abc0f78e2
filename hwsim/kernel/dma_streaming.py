"""Streaming DMA mappings: ``dma_map_single``, ``dma_map_sg``, their unmaps and syncs
(kernel/dma/mapping.c, with dma-direct, swiotlb and dma-iommu behind them).

Where a buffer's physical ranges land on the bus -- as they are, bounced through swiotlb's
slots, or in one IOVA range behind an IOMMU --, how they merge into segments
(``__finalise_sg``), and the copies and cache maintenance that hand them to the device and
back.

These are plain functions over a :class:`~hwsim.kernel.dma_api.DmaApi`, whose methods of the
same names call them: the model holds the state (the swiotlb pool, the IOMMU domains,
dma-debug's records) and the counters. The rules are in :mod:`hwsim.kernel.dma_api`'s
docstring.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import DmaMappingError
from ..units import PAGE_SHIFT, PAGE_SIZE
from ..validate import check_int as _check_int
from .dma_debug import _Mapping, _Piece
from .dma_device import (
    DEFAULT_SEGMENT_BOUNDARY,
    DMA_BIDIRECTIONAL,
    DMA_FROM_DEVICE,
    DMA_TO_DEVICE,
    DmaDevice,
)
from .dma_device import check_dev as _check_dev
from .dma_device import check_direction as _check_direction
from .scatterlist import ScatterList

if TYPE_CHECKING:
    from .dma_api import DmaApi


def _check_allocated(api: DmaApi, dev: DmaDevice, phys: int, size: int, what: str) -> None:
    """The range must be RAM that someone allocated (the direct map covers free pages
    too; a device writing into them would corrupt the allocator)."""
    if phys + size > api.ram.size:
        raise DmaMappingError(
            f"DMA-API: {dev.name}: {what} {phys:#x}+{size} is beyond the end of RAM"
        )
    for pfn in range(phys >> PAGE_SHIFT, ((phys + size - 1) >> PAGE_SHIFT) + 1):
        if api.buddy.block_of(pfn) is None:
            raise DmaMappingError(
                f"DMA-API: {dev.name}: device driver maps memory that is not allocated "
                f"[{what}] [pfn={pfn:#x}]: map only buffers from kmalloc, alloc_pages or "
                "dma_alloc_coherent, while they are allocated"
            )


# ---------------------------------------------------------------------- copies and caches


def _arch_sync_for_device(api: DmaApi, phys: int, size: int) -> None:
    if not api.dma_coherent and api.caches is not None:
        api.lines_written_back += api.caches.writeback_range(phys, size)


def _arch_sync_for_cpu(api: DmaApi, phys: int, size: int, direction: int) -> None:
    if not api.dma_coherent and api.caches is not None and direction != DMA_TO_DEVICE:
        api.lines_invalidated += api.caches.invalidate_range(phys, size)


def _bounce(api: DmaApi, dst: int, src: int, size: int) -> None:
    api._write(dst, api._read(src, size))
    api.bounce_bytes += size


def _piece_for_device(api: DmaApi, p: _Piece, off: int, size: int, direction: int) -> None:
    """``dma_direct_sync_single_for_device`` on part of a piece."""
    if p.slot >= 0 and direction in (DMA_TO_DEVICE, DMA_BIDIRECTIONAL):
        _bounce(api, p.bus_phys + off, p.phys + off, size)
    _arch_sync_for_device(api, p.bus_phys + off, size)


def _piece_for_cpu(api: DmaApi, p: _Piece, off: int, size: int, direction: int) -> None:
    """``dma_direct_sync_single_for_cpu`` on part of a piece."""
    _arch_sync_for_cpu(api, p.bus_phys + off, size, direction)
    if p.slot >= 0 and direction in (DMA_FROM_DEVICE, DMA_BIDIRECTIONAL):
        _bounce(api, p.phys + off, p.bus_phys + off, size)


# ---------------------------------------------------------------------- map and unmap


def _map_pieces(
    api: DmaApi, dev: DmaDevice, ranges: list[tuple[int, int]], direction: int, kind: str
) -> _Mapping | None:
    """Map physical ranges for ``dev``: allocate everything first (bounce slots or an
    IOVA range), then copy and sync; None (and a log line) when resources run out."""
    pieces: list[_Piece] = []
    segments: list[tuple[int, int]] = []
    iova: tuple[int, int] | None = None
    if dev.iommu:
        npages = sum(-(-((p & (PAGE_SIZE - 1)) + n) // PAGE_SIZE) for p, n in ranges)
        iova_pfn = api._domain(dev).alloc_iova(npages, dev.limit)
        if iova_pfn < 0:
            api.map_failures += 1
            api.log.append(f"{dev.name}: iommu: no IOVA space for {npages} pages")
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
        api._iommu_map(dev, iova_pfn, pfns, direction)
    else:
        for phys, n in ranges:
            if phys + n - 1 <= dev.limit:
                pieces.append(_Piece(phys, n, phys))
                continue
            slot, nslots = api._swiotlb.find(n, dev.limit)
            if slot < 0:
                for p in pieces:
                    if p.slot >= 0:
                        api._swiotlb.release(p.slot, p.nslots)
                api.map_failures += 1
                api.log.append(
                    api._swiotlb.full_message(dev.name, dev.limit, dev.dma_mask, n, nslots)
                )
                return None
            api._swiotlb.take(slot, nslots)
            pieces.append(_Piece(phys, n, api._swiotlb.slot_phys(slot), slot, nslots))
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
            api._domain(dev).unmap(iova[0], iova[1])
        for p in pieces:
            if p.slot >= 0:
                api._swiotlb.release(p.slot, p.nslots)
        api.map_failures += 1
        api.log.append(
            f"{dev.name}: the device cannot do scatter-gather and the list maps to "
            f"{len(segments)} segments: it needs one physically contiguous buffer "
            "(kmalloc, alloc_pages, dma_alloc_coherent)"
        )
        return None
    for p in pieces:
        if p.slot >= 0:
            # swiotlb_tbl_map_single copies whatever the direction (no stale leaks).
            _bounce(api, p.bus_phys, p.phys, p.size)
            api.bounces += 1
        _arch_sync_for_device(api, p.bus_phys, p.size)
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
    api._debug.add(mapping)
    api.maps += 1
    return mapping


def _unmap(api: DmaApi, mapping: _Mapping) -> None:
    for p in mapping.pieces:
        _piece_for_cpu(api, p, 0, p.size, mapping.direction)
        if p.slot >= 0:
            api._swiotlb.release(p.slot, p.nslots)
    if mapping.iova is not None:
        api._domain(mapping.dev).unmap(*mapping.iova)
    api._debug.forget(mapping)
    api.unmaps += 1


# ---------------------------------------------------------------------- single


def dma_map_single(api: DmaApi, dev: DmaDevice, cpu_addr: int, size: int, direction: int) -> int:
    """:meth:`DmaApi.dma_map_single <hwsim.kernel.dma_api.DmaApi.dma_map_single>`."""
    _check_dev(dev)
    _check_int("cpu_addr", cpu_addr)
    _check_int("size", size)
    if api.layout.is_vmalloc_addr(cpu_addr):
        api.rejected_vmalloc += 1
        area = api.vmalloc.find_vm_area(cpu_addr) if api.vmalloc is not None else None
        what = f" (the vmalloc area of {area.caller})" if area and area.caller else ""
        raise DmaMappingError(
            f"{dev.name}: rejecting DMA map of vmalloc memory [addr={cpu_addr:#x}]{what}: "
            "vmalloc memory is only virtually contiguous and has no direct-map address. "
            "Build a scatterlist over its pages (vmalloc_to_page; sg_from_vmalloc) and use "
            "dma_map_sg, or allocate the buffer with kmalloc or dma_alloc_coherent"
        )
    if size == 0:
        raise ValueError(f"{dev.name}: dma_map_single of 0 bytes: there is nothing to map")
    direction = _check_direction(direction)
    if not api.layout.is_direct_map_addr(cpu_addr):
        raise DmaMappingError(
            f"DMA-API: {dev.name}: device driver maps memory from invalid area "
            f"[addr={cpu_addr:#x}] [len={size}]: dma_map_single takes direct-map "
            "(kmalloc, alloc_pages) addresses"
        )
    phys = api.layout.virt_to_phys(cpu_addr)
    _check_allocated(api, dev, phys, size, f"addr={cpu_addr:#x} len={size}")
    mapping = _map_pieces(api, dev, [(phys, size)], direction, "single")
    if mapping is None:
        raise DmaMappingError(api.log[-1])
    return mapping.handle


def dma_unmap_single(api: DmaApi, dev: DmaDevice, dma_addr: int, size: int, direction: int) -> None:
    """:meth:`DmaApi.dma_unmap_single <hwsim.kernel.dma_api.DmaApi.dma_unmap_single>`."""
    _check_dev(dev)
    _check_int("dma_addr", dma_addr)
    _check_int("size", size)
    direction = _check_direction(direction)
    _unmap(api, api._debug.find_for_unmap(dev, dma_addr, size, direction, "single"))


def dma_sync_single(
    api: DmaApi, dev: DmaDevice, dma_addr: int, size: int, direction: int, cpu: bool
) -> None:
    """``dma_sync_single_for_cpu()`` (``cpu``) or ``dma_sync_single_for_device()``."""
    _check_dev(dev)
    _check_int("dma_addr", dma_addr)
    _check_int("size", size, 1)
    direction = _check_direction(direction)
    mapping, offset = api._debug.find_for_sync(dev, dma_addr, size, direction)
    pos = 0
    for p in mapping.pieces:
        lo, hi = max(offset, pos), min(offset + size, pos + p.size)
        if lo < hi:
            if cpu:
                _piece_for_cpu(api, p, lo - pos, hi - lo, direction)
            else:
                _piece_for_device(api, p, lo - pos, hi - lo, direction)
        pos += p.size
    api.syncs += 1


# ---------------------------------------------------------------------- scatter-gather


def dma_map_sg(api: DmaApi, dev: DmaDevice, sglist: ScatterList, direction: int) -> int:
    """:meth:`DmaApi.dma_map_sg <hwsim.kernel.dma_api.DmaApi.dma_map_sg>`."""
    _check_dev(dev)
    if not isinstance(sglist, ScatterList):
        raise TypeError(
            f"dma_map_sg takes a ScatterList (sg_init_table + sg_set_page, or "
            f"sg_from_vmalloc), got {sglist!r}"
        )
    direction = _check_direction(direction)
    if not sglist.entries:
        raise ValueError(f"{dev.name}: dma_map_sg of an empty scatterlist")
    if id(sglist) in api._debug.sg:
        raise DmaMappingError(
            f"DMA-API: {dev.name}: this scatterlist is mapped already; dma_unmap_sg it first"
        )
    ranges = []
    for i, sg in enumerate(sglist):
        if sg.pfn < 0 or sg.length <= 0:
            raise ValueError(f"{dev.name}: scatterlist entry {i} is not set (sg_set_page)")
        phys = (sg.pfn << PAGE_SHIFT) + sg.offset
        _check_allocated(api, dev, phys, sg.length, f"sg entry {i}")
        ranges.append((phys, sg.length))
    mapping = _map_pieces(api, dev, ranges, direction, "scather-gather")
    if mapping is None:
        return 0
    mapping.sglist = sglist
    api._debug.sg[id(sglist)] = mapping
    for i, sg in enumerate(sglist):
        sg.dma_address, sg.dma_length = mapping.segments[i] if i < len(mapping.segments) else (0, 0)
    sglist.nents = len(mapping.segments)
    return sglist.nents


def dma_unmap_sg(api: DmaApi, dev: DmaDevice, sglist: ScatterList, direction: int) -> None:
    """:meth:`DmaApi.dma_unmap_sg <hwsim.kernel.dma_api.DmaApi.dma_unmap_sg>`."""
    _check_dev(dev)
    direction = _check_direction(direction)
    mapping = api._debug.find_sg(dev, sglist, direction, "dma_unmap_sg")
    _unmap(api, mapping)
    del api._debug.sg[id(sglist)]
    sglist.nents = 0


def dma_sync_sg(
    api: DmaApi, dev: DmaDevice, sglist: ScatterList, direction: int, cpu: bool
) -> None:
    """``dma_sync_sg_for_cpu()`` (``cpu``) or ``dma_sync_sg_for_device()``: the sync of
    every entry."""
    _check_dev(dev)
    direction = _check_direction(direction)
    what = "dma_sync_sg_for_cpu" if cpu else "dma_sync_sg_for_device"
    for p in api._debug.find_sg(dev, sglist, direction, what).pieces:
        if cpu:
            _piece_for_cpu(api, p, 0, p.size, direction)
        else:
            _piece_for_device(api, p, 0, p.size, direction)
    api.syncs += 1
