"""kmalloc and friends: size classes, page-sized allocations, krealloc, kfree's errors."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hwsim
from hwsim.devices.ram import RamModel
from hwsim.kernel import gfp as G
from hwsim.kernel.buddy import BuddyAllocator
from hwsim.kernel.kmalloc import (
    KMALLOC_LOOKUP_CYCLES,
    ZERO_SIZE_PTR,
    Kmalloc,
    kmalloc_index,
)
from hwsim.kernel.layout import layout_for
from hwsim.kernel.slab import (
    ALLOC_FASTPATH_CYCLES,
    FREE_FASTPATH_CYCLES,
    KMALLOC_MAX_SIZE,
    POISON_END,
    POISON_FREE,
    SLUB_RED_ACTIVE,
    SlabAllocator,
)

MIB = 1 << 20

# The size classes, written out as the brief and kmalloc_index() give them.
SIZE_CLASSES = [
    (1, 8, 8),
    (9, 16, 16),
    (17, 32, 32),
    (33, 64, 64),
    (65, 96, 96),
    (97, 128, 128),
    (129, 192, 192),
    (193, 256, 256),
    (257, 512, 512),
    (513, 1024, 1024),
    (1025, 2048, 2048),
    (2049, 4096, 4096),
    (4097, 8192, 8192),
]
NAMES = ["8", "16", "32", "64", "96", "128", "192", "256", "512", "1k", "2k", "4k", "8k"]


def make_kmalloc(
    cpus: int = 2, *, arch: str = "x86_64", ram_size: int = 64 * MIB, slub_debug: bool = False
) -> Kmalloc:
    ram = RamModel(size=ram_size)
    buddy = BuddyAllocator(nr_pages=ram_size >> 12, arch=arch, nr_cpus=cpus)
    layout = layout_for(arch, ram_size)
    slab = SlabAllocator(buddy, ram, layout, cpus, slub_debug=slub_debug)
    return Kmalloc(slab, buddy, ram, layout)


def snapshot(km: Kmalloc) -> object:
    return (
        km.slab.statistics(),
        km.statistics(),
        dict(km.buddy.free_block),
        dict(km.buddy.allocated),
        dict(km.slab._live),
        dict(km._large),
    )


def phys(km: Kmalloc, addr: int) -> int:
    return km.layout.virt_to_phys(addr)


def boot_blocks(km: Kmalloc) -> dict[int, int]:
    return {pfn: order for pfn, (order, _) in km.buddy.boot_free_blocks.items()}


def free_blocks(km: Kmalloc) -> dict[int, int]:
    return {pfn: order for pfn, (order, _) in km.buddy.free_block.items()}


# ---------------------------------------------------------------------- caches and classes


def test_the_kmalloc_caches_have_linuxs_names_in_creation_order() -> None:
    km = make_kmalloc()
    names = [c.name for c in reversed(km.slab.slab_caches)]
    prefixes = ["kmalloc-", "kmalloc-rcl-", "dma-kmalloc-", "kmalloc-cg-"]
    assert names == [prefix + n for prefix in prefixes for n in NAMES]


@pytest.mark.parametrize(("low", "high", "cls"), SIZE_CLASSES)
def test_every_size_maps_to_its_size_class_and_ksize_reports_it(
    low: int, high: int, cls: int
) -> None:
    km = make_kmalloc()
    name = f"kmalloc-{cls >> 10}k" if cls >= 1024 else f"kmalloc-{cls}"
    for size in range(low, high + 1):
        assert km.kmalloc_slab(size).name == name
        assert kmalloc_index(size) == {96: 1, 192: 2}.get(cls, cls.bit_length() - 1)
        addr = km.kmalloc(size)
        assert km.ksize(addr) == cls
        assert km.kmalloc_size_roundup(size) == cls
        km.kfree(addr)


def test_power_of_two_sizes_are_naturally_aligned() -> None:
    for debug in (False, True):  # Linux guarantees it with slub_debug metadata too
        km = make_kmalloc(slub_debug=debug)
        for shift in range(3, 14):
            size = 1 << shift
            addrs = [km.kmalloc(size) for _ in range(6)]
            assert all(addr % size == 0 for addr in addrs), (debug, size)


def test_dma_allocations_come_from_below_16_mib() -> None:
    km = make_kmalloc()
    assert km.kmalloc_slab(100, G.GFP_KERNEL | G.GFP_DMA).name == "dma-kmalloc-128"
    for _ in range(200):
        assert phys(km, km.kmalloc(100, G.GFP_KERNEL | G.GFP_DMA)) < 16 * MIB
    big = km.kmalloc(20000, G.GFP_KERNEL | G.GFP_DMA)
    assert phys(km, big) + km.ksize(big) <= 16 * MIB


def test_reclaimable_and_accounted_allocations_use_their_own_caches() -> None:
    km = make_kmalloc()
    reclaimable = G.GFP_KERNEL | G.__GFP_RECLAIMABLE
    assert km.kmalloc_slab(30, reclaimable).name == "kmalloc-rcl-32"
    assert km.kmalloc_slab(30, G.GFP_KERNEL_ACCOUNT).name == "kmalloc-cg-32"
    assert km.kmalloc_slab(30, reclaimable | G.GFP_DMA).name == "dma-kmalloc-32"
    km.kmalloc(30, reclaimable)
    assert km.slab.nr_slab_reclaimable == 1 and km.slab.nr_slab_unreclaimable == 0


def test_dma32_makes_no_sense_for_kmalloc_and_is_fixed_up_with_a_warning() -> None:
    km = make_kmalloc()
    addr = km.kmalloc(64, G.GFP_KERNEL | G.GFP_DMA32)
    assert km.slab.object_slab(addr) is not None
    assert km.slab.object_slab(addr).cache.name == "kmalloc-64"  # type: ignore[union-attr]
    assert any(line.startswith("Unexpected gfp: 0x4 (GFP_DMA32)") for line in km.slab.log)
    assert any(line.endswith("Fix your code!") for line in km.slab.log)


# ---------------------------------------------------------------------- special sizes


def test_kmalloc_zero_returns_zero_size_ptr_and_null_frees_are_no_ops() -> None:
    km = make_kmalloc()
    before = snapshot(km)
    assert km.kmalloc(0) == ZERO_SIZE_PTR == 16
    assert km.kzalloc(0) == ZERO_SIZE_PTR
    for addr in (0, None, ZERO_SIZE_PTR, 8):  # ZERO_OR_NULL_PTR: anything <= 16
        km.kfree(addr)
        assert km.ksize(addr) == 0
    assert snapshot(km) == before


def test_above_8k_kmalloc_takes_whole_pages_counted_as_unreclaimable_slab() -> None:
    km = make_kmalloc()
    allocated = km.buddy.nr_allocated_pages()
    addr = km.kmalloc(8193)  # get_order(8193) = 2: four pages
    assert km.ksize(addr) == 16384 and km.is_kmalloc_large(addr)
    assert addr % 16384 == 0
    assert km.buddy.allocated[phys(km, addr) >> 12] == 2
    assert km.slab.nr_slab_unreclaimable == 4
    assert km.buddy.nr_allocated_pages() == allocated + 4
    km.kfree(addr)
    assert km.slab.nr_slab_unreclaimable == 0
    assert km.buddy.nr_allocated_pages() == allocated


def test_kmalloc_max_size_is_4_mib_and_beyond_it_kmalloc_fails() -> None:
    km = make_kmalloc()
    addr = km.kmalloc(KMALLOC_MAX_SIZE)
    assert km.ksize(addr) == 4 * MIB
    km.kfree(addr)
    before = snapshot(km)
    with pytest.raises(hwsim.OutOfMemory, match="KMALLOC_MAX_SIZE"):
        km.kmalloc(KMALLOC_MAX_SIZE + 1)
    assert any("WARNING" in line for line in km.slab.log)
    assert snapshot(km) == before
    km.slab.log.clear()
    with pytest.raises(hwsim.OutOfMemory):
        km.kmalloc(KMALLOC_MAX_SIZE + 1, G.GFP_KERNEL | G.GFP_NOWARN)
    assert km.slab.log == []


def test_kcalloc_fails_when_n_times_size_overflows_size_t() -> None:
    km = make_kmalloc()
    before = snapshot(km)
    with pytest.raises(hwsim.OutOfMemory, match="overflows the 64-bit size_t"):
        km.kcalloc(1 << 32, 1 << 32)
    # 2**32 does not overflow 64 bits: this one fails for being too big instead.
    with pytest.raises(hwsim.OutOfMemory, match="KMALLOC_MAX_SIZE"):
        km.kcalloc(1 << 16, 1 << 16)
    assert snapshot(km) == before
    km32 = make_kmalloc(arch="i386")
    with pytest.raises(hwsim.OutOfMemory, match="overflows the 32-bit size_t"):
        km32.kcalloc(1 << 16, 1 << 16)
    with pytest.raises(ValueError, match="32-bit size_t"):
        km32.kmalloc(1 << 32)


def test_kcalloc_and_kzalloc_return_zeroed_memory_and_kmalloc_does_not() -> None:
    km = make_kmalloc()
    addr = km.kmalloc(64)
    km.ram.write(phys(km, addr), b"\xee" * 64)
    km.kfree(addr)
    assert km.kmalloc(64) == addr
    assert km.ram.read(phys(km, addr), 64) == b"\xee" * 64  # stale contents
    km.kfree(addr)
    assert km.kcalloc(4, 16) == addr
    assert km.ram.read(phys(km, addr), 64) == bytes(64)
    km.ram.write(phys(km, addr), b"\xee" * 64)
    km.kfree(addr)
    assert km.kzalloc(50) == addr
    assert km.ram.read(phys(km, addr), 64) == bytes(64)  # the whole object, not just 50
    big = km.kzalloc(3 * 4096 + 1)
    assert km.ram.read(phys(km, big), km.ksize(big)) == bytes(km.ksize(big))


def test_slub_debug_poisons_kmalloc_memory_and_red_zones_beyond_the_size_asked() -> None:
    km = make_kmalloc(slub_debug=True)
    addr = km.kmalloc(50)  # from kmalloc-64, which tracks the size asked for
    data = km.ram.read(phys(km, addr), 64)
    assert data == bytes([POISON_FREE]) * 49 + bytes([POISON_END]) + bytes([SLUB_RED_ACTIVE]) * 14
    assert km.ksize(addr) == 64
    km.kfree(addr)
    assert km.ram.read(phys(km, addr), 64) == bytes([POISON_FREE]) * 63 + bytes([POISON_END])


def test_writing_past_the_size_asked_is_caught_by_the_kmalloc_red_zone() -> None:
    km = make_kmalloc(slub_debug=True)
    addr = km.kmalloc(50)
    km.ram.write(phys(km, addr) + 50, b"\x00")  # in the object, past what was asked
    km.kfree(addr)
    assert "BUG kmalloc-64 (Not tainted): kmalloc Redzone overwritten" in km.slab.log
    assert km.slab.object_slab(addr) is not None  # not freed


# ---------------------------------------------------------------------- krealloc


def test_krealloc_stays_in_place_while_ksize_covers_the_new_size() -> None:
    km = make_kmalloc()
    addr = km.kmalloc(50)
    assert km.krealloc(addr, 64) == addr
    assert km.krealloc(addr, 10) == addr  # never shrinks
    big = km.kmalloc(20000)  # 8 pages
    assert km.krealloc(big, 100) == big
    assert km.krealloc(big, 32768) == big


def test_krealloc_moves_to_a_bigger_buffer_with_the_data_and_frees_the_old_one() -> None:
    km = make_kmalloc()
    addr = km.kmalloc(50)
    pattern = bytes(range(64))
    km.ram.write(phys(km, addr), pattern)
    new = km.krealloc(addr, 100)
    assert new != addr and km.ksize(new) == 128
    assert km.ram.read(phys(km, new), 64) == pattern  # ksize(old) bytes are copied
    with pytest.raises(hwsim.DoubleFree):
        km.kfree(addr)
    large = km.krealloc(new, 50000)
    assert km.is_kmalloc_large(large)
    assert km.ram.read(phys(km, large), 64) == pattern


def test_krealloc_of_null_allocates_and_to_zero_frees() -> None:
    km = make_kmalloc()
    addr = km.krealloc(None, 100)
    assert km.ksize(addr) == 128
    assert km.krealloc(ZERO_SIZE_PTR, 8) != ZERO_SIZE_PTR
    assert km.krealloc(addr, 0) == ZERO_SIZE_PTR
    with pytest.raises(hwsim.DoubleFree):
        km.kfree(addr)


def test_a_failed_krealloc_leaves_the_old_buffer_alone() -> None:
    km = make_kmalloc()
    addr = km.kmalloc(100)
    km.ram.write(phys(km, addr), b"keep")
    before = snapshot(km)
    with pytest.raises(hwsim.OutOfMemory):
        km.krealloc(addr, KMALLOC_MAX_SIZE * 2)
    assert snapshot(km) == before
    assert km.ram.read(phys(km, addr), 4) == b"keep"


# ---------------------------------------------------------------------- errors


def test_a_double_kfree_raises_object_already_free_and_changes_nothing() -> None:
    km = make_kmalloc()
    addr = km.kmalloc(64)
    km.kfree(addr)
    before = snapshot(km)
    with pytest.raises(
        hwsim.DoubleFree, match=r"BUG kmalloc-64 \(Not tainted\): Object already free"
    ):
        km.kfree(addr)
    assert snapshot(km) == before
    with pytest.raises(ValueError, match="Object already free"):
        km.ksize(addr)


def test_a_double_kfree_of_a_page_sized_buffer_raises() -> None:
    km = make_kmalloc()
    addr = km.kmalloc(3 * 4096)
    km.kfree(addr)
    km.buddy.drain_all_pages()
    before = snapshot(km)
    with pytest.raises(hwsim.DoubleFree, match="already free"):
        km.kfree(addr)
    assert snapshot(km) == before


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("vmalloc", "vfree"),
        ("pages", "free_pages"),
        ("middle", "Invalid object pointer"),
        ("large_middle", "not the start of the 16KiB kmalloc buffer"),
        ("reserved", "not handed out by kmalloc"),
        ("user", "not a kernel address"),
    ],
)
def test_kfree_of_what_kmalloc_did_not_hand_out_raises_invalid_free(
    target: str, match: str
) -> None:
    km = make_kmalloc()
    small = km.kmalloc(64)
    large = km.kmalloc(10000)
    addr = {
        "vmalloc": km.layout.vmalloc_start + 0x1000,
        "pages": km.layout.pfn_to_virt(km.buddy.alloc_pages(1)),
        "middle": small + 8,
        "large_middle": large + 4096,
        "reserved": km.layout.pfn_to_virt(3),  # the BIOS area
        "user": 0x400000,
    }[target]
    before = snapshot(km)
    with pytest.raises(hwsim.InvalidFree, match=match) as info:
        km.kfree(addr)
    assert not isinstance(info.value, hwsim.DoubleFree)
    assert snapshot(km) == before


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda km: km.kmalloc(-1), ValueError),
        (lambda km: km.kmalloc(1.5), TypeError),
        (lambda km: km.kmalloc(True), TypeError),
        (lambda km: km.kmalloc(1 << 64), ValueError),
        (lambda km: km.kmalloc(8, gfp=1 << 30), ValueError),
        (lambda km: km.kmalloc(8, gfp=None), TypeError),
        (lambda km: km.kmalloc(8, cpu=-1), ValueError),
        (lambda km: km.kmalloc(8, cpu=2), ValueError),
        (lambda km: km.kzalloc(8, cpu=2), ValueError),
        (lambda km: km.kcalloc(-1, 8), ValueError),
        (lambda km: km.kfree("0xffff"), TypeError),
        (lambda km: km.kfree(-5), ValueError),
        (lambda km: km.kfree(km.last, cpu=9), ValueError),
        (lambda km: km.krealloc(km.last, -1), ValueError),
        (lambda km: km.krealloc(km.last + 8, 100), hwsim.InvalidFree),
        (lambda km: km.ksize("x"), TypeError),
        (lambda km: km.kmalloc_slab(0), ValueError),
    ],
)
def test_bad_arguments_raise_and_change_nothing(
    call: Callable[[Kmalloc], object], error: type[Exception]
) -> None:
    km = make_kmalloc()
    km.last = km.kmalloc(100)  # type: ignore[attr-defined]
    before = snapshot(km)
    with pytest.raises(error):
        call(km)
    assert snapshot(km) == before


def test_any_slab_object_may_be_given_to_kfree() -> None:
    km = make_kmalloc()
    cache = km.slab.kmem_cache_create("mine", 40)
    obj = km.slab.kmem_cache_alloc(cache)
    assert km.ksize(obj) == 40
    km.kfree(obj)
    assert cache.nr_allocated == 0
    buf = km.kmalloc(64)
    km.slab.kmem_cache_free(km.kmalloc_slab(64), buf)


# ---------------------------------------------------------------------- timing


def test_kmalloc_fast_paths_cost_a_lookup_plus_the_slab_fast_path() -> None:
    km = make_kmalloc()
    km.kfree(km.kmalloc(64))  # the cpu slab exists
    addr, done = km.timed_kmalloc(64, G.GFP_KERNEL, 0, 500)
    assert done - 500 == ALLOC_FASTPATH_CYCLES + KMALLOC_LOOKUP_CYCLES
    _, freed = km.timed_kfree(addr, 0, done)
    assert freed - done == FREE_FASTPATH_CYCLES
    big, done_big = km.timed_kmalloc(50000, G.GFP_KERNEL, 0, 0)
    assert done_big > 0 and km.is_kmalloc_large(big)
    small = km.kmalloc(64)
    new, moved = km.timed_krealloc(small, 5000, G.GFP_KERNEL, 0, 0)
    assert moved > ALLOC_FASTPATH_CYCLES + FREE_FASTPATH_CYCLES + 64 // 32
    assert km.ksize(new) == 8192


# ---------------------------------------------------------------------- properties

_sizes = st.one_of(
    st.integers(0, 256), st.integers(0, 8192), st.integers(8193, 100_000), st.just(4096)
)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("kmalloc"), _sizes, st.integers(0, 1), st.sampled_from([0, 1, 2])),
        st.tuples(st.just("kfree"), st.integers(0, 10_000), st.integers(0, 1), st.just(0)),
        st.tuples(st.just("krealloc"), st.integers(0, 10_000), st.integers(0, 1), _sizes),
    ),
    max_size=200,
)
_GFPS = [G.GFP_KERNEL, G.GFP_KERNEL | G.GFP_DMA, G.GFP_KERNEL | G.__GFP_RECLAIMABLE]


@settings(max_examples=40, deadline=None)
@given(ops=_ops, debug=st.booleans())
def test_random_kmalloc_kfree_sequences_never_overlap_and_give_every_page_back(
    ops: list[tuple[str, int, int, int]], debug: bool
) -> None:
    km = make_kmalloc(slub_debug=debug)
    live: list[int] = []
    for op, arg, cpu, extra in ops:
        if op == "kmalloc":
            addr = km.kmalloc(arg, _GFPS[extra], cpu)
            if addr != ZERO_SIZE_PTR:
                live.append(addr)
        elif op == "kfree" and live:
            km.kfree(live.pop(arg % len(live)), cpu)
        elif op == "krealloc" and live:
            old = live.pop(arg % len(live))
            new = km.krealloc(old, extra, G.GFP_KERNEL, cpu)
            if new != ZERO_SIZE_PTR:
                live.append(new)
    km.slab.check_invariants()
    spans = sorted((addr, addr + km.ksize(addr)) for addr in live)
    assert all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(spans))
    large = [a for a in live if km.is_kmalloc_large(a)]
    assert km.statistics().nr_large == len(large)
    assert km.slab.statistics().nr_allocated == len(live) - len(large)
    for addr in live:
        km.kfree(addr)
    for cache in km.slab.slab_caches:
        km.slab.kmem_cache_shrink(cache)
    assert km.slab.nr_slab_pages() == 0
    km.buddy.drain_all_pages()
    assert free_blocks(km) == boot_blocks(km)
    assert km.slab.slab_errors == 0
