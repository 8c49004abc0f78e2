"""``machine.kernel``: the kernel's memory API, as a driver calls it.

Each method validates its arguments in the caller's task (so misuse fails fast and never
reaches a service), sends one message to the service actor that owns the state (``buddy``,
``slab``, ``vmalloc``), and sleeps until the completion cycle the reply carries. Address
arithmetic (``virt_to_phys``, ``is_vmalloc_addr``) is plain and synchronous, as in Linux.

A ``Kernel`` runs "on" one CPU (per-CPU page lists and slabs are that CPU's);
``machine.kernel`` is CPU 0's view and ``machine.kernel.on_cpu(i)`` another CPU's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core.actor import Actor
from ..devices.cpu import Cpu
from . import gfp as G
from .buddy import AllocPages, AllocPagesBulk, BuddyAllocator, FreePages
from .layout import Layout
from .vmalloc import Vfree, Vmalloc, VmallocToPfn


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
        buddy: Actor,
        buddy_model: BuddyAllocator,
        layout: Layout,
        cpus: Sequence[Cpu],
        cpu: int = 0,
        services: dict[str, Any] | None = None,
    ) -> None:
        self._buddy = buddy
        self.buddy_model = buddy_model
        self.layout = layout
        self._cpus = cpus
        self.nr_cpus = len(cpus)
        self.cpu = cpu
        self._clock = cpus[cpu]
        self._services = services or {}
        self._vmalloc: Actor = self._services["vmalloc"]

    def on_cpu(self, cpu: int) -> Kernel:
        """The same kernel, called from CPU ``cpu`` (its per-CPU lists and slabs)."""
        if isinstance(cpu, bool) or not isinstance(cpu, int) or not 0 <= cpu < self.nr_cpus:
            raise ValueError(f"cpu must be 0..{self.nr_cpus - 1}, got {cpu!r}")
        return Kernel(
            buddy=self._buddy,
            buddy_model=self.buddy_model,
            layout=self.layout,
            cpus=self._cpus,
            cpu=cpu,
            services=self._services,
        )

    async def _call(self, actor: Actor, msg: object) -> Any:
        # Kernel code runs on this CPU: it starts when the CPU is free and the CPU's clock
        # (and, within the quantum, virtual time) moves to the reply's completion cycle.
        value, done = await actor.call(msg, self._clock.issue_cycle())
        await self._clock.sync(done)
        return value

    # ------------------------------------------------------------------ pages

    async def alloc_pages(self, order: int = 0, gfp: int = G.GFP_KERNEL) -> int:
        """``alloc_pages(gfp, order)``: a block of 2**order pages; returns its first pfn.

        Raises:
            OutOfMemory: "page allocation failure: order:N, mode:0x...".
            ValueError: order outside 0..10 or bad gfp flags.
        """
        self.buddy_model._check_order(order)
        G.check_gfp(gfp)
        return int(await self._call(self._buddy, AllocPages(order, gfp, self.cpu)))

    async def free_pages(self, pfn: int, order: int = 0) -> None:
        """``__free_pages(page, order)``.

        Raises:
            DoubleFree: the pages are already free.
            InvalidFree: ``pfn`` was not allocated with this order.
        """
        await self._call(self._buddy, FreePages(pfn, order, self.cpu))

    async def alloc_pages_bulk(self, nr_pages: int, gfp: int = G.GFP_KERNEL) -> list[int]:
        """``alloc_pages_bulk``: up to ``nr_pages`` order-0 pages in one request."""
        G.check_gfp(gfp)
        pfns: list[int] = await self._call(self._buddy, AllocPagesBulk(nr_pages, gfp, self.cpu))
        return pfns

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

    def dmesg(self) -> list[str]:
        """What the kernel has logged (allocation-failure warnings and the like)."""
        return list(self.buddy_model.log)
