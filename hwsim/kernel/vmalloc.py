"""vmalloc (mm/vmalloc.c), as a plain synchronous model.

Virtually contiguous, physically scattered memory: ``vmalloc(size)`` reserves a range of
vmalloc space, takes order-0 pages from the buddy allocator one at a time and maps them with
4 KiB PTEs in the kernel page table (:mod:`hwsim.kernel.pagetable`, data in RAM).

What follows Linux (v6.x, ``__vmalloc_node_range`` and its helpers):

- ``vmalloc(0)`` WARNs once and returns NULL; ``size >> PAGE_SHIFT > totalram_pages()`` fails
  with ``vmalloc error: size N, exceeds total pages`` (N as asked, not rounded);
- ``__get_vm_area_node``: the size is rounded up to pages and one guard page is added; the
  area (``alloc_vmap_area``) is the lowest free range of [VMALLOC_START, VMALLOC_END) that
  fits, so ``vmalloc(4096)`` occupies 8192 bytes and the next area starts after the guard;
- ``__vmalloc_area_node``: the array of page pointers is vmalloc'ed itself when it is bigger
  than a page (more than 512 pages on x86_64, 1024 on i386) - a second area with the same
  caller, and the " vpages" mark in /proc/vmallocinfo - and kmalloc'ed otherwise; pages are
  allocated with ``gfp | __GFP_HIGHMEM`` (unless gfp asks for DMA/DMA32) ``| __GFP_NOWARN``,
  by ``alloc_pages_bulk`` in batches of at most 100, then one by one (``vm_area_alloc_pages``);
- failures: ``vmalloc error: size N, failed to allocate pages`` (N = the bytes that could be
  allocated), ``... failed to map pages`` (a page-table page could not be had), ``... vm_struct
  allocation failed`` (no room in vmalloc space), each through ``warn_alloc`` (silenced by
  __GFP_NOWARN), after which everything the call took is given back: ``hwsim.OutOfMemory``;
- ``vfree``: NULL is a no-op; an address that does not start a live area is refused with
  Linux's ``Trying to vfree() nonexistent vm area``; the PTEs are cleared, every page goes back
  to the buddy allocator, then the page array. The page-table pages stay (Linux never frees
  kernel page tables under vmalloc space);
- mappings are PAGE_KERNEL: present|rw|accessed|dirty|global, +NX where entries have it.

Deviations from Linux, on purpose:

- Linux frees vmap areas lazily (a freed range stays reserved, and the TLB is flushed, only
  when ``lazy_max_pages`` worth has piled up, ``purge_vmap_area_lazy``); here the range is
  free again at once, so an area is reusable right after vfree and no TLB flush is charged;
- no per-node pools of freed areas (v6.9+ "vmap nodes") and no vmap blocks (vm_map_ram);
  the lowest-fit search is a scan of the free ranges (Linux: an augmented rbtree);
- the kmalloc'ed page array (areas of up to 512 pages) and the ``vm_struct``/``vmap_area``
  descriptors are not charged to the slab allocator;
- a failed vmalloc also gives back the page-table pages that the mapping of its vmalloc'ed
  page array needed (Linux keeps them), so that a failed call changes nothing. The pages it
  took go back through the per-CPU lists as in Linux, and pageblocks the buddy allocator
  stole for them keep their new migratetype;
- the vmalloc'ed page array is zeroed but does not hold the page pointers;
- ``__GFP_NOFAIL`` does not retry forever; vmalloc_to_page returns the pfn (there is no
  ``struct page`` in the model); a freed area is remembered (the last 4096) to tell a double
  vfree from a wild one, which Linux cannot.

Timing follows the buddy allocator's pattern: an operation's cost in cycles (the area search,
each buddy operation through ``buddy.charge``, page-table work through the page table's own
timed methods, clearing pages for vzalloc) becomes a completion cycle.

Example:
    >>> from hwsim.devices.ram import RamModel
    >>> from hwsim.kernel.buddy import BuddyAllocator
    >>> from hwsim.kernel.layout import layout_for
    >>> from hwsim.kernel.pagetable import KernelPageTable
    >>> ram, buddy = RamModel(size=64 << 20), BuddyAllocator(16384)
    >>> layout = layout_for("x86_64", 64 << 20)
    >>> vm = VmallocAllocator(buddy, KernelPageTable(buddy, ram, layout), layout, ram)
    >>> addr = vm.vmalloc(4096, caller="my_driver_init+0x1c/0x80")
    >>> print(vm.vmallocinfo(), end="")
    0xffffc90000000000-0xffffc90000002000    8192 my_driver_init+0x1c/0x80 pages=1 vmalloc N0=1
    >>> vm.vfree(addr)
"""

