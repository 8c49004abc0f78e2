"""The DMA mapping API as a kernel service (``"dma_api"``): messages around
:class:`~hwsim.kernel.dma_api.DmaApi` (kernel/dma/mapping.c).

One message per function of the API; the reply's cycle charges the caller's CPU what the
call costs: a fixed entry cost, the cache lines it cleaned or invalidated (one L1 lookup
each, the maintenance instructions a non-coherent platform runs), and the bytes it copied
to or from swiotlb's bounce buffer (a memcpy on the CPU, at the RAM's bandwidth).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from ..core.actor import Actor, handles
from ..errors import HwsimError
from .dma_api import DmaApi, DmaDevice, DmaStatistics
from .scatterlist import ScatterList, sg_from_vmalloc
from .vmalloc import VmallocAllocator

#: Cycles of any DMA API call before its own work (the function call, dma-direct's checks).
DMA_API_CYCLES = 100


@attrs.frozen
class DmaAllocCoherent:
    dev: DmaDevice
    size: int
    gfp: int


@attrs.frozen
class DmaFreeCoherent:
    dev: DmaDevice
    size: int
    cpu_addr: int
    dma_addr: int


@attrs.frozen
class DmaMapSingle:
    dev: DmaDevice
    addr: int
    size: int
    direction: int


@attrs.frozen
class DmaUnmapSingle:
    dev: DmaDevice
    dma_addr: int
    size: int
    direction: int


@attrs.frozen
class DmaSyncSingle:
    dev: DmaDevice
    dma_addr: int
    size: int
    direction: int
    for_cpu: bool


@attrs.frozen(eq=False)
class DmaMapSg:
    dev: DmaDevice
    sglist: ScatterList
    direction: int


@attrs.frozen(eq=False)
class DmaUnmapSg:
    dev: DmaDevice
    sglist: ScatterList
    direction: int


@attrs.frozen(eq=False)
class DmaSyncSg:
    dev: DmaDevice
    sglist: ScatterList
    direction: int
    for_cpu: bool


@attrs.frozen
class SgFromVmalloc:
    addr: int
    size: int


class DmaMappingService(Actor):
    """The DMA API's actor. Args: the model, the vmalloc allocator (for scatterlists of
    vmalloc buffers), the L1 latency and the RAM's bytes per cycle (for the costs)."""

    def __init__(
        self,
        model: DmaApi,
        vmalloc: VmallocAllocator,
        *,
        line_cycles: int = 4,
        bytes_per_cycle: int = 16,
        **kwargs: Any,
    ) -> None:
        super().__init__("dma_api", **kwargs)
        self.model = model
        self.vmalloc = vmalloc
        self.line_cycles = line_cycles
        self.bytes_per_cycle = bytes_per_cycle

    def refusal_done(self, exc: HwsimError, at: int) -> int | None:
        """A refused call still ran dma-direct's checks (and a failed allocation its
        search): the entry cost."""
        return at + DMA_API_CYCLES

    def _charged(self, at: int, fn: Callable[[], Any]) -> tuple[Any, int]:
        m = self.model
        lines = m.lines_written_back + m.lines_invalidated
        copied = m.bounce_bytes
        value = fn()
        lines = m.lines_written_back + m.lines_invalidated - lines
        copied = m.bounce_bytes - copied
        cost = DMA_API_CYCLES + lines * self.line_cycles + -(-copied // self.bytes_per_cycle)
        return value, at + cost

    @handles(DmaAllocCoherent)
    def _alloc(self, msg: DmaAllocCoherent, at: int) -> tuple[tuple[int, int], int]:
        return self._charged(at, lambda: self.model.dma_alloc_coherent(msg.dev, msg.size, msg.gfp))

    @handles(DmaFreeCoherent)
    def _free(self, msg: DmaFreeCoherent, at: int) -> tuple[None, int]:
        return self._charged(
            at,
            lambda: self.model.dma_free_coherent(msg.dev, msg.size, msg.cpu_addr, msg.dma_addr),
        )

    @handles(DmaMapSingle)
    def _map(self, msg: DmaMapSingle, at: int) -> tuple[int, int]:
        return self._charged(
            at, lambda: self.model.dma_map_single(msg.dev, msg.addr, msg.size, msg.direction)
        )

    @handles(DmaUnmapSingle)
    def _unmap(self, msg: DmaUnmapSingle, at: int) -> tuple[None, int]:
        return self._charged(
            at,
            lambda: self.model.dma_unmap_single(msg.dev, msg.dma_addr, msg.size, msg.direction),
        )

    @handles(DmaSyncSingle)
    def _sync(self, msg: DmaSyncSingle, at: int) -> tuple[None, int]:
        fn = (
            self.model.dma_sync_single_for_cpu
            if msg.for_cpu
            else self.model.dma_sync_single_for_device
        )
        return self._charged(at, lambda: fn(msg.dev, msg.dma_addr, msg.size, msg.direction))

    @handles(DmaMapSg)
    def _map_sg(self, msg: DmaMapSg, at: int) -> tuple[int, int]:
        return self._charged(at, lambda: self.model.dma_map_sg(msg.dev, msg.sglist, msg.direction))

    @handles(DmaUnmapSg)
    def _unmap_sg(self, msg: DmaUnmapSg, at: int) -> tuple[None, int]:
        return self._charged(
            at, lambda: self.model.dma_unmap_sg(msg.dev, msg.sglist, msg.direction)
        )

    @handles(DmaSyncSg)
    def _sync_sg(self, msg: DmaSyncSg, at: int) -> tuple[None, int]:
        fn = self.model.dma_sync_sg_for_cpu if msg.for_cpu else self.model.dma_sync_sg_for_device
        return self._charged(at, lambda: fn(msg.dev, msg.sglist, msg.direction))

    @handles(SgFromVmalloc)
    def _sg_from_vmalloc(self, msg: SgFromVmalloc, at: int) -> tuple[ScatterList, int]:
        sg = sg_from_vmalloc(self.vmalloc, msg.addr, msg.size)
        return sg, at + DMA_API_CYCLES * len(sg)  # a page walk per page

    def statistics(self) -> DmaStatistics:
        return self.model.statistics()
