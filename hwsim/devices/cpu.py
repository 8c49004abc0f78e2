"""The CPU unit: issues loads and stores, one at a time or in numpy bursts.

For now a CPU addresses physical memory directly and its memory port is the RAM unit; the
MMU (with its TLB and page-table walker) and the caches slot in between as later units, by
replacing the port — the CPU only knows it sends ReadPhys/WritePhys/BurstPhys downstream.

Three ways to run an access, all through the same models:

- timing (``await cpu.load(...)``): messages through the actors, the caller sleeps until
  the reply's completion cycle, so virtual time advances;
- atomic (``cpu.load_nowait(...)``): the same model methods called directly, as gem5's
  atomic mode does: the same data, counts and latencies, and the CPU's own cycle counter
  advances, but the machine's virtual time does not (nothing sleeps);
- batched (``await cpu.access(addrs, sizes, writes)``): one message for a whole trace,
  per-access latencies back as a numpy array — the fast path for long traces.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import numpy as np
import numpy.typing as npt
import trio

from ..core.actor import Actor, handles
from .ram import BurstPhys, ReadPhys, WritePhys

if TYPE_CHECKING:
    from .ram import Ram


@attrs.frozen
class CpuStatistics:
    """What a CPU has issued so far; ``cycles`` is the sum of the accesses' latencies."""

    loads: int
    stores: int
    bytes_loaded: int
    bytes_stored: int
    cycles: int


@attrs.frozen(eq=False)
class BatchResult:
    """The outcome of a batched access.

    Attributes:
        latencies: cycles each access took (int64 array, one per access).
        start: the cycle the first access was issued.
        done: the cycle the last access completed.
    """

    latencies: npt.NDArray[np.int64]
    start: int
    done: int

    @property
    def accesses(self) -> int:
        return len(self.latencies)

    @property
    def cycles(self) -> int:
        return self.done - self.start

    def summary(self) -> dict[str, float]:
        """Count, total cycles and mean/max latency, as plain numbers."""
        n = len(self.latencies)
        return {
            "accesses": n,
            "cycles": self.cycles,
            "mean_latency": float(self.latencies.mean()) if n else 0.0,
            "max_latency": int(self.latencies.max()) if n else 0,
        }


@attrs.frozen
class Load:
    addr: int
    size: int


@attrs.frozen
class Store:
    addr: int
    data: bytes


@attrs.frozen(eq=False)
class Burst:
    addrs: npt.NDArray[np.int64]
    sizes: npt.NDArray[np.int64]
    writes: npt.NDArray[np.bool_]


def _check_addr(addr: object) -> int:
    if isinstance(addr, bool) or not isinstance(addr, int | np.integer):
        raise TypeError(f"an address is an int, got {addr!r}")
    return int(addr)


def _check_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int | np.integer):
        raise TypeError(f"an access size is an int, got {size!r}")
    if size <= 0:
        raise ValueError(f"access size must be positive, got {size}")
    return int(size)


def _check_data(data: object) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data to store must be bytes-like, got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError("cannot store zero bytes")
    return bytes(data)


def as_burst(
    addrs: npt.ArrayLike, sizes: npt.ArrayLike = 8, writes: npt.ArrayLike = False
) -> Burst:
    """Validate and normalise a batched access into int64/bool arrays of one length."""
    a = np.asarray(addrs)
    if a.ndim != 1 or not (a.size == 0 or np.issubdtype(a.dtype, np.integer)):
        raise TypeError("addrs must be a 1-D array of integer addresses")
    a = a.astype(np.int64, copy=False)
    s = np.broadcast_to(np.asarray(sizes, dtype=np.int64), a.shape).copy()
    w = np.broadcast_to(np.asarray(writes, dtype=np.bool_), a.shape).copy()
    if s.size and int(s.min()) <= 0:
        raise ValueError(f"access sizes must be positive, got {int(s.min())}")
    return Burst(a, s, w)


