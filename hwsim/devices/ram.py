"""RAM: physical memory that really stores bytes, sparsely, with a latency and a bandwidth.

Storage is a dict of 4 KiB numpy pages created on first write; a page never written reads
as zeros. A 64 GiB machine therefore boots in microseconds and the host only pays for the
pages a workload touches.

Timing: an access of ``n`` bytes issued at cycle ``at`` starts when the memory channel is
free (``busy_until``), occupies it for ``ceil(n / bytes_per_cycle)`` cycles and completes
``latency`` cycles after the transfer ends. Concurrent requesters (CPUs, the DMA engine)
therefore queue behind each other, which is the contention a DMA racing a CPU feels.
"""

from __future__ import annotations

import attrs
import numpy as np
import numpy.typing as npt

from ..core.actor import Actor, handles
from ..errors import SegmentationFault
from ..units import PAGE_SHIFT, PAGE_SIZE, format_size


@attrs.frozen
class RamStatistics:
    """What the RAM unit has done so far."""

    reads: int
    writes: int
    bytes_read: int
    bytes_written: int
    busy_cycles: int
    pages_touched: int


@attrs.define
class RamModel:
    """The functional and timing model of RAM (no trio here: the actor wraps it).

    Attributes:
        size: bytes of physical memory.
        latency: cycles from the end of the transfer to the data's arrival.
        bytes_per_cycle: channel bandwidth.
    """

    size: int
    latency: int = 100
    bytes_per_cycle: int = 16
    busy_until: int = 0
    reads: int = 0
    writes: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    busy_cycles: int = 0
    _pages: dict[int, npt.NDArray[np.uint8]] = attrs.Factory(dict)

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
        out = bytearray(size)
        pos = 0
        while pos < size:
            addr = phys + pos
            pfn, offset = addr >> PAGE_SHIFT, addr & (PAGE_SIZE - 1)
            chunk = min(size - pos, PAGE_SIZE - offset)
            page = self._pages.get(pfn)
            if page is not None:
                out[pos : pos + chunk] = page[offset : offset + chunk].tobytes()
            pos += chunk
        return bytes(out)

    def write(self, phys: int, data: bytes | bytearray | memoryview) -> None:
        """Store ``data`` at ``phys``, without timing or statistics."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"data to store must be bytes-like, got {type(data).__name__}")
        self.check_range(phys, len(data))
        view = np.frombuffer(bytes(data), dtype=np.uint8)
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
        start = at if at > self.busy_until else self.busy_until
        transfer = -(-size // self.bytes_per_cycle)
        self.busy_until = start + transfer
        self.busy_cycles += transfer
        return start + transfer + self.latency

    def timed_read(self, phys: int, size: int, at: int) -> tuple[bytes, int]:
        """Read with statistics and timing: ``(data, done)``. Nothing changes on error."""
        data = self.read(phys, size)
        self.reads += 1
        self.bytes_read += size
        return data, self.access_time(at, size)

    def timed_write(self, phys: int, data: bytes, at: int) -> tuple[None, int]:
        """Write with statistics and timing: ``(None, done)``. Nothing changes on error."""
        self.write(phys, data)
        self.writes += 1
        self.bytes_written += len(data)
        return None, self.access_time(at, len(data))

    def timed_burst(
        self,
        addrs: npt.NDArray[np.int64],
        sizes: npt.NDArray[np.int64],
        writes: npt.NDArray[np.bool_],
        at: int,
    ) -> tuple[npt.NDArray[np.int64], int]:
        """Charge a burst of dependent accesses (each issued when the previous completes).

        Only timing and statistics: a burst describes traffic, not data. Returns the
        per-access latencies and the completion cycle of the last access.

        Raises:
            SegmentationFault: an access leaves RAM (then nothing is charged).
        """
        if len(addrs) == 0:
            return np.zeros(0, dtype=np.int64), at
        ends = addrs + sizes
        if int(addrs.min()) < 0 or int(ends.max()) > self.size or int(sizes.min()) <= 0:
            bad = np.flatnonzero((addrs < 0) | (ends > self.size) | (sizes <= 0))[0]
            self.check_range(int(addrs[bad]), int(sizes[bad]))
        transfers = -(-sizes // self.bytes_per_cycle)
        latencies = transfers + self.latency
        # One requester issuing in order: only the first access can find the channel busy.
        wait = max(0, self.busy_until - at)
        latencies[0] += wait
        done = at + int(latencies.sum())
        self.busy_until = done - self.latency
        self.busy_cycles += int(transfers.sum())
        n_writes = int(writes.sum())
        self.writes += n_writes
        self.reads += len(addrs) - n_writes
        written = int(sizes[writes].sum())
        self.bytes_written += written
        self.bytes_read += int(sizes.sum()) - written
        return latencies, done

    def statistics(self) -> RamStatistics:
        return RamStatistics(
            reads=self.reads,
            writes=self.writes,
            bytes_read=self.bytes_read,
            bytes_written=self.bytes_written,
            busy_cycles=self.busy_cycles,
            pages_touched=self.pages_touched,
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
    """The RAM unit's actor: answers ReadPhys, WritePhys and BurstPhys with the model."""

    def __init__(self, model: RamModel, **kwargs: object) -> None:
        super().__init__("ram", **kwargs)  # type: ignore[arg-type]
        self.model = model

    @handles(ReadPhys)
    def _read(self, msg: ReadPhys, at: int) -> tuple[bytes, int]:
        return self.model.timed_read(msg.phys, msg.size, at)

    @handles(WritePhys)
    def _write(self, msg: WritePhys, at: int) -> tuple[None, int]:
        return self.model.timed_write(msg.phys, msg.data, at)

    @handles(BurstPhys)
    def _burst(self, msg: BurstPhys, at: int) -> tuple[npt.NDArray[np.int64], int]:
        return self.model.timed_burst(msg.addrs, msg.sizes, msg.writes, at)

    def statistics(self) -> RamStatistics:
        return self.model.statistics()
