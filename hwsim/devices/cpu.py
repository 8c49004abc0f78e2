"""The CPU unit: loads and stores at virtual addresses, one at a time or in numpy batches.

An access goes the way the hardware sends it: the CPU's MMU (``"mmu{i}"``) translates each
page of it through the TLB, walking the page tables on a miss (through the L1, as x86's
walker reads them, unless ``TlbConfig(walk_through_caches=False)``); the CPU's L1
(``"l1d{i}"``) serves the physical lines, from the shared L2 or RAM on a miss, kept
coherent with the other L1s. A translation that fails goes to the kernel's page-fault
handler (``"fault"``), and the access ends with the :class:`~hwsim.SegmentationFault` it
returns (naming the address and the reason); the machine keeps running.

Three modes, one code path. Each access is written once, as a generator of requests to the
units (:meth:`Cpu._load_steps` and friends); two drivers run it:

- timing (``await cpu.load(...)``): each request is a message to the unit's actor, the
  replies carry completion cycles, and the caller sleeps until the access completes, so
  virtual time advances (with a quantum: once the CPU is that far ahead);
- atomic (``cpu.load_nowait(...)``): the same handlers called directly
  (:meth:`~hwsim.core.actor.Actor.call_nowait`), as gem5's atomic mode does: the same data,
  counts and latencies, the CPU's own cycle advances, global virtual time does not;
- functional (``cpu.peek(...)``, ``cpu.poke(...)``): read or write memory at a virtual
  address for set-up and debugging - the page tables walked without the TLB, the caches'
  coherent contents - without statistics or time.

The batched form (``await cpu.access(addrs, sizes, writes)``) is the fast path for traces:
one message to the MMU translates the whole batch (recording the walker's accesses), one to
the L1 runs the lines of every access - walks included, in order - as a dependent chain; the
reply is per-access latencies (:class:`BatchResult`). Stores in a batch move no data (a
trace has none); their lines become dirty as with any store.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Generator
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
import trio

from ..core.actor import REFUSALS, Actor, handles
from ..core.clock import current_cycle
from ..errors import SegmentationFault
from .access import plan_trace, split_batch, split_pages
from .cache_unit import CacheLoad, CacheStore, LineTrace
from .coherence import CoherentHierarchy
from .irq import InterruptController, IrqDelivery
from .mmu import Mmu, RecordWalkCycles, TraceTranslation, Translate, TranslateTrace
from .pagefault import PageFault

# A request a CPU makes of a unit: (unit, message, issue cycle); the reply is (value, done).
_Request = tuple[Actor, object, int]
_Steps = Generator[_Request, tuple[Any, int], tuple[Any, int]]


@attrs.frozen
class CpuStatistics:
    """What a CPU has issued so far; ``cycles`` is the sum of the accesses' latencies
    (faults included), ``faults`` the accesses that ended in a fault."""

    loads: int
    stores: int
    bytes_loaded: int
    bytes_stored: int
    cycles: int
    faults: int
    interrupts: int


#: The interrupt being handled by the current task's CPU, if any (see :func:`current_irq`).
_current_irq: contextvars.ContextVar[IrqDelivery | None] = contextvars.ContextVar(
    "hwsim_current_irq", default=None
)


def current_irq() -> IrqDelivery | None:
    """Inside an interrupt handler: the delivery being handled (its line, the CPU it runs
    on, when it was raised and delivered); elsewhere None."""
    return _current_irq.get()


@attrs.frozen(eq=False)
class BatchResult:
    """The outcome of a batched access.

    Attributes:
        latencies: cycles each access took (int64 array, one per access): TLB lookup,
            page walk if any, and every cache line it touched.
        start: the cycle the first access was issued.
        done: the cycle the last access completed.
        tlb_misses: page walks the batch caused.
        walk_cycles: cycles those walks took.
    """

    latencies: npt.NDArray[np.int64]
    start: int
    done: int
    tlb_misses: int = 0
    walk_cycles: int = 0

    @property
    def accesses(self) -> int:
        return len(self.latencies)

    @property
    def cycles(self) -> int:
        return self.done - self.start

    def summary(self) -> dict[str, float]:
        """Count, total cycles, mean/max latency and the walks, as plain numbers."""
        n = len(self.latencies)
        return {
            "accesses": n,
            "cycles": self.cycles,
            "mean_latency": float(self.latencies.mean()) if n else 0.0,
            "max_latency": int(self.latencies.max()) if n else 0,
            "tlb_misses": self.tlb_misses,
            "walk_cycles": self.walk_cycles,
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
class Batch:
    addrs: npt.NDArray[np.uint64]
    sizes: npt.NDArray[np.int64]
    writes: npt.NDArray[np.bool_]


def _check_addr(addr: object) -> int:
    if addr.__class__ is int and addr >= 0:  # the common case
        return addr
    if isinstance(addr, bool) or not isinstance(addr, int | np.integer):
        raise TypeError(f"an address is an int, got {addr!r}")
    if addr < 0:
        raise ValueError(f"a virtual address cannot be negative, got {addr}")
    return int(addr)


def _check_size(size: object) -> int:
    if size.__class__ is int and size > 0:  # the common case
        return size
    if isinstance(size, bool) or not isinstance(size, int | np.integer):
        raise TypeError(f"an access size is an int, got {size!r}")
    if size <= 0:
        raise ValueError(f"access size must be positive, got {size}")
    return int(size)


def _check_data(data: object) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data to store must be bytes-like, got {type(data).__name__}")
    raw = bytes(data)
    if not raw:
        raise ValueError("cannot store zero bytes")
    return raw


def as_batch(
    addrs: npt.ArrayLike,
    sizes: npt.ArrayLike = 8,
    writes: npt.ArrayLike = False,
    base: int = 0,
    limit: int = 1 << 64,
) -> Batch:
    """Validate and normalise a batched access: uint64 addresses (``base`` + ``addrs``),
    int64 sizes and bool writes, of one length. Nothing is sent on error."""
    a = np.asarray(addrs)
    if a.ndim != 1 or not (a.size == 0 or np.issubdtype(a.dtype, np.integer)):
        raise TypeError("addrs must be a 1-D array of integer addresses")
    if a.size and np.issubdtype(a.dtype, np.signedinteger) and int(a.min()) < 0:
        raise ValueError(f"addresses cannot be negative, got {int(a.min())}")
    base = _check_addr(base)
    if base >= limit:
        raise ValueError(f"base {base:#x} is not a virtual address")
    va = a.astype(np.uint64)
    if base:
        va = va + np.uint64(base)
    s = np.broadcast_to(np.asarray(sizes), va.shape)
    if s.size and not np.issubdtype(s.dtype, np.integer):
        raise TypeError(f"sizes must be integers, got dtype {s.dtype}")
    s = s.astype(np.int64)
    w = np.broadcast_to(np.asarray(writes), va.shape)
    if w.size and w.dtype != np.bool_:
        raise TypeError(f"writes must be bools, got dtype {w.dtype}")
    w = w.astype(np.bool_)
    if s.size:
        if int(s.min()) <= 0:
            raise ValueError(f"access sizes must be positive, got {int(s.min())}")
        if base and int(va.min()) < base:
            raise ValueError("base + addrs wraps past the end of the address space")
        # Cheap bound first; the exact (Python int) check only when it is inconclusive.
        if int(va.max()) + int(s.max()) > limit:
            ends = va.astype(object) + s.astype(object)
            if max(ends) > limit:
                raise ValueError(
                    f"an access runs past the end of the {limit:#x}-byte address space"
                )
    return Batch(va, s, w)


class Cpu(Actor):
    """A CPU. Use ``machine.cpus[i]``.

    Example:
        >>> import hwsim
        >>> async def main():
        ...     async with hwsim.boot(hwsim.MachineConfig()) as m:
        ...         buf = await m.kernel.kmalloc(64)
        ...         await m.cpus[0].store(buf, b"hello")
        ...         return await m.cpus[0].load(buf, 5), m.stats()["tlb0"]["misses"]
        >>> hwsim.run(main)
        (b'hello', 1)

    Args:
        index: the CPU's number.
        mmu: its MMU unit.
        l1d: its L1 data cache unit.
        hierarchy: the machine's caches (for the functional path).
        fault: the kernel's page-fault handler (a unit answering
            :class:`~hwsim.kernel.fault.HandlePageFault`-style messages made by
            ``fault_message``).
        fault_message: builds the message for ``fault`` from a PageFault and the CPU number.
        explain_fault: the handler's verdict on a fault without counting it (functional path).
        quantum: see :attr:`hwsim.MachineConfig.quantum`.
        walk_bypass_cycles: None if the walker reads through the L1, else what one of its
            RAM accesses costs in a batch.
    """

    def __init__(
        self,
        index: int,
        *,
        mmu: Mmu,
        l1d: Actor,
        hierarchy: CoherentHierarchy,
        fault: Actor,
        fault_message: Callable[[PageFault, int], object],
        explain_fault: Callable[[PageFault], SegmentationFault],
        quantum: int = 0,
        walk_bypass_cycles: int | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(f"cpu{index}", **kwargs)  # type: ignore[arg-type]
        self.index = index
        self.mmu = mmu
        self.l1d = l1d
        self.hierarchy = hierarchy
        self.fault = fault
        self._fault_message = fault_message
        self._explain = explain_fault
        self.quantum = quantum
        self.walk_bypass_cycles = walk_bypass_cycles
        self.irq_controller: InterruptController | None = None  # set by the machine
        self.cycle = 0  # the CPU's own clock: completion of its last operation
        self.loads = self.stores = self.bytes_loaded = self.bytes_stored = 0
        self.cycles = self.faults = self.interrupts = 0

    def statistics(self) -> CpuStatistics:
        return CpuStatistics(
            loads=self.loads,
            stores=self.stores,
            bytes_loaded=self.bytes_loaded,
            bytes_stored=self.bytes_stored,
            cycles=self.cycles,
            faults=self.faults,
            interrupts=self.interrupts,
        )

    @property
    def _limit(self) -> int:
        return self.mmu.model.address_limit

    def _issue_cycle(self, now: int) -> int:
        return now if now > self.cycle else self.cycle

    def issue_cycle(self) -> int:
        """The cycle the CPU's next operation starts: its own clock or global time."""
        return self._issue_cycle(current_cycle())

    async def sync(self, done: int) -> None:
        """Record that the CPU's work runs until ``done`` and let virtual time catch up.

        With ``quantum == 0`` this sleeps until ``done``; otherwise only once the CPU is more
        than ``quantum`` cycles ahead of global time (a TLM-2.0 quantum keeper).
        """
        if done > self.cycle:
            self.cycle = done
        if done - trio.current_time() > self.quantum:
            await trio.sleep_until(done)

    def _check_range(self, addr: object, size: int) -> int:
        va = _check_addr(addr)
        if va + size > self._limit:
            raise ValueError(
                f"an access of {size} bytes at {va:#x} runs past the end of the address space"
            )
        return va

    # ------------------------------------------------------------------ timing mode

    async def load(self, addr: int, size: int) -> bytes:
        """Read ``size`` bytes at virtual ``addr``; virtual time advances by the latency.

        Raises:
            SegmentationFault: a page of the range is not mapped, is a guard page, or the
                rights forbid the access (the message says which, as the kernel's oops).
            ValueError, TypeError: a non-positive size or a malformed address.
        """
        size = _check_size(size)
        va = self._check_range(addr, size)
        if self._on_this_cpu():
            data, done = await self._drive(self._load_steps(va, size, self.issue_cycle()))
        else:
            data, done = await self.call(Load(va, size))
        await self.sync(done)
        return data  # type: ignore[no-any-return]

    async def store(self, addr: int, data: bytes) -> None:
        """Write ``data`` at virtual ``addr``; virtual time advances by the latency.

        Raises:
            SegmentationFault: as :meth:`load`, or a read-only page.
        """
        raw = _check_data(data)
        va = self._check_range(addr, len(raw))
        if self._on_this_cpu():
            _, done = await self._drive(self._store_steps(va, raw, self.issue_cycle()))
        else:
            _, done = await self.call(Store(va, raw))
        await self.sync(done)

    async def access(
        self,
        addrs: npt.ArrayLike,
        sizes: npt.ArrayLike = 8,
        writes: npt.ArrayLike = False,
        *,
        base: int = 0,
    ) -> BatchResult:
        """Run a trace of dependent accesses in one message; time advances once, to the end.

        Args:
            addrs: 1-D integer array of virtual addresses (or offsets from ``base``).
            sizes: bytes per access (scalar or array).
            writes: True for stores (scalar or array).
            base: added to every address: ``access(np.arange(0, 4096, 64), base=buf)``
                reads a buffer without building uint64 kernel addresses by hand.

        Returns:
            per-access latencies, the start/done cycles and the walks.

        Raises:
            SegmentationFault: an access faults; the accesses before it took effect (as
                issued one by one) and ``index`` on the error names it.
        """
        batch = as_batch(addrs, sizes, writes, base, self._limit)
        if self._on_this_cpu():
            result, done = await self._drive(self._batch_steps(batch, self.issue_cycle()))
        else:
            result, done = await self.call(batch)
        await self.sync(done)
        return result  # type: ignore[no-any-return]

    def _on_this_cpu(self) -> bool:
        """Whether the caller is code running on this CPU (an interrupt handler): its
        accesses run at once, in the CPU's own task, instead of queueing behind it."""
        return self._task is not None and trio.lowlevel.current_task() is self._task

    # ------------------------------------------------------------------ interrupts

    def _irqc(self) -> InterruptController:
        if self.irq_controller is None:
            raise RuntimeError(f"{self.name} has no interrupt controller")
        return self.irq_controller

    def local_irq_save(self) -> int:
        """``local_irq_save()``: disable this CPU's interrupts; returns the flags to give
        back to :meth:`local_irq_restore`. Interrupts raised meanwhile wait (pending)."""
        return self._irqc().model.local_irq_save(self.index)

    def local_irq_restore(self, flags: int) -> None:
        """``local_irq_restore(flags)``: when that re-enables interrupts, the pending ones
        are delivered now (their handlers run on this CPU before its next access)."""
        if isinstance(flags, bool) or not isinstance(flags, int):
            raise TypeError(f"flags come from local_irq_save(), got {flags!r}")
        irqc = self._irqc()
        irqc.deliver(irqc.model.local_irq_restore(self.index, flags, at=self.issue_cycle()))

    def irqs_disabled(self) -> bool:
        """``irqs_disabled()``."""
        return self._irqc().model.irqs_disabled(self.index)

    @handles(IrqDelivery)
    async def _interrupt(self, msg: IrqDelivery, at: int) -> tuple[None, int]:
        # Between two accesses: the handlers run in this CPU's task, from the delivery
        # cycle (or when the CPU finishes what it was doing). An exception escaping a
        # handler is an oops in interrupt context: the machine stops (ActorCrashed).
        self.interrupts += 1
        if at > self.cycle:
            self.cycle = at
        if self.cycle > trio.current_time():
            # The CPU was busy until later: the handler starts then, and what it does
            # (programming a device, say) must not happen before (whatever the quantum).
            await trio.sleep_until(self.cycle)
        token = _current_irq.set(msg)
        # The handlers installed now: one freed since the raise does not run (free_irq
        # waits for running handlers and none runs afterwards: synchronize_irq).
        irqc = self.irq_controller
        handlers = msg.handlers if irqc is None else irqc.model.handlers(msg.irq)
        try:
            for handler in handlers:
                await handler(msg.irq)  # type: ignore[operator]
        finally:
            _current_irq.reset(token)
        return None, self.cycle

    async def _drive(self, steps: _Steps) -> tuple[Any, int]:
        """Run an access's requests as messages to the units."""
        try:
            unit, msg, at = next(steps)
            while True:
                try:
                    reply = await unit.call(msg, at)
                except REFUSALS as exc:
                    unit, msg, at = steps.throw(exc)
                else:
                    unit, msg, at = steps.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    @handles(Load)
    async def _load(self, msg: Load, at: int) -> tuple[bytes, int]:
        return await self._drive(self._load_steps(msg.addr, msg.size, self._issue_cycle(at)))

    @handles(Store)
    async def _store(self, msg: Store, at: int) -> tuple[None, int]:
        return await self._drive(self._store_steps(msg.addr, msg.data, self._issue_cycle(at)))

    @handles(Batch)
    async def _batch(self, msg: Batch, at: int) -> tuple[BatchResult, int]:
        return await self._drive(self._batch_steps(msg, self._issue_cycle(at)))

    # ------------------------------------------------------------------ atomic mode

    def _drive_nowait(self, steps: _Steps) -> tuple[Any, int]:
        """Run an access's requests as direct calls of the same handlers."""
        try:
            unit, msg, at = next(steps)
            while True:
                try:
                    reply = unit.call_nowait(msg, at)
                except REFUSALS as exc:
                    unit, msg, at = steps.throw(exc)
                else:
                    unit, msg, at = steps.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def load_nowait(self, addr: int, size: int) -> bytes:
        """Atomic twin of :meth:`load`: same models, same counts; virtual time stays put."""
        size = _check_size(size)
        va = self._check_range(addr, size)
        data, _ = self._drive_nowait(self._load_steps(va, size, self.issue_cycle()))
        return data  # type: ignore[no-any-return]

    def store_nowait(self, addr: int, data: bytes) -> None:
        """Atomic twin of :meth:`store`."""
        raw = _check_data(data)
        va = self._check_range(addr, len(raw))
        self._drive_nowait(self._store_steps(va, raw, self.issue_cycle()))

    def access_nowait(
        self,
        addrs: npt.ArrayLike,
        sizes: npt.ArrayLike = 8,
        writes: npt.ArrayLike = False,
        *,
        base: int = 0,
    ) -> BatchResult:
        """Atomic twin of :meth:`access`."""
        batch = as_batch(addrs, sizes, writes, base, self._limit)
        result, _ = self._drive_nowait(self._batch_steps(batch, self.issue_cycle()))
        return result  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ functional mode

    def _phys_pieces(self, addr: int, size: int, write: bool) -> list[tuple[int, int, int]]:
        """``(phys, size, offset)`` per page, walking the tables without the TLB."""
        out = []
        for va, n, offset in split_pages(addr, size):
            try:
                tr = self.mmu.model.walk_for(va, write)
            except PageFault as fault:
                raise self._explain(fault) from None
            out.append((tr.phys, n, offset))
        return out

    def peek(self, addr: int, size: int) -> bytes:
        """Functional read: the bytes at virtual ``addr`` as the CPU would see them (dirty
        cached copies included), without statistics, TLB or time.

        Raises:
            SegmentationFault: the range is not mapped (a guard page, say).
        """
        size = _check_size(size)
        va = self._check_range(addr, size)
        return b"".join(self.hierarchy.read(p, n) for p, n, _ in self._phys_pieces(va, size, False))

    def poke(self, addr: int, data: bytes) -> None:
        """Functional write: store ``data`` at virtual ``addr`` in memory and every cached
        copy, without statistics, TLB, dirtying a line or time. All or nothing: every page
        is checked first.

        Raises:
            SegmentationFault: not mapped, or a read-only page.
        """
        raw = _check_data(data)
        va = self._check_range(addr, len(raw))
        for phys, n, offset in self._phys_pieces(va, len(raw), True):
            self.hierarchy.write(phys, raw[offset : offset + n])

    # ------------------------------------------------------------------ the accesses

    def _fault_steps(self, fault: PageFault, start: int, t: int) -> Generator[_Request, Any, None]:
        """Hand ``fault`` to the kernel, then end the access with the error it returns."""
        at = t if fault.done is None else max(t, fault.done)
        error, done = yield self.fault, self._fault_message(fault, self.index), at
        self.faults += 1
        self._retire(start, done)
        raise error

    def _translate_steps(
        self, addr: int, size: int, write: bool, at: int
    ) -> Generator[_Request, Any, tuple[list[tuple[int, int, int]], int]]:
        """Translate every page of an access before any byte moves: an access that faults
        on its second page changes nothing (x86 faults a split access as one instruction)."""
        t = at
        pieces = []
        try:
            for va, n, offset in split_pages(addr, size):
                phys, t = yield self.mmu, Translate(va, write), t
                pieces.append((phys, n, offset))
        except PageFault as fault:
            yield from self._fault_steps(fault, at, t)
        return pieces, t

    def _load_steps(self, addr: int, size: int, at: int) -> _Steps:
        pieces, t = yield from self._translate_steps(addr, size, False, at)
        out = []
        for phys, n, _ in pieces:
            data, t = yield self.l1d, CacheLoad(phys, n), t
            out.append(data)
        self.loads += 1
        self.bytes_loaded += size
        self._retire(at, t)
        return b"".join(out), t

    def _store_steps(self, addr: int, data: bytes, at: int) -> _Steps:
        pieces, t = yield from self._translate_steps(addr, len(data), True, at)
        for phys, n, offset in pieces:
            _, t = yield self.l1d, CacheStore(phys, data[offset : offset + n]), t
        self.stores += 1
        self.bytes_stored += len(data)
        self._retire(at, t)
        return None, t

    def _batch_steps(self, batch: Batch, at: int) -> _Steps:
        n = len(batch.addrs)
        if n == 0:
            return BatchResult(np.zeros(0, dtype=np.int64), at, at), at
        pieces = split_batch(batch.addrs, batch.sizes, batch.writes)
        tr: TraceTranslation
        tr, t = yield self.mmu, TranslateTrace(pieces.vaddrs, pieces.writes), at
        mmu = self.mmu.model
        phys, walk_log = tr.phys, tr.walk_log
        beyond: int | None = None  # the first piece mapped past RAM (a corrupted PTE)
        ends = phys + pieces.sizes[: len(phys)]
        if len(phys) and int(ends.max()) > self.hierarchy.size:
            # The batch ends there: its walk happened, what was translated after it did not.
            beyond = int(np.argmax(ends > self.hierarchy.size))
            phys = phys[:beyond]
            walk_log = [w for w in walk_log if w[0] <= beyond]
        plan = plan_trace(
            pieces,
            phys,
            walk_log,
            line=self.hierarchy.line,
            tlb_latency=mmu.tlb_latency,
            bypass_cycles=self.walk_bypass_cycles,
        )
        lat = np.zeros(0, dtype=np.int64)
        if len(plan.lines):
            lat, t = yield self.l1d, LineTrace(plan.lines, plan.writes, plan.gaps), t
        walks = len({p for p, _, w in walk_log if not w})
        walk_cycles = plan.walk_cycles(lat)
        if walks:
            _, t = yield self.mmu, RecordWalkCycles(walk_cycles), t
        latencies = plan.latencies(lat, n)
        if beyond is not None:
            index = int(pieces.owner[beyond])
            self._count_batch(batch, index)
            self._retire(at, t)
            self.faults += 1
            error = SegmentationFault(
                f"machine check: access {index} of the batch, at {int(pieces.vaddrs[beyond]):#x}, "
                f"is mapped to physical {int(tr.phys[beyond]):#x}, beyond the end of RAM "
                f"({self.hierarchy.size:#x} bytes): a page-table entry was overwritten",
                address=int(pieces.vaddrs[beyond]),
            )
            error.index = index  # type: ignore[attr-defined]
            raise error
        done = n
        if tr.fault is not None:
            assert tr.fault.index is not None
            done = int(pieces.owner[tr.fault.index])
        self._count_batch(batch, done)
        if tr.fault is not None:
            tr.fault.index = done  # the access, not the piece
            t += plan.tail_cycles
            yield from self._fault_steps(tr.fault, at, t)
        self._retire(at, t)
        return BatchResult(latencies, at, t, walks, walk_cycles), t

    # ------------------------------------------------------------------ bookkeeping

    def _retire(self, at: int, done: int) -> None:
        self.cycles += done - at
        self.cycle = done

    def _count_batch(self, batch: Batch, n: int) -> None:
        """Count the first ``n`` accesses of ``batch``."""
        writes, sizes = batch.writes[:n], batch.sizes[:n]
        n_writes = int(writes.sum())
        stored = int(sizes[writes].sum())
        self.loads += n - n_writes
        self.stores += n_writes
        self.bytes_stored += stored
        self.bytes_loaded += int(sizes.sum()) - stored
