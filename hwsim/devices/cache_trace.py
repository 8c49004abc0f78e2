"""The trace path of a cache level: many line accesses in one call, statistics and timing only.

:meth:`CacheModel.access_lines <hwsim.devices.cache.CacheModel.access_lines>` and
:meth:`~hwsim.devices.cache.CacheModel.timed_access_lines` delegate here. These functions are
the model's own hot loops, kept apart from :mod:`hwsim.devices.cache` for reading, not a
second API: they read and write a :class:`~hwsim.devices.cache.CacheModel`'s private state
(``_tags``, ``_free``, ``_line_of``, ``_dirty``, ``_loaded``, ``_data``, the counters) and
call its one-line methods (``_fetch``, ``_line_store``, ``_writeback``), the level below's
too where its hit paths are inlined. A change to how a level keeps its lines touches both.

- untimed, :func:`access_lines`: :func:`_run` takes a batch through one level, collecting
  what it asks of the level below, which then runs as one batch (:func:`_pass_down`).
- timed, :func:`timed_access_lines`: :func:`_chain` issues each access when the previous one
  completes, with the hit and the LRU/FIFO write-back miss paths inlined.

The loops were tuned (locals cached, one-line paths inlined); the tests check their counts
and latencies against one-by-one accesses and pycachesim.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from ..validate import check_int as _check_int

if TYPE_CHECKING:
    from .cache import CacheModel


def access_lines(
    cache: CacheModel, line_addrs: npt.NDArray[np.integer], is_write: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    """:meth:`CacheModel.access_lines <hwsim.devices.cache.CacheModel.access_lines>`:
    whether each access of the trace hit in ``cache``."""
    addrs, writes = _check_trace(cache, line_addrs, is_write)
    reqs = (addrs >> cache._shift << cache._shift) | writes
    return np.frombuffer(_trace(cache, reqs.tolist(), None), dtype=np.bool_)


def timed_access_lines(
    cache: CacheModel,
    line_addrs: npt.NDArray[np.integer],
    is_write: npt.NDArray[np.bool_],
    at: int,
    gaps: npt.NDArray[np.integer] | None = None,
) -> tuple[npt.NDArray[np.int64], int]:
    """:meth:`CacheModel.timed_access_lines
    <hwsim.devices.cache.CacheModel.timed_access_lines>`: ``(latencies, done)``."""
    addrs, writes = _check_trace(cache, line_addrs, is_write)
    _check_int("a cycle", at)
    n = len(addrs)
    gap64: npt.NDArray[np.int64] | None = None
    if gaps is not None:
        if not isinstance(gaps, np.ndarray) or gaps.dtype.kind not in "iu":
            raise TypeError(f"gaps must be a numpy integer array, got {gaps!r}")
        if gaps.shape != addrs.shape:
            raise ValueError(f"gaps has shape {gaps.shape}, the trace {addrs.shape}")
        if n and int(gaps.min()) < 0:
            raise ValueError(f"gaps must be >= 0, got {int(gaps.min())}")
        gap64 = gaps.astype(np.int64, copy=False)
    gaps = None  # from here on: gap64
    if cache.snoop is not None or not cache._write_back or n < 2:
        return _chain(cache, addrs, writes, gap64, None, None, at)
    # An access to the line the previous access touched is a hit that changes nothing
    # but the dirty bit (the line is already the most recent of its set): only the first
    # access of each run of one line goes through the loop; the others are summed up.
    lns = addrs >> cache._shift
    rep = np.zeros(n, dtype=np.bool_)
    np.equal(lns[1:], lns[:-1], out=rep[1:])
    if not rep.any():
        return _chain(cache, addrs, writes, gap64, None, None, at)
    each = np.full(n, cache.latency, dtype=np.int64)
    if gap64 is not None:
        each += gap64
    heads = np.flatnonzero(~rep)
    rep_cost = np.where(rep, each, 0)
    rep_writes = rep & writes
    tails = np.add.reduceat(rep_cost, heads)
    tail_writes = np.add.reduceat(rep_writes.astype(np.int64), heads) > 0
    head_lat, done = _chain(
        cache,
        addrs[heads],
        writes[heads],
        None if gap64 is None else gap64[heads],
        tails,
        tail_writes,
        at,
    )
    latencies = each
    latencies[heads] = head_lat
    stores = int(rep_writes.sum())
    loads = int(rep.sum()) - stores
    cache._loads += loads
    cache._stores += stores
    cache._load_hits += loads
    cache._store_hits += stores
    return latencies, done


def _check_trace(
    cache: CacheModel, addrs: object, writes: object
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """A trace's two arrays, checked: the line addresses as int64, the write flags."""
    if not isinstance(addrs, np.ndarray) or addrs.dtype.kind not in "iu":
        raise TypeError(f"line addresses must be a numpy integer array, got {addrs!r}")
    if not isinstance(writes, np.ndarray) or writes.dtype != np.bool_:
        raise TypeError(f"is_write must be a numpy bool array, got {writes!r}")
    if addrs.ndim != 1 or addrs.shape != writes.shape:
        raise ValueError(
            f"a trace is two 1-d arrays of equal length, got shapes {addrs.shape} "
            f"and {writes.shape}"
        )
    if len(addrs):
        lo, hi = int(addrs.min()), int(addrs.max())
        cache.ram.check_range(lo if lo < 0 else hi, 1)
    return addrs.astype(np.int64, copy=False), writes


