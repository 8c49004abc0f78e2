"""The buddy page allocator model (hwsim/kernel/buddy.py) against Linux's rules
(mm/page_alloc.c, v6.8). Small machines keep the suite fast: 16 MiB is one DMA zone with
free blocks {768: o8, 1024: o10, 2048: o10, 3072: o9, 3584: o8, 3840: o7, 3968: o6};
64 MiB adds DMA32."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hwsim.errors import DoubleFree, InvalidFree, OutOfMemory
from hwsim.kernel.buddy import LOCKED_CYCLES, BuddyAllocator
from hwsim.kernel.gfp import (
    GFP_ATOMIC,
    GFP_DMA,
    GFP_DMA32,
    GFP_HIGHUSER_MOVABLE,
    GFP_KERNEL,
    GFP_NOWAIT,
    GFP_NOWARN,
    MIGRATE_MOVABLE,
    MIGRATE_UNMOVABLE,
)
from hwsim.kernel.zones import (
    MAX_PAGE_ORDER,
    NR_PAGE_ORDERS,
    PAGEBLOCK_ORDER,
    WMARK_LOW,
    WMARK_MIN,
    ZONE_DMA,
    ZONE_DMA32,
    ZONE_HIGHMEM,
    ZONE_NORMAL,
)

MIB = 256  # pages
GIB = 1024 * MIB
M, U = MIGRATE_MOVABLE, MIGRATE_UNMOVABLE

BOOT_16MIB = {768: 8, 1024: 10, 2048: 10, 3072: 9, 3584: 8, 3840: 7, 3968: 6}


def snapshot(buddy: BuddyAllocator) -> Any:
    """Everything an allocator call may change, deep-copied: books, lists (in list order),
    per-CPU lists, pageblock types, the log and the counters."""
    zones = [
        (
            list(z.nr_free),
            z.free_pages,
            [[list(area) for area in per_mt] for per_mt in z.free_area],
            [([list(lst) for lst in p.lists], p.count) for p in z.pcp],
        )
        for z in buddy.zones
    ]
    return (
        dict(buddy.free_block),
        dict(buddy.allocated),
        zones,
        bytes(buddy.pageblock_mt),
        list(buddy.log),
        (buddy.allocs, buddy.frees, buddy.failures, buddy.steals, buddy.splits, buddy.merges),
    )


def free_orders(buddy: BuddyAllocator) -> dict[int, int]:
    return {pfn: order for pfn, (order, _) in buddy.free_block.items()}


def exhaust(buddy: BuddyAllocator, order: int, gfp: int, limit: int = 100_000) -> list[int]:
    """Allocate until the allocator says no; return what was handed out."""
    pfns = []
    for _ in range(limit):
        try:
            pfns.append(buddy.alloc_pages(order, gfp))
        except OutOfMemory:
            return pfns
    raise AssertionError("the allocator never ran out")


# ----------------------------------------------------------------------------- orders, boot


def test_the_boot_free_lists_hold_the_largest_aligned_blocks_of_each_free_range() -> None:
    # 16 MiB: memblock keeps [0, 256) (first MiB), [256, 768) (kernel image at 1 MiB on small
    # machines) and [4032, 4096) (mem_map); [768, 4032) is cut into maximal aligned blocks.
    buddy = BuddyAllocator(16 * MIB)
    assert free_orders(buddy) == BOOT_16MIB
    assert {mt for _, mt in buddy.free_block.values()} == {M}  # memmap_init: all movable
    assert buddy.zones[ZONE_DMA].nr_free == [0, 0, 0, 0, 0, 0, 1, 1, 2, 1, 2]


@pytest.mark.parametrize("order", range(NR_PAGE_ORDERS))
def test_every_order_from_0_to_10_is_allocated_naturally_aligned(order: int) -> None:
    buddy = BuddyAllocator(64 * MIB)
    pfns = [buddy.alloc_pages(order, GFP_KERNEL) for _ in range(3)]
    assert all(pfn % (1 << order) == 0 for pfn in pfns)
    assert len(set(pfns)) == 3
    buddy.check_invariants()


def test_a_split_keeps_the_lower_half_and_frees_each_upper_half_one_order_down() -> None:
    buddy = BuddyAllocator(64 * MIB)
    dma32 = buddy.zones[ZONE_DMA32]
    # The smallest movable block in DMA32 is the order-8 block at 15872: an order-0 request
    # takes its first page and leaves 15873 (o0), 15874 (o1), 15876 (o2), ... 16000 (o7).
    pfn = buddy.alloc_pages(0, GFP_HIGHUSER_MOVABLE)
    assert pfn == 15872
    after = free_orders(buddy)
    boot = {p: o for p, (o, _) in buddy.boot_free_blocks.items()}
    del boot[15872]
    boot.update({15872 + (1 << o): o for o in range(8)})
    assert after == boot
    assert dma32.nr_free == [1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 10]
    for order in range(8):
        assert list(dma32.free_area[order][M]) == [15872 + (1 << order)]


def test_an_order_3_allocation_on_a_fresh_16mib_machine_leaves_exactly_these_lists() -> None:
    buddy = BuddyAllocator(16 * MIB)
    # Smallest movable block of order >= 3: the order-6 block at 3968.
    assert buddy.alloc_pages(3, GFP_HIGHUSER_MOVABLE) == 3968
    dma = buddy.zones[ZONE_DMA]
    lists = {o: list(dma.free_area[o][M]) for o in range(NR_PAGE_ORDERS) if dma.free_area[o][M]}
    assert lists == {
        3: [3976],
        4: [3984],
        5: [4000],
        7: [3840],
        8: [768, 3584],
        9: [3072],
        10: [1024, 2048],
    }
    assert dma.nr_free == [0, 0, 0, 1, 1, 1, 0, 1, 2, 1, 2]
    assert dma.free_pages == 3264 - 8


def test_nr_free_counts_blocks_not_pages() -> None:
    buddy = BuddyAllocator(16 * MIB)
    dma = buddy.zones[ZONE_DMA]
    assert sum(dma.nr_free) == 7
    assert sum(n << o for o, n in enumerate(dma.nr_free)) == dma.free_pages == 3264


def test_freeing_merges_with_free_buddies_back_to_the_original_block() -> None:
    buddy = BuddyAllocator(16 * MIB)
    pfn = buddy.alloc_pages(3, GFP_HIGHUSER_MOVABLE)
    buddy.free_pages(pfn, 3)
    assert free_orders(buddy) == BOOT_16MIB
    assert buddy.merges == 3  # o3 + 3976 -> o4 + 3984 -> o5 + 4000 -> o6


def test_merging_stops_at_order_10() -> None:
    buddy = BuddyAllocator(64 * MIB)
    a = buddy.alloc_pages(10, GFP_HIGHUSER_MOVABLE)
    b = buddy.alloc_pages(10, GFP_HIGHUSER_MOVABLE)
    assert (a, b) == (5120, 6144)
    buddy.free_pages(b, 10)
    # 6144 and 7168 are buddies at order 10 (6144 ^ 1024), both free: no order-11 block.
    assert buddy.free_block[6144][0] == buddy.free_block[7168][0] == MAX_PAGE_ORDER
    buddy.free_pages(a, 10)
    assert free_orders(buddy) == {p: o for p, (o, _) in buddy.boot_free_blocks.items()}


def test_a_block_does_not_merge_with_an_allocated_buddy() -> None:
    buddy = BuddyAllocator(16 * MIB)
    a = buddy.alloc_pages(4, GFP_HIGHUSER_MOVABLE)
    b = buddy.alloc_pages(4, GFP_HIGHUSER_MOVABLE)
    assert b == a ^ (1 << 4)
    buddy.free_pages(a, 4)
    assert buddy.free_block[a][0] == 4


def test_a_freed_block_goes_to_the_head_of_its_list_and_is_reused_first() -> None:
    buddy = BuddyAllocator(16 * MIB)
    a = buddy.alloc_pages(4, GFP_HIGHUSER_MOVABLE)  # 3968; leaves 3984 (o4), 4000 (o5)
    d = buddy.alloc_pages(5, GFP_HIGHUSER_MOVABLE)  # 4000
    b = buddy.alloc_pages(4, GFP_HIGHUSER_MOVABLE)  # 3984
    e = buddy.alloc_pages(4, GFP_HIGHUSER_MOVABLE)  # 3840, leaving 3856 (o4) on the list
    assert (a, d, b, e) == (3968, 4000, 3984, 3840)
    # b's buddy (a) is allocated and so is the order-5 buddy of their parent (d): no merge is
    # likely, so __free_one_page() puts b at the head, ahead of 3856.
    buddy.free_pages(b, 4)
    assert list(buddy.zones[ZONE_DMA].free_area[4][M]) == [3984, 3856]
    assert buddy.alloc_pages(4, GFP_HIGHUSER_MOVABLE) == 3984


def test_a_freed_block_whose_merge_is_likely_goes_to_the_tail_of_its_list() -> None:
    buddy = BuddyAllocator(16 * MIB)
    a = buddy.alloc_pages(4, GFP_HIGHUSER_MOVABLE)  # 3968
    d = buddy.alloc_pages(5, GFP_HIGHUSER_MOVABLE)  # 4000
    b = buddy.alloc_pages(4, GFP_HIGHUSER_MOVABLE)  # 3984
    buddy.alloc_pages(4, GFP_HIGHUSER_MOVABLE)  # 3840, leaving 3856 (o4) on the list
    assert a == 3968
    buddy.free_pages(d, 5)  # 4000 (o5) is free now
    # Free b: its buddy a is allocated, but the buddy of their parent (3968 ^ 32 = 4000, o5)
    # is free, so a merge is likely soon: the kernel queues b at the tail.
    buddy.free_pages(b, 4)
    assert list(buddy.zones[ZONE_DMA].free_area[4][M]) == [3856, 3984]
    assert buddy.alloc_pages(4, GFP_HIGHUSER_MOVABLE) == 3856


# ----------------------------------------------------------------------------- zones and gfp


def test_gfp_kernel_uses_the_highest_zone_first_and_falls_back_downward() -> None:
    buddy = BuddyAllocator(64 * MIB)
    dma32 = buddy.zones[ZONE_DMA32]
    first_dma = None
    for _ in range(20_000):
        free_before = dma32.free_pages
        try:
            pfn = buddy.alloc_pages(0, GFP_KERNEL)
        except OutOfMemory:
            break
        if pfn < 4096:
            first_dma = (pfn, free_before)
            break
    assert first_dma is not None, "GFP_KERNEL never fell back to ZONE_DMA"
    # It moved on only once DMA32 was at its low watermark (the fast path's mark).
    assert first_dma[1] <= dma32.watermark[WMARK_LOW]


def test_gfp_dma_allocations_come_from_zone_dma_only() -> None:
    buddy = BuddyAllocator(64 * MIB)
    dma32_free = buddy.zones[ZONE_DMA32].free_pages
    pfns = exhaust(buddy, 0, GFP_DMA)
    assert pfns and max(pfns) < 4096
    # An exhausted DMA zone never borrows from DMA32: fallback runs downward only.
    assert buddy.zones[ZONE_DMA32].free_pages == dma32_free
    with pytest.raises(OutOfMemory):
        buddy.alloc_pages(0, GFP_DMA)


def test_gfp_dma32_allocations_stay_at_or_below_dma32() -> None:
    buddy = BuddyAllocator(6 * GIB)
    pfns = exhaust(buddy, MAX_PAGE_ORDER, GFP_DMA32)
    assert pfns
    assert all(pfn + 1024 <= 1048576 for pfn in pfns)  # never ZONE_NORMAL
    # ... and not from this small DMA zone either: its lowmem_reserve against DMA32-capable
    # requests (1043456 / 256 = 4076 pages) exceeds its 3840 managed pages.
    assert min(pfns) >= 4096
    assert buddy.zones[ZONE_NORMAL].free_pages == buddy.zones[ZONE_NORMAL].managed_pages


def test_gfp_dma32_falls_back_to_zone_dma_when_the_reserve_allows() -> None:
    buddy = BuddyAllocator(64 * MIB)
    pfns = exhaust(buddy, 0, GFP_DMA32)
    assert any(pfn >= 4096 for pfn in pfns) and any(pfn < 4096 for pfn in pfns)


def test_i386_gfp_kernel_never_gets_highmem_and_highuser_prefers_it() -> None:
    buddy = BuddyAllocator(1 * GIB, arch="i386")
    assert buddy.alloc_pages(10, GFP_HIGHUSER_MOVABLE) >= 229376
    pfns = [buddy.alloc_pages(10, GFP_KERNEL) for _ in range(50)]
    assert max(pfns) < 229376
    highmem = buddy.zones[ZONE_HIGHMEM]
    assert highmem.free_pages == highmem.managed_pages - 1024


def test_gfp_kernel_order_0_stops_exactly_at_the_min_watermark() -> None:
    buddy = BuddyAllocator(16 * MIB)
    dma = buddy.zones[ZONE_DMA]
    exhaust(buddy, 0, GFP_KERNEL)
    # __zone_watermark_ok() fails when free <= min: the last page went out at min + 1.
    assert buddy.nr_pcp_pages() == 0
    assert dma.free_pages == dma.watermark[WMARK_MIN] == 114


def test_gfp_atomic_succeeds_below_the_min_watermark_where_gfp_nowait_fails() -> None:
    buddy = BuddyAllocator(16 * MIB)
    dma = buddy.zones[ZONE_DMA]
    exhaust(buddy, 0, GFP_KERNEL)
    with pytest.raises(OutOfMemory):
        buddy.alloc_pages(0, GFP_NOWAIT)  # no __GFP_HIGH: no access to the reserve
    assert buddy.alloc_pages(0, GFP_ATOMIC) >= 0
    exhaust(buddy, 0, GFP_ATOMIC)
    # ALLOC_MIN_RESERVE takes min / 2, ALLOC_NON_BLOCK another quarter of what is left:
    # 114 - 57 = 57; 57 - 57 / 4 = 43.
    assert dma.free_pages == 43


def test_the_failure_message_names_the_order_and_the_mode_like_warn_alloc() -> None:
    buddy = BuddyAllocator(16 * MIB)
    with pytest.raises(
        OutOfMemory, match=r"page allocation failure: order:10, mode:0xcc0\(GFP_KERNEL\)"
    ):
        exhaust(buddy, 10, GFP_KERNEL)
        buddy.alloc_pages(10, GFP_KERNEL)
    assert (
        buddy.log[-1]
        == "swapper/0: page allocation failure: order:10, mode:0xcc0(GFP_KERNEL), nodemask=(null)"
    )


def test_gfp_nowarn_suppresses_the_log_line_but_not_the_exception() -> None:
    buddy = BuddyAllocator(16 * MIB)
    exhaust(buddy, 10, GFP_KERNEL | GFP_NOWARN)
    log = list(buddy.log)
    with pytest.raises(OutOfMemory, match=r"mode:0x2cc0\(GFP_KERNEL\|__GFP_NOWARN\)"):
        buddy.alloc_pages(10, GFP_KERNEL | GFP_NOWARN)
    assert buddy.log == log == []
    assert buddy.failures == 2


# ----------------------------------------------------------------------------- migratetypes


def test_an_unmovable_allocation_claims_a_whole_movable_pageblock_and_keeps_using_it() -> None:
    buddy = BuddyAllocator(16 * MIB)
    # No unmovable free blocks at boot: __rmqueue_fallback() steals the largest movable
    # block (o10 at 1024) and, being >= pageblock_order, takes both its pageblocks.
    assert buddy.alloc_pages(0, GFP_KERNEL) == 1024
    assert buddy.pageblock_mt[1024 >> PAGEBLOCK_ORDER] == U
    assert buddy.pageblock_mt[1536 >> PAGEBLOCK_ORDER] == U
    assert buddy.steals == 1
    # Later unmovable allocations are served from the claimed blocks without stealing.
    assert buddy.alloc_pages(2, GFP_KERNEL) == 1028
    assert buddy.alloc_pages(0, GFP_KERNEL) == 1025
    assert buddy.steals == 1
    others = [mt for i, mt in enumerate(buddy.pageblock_mt) if i not in (2, 3)]
    assert set(others) == {M}


def _16mib_with_unmovable_big_blocks_and_no_movable_ones() -> BuddyAllocator:
    """16 MiB where [1024, 3584) is unmovable and free, and every movable block is taken."""
    buddy = BuddyAllocator(16 * MIB)
    u1 = buddy.alloc_pages(10, GFP_KERNEL)  # steals 1024 (pageblocks 2-3)
    u2 = buddy.alloc_pages(10, GFP_KERNEL)  # steals 2048 (pageblocks 4-5)
    u3 = buddy.alloc_pages(9, GFP_KERNEL)  # steals 3072 (pageblock 6)
    assert (u1, u2, u3) == (1024, 2048, 3072)
    for pfn, order in ((u1, 10), (u2, 10), (u3, 9)):
        buddy.free_pages(pfn, order)
    taken = [buddy.alloc_pages(o, GFP_HIGHUSER_MOVABLE) for o in (8, 8, 7, 6)]
    assert taken == [768, 3584, 3840, 3968]
    assert {mt for _, mt in buddy.free_block.values()} == {U}
    return buddy


def test_a_movable_request_takes_the_smallest_fallback_block_when_none_can_be_claimed() -> None:
    buddy = _16mib_with_unmovable_big_blocks_and_no_movable_ones()
    # Cut pageblock 6 (3072, o9) into four o1 and 63 o3 unmovable allocations, then free one
    # o1 (3074) and 31 o3 blocks whose buddies stay allocated: 250 free pages, no block of
    # order >= 4 in pageblock 6.
    o1 = [buddy.alloc_pages(1, GFP_KERNEL) for _ in range(4)]
    o3 = [buddy.alloc_pages(3, GFP_KERNEL) for _ in range(63)]
    assert o1 == [3072, 3074, 3076, 3078] and sorted(o3) == list(range(3080, 3584, 8))
    buddy.free_pages(3074, 1)
    for pfn in range(3088, 3584, 16):
        buddy.free_pages(pfn, 3)
    # Take the two o10 blocks so that nothing of order >= 4 is left to fall back on.
    assert sorted(buddy.alloc_pages(10, GFP_KERNEL) for _ in range(2)) == [1024, 2048]
    assert buddy.zones[ZONE_DMA].free_pages == 250
    # The largest fallback block is o3 < pageblock_order / 2, so a movable request cannot
    # claim the block: it steals the smallest block that fits (o1 at 3074), nothing more.
    assert buddy.alloc_pages(0, GFP_HIGHUSER_MOVABLE) == 3074
    assert buddy.free_block[3075] == (0, M)
    assert buddy.pageblock_mt[6] == U
    assert all(mt == U for p, (_, mt) in buddy.free_block.items() if p != 3075)


def test_a_movable_request_claims_the_pageblock_of_a_fallback_block_of_order_4_or_more() -> None:
    buddy = _16mib_with_unmovable_big_blocks_and_no_movable_ones()
    assert sorted(buddy.alloc_pages(10, GFP_KERNEL) for _ in range(2)) == [1024, 2048]
    assert buddy.alloc_pages(7, GFP_KERNEL) == 3072  # leaves 3200 (o7), 3328 (o8): 384 free
    # Largest fallback block: o8 at 3328 -> can_steal; 384 free pages >= 256: the pageblock
    # becomes movable, and the smallest movable block (3200) serves the request.
    assert buddy.alloc_pages(0, GFP_HIGHUSER_MOVABLE) == 3200
    assert buddy.pageblock_mt[6] == M


# ----------------------------------------------------------------------------- per-CPU lists


def test_a_page_freed_on_a_cpu_is_reused_first_by_that_cpu() -> None:
    buddy = BuddyAllocator(64 * MIB, nr_cpus=2)
    page = buddy.alloc_pages(0, GFP_KERNEL, cpu=0)
    buddy.free_pages(page, 0, cpu=1)
    assert buddy.alloc_pages(0, GFP_KERNEL, cpu=0) != page
    assert buddy.alloc_pages(0, GFP_KERNEL, cpu=1) == page


def test_pages_on_per_cpu_lists_are_not_counted_as_free() -> None:
    buddy = BuddyAllocator(64 * MIB, nr_cpus=2)
    page = buddy.alloc_pages(0, GFP_KERNEL)
    before = buddy.nr_free_pages()
    buddy.free_pages(page, 0, cpu=1)
    assert buddy.nr_free_pages() == before  # NR_FREE_PAGES leaves pcp pages out
    assert buddy.nr_pcp_pages() == 1
    assert page in buddy.zones[ZONE_DMA32].pcp[1].lists[U]
    assert page not in buddy.free_block


def test_drain_all_pages_puts_per_cpu_pages_back_on_the_free_lists() -> None:
    buddy = BuddyAllocator(16 * MIB, nr_cpus=2)
    pages = [buddy.alloc_pages(0, GFP_HIGHUSER_MOVABLE, cpu=c % 2) for c in range(6)]
    for c, page in enumerate(pages):
        buddy.free_pages(page, 0, cpu=c % 2)
    assert buddy.nr_pcp_pages() == 6
    buddy.drain_all_pages()
    assert buddy.nr_pcp_pages() == 0
    assert free_orders(buddy) == BOOT_16MIB  # merged all the way back


def test_a_per_cpu_list_that_reaches_high_gives_pages_back_to_the_zone() -> None:
    buddy = BuddyAllocator(16 * MIB)
    pcp = buddy.zones[ZONE_DMA].pcp[0]
    pages = [buddy.alloc_pages(0, GFP_HIGHUSER_MOVABLE) for _ in range(pcp.high + 10)]
    for page in pages:
        buddy.free_pages(page, 0)
        assert pcp.count < pcp.high
    assert buddy.nr_free_pages() + pcp.count == 3264


def test_alloc_pages_bulk_returns_distinct_order_0_pages() -> None:
    buddy = BuddyAllocator(64 * MIB)
    pfns = buddy.alloc_pages_bulk(8, GFP_KERNEL)
    assert len(set(pfns)) == 8
    assert all(buddy.allocated[p] == 0 for p in pfns)


def test_a_short_bulk_allocation_returns_what_it_got_and_is_no_failure() -> None:
    buddy = BuddyAllocator(16 * MIB)
    pfns = buddy.alloc_pages_bulk(5000, GFP_KERNEL)
    assert 0 < len(pfns) < 5000
    assert buddy.failures == 0 and buddy.log == []
    with pytest.raises(OutOfMemory):
        buddy.alloc_pages_bulk(1, GFP_KERNEL)  # not even one page: that is a failure
    assert buddy.failures == 1


# ----------------------------------------------------------------------------- bad input


@pytest.fixture
def busy() -> BuddyAllocator:
    """64 MiB, 2 CPUs, with allocations of several orders and a page on a per-CPU list."""
    buddy = BuddyAllocator(64 * MIB, nr_cpus=2)
    for order in (0, 0, 1, 3, 10):
        buddy.alloc_pages(order, GFP_KERNEL)
    buddy.alloc_pages(2, GFP_DMA)
    spare = buddy.alloc_pages(0, GFP_HIGHUSER_MOVABLE, cpu=1)
    buddy.free_pages(spare, 0, cpu=1)
    return buddy


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"order": 11}, ValueError),
        ({"order": -1}, ValueError),
        ({"order": True}, TypeError),
        ({"order": 1.0}, TypeError),
        ({"order": "1"}, TypeError),
        ({"gfp": GFP_DMA | GFP_DMA32}, ValueError),  # two zone modifiers: GFP_ZONE_BAD
        ({"gfp": GFP_KERNEL | (1 << 30)}, ValueError),
        ({"gfp": -1}, ValueError),
        ({"gfp": "GFP_KERNEL"}, TypeError),
        pytest.param({"gfp": True}, TypeError),
        pytest.param({"gfp": 1.0}, TypeError),
        ({"gfp": 2.0}, TypeError),  # not cached yet: check_gfp() sees it
        ({"cpu": 2}, ValueError),
        ({"cpu": -1}, ValueError),
        ({"cpu": True}, ValueError),
    ],
)
def test_bad_alloc_arguments_raise_and_change_nothing(
    busy: BuddyAllocator, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    call = {"order": 0, "gfp": GFP_KERNEL, "cpu": 0, **kwargs}
    before = snapshot(busy)
    with pytest.raises(error):
        busy.alloc_pages(**call)
    assert snapshot(busy) == before


@pytest.mark.parametrize(
    ("nr", "kwargs"),
    [(0, {}), (-1, {}), (True, {}), (2.0, {}), (4, {"gfp": GFP_DMA | GFP_DMA32}), (4, {"cpu": 5})],
)
def test_bad_bulk_arguments_raise_and_change_nothing(
    busy: BuddyAllocator, nr: Any, kwargs: dict[str, Any]
) -> None:
    before = snapshot(busy)
    with pytest.raises((ValueError, TypeError)):
        busy.alloc_pages_bulk(nr, **kwargs)
    assert snapshot(busy) == before


def _an_allocated(buddy: BuddyAllocator, order: int) -> int:
    return next(p for p, o in buddy.allocated.items() if o == order)


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("outside RAM", InvalidFree),
        ("negative pfn", InvalidFree),
        ("reserved pfn", InvalidFree),
        ("middle of a block", InvalidFree),
        ("wrong order", InvalidFree),
        ("never allocated, free", DoubleFree),
        ("double free of a page on a per-CPU list", DoubleFree),
        ("double free of a block", DoubleFree),
        ("str pfn", TypeError),
        ("None pfn", TypeError),
        ("fractional pfn", TypeError),
        ("order 11", ValueError),
        ("order -1", ValueError),
        ("cpu out of range", ValueError),
    ],
)
def test_bad_frees_raise_the_documented_error_and_change_nothing(
    busy: BuddyAllocator, case: str, error: type[Exception]
) -> None:
    o3 = _an_allocated(busy, 3)
    o10 = _an_allocated(busy, 10)
    pcp_page = next(p for z in busy.zones for c in z.pcp for lst in c.lists for p in lst)
    freed = busy.alloc_pages(3, GFP_KERNEL)
    busy.free_pages(freed, 3)
    args: dict[str, tuple[Any, ...]] = {
        "outside RAM": (64 * MIB, 0),
        "negative pfn": (-1, 0),
        "reserved pfn": (10, 0),  # the first MiB
        "middle of a block": (o3 + 1, 0),
        "wrong order": (o10, 9),
        "never allocated, free": (16000, 0),
        "double free of a page on a per-CPU list": (pcp_page, 0),
        "double free of a block": (freed, 3),
        "str pfn": ("0x100", 0),
        "None pfn": (None, 0),
        "fractional pfn": (o3 + 0.5, 0),
        "order 11": (o10, 11),
        "order -1": (o10, -1),
        "cpu out of range": (o3, 3, 2),
    }
    before = snapshot(busy)
    with pytest.raises(error):
        busy.free_pages(*args[case])
    assert snapshot(busy) == before


def test_double_free_is_an_invalid_free() -> None:
    assert issubclass(DoubleFree, InvalidFree)


def test_a_float_pfn_equal_to_an_allocated_block_raises_and_changes_nothing() -> None:
    buddy = BuddyAllocator(64 * MIB)
    pfn = buddy.alloc_pages(3, GFP_DMA)
    before = snapshot(buddy)
    with pytest.raises(TypeError):
        buddy.free_pages(float(pfn), 3)  # type: ignore[arg-type]
    assert snapshot(buddy) == before


def test_order_true_is_rejected_by_free_pages_too() -> None:
    buddy = BuddyAllocator(64 * MIB)
    pfn = buddy.alloc_pages(1, GFP_DMA)
    before = snapshot(buddy)
    with pytest.raises(TypeError):
        buddy.free_pages(pfn, True)
    assert snapshot(buddy) == before


# ----------------------------------------------------------------------------- timing


def test_overlapping_operations_on_one_zone_contend_for_its_lock() -> None:
    buddy = BuddyAllocator(64 * MIB, nr_cpus=2)
    _, t1 = buddy.timed_alloc_pages(3, GFP_KERNEL, 0, at=0)
    assert buddy.lock_contended == 0
    _, t2 = buddy.timed_alloc_pages(3, GFP_KERNEL, 1, at=0)  # lock held until t1
    assert buddy.lock_contended == 1
    assert buddy.lock_wait_cycles == t1
    assert t2 == t1 + LOCKED_CYCLES  # an o3 block was on the list: no split to pay for


def test_operations_on_different_zones_or_times_do_not_contend() -> None:
    buddy = BuddyAllocator(64 * MIB, nr_cpus=2)
    _, t1 = buddy.timed_alloc_pages(3, GFP_KERNEL, 0, at=0)  # DMA32's lock
    buddy.timed_alloc_pages(3, GFP_DMA, 1, at=0)  # DMA's lock: free
    buddy.timed_alloc_pages(3, GFP_KERNEL, 1, at=t1)  # DMA32's, released at t1
    assert buddy.lock_contended == 0
    assert buddy.lock_acquisitions == 3


# ----------------------------------------------------------------------------- property test

GFPS = (GFP_KERNEL, GFP_ATOMIC, GFP_DMA, GFP_DMA32, GFP_HIGHUSER_MOVABLE)
ORDERS = st.sampled_from([0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 7, 9, 10])


class BuddyMachine(RuleBasedStateMachine):
    """Random alloc/free/bulk/drain sequences; the books must balance after every step."""

    NR_PAGES = 24 * MIB  # DMA [0, 4096) and a small DMA32 [4096, 6144): runs out quickly
    ARCH = "x86_64"
    NR_CPUS = 2

    def __init__(self) -> None:
        super().__init__()
        self.buddy = BuddyAllocator(self.NR_PAGES, arch=self.ARCH, nr_cpus=self.NR_CPUS)
        self.live: dict[int, int] = {}
        self.reserved = sum(r.end_pfn - r.start_pfn for r in self.buddy.reservations)
        self.highmem_start = self.buddy.zones[ZONE_HIGHMEM].start_pfn

    def check_zone(self, pfn: int, order: int, gfp: int) -> None:
        end = pfn + (1 << order)
        if gfp == GFP_DMA:
            assert end <= 4096, (pfn, order)
        elif gfp == GFP_DMA32 and self.ARCH == "x86_64":
            assert end <= 1048576, (pfn, order)
        elif gfp != GFP_HIGHUSER_MOVABLE and self.ARCH == "i386":
            assert end <= self.highmem_start, (pfn, order)  # lowmem only

    @rule(order=ORDERS, gfp=st.sampled_from(GFPS), cpu=st.integers(0, 1))
    def alloc(self, order: int, gfp: int, cpu: int) -> None:
        try:
            pfn = self.buddy.alloc_pages(order, gfp, cpu)
        except OutOfMemory:
            return
        assert pfn % (1 << order) == 0
        assert pfn not in self.live
        self.check_zone(pfn, order, gfp)
        self.live[pfn] = order

    @rule(n=st.integers(1, 40), gfp=st.sampled_from(GFPS), cpu=st.integers(0, 1))
    def bulk(self, n: int, gfp: int, cpu: int) -> None:
        try:
            pfns = self.buddy.alloc_pages_bulk(n, gfp, cpu)
        except OutOfMemory:
            return
        assert 1 <= len(pfns) <= n and len(set(pfns)) == len(pfns)
        for pfn in pfns:
            assert pfn not in self.live
            self.check_zone(pfn, 0, gfp)
            self.live[pfn] = 0

    @precondition(lambda self: self.live)
    @rule(data=st.data(), cpu=st.integers(0, 1))
    def free(self, data: st.DataObject, cpu: int) -> None:
        pfn = data.draw(st.sampled_from(sorted(self.live)))
        self.buddy.free_pages(pfn, self.live.pop(pfn), cpu)

    @rule(pfn=st.integers(-2, 24 * MIB + 2), order=st.integers(0, MAX_PAGE_ORDER))
    def bad_free(self, pfn: int, order: int) -> None:
        if self.live.get(pfn) == order:
            return
        before = snapshot(self.buddy)
        with pytest.raises(InvalidFree):
            self.buddy.free_pages(pfn, order)
        assert snapshot(self.buddy) == before

    @rule()
    def drain(self) -> None:
        self.buddy.drain_all_pages()
        assert self.buddy.nr_pcp_pages() == 0

    @invariant()
    def books_balance(self) -> None:
        b = self.buddy
        b.check_invariants()
        assert b.allocated == self.live
        free = sum(1 << o for o, _ in b.free_block.values())
        pcp = sum(len(lst) for z in b.zones for p in z.pcp for lst in p.lists)
        allocated = sum(1 << o for o in self.live.values())
        assert free + pcp + allocated + self.reserved == self.NR_PAGES

    @invariant()
    def live_allocations_do_not_overlap(self) -> None:
        end = -1
        for pfn in sorted(self.live):
            assert pfn >= end, f"{pfn:#x} overlaps the block ending at {end:#x}"
            end = pfn + (1 << self.live[pfn])

    @invariant()
    def free_blocks_are_aligned_and_inside_one_zone(self) -> None:
        b = self.buddy
        for pfn, (order, _) in b.free_block.items():
            assert pfn % (1 << order) == 0
            assert b.zone_of(pfn) is b.zone_of(pfn + (1 << order) - 1)
            assert pfn not in self.live
            assert not any(r.start_pfn <= pfn < r.end_pfn for r in b.reservations)

    def teardown(self) -> None:
        # Freeing everything and draining the per-CPU lists must merge back to the very same
        # blocks as at boot: buddy merging is canonical. Migratetypes may differ (a stolen
        # pageblock stays unmovable after its pages come back), so compare (pfn, order) only.
        for pfn, order in list(self.live.items()):
            self.buddy.free_pages(pfn, order)
        self.buddy.drain_all_pages()
        boot = {p: o for p, (o, _) in self.buddy.boot_free_blocks.items()}
        assert free_orders(self.buddy) == boot
        for zone in self.buddy.zones:
            assert zone.free_pages == zone.managed_pages


BuddyMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBuddyStateMachine = BuddyMachine.TestCase


class I386BuddyMachine(BuddyMachine):
    """The same rules on an i386 machine with 64 MiB of HighMem above 896 MiB."""

    NR_PAGES = 960 * MIB
    ARCH = "i386"


I386BuddyMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestI386BuddyStateMachine = I386BuddyMachine.TestCase
