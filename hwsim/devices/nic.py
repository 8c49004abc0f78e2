"""A network card: a receive ring filled by DMA, a transmit ring read by DMA, one interrupt line.

What it models, after Intel's e1000 (drivers/net/ethernet/intel/e1000) where it can:

- Receive. The driver gives the card a ring of descriptors, each the bus address and size
  of a receive buffer (kmalloc'd, ``dma_map_single(..., DMA_FROM_DEVICE)``). A frame arrives
  from the wire at a virtual cycle (:meth:`NetworkCard.inject`, or a seeded
  :func:`generate_traffic`); the card DMAs it into the next descriptor's buffer through the
  machine's DMA controller (``DEV_TO_MEM``, the card as the peer), so the bytes go to RAM
  behind the CPU caches on the non-coherent default, share the memory channel with the CPUs,
  and obey the DMA mask and the IOMMU. When the transfer completes the card writes the
  descriptor back (``status = DD | EOP``, ``length``) and raises its interrupt line with the
  ``RXT0`` cause. Descriptors are written back in ring order even when the controller's
  channels finish out of order, as e1000 does.
- Ownership, as e1000's driver uses the DD bit: the card may fill a descriptor whose status is
  0 and hands it to the driver by setting DD; :meth:`NetworkCard.rx_refill` clears it and
  gives it back (``rx_desc->status = 0``, then the tail write). Unlike e1000's head/tail
  registers, which keep one descriptor unused, all N descriptors of a ring are usable (as
  with the OWN bit of r8169 or stmmac).
- Drops, counted with the names of Linux's ``struct rtnl_link_stats64``: a frame finding no
  free descriptor (the ring is full, or not set up) is dropped and counted in
  ``rx_missed_errors`` (e1000's MPC; Documentation/networking/statistics.rst keeps buffer
  exhaustion out of ``rx_dropped``). A frame longer than its buffer is dropped whole and
  counted in ``rx_length_errors`` and ``rx_errors`` (e1000 without long-packet support drops
  oversize frames, ROC); the descriptor stays free for the next frame. A receive DMA the
  controller refuses (an IOMMU without a mapping) loses the frame: ``rx_dropped``, the
  fault's message kept in :attr:`NicModel.faults`.
- Transmit. :meth:`NetworkCard.xmit` puts a mapped buffer (``DMA_TO_DEVICE``) on the next
  transmit descriptor; the card reads it through the controller (``MEM_TO_DEV``), and when
  that completes puts the bytes on the wire (:attr:`NetworkCard.wire`), writes DD back and
  raises the line with the ``TXDW`` cause. :meth:`NetworkCard.tx_clean` hands the completed
  descriptors back (e1000_clean_tx_irq), so that the driver can unmap their buffers.
- One interrupt per descriptor written back, no moderation (e1000 with ITR 0). The causes
  gather in ICR until :meth:`NetworkCard.read_icr` reads and clears them. The interrupt
  controller merges raises of a line while the target CPU has interrupts disabled, so a
  handler must clean every descriptor with DD set, not one per interrupt (NAPI's loop).

Left out: the descriptor rings live on the card (as if fetched into e1000's descriptor cache)
rather than in host memory, so descriptor fetches and write-backs cost no DMA and
:meth:`NetworkCard.rx_desc` is a plain read; register (MMIO) accesses take no time; the wire
has no speed (a frame arrives whole at its cycle, leaves when its DMA completes); no receive
FIFO (the DMA starts when the frame arrives), no frames spanning several descriptors, no
checksum offload, address filtering or link state.

Example: a tiny driver that receives three frames.

    >>> import hwsim, trio
    >>> async def main():
    ...     async with hwsim.boot(hwsim.MachineConfig(cpus=2)) as m, open_nic(m) as eth0:
    ...         k, ring, got, done = m.kernel, [], [], trio.Event()
    ...         for _ in range(4):  # four 2 KiB receive buffers, mapped for the card
    ...             buf = await k.kmalloc(2048)
    ...             bus = await k.dma_map_single(eth0, buf, 2048, hwsim.DMA_FROM_DEVICE)
    ...             ring.append((buf, bus))
    ...         await eth0.setup_rx_ring([(bus, 2048) for _, bus in ring])
    ...         async def e1000_intr(irq):  # runs on CPU 0, between two of its accesses
    ...             await eth0.read_icr()
    ...             while (desc := eth0.rx_desc(len(got) % 4)).status & E1000_RXD_STAT_DD:
    ...                 buf, bus = ring[desc.index]
    ...                 await k.dma_sync_single_for_cpu(eth0, bus, 2048, hwsim.DMA_FROM_DEVICE)
    ...                 got.append(await m.cpus[0].load(buf, desc.length))
    ...                 await k.dma_sync_single_for_device(eth0, bus, 2048, hwsim.DMA_FROM_DEVICE)
    ...                 await eth0.rx_refill(desc.index)
    ...             if len(got) == 3:
    ...                 done.set()
    ...         await k.request_irq(eth0.irq, e1000_intr, name="eth0")
    ...         for i, frame in enumerate([b"ping", b"pong", b"hello, world"]):
    ...             eth0.inject(frame, at=m.now + 1000 * (i + 1))
    ...         await done.wait()
    ...         return got, eth0.statistics().rx_packets, m.irq.model.counts(eth0.irq)
    >>> hwsim.run(main)
    ([b'ping', b'pong', b'hello, world'], 3, (3, 0))
"""