from __future__ import annotations

from bisect import bisect_right, insort
from collections import OrderedDict
from typing import Any, NoReturn

import attrs

from ..core.actor import Actor, handles
from ..devices.ram import PhysMemory
from ..errors import DoubleFree, InvalidFree, OutOfMemory
from ..units import PAGE_SHIFT, PAGE_SIZE
from . import gfp as G
from .buddy import BuddyAllocator
from .layout import Layout
from .pagetable import CLEAR_PAGE_CYCLES, WALK_STEP_CYCLES, KernelPageTable, PageNotPresent

# Module-level aliases: inside a class body Python would mangle G.__GFP_X names.
_GFP_DMA_ZONES = G.__GFP_DMA | G.__GFP_DMA32
_GFP_HIGHMEM = G.__GFP_HIGHMEM
_GFP_NOWARN = G.__GFP_NOWARN
_GFP_ZERO = G.__GFP_ZERO
_GFP_NOFAIL = G.__GFP_NOFAIL

VM_ALLOC = 0x00000002  # include/linux/vmalloc.h
BULK_MAX = 100  # vm_area_alloc_pages: pages per alloc_pages_bulk call

# Costs in cycles: finding and inserting a vmap_area in the rbtrees, plus its descriptors.
VMAP_AREA_CYCLES = 300
VFREE_AREA_CYCLES = 300

_ZERO_PAGE = bytes(PAGE_SIZE)
_FREED_REMEMBERED = 4096  # freed area starts kept to tell a double vfree


@attrs.define(slots=True)
class _VmArea:
    addr: int
    size: int  # bytes of vmalloc space, guard page included
    caller: str
    pages: list[int]
    pages_array: int | None = None  # the vmalloc area holding the page array, if any
    owner: int | None = None  # for a page-array area: the area it serves


@attrs.frozen
class VmallocInfo:
    """One line of /proc/vmallocinfo (``s_show``)."""

    start: int
    end: int  # exclusive, guard page included
    size: int
    caller: str
    nr_pages: int
    flags: str  # "vmalloc" (VM_ALLOC)
    vpages: bool  # the page array is in vmalloc space
    nodes: tuple[tuple[int, int], ...]  # (node, pages) for the " N%u=%u" fields
    vm_flags: int = VM_ALLOC  # the VM_* bits behind ``flags``

    @property
    def addr(self) -> int:
        """``vm_struct.addr`` (the same as ``start``)."""
        return self.start

    def format(self, pointer_digits: int = 16) -> str:
        """``"0x%pK-0x%pK %7ld"`` and the optional fields, without the newline."""
        line = f"0x{self.start:0{pointer_digits}x}-0x{self.end:0{pointer_digits}x} {self.size:7d}"
        if self.caller:
            line += f" {self.caller}"
        if self.nr_pages:
            line += f" pages={self.nr_pages}"
        line += f" {self.flags}"
        if self.vpages:
            line += " vpages"
        return line + "".join(f" N{node}={count}" for node, count in self.nodes if count)


@attrs.frozen
class VmallocStatistics:
    """Counters of vmalloc (the ``vmalloc`` entry of ``Machine.stats()``)."""

    allocs: int
    frees: int
    failures: int
    nr_areas: int
    nr_vmalloc_pages: int  # meminfo VmallocUsed, in pages
    area_bytes: int  # vmalloc space in use, guard pages included
    free_ranges: int  # how fragmented the free vmalloc space is
    nr_pagetable_pages: int


