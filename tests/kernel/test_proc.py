"""The /proc renderers (hwsim/kernel/proc.py) against Linux 6.8's formats.

Expected texts are written out by hand from the kernel's format strings (mm/vmstat.c,
mm/slab_common.c, mm/vmalloc.c, fs/proc/meminfo.c), not copied from the renderers' output.
Two further kinds of evidence: the running kernel's own /proc files, re-rendered from their
parsed numbers, must come out byte for byte the same; and procps (free, vmstat -m, slabtop)
must read our files, bind-mounted over /proc in a private mount namespace.
"""

# ruff: noqa: E501 -- expected /proc lines are wider than 100 columns; they stay whole so that
# each reads as one line the kernel prints.

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

import hwsim
from hwsim.kernel.buddy import BuddyAllocator
from hwsim.kernel.gfp import GFP_HIGHUSER_MOVABLE, GFP_KERNEL
from hwsim.kernel.layout import layout_for
from hwsim.kernel.proc import (
    SLABINFO_HEADER,
    VM_ALLOC,
    VM_IOREMAP,
    VM_MAP,
    VM_NO_GUARD,
    VM_USERMAP,
    MeminfoSources,
    Proc,
    ProcConfig,
    SlabInfoRow,
    VmallocInfoRow,
    calculate_normal_threshold,
    direct_map_kb,
    meminfo_sources,
    node_stat_names,
    render_buddyinfo,
    render_meminfo,
    render_pagetypeinfo,
    render_slabinfo,
    render_vmallocinfo,
    render_zoneinfo,
    si_mem_available,
    totalreserve_pages,
    vmalloc_total_bytes,
)
from hwsim.kernel.zones import Zone

MIB = 256  # pages

# ----------------------------------------------------------------------------- buddyinfo


def test_buddyinfo_of_a_fresh_64mib_machine() -> None:
    # Free at boot (see test_zones): DMA = [256, 4096) = 256 (o8) + 512 (o9) + 1024, 2048,
    # 3072 (o10); DMA32 = [5120, 16128) = ten o10 blocks from 5120, 15360 (o9), 15872 (o8).
    # "Node %d, zone %8s " then "%6lu " for orders 0..10: note the trailing space.
    expected = (
        "Node 0, zone      DMA      0      0      0      0      0      0      0      0      1      1      3 \n"
        "Node 0, zone    DMA32      0      0      0      0      0      0      0      0      1      1     10 \n"
    )
    assert render_buddyinfo(BuddyAllocator(64 * MIB).zones) == expected


def test_buddyinfo_skips_empty_zones_and_lets_wide_counts_run_on() -> None:
    dma = Zone(index=0, name="DMA", start_pfn=1, end_pfn=4096, present_pages=3998)
    dma.nr_free = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    empty = Zone(index=1, name="DMA32", start_pfn=4096, end_pfn=4096)
    normal = Zone(index=2, name="Normal", start_pfn=1 << 20, end_pfn=5 << 20, present_pages=4 << 20)
    normal.nr_free = [1234567, 0, 0, 0, 0, 0, 0, 0, 0, 0, 999999]
    assert render_buddyinfo([dma, empty, normal]) == (
        "Node 0, zone      DMA      1      2      3      4      5      6      7      8      9     10     11 \n"
        "Node 0, zone   Normal 1234567      0      0      0      0      0      0      0      0      0 999999 \n"
    )


def test_every_buddyinfo_line_is_99_columns_and_a_newline() -> None:
    text = render_buddyinfo(BuddyAllocator(64 * MIB).zones)
    # "Node 0, zone " (13) + "%8s " (9) + 11 * "%6lu " (77) = 99
    assert [len(line) for line in text.splitlines()] == [99, 99]
    assert text.endswith(" \n")


# ----------------------------------------------------------------------------- pagetypeinfo


def test_pagetypeinfo_of_a_fresh_16mib_machine() -> None:
    # 16 MiB = 8 pageblocks of DMA, all movable at boot; the free blocks are movable:
    # o6 3968, o7 3840, o8 768 and 3584, o9 3072, o10 1024 and 2048.
    # Ubuntu's amd64 build has no CONFIG_CMA: five types, Isolate (MEMORY_ISOLATION) last.
    expected = (
        "Page block order: 9\n"
        "Pages per block:  512\n"
        "\n"
        "Free pages count per migrate type at order       0      1      2      3      4      5      6      7      8      9     10 \n"
        "Node    0, zone      DMA, type    Unmovable      0      0      0      0      0      0      0      0      0      0      0 \n"
        "Node    0, zone      DMA, type      Movable      0      0      0      0      0      0      1      1      2      1      2 \n"
        "Node    0, zone      DMA, type  Reclaimable      0      0      0      0      0      0      0      0      0      0      0 \n"
        "Node    0, zone      DMA, type   HighAtomic      0      0      0      0      0      0      0      0      0      0      0 \n"
        "Node    0, zone      DMA, type      Isolate      0      0      0      0      0      0      0      0      0      0      0 \n"
        "\n"
        "Number of blocks type     Unmovable      Movable  Reclaimable   HighAtomic      Isolate \n"
        "Node 0, zone      DMA            0            8            0            0            0 \n"
    )
    assert render_pagetypeinfo(BuddyAllocator(16 * MIB)) == expected