from __future__ import annotations

import contextlib
import functools
import random
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Protocol

import attrs
import trio

from ..core.actor import Actor, handles
from ..core.clock import current_cycle
from ..core.run import unwrap_single_error
from ..core.timer import Timer
from ..core.trace import Tracer
from ..errors import DmaFault, NetdevTxBusy
from ..validate import check_int
from .dma import DEV_TO_MEM, DMA_ALIGNMENT, MEM_TO_DEV, DmaController, DmaDescriptor, Submit
from .irq import InterruptController, RaiseIrq

#: The card's interrupt line by default (the DMA controller has 11).
NIC_IRQ = 19
#: Receive descriptor status bits (e1000_hw.h): descriptor done, end of packet.
E1000_RXD_STAT_DD = 0x01
E1000_RXD_STAT_EOP = 0x02
#: Transmit descriptor status: descriptor done.
E1000_TXD_STAT_DD = 0x01
#: Interrupt causes in ICR: transmit descriptor written back, receive timer (a frame is in).
E1000_ICR_TXDW = 0x01
E1000_ICR_RXT0 = 0x80
#: The longest frame the card takes (e1000's E1000_MAX_JUMBO_FRAME_SIZE).
MAX_JUMBO_FRAME_SIZE = 0x3F00


@attrs.frozen
class RxDescriptor:
    """A receive descriptor as the driver reads it: the buffer it was given, and what the
    card wrote back (``status`` DD|EOP and the frame's ``length``; both 0 while free)."""

    index: int
    addr: int
    buffer_length: int
    length: int
    status: int


@attrs.frozen
class TxDescriptor:
    """A transmit descriptor: the buffer sent and its status (DD once it is on the wire)."""

    index: int
    addr: int
    length: int
    status: int


@attrs.frozen
class SentFrame:
    """A frame that went out on the wire at cycle ``at``."""

    data: bytes
    at: int


@attrs.frozen
class Arrival:
    """A frame that reaches the card from the wire at cycle ``at``."""

    at: int
    data: bytes


@attrs.frozen
class NicStatistics:
    """The card's counters, named as Linux's ``struct rtnl_link_stats64``; ``interrupts``
    counts the times the card raised its line."""

    rx_packets: int
    rx_bytes: int
    rx_errors: int
    rx_dropped: int
    rx_length_errors: int
    rx_missed_errors: int
    tx_packets: int
    tx_bytes: int
    interrupts: int


