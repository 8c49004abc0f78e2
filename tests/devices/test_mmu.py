"""The MMU: x86 page-table walks from RAM, the TLB in front, permission checks, A/D bits."""

from __future__ import annotations

import functools
from collections.abc import Callable

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hwsim
from hwsim.config import TlbConfig
from hwsim.devices import mmu as M
from hwsim.devices.mmu import (
    FETCH_FROM_NX,
    NOT_PRESENT,
    PAGING_MODES,
    USER_TO_KERNEL,
    WRITE_TO_READ_ONLY,
    X86_64_4LEVEL,
    X86_PF_INSTR,
    X86_PF_PROT,
    X86_PF_USER,
    X86_PF_WRITE,
    GeneralProtectionFault,
    MmuModel,
    PageFault,
)
from hwsim.devices.ram import RamModel
from hwsim.devices.tlb import TlbModel
from hwsim.kernel import pagetable as K
from hwsim.kernel.buddy import BuddyAllocator
from hwsim.kernel.layout import Layout, layout_for
from hwsim.kernel.pagetable import KernelPageTable
from hwsim.kernel.vmalloc import VmallocAllocator

MIB = 1 << 20
KIB4 = 4096
TLB_LATENCY = 1
WALK = 30
P, RW, US, A, D, PSE, G = 0x1, 0x2, 0x4, 0x20, 0x40, 0x80, 0x100
NX = 1 << 63


@attrs.define
class Stack:
    ram: RamModel
    buddy: BuddyAllocator
    layout: Layout
    pt: KernelPageTable
    vm: VmallocAllocator

    def mmu(self, config: TlbConfig | None = None, **kw: object) -> MmuModel:
        tlb = TlbModel(config or TlbConfig())
        mmu = MmuModel(
            self.ram,
            tlb,
            mode=PAGING_MODES[self.pt.mode.name],
            walk_latency_per_level=WALK,
            tlb_latency=TLB_LATENCY,
            **kw,  # type: ignore[arg-type]
        )
        mmu.load_cr3(self.pt.cr3)
        return mmu

    def page(self) -> int:
        """A free page frame, for mappings made by hand."""
        return self.buddy.alloc_pages(0)


def stack(arch: str = "x86_64", pae: bool = False) -> Stack:
    ram = RamModel(size=64 * MIB)
    buddy = BuddyAllocator((64 * MIB) >> 12, arch=arch, nr_cpus=1)
    layout = layout_for(arch, 64 * MIB)
    pt = KernelPageTable(buddy, ram, layout, pae=pae)
    return Stack(ram, buddy, layout, pt, VmallocAllocator(buddy, pt, layout, ram))


ARCHES = [("x86_64", False), ("i386", False), ("i386", True)]


@functools.cache
def shared(arch: str, pae: bool) -> tuple[Stack, list[tuple[int, int]]]:
    """A stack with a few vmalloc areas (address, size), for read-only use."""
    s = stack(arch, pae)
    areas = [(s.vm.vmalloc(size), size) for size in (KIB4, 5 * KIB4, MIB, 3 * MIB)]
    return s, areas


def leaf_entry(s: Stack, vaddr: int) -> int:
    """The leaf entry of ``vaddr`` as RAM holds it."""
    return s.pt.walk(vaddr).steps[-1].entry


def hand_map_address(s: Stack) -> int:
    """A vmalloc-space address far from vmalloc's own areas, for map_page by hand."""
    return s.layout.vmalloc_start + 512 * MIB


# --------------------------------------------------------------------- the walk


def test_the_mmu_paging_modes_have_the_kernel_page_tables_geometry_and_bits() -> None:
    for kernel_mode in (K.X86_64_4LEVEL, K.I386_2LEVEL, K.I386_PAE):
        assert attrs.asdict(PAGING_MODES[kernel_mode.name]) == attrs.asdict(kernel_mode)
    for name in ("PRESENT", "RW", "USER", "ACCESSED", "DIRTY", "PSE", "GLOBAL", "NX"):
        assert getattr(M, f"_PAGE_{name}") == getattr(K, f"_PAGE_{name}")