def test_pagetypeinfo_follows_stolen_pageblocks_and_free_lists() -> None:
    buddy = BuddyAllocator(16 * MIB)
    buddy.alloc_pages(0, GFP_KERNEL)  # steals the o10 block at 1024: pageblocks 2 and 3
    text = render_pagetypeinfo(buddy)
    # 1024 split down to o0: 1025 (o0), 1026 (o1), ... 1536 (o9), all unmovable now.
    assert (
        "Node    0, zone      DMA, type    Unmovable      1      1      1      1      1      1      1      1      1      1      0 \n"
        in text
    )
    assert (
        "Node 0, zone      DMA            2            6            0            0            0 \n"
        in text
    )


def test_pagetypeinfo_of_a_cma_kernel_has_a_cma_column_before_isolate() -> None:
    text = render_pagetypeinfo(BuddyAllocator(16 * MIB), ProcConfig(cma=True))
    assert (
        "Number of blocks type     Unmovable      Movable  Reclaimable   HighAtomic          CMA      Isolate \n"
        in text
    )
    assert "Node    0, zone      DMA, type          CMA      0" in text
    assert (
        "Node 0, zone      DMA            0            8            0            0            0            0 \n"
        in text
    )


# ----------------------------------------------------------------------------- zoneinfo

_EMPTY_ZONE = (
    "  pages free     0\n"
    "        boost    0\n"
    "        min      0\n"
    "        low      0\n"
    "        high     0\n"
    "        promo    0\n"
    "        spanned  0\n"
    "        present  0\n"
    "        managed  0\n"
    "        cma      0\n"
    "        protection: (0, 0, 0, 0, 0)\n"
)


def test_zoneinfo_of_a_fresh_16mib_one_cpu_machine() -> None:
    # DMA: 3264 free = managed; min 114, low 142, high 170 (test_zones), promo = high + 28.
    # Per-node stats come first, under the first populated zone; "%-12s %lu" pads short
    # names to 12 columns. pagesets: high = low / 1 cpu = 142, batch 1. vm stats threshold:
    # 2 * fls(1 cpu) * (1 + fls(3264 >> 15 = 0)) = 2. Then every other zone of the node,
    # empty: DMA32, Normal, Movable (min clamped to 32), Device.
    expected = (
        "Node 0, zone      DMA\n"
        "  per-node stats\n"
        "      nr_inactive_anon 0\n"
        "      nr_active_anon 0\n"
        "      nr_inactive_file 0\n"
        "      nr_active_file 0\n"
        "      nr_unevictable 0\n"
        "      nr_slab_reclaimable 0\n"
        "      nr_slab_unreclaimable 0\n"
        "      nr_isolated_anon 0\n"
        "      nr_isolated_file 0\n"
        "      workingset_nodes 0\n"
        "      workingset_refault_anon 0\n"
        "      workingset_refault_file 0\n"
        "      workingset_activate_anon 0\n"
        "      workingset_activate_file 0\n"
        "      workingset_restore_anon 0\n"
        "      workingset_restore_file 0\n"
        "      workingset_nodereclaim 0\n"
        "      nr_anon_pages 0\n"
        "      nr_mapped    0\n"
        "      nr_file_pages 0\n"
        "      nr_dirty     0\n"
        "      nr_writeback 0\n"
        "      nr_writeback_temp 0\n"
        "      nr_shmem     0\n"
        "      nr_shmem_hugepages 0\n"
        "      nr_shmem_pmdmapped 0\n"
        "      nr_file_hugepages 0\n"
        "      nr_file_pmdmapped 0\n"
        "      nr_anon_transparent_hugepages 0\n"
        "      nr_vmscan_write 0\n"
        "      nr_vmscan_immediate_reclaim 0\n"
        "      nr_dirtied   0\n"
        "      nr_written   0\n"
        "      nr_throttled_written 0\n"
        "      nr_kernel_misc_reclaimable 0\n"
        "      nr_foll_pin_acquired 0\n"
        "      nr_foll_pin_released 0\n"
        "      nr_kernel_stack 7\n"
        "      nr_page_table_pages 0\n"
        "      nr_sec_page_table_pages 0\n"
        "      nr_swapcached 0\n"
        "      pgpromote_success 0\n"
        "      pgpromote_candidate 0\n"
        "  pages free     3264\n"
        "        boost    0\n"
        "        min      114\n"
        "        low      142\n"
        "        high     170\n"
        "        promo    198\n"
        "        spanned  4096\n"
        "        present  4096\n"
        "        managed  3264\n"
        "        cma      0\n"
        "        protection: (0, 0, 0, 0, 0)\n"
        "      nr_free_pages 3264\n"
        "      nr_zone_inactive_anon 0\n"
        "      nr_zone_active_anon 0\n"
        "      nr_zone_inactive_file 0\n"
        "      nr_zone_active_file 0\n"
        "      nr_zone_unevictable 0\n"
        "      nr_zone_write_pending 0\n"
        "      nr_mlock     3\n"
        "      nr_bounce    0\n"
        "      nr_zspages   0\n"
        "      nr_free_cma  0\n"
        "      nr_unaccepted 0\n"
        "      numa_hit     0\n"
        "      numa_miss    0\n"
        "      numa_foreign 0\n"
        "      numa_interleave 0\n"
        "      numa_local   0\n"
        "      numa_other   0\n"
        "  pagesets\n"
        "    cpu: 0\n"
        "              count: 0\n"
        "              high:  142\n"
        "              batch: 1\n"
        "  vm stats threshold: 2\n"
        "  node_unreclaimable:  0\n"
        "  start_pfn:           0\n"
        "Node 0, zone    DMA32\n"
        + _EMPTY_ZONE
        + "Node 0, zone   Normal\n"
        + _EMPTY_ZONE
        + "Node 0, zone  Movable\n"
        "  pages free     0\n"
        "        boost    0\n"
        "        min      32\n"
        "        low      32\n"
        "        high     32\n"
        "        promo    32\n"
        "        spanned  0\n"
        "        present  0\n"
        "        managed  0\n"
        "        cma      0\n"
        "        protection: (0, 0, 0, 0, 0)\n"
        "Node 0, zone   Device\n" + _EMPTY_ZONE
    )
    got = render_zoneinfo(
        BuddyAllocator(16 * MIB),
        node_stats={"nr_kernel_stack": 7},
        zone_stats={"DMA": {"nr_mlock": 3, "nr_free_pages": 999}},  # the allocator's count wins
    )
    assert got == expected