class _VmapSpace:
    """The free ranges of vmalloc space, sorted: ``free_vmap_area_list``."""

    __slots__ = ("ends", "starts")

    def __init__(self, start: int, end: int) -> None:
        self.starts = [start]
        self.ends = [end]

    def alloc(self, size: int) -> int:
        """The lowest free address with ``size`` bytes free after it, taken; -1 if none."""
        starts, ends = self.starts, self.ends
        for i in range(len(starts)):
            start = starts[i]
            if ends[i] - start >= size:
                if ends[i] - start == size:
                    del starts[i], ends[i]
                else:
                    starts[i] = start + size
                return start
        return -1

    def free(self, start: int, size: int) -> None:
        """Give a range back, merging with its free neighbours."""
        starts, ends = self.starts, self.ends
        end = start + size
        i = bisect_right(starts, start)
        merge_prev = i > 0 and ends[i - 1] == start
        merge_next = i < len(starts) and starts[i] == end
        if merge_prev and merge_next:
            ends[i - 1] = ends[i]
            del starts[i], ends[i]
        elif merge_prev:
            ends[i - 1] = end
        elif merge_next:
            starts[i] = start
        else:
            starts.insert(i, start)
            ends.insert(i, end)


class VmallocAllocator:
    """vmalloc/vzalloc/vfree of one machine.

    Args:
        buddy: the page allocator the pages come from.
        pagetable: the kernel page table (built on the same buddy allocator and RAM).
        layout: where vmalloc space is.
        ram: physical memory (vzalloc clears pages in it).
    """

    def __init__(
        self, buddy: BuddyAllocator, pagetable: KernelPageTable, layout: Layout, ram: PhysMemory
    ) -> None:
        if not isinstance(pagetable, KernelPageTable):
            raise TypeError(f"pagetable must be a KernelPageTable, got {pagetable!r}")
        if pagetable.buddy is not buddy or pagetable.ram is not ram:
            raise ValueError("the page table must use the same buddy allocator and RAM")
        if pagetable.layout != layout:
            raise ValueError("the page table was built for another layout")
        self.buddy = buddy
        self.pagetable = pagetable
        self.layout = layout
        self.ram = ram
        self.log: list[str] = []  # what the kernel would have printed (dmesg)
        self.allocs = self.frees = self.failures = 0
        self.nr_vmalloc_pages = 0
        self._space = _VmapSpace(layout.vmalloc_start, layout.vmalloc_end)
        self._areas: dict[int, _VmArea] = {}
        self._starts: list[int] = []  # sorted starts of live areas
        self._freed: OrderedDict[int, str] = OrderedDict()  # freed start -> caller
        self._ptr_size = 8 if layout.arch == "x86_64" else 4  # sizeof(struct page *)
        self._prot = pagetable.default_flags()  # PAGE_KERNEL
        self._warned_zero = False

    # ------------------------------------------------------------------ checks

    def _check(self, size: object, gfp: object, cpu: object, caller: object) -> None:
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"vmalloc size must be an int, got {size!r}")
        if size < 0:
            raise ValueError(f"vmalloc size must be >= 0, got {size}")
        G.check_gfp(gfp)
        self._check_cpu(cpu)
        if not isinstance(caller, str):
            raise TypeError(f"caller must be a str (as %pS prints it), got {caller!r}")

    def _check_cpu(self, cpu: object) -> None:
        if isinstance(cpu, bool) or not isinstance(cpu, int) or not 0 <= cpu < self.buddy.nr_cpus:
            raise ValueError(f"cpu must be 0..{self.buddy.nr_cpus - 1}, got {cpu!r}")

    def _warn_alloc(self, gfp: int, message: str, cpu: int) -> None:
        """``warn_alloc()``: one line in the log unless __GFP_NOWARN."""
        if not gfp & _GFP_NOWARN:
            self.log.append(f"swapper/{cpu}: {message}, mode:{G.format_gfp(gfp)}, nodemask=(null)")

    # ------------------------------------------------------------------ allocation

    def vmalloc(
        self, size: int, gfp: int = G.GFP_KERNEL, cpu: int = 0, caller: str = "vmalloc"
    ) -> int:
        """Allocate ``size`` bytes of virtually contiguous memory; return its address.

        Raises:
            OutOfMemory: size 0, more than RAM, no room in vmalloc space, not enough pages
                or page tables (Linux returns NULL); nothing stays allocated.
            TypeError, ValueError: malformed arguments.
        """
        return self._vmalloc(size, gfp, cpu, caller, None)[0]

    def vzalloc(
        self, size: int, gfp: int = G.GFP_KERNEL, cpu: int = 0, caller: str = "vzalloc"
    ) -> int:
        """:meth:`vmalloc` of zeroed memory (``gfp | __GFP_ZERO``)."""
        return self._vmalloc(size, _gfp_or(gfp, _GFP_ZERO), cpu, caller, None)[0]

    def timed_vmalloc(
        self, size: int, gfp: int, cpu: int, at: int, caller: str = "vmalloc"
    ) -> tuple[int, int]:
        """:meth:`vmalloc` issued at cycle ``at``: ``(addr, done)``."""
        addr, done = self._vmalloc(size, gfp, cpu, caller, at)
        return addr, at if done is None else done

    def timed_vzalloc(
        self, size: int, gfp: int, cpu: int, at: int, caller: str = "vzalloc"
    ) -> tuple[int, int]:
        return self.timed_vmalloc(size, _gfp_or(gfp, _GFP_ZERO), cpu, at, caller)

    def _vmalloc(
        self, size: int, gfp: int, cpu: int, caller: str, t: int | None
    ) -> tuple[int, int | None]:
        self._check(size, gfp, cpu, caller)
        if size == 0:
            if not self._warned_zero:
                self._warned_zero = True
                self.log.append(
                    f"WARNING: CPU: {cpu} at mm/vmalloc.c __vmalloc_node_range: WARN_ON_ONCE(!size)"
                )
            self.failures += 1
            raise OutOfMemory(
                "vmalloc(0): __vmalloc_node_range WARNs (WARN_ON_ONCE(!size)) and returns "
                "NULL; unlike kmalloc(0) there is no ZERO_SIZE_PTR - do not ask vmalloc for "
                "zero bytes"
            )
        total = self.buddy.managed_pages()  # totalram_pages()
        if size >> PAGE_SHIFT > total:
            message = f"vmalloc error: size {size}, exceeds total pages"
            self._warn_alloc(gfp, message, cpu)
            self.failures += 1
            raise OutOfMemory(
                f"{message}: the machine has {total} pages ({total << PAGE_SHIFT} bytes) of "
                "RAM; vmalloc returns NULL"
            )
        # Linux keeps the page tables a failed vmalloc allocated for its page array; the
        # model gives them back, so that a failed call changes nothing.
        self.pagetable.begin_journal()
        try:
            result = self._vmalloc_node(size, gfp, cpu, caller, t, None)
        except BaseException as error:
            self.pagetable.end_journal(rollback=True)
            if isinstance(error, OutOfMemory):
                self.failures += 1
            raise
        self.pagetable.end_journal(rollback=False)
        self.allocs += 1
        return result

    def _vmalloc_node(
        self, size: int, gfp: int, cpu: int, caller: str, t: int | None, owner: int | None
    ) -> tuple[int, int | None]:
        """``__get_vm_area_node`` + ``__vmalloc_area_node``: all or nothing."""
        nr = (size + PAGE_SIZE - 1) >> PAGE_SHIFT
        va_size = (nr + 1) << PAGE_SHIFT  # the guard page
        addr = self._space.alloc(va_size)
        if t is not None:
            t += VMAP_AREA_CYCLES
        if addr < 0:
            if not gfp & _GFP_NOWARN:
                self.log.append(
                    f"vmap allocation for size {va_size} failed: use vmalloc=<size> to "
                    "increase size"
                )
            message = f"vmalloc error: size {size}, vm_struct allocation failed"
            self._warn_alloc(gfp, message, cpu)
            raise OutOfMemory(
                f"{message}: no free range of {va_size} bytes (guard page included) is left "
                "in vmalloc space; vmalloc returns NULL"
            )
        page_gfp = gfp if gfp & _GFP_DMA_ZONES else gfp | _GFP_HIGHMEM
        array_addr: int | None = None
        pages: list[int] = []
        try:
            array_size = nr * self._ptr_size
            if array_size > PAGE_SIZE:
                nested_gfp = (gfp & G.GFP_RECLAIM_MASK) | _GFP_ZERO
                try:
                    array_addr, t = self._vmalloc_node(array_size, nested_gfp, cpu, caller, t, addr)
                except OutOfMemory as error:
                    message = (
                        f"vmalloc error: size {nr << PAGE_SHIFT}, failed to allocated page "
                        f"array size {array_size}"
                    )
                    self._warn_alloc(page_gfp, message, cpu)
                    raise OutOfMemory(f"{message}; vmalloc returns NULL") from error
            pages, t = self._alloc_pages(nr, page_gfp | _GFP_NOWARN, cpu, t)
            if len(pages) < nr:
                message = (
                    f"vmalloc error: size {len(pages) << PAGE_SHIFT}, failed to allocate pages"
                )
                self._warn_alloc(page_gfp, message, cpu)
                raise OutOfMemory(
                    f"{message}: {len(pages)} of the {nr} pages could be allocated, and were "
                    "given back; vmalloc returns NULL (a driver must check). Physically "
                    "scattered pages are the cheapest memory there is: the machine is full"
                )
            if gfp & _GFP_ZERO:
                write = self.ram.write
                for pfn in pages:
                    write(pfn << PAGE_SHIFT, _ZERO_PAGE)
                if t is not None:
                    t += CLEAR_PAGE_CYCLES * nr
            try:
                if t is None:
                    self.pagetable.map_pages(addr, pages, self._prot)
                else:
                    _, t = self.pagetable.timed_map_pages(addr, pages, self._prot, t)
            except OutOfMemory as error:
                message = f"vmalloc error: size {nr << PAGE_SHIFT}, failed to map pages"
                self._warn_alloc(page_gfp, message, cpu)
                raise OutOfMemory(
                    f"{message}: no page for a page table; vmalloc returns NULL"
                ) from error
        except BaseException:
            free = self.buddy.free_pages
            for pfn in pages:
                free(pfn, 0, cpu)
            if array_addr is not None:
                self._release(self._areas[array_addr], cpu, None)
            self._space.free(addr, va_size)
            raise
        self._areas[addr] = _VmArea(addr, va_size, caller, pages, array_addr, owner)
        insort(self._starts, addr)
        if self._freed:
            self._freed.pop(addr, None)
        self.nr_vmalloc_pages += nr
        return addr, t

    def _alloc_pages(
        self, nr: int, gfp: int, cpu: int, t: int | None
    ) -> tuple[list[int], int | None]:
        """``vm_area_alloc_pages``: bulk batches of <= 100, then one page at a time."""
        buddy = self.buddy
        pages: list[int] = []
        bulk_gfp = gfp & ~_GFP_NOFAIL
        while len(pages) < nr:
            want = min(BULK_MAX, nr - len(pages))
            try:
                if t is None:
                    got = buddy.alloc_pages_bulk(want, bulk_gfp, cpu)
                else:
                    got, t = buddy.timed_alloc_pages_bulk(want, bulk_gfp, cpu, t)
            except OutOfMemory:
                break
            pages += got
            if len(got) != want:
                break
        while len(pages) < nr:
            try:
                if t is None:
                    pfn = buddy.alloc_pages(0, gfp, cpu)
                else:
                    pfn, t = buddy.timed_alloc_pages(0, gfp, cpu, t)
            except OutOfMemory:
                break
            pages.append(pfn)
        return pages, t

    # ------------------------------------------------------------------ freeing

    def vfree(self, addr: int | None, cpu: int = 0) -> None:
        """Free an area :meth:`vmalloc` returned; ``vfree(0)``/``vfree(None)`` do nothing.

        Raises:
            InvalidFree: ``addr`` is not a vmalloc address (kmalloc memory: kfree), or not
                the start of a live area ("Trying to vfree() nonexistent vm area").
            DoubleFree: the area was already freed.
        """
        self._vfree(addr, cpu, None)

    def timed_vfree(self, addr: int | None, cpu: int, at: int) -> tuple[None, int]:
        done = self._vfree(addr, cpu, at)
        return None, at if done is None else done

    def _vfree(self, addr: int | None, cpu: int, t: int | None) -> int | None:
        if addr is None:
            return t
        if isinstance(addr, bool) or not isinstance(addr, int):
            raise TypeError(f"vfree takes an address (int) or None, got {addr!r}")
        if addr == 0:
            return t
        self._check_cpu(cpu)
        area = self._areas.get(addr)
        if area is None or area.owner is not None:
            self._reject_vfree(addr)
        allocated = self.buddy.allocated
        for pfn in area.pages:
            if allocated.get(pfn) != 0:
                raise InvalidFree(
                    f"vfree({addr:#x}): page {pfn:#x} of the area is no longer allocated: "
                    "it was freed behind vmalloc's back (free_pages on a vmalloc page)"
                )
        t = self._release(area, cpu, t)
        self.frees += 1
        return t

    def _release(self, area: _VmArea, cpu: int, t: int | None) -> int | None:
        """Unmap, free the pages, then the page array; the page tables stay."""
        pagetable, buddy = self.pagetable, self.buddy
        nr = len(area.pages)
        if t is None:
            pagetable.unmap_pages(area.addr, nr)
        else:
            t += VFREE_AREA_CYCLES
            _, t = pagetable.timed_unmap_pages(area.addr, nr, t)
        if pagetable.holds_pagetable_page(
            area.pages
        ):  # pragma: no cover - a bug, never a user error
            raise AssertionError(f"the vmalloc area at {area.addr:#x} holds a page-table page")
        free = buddy.free_pages
        for pfn in area.pages:
            free(pfn, 0, cpu)
            if t is not None:
                t = buddy.charge(t)
        del self._areas[area.addr]
        starts = self._starts
        del starts[bisect_right(starts, area.addr) - 1]
        self._space.free(area.addr, area.size)
        self.nr_vmalloc_pages -= nr
        if area.owner is None:
            self._freed[area.addr] = area.caller
            if len(self._freed) > _FREED_REMEMBERED:
                self._freed.popitem(last=False)
        if area.pages_array is not None:
            t = self._release(self._areas[area.pages_array], cpu, t)
        return t

    def _reject_vfree(self, addr: int) -> NoReturn:
        """Raise the error that describes a bad vfree(); change nothing."""
        linux = f"Trying to vfree() nonexistent vm area ({addr:#x})"
        if addr & (PAGE_SIZE - 1):
            linux = f"Trying to vfree() bad address ({addr:#x}); {linux}"
        if not self.layout.is_vmalloc_addr(addr):
            raise InvalidFree(
                f"vfree: {addr:#x} is not a vmalloc address; kmalloc memory is freed with kfree "
                f"(or kvfree) [Linux: {linux}]"
            )
        area = self._area_containing(addr)
        if addr in self._freed and (area is None or area.addr != addr):
            now = ""
            if area is not None:
                now = f"; its space now belongs to the area at {area.addr:#x} ({area.caller})"
            raise DoubleFree(
                f"{linux} (already freed): the area {self._freed[addr]} allocated at "
                f"{addr:#x} was vfree'd before{now}"
            )
        if area is None:
            raise InvalidFree(f"{linux}: no vmalloc area starts at or covers {addr:#x}")
        if area.owner is not None and area.addr == addr:
            raise InvalidFree(
                f"vfree: {addr:#x} holds the page array of the vmalloc area at "
                f"{area.owner:#x}; it is freed with that area, vfree({area.owner:#x})"
            )
        guard = area.addr + area.size - PAGE_SIZE
        where = "the guard page of" if addr >= guard else "inside"
        raise InvalidFree(
            f"{linux}: {addr:#x} is {where} the vmalloc area {area.addr:#x}-"
            f"{area.addr + area.size:#x} ({area.caller}); vfree takes the address vmalloc "
            f"returned, {area.addr:#x}"
        )

    # ------------------------------------------------------------------ addresses

    def is_vmalloc_addr(self, addr: int) -> bool:
        """``is_vmalloc_addr()``: ``VMALLOC_START <= addr < VMALLOC_END``."""
        if isinstance(addr, bool) or not isinstance(addr, int):
            raise TypeError(f"is_vmalloc_addr takes an address (int), got {addr!r}")
        return self.layout.is_vmalloc_addr(addr)

    def vmalloc_to_pfn(self, addr: int) -> int:
        """``vmalloc_to_pfn()``: walk the kernel page table (in RAM) for ``addr``'s page.

        Raises:
            ValueError: not a vmalloc address (direct-map memory: virt_to_phys).
            PageNotPresent (a SegmentationFault): nothing is mapped there (a guard page, or
                space no area covers); the message says which.
        """
        if isinstance(addr, bool) or not isinstance(addr, int):
            raise TypeError(f"vmalloc_to_pfn takes an address (int), got {addr!r}")
        if not self.layout.is_vmalloc_addr(addr):
            raise ValueError(
                f"vmalloc_to_pfn({addr:#x}): not a vmalloc address; for direct-map (kmalloc) "
                "memory use virt_to_phys(addr) >> PAGE_SHIFT"
            )
        try:
            return self.pagetable.walk(addr).pfn
        except PageNotPresent as fault:
            area = self._area_containing(addr)
            if area is not None and addr >= area.addr + area.size - PAGE_SIZE:
                why = f"the guard page of the area at {area.addr:#x} ({area.caller})"
            elif area is not None:  # pragma: no cover - only if the page table was corrupted
                why = f"inside the area at {area.addr:#x}, but unmapped"
            else:
                why = "vmalloc space no live area covers"
            raise PageNotPresent(
                f"vmalloc_to_page({addr:#x}) finds no page: {fault} - {addr:#x} is {why}",
                addr,
                fault.level,
                fault.steps,
            ) from None

    vmalloc_to_page = vmalloc_to_pfn

    def timed_vmalloc_to_pfn(self, addr: int, at: int) -> tuple[int, int]:
        pfn = self.vmalloc_to_pfn(addr)
        return pfn, at + WALK_STEP_CYCLES * len(self.pagetable.mode.levels)

    def _area_containing(self, addr: int) -> _VmArea | None:
        i = bisect_right(self._starts, addr) - 1
        if i < 0:
            return None
        area = self._areas[self._starts[i]]
        return area if addr < area.addr + area.size else None

    def find_vm_area(self, addr: int) -> VmallocInfo | None:
        """The live area that covers ``addr`` (its guard page included), or None."""
        area = self._area_containing(addr)
        return None if area is None else self._info(area)

    def area_pfns(self, addr: int) -> list[int]:
        """The pages of the live area that starts at ``addr`` ([] if none starts there)."""
        if isinstance(addr, bool) or not isinstance(addr, int):
            return []
        area = self._areas.get(addr)
        return [] if area is None else list(area.pages)

    def is_guard_page(self, addr: int) -> bool:
        """Whether ``addr`` is in the guard page after a live area."""
        area = self._area_containing(addr)
        return area is not None and addr >= area.addr + area.size - PAGE_SIZE

    # ------------------------------------------------------------------ introspection

    def _info(self, area: _VmArea) -> VmallocInfo:
        return VmallocInfo(
            start=area.addr,
            end=area.addr + area.size,
            size=area.size,
            caller=area.caller,
            nr_pages=len(area.pages),
            flags="vmalloc",
            vpages=area.pages_array is not None,
            nodes=((0, len(area.pages)),),
        )

    def areas(self) -> list[VmallocInfo]:
        """The live areas, by address: the data of /proc/vmallocinfo."""
        return [self._info(self._areas[start]) for start in self._starts]

    def vmallocinfo(self) -> str:
        """/proc/vmallocinfo as Linux prints it for these areas (root's view of %pK)."""
        digits = 16 if self.layout.arch == "x86_64" else 8
        return "".join(info.format(digits) + "\n" for info in self.areas())

    @property
    def vmalloc_used_pages(self) -> int:
        """Pages mapped by vmalloc (``vmalloc_nr_pages()``): meminfo's VmallocUsed."""
        return self.nr_vmalloc_pages

    @property
    def vmalloc_used_kb(self) -> int:
        return self.nr_vmalloc_pages << (PAGE_SHIFT - 10)

    @property
    def vmalloc_total_kb(self) -> int:
        """meminfo's VmallocTotal: ``(VMALLOC_END - VMALLOC_START) >> 10``.

        x86_64's VMALLOC_END is the last byte (0xffffe8ffffffffff): 34359738367 kB; i386's
        is exclusive.
        """
        end = self.layout.vmalloc_end - (1 if self.layout.arch == "x86_64" else 0)
        return (end - self.layout.vmalloc_start) >> 10

    def statistics(self) -> VmallocStatistics:
        return VmallocStatistics(
            allocs=self.allocs,
            frees=self.frees,
            failures=self.failures,
            nr_areas=len(self._areas),
            nr_vmalloc_pages=self.nr_vmalloc_pages,
            area_bytes=sum(area.size for area in self._areas.values()),
            free_ranges=len(self._space.starts),
            nr_pagetable_pages=self.pagetable.nr_pagetable_pages,
        )

    def check_invariants(self) -> None:
        """Assert the books balance (used by the property tests)."""
        pieces = sorted(
            [(a.addr, a.addr + a.size, "area") for a in self._areas.values()]
            + [(s, e, "free") for s, e in zip(self._space.starts, self._space.ends, strict=True)]
        )
        pos = self.layout.vmalloc_start
        for start, end, _ in pieces:
            assert start == pos, f"gap or overlap at {pos:#x}"
            assert end > start
            pos = end
        assert pos == self.layout.vmalloc_end
        assert self._starts == sorted(self._areas)
        owned: set[int] = set()
        for area in self._areas.values():
            for i, pfn in enumerate(area.pages):
                assert pfn not in owned, f"pfn {pfn:#x} in two areas"
                owned.add(pfn)
                assert self.buddy.allocated.get(pfn) == 0
                assert self.pagetable.walk(area.addr + (i << PAGE_SHIFT)).pfn == pfn
            assert not self.is_guard_page(area.addr)
            assert self.is_guard_page(area.addr + area.size - PAGE_SIZE)
        assert self.nr_vmalloc_pages == len(owned)
        self.pagetable.check_invariants()


