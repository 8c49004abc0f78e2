"""The kernel build whose /proc is rendered: Linux 6.8 and the CONFIG_ options that change
the files (see the package docstring for which kernel and why)."""

from __future__ import annotations

import attrs

KERNEL_VERSION = "6.8"


@attrs.frozen(kw_only=True)
class ProcConfig:
    """The kernel build whose /proc is rendered: the CONFIG_ options that change the files.

    Defaults are Ubuntu 24.04's generic amd64 kernel (6.8). See :meth:`for_arch` for i386.
    """

    arch: str = attrs.field(default="x86_64", validator=attrs.validators.in_(("x86_64", "i386")))
    numa: bool = True  # CONFIG_NUMA: numa_* zone counters, " N0=" in vmallocinfo
    cma: bool = False  # CONFIG_CMA: "CMA" migratetype, CmaTotal/CmaFree
    swap: bool = True  # CONFIG_SWAP: nr_swapcached
    zswap: bool = True  # CONFIG_ZSWAP: Zswap/Zswapped
    zsmalloc: bool = True  # CONFIG_ZSMALLOC: nr_zspages
    numa_balancing: bool = True  # CONFIG_NUMA_BALANCING: pgpromote_* node counters
    unaccepted_memory: bool = True  # CONFIG_UNACCEPTED_MEMORY: nr_unaccepted, Unaccepted
    memory_failure: bool = True  # CONFIG_MEMORY_FAILURE: HardwareCorrupted
    transparent_hugepage: bool = True  # CONFIG_TRANSPARENT_HUGEPAGE: *HugePages, *PmdMapped
    hugetlb_page: bool = True  # CONFIG_HUGETLB_PAGE: HugePages_*, Hugepagesize, Hugetlb
    memory_isolation: bool = True  # CONFIG_MEMORY_ISOLATION: "Isolate" migratetype
    zone_device: bool = True  # CONFIG_ZONE_DEVICE: the "Device" zone
    highmem: bool = False  # CONFIG_HIGHMEM: HighTotal/HighFree/LowTotal/LowFree, "HighMem" zone
    x86_pae: bool = False  # CONFIG_X86_PAE (i386): 64-bit phys_addr_t, 2 MiB large pages

    @classmethod
    def for_arch(cls, arch: str, *, cma: bool = False) -> ProcConfig:
        """The default build for ``arch``: Ubuntu 24.04 amd64, or a 32-bit PAE HIGHMEM build
        (as Debian's 686-pae flavour) without NUMA, ZONE_DEVICE or unaccepted memory."""
        if arch == "i386":
            return cls(
                arch="i386",
                cma=cma,
                numa=False,
                numa_balancing=False,
                unaccepted_memory=False,
                zone_device=False,
                highmem=True,
                x86_pae=True,
            )
        return cls(arch=arch, cma=cma)

    @property
    def zone_names(self) -> tuple[str, ...]:
        """Every zone of the node, in ``enum zone_type`` order (zoneinfo prints them all)."""
        if self.arch == "i386":
            return ("DMA", "Normal", "HighMem", "Movable")
        return ("DMA", "DMA32", "Normal", "Movable", *(("Device",) if self.zone_device else ()))

    @property
    def migratetype_names(self) -> tuple[str, ...]:
        """``migratetype_names[]`` (mm/page_alloc.c)."""
        names = ["Unmovable", "Movable", "Reclaimable", "HighAtomic"]
        if self.cma:
            names.append("CMA")
        if self.memory_isolation:
            names.append("Isolate")
        return tuple(names)

    @property
    def pointer_digits(self) -> int:
        """Hex digits of a kernel pointer printed by ``%pK``: 2 * sizeof(void *)."""
        return 16 if self.arch == "x86_64" else 8

    @property
    def phys_addr_digits(self) -> int:
        """Hex digits of ``%pa``: 2 * sizeof(phys_addr_t) (64-bit with PAE)."""
        return 16 if self.arch == "x86_64" or self.x86_pae else 8
