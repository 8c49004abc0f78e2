"""The network card: frames DMA'd into a receive ring through the DMA controller, one
interrupt per frame, drops counted as Linux counts them, transmit through the controller,
and the cache rules a driver on a non-coherent bus must follow."""

from __future__ import annotations

import itertools

import pytest
import trio

import hwsim
from hwsim.devices.dma import Peripheral
from hwsim.devices.nic import (
    E1000_ICR_RXT0,
    E1000_ICR_TXDW,
    E1000_RXD_STAT_DD,
    E1000_RXD_STAT_EOP,
    NIC_IRQ,
    NetdevTxBusy,
    NetworkCard,
    NicModel,
    NicStatistics,
    generate_traffic,
    open_nic,
)

BUF = 2048
DMA_IN = hwsim.DMA_FROM_DEVICE


# ---------------------------------------------------------------------- the model


def test_a_frame_goes_to_the_next_free_descriptor_and_is_written_back_with_dd() -> None:
    nic = NicModel()
    nic.setup_rx_ring([(0x1000, 64), (0x2000, 64)])
    assert nic.rx_start(b"abc") == 0
    assert nic.produce(3) == b"abc"
    nic.rx_commit(0, done=100)
    assert nic.rx_desc(0).status == 0  # in flight: not yet the driver's
    nic.rx_writeback(0)
    assert nic.rx_desc(0).status == E1000_RXD_STAT_DD | E1000_RXD_STAT_EOP
    assert nic.rx_desc(0).length == 3
    assert nic.rx_start(b"next") == 1
    assert nic.read_icr() == E1000_ICR_RXT0 and nic.read_icr() == 0


def test_descriptors_are_written_back_in_ring_order_when_dma_finishes_out_of_order() -> None:
    nic = NicModel()
    nic.setup_rx_ring([(0x1000, 2048), (0x2000, 2048)])
    nic.produce(nic.rx_start(bytes(1500)) or 0)
    assert nic.rx_commit(0, done=500) == 500
    nic.rx_start(b"tiny")
    assert nic.rx_commit(1, done=120) == 500  # its channel was quicker; it still waits


def test_a_full_ring_drops_frames_into_rx_missed_errors() -> None:
    nic = NicModel()
    assert nic.rx_start(b"no ring yet") is None
    nic.setup_rx_ring([(0x1000, 64)])
    nic.rx_start(b"first")
    nic.rx_commit(0, done=10)
    assert nic.rx_start(b"in flight") is None
    nic.rx_writeback(0)
    assert nic.rx_start(b"not refilled") is None
    nic.rx_refill(0)
    assert nic.rx_start(b"refilled") == 0
    s = nic.statistics()
    assert (s.rx_missed_errors, s.rx_dropped, s.rx_packets) == (3, 0, 1)


def test_a_frame_longer_than_its_buffer_is_dropped_and_the_descriptor_stays_free() -> None:
    nic = NicModel()
    nic.setup_rx_ring([(0x1000, 64)])
    assert nic.rx_start(bytes(65)) is None
    assert nic.rx_start(bytes(64)) == 0
    s = nic.statistics()
    assert (s.rx_length_errors, s.rx_errors, s.rx_missed_errors) == (1, 1, 0)


def test_refilling_a_descriptor_the_card_owns_is_refused() -> None:
    nic = NicModel()
    nic.setup_rx_ring([(0x1000, 64)])
    with pytest.raises(ValueError, match="RX descriptor 0 is the card's"):
        nic.rx_refill(0)
    with pytest.raises(ValueError, match="no RX descriptor 1"):
        nic.rx_refill(1)


def test_a_bad_ring_is_refused_and_the_old_ring_stays() -> None:
    nic = NicModel(mask_bits=24)
    nic.setup_rx_ring([(0x1000, 64)])
    with pytest.raises(ValueError, match="at least one descriptor"):
        nic.setup_rx_ring([])
    with pytest.raises(hwsim.DmaFault, match="beyond the device's 24-bit DMA mask"):
        nic.setup_rx_ring([(0x2000, 64), (0xFFFFC0, 128)])
    with pytest.raises(ValueError, match="misaligned bus address 0x2002"):
        nic.setup_rx_ring([(0x2002, 64)])
    with pytest.raises(TypeError, match=r"\(bus address, size\) pair"):
        nic.setup_rx_ring([0x2000])  # type: ignore[list-item]
    assert nic.rx_desc(0).addr == 0x1000
    with pytest.raises(ValueError, match="no RX descriptor 1"):
        nic.rx_desc(1)