def test_zoneinfo_shows_lowmem_protection_and_every_cpus_pageset() -> None:
    buddy = BuddyAllocator(64 * MIB, nr_cpus=2)
    page = buddy.alloc_pages(0, GFP_HIGHUSER_MOVABLE, cpu=0)
    buddy.free_pages(page, 0, cpu=1)
    text = render_zoneinfo(buddy)
    # DMA's lowmem_reserve against DMA32 and above: 11008 / 256 = 43 (test_zones).
    assert "Node 0, zone      DMA\n  per-node stats\n" in text
    assert "        protection: (0, 43, 43, 43, 43)\n      nr_free_pages 3840\n" in text
    # DMA32: 2 CPUs -> high = 225 / 2 = 112; threshold 2 * fls(2) * (1 + fls(0)) = 4.
    assert (
        "  pagesets\n"
        "    cpu: 0\n"
        "              count: 0\n"
        "              high:  112\n"
        "              batch: 1\n"
        "  vm stats threshold: 4\n"
        "    cpu: 1\n"
        "              count: 1\n"
        "              high:  112\n"
        "              batch: 1\n"
        "  vm stats threshold: 4\n"
        "  node_unreclaimable:  0\n"
        "  start_pfn:           4096\n"
        "Node 0, zone   Normal\n"
    ) in text
    # pcp pages are not free pages: 11008 minus the page split off and the one on cpu 1's list
    assert "Node 0, zone    DMA32\n  pages free     11007\n" in text
    assert text.count("per-node stats") == 1


def test_i386_zoneinfo_lists_dma_normal_highmem_movable() -> None:
    buddy = BuddyAllocator(1024 * MIB, arch="i386")
    text = render_zoneinfo(buddy)
    headers = re.findall(r"^Node 0, zone +(\S+)$", text, flags=re.M)
    assert headers == ["DMA", "Normal", "HighMem", "Movable"]
    # DMA: Normal / 256 = 860, (Normal + HighMem) / 256 = 988; Movable adds nothing.
    assert "        protection: (0, 860, 988, 988)\n" in text
    # Normal: HighMem / 32 = 1024.
    assert "        protection: (0, 0, 1024, 1024)\n" in text
    assert "numa_hit" not in text  # no CONFIG_NUMA in this build
    assert "nr_unaccepted" not in text


def test_the_vmstat_threshold_scales_with_cpus_and_zone_size() -> None:
    # calculate_normal_threshold(): 2 * fls(cpus) * (1 + fls(managed >> 15)), at most 125.
    assert calculate_normal_threshold(3840, 2) == 4
    assert calculate_normal_threshold(772918, 2) == 24  # 772918 >> 15 = 23, fls = 5
    assert calculate_normal_threshold(1 << 24, 64) == 125


