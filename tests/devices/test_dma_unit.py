"""The DMA controller wired into a machine: transfers as concurrent actors, their timing on
the shared memory channel, the checks that refuse a transfer before any byte moves, and the
peripherals at the other end."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import trio

import hwsim
from hwsim.devices.cpu import current_irq
from hwsim.devices.dma import (
    DEV_TO_MEM,
    MEM_TO_DEV,
    MEM_TO_MEM,
    DmaDescriptor,
    FifoPeripheral,
)

MIB = 1 << 20
PAGE = hwsim.PAGE_SIZE
T, F = hwsim.DMA_TO_DEVICE, hwsim.DMA_FROM_DEVICE


def counters(machine: hwsim.Machine) -> tuple[int, int, int]:
    """What a refused transfer must leave alone: transfers, bytes and descriptors."""
    s = machine.stats()["dma"]
    return s["transfers"], s["bytes"], s["descriptors"]


def from_device(bus: int, data: bytes) -> DmaDescriptor:
    return DmaDescriptor(bus, len(data), DEV_TO_MEM, peer=FifoPeripheral(data))


@pytest.mark.machine(cpus=2)
async def test_memcpy_moves_the_bytes_the_cpu_wrote_and_the_cpu_reads_them_after_unmap(
    machine: hwsim.Machine,
) -> None:
    k, cpu = machine.kernel, machine.cpus[0]
    data = bytes(range(256)) * 16
    src = await k.kmalloc(4096)
    dst = await k.kzalloc(4096)
    await cpu.store(src, data)
    assert await cpu.load(dst, 8) == b"\0" * 8  # dst's first line is now cached
    src_bus = await k.dma_map_single(machine.dma, src, 4096, T)
    dst_bus = await k.dma_map_single(machine.dma, dst, 4096, F)
    transfer = await machine.dma.memcpy(dst_bus, src_bus, 4096)
    await transfer.wait()
    assert transfer.status == "ok"
    await k.dma_unmap_single(machine.dma, dst_bus, 4096, F)
    await k.dma_unmap_single(machine.dma, src_bus, 4096, T)
    assert machine.hierarchy.read(k.virt_to_phys(dst), 4096) == data
    assert await cpu.load(dst, 4096) == data
    assert machine.stats()["dma"]["bytes"] == 4096


@pytest.mark.machine(cpus=2)
async def test_wait_returns_at_the_transfers_done_cycle(machine: hwsim.Machine) -> None:
    buf = await machine.kernel.kmalloc(4096)
    issued = machine.now
    transfer = await machine.dma.submit(from_device(machine.kernel.virt_to_phys(buf), b"x" * 4096))
    assert machine.now == issued  # submitting does not wait for the transfer
    assert not transfer.completed and transfer.done > issued
    assert machine.stats()["dma"]["in_flight"] == 1
    record = await transfer.wait()
    assert machine.now == transfer.done == record.done
    assert transfer.completed
    assert machine.stats()["dma"]["in_flight"] == 0
    await transfer.wait()  # waiting again returns at once
    assert machine.now == transfer.done


@pytest.mark.hwsim
@pytest.mark.parametrize("bytes_per_cycle", [4, 8])
async def test_a_transfer_takes_its_bytes_over_the_configured_engine_speed_plus_ram_latency(
    bytes_per_cycle: int,
) -> None:
    config = hwsim.MachineConfig(cpus=1, dma=hwsim.DmaConfig(bytes_per_cycle=bytes_per_cycle))
    async with hwsim.boot(config) as m:
        buf = await m.kernel.kmalloc(4096)
        transfer = await m.dma.submit(from_device(m.kernel.virt_to_phys(buf), bytes(4096)))
        record = await transfer.wait()
        assert record.done - record.start == 4096 // bytes_per_cycle + config.latency.ram


@pytest.mark.machine(cpus=1, dma=hwsim.DmaConfig(channels=2))
async def test_two_transfers_on_different_channels_overlap_in_time(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    a, b = await k.kmalloc(8192), await k.kmalloc(8192)
    first = await machine.dma.submit(from_device(k.virt_to_phys(a), bytes(8192)))
    second = await machine.dma.submit(from_device(k.virt_to_phys(b), bytes(8192)))
    assert first.record.channel != second.record.channel
    assert second.record.start < first.done  # running at the same time
    await first.wait()
    assert second.completed and second.done == first.done  # both finish at one cycle
    await second.wait()
    assert machine.stats()["dma"]["transfers"] == 2


@pytest.mark.machine(cpus=1, dma=hwsim.DmaConfig(channels=1))
async def test_one_channel_runs_transfers_one_after_the_other(machine: hwsim.Machine) -> None:
    k = machine.kernel
    a, b = await k.kmalloc(8192), await k.kmalloc(8192)
    first = await machine.dma.submit(from_device(k.virt_to_phys(a), bytes(8192)))
    second = await machine.dma.submit(from_device(k.virt_to_phys(b), bytes(8192)))
    assert second.record.channel == first.record.channel == 0
    assert second.record.start == first.done
    await second.wait()
    assert machine.now == second.done


async def _memcpy_cycles(streaming_cpu: bool) -> int:
    """Boot a fresh machine, optionally start CPU 1 streaming through 2 MiB of RAM, then
    copy 16 KiB by DMA at the same cycle; return how long the copy took."""
    async with hwsim.boot(hwsim.MachineConfig(cpus=2)) as m:
        k = m.kernel
        # Both machines run in one trio run: measure from a cycle relative to boot.
        race = m.now + 1_000_000
        stream = await k.vmalloc(2 * MIB)
        src, dst = await k.kmalloc(16384), await k.kmalloc(16384)
        await hwsim.sleep_until(race)
        async with trio.open_nursery() as nursery:
            if streaming_cpu:
                cpu = m.cpus[1]
                nursery.start_soon(
                    functools.partial(cpu.access, np.arange(0, 2 * MIB, 64), base=stream)
                )
                while cpu.statistics().loads == 0:  # its accesses are booked on the channel
                    await trio.lowlevel.checkpoint()
            assert m.now == race
            transfer = await m.dma.memcpy(k.virt_to_phys(dst), k.virt_to_phys(src), 16384)
            await transfer.wait()
        return transfer.done - race


@pytest.mark.hwsim
async def test_a_transfer_finishes_later_while_a_cpu_streams_through_ram() -> None:
    alone = await _memcpy_cycles(streaming_cpu=False)
    contended = await _memcpy_cycles(streaming_cpu=True)
    assert contended > alone


@pytest.mark.machine(cpus=1)
async def test_zero_length_and_misaligned_descriptors_are_refused_and_nothing_moves(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    src, dst = await k.kmalloc(64), await k.kzalloc(64)
    machine.hierarchy.write(k.virt_to_phys(src), b"s" * 64)
    ps, pd = k.virt_to_phys(src), k.virt_to_phys(dst)
    before = counters(machine)
    with pytest.raises(ValueError, match="length 0"):
        await machine.dma.memcpy(pd, ps, 0)
    with pytest.raises(ValueError, match="misaligned DMA address"):
        await machine.dma.memcpy(pd + 2, ps, 8)
    with pytest.raises(ValueError, match="misaligned DMA address"):
        await machine.dma.memcpy(pd, ps + 1, 8)
    with pytest.raises(ValueError, match="misaligned DMA address"):
        await machine.dma.submit(from_device(pd + 6, b"12345678"))
    assert machine.hierarchy.read(pd, 64) == b"\0" * 64
    assert counters(machine) == before
    assert machine.stats()["dma"]["faults"] == 0
    assert machine.stats()["irq"]["raised"] == 0


@pytest.mark.machine(cpus=1, dma=hwsim.DmaConfig(mask_bits=24))
async def test_a_range_beyond_a_24_bit_mask_faults_and_moves_nothing(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    high = await k.kzalloc(64)
    low = await k.kzalloc(64, hwsim.GFP_DMA)
    high_bus, low_bus = k.virt_to_phys(high), k.virt_to_phys(low)
    assert high_bus >= 16 * MIB > low_bus + 64
    machine.hierarchy.write(low_bus, b"L" * 64)
    before = counters(machine)
    with pytest.raises(hwsim.DmaFault, match="beyond the device's 24-bit DMA mask"):
        await machine.dma.submit(from_device(high_bus, b"abcdefgh"))
    with pytest.raises(hwsim.DmaFault, match="24-bit DMA mask"):
        await machine.dma.memcpy(high_bus, low_bus, 64)  # the destination is out of reach
    with pytest.raises(hwsim.DmaFault, match="24-bit DMA mask"):
        await machine.dma.memcpy(low_bus, high_bus, 64)  # the source is out of reach
    assert machine.hierarchy.read(high_bus, 64) == b"\0" * 64
    assert machine.hierarchy.read(low_bus, 64) == b"L" * 64
    assert counters(machine) == before
    assert machine.stats()["dma"]["faults"] == 3
    transfer = await machine.dma.submit(from_device(low_bus, b"abcdefgh"))  # below: fine
    await transfer.wait()
    assert machine.hierarchy.read(low_bus, 8) == b"abcdefgh"


@pytest.mark.machine(cpus=1)
async def test_a_bus_address_outside_ram_faults(machine: hwsim.Machine) -> None:
    before = counters(machine)
    with pytest.raises(hwsim.DmaFault, match="outside RAM"):
        await machine.dma.submit(from_device(machine.config.ram, b"abcd"))
    assert counters(machine) == before


@pytest.mark.machine(cpus=1)
async def test_a_chain_without_scatter_gather_is_refused_and_moves_nothing(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    a, b = await k.kzalloc(64), await k.kzalloc(64)
    pa, pb = k.virt_to_phys(a), k.virt_to_phys(b)
    before = counters(machine)
    with pytest.raises(ValueError, match="controller has no scatter-gather"):
        await machine.dma.submit([from_device(pa, b"abcd"), from_device(pb, b"efgh")])
    assert machine.hierarchy.read(pa, 4) + machine.hierarchy.read(pb, 4) == b"\0" * 8
    assert counters(machine) == before


@pytest.mark.machine(cpus=1, dma=hwsim.DmaConfig(scatter_gather=True, mask_bits=24))
async def test_a_scatter_gather_controller_runs_a_chain_all_or_nothing(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    a, b = await k.kzalloc(64, hwsim.GFP_DMA), await k.kzalloc(64, hwsim.GFP_DMA)
    high = await k.kzalloc(64)
    pa, pb, ph = k.virt_to_phys(a), k.virt_to_phys(b), k.virt_to_phys(high)
    with pytest.raises(hwsim.DmaFault):  # the last descriptor is beyond the mask
        await machine.dma.submit([from_device(pa, b"abcd"), from_device(ph, b"efgh")])
    assert machine.hierarchy.read(pa, 4) == b"\0" * 4
    transfer = await machine.dma.submit([from_device(pa, b"abcd"), from_device(pb, b"efgh")])
    await transfer.wait()
    assert machine.hierarchy.read(pa, 4) + machine.hierarchy.read(pb, 4) == b"abcdefgh"
    assert machine.stats()["dma"]["descriptors"] == 2
    assert len(transfer.record.descriptors) == 2


@pytest.mark.machine(cpus=1)
async def test_dev_to_mem_from_a_fifo_peripheral_lands_in_the_buffer(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    buf = await k.kzalloc(64)
    uart = FifoPeripheral(b"hello", fill=0x7E)
    bus = await k.dma_map_single(machine.dma, buf, 64, F)
    transfer = await machine.dma.submit(DmaDescriptor(bus, 8, DEV_TO_MEM, peer=uart))
    await transfer.wait()
    await k.dma_unmap_single(machine.dma, bus, 64, F)
    assert await machine.cpus[0].load(buf, 9) == b"hello~~~\0"  # padded with the idle fill
    assert uart.to_send == bytearray()


@pytest.mark.machine(cpus=1)
async def test_mem_to_dev_hands_a_fifo_peripheral_the_buffer(machine: hwsim.Machine) -> None:
    k = machine.kernel
    buf = await k.kmalloc(64)
    await machine.cpus[0].store(buf, b"frame!!!")
    bus = await k.dma_map_single(machine.dma, buf, 64, T)
    nic = FifoPeripheral()
    await (await machine.dma.submit(DmaDescriptor(bus, 8, MEM_TO_DEV, peer=nic))).wait()
    await k.dma_unmap_single(machine.dma, bus, 64, T)
    assert bytes(nic.received) == b"frame!!!"


@pytest.mark.machine(cpus=1)
async def test_every_completion_raises_the_controllers_line_at_its_done_cycle(
    machine: hwsim.Machine,
) -> None:
    assert machine.dma.irq == 11
    k = machine.kernel
    buf = await k.kmalloc(256)
    raised: list[int] = []

    async def handler(irq: int) -> None:
        delivery = current_irq()
        assert delivery is not None
        raised.append(delivery.raised)

    await k.request_irq(machine.dma.irq, handler)
    dones = []
    for _ in range(3):
        transfer = await machine.dma.submit(
            DmaDescriptor(k.virt_to_phys(buf), 256, MEM_TO_MEM, src_bus=k.virt_to_phys(buf))
        )
        dones.append((await transfer.wait()).done)
    await hwsim.sleep(1000)
    assert raised == dones
    assert machine.stats()["irq"]["raised"] == machine.stats()["dma"]["transfers"] == 3


@pytest.mark.machine(cpus=1)
async def test_a_naive_driver_dma_over_a_vmalloc_buffer_is_reported_like_kasan(
    machine: hwsim.Machine,
) -> None:
    # The driver hands the device the first page's physical address and the whole length,
    # as if vmalloc memory were physically contiguous: the next physical page is not its.
    k = machine.kernel
    pages = [await k.alloc_pages(0) for _ in range(4)]
    for pfn in (pages[0], pages[2]):  # vmalloc gets these back, pages[3] stays someone's
        await k.free_pages(pfn, 0)
    buf = await k.vmalloc(2 * PAGE, caller="naive_probe")
    pfns = [await k.vmalloc_to_pfn(buf), await k.vmalloc_to_pfn(buf + PAGE)]
    assert pfns[1] != pfns[0] + 1  # precondition: the pages are not contiguous
    transfer = await machine.dma.submit(
        DmaDescriptor(
            pfns[0] * PAGE,
            2 * PAGE,
            DEV_TO_MEM,
            peer=FifoPeripheral(b"\xab" * 2 * PAGE),
            expected_owner="naive_probe",
        )
    )
    await transfer.wait()
    assert machine.hierarchy.read((pfns[0] + 1) * PAGE, 4) == b"\xab" * 4  # the write happened
    assert transfer.status == "corruption"
    (report,) = machine.dma.reports
    assert pfns[0] + 1 in report.pfns
    assert "BUG: KASAN: wild-memory-access" in str(report)
    assert machine.stats()["dma"]["corruptions"] == 1


@pytest.mark.machine(cpus=1)
async def test_bad_descriptors_are_hwsim_errors(machine: hwsim.Machine) -> None:
    buf = machine.kernel.virt_to_phys(await machine.kernel.kmalloc(4096))
    for bad in (
        lambda: DmaDescriptor(buf, 0, MEM_TO_MEM, src_bus=buf),
        lambda: DmaDescriptor(buf + 2, 64, MEM_TO_MEM, src_bus=buf),
    ):
        with pytest.raises(hwsim.DmaDescriptorError) as info:
            bad()
        assert isinstance(info.value, hwsim.HwsimError)
    with pytest.raises(hwsim.DmaDescriptorError, match="at least one descriptor"):
        await machine.dma.submit([])
    assert machine.stats()["dma"]["transfers"] == 0