def test_a_full_tx_ring_refuses_to_send_until_cleaned() -> None:
    nic = NicModel(tx_ring_size=1)
    i = nic.tx_start(4)
    nic.consume(b"sent")
    nic.tx_commit(i, 0x1000, done=50)
    with pytest.raises(NetdevTxBusy, match="NETDEV_TX_BUSY"):
        nic.tx_start(4)
    nic.tx_writeback(i, at=50)
    assert [(f.data, f.at) for f in nic.wire] == [(b"sent", 50)]
    (desc,) = nic.tx_clean()
    assert (desc.addr, desc.length, nic.tx_free()) == (0x1000, 4, 1)
    assert nic.read_icr() == E1000_ICR_TXDW


def test_the_card_is_the_peripheral_at_its_end_of_the_dma() -> None:
    assert isinstance(NicModel(), Peripheral)


def test_the_traffic_generator_is_deterministic_if_seeded() -> None:
    a = generate_traffic(7, 20, start=100, mean_gap=500)
    assert a == generate_traffic(7, 20, start=100, mean_gap=500)
    assert a != generate_traffic(8, 20, start=100, mean_gap=500)
    assert [int.from_bytes(x.data[:4], "big") for x in a] == list(range(20))
    assert all(100 < x.at < y.at for x, y in itertools.pairwise(a))
    assert all(60 <= len(x.data) <= 1514 for x in a)
    with pytest.raises(ValueError, match="min_size must be >= 4"):
        generate_traffic(7, 1, min_size=2)


# ---------------------------------------------------------------------- a driver


class Driver:
    """A minimal e1000-style receive path: kmalloc'd buffers mapped DMA_FROM_DEVICE, and
    the NAPI loop folded into the interrupt handler (which runs on CPU 0)."""

    def __init__(self, m: hwsim.Machine, nic: NetworkCard, refill: bool = True) -> None:
        self.m, self.nic, self.refill = m, nic, refill
        self.ring: list[tuple[int, int]] = []
        self.frames: list[bytes] = []
        self.seen_at: list[int] = []
        self.calls = 0
        self.icr = 0
        self.next = 0
        self.down = False  # e1000's __E1000_DOWN: the handler leaves the card alone
        self._changed = trio.Event()

    async def open(self, n: int, size: int = BUF) -> None:
        k = self.m.kernel
        for _ in range(n):
            buf = await k.kmalloc(size)
            self.ring.append((buf, await k.dma_map_single(self.nic, buf, size, DMA_IN)))
        await self.nic.setup_rx_ring([(bus, size) for _, bus in self.ring])
        await k.request_irq(self.nic.irq, self.intr, name="eth0")

    async def close(self) -> None:
        # free_irq alone is not enough: an interrupt raised just before it still runs the
        # handler (the controller snapshots the handlers when the line is raised).
        self.down = True
        await self.m.kernel.free_irq(self.nic.irq, self.intr)

    async def intr(self, irq: int) -> None:
        if self.down:
            return
        self.calls += 1
        self.icr |= await self.nic.read_icr()
        k = self.m.kernel
        while (self.refill or len(self.frames) < len(self.ring)) and (
            desc := self.nic.rx_desc(self.next)
        ).status & E1000_RXD_STAT_DD:
            buf, bus = self.ring[desc.index]
            await k.dma_sync_single_for_cpu(self.nic, bus, desc.buffer_length, DMA_IN)
            self.frames.append(await self.m.cpus[0].load(buf, desc.length))
            self.seen_at.append(hwsim.current_cycle())
            self.next = (self.next + 1) % len(self.ring)
            if self.refill:
                await k.dma_sync_single_for_device(self.nic, bus, desc.buffer_length, DMA_IN)
                await self.nic.rx_refill(desc.index)
        self._changed.set()

    async def wait_frames(self, n: int) -> list[bytes]:
        while len(self.frames) < n:
            self._changed = trio.Event()
            await self._changed.wait()
        return self.frames


async def driver(m: hwsim.Machine, nic: NetworkCard, n: int, refill: bool = True) -> Driver:
    d = Driver(m, nic, refill)
    await d.open(n)
    return d