def test_node_stat_names_follow_the_config() -> None:
    names = node_stat_names(ProcConfig())
    assert names[:2] == ("nr_inactive_anon", "nr_active_anon")
    assert names[-3:] == ("nr_swapcached", "pgpromote_success", "pgpromote_candidate")
    assert len(names) == 43
    assert "pgpromote_success" not in node_stat_names(ProcConfig.for_arch("i386"))


# ----------------------------------------------------------------------------- slabinfo


def test_slabinfo_header_is_the_two_version_2_1_lines() -> None:
    assert SLABINFO_HEADER == (
        "slabinfo - version: 2.1\n"
        "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> "
        ": tunables <limit> <batchcount> <sharedfactor> "
        ": slabdata <active_slabs> <num_slabs> <sharedavail>\n"
    )


def test_slabinfo_rows_use_the_cache_show_widths_in_the_given_order() -> None:
    rows = [
        SlabInfoRow(
            name="btrfs_delayed_node",
            active_objs=0,
            num_objs=0,
            objsize=312,
            objperslab=13,
            pagesperslab=1,
            active_slabs=0,
            num_slabs=0,
        ),
        SlabInfoRow(
            name="kmalloc-8",
            active_objs=2048,
            num_objs=2048,
            objsize=8,
            objperslab=512,
            pagesperslab=1,
            active_slabs=4,
            num_slabs=4,
        ),
        SlabInfoRow(
            name="kmem_cache",
            active_objs=240,
            num_objs=1234567,
            objsize=256,
            objperslab=16,
            pagesperslab=1,
            active_slabs=15,
            num_slabs=15,
        ),
    ]
    # "%-17s %6lu %6lu %6u %4u %4d : tunables %4u %4u %4u : slabdata %6lu %6lu %6lu"
    assert render_slabinfo(rows) == SLABINFO_HEADER + (
        "btrfs_delayed_node      0      0    312   13    1 : tunables    0    0    0 : slabdata      0      0      0\n"
        "kmalloc-8           2048   2048      8  512    1 : tunables    0    0    0 : slabdata      4      4      0\n"
        "kmem_cache           240 1234567    256   16    1 : tunables    0    0    0 : slabdata     15     15      0\n"
    )


def test_slabinfo_without_caches_is_empty_as_slab_show_prints_the_header_with_the_first() -> None:
    assert render_slabinfo([]) == ""


# ----------------------------------------------------------------------------- vmallocinfo


def test_vmallocinfo_lines_in_s_show_order() -> None:
    base = 0xFFFFC90000000000
    areas = [
        VmallocInfoRow(
            addr=base + 0x4000,
            size=8192,
            caller="acpi_os_map_iomem+0x1bc/0x1e0",
            phys_addr=0xA0000,
            flags=VM_IOREMAP,
        ),
        VmallocInfoRow(
            addr=base,
            size=8192,
            caller="some_driver_init+0x1c/0x80",
            nr_pages=1,
            flags=VM_ALLOC,
        ),
        VmallocInfoRow(
            addr=base + 0x8000,
            size=20480,
            caller="irq_init_percpu_irqstack+0xca/0x100",
            flags=VM_MAP,
        ),
        VmallocInfoRow(
            addr=base + 0x400000,
            size=(1024 + 1) * 4096,
            caller="alloc_large_system_hash+0x1a3/0x2c0",
            nr_pages=1024,
            flags=VM_ALLOC | VM_USERMAP,
        ),
        VmallocInfoRow(addr=base + 0x10000, size=16384, vm_map_ram=True),
    ]
    # sorted by address; "0x%pK-0x%pK %7ld" [ %pS] [ pages=%d] [ phys=%pa] [ kinds]
    # [ vpages: the 1024-entry pages[] array is 8 KiB > PAGE_SIZE] [ N0=%u]
    assert render_vmallocinfo(areas, unpurged=[(base + 0x20000, base + 0x22000)]) == (
        "0xffffc90000000000-0xffffc90000002000    8192 some_driver_init+0x1c/0x80 pages=1 vmalloc N0=1\n"
        "0xffffc90000004000-0xffffc90000006000    8192 acpi_os_map_iomem+0x1bc/0x1e0 phys=0x00000000000a0000 ioremap\n"
        "0xffffc90000008000-0xffffc9000000d000   20480 irq_init_percpu_irqstack+0xca/0x100 vmap\n"
        "0xffffc90000010000-0xffffc90000014000   16384 vm_map_ram\n"
        "0xffffc90000400000-0xffffc90000801000 4198400 alloc_large_system_hash+0x1a3/0x2c0 pages=1024 vmalloc user vpages N0=1024\n"
        "0xffffc90000020000-0xffffc90000022000    8192 unpurged vm_area\n"
    )


def test_vmallocinfo_on_i386_without_numa_prints_32_bit_pointers_and_no_node_counts() -> None:
    area = VmallocInfoRow(
        addr=0xF8800000, size=8192, caller="f+0x1/0x2", nr_pages=1, flags=VM_ALLOC
    )
    text = render_vmallocinfo([area], ProcConfig.for_arch("i386"))
    assert text == "0xf8800000-0xf8802000    8192 f+0x1/0x2 pages=1 vmalloc\n"