class Cpu(Actor):
    """A CPU. Use ``machine.cpus[i]``.

    Example:
        >>> import hwsim
        >>> async def main():
        ...     async with hwsim.boot(hwsim.MachineConfig()) as m:
        ...         await m.cpus[0].store(0x1000, b"hello")
        ...         return await m.cpus[0].load(0x1000, 5), m.now
        >>> hwsim.run(main)
        (b'hello', 202)
    """

    def __init__(self, index: int, ram: Ram, *, quantum: int = 0, **kwargs: object) -> None:
        super().__init__(f"cpu{index}", **kwargs)  # type: ignore[arg-type]
        self.index = index
        self.ram = ram
        self.quantum = quantum
        self.cycle = 0  # the CPU's own clock: completion of its last operation
        self.loads = 0
        self.stores = 0
        self.bytes_loaded = 0
        self.bytes_stored = 0
        self.cycles = 0

    def statistics(self) -> CpuStatistics:
        return CpuStatistics(
            loads=self.loads,
            stores=self.stores,
            bytes_loaded=self.bytes_loaded,
            bytes_stored=self.bytes_stored,
            cycles=self.cycles,
        )

    def _issue_cycle(self, now: int) -> int:
        return now if now > self.cycle else self.cycle

    def issue_cycle(self) -> int:
        """The cycle the CPU's next operation starts: its own clock or global time."""
        return self._issue_cycle(int(trio.current_time()))

    async def sync(self, done: int) -> None:
        """Record that the CPU's work runs until ``done`` and let virtual time catch up.

        With ``quantum == 0`` this sleeps until ``done``; otherwise only once the CPU is more
        than ``quantum`` cycles ahead of global time (a TLM-2.0 quantum keeper).
        """
        if done > self.cycle:
            self.cycle = done
        if done - trio.current_time() > self.quantum:
            await trio.sleep_until(done)

    def _retire(self, at: int, done: int) -> None:
        self.cycles += done - at
        self.cycle = done

    # ------------------------------------------------------------------ timing mode

    async def load(self, addr: int, size: int) -> bytes:
        """Read ``size`` bytes at ``addr``; virtual time advances by the access's latency.

        Raises:
            SegmentationFault: the range leaves physical memory.
            ValueError, TypeError: a non-positive size or a non-integer address.
        """
        data, done = await self.call(Load(_check_addr(addr), _check_size(size)))
        await self.sync(done)
        return data  # type: ignore[no-any-return]

    async def store(self, addr: int, data: bytes) -> None:
        """Write ``data`` at ``addr``; virtual time advances by the access's latency."""
        _, done = await self.call(Store(_check_addr(addr), _check_data(data)))
        await self.sync(done)

    async def access(
        self, addrs: npt.ArrayLike, sizes: npt.ArrayLike = 8, writes: npt.ArrayLike = False
    ) -> BatchResult:
        """Run a trace of dependent accesses in one message; time advances once, to the end.

        Args:
            addrs: 1-D integer array of addresses.
            sizes: bytes per access (scalar or array).
            writes: True for stores (scalar or array).

        Returns:
            per-access latencies and the start/done cycles.
        """
        burst = as_burst(addrs, sizes, writes)
        result, done = await self.call(burst)
        await self.sync(done)
        return result  # type: ignore[no-any-return]

    @handles(Load)
    async def _load(self, msg: Load, at: int) -> tuple[bytes, int]:
        at = self._issue_cycle(at)
        data, done = await self.ram.call(ReadPhys(msg.addr, msg.size), at)
        self._count_load(msg.size, at, done)
        return data, done

    @handles(Store)
    async def _store(self, msg: Store, at: int) -> tuple[None, int]:
        at = self._issue_cycle(at)
        _, done = await self.ram.call(WritePhys(msg.addr, msg.data), at)
        self._count_store(len(msg.data), at, done)
        return None, done

    @handles(Burst)
    async def _burst(self, msg: Burst, at: int) -> tuple[BatchResult, int]:
        at = self._issue_cycle(at)
        latencies, done = await self.ram.call(BurstPhys(msg.addrs, msg.sizes, msg.writes), at)
        return self._count_burst(msg, latencies, at, done), done

    # ------------------------------------------------------------------ atomic mode

    def load_nowait(self, addr: int, size: int) -> bytes:
        """Atomic twin of :meth:`load`: same models, same counts; virtual time stays put."""
        at = self._issue_cycle(int(trio.current_time()))
        data, done = self.ram.model.timed_read(_check_addr(addr), _check_size(size), at)
        self._count_load(size, at, done)
        return data

    def store_nowait(self, addr: int, data: bytes) -> None:
        """Atomic twin of :meth:`store`."""
        at = self._issue_cycle(int(trio.current_time()))
        payload = _check_data(data)
        _, done = self.ram.model.timed_write(_check_addr(addr), payload, at)
        self._count_store(len(payload), at, done)

    def access_nowait(
        self, addrs: npt.ArrayLike, sizes: npt.ArrayLike = 8, writes: npt.ArrayLike = False
    ) -> BatchResult:
        """Atomic twin of :meth:`access`."""
        burst = as_burst(addrs, sizes, writes)
        at = self._issue_cycle(int(trio.current_time()))
        latencies, done = self.ram.model.timed_burst(burst.addrs, burst.sizes, burst.writes, at)
        return self._count_burst(burst, latencies, at, done)

    # ------------------------------------------------------------------ bookkeeping

    def _count_load(self, size: int, at: int, done: int) -> None:
        self.loads += 1
        self.bytes_loaded += size
        self._retire(at, done)

    def _count_store(self, size: int, at: int, done: int) -> None:
        self.stores += 1
        self.bytes_stored += size
        self._retire(at, done)

    def _count_burst(
        self, burst: Burst, latencies: npt.NDArray[np.int64], at: int, done: int
    ) -> BatchResult:
        n_writes = int(burst.writes.sum())
        stored = int(burst.sizes[burst.writes].sum())
        self.loads += len(burst.addrs) - n_writes
        self.stores += n_writes
        self.bytes_stored += stored
        self.bytes_loaded += int(burst.sizes.sum()) - stored
        self._retire(at, done)
        return BatchResult(latencies, at, done)
