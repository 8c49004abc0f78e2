"""``machine.kernel``: the kernel's memory API, as a driver calls it.

Each method validates its arguments in the caller's task (so misuse fails fast and never
reaches a service), sends one message to the service actor that owns the state (``buddy``,
``slab``, ``vmalloc``, ``dma_api``, the interrupt controller ``irq``), and sleeps until the
completion cycle the reply carries. Address
arithmetic (``virt_to_phys``, ``is_vmalloc_addr``) is plain and synchronous, as in Linux.

A ``Kernel`` runs "on" one CPU (per-CPU page lists and slabs are that CPU's);
``machine.kernel`` is CPU 0's view and ``machine.kernel.on_cpu(i)`` another CPU's.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from ..core.actor import Actor
from ..devices.cpu import Cpu
from ..devices.irq import FreeIrq, RequestIrq
from ..errors import DmaInFlight, HwsimError, OutOfMemory
from ..units import PAGE_SHIFT, PAGE_SIZE
from . import gfp as G
from .buddy import AllocPages, AllocPagesBulk, BuddyAllocator, BuddyService, FreePages
from .dma_api import DmaDevice
from .dma_mapping import (
    DmaAllocCoherent,
    DmaFreeCoherent,
    DmaMapSg,
    DmaMapSingle,
    DmaSyncSg,
    DmaSyncSingle,
    DmaUnmapSg,
    DmaUnmapSingle,
    SgFromVmalloc,
)
from .kmalloc import (
    KcallocMsg,
    KfreeMsg,
    KmallocMsg,
    KmemCacheAlloc,
    KmemCacheCreate,
    KmemCacheDestroy,
    KmemCacheFree,
    KmemCacheShrink,
    KreallocMsg,
    KsizeMsg,
)
from .layout import Layout
from .scatterlist import ScatterList
from .slab import KmemCache
from .vmalloc import Vfree, Vmalloc, VmallocToPfn

_GFP_RETRY_MAYFAIL = G.__GFP_RETRY_MAYFAIL
_GFP_NORETRY = G.__GFP_NORETRY
_GFP_DIRECT_RECLAIM = G.__GFP_DIRECT_RECLAIM


def _with_zero(gfp: int) -> int:
    G.check_gfp(gfp)
    return gfp | G.GFP_ZERO


class Kernel:
    """The kernel services of a booted machine, seen from one CPU.

    Example:
        >>> import hwsim
        >>> async def main():
        ...     async with hwsim.boot(hwsim.MachineConfig()) as m:
        ...         pfn = await m.kernel.alloc_pages(2)
        ...         await m.kernel.free_pages(pfn, 2)
        ...         return pfn % 4
        >>> hwsim.run(main)
        0
    """

    def __init__(
        self,
        *,
        buddy: BuddyService,
        layout: Layout,
        cpus: Sequence[Cpu],
        cpu: int = 0,
        services: dict[str, Any] | None = None,
    ) -> None:
        self._buddy = buddy
        self.buddy_model: BuddyAllocator = buddy.model
        self.layout = layout
        self._cpus = cpus
        self.nr_cpus = len(cpus)
        self.cpu = cpu
        self._clock = cpus[cpu]
        self._services = services or {}
        self._vmalloc: Actor = self._services["vmalloc"]
        self._slab: Actor = self._services["slab"]

    def on_cpu(self, cpu: int) -> Kernel:
        """The same kernel, called from CPU ``cpu`` (its per-CPU lists and slabs)."""
        if isinstance(cpu, bool) or not isinstance(cpu, int) or not 0 <= cpu < self.nr_cpus:
            raise ValueError(f"cpu must be 0..{self.nr_cpus - 1}, got {cpu!r}")
        return Kernel(
            buddy=self._buddy,
            layout=self.layout,
            cpus=self._cpus,
            cpu=cpu,
            services=self._services,
        )

    async def _call(self, actor: Actor, msg: object) -> Any:
        # Kernel code runs on this CPU: it starts when the CPU is free and the CPU's clock
        # (and, within the quantum, virtual time) moves to the reply's completion cycle.
        try:
            value, done = await actor.call(msg, self._clock.issue_cycle())
        except HwsimError as exc:
            if exc.done is not None:  # the work before the refusal took time too
                await self._clock.sync(exc.done)
            raise
        await self._clock.sync(done)
        return value

    # ------------------------------------------------------------------ pages

    async def alloc_pages(self, order: int = 0, gfp: int = G.GFP_KERNEL) -> int:
        """``alloc_pages(gfp, order)``: a block of 2**order pages; returns its first pfn.

        Raises:
            OutOfMemory: "page allocation failure: order:N, mode:0x...".
            ValueError: order outside 0..10 or bad gfp flags.
        """
        self.buddy_model.check_order(order)
        G.check_gfp(gfp)
        return int(await self._call(self._buddy, AllocPages(order, gfp, self.cpu)))

    async def free_pages(self, pfn: int, order: int = 0) -> None:
        """``__free_pages(page, order)``.

        Raises:
            DoubleFree: the pages are already free.
            InvalidFree: ``pfn`` was not allocated with this order.
        """
        if isinstance(pfn, int) and isinstance(order, int) and 0 <= order <= 10 and pfn >= 0:
            self._check_no_dma(pfn << PAGE_SHIFT, PAGE_SIZE << order, "free_pages")
        await self._call(self._buddy, FreePages(pfn, order, self.cpu))

    async def alloc_pages_bulk(self, nr_pages: int, gfp: int = G.GFP_KERNEL) -> list[int]:
        """``alloc_pages_bulk``: up to ``nr_pages`` order-0 pages in one request."""
        G.check_gfp(gfp)
        pfns: list[int] = await self._call(self._buddy, AllocPagesBulk(nr_pages, gfp, self.cpu))
        return pfns

    # ------------------------------------------------------------------ slab caches

    async def kmem_cache_create(
        self,
        name: str,
        size: int,
        align: int = 0,
        flags: int = 0,
        ctor: Callable[[int], object] | None = None,
    ) -> KmemCache:
        """``kmem_cache_create()``: a cache of equal objects (SLUB layout and slab order).

        ``ctor(addr)`` runs for every object when a new slab is set up, as in Linux.
        """
        cache: KmemCache = await self._call(
            self._slab, KmemCacheCreate(name, size, align, flags, ctor)
        )
        return cache

    async def kmem_cache_alloc(self, cache: KmemCache, gfp: int = G.GFP_KERNEL) -> int:
        """``kmem_cache_alloc()``: an object from this CPU's slab (a freed one first)."""
        return int(await self._call(self._slab, KmemCacheAlloc(cache, gfp, self.cpu)))

    async def kmem_cache_zalloc(self, cache: KmemCache, gfp: int = G.GFP_KERNEL) -> int:
        """``kmem_cache_zalloc()``: a zeroed object."""
        return int(await self._call(self._slab, KmemCacheAlloc(cache, gfp, self.cpu, True)))

    async def kmem_cache_free(self, cache: KmemCache, addr: int) -> None:
        """``kmem_cache_free()``.

        Raises:
            DoubleFree: "Object already free".
            InvalidFree: not an object of this cache.
        """
        if isinstance(cache, KmemCache):
            self._check_direct(addr, cache.size, "kmem_cache_free")
        await self._call(self._slab, KmemCacheFree(cache, addr, self.cpu))

    async def kmem_cache_shrink(self, cache: KmemCache) -> int:
        """``kmem_cache_shrink()``: give empty slabs back to the page allocator."""
        return int(await self._call(self._slab, KmemCacheShrink(cache, self.cpu)))

    async def kmem_cache_destroy(self, cache: KmemCache | None) -> None:
        """``kmem_cache_destroy()``; with live objects raises SlabCacheBusy
        ("kmem_cache_destroy X: Slab cache still has objects") and keeps the cache."""
        await self._call(self._slab, KmemCacheDestroy(cache, self.cpu))

    # ------------------------------------------------------------------ kmalloc

    async def kmalloc(self, size: int, gfp: int = G.GFP_KERNEL) -> int:
        """``kmalloc(size, gfp)``: physically contiguous, in the direct map.

        Sizes up to 8 KiB come from the kmalloc-N caches (dma-kmalloc-N with GFP_DMA);
        larger ones are whole pages from the buddy allocator. ``kmalloc(0)`` returns
        ZERO_SIZE_PTR (16).

        Raises:
            OutOfMemory: above KMALLOC_MAX_SIZE (4 MiB), or no memory.
        """
        return int(await self._call(self._slab, KmallocMsg(size, gfp, self.cpu)))

    async def kzalloc(self, size: int, gfp: int = G.GFP_KERNEL) -> int:
        """``kzalloc()``: :meth:`kmalloc` of zeroed memory."""
        return await self.kmalloc(size, _with_zero(gfp))

    async def kcalloc(self, n: int, size: int, gfp: int = G.GFP_KERNEL) -> int:
        """``kcalloc(n, size)``: a zeroed array; OutOfMemory if ``n * size`` overflows."""
        return int(await self._call(self._slab, KcallocMsg(n, size, gfp, self.cpu)))

    async def krealloc(self, addr: int | None, new_size: int, gfp: int = G.GFP_KERNEL) -> int:
        """``krealloc()``: in place when ``ksize(addr) >= new_size``, else copy and free."""
        self._check_kmalloc_idle(addr, "krealloc")
        return int(await self._call(self._slab, KreallocMsg(addr, new_size, gfp, self.cpu)))

    async def kfree(self, addr: int | None) -> None:
        """``kfree()``; ``kfree(0)`` and ``kfree(ZERO_SIZE_PTR)`` do nothing.

        Raises:
            InvalidFree: not kmalloc memory (a vmalloc address needs vfree or kvfree).
            DoubleFree: "Object already free".
        """
        self._check_kmalloc_idle(addr, "kfree")
        await self._call(self._slab, KfreeMsg(addr, self.cpu))

    async def ksize(self, addr: int | None) -> int:
        """``ksize()``: the usable size of a kmalloc object (its cache's object size)."""
        return int(await self._call(self._slab, KsizeMsg(addr)))

    async def kvmalloc(self, size: int, gfp: int = G.GFP_KERNEL) -> int:
        """``kvmalloc()``: kmalloc, falling back to vmalloc when no contiguous block is free.

        As ``kvmalloc_node()``: above a page the kmalloc attempt is quiet and does not
        retry (__GFP_NOWARN | __GFP_NORETRY); only blocking allocations fall back.
        """
        G.check_gfp(gfp)
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"kvmalloc takes a size (int), got {size!r}")
        kmalloc_gfp = gfp
        if size > PAGE_SIZE:
            kmalloc_gfp |= G.GFP_NOWARN
            if not gfp & _GFP_RETRY_MAYFAIL:
                kmalloc_gfp |= _GFP_NORETRY
        try:
            return await self.kmalloc(size, kmalloc_gfp)
        except OutOfMemory:
            if size <= PAGE_SIZE or not gfp & _GFP_DIRECT_RECLAIM:
                raise
        return await self.vmalloc(size, gfp, caller="kvmalloc_node")

    async def kvzalloc(self, size: int, gfp: int = G.GFP_KERNEL) -> int:
        """``kvzalloc()``: :meth:`kvmalloc` of zeroed memory."""
        return await self.kvmalloc(size, _with_zero(gfp))

    async def kvfree(self, addr: int | None) -> None:
        """``kvfree()``: vfree for vmalloc addresses, kfree for the rest."""
        if isinstance(addr, int) and not isinstance(addr, bool) and self.is_vmalloc_addr(addr):
            await self.vfree(addr)
        else:
            await self.kfree(addr)

    # ------------------------------------------------------------------ vmalloc

    async def vmalloc(self, size: int, gfp: int = G.GFP_KERNEL, *, caller: str = "vmalloc") -> int:
        """``vmalloc(size)``: virtually contiguous, physically scattered memory.

        Pages come one at a time from the buddy allocator and are mapped with 4 KiB PTEs in
        the kernel page table; the area is followed by an unmapped guard page.

        Raises:
            OutOfMemory: size 0 or beyond RAM ("vmalloc error: size N, exceeds total
                pages"), or pages ran out (then nothing stays allocated).
        """
        return int(await self._call(self._vmalloc, Vmalloc(size, gfp, self.cpu, caller)))

    async def vzalloc(self, size: int, gfp: int = G.GFP_KERNEL, *, caller: str = "vzalloc") -> int:
        """``vzalloc(size)``: :meth:`vmalloc` of zeroed memory."""
        return await self.vmalloc(size, _with_zero(gfp), caller=caller)

    async def vfree(self, addr: int | None) -> None:
        """``vfree(addr)``; ``vfree(0)`` does nothing.

        Raises:
            InvalidFree: not a vmalloc address (kmalloc memory is freed with kfree), or not
                the start of a live area ("Trying to vfree() nonexistent vm area").
            DoubleFree: freed twice.
        """
        if self._dma_busy():
            for pfn in self._vmalloc.model.area_pfns(addr):  # type: ignore[attr-defined]
                self._check_no_dma(pfn << PAGE_SHIFT, PAGE_SIZE, "vfree")
        await self._call(self._vmalloc, Vfree(addr, self.cpu))

    async def vmalloc_to_pfn(self, addr: int) -> int:
        """``vmalloc_to_pfn(addr)``: the page frame behind a vmalloc address (a page walk)."""
        return int(await self._call(self._vmalloc, VmallocToPfn(addr)))

    # ------------------------------------------------------------------ addresses

    def is_vmalloc_addr(self, addr: int) -> bool:
        """``is_vmalloc_addr()``: is ``addr`` in the vmalloc range?"""
        return self.layout.is_vmalloc_addr(addr)

    def virt_to_phys(self, addr: int) -> int:
        """``virt_to_phys()``: direct-map addresses only (a vmalloc address raises
        ValueError saying to use vmalloc_to_pfn)."""
        return self.layout.virt_to_phys(addr)

    def phys_to_virt(self, phys: int) -> int:
        """``phys_to_virt()``: the direct-map address of ``phys``."""
        return self.layout.phys_to_virt(phys)

    def page_address(self, pfn: int) -> int:
        """``page_address()``: the direct-map address of page frame ``pfn``."""
        return self.layout.pfn_to_virt(pfn)

    # ------------------------------------------------------------------ DMA mapping API

    def _service(self, name: str) -> Actor:
        service = self._services.get(name)
        if service is None:
            raise RuntimeError(f"this kernel has no {name} service")
        return service  # type: ignore[no-any-return]

    @staticmethod
    def _dev(dev: object) -> DmaDevice:
        """The DmaDevice behind ``dev``: a DmaDevice, or a unit with a ``device`` (m.dma)."""
        device = getattr(dev, "device", dev)
        if not isinstance(device, DmaDevice):
            raise TypeError(
                f"dev must be a DMA-capable device (machine.dma or a DmaDevice), got {dev!r}"
            )
        return device

    def _dma_busy(self) -> bool:
        """Whether some DMA transfer is in flight: the frees' checks below do their work
        (sizes, ranges) only then."""
        dma = self._services.get("dma")
        return dma is not None and bool(dma.busy)

    def _check_kmalloc_idle(self, addr: object, what: str) -> None:
        """Refuse to free (or move) a kmalloc buffer a transfer still uses."""
        if self._dma_busy() and isinstance(addr, int) and self.layout.is_direct_map_addr(addr):
            size = self._slab.kmalloc.allocated_size(addr)  # type: ignore[attr-defined]
            self._check_direct(addr, size, what)

    def _check_no_dma(self, phys: int, size: int, what: str) -> None:
        """Refuse to free or unmap memory a DMA transfer still uses (nothing changes)."""
        if not self._dma_busy():
            return
        busy = self._services["dma"].in_flight(phys, size)
        if busy:
            t = busy[0]
            raise DmaInFlight(
                f"{what}: [{phys:#x}, {phys + size:#x}) is still used by DMA transfer "
                f"{t.id} (channel {t.channel}, in flight until cycle {t.done}): wait for its "
                "completion interrupt (or transfer.wait()) before freeing or unmapping the "
                "buffer; a device writing into freed memory corrupts whoever gets it next"
            )

    def _check_mapping_idle(
        self,
        device: DmaDevice,
        what: str,
        dma_addr: object = None,
        sglist: ScatterList | None = None,
    ) -> None:
        """Refuse to unmap a mapping whose memory a transfer still uses: the ranges the
        device really reaches (the bounce slots, the pages behind the IOMMU). A bad handle
        matches nothing here; the service then reports it in dma-debug's words."""
        if not self._dma_busy():
            return
        model = self._service("dma_api").model  # type: ignore[attr-defined]
        if sglist is None and (isinstance(dma_addr, bool) or not isinstance(dma_addr, int)):
            return
        for phys, n in model.device_ranges(device, dma_addr, sglist):
            self._check_no_dma(phys, n, what)

    def _check_direct(self, addr: object, size: int, what: str) -> None:
        if (
            isinstance(addr, int)
            and not isinstance(addr, bool)
            and self.layout.is_direct_map_addr(addr)
        ):
            self._check_no_dma(self.layout.virt_to_phys(addr), max(size, 1), what)

    async def dma_alloc_coherent(
        self, dev: object, size: int, gfp: int = G.GFP_KERNEL
    ) -> tuple[int, int]:
        """``dma_alloc_coherent(dev, size, gfp)``: zeroed, physically contiguous memory the
        CPU and the device share without syncs (from the CMA area when configured, else
        the buddy allocator in the zone the device's coherent mask needs); returns
        ``(cpu_addr, dma_addr)``.

        Raises:
            OutOfMemory: nothing free below the device's mask.
        """
        value = await self._call(
            self._service("dma_api"), DmaAllocCoherent(self._dev(dev), size, gfp)
        )
        return int(value[0]), int(value[1])

    async def dma_free_coherent(self, dev: object, size: int, cpu_addr: int, dma_addr: int) -> None:
        """``dma_free_coherent()``. Raises DmaInFlight while a transfer still uses it."""
        device = self._dev(dev)
        self._check_direct(cpu_addr, size, "dma_free_coherent")
        await self._call(
            self._service("dma_api"), DmaFreeCoherent(device, size, cpu_addr, dma_addr)
        )

    async def dma_map_single(self, dev: object, addr: int, size: int, direction: int) -> int:
        """``dma_map_single()``: the bus address the device uses for a kmalloc buffer
        (bounced through swiotlb when the buffer is beyond the device's mask; an IOVA with
        the IOMMU); cache lines cleaned or invalidated as the direction needs.

        Raises:
            DmaMappingError: a vmalloc address ("rejecting DMA map of vmalloc memory": use
                dma_map_sg, or allocate with kmalloc / dma_alloc_coherent), memory outside
                the direct map, a full bounce pool.
        """
        value = await self._call(
            self._service("dma_api"), DmaMapSingle(self._dev(dev), addr, size, direction)
        )
        return int(value)

    async def dma_unmap_single(self, dev: object, dma_addr: int, size: int, direction: int) -> None:
        """``dma_unmap_single()``: the CPU owns the buffer again (lines invalidated, bounce
        copied back). Raises DmaInFlight while a transfer still uses it; InvalidFree /
        DoubleFree for what was not mapped (dma-debug's words)."""
        device = self._dev(dev)
        self._check_mapping_idle(device, "dma_unmap_single", dma_addr=dma_addr)
        await self._call(
            self._service("dma_api"), DmaUnmapSingle(device, dma_addr, size, direction)
        )

    async def dma_sync_single_for_cpu(
        self, dev: object, dma_addr: int, size: int, direction: int
    ) -> None:
        """``dma_sync_single_for_cpu()``: let the CPU read what the device wrote (stale
        cache lines invalidated, bounced data copied back)."""
        await self._call(
            self._service("dma_api"),
            DmaSyncSingle(self._dev(dev), dma_addr, size, direction, True),
        )

    async def dma_sync_single_for_device(
        self, dev: object, dma_addr: int, size: int, direction: int
    ) -> None:
        """``dma_sync_single_for_device()``: hand the buffer back to the device (dirty lines
        written back, data copied into the bounce buffer)."""
        await self._call(
            self._service("dma_api"),
            DmaSyncSingle(self._dev(dev), dma_addr, size, direction, False),
        )

    async def dma_map_sg(self, dev: object, sglist: ScatterList, direction: int) -> int:
        """``dma_map_sg()``: map a scatterlist; returns the number of DMA segments (each
        physically contiguous run one segment; with the IOMMU, one IOVA range). Each
        entry's ``dma_address``/``dma_length`` are filled in. 0 on failure, as Linux."""
        return int(
            await self._call(self._service("dma_api"), DmaMapSg(self._dev(dev), sglist, direction))
        )

    async def dma_unmap_sg(self, dev: object, sglist: ScatterList, direction: int) -> None:
        """``dma_unmap_sg()``. Raises DmaInFlight while a transfer still uses an entry."""
        device = self._dev(dev)
        if isinstance(sglist, ScatterList):
            self._check_mapping_idle(device, "dma_unmap_sg", sglist=sglist)
        await self._call(self._service("dma_api"), DmaUnmapSg(device, sglist, direction))

    async def dma_sync_sg_for_cpu(self, dev: object, sglist: ScatterList, direction: int) -> None:
        """``dma_sync_sg_for_cpu()``."""
        await self._call(
            self._service("dma_api"), DmaSyncSg(self._dev(dev), sglist, direction, True)
        )

    async def dma_sync_sg_for_device(
        self, dev: object, sglist: ScatterList, direction: int
    ) -> None:
        """``dma_sync_sg_for_device()``."""
        await self._call(
            self._service("dma_api"), DmaSyncSg(self._dev(dev), sglist, direction, False)
        )

    async def vmalloc_to_sg(self, addr: int, size: int) -> ScatterList:
        """A scatterlist of a vmalloc buffer, one entry per page found with
        ``vmalloc_to_page`` (what a driver builds before ``dma_map_sg``)."""
        return await self._call(self._service("dma_api"), SgFromVmalloc(addr, size))  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ interrupts

    async def request_irq(
        self,
        irq: int,
        handler: Callable[[int], Any],
        flags: int = 0,
        name: str | None = None,
    ) -> None:
        """``request_irq(irq, handler, flags, name)``: ``await handler(irq)`` runs on the
        CPU the line is routed to, between two of its accesses, each time the line is
        raised. ``flags=IRQF_SHARED`` lets several handlers share a line.

        Raises:
            IrqBusy: the line is taken and not shared by both (-EBUSY).
            ValueError: no such line, or this handler is already on it.
        """
        call = getattr(handler, "__call__", None)  # noqa: B004 - callable objects too
        if not (inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(call)):
            raise TypeError(
                f"an interrupt handler is an async function (async def handler(irq)), got "
                f"{handler!r}"
            )
        if name is not None and not isinstance(name, str):
            raise TypeError(f"request_irq: name is a str, got {name!r}")
        await self._call(self._service("irq"), RequestIrq(irq, handler, flags, name))

    async def free_irq(self, irq: int, handler: Callable[[int], Any] | None = None) -> None:
        """``free_irq(irq)``: remove the handler (the only one on the line if ``handler``
        is None). Raises ValueError when there is none ("Trying to free already-free
        IRQ")."""
        await self._call(self._service("irq"), FreeIrq(irq, handler))

    def dmesg(self) -> list[str]:
        """What the kernel has logged (allocation-failure warnings, SLUB reports, ...).

        Each service keeps its own log; they are listed page allocator first, then slab,
        then vmalloc (not interleaved by time).
        """
        logs: list[str] = list(self.buddy_model.log)
        for name in ("slab", "vmalloc"):
            logs.extend(getattr(self._services[name].model, "log", []))
        return logs
