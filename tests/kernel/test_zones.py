"""Zones, their boundaries and watermarks (hwsim/kernel/zones.py), checked against the kernel's
own formulas (mm/page_alloc.c: calculate_min_free_kbytes, __setup_per_zone_wmarks,
setup_per_zone_lowmem_reserve, zone_batchsize). Expected values are worked out by hand in
each test, so that a change of formula shows up as a failing number."""

from __future__ import annotations

import pytest

from hwsim.kernel.buddy import BuddyAllocator
from hwsim.kernel.zones import (
    LOWMEM_RESERVE_RATIO,
    MAX_PAGE_ORDER,
    NR_PAGE_ORDERS,
    PAGE_ALLOC_COSTLY_ORDER,
    PAGEBLOCK_NR_PAGES,
    PAGEBLOCK_ORDER,
    WMARK_HIGH,
    WMARK_LOW,
    WMARK_MIN,
    ZONE_DMA,
    ZONE_DMA32,
    ZONE_HIGHMEM,
    ZONE_NAMES,
    ZONE_NORMAL,
    build_zones,
    min_free_kbytes,
    pcp_batch,
)

MIB = 256  # pages per MiB
GIB = 1024 * MIB


def spans(arch: str, nr_pages: int) -> dict[str, tuple[int, int]]:
    """The non-empty zones' [start, end) pfns."""
    zones = build_zones(arch, nr_pages)
    return {z.name: (z.start_pfn, z.end_pfn) for z in zones if z.spanned_pages}


# ----------------------------------------------------------------------------- constants


def test_the_kernel_constants_have_linux_values() -> None:
    # MAX_PAGE_ORDER is inclusive (v6.8): 11 free lists, the largest block 1024 pages = 4 MiB.
    assert (MAX_PAGE_ORDER, NR_PAGE_ORDERS) == (10, 11)
    # x86_64: pageblock_order = HUGETLB_PAGE_ORDER = 21 - 12 = 9.
    assert (PAGEBLOCK_ORDER, PAGEBLOCK_NR_PAGES) == (9, 512)
    assert PAGE_ALLOC_COSTLY_ORDER == 3
    assert ZONE_NAMES == ("DMA", "DMA32", "Normal", "HighMem")
    # sysctl_lowmem_reserve_ratio defaults: DMA 256, DMA32 256, Normal 32, HighMem 0.
    assert LOWMEM_RESERVE_RATIO == (256, 256, 32, 0)


# ----------------------------------------------------------------------------- boundaries


def test_x86_64_zones_are_dma_below_16mib_dma32_below_4gib_and_normal_above() -> None:
    zones = build_zones("x86_64", 6 * GIB)
    got = {z.name: (z.start_pfn, z.end_pfn) for z in zones}
    # 16 MiB = pfn 4096; 4 GiB = pfn 1048576; 6 GiB = pfn 1572864.
    assert got["DMA"] == (0, 4096)
    assert got["DMA32"] == (4096, 1048576)
    assert got["Normal"] == (1048576, 1572864)
    assert zones[ZONE_HIGHMEM].spanned_pages == 0  # no HighMem on 64-bit


def test_zone_indices_are_fixed_even_when_a_zone_is_empty() -> None:
    zones = build_zones("x86_64", 64 * MIB)
    assert [z.index for z in zones] == [ZONE_DMA, ZONE_DMA32, ZONE_NORMAL, ZONE_HIGHMEM]
    assert [z.name for z in zones] == list(ZONE_NAMES)


def test_a_64mib_x86_64_machine_has_only_dma_and_dma32() -> None:
    assert spans("x86_64", 64 * MIB) == {"DMA": (0, 4096), "DMA32": (4096, 16384)}


def test_a_4gib_x86_64_machine_ends_exactly_at_the_dma32_boundary() -> None:
    # 4 GiB of RAM is all below 4 GiB: ZONE_NORMAL stays empty.
    assert spans("x86_64", 4 * GIB) == {"DMA": (0, 4096), "DMA32": (4096, 1048576)}


