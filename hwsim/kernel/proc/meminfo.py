"""/proc/meminfo (fs/proc/meminfo.c ``meminfo_proc_show``), what it reads, and the kernel
formulas behind its computed lines (MemAvailable, CommitLimit, DirectMap*)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from ...units import PAGE_SHIFT
from .config import ProcConfig
from .watermarks import low_wmark_pages, totalreserve_pages

if TYPE_CHECKING:
    from ..buddy import BuddyAllocator
    from ..layout import Layout

_MIB = 1 << 20
_GIB = 1 << 30


@attrs.frozen(kw_only=True)
class MeminfoSources:
    """What ``meminfo_proc_show()`` reads, in pages unless the name says otherwise.

    Only ``total`` and ``free`` are required; every other counter defaults to 0, as it
    reads on a machine where nothing uses it. ``MemAvailable`` is computed from
    ``totalreserve`` and ``wmark_low`` the way ``si_mem_available()`` does (see
    :func:`si_mem_available`); :func:`meminfo_sources` fills those from the allocator.
    """

    total: int  # totalram_pages(): the managed pages of all zones
    free: int  # NR_FREE_PAGES (pages on per-CPU lists are not free by this count)
    totalreserve: int = 0  # totalreserve_pages
    wmark_low: int = 0  # sum of the zones' low watermarks
    buffers: int = 0
    file_pages: int = 0  # NR_FILE_PAGES (Cached = file_pages - swap_cached - buffers)
    swap_cached: int = 0
    active_anon: int = 0
    inactive_anon: int = 0
    active_file: int = 0
    inactive_file: int = 0
    unevictable: int = 0
    mlocked: int = 0
    high_total: int = 0  # CONFIG_HIGHMEM
    high_free: int = 0
    swap_total: int = 0
    swap_free: int = 0
    zswap: int = 0  # zswap pool size
    zswapped: int = 0  # pages stored in zswap
    dirty: int = 0
    writeback: int = 0
    anon_pages: int = 0
    mapped: int = 0
    shmem: int = 0
    kernel_misc_reclaimable: int = 0
    slab_reclaimable: int = 0
    slab_unreclaimable: int = 0
    kernel_stack_kb: int = 0  # NR_KERNEL_STACK_KB is kept in KiB
    page_tables: int = 0
    sec_page_tables: int = 0
    bounce: int = 0
    writeback_tmp: int = 0
    commit_limit: int | None = None  # None: vm_commit_limit() with overcommit_ratio 50
    committed_as: int = 0
    vmalloc_total_bytes: int = 0xFFFFE8FFFFFFFFFF - 0xFFFFC90000000000  # VMALLOC_TOTAL
    vmalloc_used: int = 0  # vmalloc_nr_pages()
    percpu: int = 0
    hardware_corrupted: int = 0
    anon_huge: int = 0
    shmem_huge: int = 0
    shmem_pmd_mapped: int = 0
    file_huge: int = 0
    file_pmd_mapped: int = 0
    cma_total: int = 0
    cma_free: int = 0
    unaccepted: int = 0
    hugepages_total: int = 0
    hugepages_free: int = 0
    hugepages_rsvd: int = 0
    hugepages_surp: int = 0
    hugepagesize_kb: int = 2048
    direct_map_4k_kb: int = 0
    direct_map_large_kb: int = 0  # DirectMap2M (DirectMap4M on i386 without PAE)
    direct_map_1g_kb: int = 0
    direct_gbpages: bool = True  # DirectMap1G is printed only when gbpages are in use


def si_mem_available(s: MeminfoSources) -> int:
    """``si_mem_available()``: free pages above the reserves, plus the page cache and the
    reclaimable kernel memory that could be freed without swapping (at most half of each,
    and no more than leaves the low watermarks' worth in place)."""
    available = s.free - s.totalreserve
    pagecache = s.active_file + s.inactive_file
    pagecache -= min(pagecache // 2, s.wmark_low)
    available += pagecache
    reclaimable = s.slab_reclaimable + s.kernel_misc_reclaimable
    reclaimable -= min(reclaimable // 2, s.wmark_low)
    available += reclaimable
    return max(available, 0)


def vm_commit_limit(s: MeminfoSources, overcommit_ratio: int = 50) -> int:
    """``vm_commit_limit()``: (RAM - hugetlb pages) * overcommit_ratio / 100 + swap."""
    hugetlb_pages = s.hugepages_total * (s.hugepagesize_kb >> (PAGE_SHIFT - 10))
    return (s.total - hugetlb_pages) * overcommit_ratio // 100 + s.swap_total


def render_meminfo(s: MeminfoSources, config: ProcConfig | None = None) -> str:
    """/proc/meminfo of Linux 6.8: every line, in the kernel's order.

    ``show_val_kb()`` writes the label (already padded, "MemTotal:       ") then the value
    in kB right-aligned in 8 columns (wider numbers just run on) and " kB".
    """
    config = config or ProcConfig()
    out: list[str] = []

    def kb(label: str, pages: int) -> None:
        out.append(f"{label}{pages << (PAGE_SHIFT - 10):8d} kB\n")

    cached = max(s.file_pages - s.swap_cached - s.buffers, 0)
    kb("MemTotal:       ", s.total)
    kb("MemFree:        ", s.free)
    kb("MemAvailable:   ", si_mem_available(s))
    kb("Buffers:        ", s.buffers)
    kb("Cached:         ", cached)
    kb("SwapCached:     ", s.swap_cached)
    kb("Active:         ", s.active_anon + s.active_file)
    kb("Inactive:       ", s.inactive_anon + s.inactive_file)
    kb("Active(anon):   ", s.active_anon)
    kb("Inactive(anon): ", s.inactive_anon)
    kb("Active(file):   ", s.active_file)
    kb("Inactive(file): ", s.inactive_file)
    kb("Unevictable:    ", s.unevictable)
    kb("Mlocked:        ", s.mlocked)
    if config.highmem:
        kb("HighTotal:      ", s.high_total)
        kb("HighFree:       ", s.high_free)
        kb("LowTotal:       ", s.total - s.high_total)
        kb("LowFree:        ", s.free - s.high_free)
    kb("SwapTotal:      ", s.swap_total)
    kb("SwapFree:       ", s.swap_free)
    if config.zswap:
        kb("Zswap:          ", s.zswap)
        kb("Zswapped:       ", s.zswapped)
    kb("Dirty:          ", s.dirty)
    kb("Writeback:      ", s.writeback)
    kb("AnonPages:      ", s.anon_pages)
    kb("Mapped:         ", s.mapped)
    kb("Shmem:          ", s.shmem)
    kb("KReclaimable:   ", s.slab_reclaimable + s.kernel_misc_reclaimable)
    kb("Slab:           ", s.slab_reclaimable + s.slab_unreclaimable)
    kb("SReclaimable:   ", s.slab_reclaimable)
    kb("SUnreclaim:     ", s.slab_unreclaimable)
    out.append(f"KernelStack:    {s.kernel_stack_kb:8d} kB\n")
    kb("PageTables:     ", s.page_tables)
    kb("SecPageTables:  ", s.sec_page_tables)
    kb("NFS_Unstable:   ", 0)
    kb("Bounce:         ", s.bounce)
    kb("WritebackTmp:   ", s.writeback_tmp)
    kb("CommitLimit:    ", vm_commit_limit(s) if s.commit_limit is None else s.commit_limit)
    kb("Committed_AS:   ", s.committed_as)
    out.append(f"VmallocTotal:   {s.vmalloc_total_bytes >> 10:8d} kB\n")
    kb("VmallocUsed:    ", s.vmalloc_used)
    kb("VmallocChunk:   ", 0)
    kb("Percpu:         ", s.percpu)
    if config.memory_failure:
        out.append(f"HardwareCorrupted: {s.hardware_corrupted << (PAGE_SHIFT - 10):5d} kB\n")
    if config.transparent_hugepage:
        kb("AnonHugePages:  ", s.anon_huge)
        kb("ShmemHugePages: ", s.shmem_huge)
        kb("ShmemPmdMapped: ", s.shmem_pmd_mapped)
        kb("FileHugePages:  ", s.file_huge)
        kb("FilePmdMapped:  ", s.file_pmd_mapped)
    if config.cma:
        kb("CmaTotal:       ", s.cma_total)
        kb("CmaFree:        ", s.cma_free)
    if config.unaccepted_memory:
        kb("Unaccepted:     ", s.unaccepted)
    if config.hugetlb_page:
        # hugetlb_report_meminfo(): the default hstate, then all hstates' bytes.
        out.append(
            f"HugePages_Total:   {s.hugepages_total:5d}\n"
            f"HugePages_Free:    {s.hugepages_free:5d}\n"
            f"HugePages_Rsvd:    {s.hugepages_rsvd:5d}\n"
            f"HugePages_Surp:    {s.hugepages_surp:5d}\n"
            f"Hugepagesize:   {s.hugepagesize_kb:8d} kB\n"
            f"Hugetlb:        {s.hugepages_total * s.hugepagesize_kb:8d} kB\n"
        )
    # arch_report_meminfo() (arch/x86/mm/pat/set_memory.c)
    out.append(f"DirectMap4k:    {s.direct_map_4k_kb:8d} kB\n")
    large = "2M" if config.arch == "x86_64" or config.x86_pae else "4M"
    out.append(f"DirectMap{large}:    {s.direct_map_large_kb:8d} kB\n")
    if config.arch == "x86_64" and s.direct_gbpages:
        out.append(f"DirectMap1G:    {s.direct_map_1g_kb:8d} kB\n")
    return "".join(out)


def direct_map_kb(ram_bytes: int, arch: str = "x86_64") -> tuple[int, int, int]:
    """(4k, large, 1G) kB of the kernel's direct map, an approximation of what x86 builds.

    The first 2 MiB use 4 KiB pages (the BIOS/ISA area and fixed-range MTRRs split it), whole
    GiBs above the first use 1 GiB pages on x86_64, the rest 2 MiB pages (4 MiB without PAE);
    a tail that is not a whole large page falls back to 4 KiB pages. i386 maps low memory only.
    """
    top = ram_bytes if arch == "x86_64" else min(ram_bytes, 896 * _MIB)
    small = min(top, 2 * _MIB)
    gig = max(0, top // _GIB - 1) * _GIB if arch == "x86_64" else 0
    rest = top - small - gig
    large = rest // (2 * _MIB) * (2 * _MIB)
    small += rest - large
    return small >> 10, large >> 10, gig >> 10


def vmalloc_total_bytes(layout: Layout) -> int:
    """``VMALLOC_TOTAL``: x86_64's VMALLOC_END is the last byte (0xffffe8ffffffffff), so the
    kernel's total is one byte short of 32 TiB; i386's VMALLOC_END is exclusive."""
    if layout.arch == "x86_64":
        return layout.vmalloc_end - 1 - layout.vmalloc_start
    return layout.vmalloc_end - layout.vmalloc_start


def meminfo_sources(
    buddy: BuddyAllocator,
    config: ProcConfig | None = None,
    *,
    layout: Layout | None = None,
    **counters: int,
) -> MeminfoSources:
    """The :class:`MeminfoSources` the page allocator can answer, plus ``counters``.

    Fills MemTotal/MemFree, the reserves behind MemAvailable, HighTotal/HighFree, VmallocTotal
    (from ``layout``) and the direct map; any other field can be given by name
    (``slab_reclaimable=...``, ``vmalloc_used=...``).
    """
    config = config or ProcConfig.for_arch(buddy.arch)
    highmem = [z for z in buddy.zones if z.name == "HighMem"]
    small, large, gig = direct_map_kb(buddy.nr_pages << PAGE_SHIFT, buddy.arch)
    fields: dict[str, int] = {
        "total": buddy.managed_pages(),
        "free": buddy.nr_free_pages(),
        "totalreserve": totalreserve_pages(buddy),
        "wmark_low": low_wmark_pages(buddy, config),
        "high_total": sum(z.managed_pages for z in highmem) if config.highmem else 0,
        "high_free": sum(z.free_pages for z in highmem) if config.highmem else 0,
        "direct_map_4k_kb": small,
        "direct_map_large_kb": large,
        "direct_map_1g_kb": gig,
    }
    if layout is not None:
        fields["vmalloc_total_bytes"] = vmalloc_total_bytes(layout)
    fields.update(counters)
    return MeminfoSources(**fields)  # type: ignore[arg-type]
