"""Caches: set-associative, physically indexed, write-back or write-through, with real data.

One :class:`CacheModel` is one level. Levels chain (L1 → L2 → RAM) through ``next_level``;
the last level talks to the :class:`~hwsim.devices.ram.RamModel`. The levels are neither
inclusive nor exclusive (an L2 eviction does not touch L1) and, like the hardware, know
nothing about each other's contents: a miss asks the level below, a dirty victim is stored
into the level below.

The behaviour follows pycachesim (RRZE-HPC), which the tests compare against, count for count:

- ``sets = size // (ways * line)``; line ``n`` lives in set ``n % sets``. Replacement is
  "lru", "fifo" or "random" (seeded: the same seed replaces the same lines); free ways are
  filled first.
- ``write_back=True``: write-back with write-allocate. A store miss loads the line first
  (a read for ownership: it counts as a store miss here, a load miss in pycachesim), then
  marks it dirty. ``write_back=False``: write-through *without* write-allocate, the only
  write-through flavour pycachesim offers: every store goes to the level below; a store miss
  does not bring the line in.
- A miss first asks the level below for the line and then evicts the victim, whose dirty
  data is stored into the level below (in that order, as pycachesim does).
- An access that crosses lines is one request (``loads``/``stores`` count requests) made of
  per-line lookups (the hit and miss counters count lines), as pycachesim counts them.
- One deliberate difference, switchable: a store hit makes the line most recently used
  (``lru_on_store=True``, as hardware does); pycachesim's LRU only counts loads
  (``lru_on_store=False`` gives its behaviour).
- A dirty line stored into a level that misses it is allocated there by a fill from below
  (pycachesim's write-allocate, even though the whole line is being written).

Maintenance by address (:meth:`~CacheModel.writeback_range`, :meth:`~CacheModel.invalidate_range`,
:meth:`~CacheModel.flush_all`) acts on this level and every level below, down to RAM, as DMA
syncs need. A level does not snoop by itself: two L1s sharing an L2 are coherent only when
a protocol keeps them so (:class:`~hwsim.devices.coherence.CoherentHierarchy`, through
:attr:`CacheModel.snoop` and the single-level primitives at the end of the class).

Data is real. Each resident line holds its bytes; loads return what stores wrote, through
evictions and write-backs. The trace path (:meth:`CacheModel.access_lines`) moves no data, so
a line it brings in holds no bytes until a functional access needs them and then reads them
from the level below: what the line would have held, unless RAM was changed behind the
cache's back in between (then the hardware would show stale bytes and this model fresh ones).

The trace path's loops (:meth:`~CacheModel.access_lines`,
:meth:`~CacheModel.timed_access_lines`) live in :mod:`hwsim.devices.cache_trace`, as
functions of the model: they are this class's own hot loops, kept apart for reading, and
use its private state (``_tags``, ``_free``, ``_dirty``, ...) and one-line methods directly.

Timing (``timed_*``): a hit costs this level's ``latency``; a miss adds the level below
(its latency, and finally RAM's :meth:`~hwsim.devices.ram.RamModel.timed_read`, which books
the memory channel). The lines of a multi-line access are fetched one after another. Dirty
victims and write-through stores are posted: they are charged to the level below (and the
RAM channel) when the miss is handled, but the access does not wait for them.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import attrs
import numpy as np
import numpy.typing as npt

from ..config import CacheConfig
from ..validate import check_bytes
from ..validate import check_int as _check_int
from . import cache_trace
from .ram import RamModel


@attrs.frozen
class CacheStatistics:
    """What a cache level has done so far.

    ``loads``/``stores`` count requests (a CPU access, or a line from the level above);
    the hit and miss counters count lines. ``evictions`` counts valid lines displaced by a
    fill, ``writebacks`` dirty lines stored into the level below (by eviction or cleaning).
    """

    loads: int
    stores: int
    load_hits: int
    load_misses: int
    store_hits: int
    store_misses: int
    evictions: int
    writebacks: int


class CacheModel:
    """One cache level: the functional, statistical and timing model (no trio here).

    Example:
        >>> from hwsim.config import CacheConfig
        >>> ram = RamModel(size=1 << 20)
        >>> l1 = CacheModel("l1d", CacheConfig(size=1024, ways=2), next_level=None,
        ...                 ram=ram, latency=4)
        >>> l1.store(0x100, b"hello")
        >>> ram.read(0x100, 5), l1.load(0x100, 5)
        (b'\\x00\\x00\\x00\\x00\\x00', b'hello')
        >>> l1.flush_all(), ram.read(0x100, 5)
        (1, b'hello')

    Args:
        name: for messages and statistics.
        config: size, ways, line, replacement and write policy.
        next_level: the level below, or None when RAM is.
        ram: the machine's RAM (every level of a hierarchy shares it).
        latency: cycles a lookup in this level takes.
        seed: seeds the "random" replacement policy.
        lru_on_store: whether a store hit refreshes LRU state (pycachesim: False).
    """

    name: str
    ram: RamModel
    line: int

    def __init__(
        self,
        name: str,
        config: CacheConfig,
        *,
        next_level: CacheModel | None,
        ram: RamModel,
        latency: int,
        seed: int = 0,
        lru_on_store: bool = True,
    ) -> None:
        if not isinstance(name, str):
            raise TypeError(f"a cache name is a str, got {name!r}")
        if not isinstance(config, CacheConfig):
            raise TypeError(f"config must be a CacheConfig, got {config!r}")
        if not isinstance(ram, RamModel):
            raise TypeError(f"ram must be a RamModel, got {ram!r}")
        _check_int("latency", latency)
        _check_int("seed", seed)
        if not isinstance(lru_on_store, bool):
            raise TypeError(f"lru_on_store must be True or False, got {lru_on_store!r}")
        if ram.size % config.line:
            raise ValueError(
                f"{name}: RAM of {ram.size} bytes is not a whole number of {config.line}-byte lines"
            )
        if next_level is not None:
            if not isinstance(next_level, CacheModel):
                raise TypeError(f"next_level must be a CacheModel or None, got {next_level!r}")
            if next_level.ram is not ram:
                raise ValueError(f"{name}: the next level {next_level.name} uses another RAM")
            if next_level.line < config.line:
                raise ValueError(
                    f"{name}: lines may only grow towards RAM ({config.line} bytes here, "
                    f"{next_level.line} in {next_level.name})"
                )
        self.name = name
        self.config = config
        self.next_level = next_level
        self.ram = ram
        self.latency = latency
        self.line = line = config.line
        self.ways = ways = config.ways
        self.sets = sets = config.size // (ways * line)
        self._shift = line.bit_length() - 1
        self._mask = sets - 1
        self._policy = config.replacement
        self._write_back = config.write_back
        self._lru_on_store = lru_on_store
        self._rng = random.Random(seed)
        n = sets * ways
        # Per set, line number -> slot; dict order is LRU order (oldest first) for "lru",
        # insertion order for "fifo". Slot s belongs to set s // ways.
        self._tags: list[dict[int, int]] = [{} for _ in range(sets)]
        self._free = [list(range(s * ways + ways - 1, s * ways - 1, -1)) for s in range(sets)]
        self._line_of = [-1] * n
        self._dirty = bytearray(n)
        self._loaded = bytearray(n)  # 0: the line's bytes are those of the level below
        self._data = bytearray(n * line)
        self._loads = self._stores = self._load_hits = self._load_misses = 0
        self._store_hits = self._store_misses = self._evictions = self._writebacks = 0
        # Set by a coherence protocol: called as snoop(line number, is_store, cycle or None)
        # before each line of a CPU access (load, store, timed_access_lines) is looked up, and
        # returns the cycle the lookup may start. The trace path (access_lines) never calls it.
        self.snoop: Callable[[int, bool, int | None], int | None] | None = None

    def __repr__(self) -> str:
        return (
            f"<CacheModel {self.name} {self.sets} sets x {self.ways} ways x {self.line} B, "
            f"{self._policy}, {'write-back' if self._write_back else 'write-through'}>"
        )

    def statistics(self) -> CacheStatistics:
        return CacheStatistics(
            loads=self._loads,
            stores=self._stores,
            load_hits=self._load_hits,
            load_misses=self._load_misses,
            store_hits=self._store_hits,
            store_misses=self._store_misses,
            evictions=self._evictions,
            writebacks=self._writebacks,
        )

    # ------------------------------------------------------------------ public API

    def load(self, phys: int, size: int) -> bytes:
        """Read ``size`` bytes at ``phys`` through the cache (with statistics)."""
        self.ram.check_range(phys, size)
        return self._load(phys, size, None)[0]

    def store(self, phys: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``phys`` through the cache (with statistics)."""
        self._store(phys, self._check_data(phys, data), None)

    def timed_load(self, phys: int, size: int, at: int) -> tuple[bytes, int]:
        """:meth:`load` issued at cycle ``at``: ``(data, done)``."""
        self.ram.check_range(phys, size)
        _check_int("a cycle", at)
        data, done = self._load(phys, size, at)
        assert done is not None  # a timed access always carries a time
        return data, done

    def timed_store(
        self, phys: int, data: bytes | bytearray | memoryview, at: int
    ) -> tuple[None, int]:
        """:meth:`store` issued at cycle ``at``: ``(None, done)``."""
        raw = self._check_data(phys, data)
        _check_int("a cycle", at)
        done = self._store(phys, raw, at)
        assert done is not None
        return None, done

    def access_lines(
        self, line_addrs: npt.NDArray[np.integer], is_write: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.bool_]:
        """Run a trace: access ``i`` touches the line holding byte ``line_addrs[i]``.

        Statistics and replacement state only (no data, no time), the fast path for traces;
        the result is the same as one :meth:`load`/:meth:`store` per access. Returns, per
        access, whether it hit in this level.
        """
        return cache_trace.access_lines(self, line_addrs, is_write)

    def timed_access_lines(
        self,
        line_addrs: npt.NDArray[np.integer],
        is_write: npt.NDArray[np.bool_],
        at: int,
        gaps: npt.NDArray[np.integer] | None = None,
    ) -> tuple[npt.NDArray[np.int64], int]:
        """:meth:`access_lines` as a chain issued at ``at`` (each access when the previous
        completes): ``(latencies, done)``, as the same accesses made one by one with
        :meth:`timed_load`/:meth:`timed_store` (a write-through store forwards a line).

        ``gaps``, if given, are cycles spent before each access is looked up (a TLB lookup,
        say): they count in that access's latency and delay the rest of the chain.
        """
        return cache_trace.timed_access_lines(self, line_addrs, is_write, at, gaps)

    def contains(self, phys: int) -> bool:
        """Whether this level holds the line of ``phys`` (levels below are not asked)."""
        self.ram.check_range(phys, 1)
        ln = phys >> self._shift
        return ln in self._tags[ln & self._mask]

    def flush_all(self) -> int:
        """Write every dirty line back, in this level and below; return how many.

        Lines stay resident and clean. The order is pycachesim's (set by set, most recently
        placed first), which matters for what the level below evicts.
        """
        count = 0
        dirty = self._dirty
        for d in self._tags:
            for ln in reversed(list(d)):
                slot = d[ln]
                if dirty[slot]:
                    self._writeback(ln, slot, None)
                    count += 1
        return count + (self.next_level.flush_all() if self.next_level else 0)

    def writeback_range(self, phys: int, size: int) -> int:
        """Clean the lines touching ``[phys, phys + size)`` down to RAM; return how many
        dirty lines (in all levels) were written back. What ``dma_sync_*_for_device``
        needs on a non-coherent bus."""
        self.ram.check_range(phys, size)
        return self._clean(phys, size, None)[0]

    def timed_writeback_range(self, phys: int, size: int, at: int) -> tuple[int, int]:
        """:meth:`writeback_range` issued at ``at``: ``(count, done)``. This level's
        write-backs are issued together at ``at`` (the level below and the RAM channel
        serialise them), the next level's when they have all arrived."""
        self.ram.check_range(phys, size)
        _check_int("a cycle", at)
        count, done = self._clean(phys, size, at)
        assert done is not None
        return count, done

    def invalidate_range(self, phys: int, size: int) -> int:
        """Drop the lines touching ``[phys, phys + size)`` from this level and below;
        return how many. Dirty data in them is lost, as with the hardware's invalidate
        (clean first with :meth:`writeback_range` to keep it), including the bytes of a
        partly covered line outside the range: why DMA buffers are cache-line aligned."""
        self.ram.check_range(phys, size)
        return self._invalidate(phys, size)

    def peek(self, phys: int, size: int) -> bytes:
        """What a load would return, without statistics, timing or replacement updates."""
        self.ram.check_range(phys, size)
        return self._peek(phys, size)

    def poke(self, phys: int, data: bytes | bytearray | memoryview) -> None:
        """Set bytes in RAM and in every copy this level and the levels below hold, without
        statistics, timing or dirtying anything (for set-up and debugging)."""
        raw = self._check_data(phys, data)
        self.ram.write(phys, raw)
        level: CacheModel | None = self
        while level is not None:
            level._patch(phys, raw)
            level = level.next_level

    # ------------------------------------------------------------------ checks

    def _check_data(self, phys: int, data: object) -> bytes:
        raw = check_bytes("data to store", data)
        self.ram.check_range(phys, len(raw))
        return raw

    # ------------------------------------------------------------------ one line

    def _fetch(self, ln: int, store: bool, at: int | None) -> tuple[int, int | None]:
        """Look line ``ln`` up, bringing it in on a miss: ``(slot, done)``."""
        d = self._tags[ln & self._mask]
        slot = d.get(ln)
        t = None if at is None else at + self.latency
        if slot is not None:
            if store:
                self._store_hits += 1
            else:
                self._load_hits += 1
            if self._policy == "lru" and (self._lru_on_store or not store):
                d[ln] = d.pop(ln)
            return slot, t
        if store:
            self._store_misses += 1
        else:
            self._load_misses += 1
        addr = ln << self._shift
        nxt = self.next_level
        if nxt is not None:
            nxt._loads += 1
            done = nxt._fetch(addr >> nxt._shift, False, t)[1]
        else:
            done = None if t is None else self.ram.timed_fill(addr, self.line, t)
        return self._install(ln, t), done

    def _access_line(self, ln: int, store: bool, at: int) -> int:
        """One line of a timed trace (a store of the whole line, or a load), counted as a
        request: the cycle it completes. The trace path's slow case."""
        if store:
            self._stores += 1
            done = self._line_store(ln << self._shift, self.line, None, at)
        else:
            self._loads += 1
            done = self._fetch(ln, False, at)[1]
        assert done is not None  # a timed access always carries a time
        return done

    def _install(self, ln: int, at: int | None) -> int:
        """Make room for line ``ln`` (evicting a victim) and enter it, clean and unloaded."""
        s = ln & self._mask
        d = self._tags[s]
        free = self._free[s]
        if free:
            slot = free.pop()
        else:
            if self._policy == "random":
                slot = s * self.ways + int(self._rng.random() * self.ways)
                victim = self._line_of[slot]
                del d[victim]
            else:
                victim = next(iter(d))
                slot = d.pop(victim)
            self._evictions += 1
            if self._dirty[slot]:
                self._writeback(victim, slot, at)
        d[ln] = slot
        self._line_of[slot] = ln
        self._dirty[slot] = self._loaded[slot] = 0
        return slot

    def _writeback(self, ln: int, slot: int, at: int | None) -> int | None:
        """Store dirty line ``ln`` into the level below; it stays here, clean."""
        self._writebacks += 1
        self._dirty[slot] = 0
        line = self.line
        data = bytes(self._data[slot * line : slot * line + line]) if self._loaded[slot] else None
        return self._send_store(ln << self._shift, line, data, at)

    def _send_store(self, addr: int, size: int, data: bytes | None, at: int | None) -> int | None:
        """Store into the level below; ``data=None`` when the bytes are already there."""
        nxt = self.next_level
        if nxt is not None:
            nxt._stores += 1
            return nxt._line_store(addr, size, data, at)
        if at is None:
            if data is not None:
                self.ram.write(addr, data)
            return None
        raw = self.ram.read(addr, size) if data is None else data
        return self.ram.timed_write(addr, raw, at)[1]

    def _line_store(self, addr: int, size: int, data: bytes | None, at: int | None) -> int | None:
        """Store ``size`` bytes (``data``, or None for a trace) within one line."""
        ln = addr >> self._shift
        if self._write_back:
            slot, done = self._fetch(ln, True, at)
            if data is not None:
                if size < self.line:
                    self._load_bytes(slot, ln)
                start = slot * self.line + (addr & (self.line - 1))
                self._data[start : start + size] = data
                self._loaded[slot] = 1
            self._dirty[slot] = 1
            return done
        # write-through, no write-allocate: update a resident copy, pass the store on
        d = self._tags[ln & self._mask]
        hit = d.get(ln)
        t = None if at is None else at + self.latency
        if hit is None:
            self._store_misses += 1
        else:
            self._store_hits += 1
            if self._policy == "lru" and self._lru_on_store:
                d[ln] = d.pop(ln)
            if data is not None and self._loaded[hit]:
                start = hit * self.line + (addr & (self.line - 1))
                self._data[start : start + size] = data
        self._send_store(addr, size, data, t)
        return t

    def _load_bytes(self, slot: int, ln: int) -> None:
        """Give a resident line its bytes, if it has none yet (from the level below)."""
        if not self._loaded[slot]:
            line = self.line
            self._data[slot * line : slot * line + line] = self._below(ln << self._shift, line)
            self._loaded[slot] = 1

    def _below(self, addr: int, size: int) -> bytes:
        nxt = self.next_level
        return self.ram.read(addr, size) if nxt is None else nxt._peek(addr, size)

    # ------------------------------------------------------------------ ranges

    def _load(self, phys: int, size: int, at: int | None) -> tuple[bytes, int | None]:
        self._loads += 1
        out = bytearray()
        shift, line, data, t, snoop = self._shift, self.line, self._data, at, self.snoop
        pos, end = phys, phys + size
        while pos < end:
            ln = pos >> shift
            stop = min(end, (ln + 1) << shift)
            if snoop is not None:
                t = snoop(ln, False, t)
            slot, t = self._fetch(ln, False, t)
            self._load_bytes(slot, ln)
            start = slot * line + (pos & (line - 1))
            out += data[start : start + stop - pos]
            pos = stop
        return bytes(out), t

    def _store(self, phys: int, data: bytes, at: int | None) -> int | None:
        self._stores += 1
        shift, t, snoop = self._shift, at, self.snoop
        pos, end = phys, phys + len(data)
        while pos < end:
            stop = min(end, ((pos >> shift) + 1) << shift)
            if snoop is not None:
                t = snoop(pos >> shift, True, t)
            t = self._line_store(pos, stop - pos, data[pos - phys : stop - phys], t)
            pos = stop
        return t

    def _resident(self, phys: int, size: int) -> list[tuple[int, int]]:
        """(line, slot) of the resident lines touching the range, in address order."""
        first, last = phys >> self._shift, (phys + size - 1) >> self._shift
        tags, mask = self._tags, self._mask
        if last - first < len(self._line_of):
            found = ((ln, tags[ln & mask].get(ln)) for ln in range(first, last + 1))
            return [(ln, slot) for ln, slot in found if slot is not None]
        return sorted((ln, s) for d in tags for ln, s in d.items() if first <= ln <= last)

    def _clean(self, phys: int, size: int, at: int | None) -> tuple[int, int | None]:
        count, done = 0, at
        for ln, slot in self._resident(phys, size):
            if self._dirty[slot]:
                t = self._writeback(ln, slot, at)
                count += 1
                if t is not None and done is not None:
                    done = max(done, t)
        if self.next_level is not None:
            below, done = self.next_level._clean(phys, size, done)
            count += below
        return count, done

    def _invalidate(self, phys: int, size: int) -> int:
        resident = self._resident(phys, size)
        for ln, slot in resident:
            del self._tags[ln & self._mask][ln]
            self._free[ln & self._mask].append(slot)
            self._line_of[slot] = -1
            self._dirty[slot] = self._loaded[slot] = 0
        below = self.next_level._invalidate(phys, size) if self.next_level else 0
        return len(resident) + below

    def _peek(self, phys: int, size: int) -> bytes:
        out = bytearray()
        shift, line, tags, mask = self._shift, self.line, self._tags, self._mask
        pos, end = phys, phys + size
        gap = pos  # start of a run of bytes to take from the level below
        while pos < end:
            ln = pos >> shift
            stop = min(end, (ln + 1) << shift)
            slot = tags[ln & mask].get(ln)
            if slot is not None and self._loaded[slot]:
                if gap < pos:
                    out += self._below(gap, pos - gap)
                start = slot * line + (pos & (line - 1))
                out += self._data[start : start + stop - pos]
                gap = stop
            pos = stop
        if gap < end:
            out += self._below(gap, end - gap)
        return bytes(out)

    def _patch(self, phys: int, data: bytes) -> None:
        """Overwrite the bytes of resident, loaded lines in the range (for poke)."""
        line = self.line
        for ln, slot in self._resident(phys, len(data)):
            if self._loaded[slot]:
                lo, hi = max(phys, ln * line), min(phys + len(data), (ln + 1) * line)
                start = slot * line + lo - ln * line
                self._data[start : start + hi - lo] = data[lo - phys : hi - phys]

    # ------------------------------------------------------------------ for coherence
    # Single-level primitives for a coherence protocol (hwsim.devices.coherence). Lines are
    # numbered in this level's lines (byte address >> log2(line)); nothing here touches the
    # levels below except the write-back of a dirty line.

    def line_state(self, ln: int) -> int:
        """0 if line ``ln`` is not resident in this level, 1 if clean, 2 if dirty."""
        slot = self._tags[ln & self._mask].get(ln)
        return 0 if slot is None else 1 + self._dirty[slot]

    def snoop_line(self, ln: int, invalidate: bool, at: int | None) -> int:
        """Another cache's request for line ``ln``, seen by this level only.

        A dirty copy is written back to the level below first (the owner supplies the
        data; the write-back is posted at ``at``). With ``invalidate`` the copy is then
        dropped, else it stays, clean. Statistics count the write-back, not the snoop.
        Returns the state the line had, as :meth:`line_state`.
        """
        s = ln & self._mask
        slot = self._tags[s].get(ln)
        if slot is None:
            return 0
        state = 1 + self._dirty[slot]
        if state == 2:
            self._writeback(ln, slot, at)
        if invalidate:
            del self._tags[s][ln]
            self._free[s].append(slot)
            self._line_of[slot] = -1
            self._loaded[slot] = 0
        return state

    def resident_lines(self) -> npt.NDArray[np.int64]:
        """The numbers of the lines this level holds, in slot order."""
        lines = np.array(self._line_of, dtype=np.int64)
        return lines[lines >= 0]

    def dirty_lines(self, phys: int, size: int) -> list[int]:
        """The dirty lines of this level touching ``[phys, phys + size)``, in address order."""
        self.ram.check_range(phys, size)
        dirty = self._dirty
        return [ln for ln, slot in self._resident(phys, size) if dirty[slot]]

    def patch(self, phys: int, data: bytes | bytearray | memoryview) -> None:
        """Overwrite the bytes this level (only) holds of the range, without statistics,
        timing or dirtying anything: :meth:`poke` for one level."""
        self._patch(phys, self._check_data(phys, data))