@pytest.mark.parametrize(("arch", "pae"), ARCHES)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_the_mmu_translates_as_the_kernel_page_table_walks(
    arch: str, pae: bool, data: st.DataObject
) -> None:
    s, areas = shared(arch, pae)
    if data.draw(st.booleans(), label="direct map"):
        vaddr = s.layout.page_offset + data.draw(st.integers(0, s.layout.direct_map_size - 1))
    else:
        addr, size = data.draw(st.sampled_from(areas))
        vaddr = addr + data.draw(st.integers(0, size - 1))
    mmu = s.mmu()
    expected = s.pt.walk(vaddr)
    assert mmu.translate(vaddr, write=False, user=False)[0] == expected.phys
    assert mmu.translate(vaddr, write=True, user=False)[0] == expected.phys  # now a TLB hit
    walked = mmu.walk(vaddr)
    assert (walked.phys, walked.page_size, walked.flags) == (
        expected.phys,
        expected.page_size,
        expected.flags,
    )
    assert (walked.writable, walked.user, walked.nx) == (
        expected.writable,
        expected.user,
        expected.nx,
    )
    assert [(w.level, w.table, w.index, w.entry, w.address) for w in walked.steps] == [
        (e.level, e.table, e.index, e.entry, e.address) for e in expected.steps
    ]
    (entry,) = mmu.tlb.entries()
    assert entry.page_size == expected.page_size
    s.pt.check_invariants()  # kernel entries already have A|D: the MMU wrote nothing


def test_walk_names_every_level_decodes_its_flags_and_changes_nothing() -> None:
    s, areas = shared("x86_64", False)
    mmu = s.mmu()
    before = mmu.tlb.statistics()
    direct = mmu.walk(s.layout.page_offset + 0x123456)
    assert [step.level for step in direct.steps] == ["PGD", "PUD", "PMD"]
    assert direct.steps[-1].flags == (
        "PRESENT",
        "RW",
        "ACCESSED",
        "DIRTY",
        "PSE",
        "GLOBAL",
        "NX",
    )
    assert direct.steps[0].target == direct.steps[1].table
    assert (direct.level, direct.page_size, direct.steps[-1].target) == ("PMD", 2 * MIB, 0)
    vmalloc = mmu.walk(areas[0][0])
    assert vmalloc.level == "PTE" and "PSE" not in vmalloc.steps[-1].flags
    assert vmalloc.steps[-1].target == vmalloc.phys
    assert len(mmu.tlb) == 0 and mmu.tlb.statistics() == before


def test_walking_a_guard_page_raises_with_the_entries_read() -> None:
    s, areas = shared("x86_64", False)
    addr, size = areas[1]
    with pytest.raises(PageFault) as info:
        s.mmu().walk(addr + size)
    assert [step.level for step in info.value.steps] == ["PGD", "PUD", "PMD", "PTE"]
    assert info.value.steps[-1].entry == 0


# --------------------------------------------------------------------- the TLB in front


@pytest.mark.parametrize(
    ("arch", "pae", "size"), [(*a, sz) for a, sz in zip(ARCHES, (2, 4, 2), strict=True)]
)
def test_a_large_direct_map_page_is_one_tlb_entry(arch: str, pae: bool, size: int) -> None:
    s, _ = shared(arch, pae)
    mmu = s.mmu()
    base = s.layout.page_offset + 3 * size * MIB
    _, first = mmu.translate(base + 0x10, write=False, user=False)
    phys, second = mmu.translate(base + size * MIB - 8, write=True, user=False)
    assert phys == 3 * size * MIB + size * MIB - 8
    levels = len(PAGING_MODES[s.pt.mode.name].levels) - 1
    assert (first, second) == (TLB_LATENCY + levels * WALK, TLB_LATENCY)
    (entry,) = mmu.tlb.entries()
    assert entry.page_size == size * MIB and entry.global_
    stats = mmu.tlb.statistics()
    assert (stats.hits, stats.misses, stats.walks, stats.walk_cycles) == (1, 1, 1, levels * WALK)