def test_vmallocinfo_of_no_areas_is_empty_even_with_unpurged_ranges() -> None:
    assert render_vmallocinfo([], unpurged=[(1, 2)]) == ""
    assert VM_NO_GUARD == 0x40


# ----------------------------------------------------------------------------- meminfo


def test_meminfo_of_a_hand_built_record_on_the_ubuntu_6_8_build() -> None:
    s = MeminfoSources(
        total=262144,  # 1 GiB
        free=100000,
        totalreserve=1000,
        wmark_low=300,
        buffers=400,
        file_pages=5000,
        swap_cached=100,
        active_anon=11,
        inactive_anon=12,
        active_file=2000,
        inactive_file=1000,
        swap_total=2000,
        swap_free=1500,
        slab_reclaimable=800,
        slab_unreclaimable=700,
        kernel_misc_reclaimable=200,
        kernel_stack_kb=1536,
        page_tables=30,
        committed_as=5000,
        vmalloc_used=3,
        percpu=172,
        hugepages_total=10,
        hugepages_free=4,
        direct_map_4k_kb=2048,
        direct_map_large_kb=1046528,
        direct_map_1g_kb=0,
    )
    # MemAvailable = free - totalreserve + (file LRU - min(half, wmark_low))
    #              + (reclaimable slab + misc - min(half, wmark_low))
    #              = 100000 - 1000 + (3000 - 300) + (1000 - 300) = 102400 pages = 409600 kB.
    # Cached = file pages - swap cache - buffers = 5000 - 100 - 400 = 4500 pages = 18000 kB.
    # CommitLimit = (262144 - 10 huge pages * 512) * 50 / 100 + 2000 swap = 131072 - 2560
    #             + 2000 = 130512 pages = 522048 kB. Hugetlb = 10 * 2048 kB.
    expected = (
        "MemTotal:        1048576 kB\n"
        "MemFree:          400000 kB\n"
        "MemAvailable:     409600 kB\n"
        "Buffers:            1600 kB\n"
        "Cached:            18000 kB\n"
        "SwapCached:          400 kB\n"
        "Active:             8044 kB\n"
        "Inactive:           4048 kB\n"
        "Active(anon):         44 kB\n"
        "Inactive(anon):       48 kB\n"
        "Active(file):       8000 kB\n"
        "Inactive(file):     4000 kB\n"
        "Unevictable:           0 kB\n"
        "Mlocked:               0 kB\n"
        "SwapTotal:          8000 kB\n"
        "SwapFree:           6000 kB\n"
        "Zswap:                 0 kB\n"
        "Zswapped:              0 kB\n"
        "Dirty:                 0 kB\n"
        "Writeback:             0 kB\n"
        "AnonPages:             0 kB\n"
        "Mapped:                0 kB\n"
        "Shmem:                 0 kB\n"
        "KReclaimable:       4000 kB\n"
        "Slab:               6000 kB\n"
        "SReclaimable:       3200 kB\n"
        "SUnreclaim:         2800 kB\n"
        "KernelStack:        1536 kB\n"
        "PageTables:          120 kB\n"
        "SecPageTables:         0 kB\n"
        "NFS_Unstable:          0 kB\n"
        "Bounce:                0 kB\n"
        "WritebackTmp:          0 kB\n"
        "CommitLimit:      522048 kB\n"
        "Committed_AS:      20000 kB\n"
        "VmallocTotal:   34359738367 kB\n"
        "VmallocUsed:          12 kB\n"
        "VmallocChunk:          0 kB\n"
        "Percpu:              688 kB\n"
        "HardwareCorrupted:     0 kB\n"
        "AnonHugePages:         0 kB\n"
        "ShmemHugePages:        0 kB\n"
        "ShmemPmdMapped:        0 kB\n"
        "FileHugePages:         0 kB\n"
        "FilePmdMapped:         0 kB\n"
        "Unaccepted:            0 kB\n"
        "HugePages_Total:      10\n"
        "HugePages_Free:        4\n"
        "HugePages_Rsvd:        0\n"
        "HugePages_Surp:        0\n"
        "Hugepagesize:       2048 kB\n"
        "Hugetlb:           20480 kB\n"
        "DirectMap4k:        2048 kB\n"
        "DirectMap2M:     1046528 kB\n"
        "DirectMap1G:           0 kB\n"
    )
    assert render_meminfo(s) == expected


def test_every_meminfo_value_is_right_aligned_to_column_24() -> None:
    text = render_meminfo(MeminfoSources(total=262144, free=1))
    for line in text.splitlines():
        body = line.removesuffix(" kB")
        if line.startswith("VmallocTotal:"):
            assert body == "VmallocTotal:   34359738367"  # wider than 8: it runs on
            continue
        assert len(body) == 24, line
        assert re.fullmatch(r"[A-Za-z0-9_()]+: *\d+", body), line