# ---------------------------------------------------------------------- receive


@pytest.mark.machine(cpus=2)
async def test_frames_arrive_in_order_with_their_bytes_read_through_the_cpu(
    machine: hwsim.Machine,
) -> None:
    async with open_nic(machine) as nic:
        drv = await driver(machine, nic, 4)
        traffic = generate_traffic(3, 12, start=machine.now, mean_gap=3000)
        nic.inject_traffic(traffic)
        assert await drv.wait_frames(12) == [a.data for a in traffic]
        s = nic.statistics()
        assert (s.rx_packets, s.rx_bytes) == (12, sum(len(a.data) for a in traffic))
        assert s.rx_missed_errors == s.rx_length_errors == s.rx_dropped == 0
        # Every frame went through the DMA controller and its memory channel.
        assert machine.dma.statistics().bytes == s.rx_bytes
        assert all(seen > a.at for seen, a in zip(drv.seen_at, traffic, strict=True))


@pytest.mark.machine(cpus=2)
async def test_the_card_raises_its_line_once_per_frame(machine: hwsim.Machine) -> None:
    async with open_nic(machine) as nic:
        drv = await driver(machine, nic, 4)
        for i in range(3):
            nic.inject(b"frame %d" % i, at=machine.now + 5000 * (i + 1))
        await drv.wait_frames(3)
        assert machine.irq.model.counts(NIC_IRQ) == (3, 0)  # routed to CPU 0
        assert drv.calls == 3 and nic.statistics().interrupts == 3
        assert drv.icr == E1000_ICR_RXT0


@pytest.mark.machine(cpus=2)
async def test_a_full_ring_drops_and_counts_what_it_cannot_take(machine: hwsim.Machine) -> None:
    async with open_nic(machine) as nic:
        drv = await driver(machine, nic, 2, refill=False)
        for i in range(5):
            nic.inject(b"frame %d" % i, at=machine.now + 1000 * (i + 1))
        await nic.wait_idle()
        s = nic.statistics()
        assert (s.rx_packets, s.rx_missed_errors, s.rx_dropped) == (2, 3, 0)
        assert await drv.wait_frames(2) == [b"frame 0", b"frame 1"]


@pytest.mark.machine(cpus=2)
async def test_a_frame_longer_than_its_buffer_is_dropped_and_the_buffer_is_untouched(
    machine: hwsim.Machine,
) -> None:
    async with open_nic(machine) as nic:
        buf = await machine.kernel.kzalloc(64)
        bus = await machine.kernel.dma_map_single(nic, buf, 64, DMA_IN)
        await nic.setup_rx_ring([(bus, 64)])
        nic.inject(b"x" * 65)
        nic.inject(b"fits", at=machine.now + 100)
        await nic.wait_idle()
        await machine.kernel.dma_sync_single_for_cpu(nic, bus, 64, DMA_IN)
        assert await machine.cpus[0].load(buf, 8) == b"fits\0\0\0\0"
        assert nic.rx_desc(0).length == 4
        s = nic.statistics()
        assert (s.rx_length_errors, s.rx_errors, s.rx_packets) == (1, 1, 1)


@pytest.mark.machine(cpus=2)
async def test_without_sync_for_cpu_a_cpu_that_cached_the_buffer_reads_stale_bytes(
    machine: hwsim.Machine,
) -> None:
    async with open_nic(machine) as nic:
        buf = await machine.kernel.kmalloc(BUF)
        bus = await machine.kernel.dma_map_single(nic, buf, BUF, DMA_IN)
        await nic.setup_rx_ring([(bus, BUF)])
        before = await machine.cpus[1].load(buf, 8)  # CPU 1 now caches the line
        nic.inject(b"NEWBYTES", at=machine.now + 100)
        await nic.wait_idle()
        assert before != b"NEWBYTES"
        assert await machine.cpus[1].load(buf, 8) == before  # stale: the DMA went to RAM
        await machine.kernel.dma_sync_single_for_cpu(nic, bus, BUF, DMA_IN)
        assert await machine.cpus[1].load(buf, 8) == b"NEWBYTES"


