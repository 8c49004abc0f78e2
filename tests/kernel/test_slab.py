"""The SLUB model: layout and order as Linux computes them, per-CPU slabs, partial lists,
debugging, errors that change nothing, and timing."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hwsim
from hwsim.devices.ram import RamModel
from hwsim.kernel import gfp as G
from hwsim.kernel.buddy import BuddyAllocator
from hwsim.kernel.layout import layout_for
from hwsim.kernel.slab import (
    ALLOC_FASTPATH_CYCLES,
    FREE_FASTPATH_CYCLES,
    LIST_LOCK_CYCLES,
    POISON_END,
    POISON_FREE,
    POISON_INUSE,
    SLAB_CACHE_DMA,
    SLAB_CONSISTENCY_CHECKS,
    SLAB_HWCACHE_ALIGN,
    SLAB_PANIC,
    SLAB_POISON,
    SLAB_RECLAIM_ACCOUNT,
    SLAB_RED_ZONE,
    SLAB_STORE_USER,
    SLUB_RED_INACTIVE,
    KmemCache,
    SlabAllocator,
    SlabCacheBusy,
    calculate_alignment,
    calculate_order,
    get_order,
    min_partial_for,
    parse_slub_debug,
)

MIB = 1 << 20


def make_slab(
    cpus: int = 2, *, ram_size: int = 64 * MIB, slub_debug: bool | str = False
) -> SlabAllocator:
    ram = RamModel(size=ram_size)
    buddy = BuddyAllocator(nr_pages=ram_size >> 12, nr_cpus=cpus)
    return SlabAllocator(buddy, ram, layout_for("x86_64", ram_size), cpus, slub_debug=slub_debug)


def snapshot(slab: SlabAllocator) -> object:
    """Everything an erroneous call must leave alone."""
    caches = [
        (
            c.name,
            c.nr_slabs,
            c.total_objects,
            list(c.partial),
            [list(fl) for fl in c.cpu_freelist],
            list(c.cpu_slab),
        )
        for c in slab.slab_caches
    ]
    return (
        slab.statistics(),
        dict(slab.buddy.free_block),
        dict(slab.buddy.allocated),
        caches,
        dict(slab._live),
    )


def phys(slab: SlabAllocator, addr: int) -> int:
    return slab.layout.virt_to_phys(addr)


# ---------------------------------------------------------------------- layout and order


@pytest.mark.parametrize(
    ("cpus", "size", "order", "objects"),
    [
        # min_objects = 4 * (fls(nr_cpus) + 1); with 2 CPUs fls(2) = 2, so 12.
        # size 8: get_order(12 * 8 = 96) = 0; 4096 % 8 = 0 <= 4096/16 -> order 0, 4096/8.
        (2, 8, 0, 512),
        # size 96: get_order(1152) = 0; 4096 % 96 = 64 <= 256 -> order 0, 42 objects.
        (2, 96, 0, 42),
        # size 192: get_order(2304) = 0; 4096 % 192 = 64 <= 256 -> order 0, 21 objects.
        (2, 192, 0, 21),
        # size 512: get_order(6144) = 1; 8192 % 512 = 0 -> order 1, 16 objects.
        (2, 512, 1, 16),
        # size 1024: get_order(12288) = 2; 16384 % 1024 = 0 -> order 2, 16 objects.
        (2, 1024, 2, 16),
        # size 4096: an order-3 slab holds 8, so min_objects = min(12, 8) = 8;
        # get_order(32768) = 3 -> order 3, 8 objects.
        (2, 4096, 3, 8),
        # size 8192: min_objects = min(12, 32768 / 8192 = 4) = 4 -> order 3, 4 objects.
        (2, 8192, 3, 4),
        # size 700 rounds up to a word: 704; get_order(12 * 704 = 8448) = 2;
        # 16384 % 704 = 192 <= 1024 -> order 2, 16384 / 704 = 23 objects.
        (2, 700, 2, 23),
        # size 3000: min_objects = min(12, 32768 / 3000 = 10) = 10; get_order(30000) = 3;
        # 32768 % 3000 = 2768 > 32768/16 = 2048, but <= 32768/8 -> order 3, 10 objects.
        (2, 3000, 3, 10),
        # 1 CPU: min_objects = 4 * (fls(1) + 1) = 8. size 1024: get_order(8192) = 1.
        (1, 1024, 1, 8),
        # 1 CPU, size 1500: get_order(12000) = 2, but 16384 % 1500 = 1384 > 1024; order 3:
        # 32768 % 1500 = 1268 <= 2048 -> order 3, 21 objects.
        (1, 1500, 3, 21),
        # 4 CPUs: fls(4) = 3, min_objects 16. size 512: get_order(8192) = 1 -> 16 objects.
        (4, 512, 1, 16),
        # size 40000: nothing fits in order 3, min_objects = max(0, 1) = 1; get_order(40000)
        # = 4 > slab_max_order for every fraction -> the last resort, get_order(size) = 4.
        (2, 40000, 4, 1),
    ],
)
def test_slab_order_and_objects_per_slab_are_linuxs(
    cpus: int, size: int, order: int, objects: int
) -> None:
    cache = make_slab(cpus).kmem_cache_create("test", size)
    assert (cache.order, cache.objects_per_slab) == (order, objects)
    assert cache.pages_per_slab == 1 << order


def test_calculate_order_is_the_v6_8_formula() -> None:
    assert calculate_order(192, 2) == 0
    assert calculate_order(512, 2) == 1
    assert calculate_order(8192, 2) == 3
    # slab_min_order=6: an order-6 slab would hold 262144 / 8 = 32768 objects, more than
    # slab->objects (15 bits) counts: the order drops to get_order(8 * 32767) - 1 = 5.
    assert calculate_order(8, 2, slab_min_order=6, slab_max_order=6) == 5


def test_get_order_is_the_smallest_order_holding_the_size() -> None:
    assert [get_order(s) for s in (1, 4096, 4097, 8192, 8193, 4 * MIB)] == [0, 0, 1, 1, 2, 10]


def test_object_size_is_rounded_up_to_a_word() -> None:
    slab = make_slab()
    cache = slab.kmem_cache_create("odd", 13)
    assert (cache.object_size, cache.size, cache.align) == (13, 16, 8)


def test_hwcache_align_uses_the_cache_line_while_the_object_is_bigger_than_half_of_it() -> None:
    slab = make_slab()
    # 100 > 64/2: aligned to 64, size ALIGN(104, 64) = 128.
    big = slab.kmem_cache_create("big", 100, flags=SLAB_HWCACHE_ALIGN)
    assert (big.align, big.size) == (64, 128)
    addrs = [slab.kmem_cache_alloc(big) for _ in range(40)]
    assert all(a % 64 == 0 for a in addrs)
    # 20 <= 32 but > 16: ralign halves once, to 32.
    small = slab.kmem_cache_create("small", 20, flags=SLAB_HWCACHE_ALIGN)
    assert (small.align, small.size) == (32, 32)
    assert calculate_alignment(SLAB_HWCACHE_ALIGN, 0, 8) == 8
    assert calculate_alignment(0, 0, 100) == 8


def test_an_explicit_alignment_is_kept() -> None:
    slab = make_slab()
    cache = slab.kmem_cache_create("aligned", 40, align=256)
    assert cache.size == 256
    assert all(slab.kmem_cache_alloc(cache) % 256 == 0 for _ in range(20))


def test_min_partial_is_half_the_log_of_the_size_clamped_to_5_10() -> None:
    assert [min_partial_for(s) for s in (8, 1024, 4096, 8192, 1 << 16, 1 << 22)] == [
        5,  # ilog2(8) / 2 = 1 -> 5
        5,  # 10 / 2 = 5
        6,  # 12 / 2 = 6
        6,  # 13 / 2 = 6
        8,  # 16 / 2 = 8
        10,  # 22 / 2 = 11 -> 10
    ]


def test_slub_debug_metadata_enlarges_objects_as_calculate_sizes_does() -> None:
    slab = make_slab(slub_debug=True)
    cache = slab.kmem_cache_create("dbg", 100)
    # 100 -> 104 (word); red zone already fits (104 != 100); inuse 104; poisoning moves
    # the free pointer behind it: 112; two struct track of 32: 176; right pad 8: 184;
    # left red zone 8: 192.
    assert (cache.inuse, cache.offset, cache.red_left_pad, cache.size) == (104, 104, 8, 192)
    assert cache.flags & SLAB_POISON and cache.flags & SLAB_STORE_USER
    assert cache.ksize == 100  # with red zones and poison only the object itself


def test_ksize_is_slab_ksize_of_the_cache() -> None:
    slab = make_slab()
    # Red zones or poison: only the object itself may be used.
    assert slab.kmem_cache_create("p", 100, flags=SLAB_POISON).ksize == 100
    assert slab.kmem_cache_create("z", 100, flags=SLAB_RED_ZONE).ksize == 100
    # Tracking data follows the object: up to s->inuse (104).
    assert slab.kmem_cache_create("u", 100, flags=SLAB_STORE_USER).ksize == 104
    # Otherwise all of s->size, alignment padding included.
    assert slab.kmem_cache_create("h", 100, flags=SLAB_HWCACHE_ALIGN).ksize == 128


def test_parse_slub_debug_knows_linuxs_letters() -> None:
    assert parse_slub_debug("PZ") == SLAB_POISON | SLAB_RED_ZONE
    assert parse_slub_debug("-") == 0
    with pytest.raises(ValueError, match="unknown option"):
        parse_slub_debug("Q")


# ---------------------------------------------------------------------- the memory pool


def test_a_freed_object_is_the_next_one_allocated_on_that_cpu() -> None:
    slab = make_slab()
    cache = slab.kmem_cache_create("pool", 64)
    a, b, c = (slab.kmem_cache_alloc(cache) for _ in range(3))
    slab.kmem_cache_free(cache, a)
    slab.kmem_cache_free(cache, b)
    assert slab.kmem_cache_alloc(cache) == b  # last in, first out
    assert slab.kmem_cache_alloc(cache) == a
    assert c not in (a, b)


def test_a_new_slab_hands_out_objects_in_address_order_within_its_pages() -> None:
    slab = make_slab()
    cache = slab.kmem_cache_create("ordered", 200)
    addrs = [slab.kmem_cache_alloc(cache) for _ in range(cache.objects_per_slab)]
    assert addrs == [addrs[0] + i * cache.size for i in range(len(addrs))]
    assert addrs[0] % (4096 << cache.order) == 0
    found = slab.find_object(addrs[5] + 3)
    assert found is not None and found[0] is cache and found[1].objects == len(addrs)


def test_two_cpus_allocate_from_different_slabs() -> None:
    slab = make_slab(cpus=2)
    cache = slab.kmem_cache_create("percpu", 128)
    a0 = slab.kmem_cache_alloc(cache, cpu=0)
    a1 = slab.kmem_cache_alloc(cache, cpu=1)
    s0, s1 = slab.object_slab(a0), slab.object_slab(a1)
    assert s0 is not None and s1 is not None and s0 is not s1
    assert (s0.cpu, s1.cpu) == (0, 1)
    assert cache.num_slabs == 2


def test_a_remote_free_reaches_the_owner_when_its_freelist_runs_dry() -> None:
    slab = make_slab(cpus=2)
    cache = slab.kmem_cache_create("remote", 256)  # 16 objects a slab
    a = slab.kmem_cache_alloc(cache, cpu=0)
    slab.kmem_cache_free(cache, a, cpu=1)  # into cpu 0's slab: slab->freelist
    assert slab.statistics().free_frozen == 1
    rest = [slab.kmem_cache_alloc(cache, cpu=0) for _ in range(cache.objects_per_slab - 1)]
    assert a not in rest
    assert slab.kmem_cache_alloc(cache, cpu=0) == a  # get_freelist()
    assert slab.statistics().alloc_refill == 1
    assert cache.num_slabs == 1


def test_empty_slabs_stay_on_the_partial_list_until_min_partial() -> None:
    slab = make_slab(cpus=2)
    cache = slab.kmem_cache_create("big", 4096)  # order 3, 8 objects, min_partial 6
    assert (cache.order, cache.objects_per_slab, cache.min_partial) == (3, 8, 6)
    allocated_before = slab.buddy.nr_allocated_pages()
    objs = [slab.kmem_cache_alloc(cache) for _ in range(80)]  # 10 slabs, the last is cpu 0's
    assert cache.num_slabs == 10
    for obj in objs:
        slab.kmem_cache_free(cache, obj)
    # Slabs 1..5 empty out while the partial list is shorter than 6: kept. Slabs 6..9 find
    # 6 slabs there (themselves included) and go back to the buddy allocator. Slab 10 is
    # cpu 0's active slab and stays too.
    assert cache.num_slabs == 6 and cache.nr_partial == 5
    assert all(s.inuse == 0 for s in cache.partial)
    assert slab.buddy.nr_allocated_pages() == allocated_before + 6 * 8
    assert slab.kmem_cache_shrink(cache) == 6 * 8
    assert cache.num_slabs == 0 and slab.buddy.nr_allocated_pages() == allocated_before


def test_shrink_moves_the_fullest_partial_slabs_to_the_head() -> None:
    slab = make_slab(cpus=2)
    cache = slab.kmem_cache_create("sorted", 1024)  # 16 objects a slab
    objs = [slab.kmem_cache_alloc(cache) for _ in range(80)]
    slabs = [slab.object_slab(objs[i * 16]) for i in range(5)]
    # 3, 1, 2 and 1 objects free in slabs 0..3; slab 4 is cpu 0's.
    for obj in objs[0:3] + objs[16:17] + objs[32:34] + objs[48:49]:
        slab.kmem_cache_free(cache, obj)
    assert list(cache.partial) == slabs[:4]
    assert slab.kmem_cache_shrink(cache) == 0  # nothing empty
    # One free object first (list_move() reverses slabs 1 and 3), then two, then three.
    assert list(cache.partial) == [slabs[3], slabs[1], slabs[2], slabs[0]]


def _two_partial_slabs(remote: bool) -> tuple[SlabAllocator, KmemCache, list[object]]:
    slab = make_slab(cpus=2)
    cache = slab.kmem_cache_create("deact", 64)  # 64 objects a slab
    objs = [slab.kmem_cache_alloc(cache) for _ in range(74)]  # slab A full, B cpu 0's
    slabs: list[object] = [slab.object_slab(objs[0]), slab.object_slab(objs[64])]
    for obj in objs[:40]:  # A: 40 free, more than SHRINK_PROMOTE_MAX, so not reordered
        slab.kmem_cache_free(cache, obj)
    if remote:
        slab.kmem_cache_free(cache, objs[70], cpu=1)  # into cpu 0's slab from cpu 1
    slab.kmem_cache_shrink(cache)  # flush_all() deactivates B
    return slab, cache, slabs


def test_a_deactivated_cpu_slab_joins_the_partial_list_at_the_head() -> None:
    _, cache, (a, b) = _two_partial_slabs(remote=False)
    assert list(cache.partial) == [b, a]  # DEACTIVATE_TO_HEAD


def test_a_cpu_slab_with_remote_frees_joins_the_partial_list_at_the_tail() -> None:
    _, cache, (a, b) = _two_partial_slabs(remote=True)
    assert list(cache.partial) == [a, b]  # DEACTIVATE_TO_TAIL


def test_slabinfo_counts_free_objects_of_cpu_slabs_as_active_like_linux() -> None:
    slab = make_slab()
    cache = slab.kmem_cache_create("info", 256)
    obj = slab.kmem_cache_alloc(cache)
    info = cache.slabinfo()
    assert (info.active_objs, info.num_objs, info.num_slabs) == (16, 16, 1)
    assert (info.objsize, info.objperslab, info.pagesperslab) == (256, 16, 1)
    assert cache.nr_allocated == 1
    slab.kmem_cache_shrink(cache)  # deactivates the cpu slab onto the partial list
    assert cache.active_objs == 1
    slab.kmem_cache_free(cache, obj)
    assert slab.slabinfo()[0].name == "info"


def test_the_ctor_runs_once_per_object_when_a_slab_is_set_up() -> None:
    slab = make_slab()
    seen: list[int] = []
    cache = slab.kmem_cache_create("ctor", 512, ctor=seen.append)
    first = slab.kmem_cache_alloc(cache)
    assert len(seen) == cache.objects_per_slab and seen[0] == first
    assert seen == sorted(seen)
    slab.kmem_cache_free(cache, first)
    slab.kmem_cache_alloc(cache)
    assert len(seen) == cache.objects_per_slab  # not on reuse


def test_a_failing_ctor_gives_the_pages_back() -> None:
    slab = make_slab()

    def ctor(addr: int) -> None:
        raise RuntimeError("ctor failed")

    cache = slab.kmem_cache_create("bad_ctor", 64, ctor=ctor)
    allocated = dict(slab.buddy.allocated)
    with pytest.raises(RuntimeError):
        slab.kmem_cache_alloc(cache)
    assert slab.buddy.allocated == allocated
    assert (cache.num_slabs, slab.nr_slab_pages(), slab.statistics().allocs) == (0, 0, 0)
    slab.buddy.drain_all_pages()  # the page went to the per-CPU list; now it merges back
    boot = {pfn: order for pfn, (order, _) in slab.buddy.boot_free_blocks.items()}
    assert {pfn: order for pfn, (order, _) in slab.buddy.free_block.items()} == boot


def test_zalloc_zeroes_the_object_that_plain_alloc_leaves_dirty() -> None:
    slab = make_slab()
    cache = slab.kmem_cache_create("zero", 100)
    obj = slab.kmem_cache_alloc(cache)
    slab.ram.write(phys(slab, obj), b"\xff" * 100)
    slab.kmem_cache_free(cache, obj)
    again = slab.kmem_cache_alloc(cache)
    assert again == obj and slab.ram.read(phys(slab, obj), 100) == b"\xff" * 100
    slab.kmem_cache_free(cache, again)
    zeroed = slab.kmem_cache_zalloc(cache)
    assert zeroed == obj and slab.ram.read(phys(slab, obj), 100) == bytes(100)
    slab.ram.write(phys(slab, obj), b"\xff" * 100)
    slab.kmem_cache_free(cache, zeroed)
    assert slab.ram.read(
        phys(slab, slab.kmem_cache_alloc(cache, G.GFP_KERNEL | G.GFP_ZERO)), 100
    ) == bytes(100)


def test_dma_caches_take_their_slabs_from_zone_dma() -> None:
    slab = make_slab()
    cache = slab.kmem_cache_create("isa_buffers", 512, flags=SLAB_CACHE_DMA)
    assert cache.allocflags & G.GFP_DMA
    for _ in range(100):
        assert phys(slab, slab.kmem_cache_alloc(cache)) < 16 * MIB


def test_reclaimable_caches_count_as_sreclaimable() -> None:
    slab = make_slab()
    cache = slab.kmem_cache_create("dentry", 192, flags=SLAB_RECLAIM_ACCOUNT)
    other = slab.kmem_cache_create("task", 192)
    slab.kmem_cache_alloc(cache)
    slab.kmem_cache_alloc(other)
    assert slab.nr_slab_reclaimable == cache.nr_pages == 1
    assert slab.nr_slab_unreclaimable == other.nr_pages == 1
    page = slab.object_slab(slab.kmem_cache_alloc(cache))
    assert page is not None
    assert slab.buddy.pageblock_mt[page.pfn >> 9] == G.MIGRATE_RECLAIMABLE


def test_a_failed_high_order_slab_falls_back_to_the_smallest_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slab = make_slab()
    cache = slab.kmem_cache_create("fallback", 8192)  # order 3, min order 1
    real = slab.buddy.alloc_pages

    def no_high_orders(order: int = 0, gfp: int = G.GFP_KERNEL, cpu: int = 0) -> int:
        if order > 1:
            raise hwsim.OutOfMemory("fragmented")
        return real(order, gfp, cpu)

    monkeypatch.setattr(slab.buddy, "alloc_pages", no_high_orders)
    obj = slab.kmem_cache_alloc(cache)
    page = slab.object_slab(obj)
    assert page is not None and (page.order, page.objects) == (1, 1)
    assert slab.statistics().order_fallback == 1
    assert slab.object_slab(slab.kmem_cache_alloc(cache)) is not page


# ---------------------------------------------------------------------- debugging


def test_poisoned_objects_read_6b_with_a5_last_and_slab_padding_reads_5a() -> None:
    slab = make_slab()
    cache = slab.kmem_cache_create("poisoned", 100, flags=SLAB_POISON)
    obj = slab.kmem_cache_alloc(cache)
    poison = bytes([POISON_FREE]) * 99 + bytes([POISON_END])
    assert slab.ram.read(phys(slab, obj), 100) == poison  # SLUB poisons allocations too
    page = slab.object_slab(obj)
    assert page is not None
    tail = page.objects * cache.size
    assert slab.ram.read(phys(slab, page.base) + tail, 4096 - tail) == bytes([POISON_INUSE]) * (
        4096 - tail
    )
    slab.ram.write(phys(slab, obj), b"data")
    slab.kmem_cache_free(cache, obj)
    assert slab.ram.read(phys(slab, obj), 100) == poison


def test_red_zones_are_cc_while_allocated_and_bb_while_free() -> None:
    slab = make_slab()
    cache = slab.kmem_cache_create("rz", 64, flags=SLAB_RED_ZONE)
    # 64 -> 72 (a word of right red zone); 8 bytes of padding, 8 of left red zone: 88.
    assert (cache.inuse, cache.red_left_pad, cache.size) == (72, 8, 88)
    obj = slab.kmem_cache_alloc(cache)
    assert slab.ram.read(phys(slab, obj) - 8, 8) == b"\xcc" * 8
    assert slab.ram.read(phys(slab, obj) + 64, 8) == b"\xcc" * 8
    slab.kmem_cache_free(cache, obj)
    assert slab.ram.read(phys(slab, obj) + 64, 8) == bytes([SLUB_RED_INACTIVE]) * 8


def test_a_clobbered_red_zone_is_reported_and_the_object_is_not_freed() -> None:
    slab = make_slab()
    cache = slab.kmem_cache_create("clobber", 64, flags=SLAB_RED_ZONE | SLAB_CONSISTENCY_CHECKS)
    obj = slab.kmem_cache_alloc(cache)
    slab.ram.write(phys(slab, obj) + 64, b"!")  # one byte past the end
    slab.kmem_cache_free(cache, obj)
    assert "BUG clobber (Not tainted): Right Redzone overwritten" in slab.log
    assert any(line.startswith("FIX clobber: Restoring Right Redzone") for line in slab.log)
    assert f"FIX clobber: Object at {obj:#x} not freed" in slab.log
    assert slab.slab_errors == 1 and cache.nr_allocated == 1
    assert slab.ram.read(phys(slab, obj) + 64, 1) == b"\xcc"  # repaired


def test_a_write_after_free_is_found_when_the_object_is_allocated_again() -> None:
    slab = make_slab(slub_debug=True)
    cache = slab.kmem_cache_create("uaf", 128)
    obj = slab.kmem_cache_alloc(cache)
    slab.kmem_cache_free(cache, obj)
    slab.ram.write(phys(slab, obj) + 10, b"\x00")
    assert slab.kmem_cache_alloc(cache) == obj
    assert "BUG uaf (Not tainted): Poison overwritten" in slab.log
    assert slab.slab_errors == 1


def test_slub_debug_caches_take_the_list_lock_on_every_operation() -> None:
    slab = make_slab(slub_debug=True)
    cache = slab.kmem_cache_create("locked", 64)
    objs = [slab.kmem_cache_alloc(cache) for _ in range(10)]
    for obj in objs:
        slab.kmem_cache_free(cache, obj)
    stats = slab.statistics()
    assert stats.alloc_fastpath == stats.free_fastpath == 0
    assert stats.list_lock_acquisitions >= 20
    slab.check_invariants()


# ---------------------------------------------------------------------- errors


def test_a_double_free_raises_object_already_free_and_changes_nothing() -> None:
    slab = make_slab()
    cache = slab.kmem_cache_create("dentry", 192)
    obj = slab.kmem_cache_alloc(cache)
    slab.kmem_cache_alloc(cache)
    slab.kmem_cache_free(cache, obj)
    before = snapshot(slab)
    with pytest.raises(hwsim.DoubleFree, match=r"BUG dentry \(Not tainted\): Object already free"):
        slab.kmem_cache_free(cache, obj)
    assert snapshot(slab) == before


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("other_cache", r"Wrong slab cache\. dentry but object 0x[0-9a-f]+ is from inode_cache"),
        ("middle", "Invalid object pointer"),
        ("not_slab", "Object is not a Slab page"),
        ("vmalloc", "vfree"),
        ("null", "Object is not a Slab page"),
    ],
)
def test_freeing_what_is_not_an_object_of_the_cache_raises_invalid_free_and_changes_nothing(
    target: str, match: str
) -> None:
    slab = make_slab()
    dentry = slab.kmem_cache_create("dentry", 192)
    inode = slab.kmem_cache_create("inode_cache", 600)
    mine = slab.kmem_cache_alloc(dentry)
    theirs = slab.kmem_cache_alloc(inode)
    addr = {
        "other_cache": theirs,
        "middle": mine + 8,
        "not_slab": slab.layout.pfn_to_virt(slab.buddy.alloc_pages(0)),
        "vmalloc": slab.layout.vmalloc_start,
        "null": 0,
    }[target]
    before = snapshot(slab)
    with pytest.raises(hwsim.InvalidFree, match=match) as info:
        slab.kmem_cache_free(dentry, addr)
    assert not isinstance(info.value, hwsim.DoubleFree)
    assert snapshot(slab) == before


def test_destroying_a_cache_with_objects_raises_and_keeps_the_cache() -> None:
    slab = make_slab()
    allocated = slab.buddy.nr_allocated_pages()
    cache = slab.kmem_cache_create("busy", 256)
    obj = slab.kmem_cache_alloc(cache)
    before = snapshot(slab)
    with pytest.raises(SlabCacheBusy) as info:
        slab.kmem_cache_destroy(cache)
    assert str(info.value) == "kmem_cache_destroy busy: Slab cache still has objects"
    assert isinstance(info.value, hwsim.HwsimError)
    assert snapshot(slab) == before and cache in slab.slab_caches
    slab.kmem_cache_free(cache, obj)
    slab.kmem_cache_destroy(cache)
    assert cache not in slab.slab_caches
    assert slab.buddy.nr_allocated_pages() == allocated
    with pytest.raises(ValueError, match="destroyed"):
        slab.kmem_cache_alloc(cache)
    slab.kmem_cache_destroy(None)  # a no-op, as in Linux


def test_out_of_memory_comes_from_the_page_allocator_and_changes_no_slab_state() -> None:
    slab = make_slab(ram_size=16 * MIB)
    cache = slab.kmem_cache_create("hog", 2048)
    objs = []
    with pytest.raises(hwsim.OutOfMemory):
        while True:
            objs.append(slab.kmem_cache_alloc(cache))
    assert len(objs) > 1000
    slab.buddy.drain_all_pages()
    before = snapshot(slab)
    with pytest.raises(hwsim.OutOfMemory, match="SLUB: Unable to allocate memory") as info:
        slab.kmem_cache_alloc(cache)
    assert "cache: hog, object size: 2048" in str(info.value)
    assert snapshot(slab) == before
    for obj in objs:
        slab.kmem_cache_free(cache, obj)
    slab.check_invariants()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"size": 0}, ValueError, "failed with error -22"),
        ({"size": -8}, ValueError, "integrity check failed"),
        ({"size": (4 << 20) + 1}, ValueError, "KMALLOC_MAX_SIZE"),
        ({"size": "64"}, TypeError, "size must be an int"),
        ({"size": True}, TypeError, "size must be an int"),
        ({"size": 64, "align": 24}, ValueError, "power of two"),
        ({"size": 64, "flags": 0x1}, ValueError, "unknown"),
        ({"size": 64, "flags": 0x1 | SLAB_PANIC}, ValueError, "Kernel panic"),
        ({"size": 64, "ctor": 5}, TypeError, "callable"),
        ({"size": 64, "name": ""}, ValueError, "name"),
        ({"size": 64, "name": 7}, TypeError, "name"),
    ],
)
def test_kmem_cache_create_rejects_bad_arguments(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    slab = make_slab()
    args = {"name": "bad", **kwargs}
    with pytest.raises(error, match=match):
        slab.kmem_cache_create(**args)  # type: ignore[arg-type]
    assert slab.slab_caches == []


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda s, c: s.kmem_cache_alloc(c, cpu=2), ValueError),
        (lambda s, c: s.kmem_cache_alloc(c, cpu=True), ValueError),
        (lambda s, c: s.kmem_cache_alloc(c, gfp="GFP_KERNEL"), TypeError),
        (lambda s, c: s.kmem_cache_alloc(c, gfp=1 << 30), ValueError),
        (lambda s, c: s.kmem_cache_alloc(None), TypeError),
        (lambda s, c: s.kmem_cache_zalloc(c, gfp=G.GFP_DMA | G.GFP_DMA32), ValueError),
        (lambda s, c: s.kmem_cache_free(c, "0x10"), TypeError),
        (lambda s, c: s.kmem_cache_free(c, s.last, cpu=-1), ValueError),
        (lambda s, c: s.kmem_cache_shrink("cache"), TypeError),
    ],
)
def test_bad_arguments_raise_and_change_nothing(
    call: Callable[[SlabAllocator, KmemCache], object], error: type[Exception]
) -> None:
    slab = make_slab()
    cache = slab.kmem_cache_create("args", 64)
    slab.last = slab.kmem_cache_alloc(cache)  # type: ignore[attr-defined]
    before = snapshot(slab)
    with pytest.raises(error):
        call(slab, cache)
    assert snapshot(slab) == before


# ---------------------------------------------------------------------- timing and stats


def test_the_fast_paths_cost_20_cycles_and_a_new_slab_costs_a_page_allocation() -> None:
    slab = make_slab()
    cache = slab.kmem_cache_create("timed", 64)
    first, done = slab.timed_kmem_cache_alloc(cache, G.GFP_KERNEL, 0, 1000)
    assert done - 1000 > ALLOC_FASTPATH_CYCLES + slab.buddy.statistics().allocs  # slow path
    second, done2 = slab.timed_kmem_cache_alloc(cache, G.GFP_KERNEL, 0, done)
    assert done2 - done == ALLOC_FASTPATH_CYCLES
    _, done3 = slab.timed_kmem_cache_free(cache, second, 0, done2)
    assert done3 - done2 == FREE_FASTPATH_CYCLES
    assert first != second


def test_the_list_lock_is_contended_when_two_cpus_use_it_at_once() -> None:
    slab = make_slab(slub_debug=True)  # debug caches take the list_lock every time
    cache = slab.kmem_cache_create("contended", 64)
    slab.kmem_cache_free(cache, slab.kmem_cache_alloc(cache))  # a partial slab exists
    _, done0 = slab.timed_kmem_cache_alloc(cache, G.GFP_KERNEL, 0, 10_000)
    _, done1 = slab.timed_kmem_cache_alloc(cache, G.GFP_KERNEL, 1, 10_000)
    stats = slab.statistics()
    assert stats.list_lock_contended == 1
    assert stats.list_lock_wait_cycles == LIST_LOCK_CYCLES
    assert done1 == done0 + LIST_LOCK_CYCLES


def test_statistics_are_a_frozen_snapshot() -> None:
    slab = make_slab()
    cache = slab.kmem_cache_create("stats", 32)
    slab.kmem_cache_free(cache, slab.kmem_cache_alloc(cache))
    stats = slab.statistics()
    assert (stats.allocs, stats.frees, stats.new_slabs, stats.nr_caches) == (1, 1, 1, 1)
    assert (stats.alloc_slowpath, stats.free_fastpath) == (1, 1)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.allocs = 5  # type: ignore[misc]


# ---------------------------------------------------------------------- properties

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.integers(0, 3), st.integers(0, 1)),
        st.tuples(st.just("free"), st.integers(0, 10_000), st.integers(0, 1)),
        st.tuples(st.just("shrink"), st.integers(0, 3), st.integers(0, 1)),
    ),
    max_size=300,
)


@settings(max_examples=40, deadline=None)
@given(ops=_ops, debug=st.booleans())
def test_random_alloc_free_sequences_keep_the_books_and_give_every_page_back(
    ops: list[tuple[str, int, int]], debug: bool
) -> None:
    slab = make_slab(cpus=2, slub_debug=debug)
    caches = [
        slab.kmem_cache_create("c0", 24),
        slab.kmem_cache_create("c1", 700, flags=SLAB_HWCACHE_ALIGN),
        slab.kmem_cache_create("c2", 4096),
        slab.kmem_cache_create("c3", 192, flags=SLAB_RECLAIM_ACCOUNT),
    ]
    live: list[tuple[int, KmemCache]] = []
    for op, arg, cpu in ops:
        if op == "alloc":
            live.append((slab.kmem_cache_alloc(caches[arg], cpu=cpu), caches[arg]))
        elif op == "free" and live:
            addr, cache = live.pop(arg % len(live))
            slab.kmem_cache_free(cache, addr, cpu=cpu)
        elif op == "shrink":
            slab.kmem_cache_shrink(caches[arg], cpu=cpu)
    slab.check_invariants()
    spans = sorted((addr, addr + cache.object_size) for addr, cache in live)
    assert all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(spans))
    assert slab.statistics().nr_allocated == len(live)
    assert sum(c.nr_allocated for c in caches) == len(live)
    for addr, cache in live:
        slab.kmem_cache_free(cache, addr)
    for cache in caches:
        slab.kmem_cache_shrink(cache)
    assert slab.nr_slab_pages() == 0
    slab.buddy.drain_all_pages()
    boot = {pfn: order for pfn, (order, _) in slab.buddy.boot_free_blocks.items()}
    assert {pfn: order for pfn, (order, _) in slab.buddy.free_block.items()} == boot
    assert slab.slab_errors == 0
