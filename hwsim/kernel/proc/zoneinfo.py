"""/proc/zoneinfo (mm/vmstat.c ``zoneinfo_show_print``) and the counter names it prints."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ...units import PAGE_SHIFT
from .config import ProcConfig
from .watermarks import _kernel_zones, _protection, _watermarks

if TYPE_CHECKING:
    from ..buddy import BuddyAllocator


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


def calculate_normal_threshold(managed_pages: int, nr_cpus: int) -> int:
    """``calculate_normal_threshold()``: the per-CPU vmstat threshold zoneinfo prints."""
    mem = managed_pages >> (27 - PAGE_SHIFT)  # memory in 128 MiB units
    return min(125, 2 * nr_cpus.bit_length() * (1 + mem.bit_length()))


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