@pytest.mark.machine(cpus=2, dma_coherent=True)
async def test_on_a_snooping_bus_the_cpu_sees_the_frame_without_a_sync(
    machine: hwsim.Machine,
) -> None:
    async with open_nic(machine) as nic:
        buf = await machine.kernel.kmalloc(BUF)
        bus = await machine.kernel.dma_map_single(nic, buf, BUF, DMA_IN)
        await nic.setup_rx_ring([(bus, BUF)])
        await machine.cpus[1].load(buf, 8)
        nic.inject(b"NEWBYTES", at=machine.now + 100)
        await nic.wait_idle()
        assert await machine.cpus[1].load(buf, 8) == b"NEWBYTES"


@pytest.mark.machine(cpus=2)
async def test_unmapping_a_buffer_the_card_is_still_writing_is_refused(
    machine: hwsim.Machine,
) -> None:
    async with open_nic(machine) as nic:
        buf = await machine.kernel.kmalloc(BUF)
        bus = await machine.kernel.dma_map_single(nic, buf, BUF, DMA_IN)
        await nic.setup_rx_ring([(bus, BUF)])
        nic.inject(bytes(1500))
        await hwsim.sleep(1)  # the frame is being DMA'd
        with pytest.raises(hwsim.DmaInFlight, match="wait for its completion interrupt"):
            await machine.kernel.dma_unmap_single(nic, bus, BUF, DMA_IN)
        await nic.wait_idle()
        await machine.kernel.dma_unmap_single(nic, bus, BUF, DMA_IN)


@pytest.mark.machine(cpus=2, iommu=True)
async def test_a_frame_for_a_buffer_the_iommu_no_longer_maps_is_lost_to_a_dmar_fault(
    machine: hwsim.Machine,
) -> None:
    async with open_nic(machine) as nic:
        buf = await machine.kernel.kmalloc(BUF)
        bus = await machine.kernel.dma_map_single(nic, buf, BUF, DMA_IN)
        await nic.setup_rx_ring([(bus, BUF)])
        await machine.kernel.dma_unmap_single(nic, bus, BUF, DMA_IN)  # the driver's bug
        nic.inject(b"lost")
        await nic.wait_idle()
        s = nic.statistics()
        assert (s.rx_dropped, s.rx_packets) == (1, 0)
        assert "DMAR" in nic.model.faults[0]
        assert nic.rx_desc(0).status == 0  # nothing was written back


# ---------------------------------------------------------------------- transmit


@pytest.mark.machine(cpus=2)
async def test_xmit_sends_exactly_the_bytes_of_the_buffer(machine: hwsim.Machine) -> None:
    async with open_nic(machine) as nic:
        k = machine.kernel
        raised = trio.Event()

        async def intr(irq: int) -> None:
            if await nic.read_icr() & E1000_ICR_TXDW:
                raised.set()

        await k.request_irq(nic.irq, intr)
        buf = await k.kmalloc(256)
        frame = bytes(range(200))
        await machine.cpus[0].store(buf, frame)
        bus = await k.dma_map_single(nic, buf, 200, hwsim.DMA_TO_DEVICE)  # cleans the lines
        assert await nic.xmit(bus, 200) == 0
        await raised.wait()
        assert [f.data for f in nic.wire] == [frame]
        (desc,) = await nic.tx_clean()
        await k.dma_unmap_single(nic, desc.addr, desc.length, hwsim.DMA_TO_DEVICE)
        s = nic.statistics()
        assert (s.tx_packets, s.tx_bytes, nic.tx_free()) == (1, 200, 64)


@pytest.mark.machine(cpus=2)
async def test_a_store_after_mapping_is_not_sent_without_sync_for_device(
    machine: hwsim.Machine,
) -> None:
    async with open_nic(machine) as nic:
        k = machine.kernel
        buf = await k.kzalloc(64)
        bus = await k.dma_map_single(nic, buf, 64, hwsim.DMA_TO_DEVICE)
        await machine.cpus[0].store(buf, b"late")  # sits dirty in CPU 0's L1
        await nic.xmit(bus, 4)
        await k.dma_sync_single_for_device(nic, bus, 64, hwsim.DMA_TO_DEVICE)
        await nic.xmit(bus, 4)
        await nic.wait_idle()
        assert [f.data for f in nic.wire] == [b"\0\0\0\0", b"late"]


