"""kmalloc and friends (mm/slab_common.c, include/linux/slab.h) on top of the slab model.

What follows Linux (x86, 4 KiB pages, SLUB, v6.8):

- the kmalloc caches are created at boot in ``create_kmalloc_caches()``'s order, for each
  type: ``kmalloc-8`` ... ``kmalloc-8k`` (KMALLOC_NORMAL), ``kmalloc-rcl-*``
  (``__GFP_RECLAIMABLE``, SLAB_RECLAIM_ACCOUNT), ``dma-kmalloc-*`` (``__GFP_DMA``,
  SLAB_CACHE_DMA: their slabs come from ZONE_DMA, below 16 MiB) and ``kmalloc-cg-*``
  (``__GFP_ACCOUNT``, SLAB_ACCOUNT), with ``kmalloc_type()``'s priority DMA > reclaimable >
  account;
- sizes map to caches as ``kmalloc_index()``: 1..8 → 8, 9..16 → 16, 17..32 → 32, 33..64 →
  64, 65..96 → 96, 97..128 → 128, 129..192 → 192, then the next power of two up to
  KMALLOC_MAX_CACHE_SIZE (8 KiB); power-of-two caches are aligned to their size
  (``create_boot_cache()``), so such objects are naturally aligned, with slub_debug too;
- above 8 KiB, ``kmalloc_large``: whole pages, ``get_order(size)``, from the page allocator
  with the caller's gfp (``__GFP_DMA`` gives ZONE_DMA pages), counted as SUnreclaim; above
  KMALLOC_MAX_SIZE (4 MiB, an order-10 block) the page allocator warns and returns NULL;
- ``kmalloc(0)`` returns ZERO_SIZE_PTR (16); ``kfree()`` and ``ksize()`` treat every
  pointer up to 16 as NULL (``ZERO_OR_NULL_PTR``); ``kcalloc``/``kmalloc_array`` fail when
  ``n * size`` overflows size_t (64 bits on x86_64, 32 on i386); ``krealloc`` keeps the
  object when ``ksize()`` covers the new size, else allocates, copies ``ksize()`` bytes and
  frees the old one; ``ksize()`` is ``slab_ksize()`` (the cache's object size for kmalloc
  caches, the whole block for large ones);
- ``__GFP_DMA32`` and ``__GFP_HIGHMEM`` make no sense for kmalloc: they are dropped with
  "Unexpected gfp: ... Fix your code!" (``kmalloc_fix_flags``).

Where it differs on purpose: freeing the middle of a kmalloc buffer, a vmalloc address or
a page from ``alloc_pages()`` raises :class:`~hwsim.InvalidFree` (Linux may free the whole
folio or warn); a double free raises :class:`~hwsim.DoubleFree` even without slub_debug.

Timing: the same operation accounting as the slab allocator (``SlabAllocator.charge``); a
size lookup costs a few cycles, copying and zeroing BYTES_PER_CYCLE bytes a cycle.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from ..core.actor import Actor, handles
from ..devices.ram import PhysMemory
from ..errors import DoubleFree, HwsimError, InvalidFree, OutOfMemory
from ..units import PAGE_SHIFT, PAGE_SIZE, format_size
from . import gfp as G
from .buddy import BuddyAllocator
from .layout import Layout
from .slab import (
    ALLOC_FASTPATH_CYCLES,
    BYTES_PER_CYCLE,
    FREE_FASTPATH_CYCLES,
    GFP_SLAB_BUG_MASK,
    KMALLOC_MAX_CACHE_SIZE,
    KMALLOC_MAX_SIZE,
    KMALLOC_SHIFT_HIGH,
    KMALLOC_SHIFT_MAX,
    SLAB_ACCOUNT,
    SLAB_CACHE_DMA,
    SLAB_KMALLOC,
    SLAB_RECLAIM_ACCOUNT,
    KmemCache,
    SlabAllocator,
    SlabStatistics,
    get_order,
)
from .zones import MAX_PAGE_ORDER

KMALLOC_SHIFT_LOW = 3
KMALLOC_MIN_SIZE = 1 << KMALLOC_SHIFT_LOW
KMALLOC_MAX_ORDER = KMALLOC_SHIFT_MAX - PAGE_SHIFT
ARCH_KMALLOC_MINALIGN = 8
ZERO_SIZE_PTR = 16

# enum kmalloc_cache_type, without the random and memcg-disabled variants.
KMALLOC_NORMAL = 0
KMALLOC_RECLAIM = 1
KMALLOC_DMA = 2
KMALLOC_CGROUP = 3
NR_KMALLOC_TYPES = 4
KMALLOC_TYPE_PREFIXES = ("kmalloc-", "kmalloc-rcl-", "dma-kmalloc-", "kmalloc-cg-")
_KMALLOC_TYPE_FLAGS = (0, SLAB_RECLAIM_ACCOUNT, SLAB_CACHE_DMA, SLAB_ACCOUNT)

_GFP_DMA = G.__GFP_DMA
_GFP_RECLAIMABLE = G.__GFP_RECLAIMABLE
_GFP_ACCOUNT = G.__GFP_ACCOUNT
_GFP_ZERO = G.__GFP_ZERO
_GFP_COMP = G.__GFP_COMP
_GFP_NOWARN = G.__GFP_NOWARN
KMALLOC_NOT_NORMAL_BITS = _GFP_RECLAIMABLE | _GFP_DMA | _GFP_ACCOUNT

KMALLOC_LOOKUP_CYCLES = 5  # kmalloc_slab(): size_index[] or fls()
KMALLOC_LARGE_CYCLES = 50  # ___kmalloc_large_node() around the page allocation
_KMALLOC_FAST_CYCLES = ALLOC_FASTPATH_CYCLES + KMALLOC_LOOKUP_CYCLES


def kmalloc_index(size: int) -> int:
    """``kmalloc_index()``: which kmalloc cache serves ``size`` bytes.

    0 for 0 bytes, 1 for the 96-byte cache, 2 for the 192-byte cache, n for 2**n bytes.

    >>> kmalloc_index(8), kmalloc_index(65), kmalloc_index(129), kmalloc_index(1000)
    (3, 1, 2, 10)
    """
    if not size:
        return 0
    if size <= KMALLOC_MIN_SIZE:
        return KMALLOC_SHIFT_LOW
    if 64 < size <= 96:
        return 1
    if 128 < size <= 192:
        return 2
    return (size - 1).bit_length()


def kmalloc_size(index: int) -> int:
    """The object size of kmalloc cache ``index`` (the inverse of :func:`kmalloc_index`)."""
    return (0, 96, 192)[index] if index < 3 else 1 << index


def kmalloc_cache_name(index: int, kmalloc_type: int = KMALLOC_NORMAL) -> str:
    """``kmalloc_info[index].name[type]``: "kmalloc-96", "dma-kmalloc-1k", ..."""
    size = kmalloc_size(index)
    spelled = f"{size >> 10}k" if size >= 1024 else str(size)
    return KMALLOC_TYPE_PREFIXES[kmalloc_type] + spelled


def kmalloc_type(gfp: int) -> int:
    """``kmalloc_type()``: __GFP_DMA first, then __GFP_RECLAIMABLE, then __GFP_ACCOUNT."""
    if not gfp & KMALLOC_NOT_NORMAL_BITS:
        return KMALLOC_NORMAL
    if gfp & _GFP_DMA:
        return KMALLOC_DMA
    if gfp & _GFP_RECLAIMABLE:
        return KMALLOC_RECLAIM
    return KMALLOC_CGROUP


@attrs.frozen
class KmallocStatistics:
    """Counters of kmalloc's page-sized ("large") allocations; slab objects are counted by
    :class:`~hwsim.kernel.slab.SlabStatistics`."""

    large_allocs: int
    large_frees: int
    nr_large: int
    nr_large_pages: int


class Kmalloc:
    """kmalloc, kzalloc, kcalloc, krealloc, kfree and ksize for one machine.

    Args:
        slab: the slab allocator the kmalloc caches are created in.
        buddy: the page allocator (for allocations above 8 KiB); the slab allocator's.
        ram: physical memory (zeroing and krealloc's copy).
        layout: the kernel's address layout.

    Attributes:
        kmalloc_caches: ``kmalloc_caches[type][index]`` (None where no cache exists).
        size_max: SIZE_MAX of the architecture.

    Example:
        >>> from hwsim.devices.ram import RamModel
        >>> from hwsim.kernel.buddy import BuddyAllocator
        >>> from hwsim.kernel.layout import layout_for
        >>> buddy, ram = BuddyAllocator(nr_pages=16384), RamModel(size=64 << 20)
        >>> layout = layout_for("x86_64", 64 << 20)
        >>> km = Kmalloc(SlabAllocator(buddy, ram, layout, 1), buddy, ram, layout)
        >>> buf = km.kmalloc(100)
        >>> km.ksize(buf), km.kmalloc_slab(100).name
        (128, 'kmalloc-128')
        >>> km.kfree(buf)
        >>> km.kmalloc(0) == ZERO_SIZE_PTR
        True
    """

    def __init__(
        self, slab: SlabAllocator, buddy: BuddyAllocator, ram: PhysMemory, layout: Layout
    ) -> None:
        if buddy is not slab.buddy or ram is not slab.ram or layout is not slab.layout:
            raise ValueError("kmalloc must share the slab allocator's buddy, ram and layout")
        self.slab = slab
        self.buddy = buddy
        self.ram = ram
        self.layout = layout
        self.size_max = (1 << (8 * slab.ptr_size)) - 1
        self._nr_cpus = slab.nr_cpus
        self._live = slab._live
        self._large: dict[int, int] = {}  # address -> order of kmalloc_large blocks
        self._plain_gfps: set[int] = set()  # validated, KMALLOC_NORMAL, no __GFP_ZERO
        self.large_allocs = self.large_frees = 0
        self.nr_large_pages = 0
        self.kmalloc_caches: list[list[KmemCache | None]] = [
            [None] * (KMALLOC_SHIFT_HIGH + 1) for _ in range(NR_KMALLOC_TYPES)
        ]
        self._create_kmalloc_caches()
        # size -> cache, per type: kmalloc_slab() as one list index.
        self._tables: list[list[KmemCache]] = []
        for caches in self.kmalloc_caches:
            table: list[KmemCache] = []
            for size in range(KMALLOC_MAX_CACHE_SIZE + 1):
                cache = caches[kmalloc_index(max(size, 1))]
                assert cache is not None
                table.append(cache)
            self._tables.append(table)
        self._normal = self._tables[KMALLOC_NORMAL]

    def _create_kmalloc_caches(self) -> None:
        """``create_kmalloc_caches()``: every type, sizes ascending, 96 after 64 and 192
        after 128."""
        for ktype in range(NR_KMALLOC_TYPES):
            for index in range(KMALLOC_SHIFT_LOW, KMALLOC_SHIFT_HIGH + 1):
                self._new_kmalloc_cache(index, ktype)
                if index == 6:
                    self._new_kmalloc_cache(1, ktype)
                if index == 7:
                    self._new_kmalloc_cache(2, ktype)

    def _new_kmalloc_cache(self, index: int, ktype: int) -> None:
        size = kmalloc_size(index)
        # create_boot_cache(): power-of-two sizes are aligned to their size.
        align = size if size & (size - 1) == 0 else ARCH_KMALLOC_MINALIGN
        self.kmalloc_caches[ktype][index] = self.slab.kmem_cache_create(
            kmalloc_cache_name(index, ktype),
            size,
            align,
            SLAB_KMALLOC | _KMALLOC_TYPE_FLAGS[ktype],
        )

    # ------------------------------------------------------------------ checks

    def _check_size(self, value: object, func: str, what: str = "size") -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{func}: {what} is a size_t (int), got {value!r}")
        if value < 0:
            raise ValueError(f"{func}: {what} {value} is negative; size_t is unsigned")
        if value > self.size_max:
            raise ValueError(
                f"{func}: {what} {value} does not fit in a {8 * self.slab.ptr_size}-bit size_t"
            )
        return value

    def _check_addr(self, value: object, func: str) -> int:
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{func} takes an address (int or None), got {value!r}")
        if value < 0:
            raise ValueError(f"{func}({value}): addresses are unsigned")
        return value

    # ------------------------------------------------------------------ allocation

    def kmalloc_slab(self, size: int, gfp: int = G.GFP_KERNEL) -> KmemCache:
        """``kmalloc_slab()``: the cache that serves ``size`` bytes (1..8 KiB) for ``gfp``."""
        size = self._check_size(size, "kmalloc_slab")
        if not 0 < size <= KMALLOC_MAX_CACHE_SIZE:
            raise ValueError(
                f"kmalloc_slab: size {size} is outside 1..KMALLOC_MAX_CACHE_SIZE "
                f"({KMALLOC_MAX_CACHE_SIZE}); larger sizes come from the page allocator"
            )
        return self._tables[kmalloc_type(G.check_gfp(gfp))][size]

    def kmalloc(self, size: int, gfp: int = G.GFP_KERNEL, cpu: int = 0) -> int:
        """Allocate ``size`` bytes of physically contiguous memory; return its address.

        Returns:
            A direct-map virtual address; ZERO_SIZE_PTR (16) for ``size == 0``.

        Raises:
            OutOfMemory: no memory, or ``size`` above KMALLOC_MAX_SIZE (4 MiB).
            TypeError, ValueError: bad size, gfp or cpu.
        """
        if (
            size.__class__ is int
            and 0 < size <= KMALLOC_MAX_CACHE_SIZE
            and gfp.__class__ is int  # before the set: 3264.0 == 3264, and lists are unhashable
            and gfp in self._plain_gfps
            and cpu.__class__ is int
            and 0 <= cpu < self._nr_cpus
        ):
            cache = self._normal[size]
            freelist = cache.cpu_freelist[cpu]
            if freelist:
                addr = freelist.pop()
                self._live[addr] = cache.cpu_slab[cpu]  # type: ignore[assignment]
                cache.alloc_fastpath += 1
                self.slab._op_cycles += _KMALLOC_FAST_CYCLES
                return addr
        return self._kmalloc(size, gfp, cpu, "kmalloc")

    def _kmalloc(self, size: object, gfp: object, cpu: object, func: str) -> int:
        size = self._check_size(size, func)
        gfp = G.check_gfp(gfp)
        cpu = self.slab._check_cpu(cpu)
        if size == 0:
            return ZERO_SIZE_PTR
        if size > KMALLOC_MAX_CACHE_SIZE:
            return self._kmalloc_large(size, gfp, cpu, func)
        slab = self.slab
        cache = self._tables[kmalloc_type(gfp)][size]
        slab._op_cycles += KMALLOC_LOOKUP_CYCLES
        addr = slab._slab_alloc(cache, gfp, cpu, size)
        if gfp & _GFP_ZERO:
            slab._zero_object(cache, addr, size)
        elif gfp and not gfp & KMALLOC_NOT_NORMAL_BITS:
            self._plain_gfps.add(gfp)
        return addr

    def _kmalloc_large(self, size: int, gfp: int, cpu: int, func: str) -> int:
        """``___kmalloc_large_node()``: whole pages from the page allocator."""
        order = get_order(size)
        if order > MAX_PAGE_ORDER:
            message = (
                f"{func}({size}): more than KMALLOC_MAX_SIZE ({format_size(KMALLOC_MAX_SIZE)}"
                f" = an order-{MAX_PAGE_ORDER} block): the page allocator refuses order "
                f"{order} (WARN_ON_ONCE in __alloc_pages) and kmalloc returns NULL. Buffers "
                "this big need not be physically contiguous: use vmalloc() or kvmalloc()"
            )
            if not gfp & _GFP_NOWARN:
                self.slab.log.append(
                    f"WARNING: CPU: {cpu} PID: 0 at mm/page_alloc.c __alloc_pages "
                    f"(order {order} > MAX_PAGE_ORDER)"
                )
            raise OutOfMemory(message)
        if gfp & GFP_SLAB_BUG_MASK:
            gfp = self.slab.kmalloc_fix_flags(gfp)
        slab = self.slab
        pfn = slab._buddy_alloc(order, gfp | _GFP_COMP, cpu)
        addr = self.layout.pfn_to_virt(pfn)
        nbytes = PAGE_SIZE << order
        slab._op_cycles += KMALLOC_LARGE_CYCLES
        if gfp & _GFP_ZERO:
            self.ram.write(pfn << PAGE_SHIFT, bytes(nbytes))
            slab._op_cycles += nbytes // BYTES_PER_CYCLE
        self._large[addr] = order
        self.large_allocs += 1
        self.nr_large_pages += 1 << order
        slab.nr_slab_unreclaimable += 1 << order
        return addr

    def kzalloc(self, size: int, gfp: int = G.GFP_KERNEL, cpu: int = 0) -> int:
        """``kmalloc(size, gfp | __GFP_ZERO)``."""
        return self._kmalloc(size, G.check_gfp(gfp) | _GFP_ZERO, cpu, "kzalloc")

    def kmalloc_array(self, n: int, size: int, gfp: int = G.GFP_KERNEL, cpu: int = 0) -> int:
        """``kmalloc(n * size)``, failing (OutOfMemory) when ``n * size`` overflows size_t."""
        n = self._check_size(n, "kmalloc_array", "n")
        size = self._check_size(size, "kmalloc_array")
        nbytes = n * size
        if nbytes > self.size_max:
            raise OutOfMemory(
                f"kmalloc_array({n}, {size}): n * size overflows the "
                f"{8 * self.slab.ptr_size}-bit size_t, so check_mul_overflow() makes the "
                "allocation return NULL instead of a buffer that is too small"
            )
        return self._kmalloc(nbytes, gfp, cpu, "kmalloc_array")

    def kcalloc(self, n: int, size: int, gfp: int = G.GFP_KERNEL, cpu: int = 0) -> int:
        """A zeroed array of ``n`` elements (``kmalloc_array(n, size, gfp | __GFP_ZERO)``)."""
        return self.kmalloc_array(n, size, G.check_gfp(gfp) | _GFP_ZERO, cpu)

    def kmalloc_size_roundup(self, size: int) -> int:
        """``kmalloc_size_roundup()``: what ``ksize()`` would report for ``kmalloc(size)``."""
        size = self._check_size(size, "kmalloc_size_roundup")
        if 0 < size <= KMALLOC_MAX_CACHE_SIZE:
            return self._normal[size].object_size
        if 0 < size <= KMALLOC_MAX_SIZE:
            return PAGE_SIZE << get_order(size)
        return size

    def krealloc(
        self, addr: int | None, new_size: int, gfp: int = G.GFP_KERNEL, cpu: int = 0
    ) -> int:
        """Resize a kmalloc buffer, keeping its contents.

        ``addr`` None (or ZERO_SIZE_PTR) allocates; ``new_size`` 0 frees and returns
        ZERO_SIZE_PTR; the buffer stays where it is when ``ksize(addr) >= new_size``;
        otherwise a new buffer gets a copy of the old one's ``ksize()`` bytes and the old
        one is freed. On failure (OutOfMemory) the old buffer is left alone.
        """
        addr = self._check_addr(addr, "krealloc")
        new_size = self._check_size(new_size, "krealloc")
        gfp = G.check_gfp(gfp)
        cpu = self.slab._check_cpu(cpu)
        if new_size == 0:
            self.kfree(addr, cpu)
            return ZERO_SIZE_PTR
        ks = self._usable_size(addr, "krealloc") if addr > ZERO_SIZE_PTR else 0
        if ks >= new_size:
            return addr
        new = self._kmalloc(new_size, gfp, cpu, "krealloc")
        if ks:
            ram, offset = self.ram, self.layout.page_offset
            ram.write(new - offset, ram.read(addr - offset, ks))
            self.slab._op_cycles += ks // BYTES_PER_CYCLE
            self.kfree(addr, cpu)
        return new

    # ------------------------------------------------------------------ freeing

    def kfree(self, addr: int | None, cpu: int = 0) -> None:
        """Free memory from kmalloc (or any slab object). NULL and ZERO_SIZE_PTR are no-ops.

        Raises:
            DoubleFree: already freed ("Object already free").
            InvalidFree: not memory kmalloc handed out (a vmalloc address: use vfree; a
                page from alloc_pages: use free_pages; the middle of a buffer).
        """
        if addr.__class__ is int and cpu.__class__ is int and 0 <= cpu < self._nr_cpus:
            slab = self._live.pop(addr, None)
            if slab is not None:
                cache = slab.cache
                if slab.cpu == cpu:
                    cache.cpu_freelist[cpu].append(addr)
                    cache.free_fastpath += 1
                    self.slab._op_cycles += FREE_FASTPATH_CYCLES
                    return
                self.slab._free_slowpath(cache, slab, addr, cpu)
                return
        self._kfree(addr, cpu)

    def _kfree(self, addr: object, cpu: object) -> None:
        addr = self._check_addr(addr, "kfree")
        cpu = self.slab._check_cpu(cpu)
        if addr <= ZERO_SIZE_PTR:
            return
        order = self._large.pop(addr, None)
        if order is None:
            raise self._bad_pointer("kfree", addr)
        slab = self.slab
        pfn = (addr - self.layout.page_offset) >> PAGE_SHIFT
        try:
            slab._buddy_free(pfn, order, cpu)
        except HwsimError:
            self._large[addr] = order
            raise
        slab._op_cycles += KMALLOC_LARGE_CYCLES
        self.large_frees += 1
        self.nr_large_pages -= 1 << order
        slab.nr_slab_unreclaimable -= 1 << order

    def _bad_pointer(self, func: str, addr: int) -> InvalidFree:
        """The error for an address that is not a live kmalloc buffer."""
        slab = self.slab.virt_to_slab(addr)
        if slab is not None:
            return self.slab.bad_object_error(func, slab, addr)
        layout = self.layout
        if layout.is_vmalloc_addr(addr):
            return InvalidFree(
                f"{func}({addr:#x}): a vmalloc address, not kmalloc memory: memory from "
                "vmalloc()/vzalloc() is freed with vfree(), from kvmalloc() with kvfree()"
            )
        if not layout.is_direct_map_addr(addr):
            return InvalidFree(
                f"{func}({addr:#x}): not a kernel address kmalloc() hands out (kmalloc memory "
                f"lives in the direct map, {layout.page_offset:#x}..{layout.high_memory - 1:#x})"
            )
        for start, order in self._large.items():
            if start < addr < start + (PAGE_SIZE << order):
                return InvalidFree(
                    f"{func}({addr:#x}): not the start of the "
                    f"{format_size(PAGE_SIZE << order)} kmalloc buffer at {start:#x}: pass the "
                    "pointer kmalloc() returned"
                )
        pfn = (addr - layout.page_offset) >> PAGE_SHIFT
        buddy = self.buddy
        block = buddy.block_of(pfn)
        if block is not None:
            head, order = block
            return InvalidFree(
                f"{func}({addr:#x}): pfn {pfn:#x} is part of an order-{order} block from "
                f"alloc_pages() (at pfn {head:#x}), not kmalloc memory: free it with "
                "free_pages()/__free_pages()"
            )
        if addr & (PAGE_SIZE - 1) == 0 and buddy._is_free(pfn):
            return DoubleFree(
                f"{func}({addr:#x}): the page at pfn {pfn:#x} is already free: a double free "
                f"of a kmalloc buffer larger than {format_size(KMALLOC_MAX_CACHE_SIZE)} "
                "(BUG: Bad page state)"
            )
        return InvalidFree(f"{func}({addr:#x}): pfn {pfn:#x} was not handed out by kmalloc()")

    # ------------------------------------------------------------------ sizes

    def ksize(self, addr: int | None) -> int:
        """How many bytes of the buffer at ``addr`` may be used (``ksize()``).

        0 for NULL and ZERO_SIZE_PTR; the cache's ``slab_ksize()`` for slab objects (the
        size class for kmalloc caches); the whole block for page-sized allocations.

        Raises:
            ValueError: ``addr`` is not a live kmalloc buffer (the message says why).
        """
        if addr.__class__ is int:
            slab = self._live.get(addr)
            if slab is not None:
                cache = slab.cache
                if cache.tracks_orig_size:  # skip_orig_size_check(): all of it may be used now
                    cache.orig_sizes[addr] = cache.object_size
                return cache.ksize
        addr = self._check_addr(addr, "ksize")
        if addr <= ZERO_SIZE_PTR:
            return 0
        try:
            return self._usable_size(addr, "ksize")
        except InvalidFree as err:
            raise ValueError(str(err)) from None

    def allocated_size(self, addr: int) -> int:
        """The bytes the live kmalloc buffer at ``addr`` spans (its size class, or its
        pages), or 0 if there is none there. No side effect (unlike :meth:`ksize`)."""
        slab = self._live.get(addr)
        if slab is not None:
            return int(slab.cache.ksize)
        order = self._large.get(addr)
        return 0 if order is None else PAGE_SIZE << order

    def _usable_size(self, addr: int, func: str) -> int:
        slab = self._live.get(addr)
        if slab is not None:
            cache = slab.cache
            if cache.tracks_orig_size:
                cache.orig_sizes[addr] = cache.object_size
            return cache.ksize
        order = self._large.get(addr)
        if order is not None:
            return PAGE_SIZE << order
        raise self._bad_pointer(func, addr)

    def is_kmalloc_large(self, addr: int) -> bool:
        """Is ``addr`` a live page-sized kmalloc buffer?"""
        return addr in self._large

    # ------------------------------------------------------------------ timing

    def timed_kmalloc(self, size: int, gfp: int, cpu: int, at: int) -> tuple[int, int]:
        slab = self.slab
        slab._begin()
        addr = self.kmalloc(size, gfp, cpu)
        return addr, slab.charge(at)

    def timed_kzalloc(self, size: int, gfp: int, cpu: int, at: int) -> tuple[int, int]:
        slab = self.slab
        slab._begin()
        addr = self.kzalloc(size, gfp, cpu)
        return addr, slab.charge(at)

    def timed_kmalloc_array(
        self, n: int, size: int, gfp: int, cpu: int, at: int
    ) -> tuple[int, int]:
        slab = self.slab
        slab._begin()
        addr = self.kmalloc_array(n, size, gfp, cpu)
        return addr, slab.charge(at)

    def timed_kcalloc(self, n: int, size: int, gfp: int, cpu: int, at: int) -> tuple[int, int]:
        slab = self.slab
        slab._begin()
        addr = self.kcalloc(n, size, gfp, cpu)
        return addr, slab.charge(at)

    def timed_krealloc(
        self, addr: int | None, new_size: int, gfp: int, cpu: int, at: int
    ) -> tuple[int, int]:
        slab = self.slab
        slab._begin()
        new = self.krealloc(addr, new_size, gfp, cpu)
        return new, slab.charge(at)

    def timed_kfree(self, addr: int | None, cpu: int, at: int) -> tuple[None, int]:
        slab = self.slab
        slab._begin()
        self.kfree(addr, cpu)
        return None, slab.charge(at)

    def timed_ksize(self, addr: int | None, at: int) -> tuple[int, int]:
        return self.ksize(addr), at + KMALLOC_LOOKUP_CYCLES

    # ------------------------------------------------------------------ introspection

    def statistics(self) -> KmallocStatistics:
        return KmallocStatistics(
            large_allocs=self.large_allocs,
            large_frees=self.large_frees,
            nr_large=len(self._large),
            nr_large_pages=self.nr_large_pages,
        )


# ---------------------------------------------------------------------- the actor
# One service, "slab", answers both the kmem_cache_* and the kmalloc family: kmalloc is a set
# of slab caches, and both share the per-CPU slabs and the list locks. It lives here because
# kmalloc.py knows both models (slab.py does not import kmalloc).


@attrs.frozen
class KmemCacheCreate:
    name: str
    size: int
    align: int
    flags: int
    ctor: Callable[[int], object] | None


@attrs.frozen
class KmemCacheAlloc:
    cache: KmemCache
    gfp: int
    cpu: int
    zero: bool = False


@attrs.frozen
class KmemCacheFree:
    cache: KmemCache
    addr: int
    cpu: int


@attrs.frozen
class KmemCacheShrink:
    cache: KmemCache
    cpu: int


@attrs.frozen
class KmemCacheDestroy:
    cache: KmemCache | None
    cpu: int


@attrs.frozen
class KmallocMsg:
    size: int
    gfp: int
    cpu: int


@attrs.frozen
class KcallocMsg:
    n: int
    size: int
    gfp: int
    cpu: int


@attrs.frozen
class KreallocMsg:
    addr: int | None
    new_size: int
    gfp: int
    cpu: int


@attrs.frozen
class KfreeMsg:
    addr: int | None
    cpu: int


@attrs.frozen
class KsizeMsg:
    addr: int | None


class SlabService(Actor):
    """The slab allocator and kmalloc as a service (``Machine.stats()["slab"]``)."""

    def __init__(self, slab: SlabAllocator, kmalloc: Kmalloc, **kwargs: Any) -> None:
        super().__init__("slab", **kwargs)
        self.model = slab
        self.kmalloc = kmalloc

    def refusal_done(self, exc: HwsimError, at: int) -> int | None:
        """A failed allocation costs the slab and page-allocator work it did."""
        return self.model.charge(at) if isinstance(exc, OutOfMemory) else None

    @handles(KmemCacheCreate)
    def _create(self, m: KmemCacheCreate, at: int) -> tuple[KmemCache, int]:
        return self.model.timed_kmem_cache_create(m.name, m.size, m.align, m.flags, m.ctor, at)

    @handles(KmemCacheAlloc)
    def _alloc(self, m: KmemCacheAlloc, at: int) -> tuple[int, int]:
        if m.zero:
            return self.model.timed_kmem_cache_zalloc(m.cache, m.gfp, m.cpu, at)
        return self.model.timed_kmem_cache_alloc(m.cache, m.gfp, m.cpu, at)

    @handles(KmemCacheFree)
    def _free(self, m: KmemCacheFree, at: int) -> tuple[None, int]:
        return self.model.timed_kmem_cache_free(m.cache, m.addr, m.cpu, at)

    @handles(KmemCacheShrink)
    def _shrink(self, m: KmemCacheShrink, at: int) -> tuple[int, int]:
        return self.model.timed_kmem_cache_shrink(m.cache, m.cpu, at)

    @handles(KmemCacheDestroy)
    def _destroy(self, m: KmemCacheDestroy, at: int) -> tuple[None, int]:
        return self.model.timed_kmem_cache_destroy(m.cache, m.cpu, at)

    @handles(KmallocMsg)
    def _kmalloc(self, m: KmallocMsg, at: int) -> tuple[int, int]:
        return self.kmalloc.timed_kmalloc(m.size, m.gfp, m.cpu, at)

    @handles(KcallocMsg)
    def _kcalloc(self, m: KcallocMsg, at: int) -> tuple[int, int]:
        return self.kmalloc.timed_kcalloc(m.n, m.size, m.gfp, m.cpu, at)

    @handles(KreallocMsg)
    def _krealloc(self, m: KreallocMsg, at: int) -> tuple[int, int]:
        return self.kmalloc.timed_krealloc(m.addr, m.new_size, m.gfp, m.cpu, at)

    @handles(KfreeMsg)
    def _kfree(self, m: KfreeMsg, at: int) -> tuple[None, int]:
        return self.kmalloc.timed_kfree(m.addr, m.cpu, at)

    @handles(KsizeMsg)
    def _ksize(self, m: KsizeMsg, at: int) -> tuple[int, int]:
        return self.kmalloc.timed_ksize(m.addr, at)

    def statistics(self) -> SlabStatistics:
        return self.model.statistics()
