"""dma-debug (kernel/dma/debug.c): the record of every live DMA mapping and coherent buffer,
and the checks that hold an unmap or a sync to those records, in dma-debug's words ("device
driver tries to free DMA memory it has not allocated", "... with different size", ...).

:class:`~hwsim.kernel.dma_api.DmaApi` owns one :class:`DmaDebug`: it adds a record for each
mapping it makes and asks which record an unmap or a sync names. A record also holds what the
model needs to undo the mapping (its pieces, its IOVA range, its CMA pages), which dma-debug's
``dma_debug_entry`` does not. Unlike dma-debug, the last handles unmapped are remembered, so
that unmapping one again is a :class:`~hwsim.DoubleFree` rather than a wild free (see
:mod:`hwsim.kernel.dma_api`'s docstring).
"""

from __future__ import annotations

from collections import OrderedDict

import attrs

from ..errors import DmaMappingError, DoubleFree, InvalidFree
from .dma_device import DMA_BIDIRECTIONAL, DMA_MAPPING_ERROR, DmaDevice, direction_name
from .scatterlist import ScatterList, SgEntry

_FREED_REMEMBERED = 4096  # unmapped handles kept to tell a double unmap


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
    """One live mapping, for scenarios (:meth:`DmaApi.mappings
    <hwsim.kernel.dma_api.DmaApi.mappings>`)."""

    device: str
    kind: str  # "single", "sg" or "coherent"
    handle: int  # the bus address returned (first segment for sg)
    size: int
    direction: str
    phys_ranges: tuple[tuple[int, int], ...]  # (physical address, length)
    segments: tuple[tuple[int, int], ...]  # (bus address, length) as the device sees them
    bounced: bool
    iommu: bool


class DmaDebug:
    """The live mappings of every device, the scatterlists mapped, and the handles unmapped
    last."""

    def __init__(self) -> None:
        self.live: dict[tuple[DmaDevice, int], list[_Mapping]] = {}
        self.sg: dict[int, _Mapping] = {}  # id(sglist) -> mapping
        self.freed: OrderedDict[tuple[DmaDevice, int], str] = OrderedDict()

    def add(self, mapping: _Mapping) -> None:
        """``add_dma_entry``: record a new mapping; its handle is no longer a freed one."""
        key = (mapping.dev, mapping.handle)
        self.live.setdefault(key, []).append(mapping)
        self.freed.pop(key, None)

    def find_for_unmap(
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
        entries = self.live.get((dev, dma_addr), [])
        if not entries:
            linux = (
                f"DMA-API: {dev.name}: device driver tries to free DMA memory it has not "
                f"allocated {where}"
            )
            before = self.freed.get((dev, dma_addr))
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
                f"direction {where} [mapped with {direction_name(m.direction)}] "
                f"[unmapped with {direction_name(direction)}]"
            )
        return m

    def forget(self, mapping: _Mapping) -> None:
        """``hash_bucket_del``: the mapping is gone; remember its handle as freed."""
        key = (mapping.dev, mapping.handle)
        entries = self.live[key]
        entries.remove(mapping)
        if not entries:
            del self.live[key]
            self.freed[key] = mapping.kind
            if len(self.freed) > _FREED_REMEMBERED:
                self.freed.popitem(last=False)

    def find_for_sync(
        self, dev: DmaDevice, dma_addr: int, size: int, direction: int
    ) -> tuple[_Mapping, int]:
        """dma-debug's ``check_sync``: the live single mapping containing the range and the
        offset into it."""
        for (d, _), entries in self.live.items():
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
                            f"[size={size} bytes] [mapped with {direction_name(m.direction)}]"
                            f" [synced with {direction_name(direction)}]"
                        )
                    return m, dma_addr - start
        raise DmaMappingError(
            f"DMA-API: {dev.name}: device driver tries to sync DMA memory it has not allocated "
            f"[device address={dma_addr:#018x}] [size={size} bytes]"
        )

    def find_sg(self, dev: DmaDevice, sglist: object, direction: int, what: str) -> _Mapping:
        """The mapping :meth:`~hwsim.kernel.dma_api.DmaApi.dma_map_sg` made of ``sglist``
        for ``dev`` with ``direction``, or the error (``what`` names the call)."""
        if not isinstance(sglist, ScatterList):
            raise TypeError(f"{what} takes the ScatterList given to dma_map_sg, got {sglist!r}")
        mapping = self.sg.get(id(sglist))
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
                f"[mapped with {direction_name(mapping.direction)}] "
                f"[unmapped with {direction_name(direction)}]"
            )
        return mapping

    def live_mappings(self) -> int:
        """How many mappings and coherent buffers are live."""
        return sum(len(e) for e in self.live.values())

    def mappings(self) -> list[DmaMappingInfo]:
        """Every live mapping and coherent buffer, by device and handle."""
        out = []
        for (dev, handle), entries in sorted(
            self.live.items(), key=lambda kv: (kv[0][0].name, kv[0][1])
        ):
            for m in entries:
                out.append(
                    DmaMappingInfo(
                        device=dev.name,
                        kind={"scather-gather": "sg"}.get(m.kind, m.kind),
                        handle=handle,
                        size=m.size,
                        direction=direction_name(m.direction),
                        phys_ranges=tuple((p.phys, p.size) for p in m.pieces),
                        segments=tuple(m.segments) or ((handle, m.size),),
                        bounced=any(p.slot >= 0 for p in m.pieces),
                        iommu=m.iova is not None,
                    )
                )
        return out
