"""The memory-management files of /proc, byte for byte as Linux 6.8 prints them on x86.

Each file is a pure function from plain data to the kernel's exact text, so it can be tested
without the allocators that will feed it:

================  =========================================  ==================================
file              kernel source (v6.8)                       renderer
================  =========================================  ==================================
buddyinfo         mm/vmstat.c ``frag_show_print``            :func:`render_buddyinfo`
pagetypeinfo      mm/vmstat.c ``pagetypeinfo_show``          :func:`render_pagetypeinfo`
zoneinfo          mm/vmstat.c ``zoneinfo_show_print``        :func:`render_zoneinfo`
slabinfo          mm/slab_common.c ``slab_show``             :func:`render_slabinfo`
vmallocinfo       mm/vmalloc.c ``s_show``                    :func:`render_vmallocinfo`
meminfo           fs/proc/meminfo.c ``meminfo_proc_show``    :func:`render_meminfo`
================  =========================================  ==================================

Which kernel. Linux 6.8, the kernel of Ubuntu 24.04 LTS, built with Ubuntu's generic amd64
configuration (``debian.master/config/annotations``): CONFIG_NUMA, CONFIG_SWAP, CONFIG_ZSWAP,
CONFIG_ZSMALLOC, CONFIG_NUMA_BALANCING, CONFIG_UNACCEPTED_MEMORY, CONFIG_MEMORY_FAILURE,
CONFIG_TRANSPARENT_HUGEPAGE, CONFIG_HUGETLB_PAGE, CONFIG_MEMORY_ISOLATION and CONFIG_ZONE_DEVICE
are set; CONFIG_CMA is *not* (Ubuntu turns it off on amd64, LP: #1803206), so by default there is
no CMA migratetype column and no CmaTotal/CmaFree line. A machine booted with a CMA area runs a
CONFIG_CMA=y kernel: ``ProcConfig(cma=True)`` prints what such a kernel prints. The i386 variant
(:meth:`ProcConfig.for_arch`) is a 32-bit PAE build with HIGHMEM and without NUMA. Version
details that matter: 6.8 prints ``promo`` (v6.1+) but not ``nr_free_pages_blocks`` (v6.15+),
nor the pageset ``high_min``/``high_max`` lines (v6.13+), and its vmallocinfo has no ``sparse``
kind (v6.9+).

What the model cannot supply yet is printed as zero, as a kernel would print an idle counter:
the per-node statistics of zoneinfo default to zero unless given, NUMA hit/miss counters are
zero, ``boost`` is zero (no watermark boosting) and ``node_unreclaimable`` is 0.

Use :class:`Proc` to serve the files by name; the lead wires the slab, vmalloc and meminfo
sources in ``machine.py``::

    >>> from hwsim.kernel.buddy import BuddyAllocator
    >>> proc = Proc.for_buddy(BuddyAllocator(nr_pages=16384))      # 64 MiB
    >>> proc.read("buddyinfo").splitlines()[1].split()
    ['Node', '0,', 'zone', 'DMA32', '0', '0', '0', '0', '0', '0', '0', '0', '1', '1', '10']
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from ..units import PAGE_SHIFT, PAGE_SIZE
from .slab import SlabInfo
from .zones import NR_PAGE_ORDERS, PAGEBLOCK_NR_PAGES, PAGEBLOCK_ORDER, Zone

if TYPE_CHECKING:
    from .buddy import BuddyAllocator
    from .layout import Layout

KERNEL_VERSION = "6.8"

# ----------------------------------------------------------------------------- configuration


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


def _zone_stat_names(config: ProcConfig) -> tuple[str, ...]:
    """``enum zone_stat_item`` names (vmstat_text[]), v6.8."""
    return (
        "nr_free_pages",
        "nr_zone_inactive_anon",
        "nr_zone_active_anon",
        "nr_zone_inactive_file",
        "nr_zone_active_file",
        "nr_zone_unevictable",
        "nr_zone_write_pending",
        "nr_mlock",
        "nr_bounce",
        *(("nr_zspages",) if config.zsmalloc else ()),
        "nr_free_cma",
        *(("nr_unaccepted",) if config.unaccepted_memory else ()),
    )


NUMA_STAT_NAMES = (
    "numa_hit",
    "numa_miss",
    "numa_foreign",
    "numa_interleave",
    "numa_local",
    "numa_other",
)


def node_stat_names(config: ProcConfig) -> tuple[str, ...]:
    """``enum node_stat_item`` names (vmstat_text[]), v6.8: the zoneinfo "per-node stats".

    (pgdemote_* became node counters only in 6.9; nr_iommu_pages arrived in 6.11.)
    """
    return (
        "nr_inactive_anon",
        "nr_active_anon",
        "nr_inactive_file",
        "nr_active_file",
        "nr_unevictable",
        "nr_slab_reclaimable",
        "nr_slab_unreclaimable",
        "nr_isolated_anon",
        "nr_isolated_file",
        "workingset_nodes",
        "workingset_refault_anon",
        "workingset_refault_file",
        "workingset_activate_anon",
        "workingset_activate_file",
        "workingset_restore_anon",
        "workingset_restore_file",
        "workingset_nodereclaim",
        "nr_anon_pages",
        "nr_mapped",
        "nr_file_pages",
        "nr_dirty",
        "nr_writeback",
        "nr_writeback_temp",
        "nr_shmem",
        "nr_shmem_hugepages",
        "nr_shmem_pmdmapped",
        "nr_file_hugepages",
        "nr_file_pmdmapped",
        "nr_anon_transparent_hugepages",
        "nr_vmscan_write",
        "nr_vmscan_immediate_reclaim",
        "nr_dirtied",
        "nr_written",
        "nr_throttled_written",
        "nr_kernel_misc_reclaimable",
        "nr_foll_pin_acquired",
        "nr_foll_pin_released",
        "nr_kernel_stack",
        "nr_page_table_pages",
        "nr_sec_page_table_pages",
        *(("nr_swapcached",) if config.swap else ()),
        *(("pgpromote_success", "pgpromote_candidate") if config.numa_balancing else ()),
    )


# ----------------------------------------------------------------------------- zones


@attrs.frozen
class _KernelZone:
    """One entry of ``pgdat->node_zones[]``: a modelled zone, or an empty one the model lacks."""

    name: str
    zone: Zone | None  # None: ZONE_MOVABLE/ZONE_DEVICE, always empty in hwsim


def _kernel_zones(buddy: BuddyAllocator, config: ProcConfig) -> list[_KernelZone]:
    by_name = {z.name: z for z in buddy.zones}
    return [_KernelZone(name, by_name.get(name)) for name in config.zone_names]


def _watermarks(kz: _KernelZone) -> tuple[int, int, int, int]:
    """(min, low, high, promo). ``promo = high + tmp`` where ``tmp = high - low``."""
    if kz.zone is None:
        # __setup_per_zone_wmarks() also runs for empty zones: ZONE_MOVABLE's min is clamped
        # to SWAP_CLUSTER_MAX (32) and its distances are 0; ZONE_DEVICE's are all 0.
        value = 32 if kz.name == "Movable" else 0
        return value, value, value, value
    wmin, low, high = kz.zone.watermark
    return wmin, low, high, high + (high - low)


def _protection(kzones: list[_KernelZone], i: int) -> list[int]:
    """``zone->lowmem_reserve[]`` over the kernel's zone list (zoneinfo "protection")."""
    zone = kzones[i].zone
    out = [0] * len(kzones)
    if zone is None:
        return out
    value = 0
    for j in range(i + 1, len(kzones)):
        upper = kzones[j].zone
        if upper is not None:
            value = zone.lowmem_reserve[upper.index]
        # an empty zone the model lacks adds no managed pages: the reserve carries over
        out[j] = value
    return out