@pytest.mark.machine(cpus=2, dma=hwsim.DmaConfig(mask_bits=24))
async def test_xmit_beyond_the_dma_mask_is_refused_by_the_controller_and_sends_nothing(
    machine: hwsim.Machine,
) -> None:
    async with open_nic(machine, tx_ring_size=2) as nic:
        with pytest.raises(hwsim.DmaFault, match="beyond the device's 24-bit DMA mask") as exc:
            await nic.xmit(1 << 24, 64)
        assert exc.value.actor == "dma"
        assert machine.dma.statistics().faults == 1
        assert nic.wire == [] and nic.tx_free() == 2
        assert nic.statistics() == NicModel().statistics()
        with pytest.raises(hwsim.DmaFault, match="24-bit DMA mask"):
            await nic.setup_rx_ring([(1 << 24, BUF)])
        nic.inject(b"nowhere to go")
        await nic.wait_idle()
        assert nic.statistics().rx_missed_errors == 1  # the refused ring was not installed


@pytest.mark.machine(cpus=2)
async def test_a_full_tx_ring_answers_netdev_tx_busy(machine: hwsim.Machine) -> None:
    async with open_nic(machine, tx_ring_size=1) as nic:
        buf = await machine.kernel.kzalloc(64)
        bus = await machine.kernel.dma_map_single(nic, buf, 64, hwsim.DMA_TO_DEVICE)
        await nic.xmit(bus, 64)
        with pytest.raises(NetdevTxBusy):
            await nic.xmit(bus, 64)
        await nic.wait_idle()
        assert len(await nic.tx_clean()) == 1
        assert await nic.xmit(bus, 64) == 0
        assert len(nic.wire) == 1  # the refused one never left


# ---------------------------------------------------------------------- bad input


@pytest.mark.machine(cpus=1)
async def test_bad_requests_are_refused_and_the_card_keeps_running(
    machine: hwsim.Machine,
) -> None:
    async with open_nic(machine) as nic:
        with pytest.raises(ValueError, match="at least one descriptor"):
            await nic.setup_rx_ring([])
        with pytest.raises(ValueError, match=r"1\.\.16128 bytes, got 0"):
            nic.inject(b"")
        with pytest.raises(TypeError, match="a frame is bytes"):
            nic.inject("text")  # type: ignore[arg-type]
        await hwsim.sleep(10)
        with pytest.raises(ValueError, match="already 10"):
            nic.inject(b"late", at=5)
        with pytest.raises(ValueError, match="misaligned"):
            await nic.xmit(0x1002, 8)
        await nic.setup_rx_ring([(0x10000, BUF)])  # still answering
        assert nic.rx_desc(0).buffer_length == BUF


@pytest.mark.machine(cpus=1)
async def test_the_card_cannot_take_the_dma_controllers_line(machine: hwsim.Machine) -> None:
    with pytest.raises(ValueError, match="DMA controller's line"):
        async with open_nic(machine, irq=machine.dma.irq):
            pass  # pragma: no cover
    with pytest.raises(ValueError, match="IRQ 256 does not exist"):
        async with open_nic(machine, irq=256):
            pass  # pragma: no cover


# ---------------------------------------------------------------------- determinism


def _run_traffic(seed: int) -> tuple[list[int], NicStatistics, int]:
    async def main() -> tuple[list[int], NicStatistics, int]:
        async with hwsim.boot(hwsim.MachineConfig(cpus=2, seed=seed)) as m, open_nic(m) as nic:
            drv = await driver(m, nic, 4)
            nic.inject_traffic(generate_traffic(seed, 30, start=m.now, mean_gap=400))
            await nic.wait_idle()
            await drv.wait_frames(nic.statistics().rx_packets)
            await drv.close()
            return drv.seen_at, nic.statistics(), m.now

    return hwsim.run(main, seed=seed)


def test_the_same_seed_gives_the_same_arrivals_drops_and_cycles() -> None:
    first = _run_traffic(11)
    assert first == _run_traffic(11)
    assert first != _run_traffic(12)
    stats = first[1]
    assert stats.rx_missed_errors > 0 and stats.rx_packets > 0  # fast traffic overflows


@pytest.mark.machine(cpus=1)
async def test_an_open_card_is_one_of_the_machines_units_until_it_is_closed(
    machine: hwsim.Machine,
) -> None:
    async with open_nic(machine, name="eth0") as eth0:
        assert eth0 in machine.units
        assert "eth0" in machine.stats()
        with pytest.raises(ValueError, match="already has a unit named 'eth0'"):
            machine.plug(eth0)
    assert "eth0" not in machine.stats()
