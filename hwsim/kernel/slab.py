"""The SLUB slab allocator (mm/slub.c, mm/slab_common.c), as a plain synchronous model.

The caches themselves (flags, layout, order: ``struct kmem_cache``) are in
:mod:`hwsim.kernel.slab_common`; poisoning, red zones and their checks in
:mod:`hwsim.kernel.slub_debug`. This module is the allocator: per-CPU slabs, partial lists,
the allocation and free paths, timing and statistics. The names of both are re-exported
here.

What follows Linux (x86, 4 KiB pages, v6.8):

- ``allocate_slab()`` tries the cache's order without reclaim and falls back to the
  smallest order holding one object (ORDER_FALLBACK);
- each CPU has an active ("frozen") slab whose free objects it owns (``c->freelist``);
  allocation pops from it (the fast path), and frees of its objects on that CPU push onto it,
  last in first out: a freed object is what the next allocation on that CPU gets. Frees
  from other CPUs go to the slab's own freelist and reach the owner when its list runs dry
  (``get_freelist``);
- one node; its partial list holds slabs with free objects. A free that empties a slab
  discards the slab (its pages go back to the buddy allocator) once the partial list has
  ``min_partial = clamp(ilog2(size) / 2, 5, 10)`` slabs, otherwise the empty slab stays
  there. Full slabs are on no list. Taking a slab from, or putting one on, the partial list
  holds the node's ``list_lock``;
- caches with debug flags (``slub_debug``, SLAB_RED_ZONE, SLAB_POISON, SLAB_STORE_USER, ...)
  use no per-CPU slab: every operation takes the list_lock (``alloc_single_from_partial``,
  ``free_to_partial_list``), as in Linux since v6.2;
- ``kmem_cache_shrink`` flushes the per-CPU slabs, discards every empty slab and moves the
  fullest partial slabs to the head of the list.

Where it differs on purpose:

- bugs Linux may survive silently (a double free without slub_debug, freeing the middle of
  an object, freeing with the wrong cache) always raise :class:`~hwsim.DoubleFree` or
  :class:`~hwsim.InvalidFree`, and nothing changes; destroying a cache with objects raises
  :class:`SlabCacheBusy` and leaves the cache as it was (Linux logs, flushes and leaks it);
- no per-CPU partial lists (as CONFIG_SLUB_CPU_PARTIAL=n), no freelist randomisation
  (objects are handed out in address order in a new slab), one NUMA node;
- the free pointer lives in the model's lists, not in the object's memory;
- ``kmem_cache_shrink`` returns the number of pages it gave back (Linux returns 0 when every
  slab was released).

Timing: each operation adds its cost in cycles to the current operation (``charge(at)``
turns it into a completion cycle, like the buddy allocator's): the per-CPU fast paths cost
~20 cycles, the slow path more, and taking a cache's list_lock costs LIST_LOCK_CYCLES and
waits while another operation holds it (counted as contention); a page allocation or free
is charged by the buddy allocator behind it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import attrs

from ..devices.ram import PhysMemory
from ..errors import DoubleFree, InvalidFree, OutOfMemory
from ..units import PAGE_SHIFT
from . import gfp as G
from .buddy import BuddyAllocator
from .layout import Layout
from .slab_common import ARCH_SLAB_MINALIGN as ARCH_SLAB_MINALIGN
from .slab_common import CACHE_LINE_SIZE as CACHE_LINE_SIZE
from .slab_common import KMALLOC_MAX_CACHE_SIZE as KMALLOC_MAX_CACHE_SIZE
from .slab_common import KMALLOC_MAX_SIZE as KMALLOC_MAX_SIZE
from .slab_common import KMALLOC_SHIFT_HIGH as KMALLOC_SHIFT_HIGH
from .slab_common import KMALLOC_SHIFT_MAX as KMALLOC_SHIFT_MAX
from .slab_common import MAX_OBJS_PER_PAGE as MAX_OBJS_PER_PAGE
from .slab_common import MAX_PARTIAL as MAX_PARTIAL
from .slab_common import MIN_PARTIAL as MIN_PARTIAL
from .slab_common import SLAB_ACCOUNT as SLAB_ACCOUNT
from .slab_common import SLAB_CACHE_DMA as SLAB_CACHE_DMA
from .slab_common import SLAB_CACHE_DMA32 as SLAB_CACHE_DMA32
from .slab_common import SLAB_CONSISTENCY_CHECKS as SLAB_CONSISTENCY_CHECKS
from .slab_common import SLAB_DEBUG_FLAGS as SLAB_DEBUG_FLAGS
from .slab_common import SLAB_FLAGS_PERMITTED as SLAB_FLAGS_PERMITTED
from .slab_common import SLAB_HWCACHE_ALIGN as SLAB_HWCACHE_ALIGN
from .slab_common import SLAB_KMALLOC as SLAB_KMALLOC
from .slab_common import SLAB_MAX_ORDER as SLAB_MAX_ORDER
from .slab_common import SLAB_NO_MERGE as SLAB_NO_MERGE
from .slab_common import SLAB_NO_USER_FLAGS as SLAB_NO_USER_FLAGS
from .slab_common import SLAB_NOLEAKTRACE as SLAB_NOLEAKTRACE
from .slab_common import SLAB_PANIC as SLAB_PANIC
from .slab_common import SLAB_POISON as SLAB_POISON
from .slab_common import SLAB_RECLAIM_ACCOUNT as SLAB_RECLAIM_ACCOUNT
from .slab_common import SLAB_RED_ZONE as SLAB_RED_ZONE
from .slab_common import SLAB_STORE_USER as SLAB_STORE_USER
from .slab_common import SLAB_TEMPORARY as SLAB_TEMPORARY
from .slab_common import SLAB_TRACE as SLAB_TRACE
from .slab_common import SLAB_TYPESAFE_BY_RCU as SLAB_TYPESAFE_BY_RCU
from .slab_common import KmemCache as KmemCache
from .slab_common import Slab as Slab
from .slab_common import SlabCacheBusy as SlabCacheBusy
from .slab_common import SlabInfo as SlabInfo
from .slab_common import calc_slab_order as calc_slab_order
from .slab_common import calculate_alignment as calculate_alignment
from .slab_common import calculate_order as calculate_order
from .slab_common import check_create_args
from .slab_common import fls as fls
from .slab_common import get_order as get_order
from .slab_common import min_partial_for as min_partial_for
from .slab_common import order_objects as order_objects
from .slub_debug import DEBUG_DEFAULT_FLAGS as DEBUG_DEFAULT_FLAGS
from .slub_debug import POISON_END as POISON_END
from .slub_debug import POISON_FREE as POISON_FREE
from .slub_debug import POISON_INUSE as POISON_INUSE
from .slub_debug import SLUB_RED_ACTIVE as SLUB_RED_ACTIVE
from .slub_debug import SLUB_RED_INACTIVE as SLUB_RED_INACTIVE
from .slub_debug import check_object, init_object, setup_slab_debug, slab_fix
from .slub_debug import parse_slub_debug as parse_slub_debug

# Module-level aliases: inside a class body Python would mangle G.__GFP_X names.
_GFP_ZERO = G.__GFP_ZERO
_GFP_NOWARN = G.__GFP_NOWARN
_GFP_NORETRY = G.__GFP_NORETRY
_GFP_NOFAIL = G.__GFP_NOFAIL
_GFP_NOMEMALLOC = G.__GFP_NOMEMALLOC
_GFP_RECLAIM = G.__GFP_RECLAIM
_GFP_DIRECT_RECLAIM = G.__GFP_DIRECT_RECLAIM
# Zone modifiers slab memory cannot honour: kmalloc_fix_flags() drops them with a warning.
GFP_SLAB_BUG_MASK = G.__GFP_DMA32 | G.__GFP_HIGHMEM

SHRINK_PROMOTE_MAX = 32

# Costs in cycles.
ALLOC_FASTPATH_CYCLES = 20  # this_cpu_cmpxchg on c->freelist
FREE_FASTPATH_CYCLES = 20
SLOWPATH_CYCLES = 60  # ___slab_alloc / __slab_free: a cmpxchg on the slab, no list_lock
LIST_LOCK_CYCLES = 150  # holding n->list_lock for a partial-list operation
NEW_SLAB_CYCLES = 100  # allocate_slab() besides the page allocation ...
PER_OBJECT_CYCLES = 2  # ... plus building the freelist, per object
DEBUG_CYCLES = 200  # consistency checks and poisoning of one object
BYTES_PER_CYCLE = 32  # memset/memcpy bandwidth


def _fmt_gfp(gfp: int) -> str:
    # "%#x (%pGg)", the spacing the slab warnings use.
    return G.format_gfp(gfp).replace("(", " (", 1)


@attrs.frozen
class SlabStatistics:
    """Counters of the slab allocator, summed over its caches (the ``slab`` entry of
    ``Machine.stats()``); names follow SLUB's stat items."""

    allocs: int
    frees: int
    alloc_fastpath: int
    alloc_slowpath: int
    free_fastpath: int
    free_slowpath: int
    free_frozen: int
    alloc_from_partial: int
    alloc_refill: int
    new_slabs: int
    slabs_freed: int
    order_fallback: int
    list_lock_acquisitions: int
    list_lock_contended: int
    list_lock_wait_cycles: int
    slab_errors: int
    nr_caches: int
    nr_slabs: int
    nr_objs: int
    nr_allocated: int
    nr_slab_reclaimable: int
    nr_slab_unreclaimable: int