# ------------------------------------------------------------------ untimed: batches


def _trace(cache: CacheModel, reqs: list[int], data: dict[int, bytes] | None) -> bytearray:
    """Run requests (stats only), then pass this level's requests down in one batch.

    A request is a byte address in the line, ``| 1`` for a store (lines are at least
    8 bytes, so bit 0 is free). Deferring the level below is exact: nothing it does
    changes this level. Requests that carry data (dirty lines from above) take the
    one-line path, after what is pending below has been passed on, so that the level
    below is up to date.
    """
    hits = bytearray(len(reqs))
    down: list[int] = []
    down_data: dict[int, bytes] = {}
    lo = 0
    for i, chunk in sorted(data.items()) if data else ():
        _run(cache, reqs, lo, i, hits, down, down_data)
        _pass_down(cache, down, down_data)
        cache._stores += 1
        cache._line_store(reqs[i] & ~1, len(chunk), chunk, None)
        lo = i + 1
    _run(cache, reqs, lo, len(reqs), hits, down, down_data)
    _pass_down(cache, down, down_data)
    return hits


def _pass_down(cache: CacheModel, reqs: list[int], data: dict[int, bytes]) -> None:
    if cache.next_level is not None:
        if reqs:
            _trace(cache.next_level, reqs, data)
    else:  # RAM: without timing, only the data of dirty lines matters
        for i, chunk in sorted(data.items()):
            cache.ram.write(reqs[i] & ~1, chunk)
    reqs.clear()
    data.clear()


def _run(
    cache: CacheModel,
    reqs: list[int],
    lo: int,
    hi: int,
    hits: bytearray,
    down: list[int],
    down_data: dict[int, bytes],
) -> None:
    """The hot loop of :func:`_trace`: ``CacheModel._fetch`` and ``_line_store`` inlined."""
    tags, free, line_of = cache._tags, cache._free, cache._line_of
    mask, shift, line, ways = cache._mask, cache._shift, cache.line, cache.ways
    dirty, loaded, data = cache._dirty, cache._loaded, cache._data
    lru, rnd, wb = cache._policy == "lru", cache._policy == "random", cache._write_back
    lru_store = lru and cache._lru_on_store
    rand = cache._rng.random
    put = down.append
    lh = lm = sh = sm = ev = nwb = 0
    for i, req in enumerate(reqs[lo:hi], lo):
        ln = req >> shift
        s = ln & mask
        d = tags[s]
        slot = d.get(ln)
        if slot is not None:
            hits[i] = 1
            if req & 1:
                sh += 1
                if lru_store:
                    d[ln] = d.pop(ln)
                if wb:
                    dirty[slot] = 1
                else:
                    put(ln << shift | 1)
            else:
                lh += 1
                if lru:
                    d[ln] = d.pop(ln)
            continue
        write = req & 1
        if write:
            sm += 1
            if not wb:
                put(ln << shift | 1)
                continue
        else:
            lm += 1
        put(ln << shift)  # the fill, then the victim (pycachesim's order)
        f = free[s]
        if f:
            slot = f.pop()
        else:
            if rnd:
                slot = s * ways + int(rand() * ways)
                victim = line_of[slot]
                del d[victim]
            else:
                victim = next(iter(d))
                slot = d.pop(victim)
            ev += 1
            if dirty[slot]:
                nwb += 1
                if loaded[slot]:
                    down_data[len(down)] = bytes(data[slot * line : slot * line + line])
                put(victim << shift | 1)
        d[ln] = slot
        line_of[slot] = ln
        loaded[slot] = 0
        dirty[slot] = write
    stores = sh + sm
    cache._loads += hi - lo - stores
    cache._stores += stores
    cache._load_hits += lh
    cache._load_misses += lm
    cache._store_hits += sh
    cache._store_misses += sm
    cache._evictions += ev
    cache._writebacks += nwb


# ------------------------------------------------------------------ timed: a chain


