"""GFP flags (include/linux/gfp_types.h, v6.8 values) and what they mean to the allocators.

Flags are plain ints combined with ``|``, exactly as in C. :func:`format_gfp` prints them the
way the kernel's ``%pGg`` does in allocation-failure reports: ``0xcc0(GFP_KERNEL)``.
"""

from __future__ import annotations

__GFP_DMA = 0x01
__GFP_HIGHMEM = 0x02
__GFP_DMA32 = 0x04
__GFP_MOVABLE = 0x08
__GFP_RECLAIMABLE = 0x10
__GFP_HIGH = 0x20
__GFP_IO = 0x40
__GFP_FS = 0x80
__GFP_ZERO = 0x100
__GFP_DIRECT_RECLAIM = 0x400
__GFP_KSWAPD_RECLAIM = 0x800
__GFP_WRITE = 0x1000
__GFP_NOWARN = 0x2000
__GFP_RETRY_MAYFAIL = 0x4000
__GFP_NOFAIL = 0x8000
__GFP_NORETRY = 0x10000
__GFP_MEMALLOC = 0x20000
__GFP_COMP = 0x40000
__GFP_NOMEMALLOC = 0x80000
__GFP_HARDWALL = 0x100000
__GFP_THISNODE = 0x200000
__GFP_ACCOUNT = 0x400000

__GFP_RECLAIM = __GFP_DIRECT_RECLAIM | __GFP_KSWAPD_RECLAIM
GFP_ATOMIC = __GFP_HIGH | __GFP_KSWAPD_RECLAIM
GFP_KERNEL = __GFP_RECLAIM | __GFP_IO | __GFP_FS
GFP_KERNEL_ACCOUNT = GFP_KERNEL | __GFP_ACCOUNT
GFP_NOWAIT = __GFP_KSWAPD_RECLAIM
GFP_NOIO = __GFP_RECLAIM
GFP_NOFS = __GFP_RECLAIM | __GFP_IO
GFP_USER = __GFP_RECLAIM | __GFP_IO | __GFP_FS | __GFP_HARDWALL
GFP_DMA = __GFP_DMA
GFP_DMA32 = __GFP_DMA32
GFP_HIGHUSER = GFP_USER | __GFP_HIGHMEM
GFP_HIGHUSER_MOVABLE = GFP_HIGHUSER | __GFP_MOVABLE
GFP_ZERO = __GFP_ZERO
GFP_NOWARN = __GFP_NOWARN

GFP_ZONEMASK = __GFP_DMA | __GFP_HIGHMEM | __GFP_DMA32 | __GFP_MOVABLE
# mm/internal.h: what an allocator passes on from its caller's mask when it allocates for it
# (slab pages, vmalloc's page array); zone and migratetype bits come from the allocator.
GFP_RECLAIM_MASK = (
    __GFP_RECLAIM
    | __GFP_HIGH
    | __GFP_IO
    | __GFP_FS
    | __GFP_NOWARN
    | __GFP_RETRY_MAYFAIL
    | __GFP_NOFAIL
    | __GFP_NORETRY
    | __GFP_MEMALLOC
    | __GFP_NOMEMALLOC
)
GFP_CONSTRAINT_MASK = __GFP_HARDWALL | __GFP_THISNODE
_ALL_BITS = (1 << 23) - 1

