"""The arithmetic of the access path: pieces, lines and the trace a batch sends to the L1.

Pure functions over numpy arrays, shared by the CPU's single and batched paths (no state, no
trio). A CPU access of any size at any virtual address becomes:

1. *pieces*, one per 4 KiB page it touches: each is translated on its own (an access that
   crosses a page boundary can fault on its second page, or find it elsewhere in RAM);
2. *lines*, one per cache line each piece touches, looked up in the L1 one after another.

A batch is translated in one go by the MMU (:meth:`~hwsim.devices.mmu.MmuModel.translate_many`),
which records the walker's memory accesses instead of timing them; :func:`plan_trace` then
puts those accesses into the line trace just before the data lines of the piece whose TLB
miss caused them, so that the L1 sees walks and data in the order the hardware issues them
- one trace, one dependent chain, the same counts and cycles as the accesses made one by one.
"""

from __future__ import annotations

import attrs
import numpy as np
import numpy.typing as npt

from ..units import PAGE_SHIFT, PAGE_SIZE

_EMPTY_I = np.zeros(0, dtype=np.int64)


def split_pages(vaddr: int, size: int) -> list[tuple[int, int, int]]:
    """The pieces of one access: ``(vaddr, size, offset into the access)`` per page.

    >>> [(hex(v), n, o) for v, n, o in split_pages(0x1FFC, 8)]
    [('0x1ffc', 4, 0), ('0x2000', 4, 4)]
    """
    out = []
    pos = 0
    while pos < size:
        va = vaddr + pos
        n = min(size - pos, PAGE_SIZE - (va & (PAGE_SIZE - 1)))
        out.append((va, n, pos))
        pos += n
    return out


@attrs.frozen(eq=False)
class Pieces:
    """A batch cut at page boundaries: piece ``k`` belongs to access ``owner[k]``."""

    vaddrs: npt.NDArray[np.uint64]
    sizes: npt.NDArray[np.int64]
    writes: npt.NDArray[np.bool_]
    owner: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.vaddrs)