def test_a_cma_kernel_prints_cma_lines_after_the_thp_lines() -> None:
    text = render_meminfo(
        MeminfoSources(total=1024, free=0, cma_total=16384, cma_free=1000), ProcConfig(cma=True)
    )
    assert (
        "FilePmdMapped:         0 kB\nCmaTotal:          65536 kB\nCmaFree:            4000 kB\nUnaccepted:"
        in text
    )
    assert "CmaTotal" not in render_meminfo(MeminfoSources(total=1024, free=0))


def test_i386_meminfo_has_high_and_low_lines_and_no_1g_direct_map() -> None:
    s = MeminfoSources(
        total=258000, free=200000, high_total=32768, high_free=30000, vmalloc_total_bytes=0x37000000
    )
    text = render_meminfo(s, ProcConfig.for_arch("i386"))
    assert (
        "Mlocked:               0 kB\n"
        "HighTotal:        131072 kB\n"
        "HighFree:         120000 kB\n"
        "LowTotal:         900928 kB\n"
        "LowFree:          680000 kB\n"
        "SwapTotal:"
    ) in text
    assert "VmallocTotal:     901120 kB\n" in text
    assert "Unaccepted" not in text and "DirectMap1G" not in text
    assert "DirectMap2M:" in text  # PAE: 2 MiB large pages
    assert "DirectMap4M:" in render_meminfo(s, ProcConfig(arch="i386", highmem=True))


def test_mem_available_never_goes_below_zero_and_keeps_half_of_the_cache() -> None:
    assert si_mem_available(MeminfoSources(total=100, free=10, totalreserve=50)) == 0
    # wmark_low larger than half the cache: only half the cache counts.
    s = MeminfoSources(total=100, free=100, wmark_low=10_000, active_file=60, slab_reclaimable=20)
    assert si_mem_available(s) == 100 + 30 + 10


def test_meminfo_sources_from_a_fresh_64mib_allocator() -> None:
    buddy = BuddyAllocator(64 * MIB)
    s = meminfo_sources(buddy, layout=layout_for("x86_64", 64 << 20))
    # totalreserve: DMA min(43 + 92, 3840) + DMA32 min(0 + 270, 11008) = 405.
    # wmark_low: DMA 77 + DMA32 225 + Normal 0 + Movable 32 + Device 0 = 334.
    assert (s.total, s.free, s.totalreserve, s.wmark_low) == (14848, 14848, 405, 334)
    assert totalreserve_pages(buddy) == 405
    assert si_mem_available(s) == 14848 - 405
    text = render_meminfo(s)
    assert text.startswith(
        "MemTotal:          59392 kB\nMemFree:           59392 kB\nMemAvailable:      57772 kB\n"
    )
    assert s.vmalloc_total_bytes == (1 << 45) - 1


def test_vmalloc_total_is_the_kernels_vmalloc_end_minus_start() -> None:
    assert vmalloc_total_bytes(layout_for("x86_64", 1 << 30)) >> 10 == 34359738367
    i386 = layout_for("i386", 512 << 20)
    # VMALLOC_START = 0xC0000000 + 512 MiB + 8 MiB; VMALLOC_END = 0xFF800000 - 8 KiB.
    assert vmalloc_total_bytes(i386) == 0xFF800000 - 0x2000 - 0xE0800000


def test_direct_map_adds_up_to_ram() -> None:
    # 6 GiB: 2 MiB of 4k pages, 1 GiB - 2 MiB of 2M pages, 5 GiB of 1G pages.
    assert direct_map_kb(6 << 30) == (2048, (1 << 20) - 2048, 5 << 20)
    small, large, gig = direct_map_kb((64 << 20) + 4096)
    assert (small, large, gig) == (2048 + 4, (62 << 10), 0)
    assert direct_map_kb(2 << 30, "i386")[2] == 0


# ----------------------------------------------------------------------------- Proc


def test_proc_serves_every_file_by_name_and_by_path() -> None:
    buddy = BuddyAllocator(16 * MIB)
    proc = Proc.for_buddy(buddy, slabinfo=list, vmallocinfo=list)
    assert proc.names() == [
        "buddyinfo",
        "meminfo",
        "pagetypeinfo",
        "slabinfo",
        "vmallocinfo",
        "zoneinfo",
    ]
    assert proc.read("/proc/buddyinfo") == proc.read("buddyinfo") == render_buddyinfo(buddy.zones)


def test_proc_renders_at_read_time() -> None:
    buddy = BuddyAllocator(16 * MIB)
    proc = Proc.for_buddy(buddy)
    before = proc.read("buddyinfo")
    buddy.alloc_pages(10, GFP_HIGHUSER_MOVABLE)
    assert proc.read("buddyinfo") != before
    assert proc.read("buddyinfo").endswith("      1      1      2      1      1 \n")


