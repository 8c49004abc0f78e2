"""RAM: physical memory that really stores bytes, sparsely, with a latency and a bandwidth.

Storage is a dict of 4 KiB numpy pages created on first write; a page never written reads
as zeros. A 64 GiB machine therefore boots in microseconds and the host only pays for the
pages a workload touches.

Timing: an access of ``n`` bytes occupies the one memory channel for
``T = ceil(n / bytes_per_cycle)`` transfer cycles and completes ``latency`` cycles after its
transfer ends. The channel keeps a calendar of the transfers it has booked
(:class:`ChannelCalendar`): sorted, disjoint busy intervals. Only transfers are booked, not
the latency that follows them, so concurrent requesters (CPUs, the DMA engine) queue for the
channel only when their transfers really collide, which is the contention a DMA racing a CPU
feels. An access issued at cycle ``s`` that would overlap a booked transfer waits until that
transfer ends; it then books ``[start, start + T)``.

A burst is a chain of dependent accesses (each issued when the previous one completes) and is
booked in one vectorised step, with the same result as the same accesses issued one by one
(see :meth:`ChannelCalendar.book` for when that is only approximately so). Requests reach
the channel in host order, not in order of their issue cycle (docs/architecture.md, "Time
travels on messages"): a request may land in the past of the calendar and then fits in the
gaps that earlier bookings left.

Approximations: a request that collides waits for the end of the one booked block it
overlaps (adjacent bookings merge into one block) and is not moved again if the gap after
that block is too short for it: the channel may then be booked twice for a few cycles (the
calendar stores the union). A burst that collides more than ``max_passes`` times (without
simply trailing a slower requester) has the rest of its delays estimated in chunks.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import attrs
import numpy as np
import numpy.typing as npt

from ..core.actor import Actor, handles
from ..core.clock import current_cycle
from ..errors import SegmentationFault
from ..units import PAGE_SHIFT, PAGE_SIZE, format_size
from ..validate import check_bytes

_EMPTY = np.zeros(0, dtype=np.int64)
# After max_passes collisions, a burst's remaining delays are found in this many chunks.
_TAIL_CHUNKS = 64


@runtime_checkable
class PhysMemory(Protocol):
    """What code that reads and writes physical memory functionally needs (no statistics,
    no time): :class:`RamModel`, or the coherent cache hierarchy in front of it
    (:class:`~hwsim.devices.coherence.CoherentHierarchy`), which kernel code is given so
    that what it writes (page tables, poison, zeroed pages) is what every CPU then sees."""

    @property
    def size(self) -> int:
        """Bytes of physical memory."""
        ...

    def check_range(self, phys: int, size: int) -> None:
        """Raise unless ``[phys, phys + size)`` is a non-empty range inside memory."""
        ...

    def read(self, phys: int, size: int) -> bytes:
        """The bytes at ``[phys, phys + size)``."""
        ...

    def write(self, phys: int, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` at ``phys``."""
        ...


@runtime_checkable
class TimedMemory(PhysMemory, Protocol):
    """:class:`PhysMemory` with timed accesses, what the page-table walker reads through:
    RAM directly, or a CPU's L1 (:class:`~hwsim.devices.coherence.WalkerPort`)."""

    def timed_read(self, phys: int, size: int, at: int) -> tuple[bytes, int]:
        """Read issued at cycle ``at``: ``(data, done)``."""
        ...

    def timed_write(self, phys: int, data: bytes, at: int) -> tuple[None, int]:
        """Write issued at cycle ``at``: ``(None, done)``."""
        ...