# The names %pGg prints, in the kernel's order (include/trace/events/mmflags.h): composite
# masks first, then single bits; each matching mask is printed once and removed.
_GFP_NAMES: tuple[tuple[int, str], ...] = (
    (GFP_HIGHUSER_MOVABLE, "GFP_HIGHUSER_MOVABLE"),
    (GFP_HIGHUSER, "GFP_HIGHUSER"),
    (GFP_USER, "GFP_USER"),
    (GFP_KERNEL_ACCOUNT, "GFP_KERNEL_ACCOUNT"),
    (GFP_KERNEL, "GFP_KERNEL"),
    (GFP_NOFS, "GFP_NOFS"),
    (GFP_ATOMIC, "GFP_ATOMIC"),
    (GFP_NOIO, "GFP_NOIO"),
    (GFP_NOWAIT, "GFP_NOWAIT"),
    (GFP_DMA, "GFP_DMA"),
    (__GFP_HIGHMEM, "__GFP_HIGHMEM"),
    (GFP_DMA32, "GFP_DMA32"),
    (__GFP_HIGH, "__GFP_HIGH"),
    (__GFP_IO, "__GFP_IO"),
    (__GFP_FS, "__GFP_FS"),
    (__GFP_NOWARN, "__GFP_NOWARN"),
    (__GFP_RETRY_MAYFAIL, "__GFP_RETRY_MAYFAIL"),
    (__GFP_NOFAIL, "__GFP_NOFAIL"),
    (__GFP_NORETRY, "__GFP_NORETRY"),
    (__GFP_COMP, "__GFP_COMP"),
    (__GFP_ZERO, "__GFP_ZERO"),
    (__GFP_NOMEMALLOC, "__GFP_NOMEMALLOC"),
    (__GFP_MEMALLOC, "__GFP_MEMALLOC"),
    (__GFP_HARDWALL, "__GFP_HARDWALL"),
    (__GFP_THISNODE, "__GFP_THISNODE"),
    (__GFP_RECLAIMABLE, "__GFP_RECLAIMABLE"),
    (__GFP_MOVABLE, "__GFP_MOVABLE"),
    (__GFP_ACCOUNT, "__GFP_ACCOUNT"),
    (__GFP_WRITE, "__GFP_WRITE"),
    (__GFP_RECLAIM, "__GFP_RECLAIM"),
    (__GFP_DIRECT_RECLAIM, "__GFP_DIRECT_RECLAIM"),
    (__GFP_KSWAPD_RECLAIM, "__GFP_KSWAPD_RECLAIM"),
)

# Migrate types (include/linux/mmzone.h), in the kernel's order.
MIGRATE_UNMOVABLE = 0
MIGRATE_MOVABLE = 1
MIGRATE_RECLAIMABLE = 2
MIGRATE_PCPTYPES = 3
MIGRATE_TYPE_NAMES = ("Unmovable", "Movable", "Reclaimable")


def check_gfp(gfp: object) -> int:
    """Validate a gfp mask: an int made of known bits.

    Raises:
        TypeError: not an int.
        ValueError: unknown bits, or two zone modifiers at once (the kernel BUGs on that).
    """
    if isinstance(gfp, bool) or not isinstance(gfp, int):
        raise TypeError(f"gfp flags are an int such as GFP_KERNEL, got {gfp!r}")
    if gfp < 0 or gfp & ~_ALL_BITS:
        raise ValueError(f"unknown gfp flags {gfp:#x}")
    zones = gfp & (__GFP_DMA | __GFP_DMA32 | __GFP_HIGHMEM)
    if zones & (zones - 1):
        raise ValueError(f"gfp {format_gfp(gfp)} asks for two zones at once (GFP_ZONE_BAD)")
    return gfp


def gfp_migratetype(gfp: int) -> int:
    """``gfp_migratetype()``: which free lists an allocation prefers."""
    if gfp & __GFP_MOVABLE:
        return MIGRATE_MOVABLE
    if gfp & __GFP_RECLAIMABLE:
        return MIGRATE_RECLAIMABLE
    return MIGRATE_UNMOVABLE


def format_gfp(gfp: int) -> str:
    """``%#x(%pGg)``: the mask in hex and by name, as page-allocation-failure reports print it.

    >>> format_gfp(GFP_KERNEL | __GFP_NOWARN | __GFP_ZERO)
    '0x2dc0(GFP_KERNEL|__GFP_NOWARN|__GFP_ZERO)'
    """
    names: list[str] = []
    rest = gfp
    for mask, name in _GFP_NAMES:
        if rest and rest & mask == mask:
            names.append(name)
            rest &= ~mask
    if rest:
        names.append(f"{rest:#x}")
    return f"{gfp:#x}({'|'.join(names) or 'none'})"
