"""The page-fault handler: what the kernel does when a CPU's translation fails.

arch/x86/mm/fault.c in miniature. The MMU raises #PF (:class:`~hwsim.devices.mmu.PageFault`,
with CR2 and the error code); ``exc_page_fault`` decides. For a kernel address
(``do_kern_addr_fault``) there is nothing to fix up here - x86_64 has no vmalloc faults since
Linux 5.9 (the vmalloc PGD entries are preallocated, as hwsim's page table does), and hwsim
has no exception tables - so every kernel-mode fault ends in ``page_fault_oops``: the access
is refused with :class:`~hwsim.SegmentationFault` naming the address and the reason, and the
machine keeps running (Linux would kill the task; the simulated CPU simply refuses the
access). User address spaces, where a fault maps a page in (``handle_mm_fault``), come with
the process issue.

What the handler adds to the walker's report is what only the kernel knows: that a
not-present address is the guard page after a vmalloc area (an access past the end of a
vmalloc buffer), or inside a vmalloc area being torn down, or outside every mapping.

Example:
    >>> from hwsim.devices.pagefault import NOT_PRESENT, PageFault
    >>> from hwsim.kernel.buddy import BuddyAllocator
    >>> from hwsim.devices.ram import RamModel
    >>> from hwsim.kernel.layout import layout_for
    >>> from hwsim.kernel.pagetable import KernelPageTable
    >>> from hwsim.kernel.vmalloc import VmallocAllocator
    >>> ram, buddy = RamModel(size=64 << 20), BuddyAllocator(16384)
    >>> layout = layout_for("x86_64", 64 << 20)
    >>> vm = VmallocAllocator(buddy, KernelPageTable(buddy, ram, layout), layout, ram)
    >>> buf = vm.vmalloc(4096)
    >>> pf = PageFault(buf + 4096, write=True, user=False, reason=NOT_PRESENT, level="PTE",
    ...                error_code=2)
    >>> error = PageFaultHandler(layout, vm).exc_page_fault(pf, cpu=0)
    >>> error.reason
    'guard page'
    >>> import textwrap
    >>> print(textwrap.fill(str(error), 90))
    BUG: unable to handle page fault for address: ffffc90000001000 #PF: supervisor write
    access in kernel mode #PF: error_code(0x0002) - not-present page hwsim: guard page:
    0xffffc90000001000 is the guard page after the vmalloc area
    0xffffc90000000000-0xffffc90000001000 (4096 bytes, vmalloc): an access past the end of the
    buffer
"""

from __future__ import annotations

import attrs

from ..core.actor import Actor, handles
from ..devices.pagefault import (
    BEYOND_RAM,
    FETCH_FROM_NX,
    NOT_PRESENT,
    USER_TO_KERNEL,
    WRITE_TO_READ_ONLY,
    PageFault,
)
from ..errors import SegmentationFault
from ..units import PAGE_SIZE
from .layout import Layout
from .vmalloc import VmallocAllocator

#: PageFault.reason for an access to the guard page after a vmalloc area.
GUARD_PAGE = "guard page"

#: Cycles the kernel spends in the fault path before it gives up (entry, lookup, oops).
FAULT_CYCLES = 1000


@attrs.frozen
class FaultStatistics:
    """Page faults taken so far, by what the handler found.

    ``not_present`` counts faults on unmapped addresses other than guard pages;
    ``permission`` writes to read-only pages, user accesses to kernel pages and fetches
    from NX pages; ``corrupted`` walks that met an entry pointing to no table (a page
    table something wrote over); ``oopses`` the faults that ended in ``page_fault_oops``
    (all of them, until user address spaces exist).
    """

    faults: int
    not_present: int
    guard_page: int
    permission: int
    corrupted: int
    oopses: int