_COUNTERS = (
    "alloc_fastpath",
    "alloc_slowpath",
    "free_fastpath",
    "free_slowpath",
    "free_frozen",
    "alloc_from_partial",
    "alloc_refill",
    "alloc_slab",
    "free_slab",
    "order_fallback",
)


class SlabAllocator:
    """The slab allocator of one machine (SLUB, one node).

    Args:
        buddy: the page allocator slabs come from.
        ram: physical memory, where poisoning, red zones and zeroing are written.
        layout: the kernel's address layout (slab objects live in the direct map).
        nr_cpus: CPUs (one active slab per CPU and cache); at most ``buddy.nr_cpus``.
        slub_debug: the ``slub_debug`` boot option for every cache: True for FZPU, or a
            string of letters (see :func:`parse_slub_debug`).

    Attributes:
        nr_slab_reclaimable: pages of SLAB_RECLAIM_ACCOUNT caches (meminfo SReclaimable).
        nr_slab_unreclaimable: pages of the other caches and of kmalloc's page-sized
            allocations (meminfo SUnreclaim).
        log: what the kernel would have printed (dmesg).
        slab_errors: corruption reports (red zone or poison damage found by the checks).

    Example:
        >>> from hwsim.devices.ram import RamModel
        >>> from hwsim.kernel.buddy import BuddyAllocator
        >>> from hwsim.kernel.layout import layout_for
        >>> slab = SlabAllocator(BuddyAllocator(nr_pages=16384), RamModel(size=64 << 20),
        ...                      layout_for("x86_64", 64 << 20), nr_cpus=1)
        >>> cache = slab.kmem_cache_create("my_struct", 100, flags=SLAB_HWCACHE_ALIGN)
        >>> cache.size, cache.order, cache.objects_per_slab
        (128, 0, 32)
        >>> obj = slab.kmem_cache_alloc(cache)
        >>> slab.kmem_cache_free(cache, obj)
        >>> slab.kmem_cache_alloc(cache) == obj      # the freed object comes back first
        True
    """

    def __init__(
        self,
        buddy: BuddyAllocator,
        ram: PhysMemory,
        layout: Layout,
        nr_cpus: int,
        *,
        slub_debug: bool | str = False,
    ) -> None:
        if isinstance(nr_cpus, bool) or not isinstance(nr_cpus, int) or nr_cpus < 1:
            raise ValueError(f"nr_cpus must be a positive int, got {nr_cpus!r}")
        if nr_cpus > buddy.nr_cpus:
            raise ValueError(
                f"the slab allocator has {nr_cpus} CPUs but the page allocator only {buddy.nr_cpus}"
            )
        self.buddy = buddy
        self.ram = ram
        self.layout = layout
        self.nr_cpus = nr_cpus
        self.slub_debug = parse_slub_debug(slub_debug)
        self.ptr_size = 8 if layout.arch == "x86_64" else 4
        self._page_offset = layout.page_offset
        self._caches: list[KmemCache] = []  # live caches, oldest first
        self._cache_set: set[KmemCache] = set()
        self._all_caches: list[KmemCache] = []  # destroyed ones too, for statistics
        self._live: dict[int, Slab] = {}  # allocated object -> its slab
        self._pfn_slab: dict[int, Slab] = {}  # every page of every slab -> slab
        self._fast_gfps: set[int] = set()  # validated masks without __GFP_ZERO
        self.nr_slab_reclaimable = 0
        self.nr_slab_unreclaimable = 0
        self.log: list[str] = []
        self.slab_errors = 0
        self.list_lock_acquisitions = self.list_lock_contended = self.list_lock_wait_cycles = 0
        self._begin()

    # ------------------------------------------------------------------ caches

    def kmem_cache_create(
        self,
        name: str,
        size: int,
        align: int = 0,
        flags: int = 0,
        ctor: Callable[[int], object] | None = None,
    ) -> KmemCache:
        """Create a cache of objects of ``size`` bytes.

        Args:
            name: shown in /proc/slabinfo; names may repeat (Linux does not forbid it).
            size: the object size in bytes, 1..KMALLOC_MAX_SIZE.
            align: the minimum alignment (0 or a power of two).
            flags: SLAB_* flags.
            ctor: called as ``ctor(addr)`` for each object when a new slab is set up (not
                on each allocation: a constructed object must be freed in that state).

        Raises:
            TypeError, ValueError: bad arguments ("kmem_cache_create(name) failed with
                error -22"), or objects too big for a slab.
        """
        if not isinstance(name, str):
            raise TypeError(f"kmem_cache_create: name must be a str, got {name!r}")
        problem = check_create_args(name, size, align, flags, ctor)
        if problem is None:
            assert isinstance(flags, int)
            if not flags & SLAB_NO_USER_FLAGS:
                flags |= self.slub_debug  # kmem_cache_flags()
            try:
                cache = KmemCache(name, size, align, flags, ctor, self.nr_cpus, self.ptr_size)
            except ValueError as err:
                problem = str(err)
        if problem is not None:
            if isinstance(flags, int) and not isinstance(flags, bool) and flags & SLAB_PANIC:
                raise ValueError(
                    f"Kernel panic - not syncing: kmem_cache_create: Failed to create slab "
                    f"'{name}'. Error -22 ({problem})"
                )
            raise ValueError(f"kmem_cache_create({name}) failed with error -22: {problem}")
        self._caches.append(cache)
        self._cache_set.add(cache)
        self._all_caches.append(cache)
        return cache

    def _check_cache(self, cache: object, func: str) -> KmemCache:
        if not isinstance(cache, KmemCache):
            raise TypeError(f"{func} takes a cache from kmem_cache_create(), got {cache!r}")
        if cache.dead:
            raise ValueError(f"{func}({cache.name}): the cache was destroyed (use after free)")
        if cache not in self._cache_set:
            raise ValueError(f"{func}({cache.name}): the cache belongs to another machine")
        return cache

    def _check_cpu(self, cpu: object) -> int:
        if isinstance(cpu, bool) or not isinstance(cpu, int) or not 0 <= cpu < self.nr_cpus:
            raise ValueError(f"cpu must be 0..{self.nr_cpus - 1}, got {cpu!r}")
        return cpu

    def kmem_cache_destroy(self, cache: KmemCache | None, cpu: int = 0) -> None:
        """Release a cache and all its slabs. ``None`` is a no-op, as in Linux.

        Raises:
            SlabCacheBusy: objects are still allocated ("kmem_cache_destroy X: Slab cache
                still has objects"); the cache is left as it was.
        """
        if cache is None:
            return
        cache = self._check_cache(cache, "kmem_cache_destroy")
        cpu = self._check_cpu(cpu)
        if cache.nr_allocated:
            raise SlabCacheBusy(f"kmem_cache_destroy {cache.name}: Slab cache still has objects")
        if cache.flags & SLAB_KMALLOC:
            raise ValueError(f"kmem_cache_destroy({cache.name}): kmalloc caches live forever")
        self._shrink(cache, cpu)
        cache.dead = True
        cache.cpu_slab = [None] * self.nr_cpus
        cache.cpu_freelist = [[] for _ in range(self.nr_cpus)]
        self._caches.remove(cache)
        self._cache_set.discard(cache)

    def kmem_cache_shrink(self, cache: KmemCache, cpu: int = 0) -> int:
        """Give every empty slab back to the page allocator; return how many pages.

        Flushes the per-CPU slabs first, so empty ones go too, and reorders the partial
        list fullest first, as ``__kmem_cache_do_shrink`` does.
        """
        cache = self._check_cache(cache, "kmem_cache_shrink")
        return self._shrink(cache, self._check_cpu(cpu))

    def _shrink(self, cache: KmemCache, cpu: int) -> int:
        pages = cache.nr_pages
        for owner in range(self.nr_cpus):
            if cache.cpu_slab[owner] is not None:
                self._deactivate_slab(cache, owner, cpu)
        self._take_list_lock(cache)
        discard: list[Slab] = []
        promote: list[list[Slab]] = [[] for _ in range(SHRINK_PROMOTE_MAX)]
        rest: list[Slab] = []
        for slab in cache.partial:
            free = slab.objects - slab.inuse
            if free == slab.objects:
                discard.append(slab)
            elif free <= SHRINK_PROMOTE_MAX:
                promote[free - 1].insert(0, slab)  # list_move() puts it at the head
            else:
                rest.append(slab)
        cache.partial.clear()
        for bucket in promote:
            for slab in bucket:
                cache.partial[slab] = None
        for slab in rest:
            cache.partial[slab] = None
        for slab in discard:
            self._discard_slab(cache, slab, cpu)
        return pages - cache.nr_pages

    @property
    def slab_caches(self) -> list[KmemCache]:
        """The live caches, newest first: the order /proc/slabinfo lists them in."""
        return self._caches[::-1]

    def find_cache(self, name: str) -> KmemCache | None:
        """The newest live cache called ``name``."""
        for cache in reversed(self._caches):
            if cache.name == name:
                return cache
        return None

    # ------------------------------------------------------------------ allocation

    def kmem_cache_alloc(self, cache: KmemCache, gfp: int = G.GFP_KERNEL, cpu: int = 0) -> int:
        """Allocate an object; return its (direct-map) virtual address.

        With ``__GFP_ZERO`` the object is zeroed; otherwise it holds what it held (or its
        poison under SLAB_POISON).

        Raises:
            OutOfMemory: no slab could be allocated ("SLUB: Unable to allocate memory").
            TypeError, ValueError: bad cache, gfp or cpu.
        """
        if (
            gfp.__class__ is int  # before the set: 3264.0 == 3264, and lists are unhashable
            and gfp in self._fast_gfps
            and cpu.__class__ is int
            and 0 <= cpu < self.nr_cpus
        ):
            try:
                freelist = cache.cpu_freelist[cpu]
            except AttributeError:
                raise TypeError(
                    f"kmem_cache_alloc takes a cache from kmem_cache_create(), got {cache!r}"
                ) from None
            if freelist:
                addr = freelist.pop()
                self._live[addr] = cache.cpu_slab[cpu]  # type: ignore[assignment]
                cache.alloc_fastpath += 1
                self._op_cycles += ALLOC_FASTPATH_CYCLES
                return addr
        return self._kmem_cache_alloc_checked(cache, gfp, cpu)

    def _kmem_cache_alloc_checked(self, cache: object, gfp: object, cpu: object) -> int:
        cache = self._check_cache(cache, "kmem_cache_alloc")
        gfp = G.check_gfp(gfp)
        cpu = self._check_cpu(cpu)
        addr = self._slab_alloc(cache, gfp, cpu, cache.object_size)
        if gfp & _GFP_ZERO:
            self._zero_object(cache, addr, cache.object_size)
        elif gfp:
            self._fast_gfps.add(gfp)
        return addr

    def kmem_cache_zalloc(self, cache: KmemCache, gfp: int = G.GFP_KERNEL, cpu: int = 0) -> int:
        """``kmem_cache_alloc(cache, gfp | __GFP_ZERO)``: a zeroed object."""
        return self._kmem_cache_alloc_checked(cache, G.check_gfp(gfp) | _GFP_ZERO, cpu)

    def _slab_alloc(self, cache: KmemCache, gfp: int, cpu: int, orig_size: int) -> int:
        """``slab_alloc_node()`` without argument checks (kmalloc calls it too)."""
        freelist = cache.cpu_freelist[cpu]
        if freelist:
            addr = freelist.pop()
            self._live[addr] = cache.cpu_slab[cpu]  # type: ignore[assignment]
            cache.alloc_fastpath += 1
            self._op_cycles += ALLOC_FASTPATH_CYCLES
            return addr
        if cache.debug:
            return self._alloc_debug(cache, gfp, cpu, orig_size)
        return self._alloc_slowpath(cache, gfp, cpu)

    def _alloc_slowpath(self, cache: KmemCache, gfp: int, cpu: int) -> int:
        """``___slab_alloc()``: refill the CPU's freelist from its slab, the partial list or
        a new slab. Nothing changes if no slab can be had."""
        self._op_cycles += SLOWPATH_CYCLES
        old = cache.cpu_slab[cpu]
        empty = cache.cpu_freelist[cpu]
        if old is not None and old.freelist:
            # get_freelist(): what other CPUs freed into our slab.
            cache.cpu_freelist[cpu], old.freelist = old.freelist, empty
            old.inuse = old.objects
            cache.alloc_refill += 1
        else:
            if cache.partial:
                self._take_list_lock(cache)
                slab, _ = cache.partial.popitem(last=False)
                cache.alloc_from_partial += 1
            else:
                slab = self._new_slab(cache, gfp, cpu)
                cache.alloc_slab += 1
            if old is not None:
                old.cpu = -1  # full: unfrozen onto no list
            # freeze_slab(): the CPU takes the whole freelist.
            slab.cpu = cpu
            slab.inuse = slab.objects
            cache.cpu_slab[cpu] = slab
            cache.cpu_freelist[cpu], slab.freelist = slab.freelist, empty
        cache.alloc_slowpath += 1
        addr = cache.cpu_freelist[cpu].pop()
        self._live[addr] = cache.cpu_slab[cpu]  # type: ignore[assignment]
        return addr

    def _alloc_debug(self, cache: KmemCache, gfp: int, cpu: int, orig_size: int) -> int:
        """``alloc_single_from_partial()``/``alloc_single_from_new_slab()``: debug caches
        take one object at a time under the list_lock."""
        self._op_cycles += SLOWPATH_CYCLES + DEBUG_CYCLES
        if cache.partial:
            self._take_list_lock(cache)
            slab = next(iter(cache.partial))
            cache.alloc_from_partial += 1
        else:
            slab = self._new_slab(cache, gfp, cpu)
            self._take_list_lock(cache)
            cache.partial[slab] = None
            cache.partial.move_to_end(slab, last=False)  # add_partial(DEACTIVATE_TO_HEAD)
            cache.alloc_slab += 1
        addr = slab.freelist.pop()
        slab.inuse += 1
        if not slab.freelist:
            del cache.partial[slab]  # add_full()
        cache.alloc_slowpath += 1
        self._live[addr] = slab
        # alloc_debug_processing()
        if cache.checks:
            self.slab_errors += check_object(
                self.ram, self._page_offset, self.log, cache, slab, addr, SLUB_RED_INACTIVE
            )
        if cache.tracks_orig_size:
            cache.orig_sizes[addr] = orig_size
        init_object(self.ram, self._page_offset, cache, addr, SLUB_RED_ACTIVE, orig_size)
        return addr

    def _new_slab(self, cache: KmemCache, gfp: int, cpu: int) -> Slab:
        """``new_slab()``/``allocate_slab()``: pages from the buddy allocator, cut up."""
        if gfp & GFP_SLAB_BUG_MASK:
            gfp = self.kmalloc_fix_flags(gfp)
        flags = (gfp & (G.GFP_RECLAIM_MASK | G.GFP_CONSTRAINT_MASK)) | cache.allocflags
        # The preferred order is tried without reclaim or warning; then the smallest order.
        alloc_gfp = (flags | _GFP_NOWARN | _GFP_NORETRY) & ~_GFP_NOFAIL
        if alloc_gfp & _GFP_DIRECT_RECLAIM and cache.order > cache.min_order:
            alloc_gfp = (alloc_gfp | _GFP_NOMEMALLOC) & ~_GFP_RECLAIM
        order = cache.order
        try:
            pfn = self._buddy_alloc(order, alloc_gfp, cpu)
        except OutOfMemory:
            order = cache.min_order
            try:
                pfn = self._buddy_alloc(order, flags, cpu)
            except OutOfMemory as err:
                raise self._slab_out_of_memory(cache, gfp, err) from err
            cache.order_fallback += 1
        objects = order_objects(order, cache.size)
        slab = Slab(cache, pfn, order, self.layout.pfn_to_virt(pfn), objects)
        self._op_cycles += NEW_SLAB_CYCLES + PER_OBJECT_CYCLES * objects
        if cache.init_on_setup:
            nbytes = setup_slab_debug(self.ram, self._page_offset, cache, slab)
            self._op_cycles += nbytes // BYTES_PER_CYCLE
        if cache.ctor is not None:
            ctor = cache.ctor
            try:
                for addr in reversed(slab.freelist):
                    ctor(addr)
            except BaseException:
                self._buddy_free(pfn, order, cpu)
                raise
        pages = 1 << order
        pfn_slab = self._pfn_slab
        for p in range(pfn, pfn + pages):
            pfn_slab[p] = slab
        cache.nr_slabs += 1
        cache.total_objects += objects
        cache.nr_pages += pages
        if cache.reclaimable:
            self.nr_slab_reclaimable += pages
        else:
            self.nr_slab_unreclaimable += pages
        return slab

    def kmalloc_fix_flags(self, gfp: int) -> int:
        """``kmalloc_fix_flags()``: drop the zone modifiers slab memory cannot honour
        (``__GFP_DMA32``, ``__GFP_HIGHMEM``), with the kernel's warning."""
        fixed = gfp & ~GFP_SLAB_BUG_MASK
        self.log.append(
            f"Unexpected gfp: {_fmt_gfp(gfp & GFP_SLAB_BUG_MASK)}. Fixing up to gfp: "
            f"{_fmt_gfp(fixed)}. Fix your code!"
        )
        return fixed

    def _slab_out_of_memory(self, cache: KmemCache, gfp: int, err: OutOfMemory) -> OutOfMemory:
        free = sum(s.objects - s.inuse for s in cache.partial)
        message = (
            f"SLUB: Unable to allocate memory on node -1, gfp={G.format_gfp(gfp)}\n"
            f"  cache: {cache.name}, object size: {cache.object_size}, buffer size: "
            f"{cache.size}, default order: {cache.order}, min order: {cache.min_order}\n"
            f"  node 0: slabs: {cache.nr_slabs}, objs: {cache.total_objects}, free: {free}"
        )
        if not gfp & _GFP_NOWARN:
            self.log.extend(message.splitlines())
        return OutOfMemory(f"{message}\n({err})")

    def _discard_slab(self, cache: KmemCache, slab: Slab, cpu: int) -> None:
        """``discard_slab()``: the slab's pages go back to the buddy allocator."""
        pages = 1 << slab.order
        pfn_slab = self._pfn_slab
        for p in range(slab.pfn, slab.pfn + pages):
            del pfn_slab[p]
        cache.nr_slabs -= 1
        cache.total_objects -= slab.objects
        cache.nr_pages -= pages
        cache.free_slab += 1
        if cache.reclaimable:
            self.nr_slab_reclaimable -= pages
        else:
            self.nr_slab_unreclaimable -= pages
        self._buddy_free(slab.pfn, slab.order, cpu)

    def _deactivate_slab(self, cache: KmemCache, owner: int, cpu: int) -> None:
        """``deactivate_slab()``: the CPU's freelist goes back to its slab, which joins the
        partial list (or is discarded when empty and the list is long enough)."""
        slab = cache.cpu_slab[owner]
        assert slab is not None
        remote = bool(slab.freelist)
        freelist = cache.cpu_freelist[owner]
        slab.freelist.extend(freelist)  # spliced in front of the remote frees
        slab.inuse -= len(freelist)
        slab.cpu = -1
        cache.cpu_slab[owner] = None
        cache.cpu_freelist[owner] = []
        if not slab.inuse and len(cache.partial) >= cache.min_partial:
            cache.deactivate_empty += 1
            self._discard_slab(cache, slab, cpu)
        elif slab.freelist:
            self._take_list_lock(cache)
            cache.partial[slab] = None
            if not remote:
                cache.partial.move_to_end(slab, last=False)  # DEACTIVATE_TO_HEAD

    # ------------------------------------------------------------------ freeing

    def kmem_cache_free(self, cache: KmemCache, addr: int, cpu: int = 0) -> None:
        """Give an object back to its slab.

        Raises:
            DoubleFree: the object is already free ("Object already free").
            InvalidFree: ``addr`` is not an object of ``cache`` (another cache's object,
                not the start of an object, not slab memory).
        """
        if addr.__class__ is int and cpu.__class__ is int and 0 <= cpu < self.nr_cpus:
            slab = self._live.pop(addr, None)
            if slab is not None:
                if slab.cache is cache:
                    if slab.cpu == cpu:
                        cache.cpu_freelist[cpu].append(addr)
                        cache.free_fastpath += 1
                        self._op_cycles += FREE_FASTPATH_CYCLES
                        return
                    self._free_slowpath(cache, slab, addr, cpu)
                    return
                self._live[addr] = slab
        self._reject_free(cache, addr, cpu)

    def _free_slowpath(self, cache: KmemCache, slab: Slab, addr: int, cpu: int) -> None:
        """``__slab_free()``: ``addr`` was already taken off the live objects."""
        if cache.debug:
            self._free_debug(cache, slab, addr, cpu)
            return
        self._op_cycles += SLOWPATH_CYCLES
        cache.free_slowpath += 1
        freelist = slab.freelist
        if slab.cpu >= 0:  # another CPU's active slab: no list to update
            freelist.append(addr)
            slab.inuse -= 1
            cache.free_frozen += 1
            return
        prior = bool(freelist)
        freelist.append(addr)
        slab.inuse -= 1
        if slab.inuse and prior:
            return  # stays on the partial list
        self._take_list_lock(cache)
        if not slab.inuse and len(cache.partial) >= cache.min_partial:
            if prior:
                del cache.partial[slab]
                cache.free_remove_partial += 1
            self._discard_slab(cache, slab, cpu)
        elif not prior:
            cache.partial[slab] = None  # was full: add_partial(DEACTIVATE_TO_TAIL)
            cache.free_add_partial += 1

    def _free_debug(self, cache: KmemCache, slab: Slab, addr: int, cpu: int) -> None:
        """``free_to_partial_list()``: checks, poisoning, list update under the list_lock."""
        self._op_cycles += SLOWPATH_CYCLES + DEBUG_CYCLES
        self._take_list_lock(cache)
        if cache.checks:
            errors = check_object(
                self.ram, self._page_offset, self.log, cache, slab, addr, SLUB_RED_ACTIVE
            )
            if errors:
                self.slab_errors += errors
                slab_fix(self.log, cache, f"Object at {addr:#x} not freed")
                self._live[addr] = slab  # leaked, as in Linux
                return
        cache.orig_sizes.pop(addr, None)
        init_object(self.ram, self._page_offset, cache, addr, SLUB_RED_INACTIVE, cache.object_size)
        cache.free_slowpath += 1
        was_full = not slab.freelist
        slab.freelist.append(addr)
        slab.inuse -= 1
        discard = not slab.inuse and len(cache.partial) >= cache.min_partial
        if was_full:
            if not discard:
                cache.partial[slab] = None
                cache.free_add_partial += 1
        elif discard:
            del cache.partial[slab]
            cache.free_remove_partial += 1
        if discard:
            self._discard_slab(cache, slab, cpu)

    def _reject_free(self, cache: object, addr: object, cpu: object) -> None:
        """Raise the error that describes a bad kmem_cache_free(); change nothing."""
        cache = self._check_cache(cache, "kmem_cache_free")
        if isinstance(addr, bool) or not isinstance(addr, int):
            raise TypeError(f"kmem_cache_free({cache.name}): addr must be an int, got {addr!r}")
        self._check_cpu(cpu)
        func = f"kmem_cache_free({cache.name})"
        slab = self.virt_to_slab(addr)
        if slab is None:
            raise InvalidFree(f"{func}: Object is not a Slab page! {self._not_slab_hint(addr)}")
        if slab.cache is not cache:
            raise InvalidFree(
                f"{func}: Wrong slab cache. {cache.name} but object {addr:#x} is from "
                f"{slab.cache.name}: free it with kmem_cache_free({slab.cache.name}, ...) "
                "or kfree()"
            )
        raise self.bad_object_error(func, slab, addr)

    def bad_object_error(self, func: str, slab: Slab, addr: int) -> InvalidFree:
        """The error for ``addr`` in ``slab`` that is not an allocated object: the middle of
        an object ("Invalid object pointer") or a free one ("Object already free")."""
        name = slab.cache.name
        index = slab.object_index(addr)
        if index < 0:
            return InvalidFree(
                f"{func}: BUG {name} (Not tainted): Invalid object pointer {addr:#x}: not the "
                f"start of an object (objects of {slab.cache.size} bytes start at "
                f"{slab.object_address(0):#x} in this slab). FIX {name}: Object at {addr:#x} "
                "not freed"
            )
        return DoubleFree(
            f"{func}: BUG {name} (Not tainted): Object already free: object {addr:#x} "
            f"(object {index} of the slab at pfn {slab.pfn:#x}) was freed before. "
            f"FIX {name}: Object at {addr:#x} not freed. Free each object exactly once "
            "(clear the pointer after freeing it)"
        )

    def _not_slab_hint(self, addr: int) -> str:
        layout = self.layout
        if layout.is_vmalloc_addr(addr):
            return f"{addr:#x} is a vmalloc address: free it with vfree() or kvfree()"
        if layout.is_direct_map_addr(addr):
            pfn = (addr - layout.page_offset) >> PAGE_SHIFT
            return f"{addr:#x} (pfn {pfn:#x}) is not slab memory"
        return f"{addr:#x} is not a kernel direct-map address"

    # ------------------------------------------------------------------ lookups

    def virt_to_slab(self, addr: int) -> Slab | None:
        """``virt_to_slab()``: the slab whose pages hold ``addr``, or None."""
        if not self.layout.is_direct_map_addr(addr):
            return None
        return self._pfn_slab.get((addr - self._page_offset) >> PAGE_SHIFT)

    def find_object(self, addr: int) -> tuple[KmemCache, Slab] | None:
        """The cache and slab of slab memory holding ``addr`` (any byte of a slab)."""
        slab = self.virt_to_slab(addr)
        return None if slab is None else (slab.cache, slab)

    def object_slab(self, addr: int) -> Slab | None:
        """The slab of the allocated object starting at ``addr``, or None."""
        return self._live.get(addr)

    def iter_objects(self) -> Iterator[tuple[int, KmemCache]]:
        """Every allocated object as (address, cache)."""
        for addr, slab in self._live.items():
            yield addr, slab.cache

    # ------------------------------------------------------------------ memory contents

    def _zero_object(self, cache: KmemCache, addr: int, orig_size: int) -> None:
        """``__GFP_ZERO``: clear the object (only the size asked for when the rest is red
        zone, as ``slab_post_alloc_hook()`` does)."""
        size = cache.object_size
        if cache.flags & (SLAB_STORE_USER | SLAB_RED_ZONE) and cache.flags & SLAB_KMALLOC:
            size = orig_size
        self.ram.write(addr - self._page_offset, bytes(size))
        self._op_cycles += size // BYTES_PER_CYCLE + 1

    # ------------------------------------------------------------------ timing

    def _begin(self) -> None:
        """Start accounting a new operation (the timed wrappers call it)."""
        self._op_cycles = 0
        self._op_lock: KmemCache | None = None
        self._op_lock_cycles = 0
        self._op_buddy = False

    def _take_list_lock(self, cache: KmemCache) -> None:
        self._op_lock = cache
        self._op_lock_cycles += LIST_LOCK_CYCLES
        self._op_cycles += LIST_LOCK_CYCLES
        self.list_lock_acquisitions += 1

    def _buddy_alloc(self, order: int, gfp: int, cpu: int) -> int:
        buddy = self.buddy
        if self._op_buddy:  # fold an earlier page-allocator call's cost into ours
            self._op_cycles += buddy._op_cycles
        self._op_buddy = True
        return buddy.alloc_pages(order, gfp, cpu)

    def _buddy_free(self, pfn: int, order: int, cpu: int) -> None:
        buddy = self.buddy
        if self._op_buddy:
            self._op_cycles += buddy._op_cycles
        self._op_buddy = True
        buddy.free_pages(pfn, order, cpu)

    def charge(self, at: int) -> int:
        """Turn the operation's cost into a completion cycle.

        The list_lock (if taken) is acquired when the operation starts, waiting while
        another operation holds it; the last page-allocator call is charged by the buddy
        allocator (with its zone lock) after the slab work. Earlier page-allocator calls of
        the same operation are added without their zone-lock waits.
        """
        start = at
        cache = self._op_lock
        if cache is not None:
            held = cache._lock_until
            if held > start:
                self.list_lock_contended += 1
                self.list_lock_wait_cycles += held - start
                start = held
            cache._lock_until = start + self._op_lock_cycles
        done = start + self._op_cycles
        if self._op_buddy:
            done = self.buddy.charge(done)
        return done

    def timed_kmem_cache_alloc(
        self, cache: KmemCache, gfp: int, cpu: int, at: int
    ) -> tuple[int, int]:
        self._begin()
        addr = self.kmem_cache_alloc(cache, gfp, cpu)
        return addr, self.charge(at)

    def timed_kmem_cache_zalloc(
        self, cache: KmemCache, gfp: int, cpu: int, at: int
    ) -> tuple[int, int]:
        self._begin()
        addr = self.kmem_cache_zalloc(cache, gfp, cpu)
        return addr, self.charge(at)

    def timed_kmem_cache_free(
        self, cache: KmemCache, addr: int, cpu: int, at: int
    ) -> tuple[None, int]:
        self._begin()
        self.kmem_cache_free(cache, addr, cpu)
        return None, self.charge(at)

    def timed_kmem_cache_shrink(self, cache: KmemCache, cpu: int, at: int) -> tuple[int, int]:
        self._begin()
        pages = self.kmem_cache_shrink(cache, cpu)
        return pages, self.charge(at)

    def timed_kmem_cache_create(
        self,
        name: str,
        size: int,
        align: int,
        flags: int,
        ctor: Callable[[int], object] | None,
        at: int,
    ) -> tuple[KmemCache, int]:
        self._begin()
        cache = self.kmem_cache_create(name, size, align, flags, ctor)
        self._op_cycles += NEW_SLAB_CYCLES
        return cache, self.charge(at)

    def timed_kmem_cache_destroy(
        self, cache: KmemCache | None, cpu: int, at: int
    ) -> tuple[None, int]:
        self._begin()
        self.kmem_cache_destroy(cache, cpu)
        return None, self.charge(at)

    # ------------------------------------------------------------------ introspection

    def nr_slab_pages(self) -> int:
        """Pages the slab allocator holds (meminfo's Slab, in pages)."""
        return self.nr_slab_reclaimable + self.nr_slab_unreclaimable

    def slabinfo(self) -> list[SlabInfo]:
        """The /proc/slabinfo lines' numbers, in the file's order (newest cache first)."""
        return [cache.slabinfo() for cache in reversed(self._caches)]

    def statistics(self) -> SlabStatistics:
        totals = dict.fromkeys(_COUNTERS, 0)
        for cache in self._all_caches:
            for name in _COUNTERS:
                totals[name] += getattr(cache, name)
        allocs = totals["alloc_fastpath"] + totals["alloc_slowpath"]
        frees = totals["free_fastpath"] + totals["free_slowpath"]
        return SlabStatistics(
            allocs=allocs,
            frees=frees,
            alloc_fastpath=totals["alloc_fastpath"],
            alloc_slowpath=totals["alloc_slowpath"],
            free_fastpath=totals["free_fastpath"],
            free_slowpath=totals["free_slowpath"],
            free_frozen=totals["free_frozen"],
            alloc_from_partial=totals["alloc_from_partial"],
            alloc_refill=totals["alloc_refill"],
            new_slabs=totals["alloc_slab"],
            slabs_freed=totals["free_slab"],
            order_fallback=totals["order_fallback"],
            list_lock_acquisitions=self.list_lock_acquisitions,
            list_lock_contended=self.list_lock_contended,
            list_lock_wait_cycles=self.list_lock_wait_cycles,
            slab_errors=self.slab_errors,
            nr_caches=len(self._caches),
            nr_slabs=sum(c.nr_slabs for c in self._caches),
            nr_objs=sum(c.total_objects for c in self._caches),
            nr_allocated=len(self._live),
            nr_slab_reclaimable=self.nr_slab_reclaimable,
            nr_slab_unreclaimable=self.nr_slab_unreclaimable,
        )

    def check_invariants(self) -> None:
        """Assert that the books balance (used by the property tests)."""
        live_by_slab: dict[int, int] = {}
        for addr, slab in self._live.items():
            assert slab.object_index(addr) >= 0, hex(addr)
            live_by_slab[id(slab)] = live_by_slab.get(id(slab), 0) + 1
        seen: set[int] = set()
        for cache in self._caches:
            slabs = {id(s): s for s in self._pfn_slab.values() if s.cache is cache}
            assert len(slabs) == cache.nr_slabs, (cache.name, len(slabs), cache.nr_slabs)
            assert sum(s.objects for s in slabs.values()) == cache.total_objects
            assert sum(1 << s.order for s in slabs.values()) == cache.nr_pages
            for cpu, active in enumerate(cache.cpu_slab):
                if active is None:
                    assert not cache.cpu_freelist[cpu]
                else:
                    assert active.cpu == cpu and id(active) in slabs
            for key, slab in slabs.items():
                live = live_by_slab.get(key, 0)
                free = list(slab.freelist)
                assert slab.inuse == slab.objects - len(slab.freelist), slab
                if slab.cpu >= 0:
                    free += cache.cpu_freelist[slab.cpu]
                else:
                    assert (slab in cache.partial) == bool(slab.freelist), slab
                assert live + len(free) == slab.objects, (slab, live, len(free))
                for addr in free:
                    assert slab.object_index(addr) >= 0 and addr not in self._live
                    assert addr not in seen
                    seen.add(addr)
            assert cache.nr_allocated == sum(live_by_slab.get(k, 0) for k in slabs)
        reclaimable = sum(c.nr_pages for c in self._caches if c.reclaimable)
        assert reclaimable == self.nr_slab_reclaimable