def calculate_normal_threshold(managed_pages: int, nr_cpus: int) -> int:
    """``calculate_normal_threshold()``: the per-CPU vmstat threshold zoneinfo prints."""
    mem = managed_pages >> (27 - PAGE_SHIFT)  # memory in 128 MiB units
    return min(125, 2 * nr_cpus.bit_length() * (1 + mem.bit_length()))


def totalreserve_pages(buddy: BuddyAllocator) -> int:
    """``calculate_totalreserve_pages()``: per zone, the largest lowmem_reserve plus the high
    watermark, capped at the zone's managed pages."""
    total = 0
    for zone in buddy.zones:
        reserve = max(zone.lowmem_reserve, default=0) + zone.watermark[2]
        total += min(reserve, zone.managed_pages)
    return total


def low_wmark_pages(buddy: BuddyAllocator, config: ProcConfig | None = None) -> int:
    """The sum of every zone's low watermark, as ``si_mem_available()`` adds it up
    (``for_each_zone`` includes empty zones: an empty ZONE_MOVABLE contributes 32)."""
    config = config or ProcConfig.for_arch(buddy.arch)
    return sum(_watermarks(kz)[1] for kz in _kernel_zones(buddy, config))


def render_buddyinfo(zones: Iterable[Zone]) -> str:
    """/proc/buddyinfo: free blocks per order for each populated zone of node 0.

    ``"Node %d, zone %8s "`` then ``"%6lu "`` for each of the 11 orders, then a newline.

    Args:
        zones: the zones of node 0 in zone order (``BuddyAllocator.zones``); empty zones are
            skipped, as ``walk_zones_in_node(..., assert_populated=true, ...)`` does.
    """
    lines = []
    for zone in zones:
        if not zone.populated:
            continue
        counts = "".join(f"{n:6d} " for n in zone.nr_free)
        lines.append(f"Node 0, zone {zone.name:>8s} {counts}\n")
    return "".join(lines)


