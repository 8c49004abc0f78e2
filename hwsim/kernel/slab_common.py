"""Slab caches (mm/slab_common.c, the cache half of mm/slub.c): flags, layout, order.

A :class:`KmemCache` is what ``kmem_cache_create()`` makes: the cache flags, the object
layout and the slab order, plus the cache's own lists and counters that the allocator
(:mod:`hwsim.kernel.slab`) works on. A :class:`Slab` is ``struct slab``.

What follows Linux (x86, 4 KiB pages, v6.8):

- a cache's layout is ``calculate_sizes()``: the object size rounded up to a word, a free
  pointer moved behind the object when the object may not be overwritten (poisoning, a
  constructor, SLAB_TYPESAFE_BY_RCU), debug metadata (red zones, two ``struct track``), all
  rounded up to the alignment of ``calculate_alignment()`` (SLAB_HWCACHE_ALIGN: the cache
  line, halved while the object fits in half of it);
- the slab order is ``calculate_order()``: ``min_objects = 4 * (fls(nr_cpus) + 1)``, capped
  by what fits in a ``slab_max_order`` (3) slab, then the smallest order from there whose
  leftover is at most 1/16, 1/8, 1/4 or 1/2 of the slab; objects per slab =
  ``(PAGE_SIZE << order) // size``;
- ``min_partial = clamp(ilog2(size) / 2, 5, 10)``;
- slabinfo's active_objs counts the free objects of per-CPU slabs as active, as
  ``get_slabinfo()`` does.

Where it differs on purpose:

- no cache merging; SLAB_STORE_USER keeps no tracks in RAM (the space for them is reserved).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import attrs

from ..errors import HwsimError
from ..units import PAGE_SHIFT, PAGE_SIZE
from . import gfp as G
from .zones import MAX_PAGE_ORDER, PAGE_ALLOC_COSTLY_ORDER

# Cache flags (include/linux/slab.h, v6.8 values; v6.9 renumbered them into an enum).
SLAB_CONSISTENCY_CHECKS = 0x00000100
SLAB_RED_ZONE = 0x00000400
SLAB_POISON = 0x00000800
SLAB_KMALLOC = 0x00001000
SLAB_HWCACHE_ALIGN = 0x00002000
SLAB_CACHE_DMA = 0x00004000
SLAB_CACHE_DMA32 = 0x00008000
SLAB_STORE_USER = 0x00010000
SLAB_RECLAIM_ACCOUNT = 0x00020000
SLAB_TEMPORARY = SLAB_RECLAIM_ACCOUNT
SLAB_PANIC = 0x00040000
SLAB_TYPESAFE_BY_RCU = 0x00080000
SLAB_TRACE = 0x00200000
SLAB_NOLEAKTRACE = 0x00800000
SLAB_NO_MERGE = 0x01000000
SLAB_ACCOUNT = 0x04000000
SLAB_NO_USER_FLAGS = 0x10000000

SLAB_DEBUG_FLAGS = (
    SLAB_RED_ZONE | SLAB_POISON | SLAB_STORE_USER | SLAB_TRACE | SLAB_CONSISTENCY_CHECKS
)
SLAB_FLAGS_PERMITTED = (
    SLAB_DEBUG_FLAGS
    | SLAB_KMALLOC
    | SLAB_HWCACHE_ALIGN
    | SLAB_CACHE_DMA
    | SLAB_CACHE_DMA32
    | SLAB_RECLAIM_ACCOUNT
    | SLAB_PANIC
    | SLAB_TYPESAFE_BY_RCU
    | SLAB_NOLEAKTRACE
    | SLAB_NO_MERGE
    | SLAB_ACCOUNT
    | SLAB_NO_USER_FLAGS
)

MIN_PARTIAL = 5
MAX_PARTIAL = 10
SLAB_MAX_ORDER = PAGE_ALLOC_COSTLY_ORDER  # slub_max_order
MAX_OBJS_PER_PAGE = 32767  # slab->objects is 15 bits
CACHE_LINE_SIZE = 64  # cache_line_size() on x86
ARCH_SLAB_MINALIGN = 8  # __alignof__(unsigned long long), on i386 too

# kmalloc's limits (include/linux/slab.h), here because kmem_cache_create checks them too.
KMALLOC_SHIFT_HIGH = PAGE_SHIFT + 1
KMALLOC_MAX_CACHE_SIZE = 1 << KMALLOC_SHIFT_HIGH
KMALLOC_SHIFT_MAX = MAX_PAGE_ORDER + PAGE_SHIFT
KMALLOC_MAX_SIZE = 1 << KMALLOC_SHIFT_MAX

# Module-level aliases: inside a class body Python would mangle G.__GFP_X names.
_GFP_COMP = G.__GFP_COMP
_GFP_RECLAIMABLE = G.__GFP_RECLAIMABLE


class SlabCacheBusy(HwsimError):
    """``kmem_cache_destroy()`` of a cache that still has objects allocated.

    Linux warns ("kmem_cache_destroy X: Slab cache still has objects") and leaks the cache;
    hwsim refuses and leaves the cache as it was. Free every object first.
    """


def fls(x: int) -> int:
    """``fls()``: the position of the most significant set bit, 1-based (0 for 0)."""
    return x.bit_length()


def get_order(size: int) -> int:
    """``get_order()``: the smallest order whose block (``PAGE_SIZE << order``) holds ``size``."""
    return ((size - 1) >> PAGE_SHIFT).bit_length() if size > 0 else 0


def order_objects(order: int, size: int) -> int:
    """Objects of ``size`` bytes in a slab of ``order``."""
    return (PAGE_SIZE << order) // size


def calc_slab_order(size: int, min_order: int, max_order: int, fract_leftover: int) -> int:
    """The smallest order in ``[min_order, max_order]`` wasting at most 1/fract_leftover of
    the slab; ``max_order + 1`` if there is none."""
    order = min_order
    while order <= max_order:
        slab_size = PAGE_SIZE << order
        if slab_size % size <= slab_size // fract_leftover:
            break
        order += 1
    return order


def calculate_order(
    size: int,
    nr_cpus: int,
    *,
    slab_min_order: int = 0,
    slab_max_order: int = SLAB_MAX_ORDER,
    slab_min_objects: int = 0,
) -> int:
    """``calculate_order()`` (mm/slub.c, v6.8): the page order of a cache's slabs.

    Example (2 CPUs: min_objects = 4 * (fls(2) + 1) = 12):
        >>> calculate_order(192, 2), calculate_order(512, 2), calculate_order(8192, 2)
        (0, 1, 3)

    Raises:
        ValueError: not even one object fits in a MAX_PAGE_ORDER block (Linux: -ENOSYS).
    """
    min_objects = slab_min_objects or 4 * (fls(nr_cpus) + 1)
    max_objects = max(order_objects(slab_max_order, size), 1)
    min_objects = min(min_objects, max_objects)
    min_order = max(slab_min_order, get_order(min_objects * size))
    if order_objects(min_order, size) > MAX_OBJS_PER_PAGE:
        return get_order(size * MAX_OBJS_PER_PAGE) - 1
    for fraction in (16, 8, 4, 2):
        order = calc_slab_order(size, min_order, slab_max_order, fraction)
        if order <= slab_max_order:
            return order
    order = get_order(size)
    if order <= MAX_PAGE_ORDER:
        return order
    raise ValueError(
        f"objects of {size} bytes do not fit in an order-{MAX_PAGE_ORDER} slab (-ENOSYS)"
    )


def calculate_alignment(flags: int, align: int, size: int, ptr_size: int = 8) -> int:
    """``calculate_alignment()`` (mm/slab_common.c): the alignment of a cache's objects."""
    if flags & SLAB_HWCACHE_ALIGN:
        ralign = CACHE_LINE_SIZE
        while size <= ralign // 2:
            ralign //= 2
        align = max(align, ralign)
    align = max(align, ARCH_SLAB_MINALIGN)
    return _align_up(align, ptr_size)