def test_reading_1mib_of_vmalloc_memory_takes_256_misses_and_the_direct_map_one() -> None:
    s, areas = shared("x86_64", False)
    vmalloc_addr = next(addr for addr, size in areas if size == MIB)
    direct_addr = s.layout.page_offset + 4 * MIB
    misses = {}
    cycles = {}
    for name, base in (("vmalloc", vmalloc_addr), ("direct", direct_addr)):
        mmu = s.mmu()
        _, latencies = mmu.translate_many(np.arange(base, base + MIB, 8, dtype=np.uint64), False)
        misses[name] = mmu.tlb.statistics().misses
        cycles[name] = int(latencies.sum())
    assert misses == {"vmalloc": 256, "direct": 1}
    assert cycles["vmalloc"] - cycles["direct"] == 256 * 4 * WALK - 3 * WALK


def test_invlpg_through_the_mmu_drops_exactly_one_page() -> None:
    s, areas = shared("x86_64", False)
    addr = areas[1][0]
    mmu = s.mmu()
    for i in range(3):
        mmu.translate(addr + i * KIB4, write=False, user=False)
    assert mmu.invlpg(addr + KIB4 + 5) == 1
    latencies = [mmu.translate(addr + i * KIB4, write=False, user=False)[1] for i in range(3)]
    assert latencies == [TLB_LATENCY, TLB_LATENCY + 4 * WALK, TLB_LATENCY]


def test_a_cr3_load_without_pcid_flushes_non_global_entries_but_keeps_global_ones() -> None:
    s = stack()
    va = hand_map_address(s)
    s.pt.map_page(va, s.page(), P | RW | A | D | NX)  # not global
    mmu = s.mmu()
    mmu.translate(va, write=False, user=False)
    mmu.translate(s.layout.page_offset, write=False, user=False)
    mmu.load_cr3(s.pt.cr3)
    assert [e.vaddr for e in mmu.tlb.entries()] == [s.layout.page_offset]
    assert mmu.translate(va, write=False, user=False)[1] > TLB_LATENCY
    assert mmu.tlb.statistics().flushes == 2  # the first load too


# --------------------------------------------------------------------- faults


def test_the_guard_page_after_a_vmalloc_area_faults_not_present_and_changes_nothing() -> None:
    s, areas = shared("x86_64", False)
    addr, size = areas[1]
    guard = addr + size
    assert s.vm.is_guard_page(guard)
    mmu = s.mmu()
    mmu.translate(addr, write=False, user=False)
    entries, ram_before = mmu.tlb.entries(), s.ram.statistics()
    with pytest.raises(PageFault) as info:
        mmu.translate(guard + 8, write=False, user=False)
    fault = info.value
    assert (fault.reason, fault.level, fault.error_code) == (NOT_PRESENT, "PTE", 0)
    assert fault.address == guard + 8 and not fault.write and not fault.user
    assert str(fault).splitlines()[:3] == [
        f"BUG: unable to handle page fault for address: {guard + 8:016x}",
        "#PF: supervisor read access in kernel mode",
        "#PF: error_code(0x0000) - not-present page",
    ]
    assert "PTE entry" in str(fault)
    stats = mmu.tlb.statistics()
    assert (stats.hits, stats.misses, stats.walks) == (0, 2, 2)
    assert mmu.tlb.entries() == entries and s.ram.statistics() == ram_before
    s.pt.check_invariants()