def check_frame(data: object) -> bytes:
    """``data`` as the bytes of a frame: 1 to MAX_JUMBO_FRAME_SIZE bytes.

    Raises:
        TypeError: not bytes-like. ValueError: empty or too long.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"a frame is bytes, got {type(data).__name__}")
    frame = bytes(data)
    if not 1 <= len(frame) <= MAX_JUMBO_FRAME_SIZE:
        raise ValueError(f"a frame is 1..{MAX_JUMBO_FRAME_SIZE} bytes, got {len(frame)}")
    return frame


def generate_traffic(
    seed: int,
    count: int,
    *,
    start: int = 0,
    mean_gap: int = 2000,
    min_size: int = 60,
    max_size: int = 1514,
) -> list[Arrival]:
    """``count`` frames arriving after cycle ``start``, the same for the same arguments.

    Gaps between arrivals are uniform in ``1 .. 2 * mean_gap - 1`` cycles and sizes uniform
    in ``min_size .. max_size`` (integers only, so every platform draws the same). Each
    frame starts with its sequence number (4 bytes, big-endian), then random bytes.

    Example:
        >>> [(a.at, len(a.data), a.data[:4]) for a in generate_traffic(1, 2, mean_gap=100)]
        [(35, 1225, b'\\x00\\x00\\x00\\x00'), (77, 972, b'\\x00\\x00\\x00\\x01')]
    """
    check_int("seed", seed)
    check_int("count", count)
    check_int("start", start)
    check_int("mean_gap", mean_gap, 1)
    check_int("min_size", min_size, 4)
    if check_int("max_size", max_size, min_size) > MAX_JUMBO_FRAME_SIZE:
        raise ValueError(f"max_size must be <= {MAX_JUMBO_FRAME_SIZE}, got {max_size}")
    rng = random.Random(seed)
    at = start
    out = []
    for seq in range(count):
        at += rng.randint(1, 2 * mean_gap - 1)
        size = rng.randint(min_size, max_size)
        out.append(Arrival(at, seq.to_bytes(4, "big") + rng.randbytes(size - 4)))
    return out


@attrs.define
class _RxSlot:
    addr: int
    buffer_length: int
    length: int = 0
    status: int = 0
    in_flight: int = 0  # the length being DMA'd, 0 when none


@attrs.define
class _TxSlot:
    addr: int
    data: bytes
    status: int = 0


class NicModel:
    """The card's state: rings, ICR and counters (no trio here: an actor wraps it).

    It is also the :class:`~hwsim.devices.dma.Peripheral` at the card's end of its DMA
    transfers: ``produce`` hands out the frame being received, ``consume`` takes the frame
    being sent.

    Example:
        >>> nic = NicModel()
        >>> nic.setup_rx_ring([(0x1000, 64)])
        >>> i = nic.rx_start(b"frame")
        >>> nic.produce(5), nic.rx_commit(i, done=300)
        (b'frame', 300)
        >>> nic.rx_writeback(i)
        >>> nic.rx_desc(0), nic.rx_start(b"next")  # the ring is full
        (RxDescriptor(index=0, addr=4096, buffer_length=64, length=5, status=3), None)

    Args:
        mask_bits: the DMA mask of the controller the card uses.
        tx_ring_size: transmit descriptors.
    """

    def __init__(self, *, mask_bits: int = 32, tx_ring_size: int = 64) -> None:
        self.mask = (1 << check_int("mask_bits", mask_bits, 1)) - 1
        self.mask_bits = mask_bits
        check_int("tx_ring_size", tx_ring_size, 1)
        self._rx: list[_RxSlot] = []
        self._rx_cur = 0  # the next descriptor the card fills
        self._rx_wb = 0  # the cycle of the last receive write-back
        self._rx_fifo = b""  # the frame being DMA'd into memory
        self._rx_len = 0  # and its length
        self._tx: list[_TxSlot | None] = [None] * tx_ring_size
        self._tx_cur = 0  # the next descriptor xmit uses
        self._tx_clean = 0  # the next descriptor tx_clean returns
        self._tx_wb = 0
        self._tx_fifo = bytearray()  # the bytes read from memory for the frame being sent
        self.icr = 0
        self.wire: list[SentFrame] = []
        self.faults: list[str] = []
        self._rx_packets = self._rx_bytes = self._rx_dropped = 0
        self._rx_length_errors = self._rx_missed_errors = 0
        self._tx_packets = self._tx_bytes = self._interrupts = 0

    def __repr__(self) -> str:
        return f"<NicModel rx ring {len(self._rx)}, tx ring {len(self._tx)}>"

    # ------------------------------------------------------------------ receive

    def _check_buffer(self, what: str, addr: object, length: object) -> tuple[int, int]:
        a = check_int(f"{what} bus address", addr)
        n = check_int(f"{what} length", length, 1)
        if a % DMA_ALIGNMENT:
            raise ValueError(
                f"{what}: misaligned bus address {a:#x}: the card DMAs {DMA_ALIGNMENT}-byte "
                "words (kmalloc buffers are aligned)"
            )
        if a + n - 1 > self.mask:
            raise DmaFault(
                f"{what}: bus address range {a:#x}-{a + n - 1:#x} is beyond the device's "
                f"{self.mask_bits}-bit DMA mask ({self.mask:#x}): the device cannot address "
                "it. Use dma_map_single (swiotlb bounces the buffer below the mask)."
            )
        return a, n

    def setup_rx_ring(self, buffers: Sequence[tuple[int, int]]) -> None:
        """Give the card a receive ring of ``(bus address, size)`` buffers, all free.

        Raises:
            ValueError: no buffer, a misaligned one, or a receive DMA still in flight.
            DmaFault: a buffer beyond the DMA mask. Nothing changes on any error.
        """
        slots = [
            _RxSlot(*self._check_buffer(f"RX descriptor {i}", *_pair(b)))
            for i, b in enumerate(buffers)
        ]
        if not slots:
            raise ValueError("an RX ring needs at least one descriptor (RDLEN 0)")
        if any(s.in_flight for s in self._rx):
            raise ValueError("cannot replace the RX ring while a receive DMA is in flight")
        self._rx = slots
        self._rx_cur = 0

    def _rx_slot(self, index: object) -> _RxSlot:
        i = check_int("RX descriptor index", index)
        if i >= len(self._rx):
            raise ValueError(f"no RX descriptor {i}: the ring has {len(self._rx)}")
        return self._rx[i]

    def rx_desc(self, index: int) -> RxDescriptor:
        """Descriptor ``index`` of the receive ring as the driver reads it."""
        s = self._rx_slot(index)
        return RxDescriptor(index, s.addr, s.buffer_length, s.length, s.status)

    def rx_refill(self, index: int, addr: int | None = None, length: int | None = None) -> None:
        """Give descriptor ``index`` back to the card, with a new buffer if given.

        Raises:
            ValueError: the card owns it already (DD is clear), a bad buffer.
            DmaFault: a new buffer beyond the DMA mask. Nothing changes on any error.
        """
        s = self._rx_slot(index)
        if not s.status & E1000_RXD_STAT_DD:
            raise ValueError(
                f"RX descriptor {index} is the card's (DD clear): refill only what the card "
                "has written back"
            )
        a = s.addr if addr is None else addr
        n = s.buffer_length if length is None else length
        s.addr, s.buffer_length = self._check_buffer(f"RX descriptor {index}", a, n)
        s.length = s.status = 0

    def rx_start(self, frame: bytes) -> int | None:
        """A frame has arrived: the descriptor it goes to (its bytes now wait in the card
        for the DMA), or None when it is dropped and counted."""
        s = self._rx[self._rx_cur] if self._rx else None
        if s is None or s.status or s.in_flight:
            self._rx_missed_errors += 1
            return None
        if len(frame) > s.buffer_length:
            self._rx_length_errors += 1
            return None
        self._rx_fifo = frame
        self._rx_len = len(frame)
        return self._rx_cur

    def rx_commit(self, index: int, done: int) -> int:
        """The frame's DMA was accepted and completes at ``done``: the cycle its descriptor
        is written back (not before the previous one's)."""
        s = self._rx[index]
        s.in_flight = self._rx_len
        self._rx_fifo = b""
        self._rx_cur = (index + 1) % len(self._rx)
        self._rx_wb = max(done, self._rx_wb)
        return self._rx_wb

    def rx_fault(self, message: str) -> None:
        """The controller refused the frame's DMA: the frame is lost."""
        self._rx_fifo = b""
        self._rx_dropped += 1
        self.faults.append(message)

    def rx_writeback(self, index: int) -> None:
        """Write descriptor ``index`` back (DD|EOP, length) and note the RXT0 cause."""
        s = self._rx[index]
        s.length, s.in_flight = s.in_flight, 0
        s.status = E1000_RXD_STAT_DD | E1000_RXD_STAT_EOP
        self._rx_packets += 1
        self._rx_bytes += s.length
        self.icr |= E1000_ICR_RXT0
        self._interrupts += 1

    # ------------------------------------------------------------------ transmit

    def tx_start(self, length: int) -> int:
        """The descriptor a transmit of ``length`` bytes takes.

        Raises:
            NetdevTxBusy: no free descriptor. ValueError: a bad length.
        """
        n = check_int("xmit length", length, 1)
        if n > MAX_JUMBO_FRAME_SIZE:
            raise ValueError(f"a frame is at most {MAX_JUMBO_FRAME_SIZE} bytes, got {n}")
        if self._tx[self._tx_cur] is not None:
            raise NetdevTxBusy(
                f"TX ring full ({len(self._tx)} descriptors in use): NETDEV_TX_BUSY; clean "
                "the completed descriptors (tx_clean) after the TX interrupt"
            )
        self._tx_fifo.clear()
        return self._tx_cur

    def tx_commit(self, index: int, addr: int, done: int) -> int:
        """The frame was read from memory (DMA accepted, completing at ``done``): the cycle
        it goes on the wire and its descriptor is written back."""
        self._tx[index] = _TxSlot(addr, bytes(self._tx_fifo))
        self._tx_fifo.clear()
        self._tx_cur = (index + 1) % len(self._tx)
        self._tx_wb = max(done, self._tx_wb)
        return self._tx_wb

    def tx_abort(self) -> None:
        """The controller refused the transmit DMA: nothing was taken."""
        self._tx_fifo.clear()

    def tx_writeback(self, index: int, at: int) -> None:
        """Put descriptor ``index``'s frame on the wire at ``at``; DD and the TXDW cause."""
        s = self._tx[index]
        assert s is not None
        s.status = E1000_TXD_STAT_DD
        self.wire.append(SentFrame(s.data, at))
        self._tx_packets += 1
        self._tx_bytes += len(s.data)
        self.icr |= E1000_ICR_TXDW
        self._interrupts += 1

    def tx_clean(self) -> list[TxDescriptor]:
        """The descriptors sent since the last clean, in ring order; they are free again."""
        out = []
        while (s := self._tx[self._tx_clean]) is not None and s.status & E1000_TXD_STAT_DD:
            out.append(TxDescriptor(self._tx_clean, s.addr, len(s.data), s.status))
            self._tx[self._tx_clean] = None
            self._tx_clean = (self._tx_clean + 1) % len(self._tx)
        return out

    def tx_free(self) -> int:
        """Free transmit descriptors (``E1000_DESC_UNUSED``)."""
        return sum(s is None for s in self._tx)

    def read_icr(self) -> int:
        """Read ICR: the interrupt causes since the last read, which clears them."""
        icr, self.icr = self.icr, 0
        return icr

    # ------------------------------------------------------------------ Peripheral

    def produce(self, n: int) -> bytes:
        out, self._rx_fifo = self._rx_fifo[:n], self._rx_fifo[n:]
        return out

    def consume(self, data: bytes) -> None:
        self._tx_fifo += data

    def statistics(self) -> NicStatistics:
        return NicStatistics(
            rx_packets=self._rx_packets,
            rx_bytes=self._rx_bytes,
            rx_errors=self._rx_length_errors,
            rx_dropped=self._rx_dropped,
            rx_length_errors=self._rx_length_errors,
            rx_missed_errors=self._rx_missed_errors,
            tx_packets=self._tx_packets,
            tx_bytes=self._tx_bytes,
            interrupts=self._interrupts,
        )


def _pair(item: object) -> tuple[object, object]:
    if not isinstance(item, tuple | list) or len(item) != 2:
        raise TypeError(f"an RX buffer is a (bus address, size) pair, got {item!r}")
    return item[0], item[1]


# ---------------------------------------------------------------------- the actor


@attrs.frozen
class SetupRxRing:
    """Program the receive ring (RDBA/RDLEN, then RDT): ``(bus address, size)`` buffers."""

    buffers: tuple[tuple[int, int], ...]


@attrs.frozen
class RxRefill:
    """Give receive descriptor ``index`` back, with a new buffer if ``addr`` is given."""

    index: int
    addr: int | None = None
    length: int | None = None


@attrs.frozen
class Xmit:
    """Send ``length`` bytes at bus address ``addr`` (a descriptor, then the TDT write)."""

    addr: int
    length: int


@attrs.frozen
class TxClean:
    """Take back the transmit descriptors the card has written back."""


@attrs.frozen
class ReadIcr:
    """Read (and so clear) the interrupt cause register."""


@attrs.frozen
class FrameArrives:
    """A frame reaches the card from the wire (posted by the card's timer call)."""

    data: bytes


class NetworkCard(Actor):
    """The network card unit (``"eth0"``). Get one from :func:`open_nic`.

    Register accesses take no virtual time (the card answers at the cycle asked); DMA
    transfers and interrupts take theirs. Pass the card as ``dev`` to the DMA API
    (``dma_map_single(eth0, ...)``): it does its DMA through the machine's controller, so
    its :attr:`device` is the controller's.

    Args:
        model: the card's model.
        dma: the DMA controller it masters transfers through.
        irq_controller: where its interrupts go.
        timer: the machine's timer (frames arrive at their cycle).
        irq: its interrupt line (not the DMA controller's).
        name: the unit's name.
    """

    def __init__(
        self,
        model: NicModel,
        *,
        dma: DmaController,
        irq_controller: InterruptController,
        timer: Timer,
        irq: int = NIC_IRQ,
        name: str = "eth0",
        tracer: Tracer | None = None,
    ) -> None:
        check_int("irq", irq)
        if irq == dma.irq:
            raise ValueError(f"IRQ {irq} is the DMA controller's line: give the card its own")
        if irq >= irq_controller.model.nr_irqs:
            raise ValueError(
                f"IRQ {irq} does not exist: lines are 0..{irq_controller.model.nr_irqs - 1}"
            )
        super().__init__(name, tracer=tracer)
        self.model = model
        self.dma = dma
        self.irq_controller = irq_controller
        self.timer = timer
        self.irq = irq
        self.device = dma.device
        self._running = False
        self._outstanding = 0  # frames not yet arrived, DMAs not yet written back
        self._idle = trio.Event()
        self._idle.set()

    def __repr__(self) -> str:
        return f"<NetworkCard {self.name!r} irq {self.irq}: {self.model!r}>"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._running = True
        try:
            await super().serve(task_status=task_status)
        finally:
            self._running = False

    # ------------------------------------------------------------------ the driver's side

    async def setup_rx_ring(self, buffers: Iterable[tuple[int, int]]) -> None:
        """Give the card a receive ring: one descriptor per ``(bus address, size)`` buffer.

        Raises:
            ValueError: no buffers, a misaligned one, a receive DMA in flight.
            DmaFault: a buffer beyond the DMA mask. Nothing changes on any error.
        """
        await self.call(SetupRxRing(tuple(buffers)))

    def rx_desc(self, index: int) -> RxDescriptor:
        """Receive descriptor ``index`` (status DD|EOP and length once written back)."""
        return self.model.rx_desc(index)

    async def rx_refill(
        self, index: int, addr: int | None = None, length: int | None = None
    ) -> None:
        """Give receive descriptor ``index`` back to the card (its buffer, or a new one).

        Raises:
            ValueError: the card owns it already; DmaFault: a new buffer beyond the mask.
        """
        await self.call(RxRefill(index, addr, length))

    async def xmit(self, addr: int, length: int) -> int:
        """Send the ``length`` bytes at bus address ``addr`` (mapped DMA_TO_DEVICE); returns
        the transmit descriptor used. The frame is on the wire when its TXDW interrupt is.

        Raises:
            NetdevTxBusy: the transmit ring is full.
            DmaFault: the controller cannot read the range (DMA mask, IOMMU). Nothing is sent.
            ValueError: a bad length or a misaligned address.
        """
        index, _ = await self.call(Xmit(addr, length))
        return index  # type: ignore[no-any-return]

    async def tx_clean(self) -> list[TxDescriptor]:
        """The transmit descriptors sent since the last clean (their buffers may be
        unmapped now), in ring order; they are free again."""
        done, _ = await self.call(TxClean())
        return done  # type: ignore[no-any-return]

    def tx_free(self) -> int:
        """Free transmit descriptors."""
        return self.model.tx_free()

    async def read_icr(self) -> int:
        """Read ICR: the causes (E1000_ICR_RXT0, E1000_ICR_TXDW) since the last read."""
        icr, _ = await self.call(ReadIcr())
        return icr  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ the wire's side

    def inject(self, data: bytes, at: int | None = None) -> None:
        """A frame arrives from the wire at cycle ``at`` (now if omitted). Not a checkpoint.

        Raises:
            ValueError: ``at`` in the past, an empty or oversize frame. TypeError: not bytes.
        """
        frame = check_frame(data)
        now = current_cycle()
        when = now if at is None else check_int("at", at)
        if when < now:
            raise ValueError(f"a frame cannot arrive at cycle {when}: it is already {now}")
        self._busy()
        self.timer.call_at(when, functools.partial(self._arrival, frame, when))

    def inject_traffic(self, arrivals: Iterable[Arrival]) -> None:
        """:meth:`inject` each :class:`Arrival` (from :func:`generate_traffic`)."""
        for a in arrivals:
            self.inject(a.data, at=a.at)

    @property
    def wire(self) -> list[SentFrame]:
        """The frames sent so far, in the order they left."""
        return self.model.wire

    async def wait_idle(self) -> None:
        """Wait until every injected frame has been received or dropped and every transfer
        written back (interrupt handlers may still be running). Always a checkpoint."""
        await self._idle.wait()

    def statistics(self) -> NicStatistics:
        return self.model.statistics()

    # ------------------------------------------------------------------ glue

    def _busy(self) -> None:
        if self._outstanding == 0:
            self._idle = trio.Event()
        self._outstanding += 1

    def _done(self) -> None:
        self._outstanding -= 1
        if self._outstanding == 0:
            self._idle.set()

    def _arrival(self, frame: bytes, at: int) -> None:
        if self._running:
            self.post(FrameArrives(frame), at)
        else:  # the card is down: the frame goes nowhere
            self._done()

    def _raise(self, at: int) -> None:
        if self._running:
            self.irq_controller.post(RaiseIrq(self.irq), at)

    def _rx_complete(self, index: int, at: int) -> None:
        self.model.rx_writeback(index)
        self._raise(at)
        self._done()

    def _tx_complete(self, index: int, at: int) -> None:
        self.model.tx_writeback(index, at)
        self._raise(at)
        self._done()

    @handles(SetupRxRing)
    def _setup_rx_ring(self, msg: SetupRxRing, at: int) -> tuple[None, int]:
        self.model.setup_rx_ring(msg.buffers)
        return None, at

    @handles(RxRefill)
    def _rx_refill(self, msg: RxRefill, at: int) -> tuple[None, int]:
        self.model.rx_refill(msg.index, msg.addr, msg.length)
        return None, at

    @handles(TxClean)
    def _tx_clean(self, msg: TxClean, at: int) -> tuple[list[TxDescriptor], int]:
        return self.model.tx_clean(), at

    @handles(ReadIcr)
    def _read_icr(self, msg: ReadIcr, at: int) -> tuple[int, int]:
        return self.model.read_icr(), at

    @handles(FrameArrives)
    async def _frame_arrives(self, msg: FrameArrives, at: int) -> tuple[None, int]:
        try:
            index = self.model.rx_start(msg.data)
            if index is None:
                return None, at
            desc = self.model.rx_desc(index)
            chain = (DmaDescriptor(desc.addr, len(msg.data), DEV_TO_MEM, peer=self.model),)
            try:
                transfer, _ = await self.dma.call(Submit(chain, interrupt=False), at)
            except DmaFault as exc:  # a DMAR fault: the frame is lost, the card goes on
                self.model.rx_fault(str(exc))
                return None, at
            done = self.model.rx_commit(index, transfer.done)
            self._busy()
            self.timer.call_at(done, functools.partial(self._rx_complete, index, done))
            return None, at
        finally:
            self._done()

    @handles(Xmit)
    async def _xmit(self, msg: Xmit, at: int) -> tuple[int, int]:
        index = self.model.tx_start(msg.length)
        chain = (DmaDescriptor(msg.addr, msg.length, MEM_TO_DEV, peer=self.model),)
        try:
            transfer, _ = await self.dma.call(Submit(chain, interrupt=False), at)
        except BaseException:
            self.model.tx_abort()
            raise
        done = self.model.tx_commit(index, msg.addr, transfer.done)
        self._busy()
        self.timer.call_at(done, functools.partial(self._tx_complete, index, done))
        return index, at


class _Bus(Protocol):
    """What :func:`open_nic` needs of a machine (a :class:`~hwsim.Machine` has it)."""

    @property
    def dma(self) -> DmaController: ...
    @property
    def irq(self) -> InterruptController: ...
    @property
    def timer(self) -> Timer: ...
    @property
    def tracer(self) -> Tracer | None: ...
    def plug(self, unit: Actor) -> None: ...
    def unplug(self, unit: Actor) -> None: ...


@contextlib.asynccontextmanager
async def open_nic(
    machine: _Bus, *, name: str = "eth0", irq: int = NIC_IRQ, tx_ring_size: int = 64
) -> AsyncIterator[NetworkCard]:
    """Plug a :class:`NetworkCard` into a booted machine for the duration of the block.

    The card masters its DMA through ``machine.dma`` (with its mask and IOMMU) and raises
    ``irq`` on ``machine.irq``. Leaving the block takes the card down: frames still on
    their way are lost.

    Args:
        machine: a booted :class:`~hwsim.Machine`.
        name: the unit's name.
        irq: the card's interrupt line (default :data:`NIC_IRQ`).
        tx_ring_size: transmit descriptors.

    Raises:
        ValueError: ``irq`` is the DMA controller's line or does not exist.
    """
    model = NicModel(mask_bits=machine.dma.model.mask_bits, tx_ring_size=tx_ring_size)
    card = NetworkCard(
        model,
        dma=machine.dma,
        irq_controller=machine.irq,
        timer=machine.timer,
        irq=irq,
        name=name,
        tracer=machine.tracer,
    )
    with unwrap_single_error():
        async with trio.open_nursery() as nursery:
            await nursery.start(card.serve, name=card.name)
            machine.plug(card)
            try:
                yield card
            finally:
                machine.unplug(card)
                nursery.cancel_scope.cancel()