class PageFaultHandler:
    """The kernel's page-fault handler (the model; :class:`FaultService` is the actor).

    Args:
        layout: the kernel's address layout (direct map, vmalloc range).
        vmalloc: the vmalloc allocator, which knows the areas and their guard pages.
    """

    def __init__(self, layout: Layout, vmalloc: VmallocAllocator) -> None:
        if not isinstance(layout, Layout):
            raise TypeError(f"layout must be a Layout, got {layout!r}")
        if not isinstance(vmalloc, VmallocAllocator):
            raise TypeError(f"vmalloc must be a VmallocAllocator, got {vmalloc!r}")
        self.layout = layout
        self.vmalloc = vmalloc
        self.faults = self.not_present = self.guard_page = self.permission = 0
        self.corrupted = self.oopses = 0

    def statistics(self) -> FaultStatistics:
        return FaultStatistics(
            faults=self.faults,
            not_present=self.not_present,
            guard_page=self.guard_page,
            permission=self.permission,
            corrupted=self.corrupted,
            oopses=self.oopses,
        )

    def exc_page_fault(self, fault: PageFault, cpu: int) -> SegmentationFault:
        """Handle ``fault`` taken on CPU ``cpu``; return the error the access ends with.

        Raises:
            TypeError: ``fault`` is not a PageFault.
        """
        error = self.explain(fault)
        self.faults += 1
        self.oopses += 1
        if isinstance(error, PageFault):
            if error.reason == GUARD_PAGE:
                self.guard_page += 1
            elif error.reason == NOT_PRESENT:
                self.not_present += 1
            elif error.reason == BEYOND_RAM:
                self.corrupted += 1
            else:
                self.permission += 1
        return error

    def explain(self, fault: PageFault) -> SegmentationFault:
        """What :meth:`exc_page_fault` decides, without counting the fault (for functional
        accesses, which leave no trace)."""
        if not isinstance(fault, PageFault):
            raise TypeError(f"exc_page_fault handles a PageFault, got {fault!r}")
        if fault.reason in (WRITE_TO_READ_ONLY, USER_TO_KERNEL, FETCH_FROM_NX, BEYOND_RAM):
            return fault
        address = fault.address
        if fault.reason == NOT_PRESENT and self.vmalloc.is_guard_page(address):
            area = self.vmalloc.find_vm_area(address)
            assert area is not None  # a guard page belongs to a live area
            return self._refine(
                fault,
                GUARD_PAGE,
                f"{address:#x} is the guard page after the vmalloc area "
                f"{area.start:#x}-{area.end - PAGE_SIZE:#x} ({area.size - PAGE_SIZE} bytes, "
                f"{area.caller or 'vmalloc'}): an access past the end of the buffer",
            )
        return self._refine(fault, NOT_PRESENT, self._where(fault))

    def _where(self, fault: PageFault) -> str:
        """The walker's finding plus where the address lies, in the kernel's map."""
        address, layout = fault.address, self.layout
        if layout.is_vmalloc_addr(address):
            area = self.vmalloc.find_vm_area(address)
            where = (
                "in vmalloc space, outside every live area (freed, or never allocated)"
                if area is None
                else f"in the live vmalloc area {area.start:#x}-{area.end - PAGE_SIZE:#x} "
                f"({area.caller or 'vmalloc'}), which vmalloc mapped: its page table was "
                "overwritten"
            )
        elif layout.is_direct_map_addr(address):
            where = "in the direct map, not mapped"
        elif address < PAGE_SIZE:
            where = "in page 0: a NULL pointer dereference"
        else:
            where = "outside every kernel mapping"
        return f"the {fault.level} entry is not present: {address:#x} is {where}"

    @staticmethod
    def _refine(fault: PageFault, reason: str, detail: str) -> PageFault:
        refined = PageFault(
            fault.address,
            write=fault.write,
            user=fault.user,
            exec_=fault.exec_,
            reason=reason,
            level=fault.level,
            error_code=fault.error_code,
            steps=fault.steps,
            from_tlb=fault.from_tlb,
            done=fault.done,
            address_width=fault.address_width,
            detail=detail,
        )
        refined.index = fault.index
        return refined


@attrs.frozen
class HandlePageFault:
    """CPU ``cpu`` took ``fault``; the reply is the error its access ends with."""

    fault: PageFault
    cpu: int


class FaultService(Actor):
    """The page-fault handler as a kernel service (``"fault"``). A fault costs
    :data:`FAULT_CYCLES` of the faulting CPU's time."""

    def __init__(self, model: PageFaultHandler, **kwargs: object) -> None:
        super().__init__("fault", **kwargs)  # type: ignore[arg-type]
        self.model = model

    @handles(HandlePageFault)
    def _fault(self, msg: HandlePageFault, at: int) -> tuple[SegmentationFault, int]:
        return self.model.exc_page_fault(msg.fault, msg.cpu), at + FAULT_CYCLES

    def statistics(self) -> FaultStatistics:
        return self.model.statistics()