def test_a_write_to_a_read_only_mapping_faults_with_the_write_bit() -> None:
    s = stack()
    va = hand_map_address(s)
    pfn = s.page()
    s.pt.map_page(va, pfn, P | A | D | G | NX)
    mmu = s.mmu()
    with pytest.raises(PageFault) as info:
        mmu.translate(va + 8, write=True, user=False)  # decided by the walk
    fault = info.value
    assert (fault.reason, fault.level, fault.from_tlb) == (WRITE_TO_READ_ONLY, "PTE", False)
    assert fault.error_code == X86_PF_PROT | X86_PF_WRITE == 0x3
    assert "#PF: supervisor write access in kernel mode" in str(fault)
    assert "#PF: error_code(0x0003) - permissions violation" in str(fault)
    assert len(mmu.tlb) == 0  # a failed walk caches nothing
    assert mmu.translate(va + 8, write=False, user=False)[0] == (pfn << 12) + 8
    with pytest.raises(PageFault) as info:
        mmu.translate(va, write=True, user=False)  # decided by the TLB entry
    assert info.value.from_tlb and info.value.error_code == 0x3


def test_a_page_fault_drops_the_faulting_pages_tlb_entry_as_x86_does() -> None:
    s = stack()
    va = hand_map_address(s)
    s.pt.map_page(va, s.page(), P | A | D | G | NX)
    mmu = s.mmu()
    mmu.translate(va, write=False, user=False)
    with pytest.raises(PageFault):
        mmu.translate(va, write=True, user=False)
    assert len(mmu.tlb) == 0
    assert mmu.translate(va, write=False, user=False)[1] == TLB_LATENCY + 4 * WALK


def test_a_user_access_to_a_kernel_page_faults_at_the_first_level_without_user() -> None:
    s, _ = shared("x86_64", False)
    mmu = s.mmu()
    with pytest.raises(PageFault) as info:
        mmu.translate(s.layout.page_offset + 0x1000, write=False, user=True)
    fault = info.value
    assert (fault.reason, fault.level) == (USER_TO_KERNEL, "PGD")
    assert fault.error_code == X86_PF_PROT | X86_PF_USER == 0x5
    assert "#PF: user read access in user mode" in str(fault)


def test_an_instruction_fetch_from_an_nx_page_faults_and_from_an_exec_page_does_not() -> None:
    s = stack()
    mmu = s.mmu()
    with pytest.raises(PageFault) as info:
        mmu.translate(s.layout.page_offset, write=False, user=False, exec_=True)
    fault = info.value
    assert (fault.reason, fault.level) == (FETCH_FROM_NX, "PMD")
    assert fault.error_code == X86_PF_PROT | X86_PF_INSTR == 0x11
    assert str(fault).startswith("kernel tried to execute NX-protected page")
    va = hand_map_address(s)
    pfn = s.page()
    s.pt.map_page(va, pfn, K.PAGE_KERNEL_EXEC)
    assert mmu.translate(va, write=False, user=False, exec_=True)[0] == pfn << 12


def test_a_kernel_null_pointer_dereference_reads_like_linux() -> None:
    s, _ = shared("x86_64", False)
    with pytest.raises(PageFault) as info:
        s.mmu().translate(8, write=False, user=False)
    assert str(info.value).startswith(
        "BUG: kernel NULL pointer dereference, address: 0000000000000008"
    )
    assert info.value.level == "PGD"


def test_on_i386_a_fault_names_a_32_bit_address() -> None:
    s, areas = shared("i386", False)
    addr, size = areas[0]
    with pytest.raises(PageFault) as info:
        s.mmu().translate(addr + size, write=True, user=False)
    assert f"for address: {addr + size:08x}\n" in str(info.value)
    assert info.value.error_code == X86_PF_WRITE


def test_page_faults_and_general_protection_faults_are_segmentation_faults() -> None:
    assert issubclass(PageFault, hwsim.SegmentationFault)
    assert issubclass(GeneralProtectionFault, hwsim.SegmentationFault)


# --------------------------------------------------------------------- accessed and dirty