def render_pagetypeinfo(buddy: BuddyAllocator, config: ProcConfig | None = None) -> str:
    """/proc/pagetypeinfo: free blocks per migratetype and order, and pageblocks per type.

    Migratetypes the model lacks (HighAtomic, CMA, Isolate) print zeros; the "Number of mixed
    blocks" table needs CONFIG_PAGE_OWNER with page_owner=on and is not printed, as on a
    default boot.
    """
    config = config or ProcConfig.for_arch(buddy.arch)
    names = config.migratetype_names
    zones = [z for z in buddy.zones if z.populated]
    out = [
        f"Page block order: {PAGEBLOCK_ORDER}\n",
        f"Pages per block:  {PAGEBLOCK_NR_PAGES}\n",
        "\n",
        f"{'Free pages count per migrate type at order':<43s} ",
        "".join(f"{order:6d} " for order in range(NR_PAGE_ORDERS)),
        "\n",
    ]
    modelled = len(buddy.zones[0].free_area[0])
    for zone in zones:
        for mt, name in enumerate(names):
            counts = (
                len(zone.free_area[order][mt]) if mt < modelled else 0
                for order in range(NR_PAGE_ORDERS)
            )
            row = "".join(f"{n:6d} " for n in counts)
            out.append(f"Node {0:4d}, zone {zone.name:>8s}, type {name:>12s} {row}\n")
    out.append(f"\n{'Number of blocks type ':<23s}")
    out.append("".join(f"{name:>12s} " for name in names))
    out.append("\n")
    for zone in zones:
        count = [0] * len(names)
        for pfn in range(zone.start_pfn, zone.end_pfn, PAGEBLOCK_NR_PAGES):
            count[buddy.pageblock_mt[pfn >> PAGEBLOCK_ORDER]] += 1
        out.append(f"Node 0, zone {zone.name:>8s} ")
        out.append("".join(f"{n:12d} " for n in count))
        out.append("\n")
    return "".join(out)


