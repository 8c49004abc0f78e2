"""SLUB debugging (``slub_debug``, the CONFIG_SLUB_DEBUG half of mm/slub.c): poisoning,
red zones and the checks that report damage in SLUB's words.

These are plain functions over RAM and a cache's layout; the allocator
(:mod:`hwsim.kernel.slab`) calls them and keeps the log and the error count.

What follows Linux (x86, 4 KiB pages, v6.8):

- poisoning and red zones are written into RAM as ``init_object()`` writes them: a new slab
  is filled with POISON_INUSE (0x5a) under SLAB_POISON, then each object gets POISON_FREE
  (0x6b) with POISON_END (0xa5) as its last byte, red zones SLUB_RED_INACTIVE (0xbb); an
  allocated object keeps its 0x6b/0xa5 poison (SLUB, unlike the old SLAB, does not refill it
  with 0x5a) and its red zones become SLUB_RED_ACTIVE (0xcc); for kmalloc caches with
  SLAB_STORE_USER the bytes between the size asked and the object size are red zone too;
- with SLAB_CONSISTENCY_CHECKS, red zones and poison are checked on free and on allocation;
  damage is logged in SLUB's words ("BUG kmalloc-64 (Not tainted): Right Redzone
  overwritten", "FIX kmalloc-64: Restoring ...") and repaired; an object whose red zone was
  damaged is not freed ("Object at 0x... not freed"), as in Linux.

Where it differs on purpose:

- a detected use-after-free on allocation is logged and repaired, and the object is handed
  out (Linux also marks the whole slab as used and takes another one).
"""

from __future__ import annotations

from ..devices.ram import PhysMemory
from ..units import PAGE_SIZE
from .slab_common import (
    SLAB_CONSISTENCY_CHECKS,
    SLAB_POISON,
    SLAB_RED_ZONE,
    SLAB_STORE_USER,
    SLAB_TRACE,
    KmemCache,
    Slab,
)

# What a bare "slub_debug" on the command line turns on (FZPU).
DEBUG_DEFAULT_FLAGS = SLAB_CONSISTENCY_CHECKS | SLAB_RED_ZONE | SLAB_POISON | SLAB_STORE_USER
_SLUB_DEBUG_LETTERS = {
    "F": SLAB_CONSISTENCY_CHECKS,
    "Z": SLAB_RED_ZONE,
    "P": SLAB_POISON,
    "U": SLAB_STORE_USER,
    "T": SLAB_TRACE,
}

# Poison bytes (include/linux/poison.h).
POISON_INUSE = 0x5A
POISON_FREE = 0x6B
POISON_END = 0xA5
SLUB_RED_INACTIVE = 0xBB
SLUB_RED_ACTIVE = 0xCC


def parse_slub_debug(value: bool | str) -> int:
    """The cache flags a ``slub_debug`` boot option adds to every cache.

    ``True`` (a bare ``slub_debug``) means FZPU; a string picks letters: F (consistency
    checks), Z (red zones), P (poisoning), U (store user), T (trace); ``"-"`` or ``False``
    turns debugging off.
    """
    if isinstance(value, bool):
        return DEBUG_DEFAULT_FLAGS if value else 0
    if not isinstance(value, str):
        raise TypeError(f"slub_debug is a bool or a string of FZPUT letters, got {value!r}")
    if value in ("", "1"):
        return DEBUG_DEFAULT_FLAGS
    flags = 0
    for letter in value.upper():
        if letter == "-":
            continue
        if letter not in _SLUB_DEBUG_LETTERS:
            raise ValueError(f"slub_debug: unknown option {letter!r} (known: FZPUT and -)")
        flags |= _SLUB_DEBUG_LETTERS[letter]
    return flags


def init_object(
    ram: PhysMemory, page_offset: int, cache: KmemCache, addr: int, val: int, orig_size: int
) -> None:
    """``init_object()``: poison the object and set its red zones to ``val``."""
    poison_size = cache.object_size
    if cache.red_zone and cache.tracks_orig_size and val == SLUB_RED_ACTIVE:
        poison_size = orig_size
    phys = addr - page_offset
    poison = bytes([POISON_FREE]) * (poison_size - 1) + bytes([POISON_END])
    rz = bytes([val])
    if cache.red_zone and cache.poison:  # one write from the left red zone to inuse
        left, right = rz * cache.red_left_pad, rz * (cache.inuse - poison_size)
        ram.write(phys - cache.red_left_pad, left + poison + right)
    elif cache.red_zone:
        ram.write(phys - cache.red_left_pad, rz * cache.red_left_pad)
        ram.write(phys + poison_size, rz * (cache.inuse - poison_size))
    elif cache.poison:
        ram.write(phys, poison)