def test_the_accessed_and_dirty_bits_appear_in_ram_after_a_read_and_a_write() -> None:
    s = stack()
    va = hand_map_address(s)
    s.pt.map_page(va, s.page(), P | RW | G | NX)
    mmu = s.mmu()
    assert leaf_entry(s, va) & (A | D) == 0
    mmu.translate(va, write=False, user=False)
    assert leaf_entry(s, va) & (A | D) == A
    _, latency = mmu.translate(va, write=True, user=False)  # a clean entry: walk to set D
    assert leaf_entry(s, va) & (A | D) == A | D
    assert latency == TLB_LATENCY + 4 * WALK
    assert mmu.translate(va, write=True, user=False)[1] == TLB_LATENCY
    stats = mmu.tlb.statistics()
    assert (stats.hits, stats.misses, stats.walks) == (2, 1, 2)


def test_a_write_miss_sets_accessed_and_dirty_at_once_and_the_option_turns_it_off() -> None:
    s = stack()
    va = hand_map_address(s)
    s.pt.map_page(va, s.page(), P | RW | G | NX)
    s.pt.map_page(va + KIB4, s.page(), P | RW | G | NX)
    s.mmu().translate(va, write=True, user=False)
    assert leaf_entry(s, va) & (A | D) == A | D
    quiet = s.mmu(set_accessed_dirty=False)
    quiet.translate(va + KIB4, write=True, user=False)
    quiet.translate(va + KIB4, write=True, user=False)
    assert leaf_entry(s, va + KIB4) & (A | D) == 0
    assert quiet.tlb.statistics().walks == 1


# --------------------------------------------------------------------- hand-built tables


class HandTables:
    """4-level page tables written by hand into RAM, for what the kernel model never builds
    (user pages, 1 GiB pages, several address spaces)."""

    def __init__(self, ram: RamModel, start: int) -> None:
        self.ram, self.next = ram, start
        self.root = self.alloc()

    def alloc(self) -> int:
        phys, self.next = self.next, self.next + KIB4
        self.ram.write(phys, bytes(KIB4))
        return phys

    def map(self, vaddr: int, phys: int, flags: int, size: int = KIB4) -> None:
        table = self.root
        for level in X86_64_4LEVEL.levels:
            at = table + ((vaddr >> level.shift) & 511) * 8
            if 1 << level.shift == size:
                entry = phys | flags | (PSE if size > KIB4 else 0)
                self.ram.write(at, entry.to_bytes(8, "little"))
                return
            entry = int.from_bytes(self.ram.read(at, 8), "little")
            if not entry & P:
                entry = self.alloc() | P | RW | US | A
                self.ram.write(at, entry.to_bytes(8, "little"))
            table = entry & X86_64_4LEVEL.addr_mask


def hand_mmu(pcid: bool = False) -> tuple[RamModel, MmuModel]:
    ram = RamModel(size=16 * MIB)
    return ram, MmuModel(
        ram,
        TlbModel(TlbConfig(pcid=pcid)),
        mode=X86_64_4LEVEL,
        walk_latency_per_level=WALK,
        tlb_latency=TLB_LATENCY,
    )


def test_a_user_access_to_a_user_page_succeeds_and_a_1gib_page_is_one_entry() -> None:
    ram, mmu = hand_mmu()
    tables = HandTables(ram, 8 * MIB)
    tables.map(0x400000, 0x3000, P | RW | US)
    tables.map(1 << 39, 1 << 30, P | RW | US | NX, size=1 << 30)
    mmu.load_cr3(tables.root)
    assert mmu.translate(0x400010, write=True, user=True)[0] == 0x3010
    assert mmu.translate((1 << 39) + 0x3FFFFFFF, write=False, user=True)[0] == (2 << 30) - 1
    assert mmu.translate((1 << 39) + 5, write=False, user=False)[1] == TLB_LATENCY
    assert sorted(e.page_size for e in mmu.tlb.entries()) == [KIB4, 1 << 30]
    assert mmu.walk((1 << 39) + 5).level == "PUD"