def min_partial_for(size: int) -> int:
    """``s->min_partial``: ``clamp(ilog2(size) / 2, MIN_PARTIAL, MAX_PARTIAL)``."""
    return max(MIN_PARTIAL, min(MAX_PARTIAL, (size.bit_length() - 1) // 2))


def _align_up(x: int, a: int) -> int:
    return (x + a - 1) & ~(a - 1)


def _track_size(ptr_size: int) -> int:
    # struct track {addr; depot_stack_handle_t handle; int cpu; int pid; unsigned long when}
    return 32 if ptr_size == 8 else 20


def check_create_args(
    name: str, size: object, align: object, flags: object, ctor: object
) -> str | None:
    """The checks of ``kmem_cache_create()``: a reason to fail with -EINVAL, or None.

    Raises:
        TypeError: an argument of the wrong type.
    """
    if not name:
        return "a cache needs a name"
    for what, value in (("size", size), ("align", align), ("flags", flags)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"kmem_cache_create({name}): {what} must be an int, got {value!r}")
    assert isinstance(size, int) and isinstance(align, int) and isinstance(flags, int)
    if not 0 < size <= KMALLOC_MAX_SIZE:
        return (
            f"integrity check failed: size {size} is outside 1..KMALLOC_MAX_SIZE "
            f"({KMALLOC_MAX_SIZE})"
        )
    if align < 0 or align & (align - 1):
        return f"align {align} is not 0 or a power of two"
    if align > PAGE_SIZE << MAX_PAGE_ORDER:
        return f"align {align} is larger than the largest block"
    if flags < 0 or flags & ~SLAB_FLAGS_PERMITTED:
        return f"unknown or allocator-internal flags {flags & ~SLAB_FLAGS_PERMITTED:#x}"
    if ctor is not None and not callable(ctor):
        raise TypeError(f"kmem_cache_create({name}): ctor must be callable, got {ctor!r}")
    return None


class Slab:
    """``struct slab``: 2**order contiguous pages cut into a cache's objects.

    Attributes:
        cache: the cache it belongs to.
        pfn: its first page frame; ``order``: it spans 2**order pages.
        base: the direct-map virtual address of its first byte.
        objects: how many objects it holds.
        freelist: its free objects, a stack whose end is the head of SLUB's freelist. The
            free objects of a per-CPU slab are on its CPU's list instead (``c->freelist``);
            this one then holds what other CPUs freed.
        inuse: ``slab->inuse``: allocated objects, except that a per-CPU (frozen) slab
            counts the objects on its CPU's freelist as in use, as Linux does.
        cpu: the CPU whose active slab it is (SLUB's "frozen"), or -1.
    """

    __slots__ = ("base", "cache", "cpu", "freelist", "inuse", "objects", "order", "pfn")

    def __init__(self, cache: KmemCache, pfn: int, order: int, base: int, objects: int) -> None:
        self.cache = cache
        self.pfn = pfn
        self.order = order
        self.base = base
        self.objects = objects
        first = base + cache.red_left_pad
        size = cache.size
        # Address order: the first object is the freelist head (no freelist randomisation).
        self.freelist = list(range(first + (objects - 1) * size, first - 1, -size))
        self.inuse = 0
        self.cpu = -1

    def __repr__(self) -> str:
        return (
            f"<Slab {self.cache.name} pfn={self.pfn:#x} order={self.order} "
            f"objects={self.objects} inuse={self.inuse} cpu={self.cpu}>"
        )

    @property
    def nr_pages(self) -> int:
        return 1 << self.order

    def object_index(self, addr: int) -> int:
        """The index of the object starting at ``addr``; -1 if no object starts there."""
        offset = addr - self.base - self.cache.red_left_pad
        size = self.cache.size
        if offset < 0 or offset % size or offset // size >= self.objects:
            return -1
        return offset // size

    def object_address(self, index: int) -> int:
        return self.base + self.cache.red_left_pad + index * self.cache.size


@attrs.frozen(kw_only=True)
class SlabInfo:
    """``struct slabinfo`` with the cache's name: one line of /proc/slabinfo.

    Under SLUB the tunables and ``sharedavail`` are 0 and ``active_slabs == num_slabs``;
    ``objsize`` is ``s->size``, the full object size with metadata and alignment.
    """

    name: str
    active_objs: int
    num_objs: int
    objsize: int
    objperslab: int
    pagesperslab: int
    active_slabs: int
    num_slabs: int
    limit: int = 0
    batchcount: int = 0
    sharedfactor: int = 0
    sharedavail: int = 0


class KmemCache:
    """``struct kmem_cache``: a pool of equal objects, made with
    :meth:`SlabAllocator.kmem_cache_create`.

    Attributes:
        name: the name /proc/slabinfo shows.
        object_size: the size asked for (``s->object_size``).
        size: an object's full size in the slab, with alignment and metadata
            (``s->size``, slabinfo's objsize).
        align: the alignment of the objects.
        flags: the cache flags, including those ``slub_debug`` added.
        order: the page order of its slabs; ``objects_per_slab``: objects in such a slab.
        min_order: the fallback order when a slab of ``order`` cannot be had.
        min_partial: empty slabs kept on the partial list before they are released.
        inuse: bytes of an object in use, with the right red zone (``s->inuse``).
        offset: where SLUB keeps the free pointer in a free object (``s->offset``).
        red_left_pad: the red zone before each object.
        reclaimable: SLAB_RECLAIM_ACCOUNT: its pages count as SReclaimable.
    """

    __slots__ = (
        "_lock_until",
        "align",
        "alloc_fastpath",
        "alloc_from_partial",
        "alloc_refill",
        "alloc_slab",
        "alloc_slowpath",
        "allocflags",
        "checks",
        "cpu_freelist",
        "cpu_slab",
        "ctor",
        "deactivate_empty",
        "dead",
        "debug",
        "flags",
        "free_add_partial",
        "free_fastpath",
        "free_frozen",
        "free_remove_partial",
        "free_slab",
        "free_slowpath",
        "init_on_setup",
        "inuse",
        "ksize",
        "min_objects",
        "min_order",
        "min_partial",
        "name",
        "nr_pages",
        "nr_slabs",
        "object_size",
        "objects_per_slab",
        "offset",
        "order",
        "order_fallback",
        "orig_sizes",
        "partial",
        "poison",
        "reclaimable",
        "red_left_pad",
        "red_zone",
        "size",
        "total_objects",
        "tracks_orig_size",
    )

    def __init__(
        self,
        name: str,
        object_size: int,
        align: int,
        flags: int,
        ctor: Callable[[int], object] | None,
        nr_cpus: int,
        ptr_size: int,
    ) -> None:
        self.name = name
        self.object_size = object_size
        self.flags = flags
        self.ctor = ctor
        self.align = calculate_alignment(flags, align, object_size, ptr_size)
        self._calculate_sizes(ptr_size, nr_cpus)
        self.debug = bool(flags & SLAB_DEBUG_FLAGS)  # kmem_cache_debug()
        self.checks = bool(flags & SLAB_CONSISTENCY_CHECKS)
        self.red_zone = bool(flags & SLAB_RED_ZONE)
        self.init_on_setup = self.poison or bool(flags & (SLAB_STORE_USER | SLAB_RED_ZONE))
        self.min_partial = min_partial_for(self.size)
        self.reclaimable = bool(flags & SLAB_RECLAIM_ACCOUNT)
        self.allocflags = _GFP_COMP if self.order else 0
        if flags & SLAB_CACHE_DMA:
            self.allocflags |= G.GFP_DMA
        if flags & SLAB_CACHE_DMA32:
            self.allocflags |= G.GFP_DMA32
        if self.reclaimable:
            self.allocflags |= _GFP_RECLAIMABLE
        self.ksize = self._slab_ksize()
        self.cpu_slab: list[Slab | None] = [None] * nr_cpus
        self.cpu_freelist: list[list[int]] = [[] for _ in range(nr_cpus)]
        self.partial: OrderedDict[Slab, None] = OrderedDict()
        self.orig_sizes: dict[int, int] = {}
        self.nr_slabs = self.total_objects = self.nr_pages = 0
        self.dead = False
        self._lock_until = 0
        # SLUB's stat items (CONFIG_SLUB_STATS), lower case.
        self.alloc_fastpath = self.alloc_slowpath = self.free_fastpath = 0
        self.free_slowpath = self.free_frozen = self.alloc_from_partial = 0
        self.alloc_refill = self.alloc_slab = self.free_slab = self.order_fallback = 0
        self.free_add_partial = self.free_remove_partial = self.deactivate_empty = 0

    def _calculate_sizes(self, ptr_size: int, nr_cpus: int) -> None:
        """``calculate_sizes()``: the object's layout and the slab order."""
        flags = self.flags
        size = _align_up(self.object_size, ptr_size)
        self.poison = bool(flags & SLAB_POISON) and not (
            flags & SLAB_TYPESAFE_BY_RCU or self.ctor
        )  # __OBJECT_POISON
        if flags & SLAB_RED_ZONE and size == self.object_size:
            size += ptr_size  # room for a right red zone
        self.inuse = size
        # slub_debug_orig_size(): kmalloc caches that track the size asked for.
        self.tracks_orig_size = bool(flags & SLAB_STORE_USER and flags & SLAB_KMALLOC)
        if (
            self.tracks_orig_size
            or flags & (SLAB_TYPESAFE_BY_RCU | SLAB_POISON)
            or (flags & SLAB_RED_ZONE and self.object_size < ptr_size)
            or self.ctor
        ):
            self.offset = size  # the free pointer goes behind the object
            size += ptr_size
        else:
            self.offset = (self.object_size // 2) & ~(ptr_size - 1)
        if flags & SLAB_STORE_USER:
            size += 2 * _track_size(ptr_size)
            if flags & SLAB_KMALLOC:
                size += 4  # the original kmalloc size
        self.red_left_pad = 0
        if flags & SLAB_RED_ZONE:
            size += ptr_size
            self.red_left_pad = _align_up(ptr_size, self.align)
            size += self.red_left_pad
        size = _align_up(size, self.align)
        self.size = size
        self.order = calculate_order(size, nr_cpus)
        self.objects_per_slab = order_objects(self.order, size)
        self.min_order = get_order(size)
        self.min_objects = order_objects(self.min_order, size)

    def _slab_ksize(self) -> int:
        """``slab_ksize()``: how much of an object a kmalloc user may use."""
        if self.flags & (SLAB_RED_ZONE | SLAB_POISON):
            return self.object_size
        if self.flags & (SLAB_TYPESAFE_BY_RCU | SLAB_STORE_USER):
            return self.inuse
        return self.size

    def __repr__(self) -> str:
        return (
            f"<KmemCache {self.name} object_size={self.object_size} size={self.size} "
            f"order={self.order} objects_per_slab={self.objects_per_slab}>"
        )

    # ------------------------------------------------------------------ slabinfo

    @property
    def pages_per_slab(self) -> int:
        return 1 << self.order

    @property
    def num_slabs(self) -> int:
        """Slabs the cache holds (``node_nr_slabs``); under SLUB all of them are active."""
        return self.nr_slabs

    @property
    def num_objs(self) -> int:
        """Objects in all its slabs (``node_nr_objs``)."""
        return self.total_objects

    @property
    def active_objs(self) -> int:
        """slabinfo's active_objs: ``num_objs`` minus the free objects on the partial list.

        As in Linux, free objects of the per-CPU slabs count as active.
        """
        return self.total_objects - sum(s.objects - s.inuse for s in self.partial)

    @property
    def nr_allocated(self) -> int:
        """Objects allocated and not freed (exact, unlike ``active_objs``)."""
        return self.alloc_fastpath + self.alloc_slowpath - self.free_fastpath - self.free_slowpath

    @property
    def nr_partial(self) -> int:
        return len(self.partial)

    def slabinfo(self) -> SlabInfo:
        """The numbers of this cache's /proc/slabinfo line (``get_slabinfo()``)."""
        return SlabInfo(
            name=self.name,
            active_objs=self.active_objs,
            num_objs=self.total_objects,
            objsize=self.size,
            objperslab=self.objects_per_slab,
            pagesperslab=1 << self.order,
            active_slabs=self.nr_slabs,
            num_slabs=self.nr_slabs,
        )