def render_zoneinfo(
    buddy: BuddyAllocator,
    config: ProcConfig | None = None,
    *,
    node_stats: Mapping[str, int] | None = None,
    zone_stats: Mapping[str, Mapping[str, int]] | None = None,
) -> str:
    """/proc/zoneinfo: every zone of node 0, populated or not, as ``zoneinfo_show_print``.

    Args:
        buddy: the page allocator (free pages, watermarks, lowmem_reserve, per-CPU lists).
        config: the kernel build (which zones and counters exist).
        node_stats: values of the "per-node stats" counters by name (``nr_slab_reclaimable``,
            ``nr_kernel_stack``, ``nr_page_table_pages``, ...); missing ones print 0. Printed
            under the first populated zone, as the kernel does.
        zone_stats: per zone name, values of zone counters other than ``nr_free_pages``
            (which comes from the allocator); missing ones print 0.
    """
    config = config or ProcConfig.for_arch(buddy.arch)
    node_stats = node_stats or {}
    zone_stats = zone_stats or {}
    kzones = _kernel_zones(buddy, config)
    first_populated = next((kz.name for kz in kzones if kz.zone and kz.zone.populated), None)
    out: list[str] = []
    for i, kz in enumerate(kzones):
        zone = kz.zone
        out.append(f"Node 0, zone {kz.name:>8s}")
        if kz.name == first_populated:
            out.append("\n  per-node stats")
            for name in node_stat_names(config):
                out.append(f"\n      {name:<12s} {node_stats.get(name, 0)}")
        wmin, low, high, promo = _watermarks(kz)
        out.append(
            f"\n  pages free     {zone.free_pages if zone else 0}"
            f"\n        boost    0"
            f"\n        min      {wmin}"
            f"\n        low      {low}"
            f"\n        high     {high}"
            f"\n        promo    {promo}"
            f"\n        spanned  {zone.spanned_pages if zone else 0}"
            f"\n        present  {zone.present_pages if zone else 0}"
            f"\n        managed  {zone.managed_pages if zone else 0}"
            f"\n        cma      0"
        )
        out.append(f"\n        protection: ({', '.join(map(str, _protection(kzones, i)))})")
        if zone is None or not zone.populated:
            out.append("\n")
            continue
        values = dict(zone_stats.get(kz.name, {}))
        values["nr_free_pages"] = zone.free_pages
        for name in _zone_stat_names(config):
            out.append(f"\n      {name:<12s} {values.get(name, 0)}")
        if config.numa:
            for name in NUMA_STAT_NAMES:
                out.append(f"\n      {name:<12s} {values.get(name, 0)}")
        out.append("\n  pagesets")
        threshold = calculate_normal_threshold(zone.managed_pages, len(zone.pcp))
        for cpu, pcp in enumerate(zone.pcp):
            out.append(
                f"\n    cpu: {cpu}"
                f"\n              count: {pcp.count}"
                f"\n              high:  {pcp.high}"
                f"\n              batch: {pcp.batch}"
                f"\n  vm stats threshold: {threshold}"
            )
        out.append(f"\n  node_unreclaimable:  0\n  start_pfn:           {zone.start_pfn}\n")
    return "".join(out)


# ----------------------------------------------------------------------------- slabinfo


# The record /proc/slabinfo prints is the slab allocator's own ``struct slabinfo``.
SlabInfoRow = SlabInfo


SLABINFO_HEADER = (
    "slabinfo - version: 2.1\n"
    "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab>"
    " : tunables <limit> <batchcount> <sharedfactor>"
    " : slabdata <active_slabs> <num_slabs> <sharedavail>\n"
)


def render_slabinfo(rows: Iterable[SlabInfoRow]) -> str:
    """/proc/slabinfo, in the order given.

    Linux walks the ``slab_caches`` list, and ``create_cache()`` adds each new cache with
    ``list_add()``, at the head: the most recently created cache comes first and the boot
    caches (kmalloc-*, then kmem_cache_node, kmem_cache) last. Pass rows in that order, e.g.
    ``reversed(caches_in_creation_order)``. The header is printed with the first cache, so a
    list without caches gives an empty file, as the kernel's ``slab_show`` would.
    """
    lines = [
        f"{r.name:<17s} {r.active_objs:6d} {r.num_objs:6d} {r.objsize:6d} {r.objperslab:4d}"
        f" {r.pagesperslab:4d} : tunables {r.limit:4d} {r.batchcount:4d} {r.sharedfactor:4d}"
        f" : slabdata {r.active_slabs:6d} {r.num_slabs:6d} {r.sharedavail:6d}\n"
        for r in rows
    ]
    return SLABINFO_HEADER + "".join(lines) if lines else ""