class ChannelCalendar:
    """The transfers a memory channel has booked: sorted, disjoint ``[start, end)`` cycles.

    Intervals live in two int64 buffers that grow by doubling; ``[lo, hi)`` is the live
    part, so forgetting the past is O(log n) and booking at the end of the calendar, the
    common case, is O(1). Touching or overlapping intervals are merged on booking.

    Attributes:
        max_intervals: when more are live, all but the newest ``max_intervals // 2`` are
            forgotten (bounds memory when no actor prunes the calendar, as in atomic mode).
        max_passes: how many collisions (or runs of them) of a burst are resolved
            exactly before the rest is approximated (see :meth:`book`).
    """

    __slots__ = ("_e", "_hi", "_last_end", "_lo", "_s", "max_intervals", "max_passes")

    def __init__(self, max_intervals: int = 1 << 20, max_passes: int = 64) -> None:
        if max_intervals < 2:
            raise ValueError(f"max_intervals must be at least 2, got {max_intervals}")
        self.max_intervals = max_intervals
        self.max_passes = max_passes
        self._s = np.zeros(64, dtype=np.int64)
        self._e = np.zeros(64, dtype=np.int64)
        self._lo = 0
        self._hi = 0
        self._last_end = 0  # end of the last interval (0 when empty): a Python int

    def __len__(self) -> int:
        return self._hi - self._lo

    def __repr__(self) -> str:
        n = len(self)
        if not n:
            return "<ChannelCalendar empty>"
        first = int(self._s[self._lo])
        return f"<ChannelCalendar {n} busy intervals in [{first}, {self._last_end})>"

    @property
    def starts(self) -> npt.NDArray[np.int64]:
        """First busy cycle of each interval (a read-only view)."""
        view = self._s[self._lo : self._hi]
        view.flags.writeable = False
        return view

    @property
    def ends(self) -> npt.NDArray[np.int64]:
        """First free cycle after each interval (a read-only view)."""
        view = self._e[self._lo : self._hi]
        view.flags.writeable = False
        return view

    def forget_before(self, cycle: int) -> int:
        """Drop the intervals that end at or before ``cycle``; return how many.

        They cannot delay a request issued at ``cycle`` or later, so later results do not
        change as long as no request is issued before ``cycle``.
        """
        n = int(np.searchsorted(self._e[self._lo : self._hi], cycle, side="right"))
        self._lo += n
        if self._lo == self._hi:
            self._lo = self._hi = self._last_end = 0
        return n

    # ------------------------------------------------------------------ booking

    def book_one(self, at: int, transfer: int) -> int:
        """Book one transfer of ``transfer`` cycles wanted at ``at``; return its delay.

        The scalar twin of :meth:`book` (same result as a burst of one), a few µs.
        """
        last = self._last_end
        if at > last or self._hi == self._lo:  # after everything booked: append
            if self._hi == len(self._s):
                self._make_room(1)
            hi = self._hi
            self._s[hi] = at
            self._e[hi] = self._last_end = at + transfer
            self._hi = hi + 1
            if hi - self._lo >= self.max_intervals:
                self._trim()
            return 0
        lo, hi = self._lo, self._hi
        if at == last:  # right after the last transfer: extend it
            self._e[hi - 1] = self._last_end = at + transfer
            return 0
        if (hi - lo == 1 or at >= int(self._e[hi - 2])) and int(self._s[hi - 1]) < at + transfer:
            # it overlaps the last transfer (and no earlier one): it goes right after it
            self._e[hi - 1] = self._last_end = last + transfer
            return last - at
        starts, ends = self._s[lo:hi], self._e[lo:hi]
        n = hi - lo
        j = int(np.searchsorted(ends, at, side="right"))  # < n since at < last
        delay = 0
        if int(starts[j]) < at + transfer:
            delay = int(ends[j]) - at
        start = at + delay
        end = start + transfer
        # [i0, i1): the intervals the new one touches, found near j (ends[j - 1] <= at).
        i0 = j - 1 if not delay and j and int(ends[j - 1]) == at else j
        if not delay:
            i1 = j + 1 if int(starts[j]) == end else j
        elif j + 1 == n or int(starts[j + 1]) > end:
            i1 = j + 1
        else:
            i1 = int(np.searchsorted(starts, end, side="right"))
        if i0 < i1:  # merge with the intervals it touches
            start = min(start, int(starts[i0]))
            end = max(end, int(ends[i1 - 1]))
        self._replace(i0, i1, np.array([start], dtype=np.int64), np.array([end], dtype=np.int64))
        self._trim()
        return delay

    def book(self, at: int, transfers: npt.NDArray[np.int64], gap: int) -> npt.NDArray[np.int64]:
        """Book a chain of dependent transfers; return each one's delay (int64 array).

        Transfer ``i`` is wanted at ``x_i = at + sum(T_j + gap + delay_j, j < i)``: each is
        issued ``gap`` cycles (the RAM latency) after the previous transfer ends. A transfer
        that overlaps a booked block waits until the block ends (``delay_i``) and the rest of
        the chain shifts by as much. The chain's own transfers never delay each other.

        Vectorised, collision by collision: knowing the shift up to transfer ``p``, a pass
        finds the first transfer at or after ``p`` that collides (searching windows that
        double in size); its delay fixes the shift behind it. When that collision starts a
        run in which each next transfer lands in the next booked block (a fast chain
        trailing a slower one, which then sets the pace), the pass resolves the whole run.
        Within ``max_passes`` passes the result is exact: it equals the same transfers
        booked one by one with :meth:`book_one`. The rest of a burst that collides more
        often is booked in 64 chunks, each taking its delays at the starts that the shift
        known when the chunk begins gives: an approximation, because a delay moves the
        transfers behind it in the chunk, which may then miss a collision the one-by-one
        booking would have had, or meet one it would have missed.
        """
        k = len(transfers)
        if k == 0:
            return _EMPTY.copy()
        step = transfers + gap
        nominal = np.cumsum(step)
        nominal -= step
        nominal += at
        delays = np.zeros(k, dtype=np.int64)
        if self._hi > self._lo and int(nominal[0]) < self._last_end:
            self._collide(nominal, transfers, gap, delays)
            starts = nominal + np.cumsum(delays)
        else:
            starts = nominal
        self._insert(starts, starts + transfers)
        self._trim()
        return delays

    def _collide(
        self,
        nominal: npt.NDArray[np.int64],
        transfers: npt.NDArray[np.int64],
        gap: int,
        delays: npt.NDArray[np.int64],
    ) -> None:
        """Fill ``delays`` (zeros) for a chain wanted at ``nominal`` without delays (see book)."""
        k = len(nominal)
        lo, hi, last = self._lo, self._hi, self._last_end
        first = lo + int(np.searchsorted(self._e[lo:hi], nominal[0], side="right"))
        b_starts, b_ends = self._s[first:hi], self._e[first:hi]
        blocks = len(b_ends)
        p = 0  # delays[:p] are exact
        shift = 0  # sum(delays[:p])
        window = 64
        for _ in range(self.max_passes):
            while True:  # the first collision at or after p, in doubling windows
                stop = min(k, p + window)
                wanted = nominal[p:stop] + shift
                m = int(np.searchsorted(wanted, last, side="left"))  # later ones start free
                wanted = wanted[:m]
                j = np.searchsorted(b_ends, wanted, side="right")
                hits = np.flatnonzero(b_starts[j] < wanted + transfers[p : p + m])
                if len(hits):
                    break
                if m < stop - p or stop == k:
                    return
                p = stop
                window *= 2
            h = int(hits[0])
            block = int(j[h])
            delay = int(b_ends[block] - wanted[h])
            p += h
            delays[p] = delay
            shift += delay
            window = max(64, 2 * h)
            # Follow the leader: while each next transfer lands in the next booked block
            # (a faster chain trailing a slower one), resolve the run in one step.
            run = 64
            while p + 1 < k and block + 1 < blocks:
                n = min(run, k - p - 1, blocks - block - 1)
                x = b_ends[block : block + n] + transfers[p : p + n] + gap
                ends = b_ends[block + 1 : block + 1 + n]
                ok = (ends > x) & (
                    b_starts[block + 1 : block + 1 + n] < x + transfers[p + 1 : p + 1 + n]
                )
                bad = np.flatnonzero(~ok)
                r = int(bad[0]) if len(bad) else n
                if r:
                    got = ends[:r] - x[:r]
                    delays[p + 1 : p + 1 + r] = got
                    shift += int(got.sum())
                    p += r
                    block += r
                if r < n:
                    break
                run *= 2
            p += 1
            if p == k:
                return
        # Out of passes: the rest in chunks, each at the shift known when it starts.
        size = max(16, -(-(k - p) // _TAIL_CHUNKS))
        while p < k:
            stop = min(k, p + size)
            wanted = nominal[p:stop] + shift
            m = int(np.searchsorted(wanted, last, side="left"))
            if not m:
                return
            wanted = wanted[:m]
            j = np.searchsorted(b_ends, wanted, side="right")
            hit = b_starts[j] < wanted + transfers[p : p + m]
            got = np.where(hit, b_ends[j] - wanted, 0)
            delays[p : p + m] = got
            shift += int(got.sum())
            p = stop

    def _insert(self, starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64]) -> None:
        """Merge sorted, disjoint intervals into the calendar (touching ones coalesce)."""
        lo, hi = self._lo, self._hi
        cal_s, cal_e = self._s[lo:hi], self._e[lo:hi]
        i0 = int(np.searchsorted(cal_e, starts[0], side="left"))
        i1 = int(np.searchsorted(cal_s, ends[-1], side="right"))
        if i0 < i1:
            old_s, old_e = cal_s[i0:i1], cal_e[i0:i1]
            n_new, n_old = len(starts), len(old_s)
            at_new = np.searchsorted(old_s, starts, side="left") + np.arange(n_new)
            is_new = np.zeros(n_new + n_old, dtype=np.bool_)
            is_new[at_new] = True
            all_s = np.empty(n_new + n_old, dtype=np.int64)
            all_e = np.empty(n_new + n_old, dtype=np.int64)
            all_s[at_new], all_e[at_new] = starts, ends
            all_s[~is_new], all_e[~is_new] = old_s, old_e
            starts, ends = _union(all_s, all_e)
        elif len(starts) > 1 and int((starts[1:] <= ends[:-1]).any()):
            starts, ends = _union(starts, ends)
        self._replace(i0, i1, starts, ends)

    def _replace(
        self, i0: int, i1: int, starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64]
    ) -> None:
        """Replace live intervals ``[i0, i1)`` with ``starts``/``ends`` (sorted, disjoint)."""
        grow = len(starts) - (i1 - i0)
        if self._hi + grow > len(self._s):
            self._make_room(grow)
        lo, hi = self._lo, self._hi
        if grow and i1 < hi - lo:  # shift the later intervals (numpy copes with overlap)
            self._s[lo + i1 + grow : hi + grow] = self._s[lo + i1 : hi]
            self._e[lo + i1 + grow : hi + grow] = self._e[lo + i1 : hi]
        self._s[lo + i0 : lo + i0 + len(starts)] = starts
        self._e[lo + i0 : lo + i0 + len(starts)] = ends
        self._hi = hi + grow
        self._last_end = int(self._e[self._hi - 1])

    def _make_room(self, extra: int) -> None:
        """Make ``hi + extra`` fit the buffers: move the live part down, or grow."""
        live = self._hi - self._lo
        need = live + extra
        if need <= len(self._s) // 2:
            s, e = self._s, self._e
        else:
            size = max(2 * len(self._s), 2 * need)
            s, e = np.empty(size, dtype=np.int64), np.empty(size, dtype=np.int64)
        s[:live] = self._s[self._lo : self._hi]
        e[:live] = self._e[self._lo : self._hi]
        self._s, self._e, self._lo, self._hi = s, e, 0, live

    def _trim(self) -> None:
        """Over ``max_intervals``, keep the newest half of that many."""
        if self._hi - self._lo > self.max_intervals:
            self._lo = self._hi - self.max_intervals // 2