def _chain(
    cache: CacheModel,
    addrs: npt.NDArray[np.int64],
    writes: npt.NDArray[np.bool_],
    gaps: npt.NDArray[np.int64] | None,
    tails: npt.NDArray[np.int64] | None,
    tail_writes: npt.NDArray[np.bool_] | None,
    at: int,
) -> tuple[npt.NDArray[np.int64], int]:
    """The loop of :func:`timed_access_lines`: access ``i`` is issued when access
    ``i - 1`` (and its ``tails[i - 1]`` cycles of repeats) completed."""
    gap = None if gaps is None else gaps.tolist()
    tail = None if tails is None else tails.tolist()
    tail_w = None if tail_writes is None else tail_writes.tolist()
    latencies = [0] * len(addrs)
    shift, line, t, snoop = cache._shift, cache.line, at, cache.snoop
    # The hit path, and the miss path of an LRU/FIFO write-back level, inlined (write-back
    # caches without a snoop hook: the common case).
    fast = snoop is None and cache._write_back
    inline_miss = fast and cache._policy != "random"
    tags, mask, lat, dirty, loaded = (
        cache._tags,
        cache._mask,
        cache.latency,
        cache._dirty,
        cache._loaded,
    )
    free, line_of = cache._free, cache._line_of
    nxt = cache.next_level
    lru = cache._policy == "lru"
    lru_store = lru and cache._lru_on_store
    lh = sh = lm = sm = ev = 0
    # The level below's hit paths, inlined too when it is a plain write-back cache: a
    # fill that hits there, a clean write-back (no bytes to move) that hits there.
    below = nxt is not None and nxt.snoop is None and nxt._write_back
    if nxt is not None:
        ntags, nmask, nshift, nlat, ndirty = (
            nxt._tags,
            nxt._mask,
            nxt._shift,
            nxt.latency,
            nxt._dirty,
        )
        nlru = nxt._policy == "lru"
        nlru_store = nlru and nxt._lru_on_store
    nlh = nsh = nwb = 0
    done: int | None
    for i, (addr, write) in enumerate(zip(addrs.tolist(), writes.tolist(), strict=True)):
        issue = t
        if gap is not None:
            t += gap[i]
        ln = addr >> shift
        if fast:
            d = tags[ln & mask]
            slot = d.get(ln)
            if slot is not None:
                if write:
                    sh += 1
                    dirty[slot] = 1
                    if lru_store:
                        d[ln] = d.pop(ln)
                else:
                    lh += 1
                    if lru:
                        d[ln] = d.pop(ln)
                t += lat
                latencies[i] = t - issue
            elif inline_miss:
                # _fetch and _install inlined: the fill from below, then the victim.
                if write:
                    sm += 1
                else:
                    lm += 1
                t += lat
                if nxt is not None:
                    nxt._loads += 1
                    nln = (ln << shift) >> nshift
                    nd = ntags[nln & nmask]
                    nslot = nd.get(nln) if below else None
                    if nslot is not None:
                        nlh += 1
                        if nlru:
                            nd[nln] = nd.pop(nln)
                        done = t + nlat
                    else:
                        done = nxt._fetch(nln, False, t)[1]
                else:
                    done = cache.ram.timed_fill(ln << shift, line, t)
                assert done is not None
                f = free[ln & mask]
                if f:
                    slot = f.pop()
                else:
                    victim = next(iter(d))
                    slot = d.pop(victim)
                    ev += 1
                    if dirty[slot]:
                        nslot = None
                        if below and not loaded[slot]:
                            nln = (victim << shift) >> nshift
                            nd = ntags[nln & nmask]
                            nslot = nd.get(nln)
                        if nslot is not None:  # posted into the level below: a hit
                            nwb += 1
                            nsh += 1
                            ndirty[nslot] = 1
                            if nlru_store:
                                nd[nln] = nd.pop(nln)
                        else:
                            cache._writeback(victim, slot, t)
                d[ln] = slot
                line_of[slot] = ln
                loaded[slot] = 0
                dirty[slot] = write
                latencies[i] = done - issue
                t = done
            else:
                done = cache._access_line(ln, write, t)
                latencies[i] = done - issue
                t = done
                slot = tags[ln & mask][ln]
            if tail is not None and tail[i]:
                t += tail[i]
                if tail_w is not None and tail_w[i]:
                    dirty[slot] = 1
            continue
        if snoop is not None:
            t = snoop(ln, write, t) or t  # a timed snoop returns a cycle
        done = cache._access_line(ln, write, t)
        latencies[i] = done - issue
        t = done
    cache._loads += lh + lm
    cache._stores += sh + sm
    cache._load_hits += lh
    cache._store_hits += sh
    cache._load_misses += lm
    cache._store_misses += sm
    cache._evictions += ev
    cache._writebacks += nwb
    if nxt is not None:
        nxt._load_hits += nlh
        nxt._stores += nsh
        nxt._store_hits += nsh
    return np.array(latencies, dtype=np.int64), t