# ----------------------------------------------------------------------------- vmallocinfo

# include/linux/vmalloc.h
VM_IOREMAP = 0x00000001
VM_ALLOC = 0x00000002
VM_MAP = 0x00000004
VM_USERMAP = 0x00000008
VM_DMA_COHERENT = 0x00000010
VM_UNINITIALIZED = 0x00000020
VM_NO_GUARD = 0x00000040


@attrs.frozen(kw_only=True)
class VmallocInfoRow:
    """One ``vm_struct`` as /proc/vmallocinfo shows it.

    Attributes:
        addr: first virtual address.
        size: ``vm_struct.size`` in bytes, the guard page included (vmalloc(4096) shows 8192).
        caller: the caller as ``%pS`` prints it (``"some_driver_init+0x1c/0x80 [mod]"``).
        nr_pages: pages mapped (``pages=``; ioremap and vmap areas have none).
        phys_addr: the physical address of an ioremap (``phys=``), 0 for none.
        flags: ``VM_*`` bits: ioremap, vmalloc, vmap, user, dma-coherent.
        vpages: the ``pages[]`` array itself was vmalloc'ed; ``None`` computes it as the
            kernel decides, ``nr_pages * sizeof(struct page *) > PAGE_SIZE``.
        vm_map_ram: a ``vm_map_ram()`` area (no vm_struct): printed as ``vm_map_ram``.
    """

    addr: int
    size: int
    caller: str | None = None
    nr_pages: int = 0
    phys_addr: int = 0
    flags: int = 0
    vpages: bool | None = None
    vm_map_ram: bool = False


def render_vmallocinfo(
    areas: Iterable[VmallocInfoRow],
    config: ProcConfig | None = None,
    *,
    unpurged: Iterable[tuple[int, int]] = (),
) -> str:
    """/proc/vmallocinfo: the busy vmap areas sorted by address (``vmap_area_list``).

    Addresses print as root sees them with Ubuntu's ``kptr_restrict=1`` (``%pK`` with
    CAP_SYSLOG: the real value, zero-padded to the pointer width). ``unpurged`` lists
    lazily freed ``(start, end)`` ranges that ``show_purge_info()`` prints after the last area.
    """
    config = config or ProcConfig()
    width = config.pointer_digits
    ptr_size = width // 2
    rows = sorted(areas, key=lambda a: a.addr)
    out: list[str] = []
    for a in rows:
        head = f"0x{a.addr:0{width}x}-0x{a.addr + a.size:0{width}x} {a.size:7d}"
        if a.vm_map_ram:
            out.append(f"{head} vm_map_ram\n")
            continue
        parts = [head]
        if a.caller:
            parts.append(f" {a.caller}")
        if a.nr_pages:
            parts.append(f" pages={a.nr_pages}")
        if a.phys_addr:
            parts.append(f" phys=0x{a.phys_addr:0{config.phys_addr_digits}x}")
        for bit, word in (
            (VM_IOREMAP, " ioremap"),
            (VM_ALLOC, " vmalloc"),
            (VM_MAP, " vmap"),
            (VM_USERMAP, " user"),
            (VM_DMA_COHERENT, " dma-coherent"),
        ):
            if a.flags & bit:
                parts.append(word)
        vpages = a.vpages
        if vpages is None:
            vpages = bool(a.flags & VM_ALLOC) and a.nr_pages * ptr_size > PAGE_SIZE
        if vpages:
            parts.append(" vpages")
        if config.numa and a.nr_pages and not a.flags & VM_UNINITIALIZED:
            parts.append(f" N0={a.nr_pages}")  # show_numa_info(): one node
        out.append("".join(parts) + "\n")
    if rows:
        for start, end in unpurged:
            out.append(f"0x{start:0{width}x}-0x{end:0{width}x} {end - start:7d} unpurged vm_area\n")
    return "".join(out)


# ----------------------------------------------------------------------------- meminfo

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


# ----------------------------------------------------------------------------- the directory

Renderer = Callable[[], str]