def _union(
    starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The union of intervals sorted by start, as sorted disjoint non-touching intervals."""
    reach = np.maximum.accumulate(ends)
    first = np.empty(len(starts), dtype=np.bool_)
    first[0] = True
    np.greater(starts[1:], reach[:-1], out=first[1:])
    heads = np.flatnonzero(first)
    tails = np.empty_like(heads)
    tails[:-1] = heads[1:] - 1
    tails[-1] = len(starts) - 1
    return starts[heads], reach[tails]


@attrs.frozen
class RamStatistics:
    """What the RAM unit has done so far."""

    reads: int
    writes: int
    bytes_read: int
    bytes_written: int
    busy_cycles: int
    pages_touched: int
    queued_cycles: int = 0


@attrs.define
class RamModel:
    """The functional and timing model of RAM (no trio here: the actor wraps it).

    Attributes:
        size: bytes of physical memory.
        latency: cycles from the end of the transfer to the data's arrival.
        bytes_per_cycle: channel bandwidth.
        calendar: the channel's booked transfers.
        queued_cycles: total cycles requests waited for the channel.
    """

    size: int
    latency: int = 100
    bytes_per_cycle: int = 16
    calendar: ChannelCalendar = attrs.field(factory=ChannelCalendar, eq=False)
    queued_cycles: int = 0
    reads: int = 0
    writes: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    busy_cycles: int = 0
    _pages: dict[int, npt.NDArray[np.uint8]] = attrs.Factory(dict)
    _prune_at: int = 0

    # ------------------------------------------------------------------ checks

    def check_range(self, phys: int, size: int) -> None:
        """Raise unless ``[phys, phys + size)`` is a non-empty range inside RAM."""
        if isinstance(phys, bool) or not isinstance(phys, int):
            raise TypeError(f"a physical address is an int, got {phys!r}")
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"an access size is an int, got {size!r}")
        if size <= 0:
            raise ValueError(f"access size must be positive, got {size}")
        if phys < 0 or phys + size > self.size:
            bad = phys if phys < 0 or phys >= self.size else self.size
            raise SegmentationFault(
                f"physical address {bad:#x} is beyond the end of RAM "
                f"({format_size(self.size)}, last byte {self.size - 1:#x}): "
                f"access of {size} bytes at {phys:#x}",
                address=bad,
            )

    # ------------------------------------------------------------------ functional

    def read(self, phys: int, size: int) -> bytes:
        """The bytes at ``[phys, phys + size)``, without timing or statistics."""
        self.check_range(phys, size)
        parts = []
        pos = 0
        pages = self._pages
        while pos < size:
            addr = phys + pos
            pfn, offset = addr >> PAGE_SHIFT, addr & (PAGE_SIZE - 1)
            chunk = min(size - pos, PAGE_SIZE - offset)
            page = pages.get(pfn)
            parts.append(bytes(chunk) if page is None else page[offset : offset + chunk].tobytes())
            pos += chunk
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def write(self, phys: int, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` at ``phys``, without timing or statistics."""
        raw = check_bytes("data to store", data)
        self.check_range(phys, len(raw))
        view = np.frombuffer(raw, dtype=np.uint8)
        pos = 0
        size = len(view)
        while pos < size:
            addr = phys + pos
            pfn, offset = addr >> PAGE_SHIFT, addr & (PAGE_SIZE - 1)
            chunk = min(size - pos, PAGE_SIZE - offset)
            page = self._pages.get(pfn)
            if page is None:
                page = self._pages[pfn] = np.zeros(PAGE_SIZE, dtype=np.uint8)
            page[offset : offset + chunk] = view[pos : pos + chunk]
            pos += chunk

    @property
    def pages_touched(self) -> int:
        """How many 4 KiB pages hold data (host memory grows only with these)."""
        return len(self._pages)

    # ------------------------------------------------------------------ timing

    def access_time(self, at: int, size: int) -> int:
        """Charge one access of ``size`` bytes issued at ``at``; return its completion cycle."""
        transfer = -(-size // self.bytes_per_cycle)
        delay = self.calendar.book_one(at, transfer)
        self.busy_cycles += transfer
        self.queued_cycles += delay
        return at + delay + transfer + self.latency

    def prune(self, now: int, keep: int = 4096) -> None:
        """Keep the calendar short: once it holds more than ``keep`` intervals (or twice
        what was left after the last pruning), forget the transfers that ended before
        ``now``. Every requester calls this with the current virtual time, before which
        nothing is ever issued in timing mode, so no result changes."""
        calendar = self.calendar
        if len(calendar) > max(keep, self._prune_at):
            calendar.forget_before(now)
            self._prune_at = 2 * len(calendar)

    def forget_before(self, cycle: int) -> int:
        """Forget the channel's transfers that ended by ``cycle``; return how many.

        Call it with a cycle before which no request will be issued (the current virtual
        time, in timing mode): results do not change and memory stays bounded.
        """
        return self.calendar.forget_before(cycle)

    def timed_read(self, phys: int, size: int, at: int) -> tuple[bytes, int]:
        """Read with statistics and timing: ``(data, done)``. Nothing changes on error."""
        data = self.read(phys, size)
        self.reads += 1
        self.bytes_read += size
        return data, self.access_time(at, size)

    def timed_fill(self, phys: int, size: int, at: int, write: bool = False) -> int:
        """The timing and statistics of an access whose bytes the caller does not need (a
        cache's line fill: the cache reads the bytes later, if ever; an uncached access of
        a trace, which moves no data): the done cycle."""
        if phys < 0 or phys + size > self.size or size <= 0:
            self.check_range(phys, size)
        if write:
            self.writes += 1
            self.bytes_written += size
        else:
            self.reads += 1
            self.bytes_read += size
        return self.access_time(at, size)

    def timed_write(self, phys: int, data: bytes, at: int) -> tuple[None, int]:
        """Write with statistics and timing: ``(None, done)``. Nothing changes on error."""
        raw = check_bytes("data to store", data)
        self.write(phys, raw)
        self.writes += 1
        self.bytes_written += len(raw)
        return None, self.access_time(at, len(raw))

    def timed_burst(
        self,
        addrs: npt.NDArray[np.int64],
        sizes: npt.NDArray[np.int64],
        writes: npt.NDArray[np.bool_],
        at: int,
    ) -> tuple[npt.NDArray[np.int64], int]:
        """Charge a burst of dependent accesses (each issued when the previous completes).

        Only timing and statistics: a burst describes traffic, not data. Returns the
        per-access latencies (transfer + latency + time queued for the channel) and the
        completion cycle of the last access. On an idle channel, and whenever the
        refinement of :meth:`ChannelCalendar.book` converges, the result is exactly that
        of the same accesses issued one by one with :meth:`timed_read`/:meth:`timed_write`.

        Raises:
            SegmentationFault: an access leaves RAM (then nothing is charged).
        """
        # Every check before anything is booked or counted.
        for name, arr, kinds, kind in (
            ("addrs", addrs, "iu", "integer"),
            ("sizes", sizes, "iu", "integer"),
            ("writes", writes, "b", "bool"),
        ):
            if not isinstance(arr, np.ndarray) or arr.ndim != 1 or arr.dtype.kind not in kinds:
                raise TypeError(f"timed_burst: {name} must be a 1-d numpy {kind} array")
        if not addrs.shape == sizes.shape == writes.shape:
            raise ValueError(
                f"timed_burst: addrs, sizes and writes differ in length: {addrs.shape}, "
                f"{sizes.shape}, {writes.shape}"
            )
        if len(addrs) == 0:
            return np.zeros(0, dtype=np.int64), at
        ends = addrs + sizes
        if int(addrs.min()) < 0 or int(ends.max()) > self.size or int(sizes.min()) <= 0:
            bad = np.flatnonzero((addrs < 0) | (ends > self.size) | (sizes <= 0))[0]
            self.check_range(int(addrs[bad]), int(sizes[bad]))
        transfers = self.transfer_cycles(sizes)
        delays = self.book_chain(at, sizes, writes, transfers, self.latency)
        latencies = transfers + self.latency
        latencies += delays
        done = at + int(latencies.sum())
        return latencies, done

    def transfer_cycles(self, sizes: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Cycles each access of ``sizes`` bytes occupies the channel."""
        return -(-sizes // self.bytes_per_cycle)

    def book_chain(
        self,
        at: int,
        sizes: npt.NDArray[np.int64],
        writes: npt.NDArray[np.bool_],
        transfers: npt.NDArray[np.int64],
        gap: int,
    ) -> npt.NDArray[np.int64]:
        """Book a chain of transfers issued from ``at``, ``gap`` idle cycles apart (the RAM
        latency for a CPU's dependent accesses; a DMA engine's pacing), and count them:
        the per-transfer queueing delays (:meth:`ChannelCalendar.book`). The arrays are
        the caller's, already checked."""
        delays = self.calendar.book(at, transfers, gap)
        self.busy_cycles += int(transfers.sum())
        self.queued_cycles += int(delays.sum())
        n_writes = int(writes.sum())
        self.writes += n_writes
        self.reads += len(sizes) - n_writes
        written = int(sizes[writes].sum())
        self.bytes_written += written
        self.bytes_read += int(sizes.sum()) - written
        return delays

    def statistics(self) -> RamStatistics:
        return RamStatistics(
            reads=self.reads,
            writes=self.writes,
            bytes_read=self.bytes_read,
            bytes_written=self.bytes_written,
            busy_cycles=self.busy_cycles,
            pages_touched=self.pages_touched,
            queued_cycles=self.queued_cycles,
        )


# ---------------------------------------------------------------------- messages


@attrs.frozen
class ReadPhys:
    """Read ``size`` bytes of physical memory at ``phys``."""

    phys: int
    size: int


@attrs.frozen
class WritePhys:
    """Write ``data`` to physical memory at ``phys``."""

    phys: int
    data: bytes


@attrs.frozen(eq=False)
class BurstPhys:
    """Timing for a burst of physical accesses (numpy arrays of equal length)."""

    addrs: npt.NDArray[np.int64]
    sizes: npt.NDArray[np.int64]
    writes: npt.NDArray[np.bool_]


class Ram(Actor):
    """The RAM unit's actor: answers ReadPhys, WritePhys and BurstPhys with the model.

    It keeps the channel's calendar short (:meth:`RamModel.prune`, above ``prune_above``
    intervals), as the cache units do for the CPUs' traffic.
    """

    prune_above = 4096

    def __init__(self, model: RamModel, **kwargs: object) -> None:
        super().__init__("ram", **kwargs)  # type: ignore[arg-type]
        self.model = model

    def _prune(self) -> None:
        self.model.prune(current_cycle(), self.prune_above)

    @handles(ReadPhys)
    def _read(self, msg: ReadPhys, at: int) -> tuple[bytes, int]:
        reply = self.model.timed_read(msg.phys, msg.size, at)
        self._prune()
        return reply

    @handles(WritePhys)
    def _write(self, msg: WritePhys, at: int) -> tuple[None, int]:
        reply = self.model.timed_write(msg.phys, msg.data, at)
        self._prune()
        return reply

    @handles(BurstPhys)
    def _burst(self, msg: BurstPhys, at: int) -> tuple[npt.NDArray[np.int64], int]:
        reply = self.model.timed_burst(msg.addrs, msg.sizes, msg.writes, at)
        self._prune()
        return reply

    def statistics(self) -> RamStatistics:
        return self.model.statistics()
