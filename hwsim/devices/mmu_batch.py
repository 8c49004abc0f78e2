"""The MMU's batch path: a trace of data accesses translated in one go.

:meth:`MmuModel.translate_many <hwsim.devices.mmu.MmuModel.translate_many>` is the public
entry point (its docstring says what a batch means); the work is done here, by plain
functions that take the model. A trace is cut into runs (consecutive accesses to one 4 KiB
page with the same ``write``): each run's first access goes through the model's
single-access path (TLB lookup, walk on a miss), the rest are hits on the entry it left. In
kernel mode without PCID a run first tries the TLB's hit path, and the runs that stay inside
the (large) page the previous run hit are found with a few numpy calls (:func:`_extent`).
Nothing here differs from calling :meth:`~hwsim.devices.mmu.MmuModel.translate` for each
access in turn - the property test in tests/devices/test_mmu.py checks exactly that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from .pagefault import GeneralProtectionFault, PageFault
from .paging import _PAGE_DIRTY, _PAGE_RW
from .tlb import as_addresses

if TYPE_CHECKING:
    # For the annotations only: mmu.py imports this module to delegate to it.
    from .mmu import MmuModel

_EMPTY = np.zeros(0, dtype=np.int64)


def translate_many(
    mmu: MmuModel,
    vaddrs: npt.ArrayLike,
    writes: npt.ArrayLike,
    user: bool = False,
    *,
    walk_log: list[tuple[int, int, bool]] | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """:meth:`MmuModel.translate_many <hwsim.devices.mmu.MmuModel.translate_many>` for
    ``mmu``: the arguments, results and exceptions are documented there."""
    va = as_addresses(vaddrs)
    n = len(va)
    w = np.asarray(writes)
    if w.dtype != np.bool_:
        raise TypeError(f"writes must be bools, got dtype {w.dtype}")
    if w.ndim == 0:
        w = np.full(n, bool(w))
    elif w.shape != (n,):
        raise ValueError(f"writes has shape {w.shape}; {n} addresses need ({n},)")
    mmu._check_access(False, user, False)
    if n == 0:
        return _EMPTY.copy(), _EMPTY.copy()
    if mmu._width == 16:
        top = va >> np.uint64(47)
        bad = np.flatnonzero((top != 0) & (top != 0x1FFFF))
        if len(bad):
            i = int(bad[0])
            raise GeneralProtectionFault(
                f"general protection fault, probably for non-canonical address "
                f"{int(va[i]):#x}: 0000 [#1] (vaddrs[{i}])",
                address=int(va[i]),
            )
    else:
        bad = np.flatnonzero(va >= np.uint64(mmu._va_limit))
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"vaddrs[{i}] = {int(va[i]):#x} is not a 32-bit address")
    pages = va >> np.uint64(12)
    change = (pages[1:] != pages[:-1]) | (w[1:] != w[:-1])
    starts = np.concatenate((np.zeros(1, dtype=np.int64), np.flatnonzero(change) + 1))
    lengths = np.diff(np.append(starts, n))
    run_va = va[starts]
    run_w = w[starts]
    nruns = len(starts)
    run_phys = np.zeros(nruns, dtype=np.int64)
    run_lat = np.full(nruns, mmu.tlb_latency, dtype=np.int64)
    run_va_l, run_w_l = run_va.tolist(), run_w.tolist()
    lengths_l, starts_l = lengths.tolist(), starts.tolist()
    access = mmu._access
    tail_hits = 0
    # Kernel-mode runs without PCID first try the TLB's hit path (one call, nothing
    # changed on a miss); a write needs RW, and DIRTY when the MMU sets it.
    hit_for = None if user or mmu.tlb.pcid else mmu.tlb.hit_for
    w_required = _PAGE_RW | (_PAGE_DIRTY if mmu.set_accessed_dirty else 0)
    lo = hi = base = 0  # the entry the last run hit: [lo, hi) -> base
    ok_w = large = False
    mmu._walk_log = walk_log
    i = 0
    try:
        while i < nruns:
            v, wr, length, first = run_va_l[i], run_w_l[i], lengths_l[i], starts_l[i]
            mmu._walk_pos = first
            if hit_for is not None:
                # Runs are cut at 4 KiB pages, but one entry may map a 2 MiB page: the
                # runs inside the entry the previous run hit are hits on it too, and
                # change nothing (it is already the most recent of its set).
                hit = lo <= v < hi and (ok_w or not wr)
                if not hit:
                    e = hit_for(v, 0, w_required if wr else 0)
                    if e is not None:
                        lo, hi, base = e.vaddr, e.vaddr + e.page_size, e.phys
                        ok_w = e.flags & w_required == w_required
                        large = e.page_size > 4096
                        tail_hits -= 1  # hit_for counted this lookup's hit
                        hit = True
                    else:
                        lo = hi = 0
                if hit:
                    k = _extent(run_va, run_w, i, lo, hi, ok_w) if large else 1
                    seg = slice(i, i + k)
                    run_phys[seg] = (run_va[seg] - np.uint64(lo)).astype(np.int64) + base
                    tail_hits += length if k == 1 else int(lengths[seg].sum())
                    i += k
                    continue
            try:
                phys, lat, _ = access(v, wr, user, False, None)
            except PageFault as fault:
                mmu.tlb.record_hits(tail_hits)
                fault.index = first
                fault.translated = np.repeat(run_phys[:i], lengths[:i]) + (
                    va[:first] - np.repeat(run_va[:i], lengths[:i])
                ).astype(np.int64)
                raise
            run_phys[i] = phys
            run_lat[i] = lat
            tail_hits += length - 1
            i += 1
    finally:
        mmu._walk_log = None
    mmu.tlb.record_hits(tail_hits)
    offsets = (va - np.repeat(run_va, lengths)).astype(np.int64)
    phys_out = np.repeat(run_phys, lengths) + offsets
    latencies = np.full(n, mmu.tlb_latency, dtype=np.int64)
    latencies[starts] = run_lat
    return phys_out, latencies


def _extent(
    run_va: npt.NDArray[np.uint64],
    run_w: npt.NDArray[np.bool_],
    i: int,
    lo: int,
    hi: int,
    ok_w: bool,
) -> int:
    """How many runs from ``i`` on fall inside ``[lo, hi)`` (and, unless ``ok_w``, are
    reads): those hit the TLB entry run ``i`` hit. Found in growing windows, so that a
    trace staying inside one large page costs a few numpy calls, not a step per run."""
    n = len(run_va)
    j, window = i + 1, 32
    ulo, uhi = np.uint64(lo), np.uint64(hi)
    while j < n:
        seg = run_va[j : j + window]
        inside = (seg >= ulo) & (seg < uhi)
        if not ok_w:
            inside &= ~run_w[j : j + window]
        if inside.all():
            j += len(seg)
            window *= 2
            continue
        j += int(np.argmin(inside))
        break
    return j - i
