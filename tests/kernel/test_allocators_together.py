"""The allocators share one page allocator: a property test over all of them at once.

Random sequences of alloc_pages/free_pages, kmalloc/kfree, kmem_cache_alloc/free and
vmalloc/vfree on one model stack must keep every book balanced after every step:

- every page the buddy allocator has handed out belongs to exactly one user (our own page
  blocks, slabs and large kmallocs, vmalloc pages, kernel page tables);
- free + per-CPU + allocated + reserved pages == all pages;
- no two live kmalloc/kmem_cache objects overlap, and none overlaps a vmalloc page or a page
  block we hold;
- freeing everything (then shrinking the caches and draining the per-CPU lists) gives back
  every page the machine had free once it had booted, except the kernel page-table pages
  vmalloc allocated on the way (Linux never frees those either).
"""

from __future__ import annotations

import contextlib
import itertools

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import hwsim
from hwsim.devices.ram import RamModel
from hwsim.kernel.buddy import BuddyAllocator
from hwsim.kernel.kmalloc import Kmalloc
from hwsim.kernel.layout import layout_for
from hwsim.kernel.pagetable import KernelPageTable
from hwsim.kernel.slab import SlabAllocator
from hwsim.kernel.vmalloc import VmallocAllocator

RAM = 24 << 20
GFPS = st.sampled_from(
    [hwsim.GFP_KERNEL, hwsim.GFP_ATOMIC, hwsim.GFP_DMA, hwsim.GFP_HIGHUSER_MOVABLE]
)


class Allocators(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ram = RamModel(size=RAM)
        self.buddy = BuddyAllocator(RAM >> 12, nr_cpus=2)
        self.layout = layout_for("x86_64", RAM)
        self.pt = KernelPageTable(self.buddy, self.ram, self.layout)
        self.slab = SlabAllocator(self.buddy, self.ram, self.layout, 2)
        self.kmalloc = Kmalloc(self.slab, self.buddy, self.ram, self.layout)
        self.vmalloc = VmallocAllocator(self.buddy, self.pt, self.layout, self.ram)
        self.cache = self.slab.kmem_cache_create("test_cache", 200, 0, hwsim.SLAB_HWCACHE_ALIGN)
        self.buddy.drain_all_pages()
        self.booted = self._free_pfns()
        self.booted_pagetables = set(self.pt.pagetable_pfns())
        self.pages: dict[int, int] = {}  # pfn -> order
        self.objects: dict[int, int] = {}  # kmalloc address -> size asked
        self.cache_objects: list[int] = []
        self.areas: dict[int, int] = {}  # vmalloc address -> size

    def _free_pfns(self) -> set[int]:
        return {
            pfn + i for pfn, (order, _) in self.buddy.free_block.items() for i in range(1 << order)
        }

    @rule(order=st.integers(0, 4), gfp=GFPS, cpu=st.integers(0, 1))
    def alloc_pages(self, order: int, gfp: int, cpu: int) -> None:
        with contextlib.suppress(hwsim.OutOfMemory):
            self.pages[self.buddy.alloc_pages(order, gfp, cpu)] = order

    @precondition(lambda self: self.pages)
    @rule(data=st.data(), cpu=st.integers(0, 1))
    def free_pages(self, data: st.DataObject, cpu: int) -> None:
        pfn = data.draw(st.sampled_from(sorted(self.pages)))
        self.buddy.free_pages(pfn, self.pages.pop(pfn), cpu)

    @rule(size=st.integers(1, 20000), cpu=st.integers(0, 1), zero=st.booleans())
    def kmalloc_(self, size: int, cpu: int, zero: bool) -> None:
        gfp = hwsim.GFP_KERNEL | (hwsim.GFP_ZERO if zero else 0)
        with contextlib.suppress(hwsim.OutOfMemory):
            self.objects[self.kmalloc.kmalloc(size, gfp, cpu)] = size

    @precondition(lambda self: self.objects)
    @rule(data=st.data(), cpu=st.integers(0, 1))
    def kfree(self, data: st.DataObject, cpu: int) -> None:
        addr = data.draw(st.sampled_from(sorted(self.objects)))
        del self.objects[addr]
        self.kmalloc.kfree(addr, cpu)

    @rule(cpu=st.integers(0, 1))
    def cache_alloc(self, cpu: int) -> None:
        with contextlib.suppress(hwsim.OutOfMemory):
            self.cache_objects.append(self.slab.kmem_cache_alloc(self.cache, hwsim.GFP_KERNEL, cpu))

    @precondition(lambda self: self.cache_objects)
    @rule(data=st.data(), cpu=st.integers(0, 1))
    def cache_free(self, data: st.DataObject, cpu: int) -> None:
        addr = self.cache_objects.pop(data.draw(st.integers(0, len(self.cache_objects) - 1)))
        self.slab.kmem_cache_free(self.cache, addr, cpu)

    @rule(pages=st.integers(1, 40))
    def vmalloc_(self, pages: int) -> None:
        with contextlib.suppress(hwsim.OutOfMemory):
            self.areas[self.vmalloc.vmalloc(pages * 4096 - 100)] = pages

    @precondition(lambda self: self.areas)
    @rule(data=st.data())
    def vfree(self, data: st.DataObject) -> None:
        addr = data.draw(st.sampled_from(sorted(self.areas)))
        del self.areas[addr]
        self.vmalloc.vfree(addr)

    @invariant()
    def every_handed_out_page_has_exactly_one_user(self) -> None:
        self.buddy.check_invariants()
        ours = sum(1 << order for order in self.pages.values())
        users = (
            ours
            + self.slab.nr_slab_pages()
            + self.vmalloc.vmalloc_used_pages
            + self.pt.nr_pagetable_pages
        )
        assert self.buddy.nr_allocated_pages() == users

    @invariant()
    def live_memory_never_overlaps(self) -> None:
        spans: list[tuple[int, int, str]] = []
        for pfn, order in self.pages.items():
            spans.append((pfn << 12, (pfn + (1 << order)) << 12, "pages"))
        for addr, pages in self.areas.items():
            for i in range(pages):
                pfn = self.vmalloc.vmalloc_to_pfn(addr + i * 4096)
                spans.append((pfn << 12, (pfn + 1) << 12, "vmalloc"))
        for addr in [*self.objects, *self.cache_objects]:
            phys = self.layout.virt_to_phys(addr)
            spans.append(
                (
                    phys,
                    phys + self.kmalloc.ksize(addr)
                    if addr in self.objects
                    else phys + self.cache.size,
                    "object",
                )
            )
        spans.sort()
        for (_, end, a), (start, _, b) in itertools.pairwise(spans):
            assert end <= start, f"a {a} span overlaps a {b} span at {start:#x}"

    def teardown(self) -> None:
        for pfn, order in self.pages.items():
            self.buddy.free_pages(pfn, order)
        for addr in self.objects:
            self.kmalloc.kfree(addr)
        for addr in self.cache_objects:
            self.slab.kmem_cache_free(self.cache, addr)
        for addr in self.areas:
            self.vmalloc.vfree(addr)
        for cache in list(self.slab.slab_caches):
            self.slab.kmem_cache_shrink(cache)
        self.buddy.drain_all_pages()
        self.buddy.check_invariants()
        kept = set(self.pt.pagetable_pfns()) - self.booted_pagetables
        assert self._free_pfns() | kept == self.booted
        assert not self._free_pfns() & kept


TestAllocatorsTogether = Allocators.TestCase
TestAllocatorsTogether.settings = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