def test_a_machine_below_16mib_has_only_a_dma_zone() -> None:
    assert spans("x86_64", 8 * MIB) == {"DMA": (0, 2048)}


def test_i386_zones_are_dma_normal_up_to_896mib_and_highmem_above() -> None:
    # 1 GiB - 128 MiB of vmalloc/fixmap reserve = 896 MiB = pfn 229376.
    assert spans("i386", 2 * GIB) == {
        "DMA": (0, 4096),
        "Normal": (4096, 229376),
        "HighMem": (229376, 524288),
    }


def test_i386_below_896mib_has_no_highmem() -> None:
    assert spans("i386", 512 * MIB) == {"DMA": (0, 4096), "Normal": (4096, 131072)}


def test_i386_has_no_dma32_zone() -> None:
    zones = build_zones("i386", 1 * GIB)
    assert zones[ZONE_DMA32].spanned_pages == 0


def test_zone_contains_is_half_open() -> None:
    dma, dma32, *_ = build_zones("x86_64", 64 * MIB)
    assert dma.contains(4095) and not dma.contains(4096)
    assert dma32.contains(4096) and not dma32.contains(16384)


# ----------------------------------------------------------------------------- min_free_kbytes


@pytest.mark.parametrize(
    ("lowmem_kb", "expected"),
    [
        (1024, 128),  # sqrt(16384) = 128: the floor itself
        (512, 128),  # sqrt(8192) = 90 -> clamped up to 128
        (59392, 974),  # sqrt(950272) = 974.8 -> int_sqrt rounds down
        (4123648, 8122),  # sqrt(65978368) = 8122.7
        (16 * 1024 * 1024, 16384),  # 16 GiB: sqrt(2**28) = 16384
        (8 * 1024**3, 262144),  # 8 TiB: sqrt(2**37) = 370727 -> clamped to 256 MiB
    ],
)
def test_min_free_kbytes_is_int_sqrt_of_16_times_lowmem_clamped(
    lowmem_kb: int, expected: int
) -> None:
    assert min_free_kbytes(lowmem_kb) == expected


# ----------------------------------------------------------------------------- watermarks


def test_watermarks_of_a_64mib_x86_64_machine_follow_the_kernel_formula() -> None:
    buddy = BuddyAllocator(64 * MIB)
    dma, dma32 = buddy.zones[ZONE_DMA], buddy.zones[ZONE_DMA32]
    # Managed pages after memblock: DMA = [256, 4096) (first MiB reserved) = 3840;
    # DMA32 = [5120, 16128) (kernel image at 16 MiB, 4 MiB; mem_map 256 pages at the top)
    # = 11008.
    assert (dma.managed_pages, dma32.managed_pages) == (3840, 11008)
    # lowmem = 14848 pages = 59392 kB; min_free_kbytes = int_sqrt(59392 * 16) = 974;
    # pages_min = 974 >> 2 = 243.
    # DMA:   min = 243 * 3840 / 14848 = 62;   tmp = max(62 >> 2, 3840 * 10 / 10000)
    #        = max(15, 3) = 15;  low = 77; high = 92.
    # DMA32: min = 243 * 11008 / 14848 = 180; tmp = max(180 >> 2, 11008 * 10 / 10000)
    #        = max(45, 11) = 45; low = 225; high = 270.
    assert dma.watermark == [62, 77, 92]
    assert dma32.watermark == [180, 225, 270]