def test_reading_a_missing_file_is_file_not_found() -> None:
    proc = Proc.for_buddy(BuddyAllocator(16 * MIB))
    with pytest.raises(FileNotFoundError, match=r"^/proc/slabinfo: No such file or directory$"):
        proc.read("slabinfo")  # no slab source given
    with pytest.raises(FileNotFoundError, match="/proc/nope"):
        proc.read("/proc/nope")


def test_proc_file_names_are_single_components() -> None:
    proc = Proc()
    for bad in ("", "a/b", ".", ".."):
        with pytest.raises(ValueError):
            proc.register(bad, str)
    proc.register("version", lambda: "Linux\n")
    assert proc.names() == ["version"]


def test_dump_writes_every_file_into_a_new_directory(tmp_path: Path) -> None:
    buddy = BuddyAllocator(16 * MIB)
    proc = Proc.for_buddy(buddy, slabinfo=list)
    out = tmp_path / "run" / "proc"
    paths = proc.dump(out)
    assert sorted(p.name for p in out.iterdir()) == proc.names() == [p.name for p in paths]
    for path in paths:
        assert path.read_bytes() == proc.read(path.name).encode()


# ----------------------------------------------------------------------------- host oracle


def _host(name: str) -> str:
    try:
        return Path("/proc", name).read_text()
    except OSError as err:
        pytest.skip(f"/proc/{name} of the host cannot be read: {err}")


def test_the_hosts_buddyinfo_re_renders_byte_for_byte() -> None:
    text = _host("buddyinfo")
    zones = []
    for i, line in enumerate(text.splitlines()):
        m = re.fullmatch(r"Node (\d+), zone +(\S+) +((?:\d+ +){11})", line)
        assert m, line
        if m.group(1) != "0":
            pytest.skip("a NUMA host: render_buddyinfo() prints node 0 only")
        zone = Zone(index=i, name=m.group(2), start_pfn=0, end_pfn=1, present_pages=1)
        zone.nr_free = [int(n) for n in m.group(3).split()]
        zones.append(zone)
    assert render_buddyinfo(zones) == text


def test_the_hosts_slabinfo_re_renders_byte_for_byte() -> None:
    text = _host("slabinfo")
    lines = text.splitlines(keepends=True)
    rows = []
    for line in lines[2:]:
        f = line.replace(":", " ").split()
        assert f[6] == "tunables" and f[10] == "slabdata", line
        rows.append(
            SlabInfoRow(
                name=f[0],
                active_objs=int(f[1]),
                num_objs=int(f[2]),
                objsize=int(f[3]),
                objperslab=int(f[4]),
                pagesperslab=int(f[5]),
                limit=int(f[7]),
                batchcount=int(f[8]),
                sharedfactor=int(f[9]),
                active_slabs=int(f[11]),
                num_slabs=int(f[12]),
                sharedavail=int(f[13]),
            )
        )
    assert render_slabinfo(rows) == text


def test_meminfo_lines_shared_with_the_hosts_have_the_same_layout() -> None:
    host = {line.split(":")[0]: line for line in _host("meminfo").splitlines()}
    ours = render_meminfo(MeminfoSources(total=1, free=1), ProcConfig(cma=True)).splitlines()
    shared = 0
    for line in ours:
        label = line.split(":")[0]
        if label not in host:
            continue
        m = re.fullmatch(r"(\S+:)( *\d+)( kB)?", line)
        h = re.fullmatch(r"(\S+:)( *)(\d+)( kB)?", host[label])
        assert m and h, (line, host[label])
        width = len(m.group(2))
        assert f"{m.group(1)}{h.group(3):>{width}}{m.group(3) or ''}" == host[label]
        shared += 1
    assert shared >= 40


# ----------------------------------------------------------------------------- procps


def _procps_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian/Ubuntu package 'procps')")
    return path


