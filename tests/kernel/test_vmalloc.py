"""vmalloc: guard pages, scattered pages mapped by the page table in RAM, Linux's failures."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hwsim
from hwsim.devices.ram import RamModel
from hwsim.kernel import gfp as G
from hwsim.kernel.buddy import BuddyAllocator
from hwsim.kernel.layout import layout_for
from hwsim.kernel.pagetable import PAGE_KERNEL, KernelPageTable, PageNotPresent
from hwsim.kernel.vmalloc import VmallocAllocator

MIB = 1 << 20
PAGE = 4096
VMALLOC_START = 0xFFFFC90000000000


def make(
    arch: str = "x86_64", ram_size: int = 64 * MIB, pae: bool = False
) -> tuple[RamModel, BuddyAllocator, KernelPageTable, VmallocAllocator]:
    ram = RamModel(size=ram_size)
    buddy = BuddyAllocator(nr_pages=ram_size >> 12, arch=arch, nr_cpus=1)
    layout = layout_for(arch, ram_size)
    pt = KernelPageTable(buddy, ram, layout, pae=pae)
    return ram, buddy, pt, VmallocAllocator(buddy, pt, layout, ram)


def pfns_of(vm: VmallocAllocator, addr: int, nr_pages: int) -> list[int]:
    return [vm.vmalloc_to_pfn(addr + i * PAGE) for i in range(nr_pages)]


def test_vmalloc_of_a_page_takes_two_pages_of_space_and_the_next_area_follows_the_guard() -> None:
    _, _, _, vm = make()
    a = vm.vmalloc(PAGE)
    b = vm.vmalloc(100)
    assert a == VMALLOC_START
    assert b == a + 2 * PAGE
    (first, second) = vm.areas()
    assert (first.start, first.end, first.size, first.nr_pages) == (a, a + 8192, 8192, 1)
    assert (second.start, second.size, second.nr_pages) == (b, 8192, 1)


def test_the_guard_page_is_not_mapped_and_is_named_as_such() -> None:
    _, _, pt, vm = make()
    addr = vm.vmalloc(3 * PAGE)
    pt.walk(addr + 3 * PAGE - 1)
    with pytest.raises(hwsim.SegmentationFault, match="PTE entry not present"):
        pt.walk(addr + 3 * PAGE)
    with pytest.raises(PageNotPresent, match="guard page of the area at 0xffffc90000000000"):
        vm.vmalloc_to_pfn(addr + 3 * PAGE)
    assert vm.is_guard_page(addr + 3 * PAGE) and not vm.is_guard_page(addr + 2 * PAGE)


def test_pages_are_physically_scattered_on_an_aged_buddy_and_vmalloc_to_pfn_walks_the_tables() -> (
    None
):
    ram, buddy, pt, vm = make()
    held = [buddy.alloc_pages(0) for _ in range(2000)]
    for pfn in held[::2]:
        buddy.free_pages(pfn)
    addr = vm.vmalloc(64 * PAGE)
    pfns = pfns_of(vm, addr, 64)
    assert len(set(pfns)) == 64
    assert any(b != a + 1 for a, b in itertools.pairwise(pfns))
    for i, pfn in enumerate(pfns):
        t = pt.walk(addr + i * PAGE + 123)
        assert t.phys == (pfn << 12) + 123 and t.page_size == PAGE
        assert t.steps[-1].entry == (pfn << 12) | PAGE_KERNEL
        raw = int.from_bytes(ram.read(t.steps[-1].address, 8), "little")
        assert raw == t.steps[-1].entry
        assert buddy.allocated[pfn] == 0


def test_vzalloc_hands_out_zeroed_memory_even_from_dirty_pages() -> None:
    ram, buddy, _, vm = make()
    dirty = [buddy.alloc_pages(0) for _ in range(64)]
    for pfn in dirty:
        ram.write(pfn << 12, b"\xaa" * PAGE)
    for pfn in dirty:
        buddy.free_pages(pfn)
    addr = vm.vzalloc(8 * PAGE)
    pfns = pfns_of(vm, addr, 8)
    assert set(pfns) & set(dirty)  # recycled pages...
    assert all(ram.read(pfn << 12, PAGE) == bytes(PAGE) for pfn in pfns)  # ...cleared


def test_vfree_gives_back_every_page_and_the_space_is_reused() -> None:
    _, buddy, pt, vm = make()
    vm.vfree(vm.vmalloc(PAGE))  # page tables for this corner of vmalloc space
    allocated, tables = buddy.nr_allocated_pages(), pt.nr_pagetable_pages
    addr = vm.vmalloc(40 * PAGE)
    assert buddy.nr_allocated_pages() == allocated + 40
    assert vm.vmalloc_used_pages == 40
    vm.vfree(addr)
    assert buddy.nr_allocated_pages() == allocated
    assert pt.nr_pagetable_pages == tables
    assert vm.vmalloc_used_pages == 0 and vm.areas() == []
    assert vm.vmalloc(PAGE) == addr
    with pytest.raises(PageNotPresent):
        vm.vmalloc_to_pfn(addr + PAGE)


def test_vmalloc_of_zero_bytes_warns_once_and_fails() -> None:
    _, buddy, _, vm = make()
    allocated = buddy.nr_allocated_pages()
    for _ in range(2):
        with pytest.raises(hwsim.OutOfMemory, match=r"vmalloc\(0\).*WARN_ON_ONCE\(!size\)"):
            vm.vmalloc(0)
    assert len([line for line in vm.log if "WARNING" in line]) == 1
    assert buddy.nr_allocated_pages() == allocated and vm.statistics().failures == 2


def test_vmalloc_of_more_than_ram_fails_as_linux_reports_it() -> None:
    _, buddy, _, vm = make()
    size = (buddy.managed_pages() + 1) * PAGE
    with pytest.raises(hwsim.OutOfMemory, match=f"vmalloc error: size {size}, exceeds total pages"):
        vm.vmalloc(size)
    assert vm.log == [
        f"swapper/0: vmalloc error: size {size}, exceeds total pages, "
        "mode:0xcc0(GFP_KERNEL), nodemask=(null)"
    ]
    with pytest.raises(hwsim.OutOfMemory):
        vm.vmalloc(size, G.GFP_KERNEL | G.GFP_NOWARN)
    assert len(vm.log) == 1  # __GFP_NOWARN silences warn_alloc


def test_running_out_of_pages_midway_gives_everything_back() -> None:
    ram = RamModel(size=16 * MIB)
    buddy = BuddyAllocator(4096)
    layout = layout_for("x86_64", 16 * MIB)
    pt = KernelPageTable(buddy, ram, layout)
    vm = VmallocAllocator(buddy, pt, layout, ram)
    vm.vfree(vm.vmalloc(PAGE))
    buddy.drain_all_pages()
    free_blocks = {pfn: order for pfn, (order, _) in buddy.free_block.items()}
    allocated, tables = dict(buddy.allocated), pt.nr_pagetable_pages
    table_bytes = [ram.read(pfn << 12, PAGE) for pfn in pt.pagetable_pfns()]
    with pytest.raises(hwsim.OutOfMemory, match=r"vmalloc error: size \d+, failed to allocate pag"):
        vm.vmalloc(buddy.managed_pages() * PAGE)  # not more than RAM, but more than is free
    assert "failed to allocate pages, mode:0xcc2(GFP_KERNEL|__GFP_HIGHMEM)" in vm.log[-1]
    buddy.drain_all_pages()
    assert {pfn: order for pfn, (order, _) in buddy.free_block.items()} == free_blocks
    assert buddy.allocated == allocated and pt.nr_pagetable_pages == tables
    assert [ram.read(pfn << 12, PAGE) for pfn in pt.pagetable_pfns()] == table_bytes
    assert vm.areas() == [] and vm.vmalloc_used_pages == 0
    vm.check_invariants()


def test_a_vmalloc_whose_page_table_cannot_be_allocated_fails_to_map_and_keeps_nothing() -> None:
    _, buddy, pt, vm = make()
    held = []
    while True:  # GFP_KERNEL can no longer get a page; the DMA zone's reserve is left
        try:
            held.append(buddy.alloc_pages(0, G.GFP_KERNEL))
        except hwsim.OutOfMemory:
            break
    allocated, tables = buddy.nr_allocated_pages(), pt.nr_pagetable_pages
    with pytest.raises(hwsim.OutOfMemory, match="vmalloc error: size 4096, failed to map pages"):
        vm.vmalloc(PAGE, G.GFP_KERNEL | G.GFP_DMA)
    assert (buddy.nr_allocated_pages(), pt.nr_pagetable_pages) == (allocated, tables)
    assert vm.areas() == []
    vm.check_invariants()


def test_vfree_of_a_kmalloc_address_says_to_use_kfree() -> None:
    _, _, _, vm = make()
    with pytest.raises(
        hwsim.InvalidFree, match="is not a vmalloc address; kmalloc memory is freed"
    ):
        vm.vfree(0xFFFF888000100000)


@pytest.mark.parametrize(
    ("offset", "match"),
    [
        (PAGE, r"Trying to vfree\(\) nonexistent vm area \(0xffffc90000001000\).*inside"),
        (2 * PAGE, r"nonexistent vm area.*the guard page of"),
        (8, r"Trying to vfree\(\) bad address \(0xffffc90000000008\)"),
        (10 * PAGE, r"no vmalloc area starts at or covers"),
    ],
)
def test_vfree_of_an_address_that_does_not_start_an_area_is_refused(
    offset: int, match: str
) -> None:
    _, buddy, _, vm = make()
    addr = vm.vmalloc(2 * PAGE)
    allocated = buddy.nr_allocated_pages()
    with pytest.raises(hwsim.InvalidFree, match=match) as info:
        vm.vfree(addr + offset)
    assert not isinstance(info.value, hwsim.DoubleFree)
    assert buddy.nr_allocated_pages() == allocated and len(vm.areas()) == 1


def test_vfree_twice_is_a_double_free_in_linuxs_words() -> None:
    _, buddy, _, vm = make()
    addr = vm.vmalloc(PAGE, caller="my_init+0x10/0x40")
    vm.vfree(addr)
    allocated = buddy.nr_allocated_pages()
    with pytest.raises(
        hwsim.DoubleFree, match=r"nonexistent vm area .* \(already freed\).*my_init"
    ):
        vm.vfree(addr)
    assert buddy.nr_allocated_pages() == allocated
    vm.vfree(vm.vmalloc(PAGE))  # the same address, allocated again, may be freed again


def test_vfree_of_null_does_nothing() -> None:
    _, buddy, _, vm = make()
    allocated = buddy.nr_allocated_pages()
    vm.vfree(0)
    vm.vfree(None)
    assert buddy.nr_allocated_pages() == allocated and vm.statistics().frees == 0


def test_i386_vmalloc_space_starts_8mib_after_low_memory_and_the_hole_is_unmapped() -> None:
    _, _, pt, vm = make("i386")
    layout = pt.layout
    assert layout.vmalloc_start == layout.page_offset + 64 * MIB + 8 * MIB
    pt.walk(layout.high_memory - 1)
    for hole in (layout.high_memory, layout.vmalloc_start - PAGE):
        with pytest.raises(hwsim.SegmentationFault):
            pt.walk(hole)
    addr = vm.vmalloc(PAGE)
    assert addr == layout.vmalloc_start
    assert pt.walk(addr).steps[-1].entry & 0xFFF == 0x163  # no NX bit without PAE
    assert (
        vm.vmallocinfo()
        == f"0x{addr:08x}-0x{addr + 8192:08x}    8192 vmalloc pages=1 vmalloc N0=1\n"
    )


def test_vmallocinfo_prints_linuxs_format() -> None:
    _, _, _, vm = make()
    vm.vmalloc(PAGE, caller="some_driver_init+0x1c/0x80")
    vm.vzalloc(5 * PAGE + 1, caller="other+0x8/0x10")
    assert vm.vmallocinfo() == (
        "0xffffc90000000000-0xffffc90000002000    8192 some_driver_init+0x1c/0x80 pages=1 "
        "vmalloc N0=1\n"
        "0xffffc90000002000-0xffffc90000009000   28672 other+0x8/0x10 pages=6 vmalloc N0=6\n"
    )


def test_meminfo_counters_vmalloc_total_and_used() -> None:
    _, _, _, vm = make()
    assert vm.vmalloc_total_kb == 34359738367
    vm.vmalloc(10 * PAGE)
    assert (vm.vmalloc_used_pages, vm.vmalloc_used_kb) == (10, 40)
    assert make("i386")[3].vmalloc_total_kb == (0xFF800000 - 8192 - 0xC4800000) >> 10


def test_a_big_vmalloc_keeps_its_page_array_in_vmalloc_space_too() -> None:
    _, buddy, _, vm = make()
    allocated = buddy.nr_allocated_pages()
    vm.vfree(vm.vmalloc(PAGE))
    tables = buddy.nr_allocated_pages() - allocated
    addr = vm.vmalloc(1024 * PAGE, caller="big+0x1/0x2")
    main, array = vm.areas()
    assert (main.start, main.nr_pages, main.vpages) == (addr, 1024, True)
    assert (array.start, array.nr_pages, array.caller, array.vpages) == (
        addr + 1025 * PAGE,
        2,  # 1024 page pointers of 8 bytes
        "big+0x1/0x2",
        False,
    )
    assert "pages=1024 vmalloc vpages N0=1024" in vm.vmallocinfo()
    assert vm.vmalloc_used_pages == 1026
    with pytest.raises(hwsim.InvalidFree, match="holds the page array"):
        vm.vfree(array.start)
    vm.vfree(addr)
    assert vm.areas() == [] and buddy.nr_allocated_pages() - allocated >= tables


def test_vmalloc_to_pfn_of_a_direct_map_address_points_to_virt_to_phys() -> None:
    _, _, _, vm = make()
    with pytest.raises(ValueError, match="virt_to_phys"):
        vm.vmalloc_to_pfn(0xFFFF888000000000)
    with pytest.raises(PageNotPresent, match="no live area covers"):
        vm.vmalloc_to_pfn(VMALLOC_START + 100 * PAGE)


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda vm: vm.vmalloc("4096"), TypeError),
        (lambda vm: vm.vmalloc(-1), ValueError),
        (lambda vm: vm.vmalloc(PAGE, gfp=1.5), TypeError),
        (lambda vm: vm.vmalloc(PAGE, gfp=G.GFP_DMA | G.GFP_DMA32), ValueError),
        (lambda vm: vm.vmalloc(PAGE, cpu=3), ValueError),
        (lambda vm: vm.vmalloc(PAGE, caller=42), TypeError),
        (lambda vm: vm.vzalloc(PAGE, gfp="GFP_KERNEL"), TypeError),
        (lambda vm: vm.vfree("0xffffc90000000000"), TypeError),
        (lambda vm: vm.vfree(VMALLOC_START, cpu=-1), ValueError),
        (lambda vm: vm.vmalloc_to_pfn(None), TypeError),
        (lambda vm: vm.is_vmalloc_addr(1.0), TypeError),
    ],
)
def test_bad_arguments_are_refused_without_side_effects(call: object, error: type) -> None:
    _, buddy, _, vm = make()
    vm.vmalloc(PAGE)
    allocated, areas = buddy.nr_allocated_pages(), vm.areas()
    with pytest.raises(error):
        call(vm)  # type: ignore[operator]
    assert buddy.nr_allocated_pages() == allocated and vm.areas() == areas


def test_timed_calls_charge_more_for_more_pages() -> None:
    _, _, _, vm = make()
    vm.vfree(vm.vmalloc(PAGE))  # the page tables exist now
    small, t_small = vm.timed_vmalloc(PAGE, G.GFP_KERNEL, 0, at=1000)
    big, t_big = vm.timed_vmalloc(32 * PAGE, G.GFP_KERNEL, 0, at=1000)
    assert 1000 < t_small < t_big
    _, t_zeroed = vm.timed_vzalloc(32 * PAGE, G.GFP_KERNEL, 0, at=1000)
    assert t_zeroed > t_big  # clearing pages costs
    _, t_free = vm.timed_vfree(big, 0, at=5000)
    assert t_free > 5000
    pfn, t_walk = vm.timed_vmalloc_to_pfn(small, at=10)
    assert pfn == vm.vmalloc_to_pfn(small) and t_walk > 10
    assert vm.timed_vfree(None, 0, at=7) == (None, 7)


sizes = st.one_of(st.integers(1, 40 * PAGE), st.just(600 * PAGE))


@settings(max_examples=40, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), sizes, st.integers(0, 1000)), max_size=25))
def test_random_vmalloc_and_vfree_keep_areas_apart_and_give_every_page_back(
    ops: list[tuple[bool, int, int]],
) -> None:
    _, buddy, pt, vm = make()
    allocated, tables = buddy.nr_allocated_pages(), pt.nr_pagetable_pages
    live: list[int] = []
    for alloc, size, pick in ops:
        if alloc or not live:
            live.append(vm.vmalloc(size))
        else:
            vm.vfree(live.pop(pick % len(live)))
        areas = vm.areas()
        for a, b in itertools.pairwise(areas):
            assert a.end <= b.start  # guard pages included
    vm.check_invariants()  # every mapped page translates to a pfn of exactly one area
    for addr in live:
        vm.vfree(addr)
    new_tables = pt.nr_pagetable_pages - tables
    assert buddy.nr_allocated_pages() == allocated + new_tables
    assert vm.statistics().free_ranges == 1 and vm.vmalloc_used_pages == 0
    vm.check_invariants()
