"""The kernel page table: real tables in RAM, the direct map, map/unmap/walk."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hwsim
from hwsim.devices.ram import RamModel
from hwsim.kernel import gfp as G
from hwsim.kernel.buddy import BuddyAllocator
from hwsim.kernel.layout import layout_for
from hwsim.kernel.pagetable import (
    _PAGE_GLOBAL,
    _PAGE_NX,
    _PAGE_PRESENT,
    _PAGE_PSE,
    _PAGE_RW,
    _PAGE_USER,
    PAGE_KERNEL,
    WALK_STEP_CYCLES,
    KernelPageTable,
    PageNotPresent,
)

MIB = 1 << 20
X86_64_PAGE_OFFSET = 0xFFFF888000000000
X86_64_VMALLOC_START = 0xFFFFC90000000000


def make(
    arch: str = "x86_64", ram_size: int = 64 * MIB, pae: bool = False
) -> tuple[RamModel, BuddyAllocator, KernelPageTable]:
    ram = RamModel(size=ram_size)
    buddy = BuddyAllocator(nr_pages=ram_size >> 12, arch=arch, nr_cpus=1)
    return ram, buddy, KernelPageTable(buddy, ram, layout_for(arch, ram_size), pae=pae)


X86 = make()


@settings(max_examples=200)
@given(phys=st.integers(0, 64 * MIB - 1))
def test_the_direct_map_translates_every_physical_address_through_2mib_pages_on_x86_64(
    phys: int,
) -> None:
    _, _, pt = X86
    t = pt.walk(X86_64_PAGE_OFFSET + phys)
    assert t.phys == phys
    assert t.page_size == 2 * MIB
    assert [step.level for step in t.steps] == ["PGD", "PUD", "PMD"]
    assert t.flags & (_PAGE_PRESENT | _PAGE_RW | _PAGE_PSE | _PAGE_GLOBAL) == 0x183
    assert t.writable and t.nx and not t.user


@pytest.mark.parametrize(
    ("pae", "page_size", "levels"),
    [(False, 4 * MIB, ["PGD"]), (True, 2 * MIB, ["PGD", "PMD"])],
)
@given(phys=st.integers(0, 64 * MIB - 1))
def test_i386_maps_low_memory_with_4mib_pages_or_2mib_pages_with_pae(
    pae: bool, page_size: int, levels: list[str], phys: int
) -> None:
    _, _, pt = I386[pae]
    t = pt.walk(0xC0000000 + phys)
    assert (t.phys, t.page_size) == (phys, page_size)
    assert [step.level for step in t.steps] == levels
    assert t.nx == pae  # only 64-bit entries have an NX bit


I386 = {False: make("i386"), True: make("i386", pae=True)}


@pytest.mark.parametrize(("arch", "pae"), [("x86_64", False), ("i386", False), ("i386", True)])
def test_a_direct_map_tail_shorter_than_a_large_page_is_mapped_with_4k_ptes(
    arch: str, pae: bool
) -> None:
    size = 64 * MIB + 3 * 4096
    _, _, pt = make(arch, size, pae)
    offset = pt.layout.page_offset
    tail = pt.walk(offset + size - 1)
    assert (tail.phys, tail.page_size, tail.level) == (size - 1, 4096, "PTE")
    assert pt.walk(offset + 64 * MIB - 1).page_size > 4096
    with pytest.raises(hwsim.SegmentationFault):
        pt.walk(offset + size)


def test_the_entries_a_walk_reads_are_the_bytes_in_ram() -> None:
    ram, _, pt = make()
    pt.map_page(X86_64_VMALLOC_START, 0x1234)
    t = pt.walk(X86_64_VMALLOC_START + 0x56)
    assert t.steps[0].table == pt.cr3
    for step in t.steps:
        assert step.address == step.table + 8 * step.index
        (raw,) = struct.unpack("<Q", ram.read(step.address, 8))
        assert raw == step.entry
    assert t.steps[-1].entry == (0x1234 << 12) | PAGE_KERNEL
    assert t.phys == (0x1234 << 12) | 0x56


def test_a_walk_follows_what_is_written_to_ram_behind_the_models_back() -> None:
    ram, _, pt = make()
    pt.map_page(X86_64_VMALLOC_START, 0x1234)
    pte = pt.walk(X86_64_VMALLOC_START).steps[-1]
    ram.write(pte.address, struct.pack("<Q", (0x999 << 12) | PAGE_KERNEL))
    assert pt.translate(X86_64_VMALLOC_START) == 0x999 << 12


def test_i386_entries_are_4_bytes_and_tables_have_1024_of_them() -> None:
    ram, _, pt = I386[False]
    t = pt.walk(0xC0000000 + 40 * MIB)
    (step,) = t.steps
    assert step.index == (0xC0000000 + 40 * MIB) >> 22
    assert step.address == pt.cr3 + 4 * step.index
    assert struct.unpack("<I", ram.read(step.address, 4))[0] == step.entry == 40 * MIB | 0x1E3


@given(
    pages=st.dictionaries(
        st.integers(0, 1 << 20), st.integers(0, (64 * MIB >> 12) - 1), min_size=1, max_size=20
    )
)
def test_map_walk_unmap_round_trip(pages: dict[int, int]) -> None:
    _, _, pt = make()
    for page, pfn in pages.items():
        pt.map_page(X86_64_VMALLOC_START + (page << 12), pfn)
    for page, pfn in pages.items():
        assert pt.translate(X86_64_VMALLOC_START + (page << 12) + 7) == (pfn << 12) + 7
    tables = pt.nr_pagetable_pages
    for page, pfn in pages.items():
        assert pt.unmap_page(X86_64_VMALLOC_START + (page << 12)) == pfn
        with pytest.raises(PageNotPresent):
            pt.walk(X86_64_VMALLOC_START + (page << 12))
    assert pt.nr_pagetable_pages == tables  # kernel page tables are never freed
    pt.check_invariants()


def test_a_walk_of_an_unmapped_address_names_the_level_that_is_not_present() -> None:
    _, _, pt = make()
    pt.map_page(X86_64_VMALLOC_START, 1000)
    with pytest.raises(hwsim.SegmentationFault, match=r"no page for 0xffffc90000001000 \(PTE"):
        pt.walk(X86_64_VMALLOC_START + 4096)
    with pytest.raises(PageNotPresent, match=r"no PTE for 0xffffc90000200000 \(PMD entry") as e:
        pt.walk(X86_64_VMALLOC_START + 2 * MIB)
    assert e.value.address == X86_64_VMALLOC_START + 2 * MIB
    assert e.value.level == "PMD" and len(e.value.steps) == 3
    with pytest.raises(PageNotPresent, match=r"no PUD for 0x1000 \(PGD entry not present\)"):
        pt.walk(0x1000)


def test_a_non_canonical_address_is_a_general_protection_fault() -> None:
    _, _, pt = make()
    with pytest.raises(hwsim.SegmentationFault, match="non-canonical address 0x800000000000"):
        pt.walk(0x0000800000000000)


def test_page_table_pages_come_from_the_buddy_allocator_and_are_counted() -> None:
    ram = RamModel(size=64 * MIB)
    buddy = BuddyAllocator(nr_pages=(64 * MIB) >> 12)
    before = buddy.nr_allocated_pages()
    pt = KernelPageTable(buddy, ram, layout_for("x86_64", 64 * MIB))
    # PGD, the direct map's PUD and PMD, and the 64 PUDs of vmalloc space.
    assert pt.nr_pagetable_pages == pt.nr_boot_pagetable_pages == 3 + 64
    assert buddy.nr_allocated_pages() == before + pt.nr_pagetable_pages
    assert all(buddy.allocated[pfn] == 0 for pfn in pt.pagetable_pfns())
    assert all(ram.read(pfn << 12, 4096) == bytes(4096) for pfn in pt.pagetable_pfns()[-3:])
    pt.map_page(X86_64_VMALLOC_START, 500)  # needs a PMD and a PTE page
    assert pt.nr_pagetable_pages == 3 + 64 + 2
    assert buddy.nr_allocated_pages() == before + pt.nr_pagetable_pages
    pt.unmap_page(X86_64_VMALLOC_START)
    assert buddy.nr_allocated_pages() == before + 3 + 64 + 2
    assert pt.is_pagetable_page(pt.cr3 >> 12) and not pt.is_pagetable_page(500)


def test_mapping_an_address_twice_is_refused_and_changes_nothing() -> None:
    _, _, pt = make()
    pt.map_pages(X86_64_VMALLOC_START, [10, 11])
    with pytest.raises(ValueError, match=r"already mapped.*-EBUSY"):
        pt.map_pages(X86_64_VMALLOC_START - 4096 * 3, [1, 2, 3, 4])
    assert pt.translate(X86_64_VMALLOC_START) == 10 << 12
    with pytest.raises(PageNotPresent):
        pt.walk(X86_64_VMALLOC_START - 4096)
    pt.check_invariants()


def test_a_map_that_cannot_get_a_table_page_frees_the_tables_it_took() -> None:
    _, buddy, pt = make()
    held = []
    while True:
        try:
            held.append(buddy.alloc_pages(0, G.GFP_KERNEL))
        except hwsim.OutOfMemory:
            break
    buddy.free_pages(held.pop())  # room for the PMD page, not for the PTE page
    tables, allocated = pt.nr_pagetable_pages, buddy.nr_allocated_pages()
    with pytest.raises(hwsim.OutOfMemory, match="page allocation failure"):
        pt.map_page(X86_64_VMALLOC_START, 7)
    assert (pt.nr_pagetable_pages, buddy.nr_allocated_pages()) == (tables, allocated)
    with pytest.raises(PageNotPresent, match=r"\(PUD entry not present\)"):
        pt.walk(X86_64_VMALLOC_START)
    pt.check_invariants()


def test_unmapping_what_is_not_mapped_is_refused() -> None:
    _, _, pt = make()
    pt.map_page(X86_64_VMALLOC_START, 3)
    with pytest.raises(ValueError, match="0xffffc90000001000 is not mapped"):
        pt.unmap_pages(X86_64_VMALLOC_START, 2)
    assert pt.translate(X86_64_VMALLOC_START) == 3 << 12  # all or nothing
    with pytest.raises(ValueError, match="not mapped by a PTE"):
        pt.unmap_page(X86_64_PAGE_OFFSET)  # a 2 MiB page of the direct map


def test_permissions_combine_over_the_levels_as_the_hardware_does() -> None:
    _, _, pt = make()
    pt.map_page(X86_64_VMALLOC_START, 3, _PAGE_PRESENT | _PAGE_USER)
    t = pt.walk(X86_64_VMALLOC_START)
    assert t.flags == _PAGE_PRESENT | _PAGE_USER
    assert not t.writable  # read-only PTE
    assert not t.user  # the kernel's upper levels are supervisor-only
    assert not t.nx
    pt.map_page(X86_64_VMALLOC_START + 4096, 4)
    assert pt.walk(X86_64_VMALLOC_START + 4096).flags == PAGE_KERNEL & 0xFFF | _PAGE_NX


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda pt: pt.map_page("0", 1), TypeError, "must be an int"),
        (lambda pt: pt.map_page(X86_64_VMALLOC_START + 1, 1), ValueError, "not page aligned"),
        (lambda pt: pt.map_page(0x0000900000000000, 1), ValueError, "not a canonical"),
        (lambda pt: pt.map_page(X86_64_VMALLOC_START, -1), ValueError, "does not fit"),
        (lambda pt: pt.map_page(X86_64_VMALLOC_START, True), TypeError, "pfn must be an int"),
        (lambda pt: pt.map_page(X86_64_VMALLOC_START, 1, _PAGE_RW), ValueError, "_PAGE_PRESENT"),
        (lambda pt: pt.map_page(X86_64_VMALLOC_START, 1, 1 << 12 | 1), ValueError, "outside"),
        (lambda pt: pt.map_page(X86_64_PAGE_OFFSET, 1), ValueError, "2 MiB page"),
        (lambda pt: pt.unmap_pages(X86_64_VMALLOC_START, 0), ValueError, "at least 1"),
        (lambda pt: pt.walk(-1), ValueError, "not a 48-bit address"),
    ],
)
def test_bad_arguments_are_refused_without_side_effects(
    call: object, error: type[Exception], match: str
) -> None:
    _, buddy, pt = make()
    allocated = buddy.nr_allocated_pages()
    with pytest.raises(error, match=match):
        call(pt)  # type: ignore[operator]
    assert buddy.nr_allocated_pages() == allocated
    pt.check_invariants()


def test_i386_without_pae_has_no_nx_bit_and_x86_64_has_no_pae() -> None:
    _, _, pt = make("i386")
    with pytest.raises(ValueError, match="no NX bit"):
        pt.map_page(0xF0000000, 1, PAGE_KERNEL)
    with pytest.raises(ValueError, match="PAE is a 32-bit"):
        make("x86_64", pae=True)
    with pytest.raises(ValueError, match="not a 32-bit address"):
        pt.walk(1 << 32)


def test_a_machine_too_small_for_its_page_tables_keeps_nothing() -> None:
    ram = RamModel(size=2 * MIB)
    buddy = BuddyAllocator(nr_pages=512)
    allocated = buddy.nr_allocated_pages()
    with pytest.raises(hwsim.OutOfMemory):
        KernelPageTable(buddy, ram, layout_for("x86_64", 2 * MIB))
    assert buddy.nr_allocated_pages() == allocated


def test_a_timed_walk_costs_one_step_per_level_and_timed_maps_charge_table_allocations() -> None:
    _, _, pt = make()
    _, done = pt.timed_walk(X86_64_PAGE_OFFSET, at=1000)
    assert done == 1000 + 3 * WALK_STEP_CYCLES
    _, first = pt.timed_map_pages(X86_64_VMALLOC_START, [1], None, at=0)
    _, second = pt.timed_map_pages(X86_64_VMALLOC_START + 4096, [2], None, at=0)
    assert first > second > 0  # the first one allocated and cleared two table pages
    pfns, done = pt.timed_unmap_pages(X86_64_VMALLOC_START, 2, at=5)
    assert pfns == [1, 2] and done > 5
