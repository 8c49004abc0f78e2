"""The machine: builds the units from a MachineConfig, runs them as trio tasks, stops them.

Data flows one way: scenario → machine → kernel services → devices → core.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Callable

import attrs
import trio

from .config import MachineConfig
from .core.actor import Actor
from .core.clock import CycleClock
from .core.run import unwrap_single_error
from .core.timer import Timer
from .core.trace import Tracer
from .devices.cache import CacheModel
from .devices.cache_unit import Cache
from .devices.coherence import CoherentHierarchy, WalkerPort
from .devices.cpu import Cpu
from .devices.dma import DmaController, DmaControllerModel
from .devices.iommu import IommuModel
from .devices.irq import InterruptController, InterruptControllerModel
from .devices.mmu import Mmu, MmuModel
from .devices.ram import Ram, RamModel
from .devices.tlb import TlbModel
from .kernel.buddy import BuddyAllocator, BuddyService
from .kernel.dma_api import DmaApi, DmaDevice
from .kernel.dma_mapping import DmaMappingService
from .kernel.fault import FaultService, HandlePageFault, PageFaultHandler
from .kernel.kernel import Kernel
from .kernel.kmalloc import Kmalloc, SlabService
from .kernel.layout import Layout, layout_for
from .kernel.page_owner import PageOwner
from .kernel.pagetable import KernelPageTable
from .kernel.proc import (
    MeminfoSources,
    Proc,
    ProcConfig,
    VmallocInfoRow,
    meminfo_sources,
)
from .kernel.slab import SlabAllocator
from .kernel.vmalloc import VmallocAllocator, VmallocService
from .units import PAGE_SHIFT


@attrs.frozen
class _ProcSources:
    """What /proc/vmallocinfo and /proc/meminfo read, gathered from the live models."""

    proc_config: ProcConfig
    layout: Layout
    swap_pages: int
    buddy: BuddyAllocator
    pagetable: KernelPageTable
    vmalloc: VmallocAllocator
    slab: SlabAllocator
    dma_api: DmaApi

    def vmallocinfo_rows(self) -> list[VmallocInfoRow]:
        return [
            VmallocInfoRow(
                addr=a.addr,
                size=a.size,
                caller=a.caller,
                nr_pages=a.nr_pages,
                flags=a.vm_flags,
                vpages=a.vpages,
            )
            for a in self.vmalloc.areas()
        ]

    def node_stats(self) -> dict[str, int]:
        """zoneinfo's per-node counters, in pages: the same figures meminfo shows in kB."""
        return {
            "nr_slab_reclaimable": self.slab.nr_slab_reclaimable,
            "nr_slab_unreclaimable": self.slab.nr_slab_unreclaimable,
            "nr_page_table_pages": self.pagetable.nr_pagetable_pages,
        }

    def meminfo(self) -> MeminfoSources:
        return meminfo_sources(
            self.buddy,
            self.proc_config,
            layout=self.layout,
            page_tables=self.pagetable.nr_pagetable_pages,
            vmalloc_used=self.vmalloc.vmalloc_used_pages,
            slab_reclaimable=self.slab.nr_slab_reclaimable,
            slab_unreclaimable=self.slab.nr_slab_unreclaimable,
            swap_total=self.swap_pages,
            swap_free=self.swap_pages,
            cma_total=self.dma_api.cma_pages,
            cma_free=self.dma_api.cma_free_pages,
        )