def split_batch(
    vaddrs: npt.NDArray[np.uint64], sizes: npt.NDArray[np.int64], writes: npt.NDArray[np.bool_]
) -> Pieces:
    """Cut every access of a batch at page boundaries (most accesses are one piece)."""
    n = len(vaddrs)
    if n == 0:
        return Pieces(vaddrs, sizes, writes, _EMPTY_I)
    first = vaddrs >> np.uint64(PAGE_SHIFT)
    last = (vaddrs + (sizes - 1).astype(np.uint64)) >> np.uint64(PAGE_SHIFT)
    count = (last - first).astype(np.int64) + 1
    if int(count.max()) == 1:
        return Pieces(vaddrs, sizes, writes, np.arange(n, dtype=np.int64))
    owner = np.repeat(np.arange(n, dtype=np.int64), count)
    k = np.arange(len(owner), dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
    page = np.repeat(first, count) + k.astype(np.uint64)
    start = np.maximum(np.repeat(vaddrs, count), page << np.uint64(PAGE_SHIFT))
    end = np.minimum(
        np.repeat(vaddrs + sizes.astype(np.uint64), count),
        (page + np.uint64(1)) << np.uint64(PAGE_SHIFT),
    )
    return Pieces(start, (end - start).astype(np.int64), writes[owner], owner)


@attrs.frozen(eq=False)
class TracePlan:
    """The line trace of a batch, walker accesses included, and how to read its result.

    Attributes:
        lines: a byte address in each line accessed, in order.
        writes: which entries are stores.
        gaps: cycles before each entry (the TLB lookup, at each piece's first entry; and
            the walk itself when the walker bypasses the caches).
        owner: the access each entry belongs to.
        walker: which entries are the walker's (entry reads, A/D updates).
        bypass_walk_cycles: walk cycles spent outside the caches (bypass mode), in gaps.
        tail_cycles: the bypassing walk of a faulting piece, which has no entry to carry it.
    """

    lines: npt.NDArray[np.int64]
    writes: npt.NDArray[np.bool_]
    gaps: npt.NDArray[np.int64]
    owner: npt.NDArray[np.int64]
    walker: npt.NDArray[np.bool_]
    bypass_walk_cycles: int
    tail_cycles: int = 0

    def latencies(self, entry_latencies: npt.NDArray[np.int64], n: int) -> npt.NDArray[np.int64]:
        """Per access: the sum of its entries' latencies (gaps included)."""
        if not len(entry_latencies):
            return np.zeros(n, dtype=np.int64)
        return np.bincount(self.owner, weights=entry_latencies, minlength=n).astype(np.int64)

    def walk_cycles(self, entry_latencies: npt.NDArray[np.int64]) -> int:
        """What the walks cost: their entries' latencies without the TLB lookups before
        them, plus the bypass cycles."""
        w = self.walker
        if not w.any():
            return self.bypass_walk_cycles
        spent = int(entry_latencies[w].sum()) - int(self.gaps[w].sum())
        return spent + self.bypass_walk_cycles


def plan_trace(
    pieces: Pieces,
    phys: npt.NDArray[np.int64],
    walk_log: list[tuple[int, int, bool]],
    *,
    line: int,
    tlb_latency: int,
    bypass_cycles: int | None = None,
) -> TracePlan:
    """The trace for the first ``len(phys)`` pieces of a batch.

    Args:
        pieces: the batch, cut at pages.
        phys: the physical address of each translated piece (a prefix of ``pieces`` when the
            translation stopped at a fault).
        walk_log: the walker's accesses, ``(piece, phys, is_write)``, in order.
        line: the L1's line size.
        tlb_latency: cycles of every TLB lookup (one per piece).
        bypass_cycles: if the walker bypasses the caches, what one of its accesses costs
            (added to the gap of its piece); None: its accesses go through the L1.
    """
    k = len(phys)
    shift = line.bit_length() - 1
    sizes = pieces.sizes[:k]
    first = phys >> shift
    count = ((phys + sizes - 1) >> shift) - first + 1
    total = int(count.sum())
    piece_of = np.repeat(np.arange(k, dtype=np.int64), count)
    offs = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(count) - count, count)
    lines = (np.repeat(first, count) + offs) << shift
    writes = pieces.writes[:k][piece_of]
    walker = np.zeros(total, dtype=np.bool_)
    starts = np.cumsum(count) - count
    bypass_total = tail = 0
    bypass_gaps = None  # per piece: its walk's cycles, when the walker bypasses the caches
    if walk_log:
        w_piece = np.array([p for p, _, _ in walk_log], dtype=np.int64)
        if bypass_cycles is not None:
            per_piece = np.bincount(w_piece, minlength=k + 1)
            bypass_total = int(per_piece.sum()) * bypass_cycles
            bypass_gaps = per_piece[:k] * bypass_cycles
            # The faulting piece (k) has no entry to carry its walk: the CPU adds it.
            tail = int(per_piece[k]) * bypass_cycles
        else:
            w_addr = np.array([a for _, a, _ in walk_log], dtype=np.int64)
            w_write = np.array([wr for _, _, wr in walk_log], dtype=np.bool_)
            # Insert each piece's walk before its first data line; the faulting piece (k)
            # has no data lines: its walk goes at the end.
            at = np.append(starts, total)[w_piece]
            lines = np.insert(lines, at, w_addr)
            writes = np.insert(writes, at, w_write)
            piece_of = np.insert(piece_of, at, w_piece)
            walker = np.insert(walker, at, True)
    # The first entry of each piece pays the TLB lookup (a walk's first read, if it walked),
    # plus its walk when the walker bypasses the caches.
    gaps = np.zeros(len(lines), dtype=np.int64)
    gaps[np.flatnonzero(np.diff(np.append(-1, piece_of)) != 0)] = tlb_latency
    if bypass_gaps is not None:
        gaps[starts] += bypass_gaps
    return TracePlan(
        lines=lines,
        writes=writes,
        gaps=gaps,
        owner=pieces.owner[piece_of],
        walker=walker,
        bypass_walk_cycles=bypass_total,
        tail_cycles=tail,
    )