def _in_private_mount_namespace(files: dict[str, str], command: str, tmp: Path) -> str:
    """Run ``command`` in a new mount namespace where each /proc/<name> is our text."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    unshare = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        unshare.insert(1, "--map-root-user")
    mounts = []
    for name, text in files.items():
        if not Path("/proc", name).exists():
            pytest.skip(f"/proc/{name} does not exist on this host to mount over")
        src = tmp / name
        src.write_text(text)
        mounts.append(f"mount --bind {shlex.quote(str(src))} /proc/{name}")
    probe = subprocess.run(
        [*unshare, "sh", "-c", " && ".join(mounts)], capture_output=True, text=True, timeout=60
    )
    if probe.returncode != 0:
        pytest.skip(
            f"cannot bind-mount over /proc in a mount namespace here: {probe.stderr.strip()}"
        )
    run = subprocess.run(
        [*unshare, "sh", "-c", " && ".join([*mounts, command])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


SLAB_ROWS = [
    SlabInfoRow(
        name="hwsim_ring",
        active_objs=30,
        num_objs=42,
        objsize=96,
        objperslab=42,
        pagesperslab=1,
        active_slabs=1,
        num_slabs=1,
    ),
    SlabInfoRow(
        name="kmalloc-1k",
        active_objs=100,
        num_objs=112,
        objsize=1024,
        objperslab=16,
        pagesperslab=4,
        active_slabs=7,
        num_slabs=7,
    ),
    SlabInfoRow(
        name="kmalloc-64",
        active_objs=640,
        num_objs=640,
        objsize=64,
        objperslab=64,
        pagesperslab=1,
        active_slabs=10,
        num_slabs=10,
    ),
]


def test_procps_free_reads_our_meminfo(tmp_path: Path) -> None:
    _procps_tool("free")
    s = MeminfoSources(
        total=262144,
        free=100000,
        buffers=1000,
        file_pages=20000,
        shmem=500,
        slab_reclaimable=3000,
        swap_total=50000,
        swap_free=40000,
    )
    out = _in_private_mount_namespace({"meminfo": render_meminfo(s)}, "free -k", tmp_path)
    mem = next(line.split() for line in out.splitlines() if line.startswith("Mem:"))
    swap = next(line.split() for line in out.splitlines() if line.startswith("Swap:"))
    total, used, free, shared, buff_cache, available = (int(x) for x in mem[1:])
    assert total == 1048576  # MemTotal
    assert free == 400000  # MemFree
    assert shared == 2000  # Shmem
    assert buff_cache == (1000 + 19000 + 3000) * 4  # Buffers + Cached + SReclaimable
    assert available == si_mem_available(s) * 4  # MemAvailable
    assert used in (total - free - buff_cache, total - available)
    assert [int(x) for x in swap[1:]] == [200000, 40000, 160000]


def test_procps_vmstat_m_lists_our_caches(tmp_path: Path) -> None:
    _procps_tool("vmstat")
    out = _in_private_mount_namespace(
        {"slabinfo": render_slabinfo(SLAB_ROWS)}, "vmstat -m", tmp_path
    )
    lines = out.splitlines()
    assert lines[0].split() == ["Cache", "Num", "Total", "Size", "Pages"]
    got = {f[0]: [int(x) for x in f[1:]] for f in (line.split() for line in lines[1:])}
    # vmstat -m: Num = active_objs, Total = num_objs, Size = objsize, Pages = objperslab
    assert got == {r.name: [r.active_objs, r.num_objs, r.objsize, r.objperslab] for r in SLAB_ROWS}


def test_procps_slabtop_shows_our_caches_and_totals(tmp_path: Path) -> None:
    _procps_tool("slabtop")
    out = _in_private_mount_namespace(
        {"slabinfo": render_slabinfo(SLAB_ROWS)}, "slabtop --once --sort=c", tmp_path
    )
    m = re.search(r"Active / Total Objects \(% used\)\s*:\s*(\d+) / (\d+)", out)
    assert m, out
    assert (int(m.group(1)), int(m.group(2))) == (770, 794)
    m = re.search(r"Active / Total Slabs \(% used\)\s*:\s*(\d+) / (\d+)", out)
    assert m and (int(m.group(1)), int(m.group(2))) == (18, 18)
    m = re.search(r"Active / Total Caches \(% used\)\s*:\s*(\d+) / (\d+)", out)
    assert m and (int(m.group(1)), int(m.group(2))) == (3, 3)
    rows = {
        line.split()[-1]: line.split()
        for line in out.splitlines()
        if line.split()[-1:] and line.split()[-1] in {r.name for r in SLAB_ROWS}
    }
    assert set(rows) == {r.name for r in SLAB_ROWS}
    # OBJS ACTIVE USE OBJ-SIZE SLABS OBJ/SLAB CACHE-SIZE NAME
    assert rows["kmalloc-1k"][:2] == ["112", "100"]
    assert rows["kmalloc-1k"][4:6] == ["7", "16"]
    assert rows["kmalloc-1k"][6] == "112K"  # 7 slabs * 4 pages * 4 KiB


@pytest.mark.machine(cpus=1)
async def test_zoneinfo_per_node_counters_agree_with_meminfo(machine: hwsim.Machine) -> None:
    await machine.kernel.kmalloc(100)
    await machine.kernel.vmalloc(8192)

    def meminfo_kb(field: str) -> int:
        line = next(x for x in machine.proc.read("meminfo").splitlines() if x.startswith(field))
        return int(line.split()[1])

    def zoneinfo(counter: str) -> int:
        line = next(
            x for x in machine.proc.read("zoneinfo").splitlines() if x.split()[:1] == [counter]
        )
        return int(line.split()[1])

    assert zoneinfo("nr_page_table_pages") * 4 == meminfo_kb("PageTables:") > 0
    assert zoneinfo("nr_slab_unreclaimable") * 4 == meminfo_kb("SUnreclaim:") > 0
    assert zoneinfo("nr_slab_reclaimable") * 4 == meminfo_kb("SReclaimable:")