def test_with_pcid_another_address_space_does_not_hit_and_noflush_keeps_entries() -> None:
    ram, mmu = hand_mmu(pcid=True)
    one, two = HandTables(ram, 4 * MIB), HandTables(ram, 8 * MIB)
    one.map(0x400000, 0x1000, P | RW | US)
    two.map(0x400000, 0x2000, P | RW | US)
    mmu.load_cr3(one.root, asid=1)
    assert mmu.translate(0x400000, write=False, user=True) == (0x1000, TLB_LATENCY + 4 * WALK)
    mmu.load_cr3(two.root, asid=2)
    assert mmu.translate(0x400000, write=False, user=True) == (0x2000, TLB_LATENCY + 4 * WALK)
    mmu.load_cr3(one.root, asid=1, noflush=True)
    assert mmu.translate(0x400000, write=False, user=True) == (0x1000, TLB_LATENCY)
    mmu.load_cr3(one.root, asid=1)
    assert mmu.translate(0x400000, write=False, user=True)[1] > TLB_LATENCY
    with pytest.raises(ValueError, match="4095"):
        mmu.load_cr3(two.root, asid=4096)
    assert (mmu.cr3, mmu.asid) == (one.root, 1)


def test_pcid_needs_4_level_paging() -> None:
    with pytest.raises(ValueError, match="PCID"):
        MmuModel(
            RamModel(size=MIB),
            TlbModel(TlbConfig(pcid=True)),
            mode=PAGING_MODES["PAE"],
            walk_latency_per_level=WALK,
            tlb_latency=TLB_LATENCY,
        )


# --------------------------------------------------------------------- timing


def test_a_timed_walk_reads_each_level_from_ram_and_queues_behind_other_traffic() -> None:
    s = stack()
    mmu = s.mmu()
    base = s.layout.page_offset
    per_read = s.ram.latency + 1  # an 8-byte entry: one transfer cycle, then the latency
    phys, done, steps = mmu.timed_translate(base + 0x1234, 1000, False, False)
    assert (phys, done, steps) == (0x1234, 1000 + TLB_LATENCY + 3 * per_read, 3)
    assert s.ram.statistics().reads == 3
    assert mmu.timed_translate(base + 0x2000, 5000, True, False) == (0x2000, 5000 + TLB_LATENCY, 0)
    s.ram.timed_read(0, MIB, 10_000)  # the channel is busy for MIB / 16 cycles
    _, done, _ = mmu.timed_translate(base + 4 * MIB, 10_000, False, False)
    assert done >= 10_000 + MIB // s.ram.bytes_per_cycle + 3 * per_read
    assert mmu.tlb.statistics().walk_cycles == done - 10_000 - TLB_LATENCY + 3 * per_read


def test_a_timed_fault_says_when_it_happened() -> None:
    s, areas = shared("x86_64", False)
    addr, size = areas[0]
    with pytest.raises(PageFault) as info:
        s.mmu().timed_translate(addr + size, 100, False, False)
    assert info.value.done is not None and info.value.done > 100 + TLB_LATENCY


# --------------------------------------------------------------------- batches


@functools.cache
def batch_world() -> tuple[Stack, list[int], list[tuple[int, int]]]:
    """Pages of every kind: direct map, vmalloc, clean (no A/D) pages, a read-only page and
    a guard page; plus the clean leaf entries (address, value) to restore between runs."""
    s = stack()
    area = s.vm.vmalloc(6 * KIB4)
    clean = hand_map_address(s)
    s.pt.map_pages(clean, [s.page() for _ in range(4)], P | RW | G | NX)
    s.pt.map_page(clean + 4 * KIB4, s.page(), P | A | D | G | NX)  # read-only
    pages = (
        [s.layout.page_offset + i * 2 * MIB + 0x3000 for i in range(4)]
        + [area + i * KIB4 for i in range(7)]  # the last one is the guard page
        + [clean + i * KIB4 for i in range(5)]
        # Two more 4 KiB pages inside the first 2 MiB page: runs on one large entry.
        + [s.layout.page_offset + 0x9000, s.layout.page_offset + 0x1FF000]
    )
    leaves = [(s.pt.walk(clean + i * KIB4).steps[-1].address, 0) for i in range(4)]
    leaves = [(at, int.from_bytes(s.ram.read(at, 8), "little")) for at, _ in leaves]
    return s, pages, leaves


