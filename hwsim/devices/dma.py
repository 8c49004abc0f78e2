"""The DMA controller: channels that move real bytes between memory and devices.

A transfer is a list of descriptors (:class:`DmaDescriptor`), each one contiguous bus range:
physically contiguous without an IOMMU (bus address == physical address, as on x86), or
I/O-virtually contiguous with one (:class:`IommuModel` translates each 4 KiB page). A
controller without scatter-gather takes exactly one descriptor per transfer; with it, a
chain.

Memory. The controller is given either a :class:`~hwsim.devices.coherence.CoherentHierarchy`
(the normal case) or a bare :class:`~hwsim.devices.ram.RamModel` (no caches: coherent and
non-coherent DMA are then the same). With a hierarchy, a non-coherent controller (hwsim's
default, ``MachineConfig(dma_coherent=False)``) uses ``dma_read``/``dma_write``, which go to
RAM behind the CPU caches; a coherent one uses the snooping ``*_coherent`` twins (x86).

Timing. The engine moves ``bytes_per_cycle`` bytes a cycle, in bursts of :data:`DMA_BURST`
bytes (a cache line), and each burst occupies the one memory channel it shares with the
CPUs; every descriptor of a chain after the first is fetched from memory first (a RAM read
of :data:`DESCRIPTOR_BYTES`, its latency added to the transfer): bursts are booked in the
RAM's channel calendar as one chain, paced at the engine's speed, so a CPU streaming through
RAM delays the DMA and the DMA delays the CPU. A transfer completes at ``max(engine time,
channel time with contention) + RAM latency`` after it starts; it starts when a channel is
free (the earliest free channel, the lowest-numbered on ties). Several channels run
concurrently and compete only for the memory channel.

The model moves the bytes when a transfer is submitted (the atomic view) and returns a
:class:`Transfer` that says when it completes; an actor around it waits until ``done`` and
raises the completion interrupt.

The naive-driver detector: given ``ownership`` (``owner_of(pfn) -> str | None``, provided by
the kernel side), a descriptor naming the ``expected_owner`` of its buffer has every page it
writes checked. Writing pages that belong to someone else is what a driver does when it hands
a device a virtually contiguous (vmalloc) buffer as if it were physically contiguous: the
write goes ahead (the corruption is real) and a :class:`CorruptionReport`, worded like
KASAN's, is kept in :attr:`DmaControllerModel.reports`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import attrs
import numpy as np
import trio

from ..core.actor import Actor, handles
from ..core.timer import Timer
from ..errors import DmaDescriptorError, DmaFault, SegmentationFault
from ..units import PAGE_SHIFT, PAGE_SIZE
from .coherence import CoherentHierarchy
from .iommu import IOMMU_WALK_CYCLES as IOMMU_WALK_CYCLES
from .iommu import IommuModel as IommuModel
from .iommu import IommuStatistics as IommuStatistics
from .irq import RaiseIrq
from .ram import RamModel

#: Bytes the engine moves per memory-channel access (one cache line).
DMA_BURST = 64
#: Bus addresses must be multiples of this (the engine moves 32-bit words); lengths are free.
DMA_ALIGNMENT = 4
#: Bytes of one scatter-gather descriptor in memory (address, length, control, next).
DESCRIPTOR_BYTES = 32
# One physical piece of a descriptor: (phys, size).
_Segment = tuple[int, int]


class DmaDirection(enum.Enum):
    """Which way a descriptor moves data."""

    MEM_TO_DEV = "mem-to-dev"
    DEV_TO_MEM = "dev-to-mem"
    MEM_TO_MEM = "mem-to-mem"


MEM_TO_DEV = DmaDirection.MEM_TO_DEV
DEV_TO_MEM = DmaDirection.DEV_TO_MEM
MEM_TO_MEM = DmaDirection.MEM_TO_MEM


@runtime_checkable
class Peripheral(Protocol):
    """A simulated device at the other end of a channel."""

    def produce(self, n: int) -> bytes:
        """The next ``n`` bytes the device sends (DEV_TO_MEM)."""
        ...

    def consume(self, data: bytes) -> None:
        """Take the bytes the controller read from memory (MEM_TO_DEV)."""
        ...


@attrs.define(eq=False)  # a device is itself, not its contents: descriptors stay hashable
class FifoPeripheral:
    """A byte FIFO device: ``consume`` appends to ``received``, ``produce`` takes from
    ``to_send`` (and pads with ``fill`` when it runs dry, as a device reading an idle line)."""

    to_send: bytearray = attrs.field(factory=bytearray, converter=bytearray, repr=False)
    received: bytearray = attrs.field(factory=bytearray, repr=False)
    fill: int = 0

    def __repr__(self) -> str:
        return (
            f"FifoPeripheral(to_send=<{len(self.to_send)} bytes>, "
            f"received=<{len(self.received)} bytes>, fill={self.fill})"
        )

    def produce(self, n: int) -> bytes:
        out = bytes(self.to_send[:n])
        del self.to_send[:n]
        return out + bytes([self.fill]) * (n - len(out))

    def consume(self, data: bytes) -> None:
        self.received += data


def _nonnegative_int(instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"DmaDescriptor.{attribute.name} is an int, got {value!r}")
    if value < 0:
        raise DmaDescriptorError(f"DmaDescriptor.{attribute.name} must be >= 0, got {value:#x}")
    if attribute.name != "length" and value % DMA_ALIGNMENT:
        raise DmaDescriptorError(
            f"misaligned DMA address {value:#x}: the engine moves {DMA_ALIGNMENT}-byte words, "
            f"so bus addresses must be {DMA_ALIGNMENT}-byte aligned (kmalloc buffers are)"
        )


@attrs.frozen
class DmaDescriptor:
    """One contiguous bus range of a transfer.

    Args:
        bus_addr: the memory side: read for MEM_TO_DEV, written for DEV_TO_MEM and MEM_TO_MEM.
            A multiple of :data:`DMA_ALIGNMENT`.
        length: bytes to move, at least 1.
        direction: a :class:`DmaDirection`.
        peer: the :class:`Peripheral` for MEM_TO_DEV and DEV_TO_MEM; None for MEM_TO_MEM.
        src_bus: the source bus address of a MEM_TO_MEM copy (aligned like ``bus_addr``).
        expected_owner: who owns the buffer written (for the naive-driver detector).

    Raises:
        ValueError: zero length, a misaligned address, or a peer/source not matching the
            direction. TypeError: a field of the wrong type.
    """

    bus_addr: int = attrs.field(validator=_nonnegative_int)
    length: int = attrs.field(validator=_nonnegative_int)
    direction: DmaDirection = attrs.field(validator=attrs.validators.instance_of(DmaDirection))
    peer: Peripheral | None = None
    src_bus: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(_nonnegative_int)
    )
    expected_owner: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.length == 0:
            raise DmaDescriptorError(
                "a DMA descriptor of length 0 moves nothing: drop it from the chain"
            )
        if self.direction is MEM_TO_MEM:
            if self.src_bus is None or self.peer is not None:
                raise DmaDescriptorError("a MEM_TO_MEM descriptor needs src_bus and no peer")
        elif self.src_bus is not None or not isinstance(self.peer, Peripheral):
            raise ValueError(
                f"a {self.direction.name} descriptor needs a peer with produce()/consume() "
                "and no src_bus"
            )


@attrs.frozen
class CorruptionReport:
    """A DMA write to pages the buffer's owner does not own (KASAN's wild-memory-access).

    Attributes:
        transfer: the transfer's id; channel: the channel that did it.
        bus_addr, size: the descriptor's range; expected_owner: who owns the buffer.
        pfns: the pages written that belong to someone else, ascending.
        owners: for each of ``pfns``, its owner (None: a free page).
    """

    transfer: int
    channel: int
    bus_addr: int
    size: int
    expected_owner: str
    pfns: tuple[int, ...]
    owners: tuple[str | None, ...]

    def __str__(self) -> str:
        pages = "\n".join(
            f"page: pfn:{pfn:#x} owner:{owner or 'none (free page)'}"
            for pfn, owner in zip(self.pfns, self.owners, strict=True)
        )
        return (
            "==================================================================\n"
            f"BUG: KASAN: wild-memory-access in dma channel {self.channel} "
            f"(transfer {self.transfer})\n"
            f"Write of size {self.size} at addr {self.bus_addr:#x} by DMA device\n"
            f"The buffer belongs to {self.expected_owner}; the write also hit "
            f"{len(self.pfns)} page(s) it does not own:\n{pages}\n"
            "A device needs a physically contiguous buffer (kmalloc, dma_alloc_coherent) "
            "or a scatterlist (dma_map_sg), never a vmalloc range.\n"
            "=================================================================="
        )


@attrs.frozen
class Transfer:
    """What the controller did with one submission.

    ``status`` is ``"ok"``, or ``"corruption"`` when the transfer wrote pages its buffer's
    owner does not own (see :attr:`DmaControllerModel.reports`). Refused transfers raise and
    leave no record.
    """

    id: int
    channel: int
    start: int
    done: int
    bytes: int
    descriptors: tuple[DmaDescriptor, ...]
    status: str = "ok"
    #: The physical ranges ``(phys, size)`` the transfer reads and writes.
    touched: tuple[tuple[int, int], ...] = ()


@attrs.frozen
class DmaStatistics:
    """What the controller has done so far; ``busy_cycles`` per channel."""

    transfers: int
    bytes: int
    descriptors: int
    faults: int
    corruptions: int
    busy_cycles: tuple[int, ...]


@attrs.frozen
class _Planned:
    desc: DmaDescriptor
    dst: tuple[_Segment, ...]  # memory written (DEV_TO_MEM, MEM_TO_MEM)
    src: tuple[_Segment, ...]  # memory read (MEM_TO_DEV, MEM_TO_MEM)


class DmaControllerModel:
    """The DMA controller's functional and timing model (no trio here: an actor wraps it).

    Example:
        >>> ram = RamModel(size=1 << 20)
        >>> dma = DmaControllerModel(ram, channels=2, scatter_gather=False, mask_bits=32,
        ...                          bytes_per_cycle=8)
        >>> ram.write(0x1000, b"hello!!!")
        >>> t = dma.memcpy(0x2000, 0x1000, 8, at=0)
        >>> ram.read(0x2000, 8), t.channel, t.done
        (b'hello!!!', 0, 102)

    Args:
        memory: a CoherentHierarchy (DMA bypasses or snoops its caches) or a bare RamModel.
        channels: independent engines.
        scatter_gather: whether a transfer may be a chain of descriptors.
        mask_bits: the device's DMA mask: bus addresses must lie below ``2**mask_bits``.
        bytes_per_cycle: each engine's speed.
        coherent: whether the bus snoops the CPU caches (x86) or not (hwsim's default).
        iommu: translate bus addresses as IOVAs through this IOMMU, or None.
        ownership: ``owner_of(pfn) -> str | None`` for the naive-driver detector, or None.
    """

    def __init__(
        self,
        memory: CoherentHierarchy | RamModel,
        *,
        channels: int = 4,
        scatter_gather: bool = False,
        mask_bits: int = 32,
        bytes_per_cycle: int = 8,
        coherent: bool = False,
        iommu: IommuModel | None = None,
        ownership: Callable[[int], str | None] | None = None,
    ) -> None:
        if isinstance(memory, CoherentHierarchy):
            self.ram = memory.ram
            if coherent:
                self._read: Callable[[int, int], bytes] = memory.dma_read_coherent
                self._write: Callable[[int, bytes], None] = memory.dma_write_coherent
            else:
                self._read, self._write = memory.dma_read, memory.dma_write
        elif isinstance(memory, RamModel):
            self.ram = memory
            self._read, self._write = memory.read, memory.write
        else:
            raise TypeError(f"memory must be a CoherentHierarchy or a RamModel, got {memory!r}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if not 1 <= mask_bits <= 64:
            raise ValueError(f"mask_bits must be in 1..64, got {mask_bits}")
        if bytes_per_cycle < 1:
            raise ValueError(f"bytes_per_cycle must be >= 1, got {bytes_per_cycle}")
        self.memory = memory
        self.channels = channels
        self.scatter_gather = scatter_gather
        self.mask_bits = mask_bits
        self.mask = (1 << mask_bits) - 1
        self.bytes_per_cycle = bytes_per_cycle
        self.coherent = coherent
        self.iommu = iommu
        self.ownership = ownership
        self.reports: list[CorruptionReport] = []
        self._busy_until = [0] * channels
        self._busy_cycles = [0] * channels
        self._next_id = 1
        self._transfers = self._bytes = self._descriptors = self._faults = 0

    def __repr__(self) -> str:
        return (
            f"<DmaControllerModel {self.channels} channels, {self.mask_bits}-bit mask, "
            f"{'SG' if self.scatter_gather else 'no SG'}, "
            f"{'coherent' if self.coherent else 'non-coherent'}"
            f"{', IOMMU' if self.iommu else ''}>"
        )

    # ------------------------------------------------------------------ checks

    def _fault(self, message: str) -> DmaFault:
        self._faults += 1
        return DmaFault(message)

    def _segments(self, bus: int, size: int, *, write: bool) -> tuple[tuple[_Segment, ...], int]:
        """The physical pieces of ``[bus, bus + size)`` and the IOMMU walk cycles."""
        if bus + size - 1 > self.mask:
            raise self._fault(
                f"DMA: bus address range {bus:#x}-{bus + size - 1:#x} is beyond the device's "
                f"{self.mask_bits}-bit DMA mask ({self.mask:#x}): the device cannot address "
                "it. Use dma_map_single (swiotlb bounces the buffer below the mask) or "
                "allocate the buffer with GFP_DMA32/GFP_DMA."
            )
        if self.iommu is None:
            try:
                self.ram.check_range(bus, size)
            except SegmentationFault as exc:
                raise self._fault(f"DMA to a bus address outside RAM: {exc}") from None
            return ((bus, size),), 0
        pieces: list[_Segment] = []
        cycles = 0
        pos = bus
        end = bus + size
        while pos < end:
            chunk = min(end - pos, PAGE_SIZE - (pos & (PAGE_SIZE - 1)))
            try:
                phys, walk = self.iommu.translate(pos, write=write)
            except DmaFault:
                self._faults += 1
                raise
            cycles += walk
            if pieces and pieces[-1][0] + pieces[-1][1] == phys:
                pieces[-1] = (pieces[-1][0], pieces[-1][1] + chunk)
            else:
                pieces.append((phys, chunk))
            pos += chunk
        for phys, n in pieces:
            try:
                self.ram.check_range(phys, n)
            except SegmentationFault as exc:
                raise self._fault(f"IOMMU maps the device beyond RAM: {exc}") from None
        return tuple(pieces), cycles

    def _plan(self, chain: Sequence[DmaDescriptor] | DmaDescriptor) -> tuple[list[_Planned], int]:
        descriptors = [chain] if isinstance(chain, DmaDescriptor) else list(chain)
        if not descriptors:
            raise DmaDescriptorError("a DMA transfer needs at least one descriptor")
        for d in descriptors:
            if not isinstance(d, DmaDescriptor):
                raise TypeError(f"expected a DmaDescriptor, got {d!r}")
        if len(descriptors) > 1 and not self.scatter_gather:
            raise DmaDescriptorError(
                f"controller has no scatter-gather: a transfer is one contiguous bus range, "
                f"got {len(descriptors)} descriptors. Copy through a contiguous bounce buffer "
                "or submit one transfer per range."
            )
        planned: list[_Planned] = []
        walk = 0
        for d in descriptors:
            dst: tuple[_Segment, ...] = ()
            src: tuple[_Segment, ...] = ()
            if d.direction is MEM_TO_DEV:
                src, w = self._segments(d.bus_addr, d.length, write=False)
            else:
                dst, w = self._segments(d.bus_addr, d.length, write=True)
            walk += w
            if d.direction is MEM_TO_MEM:
                assert d.src_bus is not None
                src, w = self._segments(d.src_bus, d.length, write=False)
                walk += w
            planned.append(_Planned(d, dst, src))
        return planned, walk

    # ------------------------------------------------------------------ data

    def _produce(self, d: DmaDescriptor) -> bytes:
        """What the peer sends for a DEV_TO_MEM descriptor, checked before any byte moves."""
        assert d.peer is not None
        data = bytes(d.peer.produce(d.length))
        if len(data) != d.length:
            raise self._fault(
                f"DMA: the device produced {len(data)} bytes for a {d.length}-byte transfer"
            )
        return data

    def _move(self, p: _Planned, produced: bytes | None) -> None:
        d = p.desc
        if d.direction is DEV_TO_MEM:
            assert produced is not None
            data = produced
        else:
            data = b"".join(self._read(phys, n) for phys, n in p.src)
        if d.direction is MEM_TO_DEV:
            assert d.peer is not None
            d.peer.consume(data)
            return
        pos = 0
        for phys, n in p.dst:
            self._write(phys, data[pos : pos + n])
            pos += n

    def _check_owner(self, p: _Planned, transfer: int, channel: int) -> CorruptionReport | None:
        d = p.desc
        if self.ownership is None or d.expected_owner is None or not p.dst:
            return None
        pfns: set[int] = set()
        for phys, n in p.dst:
            pfns.update(range(phys >> PAGE_SHIFT, ((phys + n - 1) >> PAGE_SHIFT) + 1))
        wild = [(pfn, self.ownership(pfn)) for pfn in sorted(pfns)]
        wild = [(pfn, owner) for pfn, owner in wild if owner != d.expected_owner]
        if not wild:
            return None
        return CorruptionReport(
            transfer=transfer,
            channel=channel,
            bus_addr=d.bus_addr,
            size=d.length,
            expected_owner=d.expected_owner,
            pfns=tuple(pfn for pfn, _ in wild),
            owners=tuple(owner for _, owner in wild),
        )

    # ------------------------------------------------------------------ timing

    def _time(self, planned: list[_Planned], start: int) -> int:
        """Book the transfer's bursts on the memory channel; return its completion cycle."""
        size_parts = []
        write_parts = []
        for p in planned:
            full, tail = divmod(p.desc.length, DMA_BURST)
            sizes = np.full(full + (tail > 0), DMA_BURST, dtype=np.int64)
            if tail:
                sizes[-1] = tail
            if p.desc.direction is MEM_TO_MEM:  # each burst of a copy: a read, then a write
                size_parts.append(np.repeat(sizes, 2))
                write_parts.append(np.tile(np.array([False, True]), len(sizes)))
            else:
                size_parts.append(sizes)
                write_parts.append(np.full(len(sizes), p.desc.direction is DEV_TO_MEM))
        size_arr = np.concatenate(size_parts)
        w = np.concatenate(write_parts)
        moved = sum(p.desc.length for p in planned)
        ram = self.ram
        transfers = ram.transfer_cycles(size_arr)
        engine = -(-moved // self.bytes_per_cycle)
        channel = int(transfers.sum())
        k = len(transfers)
        # The chain is paced at the engine's speed: the idle cycles between bursts are
        # spread evenly (integer cycles; the remainder is made up by the engine bound).
        # Not timed_burst, whose chain waits for each access's latency.
        gap = max(0, (engine - channel) // k)
        queued = int(ram.book_chain(start, size_arr, w, transfers, gap).sum())
        chain_end = start + channel + (k - 1) * gap + queued
        done = max(chain_end, start + engine) + ram.latency
        # A chain's later descriptors are fetched from memory by the engine (the first is
        # programmed through registers): one RAM read each, before its data can move.
        fetches = len(planned) - 1
        if fetches:
            per_fetch = ram.latency + -(-DESCRIPTOR_BYTES // ram.bytes_per_cycle)
            ram.reads += fetches
            ram.bytes_read += fetches * DESCRIPTOR_BYTES
            done += fetches * per_fetch
        return done

    # ------------------------------------------------------------------ API

    def submit(self, descriptors: Sequence[DmaDescriptor] | DmaDescriptor, at: int) -> Transfer:
        """Run a transfer issued at cycle ``at`` on the earliest free channel.

        Validates every descriptor and translates every address before moving a byte, so a
        refused transfer changes no memory.

        Raises:
            ValueError: no descriptors, or several on a controller without scatter-gather.
            DmaFault: a range beyond the DMA mask, outside RAM, or not mapped in the IOMMU.
        """
        planned, walk = self._plan(descriptors)
        # The devices' bytes first: a peer that fails leaves no byte moved, no id taken.
        produced = [
            self._produce(p.desc) if p.desc.direction is DEV_TO_MEM else None for p in planned
        ]
        channel = min(range(self.channels), key=lambda c: (self._busy_until[c], c))
        start = max(at, self._busy_until[channel])
        ident = self._next_id
        self._next_id += 1
        reports = []
        for p, data in zip(planned, produced, strict=True):
            report = self._check_owner(p, ident, channel)
            self._move(p, data)
            if report is not None:
                reports.append(report)
        done = self._time(planned, start + walk)
        self.reports.extend(reports)
        self._busy_until[channel] = done
        self._busy_cycles[channel] += done - start
        moved = sum(p.desc.length for p in planned)
        self._transfers += 1
        self._bytes += moved
        self._descriptors += len(planned)
        return Transfer(
            id=ident,
            channel=channel,
            start=start,
            done=done,
            bytes=moved,
            descriptors=tuple(p.desc for p in planned),
            status="corruption" if reports else "ok",
            touched=tuple(seg for p in planned for seg in (*p.dst, *p.src)),
        )

    def memcpy(
        self,
        dst_bus: int,
        src_bus: int,
        length: int,
        at: int,
        *,
        expected_owner: str | None = None,
    ) -> Transfer:
        """Copy ``length`` bytes from ``src_bus`` to ``dst_bus`` (one MEM_TO_MEM descriptor)."""
        desc = DmaDescriptor(
            dst_bus, length, MEM_TO_MEM, src_bus=src_bus, expected_owner=expected_owner
        )
        return self.submit([desc], at)

    def statistics(self) -> DmaStatistics:
        return DmaStatistics(
            transfers=self._transfers,
            bytes=self._bytes,
            descriptors=self._descriptors,
            faults=self._faults,
            corruptions=len(self.reports),
            busy_cycles=tuple(self._busy_cycles),
        )


# ---------------------------------------------------------------------- the actor


class DmaTransfer:
    """A submitted transfer: what :meth:`DmaController.submit` and ``memcpy`` return.

    The controller runs it concurrently with the CPUs; ``await transfer.wait()`` returns
    when it has completed (its completion interrupt is raised at the same cycle).

    Attributes:
        record: the model's :class:`Transfer` (channel, start and done cycles, bytes,
            descriptors, status ``"ok"`` or ``"corruption"``).
    """

    def __init__(self, record: Transfer) -> None:
        self.record = record
        self._done = trio.Event()

    def __repr__(self) -> str:
        state = "done" if self.completed else "in flight"
        r = self.record
        return f"<DmaTransfer {r.id}: {r.bytes} bytes on channel {r.channel}, {state}>"

    @property
    def id(self) -> int:
        return self.record.id

    @property
    def done(self) -> int:
        """The cycle the transfer completes."""
        return self.record.done

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def completed(self) -> bool:
        return self._done.is_set()

    async def wait(self) -> Transfer:
        """Wait until the transfer has completed; returns its record."""
        await self._done.wait()
        return self.record


@attrs.frozen(eq=False)
class Submit:
    """Start a transfer made of ``descriptors`` (one, or a scatter-gather chain)."""

    descriptors: tuple[DmaDescriptor, ...]
    #: Raise the controller's line at completion (dmaengine's DMA_PREP_INTERRUPT). A bus
    #: master with its own line (a network card) passes False.
    interrupt: bool = True


class DmaController(Actor):
    """The DMA controller unit (``"dma"``): ``machine.dma``, also the ``dev`` a driver
    passes to the DMA API (its :attr:`device` says what it can address).

    Bytes move when a transfer is accepted (the model's atomic view); the transfer is in
    flight until its completion cycle, when :meth:`DmaTransfer.wait` returns and the
    controller raises :attr:`irq`.

    Args:
        model: the controller's model.
        timer: the machine's timer.
        irq_controller: where the completion interrupt goes.
        irq: the controller's interrupt line.
        device: what the DMA API knows of it (a ``hwsim.kernel.dma_api.DmaDevice``).
    """

    def __init__(
        self,
        model: DmaControllerModel,
        timer: Timer,
        irq_controller: Actor,
        irq: int,
        device: object,
        **kwargs: object,
    ) -> None:
        super().__init__("dma", **kwargs)  # type: ignore[arg-type]
        self.model = model
        self.timer = timer
        self.irq_controller = irq_controller
        self.irq = irq
        self.device = device
        self._in_flight: dict[int, DmaTransfer] = {}

    def __repr__(self) -> str:
        return f"<DmaController 'dma' irq {self.irq}: {self.model!r}>"

    async def submit(self, descriptors: Sequence[DmaDescriptor] | DmaDescriptor) -> DmaTransfer:
        """Start a transfer; returns at once (the transfer runs concurrently).

        Raises:
            ValueError: no descriptor, a chain on a controller without scatter-gather.
            DmaFault: a range beyond the DMA mask, outside RAM or (with the IOMMU) not
                mapped. Nothing moves.
        """
        chain = (descriptors,) if isinstance(descriptors, DmaDescriptor) else tuple(descriptors)
        handle, _ = await self.call(Submit(chain))
        return handle  # type: ignore[no-any-return]

    async def memcpy(
        self, dst: int, src: int, length: int, *, expected_owner: str | None = None
    ) -> DmaTransfer:
        """Copy ``length`` bytes between bus addresses (a MEM_TO_MEM descriptor)."""
        desc = DmaDescriptor(dst, length, MEM_TO_MEM, src_bus=src, expected_owner=expected_owner)
        return await self.submit(desc)

    @property
    def busy(self) -> bool:
        """Whether any transfer is in flight (what frees check first, cheaply)."""
        return bool(self._in_flight)

    def in_flight(self, phys: int, size: int) -> list[Transfer]:
        """The transfers not yet complete that read or write ``[phys, phys + size)``."""
        end = phys + size
        return [
            h.record
            for h in self._in_flight.values()
            if any(p < end and phys < p + n for p, n in h.record.touched)
        ]

    @property
    def reports(self) -> list[CorruptionReport]:
        """The naive-driver detector's reports (KASAN-style), oldest first."""
        return self.model.reports

    @handles(Submit)
    def _submit(self, msg: Submit, at: int) -> tuple[DmaTransfer, int]:
        handle = DmaTransfer(self.model.submit(msg.descriptors, at))
        self._in_flight[handle.id] = handle
        self.timer.call_at(handle.done, lambda: self._complete(handle, msg.interrupt))
        return handle, at

    def _complete(self, handle: DmaTransfer, interrupt: bool) -> None:
        del self._in_flight[handle.id]
        handle._done.set()
        if interrupt:
            self.irq_controller.post(RaiseIrq(self.irq), handle.done)

    def statistics(self) -> DmaControllerStatistics:
        s = self.model.statistics()
        return DmaControllerStatistics(
            transfers=s.transfers,
            bytes=s.bytes,
            descriptors=s.descriptors,
            faults=s.faults,
            corruptions=s.corruptions,
            busy_cycles=sum(s.busy_cycles),
            in_flight=len(self._in_flight),
        )


@attrs.frozen
class DmaControllerStatistics:
    """The controller's counters as ``machine.stats()["dma"]`` shows them: ``busy_cycles``
    summed over the channels, ``in_flight`` the transfers not yet complete."""

    transfers: int
    bytes: int
    descriptors: int
    faults: int
    corruptions: int
    busy_cycles: int
    in_flight: int