class Proc:
    """The /proc files of one machine: a name for each renderer, read on demand.

    Args:
        files: file name (as under /proc, ``"meminfo"``) to a function that renders it now.

    Example:
        >>> proc = Proc({"version": lambda: "Linux version 6.8.0-hwsim\\n"})
        >>> proc.read("version")
        'Linux version 6.8.0-hwsim\\n'
        >>> proc.read("/proc/version") == proc.read("version")
        True
    """

    def __init__(self, files: Mapping[str, Renderer] | None = None) -> None:
        self._files: dict[str, Renderer] = {}
        for name, render in (files or {}).items():
            self.register(name, render)

    @classmethod
    def for_buddy(
        cls,
        buddy: BuddyAllocator,
        config: ProcConfig | None = None,
        *,
        slabinfo: Callable[[], Iterable[SlabInfoRow]] | None = None,
        vmallocinfo: Callable[[], Iterable[VmallocInfoRow]] | None = None,
        meminfo: Callable[[], MeminfoSources] | None = None,
        layout: Layout | None = None,
    ) -> Proc:
        """The files of a machine with this page allocator.

        buddyinfo, pagetypeinfo and zoneinfo come from ``buddy``. meminfo comes from
        ``meminfo`` if given, else from the allocator alone (:func:`meminfo_sources`).
        slabinfo and vmallocinfo exist only when their sources are given, each a function
        returning the rows at the time of the read.
        """
        config = config or ProcConfig.for_arch(buddy.arch)
        cfg = config
        files: dict[str, Renderer] = {
            "buddyinfo": lambda: render_buddyinfo(buddy.zones),
            "pagetypeinfo": lambda: render_pagetypeinfo(buddy, cfg),
            "zoneinfo": lambda: render_zoneinfo(buddy, cfg),
        }
        source = meminfo or (lambda: meminfo_sources(buddy, cfg, layout=layout))
        files["meminfo"] = lambda: render_meminfo(source(), cfg)
        if slabinfo is not None:
            slab_rows = slabinfo
            files["slabinfo"] = lambda: render_slabinfo(slab_rows())
        if vmallocinfo is not None:
            vm_rows = vmallocinfo
            files["vmallocinfo"] = lambda: render_vmallocinfo(vm_rows(), cfg)
        return cls(files)

    def register(self, name: str, render: Renderer) -> None:
        """Add (or replace) the file ``name``, rendered by calling ``render()``."""
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"a /proc file name is one path component, got {name!r}")
        self._files[name] = render

    def names(self) -> list[str]:
        """The files there are, sorted as ``ls /proc`` would list them."""
        return sorted(self._files)

    def read(self, name: str) -> str:
        """The text of ``/proc/<name>`` now (``"meminfo"`` or ``"/proc/meminfo"``).

        Raises:
            FileNotFoundError: there is no such file (yet) on this machine.
        """
        key = name.removeprefix("/proc/")
        render = self._files.get(key)
        if render is None:
            raise FileNotFoundError(f"/proc/{key}: No such file or directory")
        return render()

    def dump(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Write every file into ``directory`` (created if missing); return the paths."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in self.names():
            path = root / name
            path.write_bytes(self.read(name).encode())
            paths.append(path)
        return paths


__all__ = [
    "KERNEL_VERSION",
    "NUMA_STAT_NAMES",
    "SLABINFO_HEADER",
    "VM_ALLOC",
    "VM_DMA_COHERENT",
    "VM_IOREMAP",
    "VM_MAP",
    "VM_NO_GUARD",
    "VM_UNINITIALIZED",
    "VM_USERMAP",
    "MeminfoSources",
    "Proc",
    "ProcConfig",
    "SlabInfoRow",
    "VmallocInfoRow",
    "calculate_normal_threshold",
    "direct_map_kb",
    "low_wmark_pages",
    "meminfo_sources",
    "node_stat_names",
    "render_buddyinfo",
    "render_meminfo",
    "render_pagetypeinfo",
    "render_slabinfo",
    "render_vmallocinfo",
    "render_zoneinfo",
    "si_mem_available",
    "totalreserve_pages",
    "vm_commit_limit",
    "vmalloc_total_bytes",
]