def test_watermarks_of_a_4gib_x86_64_machine_follow_the_kernel_formula() -> None:
    buddy = BuddyAllocator(4 * GIB)
    dma, dma32 = buddy.zones[ZONE_DMA], buddy.zones[ZONE_DMA32]
    # DMA32 managed = [5120, 1032192): mem_map is 1048576 * 64 / 4096 = 16384 pages at the top.
    assert (dma.managed_pages, dma32.managed_pages) == (3840, 1027072)
    # lowmem = 1030912 pages = 4123648 kB; min_free_kbytes = int_sqrt(65978368) = 8122;
    # pages_min = 8122 >> 2 = 2030.
    # DMA:   min = 2030 * 3840 / 1030912 = 7;      tmp = max(7 >> 2, 3840 * 10 / 10000)
    #        = max(1, 3) = 3;       low = 10;   high = 13.
    # DMA32: min = 2030 * 1027072 / 1030912 = 2022; tmp = max(2022 >> 2, 1027072 * 10 / 10000)
    #        = max(505, 1027) = 1027; low = 3049; high = 4076.
    assert dma.watermark == [7, 10, 13]
    assert dma32.watermark == [2022, 3049, 4076]


def test_the_watermark_scale_factor_takes_over_on_big_zones() -> None:
    # In the 4 GiB DMA32 zone 0.1% of managed (1027) beats min / 4 (505): low - min and
    # high - low are that 0.1% (watermark_scale_factor = 10 / 10000).
    dma32 = BuddyAllocator(4 * GIB).zones[ZONE_DMA32]
    wmin, low, high = dma32.watermark
    assert low - wmin == high - low == 1027


def test_lowmem_reserve_of_a_64mib_machine_protects_dma_from_dma32_allocations() -> None:
    buddy = BuddyAllocator(64 * MIB)
    # DMA (ratio 256): reserve[DMA32] = 11008 / 256 = 43; Normal and HighMem are empty, so
    # the sums stay 11008 -> 43. DMA32: Normal/HighMem are empty -> 0.
    assert buddy.zones[ZONE_DMA].lowmem_reserve == [0, 43, 43, 43]
    assert buddy.zones[ZONE_DMA32].lowmem_reserve == [0, 0, 0, 0]


def test_lowmem_reserve_of_a_4gib_machine() -> None:
    buddy = BuddyAllocator(4 * GIB)
    # DMA: 1027072 / 256 = 4012 for every zone above.
    assert buddy.zones[ZONE_DMA].lowmem_reserve == [0, 4012, 4012, 4012]
    assert buddy.zones[ZONE_DMA32].lowmem_reserve == [0, 0, 0, 0]


def test_lowmem_reserve_adds_up_the_managed_pages_of_all_higher_zones() -> None:
    buddy = BuddyAllocator(6 * GIB)
    dma, dma32, normal, _ = buddy.zones
    # 6 GiB: DMA32 = [5120, 1048576) = 1043456 managed; Normal = [1048576, 1572864) minus
    # mem_map (1572864 * 64 / 4096 = 24576) = 499712 managed.
    assert (dma32.managed_pages, normal.managed_pages) == (1043456, 499712)
    # DMA (256):   [0, 1043456/256, (1043456+499712)/256, same] = [0, 4076, 6028, 6028]
    # DMA32 (256): [0, 0, 499712/256, same]                      = [0, 0, 1952, 1952]
    # Normal (32): only HighMem above, empty                     = [0, 0, 0, 0]
    assert dma.lowmem_reserve == [0, 4076, 6028, 6028]
    assert dma32.lowmem_reserve == [0, 0, 1952, 1952]
    assert normal.lowmem_reserve == [0, 0, 0, 0]


def test_empty_zones_have_zero_lowmem_zone_watermarks() -> None:
    buddy = BuddyAllocator(64 * MIB)
    assert buddy.zones[ZONE_NORMAL].watermark == [0, 0, 0]


def test_i386_highmem_min_watermark_is_managed_over_1024_clamped_to_32_128() -> None:
    buddy = BuddyAllocator(1 * GIB, arch="i386")
    highmem = buddy.zones[ZONE_HIGHMEM]
    assert highmem.managed_pages == 32768
    # min_pages = 32768 / 1024 = 32, clamp(32, SWAP_CLUSTER_MAX = 32, 128) = 32.
    assert highmem.watermark[WMARK_MIN] == 32