def one_by_one(mmu: MmuModel, vaddrs: list[int], writes: list[bool]) -> tuple[object, ...]:
    phys, latencies = [], []
    for i, (vaddr, write) in enumerate(zip(vaddrs, writes, strict=True)):
        try:
            p, lat = mmu.translate(vaddr, write=write, user=False)
        except PageFault as fault:
            return None, None, (i, fault.reason, fault.error_code)
        phys.append(p)
        latencies.append(lat)
    return phys, latencies, None


def batched(mmu: MmuModel, vaddrs: list[int], writes: list[bool]) -> tuple[object, ...]:
    try:
        phys, latencies = mmu.translate_many(
            np.array(vaddrs, dtype=np.uint64), np.array(writes, dtype=bool)
        )
    except PageFault as fault:
        return None, None, (fault.index, fault.reason, fault.error_code)
    return phys.tolist(), latencies.tolist(), None


# A trace is a list of bursts, each in one page: runs of one page with changing writes.
bursts = st.lists(
    st.tuples(
        st.integers(0, 17),
        st.lists(st.tuples(st.integers(0, 511), st.booleans()), min_size=1, max_size=6),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(trace=bursts, policy=st.sampled_from(["lru", "fifo", "random"]))
def test_batched_translate_equals_translating_one_by_one(
    trace: list[tuple[int, list[tuple[int, bool]]]], policy: str
) -> None:
    s, pages, leaves = batch_world()
    vaddrs = [pages[page] + 8 * word for page, burst in trace for word, _ in burst]
    writes = [write for _, burst in trace for _, write in burst]
    outcomes = []
    for run in (one_by_one, batched):
        for at, value in leaves:
            s.ram.write(at, value.to_bytes(8, "little"))
        mmu = s.mmu(TlbConfig(entries=8, ways=2, replacement=policy))
        result = run(mmu, vaddrs, writes)
        ram_leaves = [s.ram.read(at, 8) for at, _ in leaves]
        outcomes.append((result, mmu.tlb.statistics(), mmu.tlb.entries(), ram_leaves))
    assert outcomes[0] == outcomes[1]


def test_a_write_after_a_read_of_one_clean_page_in_a_batch_sets_the_dirty_bit() -> None:
    s = stack()
    va = hand_map_address(s)
    s.pt.map_page(va, s.page(), P | RW | G | NX)
    mmu = s.mmu()
    vaddrs = np.array([va, va + 8, va + 16, va + 24], dtype=np.uint64)
    _, latencies = mmu.translate_many(vaddrs, np.array([False, False, True, True]))
    assert leaf_entry(s, va) & (A | D) == A | D
    walk = TLB_LATENCY + 4 * WALK
    assert latencies.tolist() == [walk, TLB_LATENCY, walk, TLB_LATENCY]
    stats = mmu.tlb.statistics()
    assert (stats.hits, stats.misses, stats.walks) == (3, 1, 2)


def test_a_fault_in_a_batch_names_its_index_and_the_accesses_before_it_happened() -> None:
    s, areas = shared("x86_64", False)
    addr, size = areas[0]
    mmu = s.mmu()
    vaddrs = np.array([addr, addr + 8, addr + size, addr + 16], dtype=np.uint64)
    with pytest.raises(PageFault) as info:
        mmu.translate_many(vaddrs, False)
    assert info.value.index == 2 and info.value.reason == NOT_PRESENT
    stats = mmu.tlb.statistics()
    assert (stats.hits, stats.misses, len(mmu.tlb)) == (1, 2, 1)


def test_a_batch_accepts_one_write_flag_for_all_and_an_empty_trace() -> None:
    s, _ = shared("x86_64", False)
    mmu = s.mmu()
    base = s.layout.page_offset
    phys, latencies = mmu.translate_many(np.array([base, base + 8], dtype=np.uint64), True)
    assert phys.tolist() == [0, 8] and latencies.tolist() == [TLB_LATENCY + 3 * WALK, TLB_LATENCY]
    phys, latencies = mmu.translate_many(np.array([], dtype=np.uint64), np.array([], dtype=bool))
    assert len(phys) == len(latencies) == 0


# --------------------------------------------------------------------- bad input

NON_CANONICAL = 0x0000_8000_0000_0000


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda m: m.translate(-1, write=False, user=False), ValueError, "negative"),
        (lambda m: m.translate("0x1000", write=False, user=False), TypeError, "int"),
        (lambda m: m.translate(1.5, write=False, user=False), TypeError, "int"),
        (lambda m: m.translate(True, write=False, user=False), TypeError, "int"),
        (lambda m: m.translate(1 << 64, write=False, user=False), ValueError, "64-bit"),
        (
            lambda m: m.translate(NON_CANONICAL, write=False, user=False),
            GeneralProtectionFault,
            "general protection fault, probably for non-canonical address 0x800000000000",
        ),
        (lambda m: m.translate(0, write=1, user=False), TypeError, "write"),
        (lambda m: m.translate(0, write=True, user=False, exec_=True), ValueError, "fetch"),
        (lambda m: m.timed_translate(0, -5, False, False), ValueError, "at"),
        (lambda m: m.translate_many(np.array([0, -8]), False), ValueError, r"vaddrs\[1\]"),
        (lambda m: m.translate_many(np.array([0.0]), False), TypeError, "integer"),
        (lambda m: m.translate_many(np.array([0, 8]), np.array([1, 0])), TypeError, "bools"),
        (lambda m: m.translate_many(np.array([0, 8]), np.array([True])), ValueError, "shape"),
        (
            lambda m: m.translate_many(
                np.array([0xFFFF888000000000, NON_CANONICAL], dtype=np.uint64), False
            ),
            GeneralProtectionFault,
            r"vaddrs\[1\]",
        ),
        (lambda m: m.load_cr3(0x1234), ValueError, "aligned"),
        (lambda m: m.load_cr3(1 << 40), ValueError, "beyond the end of RAM"),
        (lambda m: m.load_cr3(0x1000, asid=3), ValueError, "PCID"),
        (lambda m: m.load_cr3(0x1000, noflush=True), ValueError, "PCID"),
    ],
)
def test_bad_input_raises_clearly_and_changes_nothing(
    call: Callable[[MmuModel], object], error: type[Exception], match: str
) -> None:
    s, _ = shared("x86_64", False)
    mmu = s.mmu()
    mmu.translate(s.layout.page_offset, write=False, user=False)
    before = (mmu.tlb.statistics(), mmu.tlb.entries(), mmu.cr3, s.ram.statistics())
    with pytest.raises(error, match=match):
        call(mmu)
    assert (mmu.tlb.statistics(), mmu.tlb.entries(), mmu.cr3, s.ram.statistics()) == before


def test_a_32_bit_mmu_refuses_addresses_above_4gib() -> None:
    s, _ = shared("i386", True)
    mmu = s.mmu()
    with pytest.raises(ValueError, match="32-bit"):
        mmu.translate(1 << 32, write=False, user=False)
    with pytest.raises(ValueError, match="32-bit"):
        mmu.translate_many(np.array([1 << 32], dtype=np.uint64), False)


def test_translating_before_cr3_is_loaded_is_an_error() -> None:
    mmu = MmuModel(
        RamModel(size=MIB),
        TlbModel(TlbConfig()),
        mode=X86_64_4LEVEL,
        walk_latency_per_level=WALK,
        tlb_latency=TLB_LATENCY,
    )
    assert mmu.cr3 is None
    with pytest.raises(RuntimeError, match="load_cr3"):
        mmu.translate(0, write=False, user=False)


def test_an_mmu_needs_its_own_paging_mode_objects() -> None:
    with pytest.raises(TypeError, match="PagingMode"):
        MmuModel(
            RamModel(size=MIB),
            TlbModel(TlbConfig()),
            mode="4-level",  # type: ignore[arg-type]
            walk_latency_per_level=WALK,
            tlb_latency=TLB_LATENCY,
        )