def setup_slab_debug(ram: PhysMemory, page_offset: int, cache: KmemCache, slab: Slab) -> int:
    """``setup_slab_debug()`` and ``setup_object_debug()`` for a new slab.

    Returns:
        The bytes written (the whole slab), for the caller to charge.
    """
    nbytes = PAGE_SIZE << slab.order
    phys = slab.base - page_offset
    if cache.flags & SLAB_POISON:
        image = bytearray([POISON_INUSE]) * nbytes
    else:
        image = bytearray(ram.read(phys, nbytes))
    size, rlp, inuse = cache.size, cache.red_left_pad, cache.inuse
    rz = bytes([SLUB_RED_INACTIVE])
    poison = bytes([POISON_FREE]) * (cache.object_size - 1) + bytes([POISON_END])
    for i in range(slab.objects):
        start = i * size + rlp
        if cache.red_zone:
            image[start - rlp : start] = rz * rlp
            image[start + cache.object_size : start + inuse] = rz * (inuse - cache.object_size)
        if cache.poison:
            image[start : start + cache.object_size] = poison
    ram.write(phys, image)
    return nbytes


def check_object(
    ram: PhysMemory,
    page_offset: int,
    log: list[str],
    cache: KmemCache,
    slab: Slab,
    addr: int,
    val: int,
) -> int:
    """``check_object()``: are red zones and poison intact? Repairs and reports damage.

    Returns:
        How many damaged areas were reported (0: the object is intact); each is one BUG
        report in ``log``.
    """
    bad = 0
    obj_size = cache.object_size

    def check(what: str, start: int, value: int, nbytes: int) -> None:
        nonlocal bad
        bad += not _check_bytes(ram, page_offset, log, cache, slab, what, start, value, nbytes)

    if cache.red_zone:
        check("Left Redzone", addr - cache.red_left_pad, val, cache.red_left_pad)
        check("Right Redzone", addr + obj_size, val, cache.inuse - obj_size)
        if cache.tracks_orig_size and val == SLUB_RED_ACTIVE:
            orig = cache.orig_sizes.get(addr, obj_size)
            if obj_size > orig:
                check("kmalloc Redzone", addr + orig, val, obj_size - orig)
    elif cache.flags & SLAB_POISON and obj_size < cache.inuse:
        pad = cache.inuse - obj_size
        check("Alignment padding", addr + obj_size, POISON_INUSE, pad)
    if cache.poison and val != SLUB_RED_ACTIVE:
        check("Poison", addr, POISON_FREE, obj_size - 1)
        check("End Poison", addr + obj_size - 1, POISON_END, 1)
    return bad


def _check_bytes(
    ram: PhysMemory,
    page_offset: int,
    log: list[str],
    cache: KmemCache,
    slab: Slab,
    what: str,
    start: int,
    value: int,
    nbytes: int,
) -> bool:
    """``check_bytes_and_report()``."""
    if nbytes <= 0:
        return True
    data = ram.read(start - page_offset, nbytes)
    expected = bytes([value]) * nbytes
    if data == expected:
        return True
    first = next(i for i in range(nbytes) if data[i] != value)
    end = nbytes
    while end > first and data[end - 1] == value:
        end -= 1
    fault, last = start + first, start + end - 1
    slab_bug(log, cache, f"{what} overwritten")
    log.append(
        f"{fault:#x}-{last:#x} @offset={fault - slab.base}. First byte "
        f"{data[first]:#x} instead of {value:#x}"
    )
    slab_fix(log, cache, f"Restoring {what} {fault:#x}-{last:#x}={value:#x}")
    ram.write(fault - page_offset, bytes([value]) * (end - first))
    return False


def slab_bug(log: list[str], cache: KmemCache, bug: str) -> None:
    """``slab_bug()``: the head of a BUG report."""
    log.append("=" * 77)
    log.append(f"BUG {cache.name} (Not tainted): {bug}")
    log.append("-" * 77)


def slab_fix(log: list[str], cache: KmemCache, fix: str) -> None:
    """``slab_fix()``: what was done about it."""
    log.append(f"FIX {cache.name}: {fix}")