class Machine:
    """A booted machine. Get one from :func:`boot`.

    Attributes:
        config: the :class:`MachineConfig` it was built from.
        cpus: the CPU units, ``cpus[i]`` named ``"cpu{i}"``.
        ram: the RAM unit.
        proc: the machine's /proc files: ``proc.read("buddyinfo")``, ``proc.dump(dir)``.
        kernel: the kernel's memory API (:class:`~hwsim.kernel.kernel.Kernel`), CPU 0's view.
        layout: the kernel's virtual address layout (direct map, vmalloc range).
        random: a ``random.Random`` seeded from ``config.seed``, for workloads that want
            reproducible randomness.
        tracer: the :class:`~hwsim.Tracer` recording messages, or ``None``.
    """

    def __init__(self, config: MachineConfig, tracer: Tracer | None = None) -> None:
        self.config = config
        self.tracer = tracer
        self._plugged: list[Actor] = []
        self.random = random.Random(config.seed)
        lat = config.latency
        ram = RamModel(size=config.ram, latency=lat.ram, bytes_per_cycle=lat.ram_bytes_per_cycle)
        self.ram = Ram(ram, tracer=tracer)
        # The caches: an L1d per CPU above an optional shared L2, kept coherent (MESI).
        caches = config.caches
        l2 = (
            None
            if caches.l2 is None
            else CacheModel(
                "l2", caches.l2, next_level=None, ram=ram, latency=lat.l2, seed=config.seed
            )
        )
        l1s = [
            CacheModel(
                f"l1d{i}",
                caches.l1d,
                next_level=l2,
                ram=ram,
                latency=lat.l1,
                seed=config.seed + 1 + i,
            )
            for i in range(config.cpus)
        ]
        self.hierarchy = CoherentHierarchy(l1s, l2, ram)
        self.l1ds = [Cache(l1, self.hierarchy, i, tracer=tracer) for i, l1 in enumerate(l1s)]
        self.l2 = None if l2 is None else Cache(l2, self.hierarchy, tracer=tracer)
        self.layout = layout_for(config.arch, config.ram)
        self.buddy = BuddyService(
            BuddyAllocator(config.ram >> PAGE_SHIFT, config.arch, config.cpus), tracer=tracer
        )
        # The kernel page table lives in simulated RAM; its pages come from the buddy
        # allocator (counted as PageTables), as the direct map is built at boot. Kernel code
        # writes memory through the coherent caches, as kernel code running on a CPU does.
        self.pagetable = KernelPageTable(
            self.buddy.model, self.hierarchy, self.layout, pae=config.pae
        )
        # The MMUs: one per CPU, with its TLB, loaded with the kernel's page table.
        through = config.tlb.walk_through_caches
        self.mmus = []
        for i in range(config.cpus):
            mmu = MmuModel(
                WalkerPort(self.hierarchy, i) if through else ram,
                TlbModel(config.tlb, seed=config.seed + 1 + i),
                mode=self.pagetable.mode,
                walk_latency_per_level=lat.l1,
                tlb_latency=lat.tlb,
            )
            mmu.load_cr3(self.pagetable.cr3)
            self.mmus.append(Mmu(i, mmu, tracer=tracer))
        self.pagetable.tlb_flush = _shootdown([m.model for m in self.mmus])
        self.vmalloc = VmallocService(
            VmallocAllocator(self.buddy.model, self.pagetable, self.layout, self.hierarchy),
            tracer=tracer,
        )
        slab = SlabAllocator(
            self.buddy.model,
            self.hierarchy,
            self.layout,
            config.cpus,
            slub_debug=config.debug.slub_debug,
        )
        self.slab = SlabService(
            slab, Kmalloc(slab, self.buddy.model, self.hierarchy, self.layout), tracer=tracer
        )
        self.fault = FaultService(PageFaultHandler(self.layout, self.vmalloc.model), tracer=tracer)
        # Interrupts and DMA: the timer makes things happen at their cycle.
        self.timer = Timer()
        self.irq = InterruptController(
            InterruptControllerModel(config.cpus, latency=lat.interrupt), self.timer, tracer=tracer
        )
        dcfg = config.dma
        device = DmaDevice(
            "dma",
            dma_mask=dcfg.mask_bits,
            scatter_gather=dcfg.scatter_gather,
            iommu=config.iommu,
            max_segment_size=dcfg.max_segment_size,
        )
        dma_api = DmaApi(
            self.buddy.model,
            self.layout,
            ram,
            caches=self.hierarchy,
            vmalloc=self.vmalloc.model,
            dma_coherent=config.dma_coherent,
            cma=config.cma,
            swiotlb_size=_swiotlb_size(config),
        )
        iommu = None
        if config.iommu:
            domain = dma_api.iommu_domain(device)
            iommu = IommuModel(page_table=domain.lookup, device="0000:00:04.0")
            domain.iotlb_flush = iommu.invalidate
        self.dma_api = DmaMappingService(
            dma_api,
            self.vmalloc.model,
            line_cycles=lat.l1,
            bytes_per_cycle=lat.ram_bytes_per_cycle,
            tracer=tracer,
        )
        self.dma = DmaController(
            DmaControllerModel(
                self.hierarchy,
                channels=dcfg.channels,
                scatter_gather=dcfg.scatter_gather,
                mask_bits=dcfg.mask_bits,
                bytes_per_cycle=dcfg.bytes_per_cycle,
                coherent=config.dma_coherent,
                iommu=iommu,
            ),
            self.timer,
            self.irq,
            irq=DMA_IRQ,
            device=device,
            tracer=tracer,
        )
        entry_cost = lat.ram + -(-self.pagetable.mode.entry_size // lat.ram_bytes_per_cycle)
        self.cpus = [
            Cpu(
                i,
                mmu=self.mmus[i],
                l1d=self.l1ds[i],
                hierarchy=self.hierarchy,
                fault=self.fault,
                fault_message=HandlePageFault,
                explain_fault=self.fault.model.explain,
                quantum=config.quantum,
                walk_bypass_cycles=None if through else entry_cost,
                tracer=tracer,
            )
            for i in range(config.cpus)
        ]
        self.irq.cpus = self.cpus
        for cpu in self.cpus:
            cpu.irq_controller = self.irq
        self.proc_config = attrs.evolve(
            ProcConfig.for_arch(config.arch, cma=config.cma > 0),
            x86_pae=config.arch == "i386" and config.pae,
        )
        # The renderers hold the models, not the machine: no reference cycle through it.
        sources = _ProcSources(
            self.proc_config,
            self.layout,
            config.swap >> PAGE_SHIFT,
            self.buddy.model,
            self.pagetable,
            self.vmalloc.model,
            self.slab.model,
            self.dma_api.model,
        )
        self.proc = Proc.for_buddy(
            self.buddy.model,
            self.proc_config,
            layout=self.layout,
            vmallocinfo=sources.vmallocinfo_rows,
            slabinfo=self.slab.model.slabinfo,
            meminfo=sources.meminfo,
            node_stats=sources.node_stats,
        )
        self.proc.register("interrupts", self.irq.model.render_interrupts)
        # Who owns each page: what the DMA controller's naive-driver detector asks.
        self.page_owner = PageOwner(
            self.buddy.model,
            self.slab.model,
            self.slab.kmalloc,
            self.vmalloc.model,
            self.pagetable,
            dma_api,
        )
        self.dma.model.ownership = self.page_owner.owner_of
        self.kernel = Kernel(
            buddy=self.buddy,
            layout=self.layout,
            cpus=self.cpus,
            services={
                "vmalloc": self.vmalloc,
                "slab": self.slab,
                "dma_api": self.dma_api,
                "dma": self.dma,
                "irq": self.irq,
            },
        )

    @property
    def units(self) -> list[Actor]:
        """Every actor of the machine, in start-up order (devices before their users)."""
        l2 = [] if self.l2 is None else [self.l2]
        return [
            self.ram,
            *l2,
            *self.l1ds,
            *self.mmus,
            self.buddy,
            self.slab,
            self.vmalloc,
            self.fault,
            self.irq,
            self.dma_api,
            self.dma,
            *self.cpus,
            *self._plugged,
        ]

    @property
    def now(self) -> int:
        """The current virtual time, in integer cycles."""
        return int(trio.current_time())

    def stats(self) -> dict[str, dict[str, int]]:
        """Every unit's statistics as plain dicts, keyed by unit name.

        >>> import hwsim
        >>> async def main():
        ...     async with hwsim.boot(hwsim.MachineConfig(cpus=1)) as m:
        ...         buf = await m.kernel.kmalloc(64)
        ...         await m.cpus[0].load(buf, 64)
        ...         return m.stats()["l1d0"]["load_misses"], m.stats()["tlb0"]["walks"]
        >>> hwsim.run(main)  # one walk: PGD, PUD and PMD entries, then the data line
        (4, 1)
        """
        stats = {
            unit.name: attrs.asdict(unit.statistics())  # type: ignore[attr-defined]
            for unit in self.units
        }
        for i, mmu in enumerate(self.mmus):
            stats[f"tlb{i}"] = attrs.asdict(mmu.model.tlb.statistics())
        stats["coherence"] = attrs.asdict(self.hierarchy.statistics())
        return stats

    def plug(self, unit: Actor) -> None:
        """Add a device started outside :func:`boot` (a network card from
        :func:`~hwsim.devices.nic.open_nic`) to :attr:`units` and :meth:`stats`."""
        if not isinstance(unit, Actor) or not callable(getattr(unit, "statistics", None)):
            raise TypeError(
                f"only a unit (an Actor with statistics()) can be plugged in, got {unit!r}"
            )
        if any(u.name == unit.name for u in self.units):
            raise ValueError(f"the machine already has a unit named {unit.name!r}")
        self._plugged.append(unit)

    def unplug(self, unit: Actor) -> None:
        """Remove a unit added with :meth:`plug`.

        Raises:
            ValueError: it was not plugged in.
        """
        if unit not in self._plugged:
            raise ValueError(f"{unit!r} was not plugged into this machine")
        self._plugged.remove(unit)

    def _teardown(self) -> None:
        """Break the reference cycles a running machine needs (the L1s' snoop hooks, CPUs
        and their interrupt controller) so that a stopped machine is freed at once rather
        than by the garbage collector. Statistics stay readable."""
        self.hierarchy.detach()
        self.irq.cpus = ()
        for cpu in self.cpus:
            cpu.irq_controller = None

    def flush_tlb_all(self) -> int:
        """Linux's ``flush_tlb_all()``: drop every entry of every CPU's TLB, global ones
        included. Functional: no time passes. Returns how many entries were dropped."""
        return sum(mmu.model.tlb.flush_all(include_global=True) for mmu in self.mmus)

    def wbinvd(self) -> int:
        """x86's ``WBINVD`` on every CPU: write every dirty line back to RAM, then empty
        every cache. Functional: no time passes. For experiments that must start cold.
        Returns how many dirty lines were written back."""
        written = self.hierarchy.flush_all()
        self.hierarchy.invalidate_range(0, self.config.ram)  # every L1, and the L2 below
        return written

    def __repr__(self) -> str:
        c = self.config
        return f"<Machine {c.arch} ram={c.ram} cpus={c.cpus} at cycle {self.now}>"


#: The DMA controller's interrupt line.
DMA_IRQ = 11


def _swiotlb_size(config: MachineConfig) -> int:
    """swiotlb's bounce pool, as x86 sets it up (pci_swiotlb_detect): only when some RAM
    lies beyond what a 32-bit device reaches (more than 4 GiB), then min(64 MiB, RAM / 8)."""
    if config.ram <= 1 << 32:
        return 0
    return min(64 << 20, config.ram // 8)


def _shootdown(mmus: list[MmuModel]) -> Callable[[int, int], None]:
    """``flush_tlb_kernel_range`` on every CPU: what the kernel does after it unmaps kernel
    pages (vfree). Linux sends IPIs and waits for them; here every TLB is flushed at once,
    inside the unmapping service's message, so no CPU can use a stale entry afterwards."""

    def flush(start: int, end: int) -> None:
        for mmu in mmus:
            mmu.flush_tlb_kernel_range(start, end)

    return flush


@contextlib.asynccontextmanager
async def boot(
    config: MachineConfig | None = None, *, tracer: Tracer | None = None
) -> AsyncIterator[Machine]:
    """Build a machine and run every unit as a trio task for the duration of the block.

    Leaving the block shuts every actor down. An actor that crashes ends the machine with
    :class:`~hwsim.ActorCrashed` naming it.

    Args:
        config: the machine to build (default: ``MachineConfig()``).
        tracer: record every message into this :class:`~hwsim.Tracer` (default: off).

    Raises:
        RuntimeError: not running under hwsim's cycle clock (use :func:`hwsim.run` or the
            pytest plugin).

    Example:
        >>> import hwsim
        >>> async def main():
        ...     async with hwsim.boot(hwsim.MachineConfig(ram="128MiB")) as m:
        ...         return len(m.cpus), m.now
        >>> hwsim.run(main)
        (2, 0)
    """
    if config is None:
        config = MachineConfig()
    if not isinstance(config, MachineConfig):
        raise TypeError(f"boot() takes a MachineConfig, got {type(config).__name__}")
    if tracer is not None and not isinstance(tracer, Tracer):
        raise TypeError(f"tracer must be a hwsim.Tracer or None, got {type(tracer).__name__}")
    if not isinstance(trio.lowlevel.current_clock(), CycleClock):
        raise RuntimeError(
            "hwsim.boot() needs hwsim's cycle clock: run under hwsim.run(), or in a test "
            "through the hwsim pytest plugin"
        )
    machine = Machine(config, tracer)
    try:
        with unwrap_single_error():
            async with trio.open_nursery() as nursery:
                await nursery.start(machine.timer.serve, name="timer")
                for unit in machine.units:
                    await nursery.start(unit.serve, name=unit.name)
                try:
                    yield machine
                finally:
                    if tracer is not None:
                        for name, values in machine.stats().items():
                            tracer.counter(name, machine.now, values)
                    nursery.cancel_scope.cancel()
    finally:
        machine._teardown()
