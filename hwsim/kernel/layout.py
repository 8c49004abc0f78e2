"""The kernel's virtual address layout and the direct-map arithmetic (arch/x86/include/asm/).

x86_64 (4-level paging): the direct map of all RAM starts at PAGE_OFFSET =
0xffff888000000000; vmalloc space is 0xffffc90000000000..0xffffe8ffffffffff (32 TiB).
i386 (3G/1G split): PAGE_OFFSET = 0xC0000000; the direct map covers low memory only (at
most 896 MiB); VMALLOC_START = high_memory + 8 MiB (an unmapped hole that catches stray
accesses past the direct map) and vmalloc space ends below the fixmap/pkmap area near 4 GiB.
"""

from __future__ import annotations

import attrs

from ..units import PAGE_SHIFT

_MIB = 1 << 20


@attrs.frozen
class Layout:
    """Where things live in the kernel's virtual address space for one machine."""

    arch: str
    page_offset: int
    direct_map_size: int  # bytes of RAM reachable through the direct map
    vmalloc_start: int
    vmalloc_end: int  # exclusive
    ram_size: int

    @property
    def high_memory(self) -> int:
        """The first virtual address past the direct map (``high_memory``)."""
        return self.page_offset + self.direct_map_size

    def is_vmalloc_addr(self, addr: int) -> bool:
        """``is_vmalloc_addr()``: ``VMALLOC_START <= addr < VMALLOC_END``."""
        if isinstance(addr, bool) or not isinstance(addr, int):
            raise TypeError(f"is_vmalloc_addr takes an address (int), got {addr!r}")
        return self.vmalloc_start <= addr < self.vmalloc_end

    def is_direct_map_addr(self, addr: int) -> bool:
        return self.page_offset <= addr < self.high_memory

    def virt_to_phys(self, addr: int) -> int:
        """``virt_to_phys()``/``__pa()``: direct-map addresses only.

        Raises:
            ValueError: ``addr`` is a vmalloc address (walk the page tables instead, with
                vmalloc_to_pfn) or is not in the direct map at all.
        """
        if isinstance(addr, bool) or not isinstance(addr, int):
            raise TypeError(f"virt_to_phys takes an address (int), got {addr!r}")
        if self.is_vmalloc_addr(addr):
            raise ValueError(
                f"virt_to_phys({addr:#x}): a vmalloc address is not in the direct map, so there "
                "is no arithmetic from it to a physical address; use vmalloc_to_pfn(addr), "
                "which walks the kernel page table, page by page"
            )
        if not self.is_direct_map_addr(addr):
            raise ValueError(
                f"virt_to_phys({addr:#x}): not a direct-map address "
                f"({self.page_offset:#x}..{self.high_memory - 1:#x})"
            )
        return addr - self.page_offset

    def phys_to_virt(self, phys: int) -> int:
        """``phys_to_virt()``/``__va()``: the direct-map address of a physical address.

        Raises:
            ValueError: ``phys`` is outside RAM, or (i386) in high memory, which has no
                permanent kernel mapping (kmap it instead).
        """
        if isinstance(phys, bool) or not isinstance(phys, int):
            raise TypeError(f"phys_to_virt takes a physical address (int), got {phys!r}")
        if not 0 <= phys < self.ram_size:
            raise ValueError(f"phys_to_virt({phys:#x}): not a physical address of this machine")
        if phys >= self.direct_map_size:
            raise ValueError(
                f"phys_to_virt({phys:#x}): high memory has no direct mapping on {self.arch}; "
                "map the page with kmap()"
            )
        return self.page_offset + phys

    def pfn_to_virt(self, pfn: int) -> int:
        if isinstance(pfn, bool) or not isinstance(pfn, int):
            raise TypeError(f"a pfn is an int, got {pfn!r}")
        return self.phys_to_virt(pfn << PAGE_SHIFT)


def layout_for(arch: str, ram_size: int) -> Layout:
    """The layout of a machine of ``arch`` with ``ram_size`` bytes of RAM."""
    if arch == "x86_64":
        return Layout(
            arch=arch,
            page_offset=0xFFFF888000000000,
            direct_map_size=ram_size,
            vmalloc_start=0xFFFFC90000000000,
            vmalloc_end=0xFFFFE90000000000,
            ram_size=ram_size,
        )
    if arch == "i386":
        lowmem = min(ram_size, 896 * _MIB)
        page_offset = 0xC0000000
        return Layout(
            arch=arch,
            page_offset=page_offset,
            direct_map_size=lowmem,
            vmalloc_start=page_offset + lowmem + 8 * _MIB,
            # VMALLOC_END = PKMAP_BASE - 2 * PAGE_SIZE; the pkmap/fixmap area takes the top.
            vmalloc_end=0xFF800000 - 2 * (1 << PAGE_SHIFT),
            ram_size=ram_size,
        )
    raise ValueError(f"unknown arch {arch!r}")