def test_i386_lowmem_excludes_highmem_from_min_free_kbytes() -> None:
    buddy = BuddyAllocator(1 * GIB, arch="i386")
    dma, _, normal, _ = buddy.zones
    # lowmem = DMA 3840 + Normal 220160 = 224000 pages = 896000 kB (HighMem not counted);
    # min_free_kbytes = int_sqrt(14336000) = 3786; pages_min = 946.
    # DMA:    min = 946 * 3840 / 224000 = 16;    tmp = max(4, 3) = 4;      low 20,  high 24.
    # Normal: min = 946 * 220160 / 224000 = 929; tmp = max(232, 220) = 232; low 1161, high 1393.
    assert normal.managed_pages == 220160
    assert dma.watermark == [16, 20, 24]
    assert normal.watermark == [929, 1161, 1393]


def test_i386_highmem_low_and_high_use_the_proportional_share_of_pages_min() -> None:
    buddy = BuddyAllocator(1 * GIB, arch="i386")
    highmem = buddy.zones[ZONE_HIGHMEM]
    # pages_min = 946 (see above); lowmem_pages = 224000.
    # tmp = 946 * 32768 / 224000 = 138 (the share HighMem would get if it were lowmem);
    # min is clamped to 32, but tmp = max(138 >> 2, 32768 * 10 / 10000) = max(34, 32) = 34.
    # low = 32 + 34 = 66; high = 66 + 34 = 100.
    assert highmem.watermark == [32, 66, 100]


def test_an_empty_highmem_zone_still_gets_the_clamped_min_watermark() -> None:
    buddy = BuddyAllocator(512 * MIB, arch="i386")
    highmem = buddy.zones[ZONE_HIGHMEM]
    assert highmem.managed_pages == 0
    # min = clamp(0 / 1024, 32, 128) = 32; tmp = max(0 >> 2, 0) = 0 -> low = high = 32.
    assert highmem.watermark == [32, 32, 32]


def test_watermark_indices_are_min_low_high() -> None:
    assert (WMARK_MIN, WMARK_LOW, WMARK_HIGH) == (0, 1, 2)


# ----------------------------------------------------------------------------- per-CPU batch


@pytest.mark.parametrize(
    ("managed", "expected"),
    [
        # batch = min(managed >> 10, 256) / 4, at least 1; rounddown_pow_of_two(b + b/2) - 1,
        # and the kernel's max(1, ...) on top.
        (3840, 1),  # 3 / 4 = 0 -> 1; rounddown_pow_of_two(1) - 1 = 0 -> max(1, 0) = 1
        (11008, 1),  # 10 / 4 = 2; rounddown_pow_of_two(3) - 1 = 1
        (32768, 7),  # 32 / 4 = 8; rounddown_pow_of_two(12) - 1 = 7
        (124000, 31),  # 121 / 4 = 30; rounddown_pow_of_two(45) - 1 = 31
        (1027072, 63),  # min(1003, 256) / 4 = 64; rounddown_pow_of_two(96) - 1 = 63
    ],
)
def test_pcp_batch_is_zone_batchsize(managed: int, expected: int) -> None:
    zone = build_zones("x86_64", 64 * MIB)[ZONE_DMA]
    zone.managed_pages = managed
    assert max(1, pcp_batch(zone)) == expected


def test_pcp_high_is_the_low_watermark_split_across_cpus_but_at_least_4_batches() -> None:
    # zone_highsize(): high = low_wmark / nr_cpus, at least batch << 2.
    buddy = BuddyAllocator(4 * GIB, nr_cpus=4)
    dma32 = buddy.zones[ZONE_DMA32]
    assert [p.high for p in dma32.pcp] == [3049 // 4] * 4  # 762 > 63 << 2 = 252
    assert [p.batch for p in dma32.pcp] == [63] * 4
    dma = buddy.zones[ZONE_DMA]
    assert [p.high for p in dma.pcp] == [4] * 4  # 10 / 4 = 2 < 1 << 2 = 4
