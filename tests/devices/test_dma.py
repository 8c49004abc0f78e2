"""The DMA controller model: real bytes moved, caches bypassed (or snooped), time taken on
the shared memory channel, masks, scatter-gather, the IOMMU and the naive-driver report."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from hwsim.config import CacheConfig
from hwsim.devices.cache import CacheModel
from hwsim.devices.coherence import CoherentHierarchy
from hwsim.devices.dma import (
    DEV_TO_MEM,
    MEM_TO_DEV,
    MEM_TO_MEM,
    DmaControllerModel,
    DmaDescriptor,
    FifoPeripheral,
    IommuModel,
)
from hwsim.devices.ram import RamModel
from hwsim.errors import DmaFault
from hwsim.units import PAGE_SIZE

RAM = 1 << 20
L1 = CacheConfig(size=1024, ways=2, line=64)


def controller(memory: Any = None, **kwargs: Any) -> DmaControllerModel:
    options: dict[str, Any] = dict(
        channels=2, scatter_gather=False, mask_bits=32, bytes_per_cycle=8
    )
    options.update(kwargs)
    return DmaControllerModel(memory if memory is not None else RamModel(size=RAM), **options)


def hierarchy() -> CoherentHierarchy:
    ram = RamModel(size=RAM)
    l1s = [CacheModel(f"l1d{i}", L1, next_level=None, ram=ram, latency=4) for i in range(2)]
    return CoherentHierarchy(l1s, None, ram)


def to_mem(bus: int, data: bytes, **kwargs: Any) -> DmaDescriptor:
    return DmaDescriptor(bus, len(data), DEV_TO_MEM, peer=FifoPeripheral(data), **kwargs)


# ---------------------------------------------------------------------- bytes move


def test_dma_memcpy_copies_real_bytes_between_memory_ranges() -> None:
    dma = controller()
    dma.ram.write(0x1000, bytes(range(256)) * 20)
    transfer = dma.memcpy(0x8000, 0x1000, 5120, at=0)
    assert dma.ram.read(0x8000, 5120) == bytes(range(256)) * 20
    assert transfer.bytes == 5120 and transfer.status == "ok"


def test_dma_from_a_device_writes_what_the_device_produces() -> None:
    dma = controller()
    dma.submit([to_mem(0x2000, b"packet!!")], at=0)
    assert dma.ram.read(0x2000, 8) == b"packet!!"


def test_dma_to_a_device_hands_it_the_memory_contents() -> None:
    dma = controller()
    dma.ram.write(0x3000, b"frame data")
    nic = FifoPeripheral()
    dma.submit(DmaDescriptor(0x3000, 10, MEM_TO_DEV, peer=nic), at=0)
    assert bytes(nic.received) == b"frame data"


# ---------------------------------------------------------------------- caches


def test_non_coherent_dma_reads_ram_not_a_cpus_dirty_line_until_it_is_written_back() -> None:
    h = hierarchy()
    dma = controller(h)
    h.store(0, 0x4000, b"fresh")
    nic = FifoPeripheral()
    dma.submit(DmaDescriptor(0x4000, 5, MEM_TO_DEV, peer=nic), at=0)
    assert bytes(nic.received) == b"\0" * 5  # stale: the data is still in CPU0's L1
    h.writeback_range(0x4000, 5)  # dma_sync_single_for_device
    dma.submit(DmaDescriptor(0x4000, 5, MEM_TO_DEV, peer=nic), at=1000)
    assert bytes(nic.received[5:]) == b"fresh"


def test_non_coherent_dma_write_is_unseen_by_a_cpu_caching_the_line_until_invalidated() -> None:
    h = hierarchy()
    dma = controller(h)
    assert h.load(1, 0x5000, 4) == b"\0" * 4  # CPU1 caches the line
    dma.submit([to_mem(0x5000, b"DATA")], at=0)
    assert h.ram.read(0x5000, 4) == b"DATA"
    assert h.load(1, 0x5000, 4) == b"\0" * 4  # stale cached copy
    h.invalidate_range(0x5000, 4)  # dma_sync_single_for_cpu
    assert h.load(1, 0x5000, 4) == b"DATA"


def test_coherent_dma_snoops_the_cpu_caches_both_ways() -> None:
    h = hierarchy()
    dma = controller(h, coherent=True)
    h.store(0, 0x4000, b"fresh")
    nic = FifoPeripheral()
    dma.submit(DmaDescriptor(0x4000, 5, MEM_TO_DEV, peer=nic), at=0)
    assert bytes(nic.received) == b"fresh"
    assert h.load(1, 0x5000, 4) == b"\0" * 4
    dma.submit([to_mem(0x5000, b"DATA")], at=0)
    assert h.load(1, 0x5000, 4) == b"DATA"


# ---------------------------------------------------------------------- timing


def test_a_transfer_takes_its_bytes_over_the_engine_speed_plus_the_ram_latency() -> None:
    dma = controller(bytes_per_cycle=8)
    transfer = dma.submit([to_mem(0x10000, bytes(4096))], at=50)
    assert (transfer.start, transfer.done) == (50, 50 + 4096 // 8 + dma.ram.latency)


def test_a_ram_bound_transfer_goes_at_the_memory_channels_speed() -> None:
    dma = controller(bytes_per_cycle=64)  # faster than the RAM's 16 bytes a cycle
    transfer = dma.submit([to_mem(0x10000, bytes(4096))], at=0)
    assert transfer.done == 4096 // dma.ram.bytes_per_cycle + dma.ram.latency


def test_dma_finishes_later_when_a_cpu_hammers_the_memory_channel() -> None:
    quiet = controller()
    alone = quiet.memcpy(0x40000, 0x20000, 16384, at=0)
    busy = controller()
    n = 400
    addrs = np.arange(n, dtype=np.int64) * 512
    busy.ram.timed_burst(addrs, np.full(n, 512, dtype=np.int64), np.zeros(n, dtype=bool), at=0)
    contended = busy.memcpy(0x40000, 0x20000, 16384, at=0)
    assert contended.done > alone.done
    assert busy.ram.queued_cycles > 0


def test_a_cpu_access_queues_behind_a_dma_transfer_on_the_memory_channel() -> None:
    dma = controller(bytes_per_cycle=64)
    dma.memcpy(0x40000, 0x20000, 16384, at=0)
    _, done = dma.ram.timed_read(0x100, 64, at=10)
    assert done > 10 + 64 // dma.ram.bytes_per_cycle + dma.ram.latency


def test_channels_run_transfers_concurrently() -> None:
    two = controller(channels=2)
    a = two.submit([to_mem(0x10000, bytes(8192))], at=0)
    b = two.submit([to_mem(0x20000, bytes(8192))], at=0)
    assert (a.channel, b.channel) == (0, 1)
    assert b.start == 0 and b.done < a.done + 100
    one = controller(channels=1)
    c = one.submit([to_mem(0x10000, bytes(8192))], at=0)
    d = one.submit([to_mem(0x20000, bytes(8192))], at=0)
    assert d.channel == 0 and d.start == c.done
    assert one.statistics().busy_cycles == (d.done,)


# ---------------------------------------------------------------------- checks


def test_a_range_beyond_the_dma_mask_faults_and_moves_nothing() -> None:
    ram = RamModel(size=32 << 20)
    dma = controller(ram, mask_bits=24)
    with pytest.raises(DmaFault, match="beyond the device's 24-bit DMA mask"):
        dma.submit([to_mem((16 << 20) - 4, b"12345678")], at=0)
    assert ram.read((16 << 20) - 4, 4) == b"\0" * 4
    assert dma.statistics().faults == 1 and dma.statistics().transfers == 0
    dma.submit([to_mem((16 << 20) - 8, b"12345678")], at=0)  # the last bytes below the mask


def test_a_range_outside_ram_faults() -> None:
    dma = controller()
    with pytest.raises(DmaFault, match="outside RAM"):
        dma.memcpy(RAM - 4, 0, 8, at=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(bus_addr=0x1000, length=0, direction=MEM_TO_MEM, src_bus=0), "length 0"),
        (dict(bus_addr=0x1002, length=4, direction=MEM_TO_MEM, src_bus=0), "misaligned"),
        (dict(bus_addr=0x1000, length=4, direction=MEM_TO_MEM, src_bus=6), "misaligned"),
        (dict(bus_addr=0x1000, length=4, direction=MEM_TO_MEM), "needs src_bus"),
        (dict(bus_addr=0x1000, length=4, direction=DEV_TO_MEM), "needs a peer"),
    ],
)
def test_malformed_descriptors_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DmaDescriptor(**kwargs)


def test_a_controller_without_scatter_gather_refuses_a_chain() -> None:
    dma = controller(scatter_gather=False)
    with pytest.raises(ValueError, match="controller has no scatter-gather"):
        dma.submit([to_mem(0x1000, b"abcd"), to_mem(0x9000, b"efgh")], at=0)
    assert dma.ram.read(0x1000, 4) == b"\0" * 4


def test_a_scatter_gather_controller_runs_a_chain_of_descriptors() -> None:
    dma = controller(scatter_gather=True)
    transfer = dma.submit([to_mem(0x1000, b"abcd"), to_mem(0x9000, b"efgh")], at=0)
    assert dma.ram.read(0x1000, 4) + dma.ram.read(0x9000, 4) == b"abcdefgh"
    assert len(transfer.descriptors) == 2
    assert dma.statistics().descriptors == 2 and dma.statistics().bytes == 8


# ---------------------------------------------------------------------- IOMMU


def test_the_iommu_makes_scattered_pages_contiguous_for_the_device() -> None:
    iommu = IommuModel()
    iommu.map(0x100000, 0x7000, PAGE_SIZE)
    iommu.map(0x101000, 0x3000, PAGE_SIZE)  # physically below the first page
    dma = controller(iommu=iommu)
    data = bytes([1]) * PAGE_SIZE + bytes([2]) * PAGE_SIZE
    dma.submit([to_mem(0x100000, data)], at=0)
    assert dma.ram.read(0x7000, PAGE_SIZE) == bytes([1]) * PAGE_SIZE
    assert dma.ram.read(0x3000, PAGE_SIZE) == bytes([2]) * PAGE_SIZE
    dma.submit([to_mem(0x100000, b"more")], at=10_000)
    stats = iommu.statistics()
    assert (stats.translations, stats.iotlb_misses, stats.iotlb_hits) == (3, 2, 1)


def test_an_unmapped_iova_faults_like_intels_dmar_and_writes_nothing() -> None:
    iommu = IommuModel()
    iommu.map(0x100000, 0x7000, PAGE_SIZE)
    dma = controller(iommu=iommu)
    with pytest.raises(DmaFault, match=r"fault addr 0x101000 \[fault reason 0x05\] PTE Write"):
        dma.submit([to_mem(0x100FFC, b"12345678")], at=0)
    assert dma.ram.read(0x7FFC, 4) == b"\0" * 4
    assert dma.statistics().faults == 1 and iommu.statistics().faults == 1


def test_a_read_only_iommu_mapping_refuses_device_writes_but_allows_reads() -> None:
    iommu = IommuModel()
    iommu.map(0x100000, 0x7000, PAGE_SIZE, write=False)
    dma = controller(iommu=iommu)
    dma.ram.write(0x7000, b"ro")
    nic = FifoPeripheral()
    dma.submit(DmaDescriptor(0x100000, 2, MEM_TO_DEV, peer=nic), at=0)
    assert bytes(nic.received) == b"ro"
    with pytest.raises(DmaFault, match="PTE Write access is not set"):
        dma.submit([to_mem(0x100000, b"xx")], at=0)


def test_unmapping_an_iova_drops_it_from_the_iotlb() -> None:
    iommu = IommuModel()
    iommu.map(0x100000, 0x7000, PAGE_SIZE)
    assert iommu.translate(0x100010, write=False)[0] == 0x7010
    iommu.unmap(0x100000, PAGE_SIZE)
    with pytest.raises(DmaFault, match=r"fault reason 0x06\] PTE Read access is not set"):
        iommu.translate(0x100010, write=False)


# ---------------------------------------------------------------------- naive drivers


def test_a_dma_write_over_pages_the_buffer_does_not_own_is_reported_and_still_done() -> None:
    owners = {2: "driver", 3: "kmalloc-4k", 4: None}
    dma = controller(ownership=owners.get)
    data = b"\xab" * (3 * PAGE_SIZE)
    transfer = dma.submit([to_mem(2 * PAGE_SIZE, data, expected_owner="driver")], at=0)
    assert transfer.status == "corruption"
    assert dma.ram.read(2 * PAGE_SIZE, len(data)) == data  # the corruption is real
    (report,) = dma.reports
    assert report.pfns == (3, 4) and report.owners == ("kmalloc-4k", None)
    assert "BUG: KASAN: wild-memory-access" in str(report)
    assert f"Write of size {len(data)} at addr {2 * PAGE_SIZE:#x}" in str(report)


def test_a_dma_write_inside_the_buffers_own_pages_is_not_reported() -> None:
    dma = controller(ownership={2: "driver", 3: "driver"}.get)
    transfer = dma.submit([to_mem(2 * PAGE_SIZE + 8, bytes(PAGE_SIZE), expected_owner="driver")], 0)
    assert transfer.status == "ok" and dma.reports == []


def test_a_chain_whose_device_falls_short_moves_nothing_and_takes_no_id() -> None:
    ram = RamModel(size=1 << 20)
    dma = DmaControllerModel(ram, channels=1, scatter_gather=True)
    chain = [
        DmaDescriptor(0x1000, 8, DEV_TO_MEM, peer=FifoPeripheral(b"AAAAAAAA")),
        DmaDescriptor(0x2000, 8, DEV_TO_MEM, peer=ShortPeripheral()),
    ]
    with pytest.raises(DmaFault, match="produced 3 bytes"):
        dma.submit(chain, at=0)
    assert ram.read(0x1000, 8) == bytes(8)
    assert dma.statistics().transfers == 0
    assert dma.memcpy(0x3000, 0x1000, 8, at=0).id == 1


class ShortPeripheral:
    def produce(self, n: int) -> bytes:
        return b"abc"

    def consume(self, data: bytes) -> None:  # pragma: no cover - never read from
        pass


def test_iommu_map_and_unmap_refuse_bad_arguments_and_change_nothing() -> None:
    iommu = IommuModel()
    with pytest.raises(TypeError, match="iova is an int"):
        iommu.map("a", 0, 4096)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="size must be >= 1"):
        iommu.unmap(0, 0)
    iommu.map(0x10000, 0x5000, 4096)
    with pytest.raises(ValueError, match="size must be >= 1"):
        iommu.unmap(0x10000, -5)
    assert iommu.iova_to_phys(0x10008) == 0x5008
