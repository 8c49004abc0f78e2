"""Cache coherence: one L1 per CPU kept coherent by snooping, and the ways around it.

Without a protocol, CPU0 storing to an address (dirty in its L1) and CPU1 then loading it
would read stale bytes from L2 or RAM. x86 keeps its CPU caches coherent; so does hwsim.
:class:`CoherentHierarchy` wraps the L1s, the shared L2 (or none) and RAM, and runs a
write-invalidate protocol among the L1s.

The protocol is MESI (Papamarcos and Patel, 1984), with states read off the caches rather
than stored beside them:

- Modified: the line is dirty in one L1; no other L1 holds it (the invariant the protocol
  keeps: a single writer, or any number of readers);
- Exclusive: clean in exactly one L1; Shared: clean in several; Invalid: absent.

Why MESI and not the simpler MSI: with E, a CPU that reads and then writes its own private
data (a stack, a freshly allocated object: the common case) upgrades silently, without any
bus traffic; under MSI every such first write would be an invalidation broadcast that finds
nobody. Deriving E from "no other L1 holds it" is exact for a model that sees every cache.

Transactions (``i`` is the requesting L1, acting before each line of its access is looked up):

- load hit in ``i``: nothing (M, E and S all satisfy a read);
- load miss in ``i`` (BusRd): an L1 holding the line Modified writes it back to the level
  below and keeps it, Shared (M → S, MESI's "flush"); ``i`` then fills from the level below,
  which now has the data: a cache-to-cache transfer, modelled through L2 (or RAM without
  one) so that the data is always right;
- store in ``i``, hit or miss (BusRdX, or BusUpgr on a Shared hit): every other L1's copy
  is invalidated, a Modified one written back first so that ``i``'s fill gets its bytes.

Snoop filter. Like a directory (or Intel's inclusive L3 with its core-valid bits), the
model knows which L1 holds what, so only requests that need another L1 to act leave the
requester: a load miss that finds a Modified copy, a store that finds any copy. Those are
the *snoops*; everything else costs no more than it would on one CPU, which is also why the
batched path can skip the protocol when no other L1 holds any of its lines.

Timing: a snoop adds ``snoop_latency`` cycles (the round trip to the other cores) before the
requester's own lookup. A cache-to-cache load then costs L1 + snoop + L2 latency, since the
owner's posted write-back has put the line in L2: with the defaults, about the 40-60 cycles
a cross-core "HITM" load takes on recent x86. The owner's write-back is posted at the snoop
(charged to L2 or the RAM channel, not waited for), like any dirty victim.

DMA on a non-coherent bus (hwsim's default, ``MachineConfig(dma_coherent=False)``) does not
snoop: :meth:`CoherentHierarchy.dma_write` goes to RAM behind the caches, so a CPU whose
cache holds the line keeps reading the old bytes until the line is invalidated, and
:meth:`CoherentHierarchy.dma_read` misses data still dirty in a cache until it is written
back. That is the bug ``dma_sync_single_for_cpu`` / ``_for_device`` exist to prevent. The
``*_coherent`` twins model x86, whose bus snoops device traffic.

Kernel code writes memory functionally (slab poisoning, kzalloc's zeroing, krealloc's copy,
page-table entries). :meth:`CoherentHierarchy.read` and :meth:`CoherentHierarchy.write` have
the signatures of :meth:`RamModel.read <hwsim.devices.ram.RamModel.read>` and
:meth:`~hwsim.devices.ram.RamModel.write`, so the kernel models can be given the hierarchy
instead of the RAM and stay coherent with what the CPUs have cached: the kernel's memset
runs on a CPU, too.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable

import attrs
import numpy as np
import numpy.typing as npt

from ..validate import check_bytes
from ..validate import check_int as _check_int
from .cache import CacheModel
from .ram import RamModel

#: Cycles a snoop adds to the request that needs it (see the module docstring).
SNOOP_LATENCY = 30


@attrs.frozen
class CoherenceStatistics:
    """What the coherence protocol has done so far.

    ``snoops`` counts line requests that needed another L1 to act (a load miss that found a
    Modified copy, a store that found any copy); ``invalidations`` the copies dropped by
    stores; ``cache_to_cache`` the Modified copies that supplied a requester's data.
    """

    snoops: int
    invalidations: int
    cache_to_cache: int


class CoherentHierarchy:
    """One L1 per CPU, an optional shared L2 and RAM, kept coherent by MESI snooping.

    The L1s' :attr:`~hwsim.devices.cache.CacheModel.snoop` hook is set (with more than one
    L1), so an access made directly on an L1's :meth:`~hwsim.devices.cache.CacheModel.load`,
    ``store`` or ``timed_*`` methods is coherent too; its trace path ``access_lines`` is not:
    use :meth:`access_lines` here.

    Example:
        >>> from hwsim.config import CacheConfig
        >>> ram = RamModel(size=1 << 20)
        >>> l2 = CacheModel("l2", CacheConfig(size=4096, ways=4), next_level=None, ram=ram,
        ...                 latency=12)
        >>> l1s = [CacheModel(f"l1d{i}", CacheConfig(size=1024, ways=2), next_level=l2,
        ...                   ram=ram, latency=4) for i in range(2)]
        >>> h = CoherentHierarchy(l1s, l2, ram)
        >>> h.store(0, 0x100, b"hello")
        >>> ram.read(0x100, 5), h.load(1, 0x100, 5)
        (b'\\x00\\x00\\x00\\x00\\x00', b'hello')
        >>> h.statistics()
        CoherenceStatistics(snoops=1, invalidations=0, cache_to_cache=1)

    Args:
        l1s: the L1 of each CPU, CPU 0 first; all with the same line size, all above ``l2``.
        l2: the shared level below the L1s, or None when the L1s talk to RAM.
        ram: the machine's RAM.
        snoop_latency: cycles a snoop adds to the request that needs it.
    """

    def __init__(
        self,
        l1s: list[CacheModel],
        l2: CacheModel | None,
        ram: RamModel,
        *,
        snoop_latency: int = SNOOP_LATENCY,
    ) -> None:
        if not isinstance(ram, RamModel):
            raise TypeError(f"ram must be a RamModel, got {ram!r}")
        if l2 is not None and not isinstance(l2, CacheModel):
            raise TypeError(f"l2 must be a CacheModel or None, got {l2!r}")
        if not isinstance(l1s, list | tuple) or not l1s:
            raise ValueError(f"a hierarchy needs at least one L1, got {l1s!r}")
        _check_int("snoop_latency", snoop_latency)
        for l1 in l1s:
            if not isinstance(l1, CacheModel):
                raise TypeError(f"an L1 must be a CacheModel, got {l1!r}")
            if l1.ram is not ram:
                raise ValueError(f"{l1.name} uses another RAM")
            if l1.next_level is not l2:
                raise ValueError(f"{l1.name} is not above {'RAM' if l2 is None else l2.name}")
            if l1.line != l1s[0].line:
                raise ValueError(
                    f"the L1s' lines differ ({l1s[0].name}: {l1s[0].line} B, "
                    f"{l1.name}: {l1.line} B)"
                )
            if l1.snoop is not None:
                raise ValueError(f"{l1.name} is already kept coherent by another protocol")
        if len({id(l1) for l1 in l1s}) != len(l1s) or (l2 is not None and l2 in l1s):
            raise ValueError("each CPU needs its own L1")
        self.l1s = list(l1s)
        self.l2 = l2
        self.ram = ram
        self.snoop_latency = snoop_latency
        self.line = l1s[0].line
        self._shift = self.line.bit_length() - 1
        self._snoops = self._invalidations = self._cache_to_cache = 0
        self._uc_starts: list[int] = []  # uncached ranges, sorted: [start, end)
        self._uc_ends: list[int] = []
        if len(l1s) > 1:  # one CPU: nothing to snoop, and the plain fast paths
            for cpu, l1 in enumerate(self.l1s):
                l1.snoop = self._snooper(cpu)

    def detach(self) -> None:
        """Remove the protocol's hooks from the L1s (they are no longer kept coherent)."""
        for l1 in self.l1s:
            l1.snoop = None

    def __repr__(self) -> str:
        below = "RAM" if self.l2 is None else self.l2.name
        return f"<CoherentHierarchy {len(self.l1s)} x {self.l1s[0].name} -> {below}, MESI>"

    def statistics(self) -> CoherenceStatistics:
        return CoherenceStatistics(
            snoops=self._snoops,
            invalidations=self._invalidations,
            cache_to_cache=self._cache_to_cache,
        )

    # ------------------------------------------------------------------ the protocol

    def _snooper(self, cpu: int) -> Callable[[int, bool, int | None], int | None]:
        me = self.l1s[cpu]
        peers = [l1 for l1 in self.l1s if l1 is not me]

        def snoop(ln: int, store: bool, at: int | None) -> int | None:
            if store:
                invalidated = supplied = 0
                for peer in peers:
                    state = peer.snoop_line(ln, True, at)
                    if state:
                        invalidated += 1
                        supplied += state == 2
                if not invalidated:
                    return at  # E or M already, or a miss nobody else holds
                self._invalidations += invalidated
                self._cache_to_cache += supplied
            else:
                if me.line_state(ln):
                    return at  # a load hit needs nobody
                for peer in peers:  # at most one peer holds the line Modified
                    if peer.line_state(ln) == 2:
                        peer.snoop_line(ln, False, at)
                        self._cache_to_cache += 1
                        break
                else:
                    return at  # clean copies elsewhere: L2/RAM has the data
            self._snoops += 1
            return None if at is None else at + self.snoop_latency

        return snoop

    # ------------------------------------------------------------------ CPU accesses

    def _l1(self, cpu: int) -> CacheModel:
        if isinstance(cpu, bool) or not isinstance(cpu, int):
            raise TypeError(f"a CPU number is an int, got {cpu!r}")
        if not 0 <= cpu < len(self.l1s):
            raise ValueError(f"no CPU {cpu}: the hierarchy has {len(self.l1s)}")
        return self.l1s[cpu]

    def load(self, cpu: int, phys: int, size: int) -> bytes:
        """Read ``size`` bytes at ``phys`` on CPU ``cpu``, through its L1 (with statistics)."""
        return self._l1(cpu).load(phys, size)

    def store(self, cpu: int, phys: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` at ``phys`` on CPU ``cpu``, through its L1 (with statistics)."""
        self._l1(cpu).store(phys, data)

    def timed_load(self, cpu: int, phys: int, size: int, at: int) -> tuple[bytes, int]:
        """:meth:`load` issued at cycle ``at``: ``(data, done)``, snoops included. An
        access to uncached memory (:meth:`map_uncached`) goes to RAM."""
        if self._uc_starts and self._uncached(phys):
            self._l1(cpu)
            self.ram.check_range(phys, size)
            parts, t = [], at
            for lo, n in self._uncached_pieces(phys, size):  # one bus access per line
                data, t = self.ram.timed_read(lo, n, t)
                parts.append(data)
            return b"".join(parts), t
        return self._l1(cpu).timed_load(phys, size, at)

    def timed_store(
        self, cpu: int, phys: int, data: bytes | bytearray | memoryview, at: int
    ) -> tuple[None, int]:
        """:meth:`store` issued at cycle ``at``: ``(None, done)``, snoops included."""
        if self._uc_starts and self._uncached(phys):
            self._l1(cpu)
            raw, t = check_bytes("data to store", data), at
            self.ram.check_range(phys, len(raw))
            for lo, n in self._uncached_pieces(phys, len(raw)):  # one bus access per line
                _, t = self.ram.timed_write(lo, raw[lo - phys : lo - phys + n], t)
            return None, t
        return self._l1(cpu).timed_store(phys, data, at)

    def _uncached_pieces(self, phys: int, size: int) -> list[tuple[int, int]]:
        """``(phys, size)`` per line of an uncached access: the CPU does not merge them."""
        line, out, pos = self.line, [], phys
        while pos < phys + size:
            n = min(phys + size - pos, line - (pos & (line - 1)))
            out.append((pos, n))
            pos += n
        return out

    # ------------------------------------------------------------------ uncached memory

    def map_uncached(self, phys: int, size: int) -> None:
        """Make ``[phys, phys + size)`` uncached for the CPUs (x86's PCD/PWT or PAT UC in
        the mapping, ARM's Device/Normal-NC attributes): their loads and stores there go to
        RAM, and no line of it is ever cached. What the kernel does to coherent DMA memory
        on a non-coherent platform; the range must hold no cached line already (clean and
        invalidate it first)."""
        _check_int("phys", phys)
        _check_int("size", size)
        self.ram.check_range(phys, size)
        i = bisect.bisect_right(self._uc_starts, phys)
        if (i and self._uc_ends[i - 1] > phys) or (
            i < len(self._uc_starts) and self._uc_starts[i] < phys + size
        ):
            raise ValueError(f"[{phys:#x}, {phys + size:#x}) overlaps an uncached range")
        self._uc_starts.insert(i, phys)
        self._uc_ends.insert(i, phys + size)

    def unmap_uncached(self, phys: int) -> None:
        """Make the uncached range that starts at ``phys`` cacheable again."""
        i = bisect.bisect_left(self._uc_starts, phys)
        if i == len(self._uc_starts) or self._uc_starts[i] != phys:
            raise ValueError(f"no uncached range starts at {phys:#x}")
        del self._uc_starts[i]
        del self._uc_ends[i]

    def _uncached(self, phys: int) -> bool:
        i = bisect.bisect_right(self._uc_starts, phys) - 1
        return i >= 0 and phys < self._uc_ends[i]

    def _uncached_mask(self, addrs: npt.NDArray[np.integer]) -> npt.NDArray[np.bool_]:
        starts = np.array(self._uc_starts, dtype=np.int64)
        ends = np.array(self._uc_ends, dtype=np.int64)
        a = addrs.astype(np.int64, copy=False)
        i = np.searchsorted(starts, a, side="right") - 1
        return (i >= 0) & (a < ends[np.maximum(i, 0)])

    def _shared(self, cpu: int, line_addrs: object, is_write: object) -> npt.NDArray[np.bool_]:
        """Per access, whether another L1 holds its line. Those are the only accesses that
        may need a snoop while ``cpu`` runs the trace: only its own requests act on the
        other L1s, and they only take lines away. A malformed trace (and, with one CPU,
        every trace) is reported as private, for the L1 to run or reject in one go."""
        ok = (
            len(self.l1s) > 1
            and isinstance(line_addrs, np.ndarray)
            and line_addrs.dtype.kind in "iu"
            and line_addrs.ndim == 1
            and isinstance(is_write, np.ndarray)
            and is_write.shape == line_addrs.shape
            and len(line_addrs) > 0
        )
        if not ok:
            return np.zeros(0, dtype=np.bool_)
        assert isinstance(line_addrs, np.ndarray)
        others = np.concatenate([x.resident_lines() for i, x in enumerate(self.l1s) if i != cpu])
        if not len(others):
            return np.zeros(0, dtype=np.bool_)
        lo, hi = int(line_addrs.min()), int(line_addrs.max())
        self.ram.check_range(lo if lo < 0 else hi, 1)  # before any snoop changes anything
        return np.isin(line_addrs.astype(np.int64, copy=False) >> self._shift, others)

    def access_lines(
        self, cpu: int, line_addrs: npt.NDArray[np.integer], is_write: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.bool_]:
        """CPU ``cpu`` runs a trace (statistics and replacement state, no data, no time), as
        :meth:`~hwsim.devices.cache.CacheModel.access_lines`: whether each access hit in its
        L1.

        When no other L1 holds any line of the trace (always, with one CPU), the trace runs
        in one batch on the L1's fast path. Otherwise it is cut at the accesses that need the
        other L1s to act: the first store to each line they hold, and the first load of each
        line one of them holds Modified (a load needs nobody once the line is only Shared
        elsewhere; a store needs nobody once the others are invalidated). Each of those is
        snooped and run on its own, the runs between them in batches: at most two cuts per
        shared line, so a trace over shared data stays on the fast path.
        """
        l1 = self._l1(cpu)
        shared = self._shared(cpu, line_addrs, is_write)
        if not shared.any():
            return l1.access_lines(line_addrs, is_write)
        snoop = l1.snoop
        assert snoop is not None  # more than one L1
        index = np.flatnonzero(shared)
        lines = (line_addrs[index].astype(np.int64) >> self._shift).tolist()
        peers = [x for i, x in enumerate(self.l1s) if i != cpu]
        # What the other L1s hold of each line: 2 if one has it Modified, else 1 (Shared).
        state = {ln: max(x.line_state(ln) for x in peers) for ln in set(lines)}
        cuts: list[tuple[int, int, bool]] = []
        for i, ln, write in zip(index.tolist(), lines, is_write[index].tolist(), strict=True):
            if write:
                if state[ln]:
                    cuts.append((i, ln, True))
                    state[ln] = 0
            elif state[ln] == 2:
                cuts.append((i, ln, False))
                state[ln] = 1
        parts: list[npt.NDArray[np.bool_]] = []
        lo = 0
        for i, ln, write in cuts:
            if lo < i:
                parts.append(l1.access_lines(line_addrs[lo:i], is_write[lo:i]))
            snoop(ln, write, None)
            parts.append(l1.access_lines(line_addrs[i : i + 1], is_write[i : i + 1]))
            lo = i + 1
        if lo < len(line_addrs):
            parts.append(l1.access_lines(line_addrs[lo:], is_write[lo:]))
        return np.concatenate(parts)

    def timed_access_lines(
        self,
        cpu: int,
        line_addrs: npt.NDArray[np.integer],
        is_write: npt.NDArray[np.bool_],
        at: int,
        gaps: npt.NDArray[np.integer] | None = None,
    ) -> tuple[npt.NDArray[np.int64], int]:
        """:meth:`access_lines` as a chain issued at ``at``: ``(latencies, done)``, as
        :meth:`~hwsim.devices.cache.CacheModel.timed_access_lines` (``gaps`` too), snoops
        included.

        When no other L1 holds any line of the trace, it runs without the protocol's hook:
        the same counts and latencies as the L1 alone.
        """
        l1 = self._l1(cpu)
        if self._uc_starts and isinstance(line_addrs, np.ndarray) and len(line_addrs):
            uc = self._uncached_mask(line_addrs)
            if uc.any():
                return self._timed_mixed(cpu, line_addrs, is_write, at, gaps, uc)
        if self._shared(cpu, line_addrs, is_write).any():
            return l1.timed_access_lines(line_addrs, is_write, at, gaps)
        snoop, l1.snoop = l1.snoop, None
        try:
            return l1.timed_access_lines(line_addrs, is_write, at, gaps)
        finally:
            l1.snoop = snoop

    def _timed_mixed(
        self,
        cpu: int,
        lines: npt.NDArray[np.integer],
        writes: npt.NDArray[np.bool_],
        at: int,
        gaps: npt.NDArray[np.integer] | None,
        uc: npt.NDArray[np.bool_],
    ) -> tuple[npt.NDArray[np.int64], int]:
        """A trace that touches uncached memory: cached runs through the L1 as usual, each
        uncached access straight to RAM (a line-sized transfer: a trace has no sizes)."""
        latencies = np.zeros(len(lines), dtype=np.int64)
        edges = np.flatnonzero(np.diff(uc.astype(np.int8))) + 1
        bounds = [0, *edges.tolist(), len(lines)]
        t = at
        line = self.line
        for lo, hi in itertools.pairwise(bounds):
            g = None if gaps is None else gaps[lo:hi]
            if not uc[lo]:
                lat, t = self.timed_access_lines(cpu, lines[lo:hi], writes[lo:hi], t, g)
                latencies[lo:hi] = lat
                continue
            for i in range(lo, hi):
                issue = t
                if gaps is not None:
                    t += int(gaps[i])
                addr = int(lines[i]) & ~(line - 1)
                t = self.ram.timed_fill(addr, line, t, bool(writes[i]))
                latencies[i] = t - issue
        return latencies, t

    # ------------------------------------------------------------------ functional (kernel)

    @property
    def size(self) -> int:
        """Bytes of physical memory, as :attr:`RamModel.size <hwsim.devices.ram.RamModel>`."""
        return self.ram.size

    def check_range(self, phys: int, size: int) -> None:
        """Raise unless ``[phys, phys + size)`` is a non-empty range inside RAM."""
        self.ram.check_range(phys, size)

    def _caches(self) -> list[CacheModel]:
        """Every cache level, bottom up (L2 and below, then the L1s)."""
        below: list[CacheModel] = []
        level = self.l2
        while level is not None:
            below.insert(0, level)
            level = level.next_level
        return below + self.l1s

    def read(self, phys: int, size: int) -> bytes:
        """The coherent view of ``[phys, phys + size)``: a dirty copy where a cache holds
        one, else RAM. No statistics, no time (for kernel code and set-up)."""
        out = bytearray(self.ram.read(phys, size))
        end = phys + size
        for level in self._caches():  # bottom up: a dirty L1 copy beats a dirty L2 one
            line = level.line
            for ln in level.dirty_lines(phys, size):
                lo, hi = max(phys, ln * line), min(end, (ln + 1) * line)
                out[lo - phys : hi - phys] = level.peek(lo, hi - lo)
        return bytes(out)

    def write(self, phys: int, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` at ``phys`` in RAM and in every cached copy, so that no CPU can
        read stale bytes afterwards. No statistics, no time, nothing dirtied."""
        raw = check_bytes("data to store", data)
        self.ram.write(phys, raw)
        for level in self._caches():
            level.patch(phys, raw)

    # ------------------------------------------------------------------ DMA

    def dma_read(self, phys: int, size: int) -> bytes:
        """What a device on a non-coherent bus reads: RAM, whatever the caches hold."""
        return self.ram.read(phys, size)

    def dma_write(self, phys: int, data: bytes | bytearray | memoryview) -> None:
        """What a device on a non-coherent bus writes: RAM only. A cached copy of the range
        keeps its old bytes until it is invalidated (``dma_sync_single_for_cpu``)."""
        self.ram.write(phys, data)

    def dma_read_coherent(self, phys: int, size: int) -> bytes:
        """What a device on a snooping bus (x86) reads: Modified data included."""
        return self.read(phys, size)

    def dma_write_coherent(self, phys: int, data: bytes | bytearray | memoryview) -> None:
        """What a device on a snooping bus (x86) writes: RAM, and every cached copy of the
        range is invalidated. A dirty line only partly covered is written back first, so
        that its bytes outside the range survive."""
        raw = check_bytes("data to store", data)
        self.ram.check_range(phys, len(raw))
        end = phys + len(raw)
        for level in reversed(self._caches()):  # top down: an L1's write-back lands in L2
            line = level.line
            edges = {phys} if phys % line else set()
            if end % line:
                edges.add(end - 1)
            for addr in edges:
                if level.line_state(addr // line) == 2:
                    level.snoop_line(addr // line, False, None)
        for l1 in self.l1s:  # no count wanted: invalidate_range's would be thrown away
            l1.invalidate_range(phys, len(raw))
        self.ram.write(phys, raw)

    # ------------------------------------------------------------------ maintenance

    def _lines_held(self, phys: int, size: int, dirty: bool) -> int:
        """How many distinct line addresses of the range some cache holds (dirty ones only,
        with ``dirty``): what one maintenance instruction per line acts on."""
        self.ram.check_range(phys, size)
        held: set[int] = set()
        for level in self._caches():
            line = level.line
            if dirty:
                held.update(ln * line for ln in level.dirty_lines(phys, size))
            else:
                held.update(ln * line for ln, _ in level._resident(phys, size))
        return len({addr // self.line for addr in held})

    def writeback_range(self, phys: int, size: int) -> int:
        """Clean the lines touching the range in every cache, down to RAM; return how many
        dirty lines that was - one per line address, however many levels held it dirty,
        as ARM's broadcast ``dc cvac`` (one instruction per line) cleans every level."""
        count = self._lines_held(phys, size, True)
        for l1 in self.l1s:
            l1.writeback_range(phys, size)
        return count

    def invalidate_range(self, phys: int, size: int) -> int:
        """Drop the lines touching the range from every cache (dirty data is lost, as with
        :meth:`~hwsim.devices.cache.CacheModel.invalidate_range`); return how many line
        addresses some cache held (``dc ivac``: one instruction per line, every level)."""
        count = self._lines_held(phys, size, False)
        for l1 in self.l1s:
            l1.invalidate_range(phys, size)
        return count

    def flush_all(self) -> int:
        """Write every dirty line back, in every cache; return how many."""
        return sum(l1.flush_all() for l1 in self.l1s)


class WalkerPort:
    """A CPU's page-table walker's way into memory: through that CPU's L1, as x86's walker
    reads paging entries through the data caches (Intel SDM vol. 3, 4.10.2: the processor
    may cache paging-structure entries in the data caches like any other memory).

    Timed reads and writes (the walk of a single access) are L1 loads and stores, counted
    and timed like any others. Untimed ones (:meth:`~hwsim.devices.mmu.MmuModel.translate_many`,
    which records the walker's accesses so that the batched path replays them through the
    caches in order) see the coherent contents, as the hardware walker would.

    Args:
        hierarchy: the machine's caches.
        cpu: whose L1 the walker uses.
    """

    def __init__(self, hierarchy: CoherentHierarchy, cpu: int) -> None:
        if not isinstance(hierarchy, CoherentHierarchy):
            raise TypeError(f"hierarchy must be a CoherentHierarchy, got {hierarchy!r}")
        hierarchy._l1(cpu)
        self.hierarchy = hierarchy
        self.cpu = cpu

    def __repr__(self) -> str:
        return f"<WalkerPort through {self.hierarchy.l1s[self.cpu].name}>"

    @property
    def size(self) -> int:
        return self.hierarchy.size

    def check_range(self, phys: int, size: int) -> None:
        self.hierarchy.check_range(phys, size)

    def read(self, phys: int, size: int) -> bytes:
        return self.hierarchy.read(phys, size)

    def write(self, phys: int, data: bytes | bytearray | memoryview) -> None:
        self.hierarchy.write(phys, data)

    def timed_read(self, phys: int, size: int, at: int) -> tuple[bytes, int]:
        return self.hierarchy.timed_load(self.cpu, phys, size, at)

    def timed_write(self, phys: int, data: bytes, at: int) -> tuple[None, int]:
        return self.hierarchy.timed_store(self.cpu, phys, data, at)