def _gfp_or(gfp: int, flag: int) -> int:
    G.check_gfp(gfp)
    return gfp | flag


# ---------------------------------------------------------------------- the actor


@attrs.frozen
class Vmalloc:
    size: int
    gfp: int
    cpu: int
    caller: str


@attrs.frozen
class Vfree:
    addr: int | None
    cpu: int


@attrs.frozen
class VmallocToPfn:
    addr: int


class VmallocService(Actor):
    """vmalloc as a service: answers Vmalloc, Vfree and VmallocToPfn with the model."""

    def __init__(self, model: VmallocAllocator, **kwargs: Any) -> None:
        super().__init__("vmalloc", **kwargs)
        self.model = model

    @handles(Vmalloc)
    def _vmalloc(self, msg: Vmalloc, at: int) -> tuple[int, int]:
        return self.model.timed_vmalloc(msg.size, msg.gfp, msg.cpu, at, caller=msg.caller)

    @handles(Vfree)
    def _vfree(self, msg: Vfree, at: int) -> tuple[None, int]:
        return self.model.timed_vfree(msg.addr, msg.cpu, at)

    @handles(VmallocToPfn)
    def _to_pfn(self, msg: VmallocToPfn, at: int) -> tuple[int, int]:
        return self.model.timed_vmalloc_to_pfn(msg.addr, at)

    def statistics(self) -> VmallocStatistics:
        return self.model.statistics()
