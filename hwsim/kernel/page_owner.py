"""Who owns a page frame: mm/page_owner.c's question, answered from the allocators' state.

The naive-driver detector of the DMA controller asks it for every page a transfer writes
(:class:`~hwsim.devices.dma.DmaControllerModel`'s ``ownership``): a driver that hands a
device the physical address of a vmalloc buffer's first page with the whole length makes the
device write pages that belong to someone else, and this is how the model knows whose they
are - as KASAN would, instead of silently corrupting them.

An owner is a short string naming the allocation, equal for every page of it:

- ``"vmalloc 0x<start>-0x<end>"``: a page of a vmalloc area;
- ``"slab <cache>"``: a page of a slab of that cache (kmalloc-64, a kmem_cache_create one);
- ``"kmalloc 0x<addr> (order N)"``: a kmalloc buffer above 8 KiB (whole pages);
- ``"page table"``: a page of the kernel page table;
- ``"dma-coherent 0x<dma addr>"``: a buffer from ``dma_alloc_coherent``;
- ``"reserved (<name>)"``: boot reservations (first MiB, kernel image, mem_map);
- ``"alloc_pages pfn 0x<head> (order N)"``: any other allocated block;
- ``None``: a free page (on the free lists or a per-CPU list).

Example:
    >>> import hwsim
    >>> async def main():
    ...     async with hwsim.boot(hwsim.MachineConfig()) as m:
    ...         buf = await m.kernel.vmalloc(8192)
    ...         pfn = await m.kernel.vmalloc_to_pfn(buf)
    ...         return m.page_owner.owner_of(pfn)
    >>> hwsim.run(main)
    'vmalloc 0xffffc90000000000-0xffffc90000002000'
"""

from __future__ import annotations

from ..units import PAGE_SHIFT
from .buddy import BuddyAllocator
from .dma_api import DmaApi
from .kmalloc import Kmalloc
from .pagetable import KernelPageTable
from .slab import SlabAllocator
from .vmalloc import VmallocAllocator


class PageOwner:
    """Answers :meth:`owner_of` from the live allocator models. The reverse map of vmalloc
    pages is rebuilt whenever vmalloc has allocated or freed since it was built."""

    def __init__(
        self,
        buddy: BuddyAllocator,
        slab: SlabAllocator,
        kmalloc: Kmalloc,
        vmalloc: VmallocAllocator,
        pagetable: KernelPageTable,
        dma_api: DmaApi | None = None,
    ) -> None:
        self.buddy = buddy
        self.slab = slab
        self.kmalloc = kmalloc
        self.vmalloc = vmalloc
        self.pagetable = pagetable
        self.dma_api = dma_api
        self._vmap: dict[int, str] = {}
        self._vmap_key: tuple[int, int] | None = None
        self._coherent: dict[int, str] = {}
        self._coherent_key: tuple[int, int] | None = None

    def _vmalloc_owner(self, pfn: int) -> str | None:
        key = (self.vmalloc.allocs, self.vmalloc.frees)
        if key != self._vmap_key:
            self._vmap = {
                p: f"vmalloc {area.start:#x}-{area.end - 4096:#x}"
                for area in self.vmalloc.areas()
                for p in self.vmalloc.area_pfns(area.start)
            }
            self._vmap_key = key
        return self._vmap.get(pfn)

    def _coherent_owner(self, pfn: int) -> str | None:
        api = self.dma_api
        if api is None:
            return None
        key = (api.coherent_allocs, api.coherent_frees)
        if key != self._coherent_key:
            self._coherent = {
                p: f"dma-coherent {m.handle:#x}"
                for m in api.mappings()
                if m.kind == "coherent"
                for phys, n in m.phys_ranges
                for p in range(phys >> PAGE_SHIFT, (phys + n + 4095) >> PAGE_SHIFT)
            }
            self._coherent_key = key
        return self._coherent.get(pfn)

    def owner_of(self, pfn: int) -> str | None:
        """The owner of page frame ``pfn`` (see the module docstring); None if free.

        Raises:
            TypeError, ValueError: not a page frame of this machine.
        """
        if isinstance(pfn, bool) or not isinstance(pfn, int):
            raise TypeError(f"a page frame number is an int, got {pfn!r}")
        buddy = self.buddy
        if not 0 <= pfn < buddy.nr_pages:
            raise ValueError(f"pfn {pfn:#x} is not a page of this machine")
        if self.pagetable.is_pagetable_page(pfn):
            return "page table"
        vmalloc = self._vmalloc_owner(pfn)
        if vmalloc is not None:
            return vmalloc
        layout = self.slab.layout
        slab = self.slab.virt_to_slab(layout.pfn_to_virt(pfn))
        if slab is not None:
            return f"slab {slab.cache.name}"
        head, order = self.buddy.block_of(pfn) or (None, 0)
        if head is not None:
            addr = layout.pfn_to_virt(head)
            if self.kmalloc.allocated_size(addr):
                return f"kmalloc {addr:#x} (order {order})"
        coherent = self._coherent_owner(pfn)
        if coherent is not None:
            return coherent
        for res in buddy.reservations:
            if res.start_pfn <= pfn < res.end_pfn:
                return f"reserved ({res.name})"
        if head is not None:
            return f"alloc_pages pfn {head:#x} (order {order})"
        return None
