"""The DMA API as a kernel service of a booted machine, with the DMA controller really
moving bytes: vmalloc refused, dma-debug's unmap checks, buffers in flight, the caches of a
non-coherent bus (and why the syncs exist), coherent memory, scatterlists with and without
an IOMMU, CMA and the 24-bit mask."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

import hwsim
from hwsim.devices.dma import (
    DEV_TO_MEM,
    MEM_TO_DEV,
    DmaDescriptor,
    DmaTransfer,
    FifoPeripheral,
)
from hwsim.kernel.dma_mapping import DMA_API_CYCLES

MIB = 1 << 20
PAGE = hwsim.PAGE_SIZE
T, F, B = hwsim.DMA_TO_DEVICE, hwsim.DMA_FROM_DEVICE, hwsim.DMA_BIDIRECTIONAL


def runs(pfns: list[int]) -> list[tuple[int, int]]:
    """Physically contiguous runs of pages, in buffer order, as (first pfn, pages)."""
    out: list[list[int]] = []
    for pfn in pfns:
        if out and out[-1][0] + out[-1][1] == pfn:
            out[-1][1] += 1
        else:
            out.append([pfn, 1])
    return [(pfn, n) for pfn, n in out]


async def scattered_vmalloc(machine: hwsim.Machine, npages: int) -> tuple[int, list[int]]:
    """A vmalloc buffer whose pages come in pairs from separate places: free pairs of pages
    (each pair in reverse order, so that the per-CPU list hands them back ascending) and let
    vmalloc take them. Returns the buffer and its pfns."""
    k = machine.kernel
    pages = [await k.alloc_pages(0) for _ in range(2 * npages)]
    for i in range(0, 2 * npages, 4):
        for pfn in (pages[i + 1], pages[i]):
            await k.free_pages(pfn, 0)
    buf = await k.vmalloc(npages * PAGE)
    pfns = [await k.vmalloc_to_pfn(buf + i * PAGE) for i in range(npages)]
    return buf, pfns


def to_device(bus: int, size: int) -> tuple[DmaDescriptor, FifoPeripheral]:
    nic = FifoPeripheral()
    return DmaDescriptor(bus, size, MEM_TO_DEV, peer=nic), nic


def from_device(bus: int, data: bytes) -> DmaDescriptor:
    return DmaDescriptor(bus, len(data), DEV_TO_MEM, peer=FifoPeripheral(data))


async def device_reads(machine: hwsim.Machine, bus: int, size: int) -> bytes:
    """What the device receives when it reads ``size`` bytes at ``bus``."""
    desc, nic = to_device(bus, size)
    await (await machine.dma.submit(desc)).wait()
    return bytes(nic.received)


async def device_writes(machine: hwsim.Machine, bus: int, data: bytes) -> None:
    await (await machine.dma.submit(from_device(bus, data))).wait()


# ---------------------------------------------------------------------- the API's rules


@pytest.mark.machine(cpus=1)
async def test_dma_map_single_of_vmalloc_memory_is_rejected_in_linuxs_words(
    machine: hwsim.Machine,
) -> None:
    buf = await machine.kernel.vmalloc(8192)
    with pytest.raises(hwsim.DmaMappingError, match="rejecting DMA map of vmalloc memory"):
        await machine.kernel.dma_map_single(machine.dma, buf, 8192, T)
    stats = machine.stats()["dma_api"]
    assert (stats["rejected_vmalloc"], stats["maps"], stats["live_mappings"]) == (1, 0, 0)


@pytest.mark.machine(cpus=1)
async def test_unmapping_twice_is_a_double_free_in_dma_debugs_words(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    buf = await k.kmalloc(256)
    bus = await k.dma_map_single(machine.dma, buf, 256, T)
    await k.dma_unmap_single(machine.dma, bus, 256, T)
    with pytest.raises(hwsim.DoubleFree, match="tries to free DMA memory it has not allocated"):
        await k.dma_unmap_single(machine.dma, bus, 256, T)
    with pytest.raises(hwsim.InvalidFree, match="has not allocated") as info:
        await k.dma_unmap_single(machine.dma, bus + 0x10000, 256, T)  # never mapped
    assert not isinstance(info.value, hwsim.DoubleFree)
    stats = machine.stats()["dma_api"]
    assert (stats["maps"], stats["unmaps"], stats["live_mappings"]) == (1, 1, 0)


@pytest.mark.machine(cpus=1)
async def test_dma_map_single_charges_the_cache_lines_it_writes_back(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    buf = await k.kzalloc(256)
    await machine.cpus[0].store(buf, b"d" * 256)  # four dirty lines
    stats = machine.stats()["dma_api"]
    before = machine.now
    bus = await k.dma_map_single(machine.dma, buf, 256, T)
    after = machine.stats()["dma_api"]
    # Counted in every level the line was dirty in (L1, then L2 on its way to RAM).
    written = after["lines_written_back"] - stats["lines_written_back"]
    assert written >= 256 // 64
    assert after["lines_invalidated"] == stats["lines_invalidated"]  # DMA_TO_DEVICE: clean only
    assert machine.now - before == DMA_API_CYCLES + written * machine.config.latency.l1
    assert machine.hierarchy.dma_read(k.virt_to_phys(buf), 256) == b"d" * 256
    await k.dma_unmap_single(machine.dma, bus, 256, T)


# ---------------------------------------------------------------------- buffers in flight


@pytest.mark.machine(cpus=1)
async def test_kfree_while_a_transfer_writes_into_the_buffer_raises_and_keeps_it(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    buf = await k.kmalloc(4096)
    bus = await k.dma_map_single(machine.dma, buf, 4096, F)
    transfer = await machine.dma.submit(from_device(bus, b"z" * 4096))
    slab = machine.stats()["slab"]
    with pytest.raises(hwsim.DmaInFlight, match=f"transfer {transfer.id}") as info:
        await k.kfree(buf)
    assert isinstance(info.value, hwsim.InvalidFree)
    assert machine.stats()["slab"]["frees"] == slab["frees"]
    assert await k.ksize(buf) == 4096  # still allocated
    with pytest.raises(hwsim.DmaInFlight, match="dma_unmap_single"):
        await k.dma_unmap_single(machine.dma, bus, 4096, F)
    assert machine.stats()["dma_api"]["live_mappings"] == 1
    await transfer.wait()
    await k.dma_unmap_single(machine.dma, bus, 4096, F)
    assert await machine.cpus[0].load(buf, 4) == b"zzzz"
    await k.kfree(buf)
    assert machine.stats()["slab"]["frees"] == slab["frees"] + 1


@pytest.mark.machine(cpus=1)
async def test_a_transfer_reading_a_buffer_also_keeps_it_from_being_freed(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    buf = await k.kmalloc(512)
    bus = await k.dma_map_single(machine.dma, buf, 512, T)
    desc, _ = to_device(bus, 512)
    transfer = await machine.dma.submit(desc)
    with pytest.raises(hwsim.DmaInFlight):
        await k.dma_unmap_single(machine.dma, bus, 512, T)
    await transfer.wait()
    await k.dma_unmap_single(machine.dma, bus, 512, T)
    await k.kfree(buf)


async def _vmalloc_in_flight(m: hwsim.Machine) -> tuple[DmaTransfer, Callable[[], Awaitable[None]]]:
    buf = await m.kernel.vmalloc(2 * PAGE)
    pfn = await m.kernel.vmalloc_to_pfn(buf + PAGE)
    transfer = await m.dma.submit(from_device(pfn * PAGE, b"v" * 64))
    return transfer, lambda: m.kernel.vfree(buf)


async def _pages_in_flight(m: hwsim.Machine) -> tuple[DmaTransfer, Callable[[], Awaitable[None]]]:
    pfn = await m.kernel.alloc_pages(1)
    transfer = await m.dma.submit(from_device((pfn + 1) * PAGE, b"p" * 64))
    return transfer, lambda: m.kernel.free_pages(pfn, 1)


async def _coherent_in_flight(
    m: hwsim.Machine,
) -> tuple[DmaTransfer, Callable[[], Awaitable[None]]]:
    cpu_addr, bus = await m.kernel.dma_alloc_coherent(m.dma, 2 * PAGE)
    transfer = await m.dma.submit(from_device(bus + PAGE, b"c" * 64))
    return transfer, lambda: m.kernel.dma_free_coherent(m.dma, 2 * PAGE, cpu_addr, bus)


async def _sg_in_flight(m: hwsim.Machine) -> tuple[DmaTransfer, Callable[[], Awaitable[None]]]:
    buf = await m.kernel.vmalloc(PAGE)
    sgl = await m.kernel.vmalloc_to_sg(buf, PAGE)
    assert await m.kernel.dma_map_sg(m.dma, sgl, F) == 1
    transfer = await m.dma.submit(from_device(sgl[0].dma_address, b"s" * 64))
    return transfer, lambda: m.kernel.dma_unmap_sg(m.dma, sgl, F)


@pytest.mark.machine(cpus=1)
@pytest.mark.parametrize(
    "start",
    [_vmalloc_in_flight, _pages_in_flight, _coherent_in_flight, _sg_in_flight],
    ids=["vfree", "free_pages", "dma_free_coherent", "dma_unmap_sg"],
)
async def test_freeing_or_unmapping_memory_in_flight_raises_until_the_transfer_completes(
    machine: hwsim.Machine,
    start: Callable[[hwsim.Machine], Awaitable[tuple[DmaTransfer, Callable[[], Awaitable[None]]]]],
) -> None:
    transfer, free = await start(machine)
    assert not transfer.completed
    with pytest.raises(hwsim.DmaInFlight, match="still used by DMA transfer"):
        await free()
    await transfer.wait()
    await free()  # now it goes through, once


@pytest.mark.machine(cpus=1)
async def test_kmem_cache_free_of_an_object_in_flight_raises_dma_in_flight(
    machine: hwsim.Machine,
) -> None:
    # A driver's receive descriptors from its own cache: freeing one the device is still
    # writing is the same bug as kfree-ing a kmalloc buffer.
    k = machine.kernel
    cache = await k.kmem_cache_create("rx_desc", 256)
    obj = await k.kmem_cache_alloc(cache)
    transfer = await machine.dma.submit(from_device(k.virt_to_phys(obj), b"k" * 256))
    frees = machine.stats()["slab"]["frees"]
    with pytest.raises(hwsim.DmaInFlight, match="still used by DMA transfer"):
        await k.kmem_cache_free(cache, obj)
    assert machine.stats()["slab"]["frees"] == frees
    await transfer.wait()
    await k.kmem_cache_free(cache, obj)


@pytest.mark.machine(cpus=1, iommu=True)
async def test_with_the_iommu_unmapping_during_a_transfer_raises_dma_in_flight(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    buf = await k.kmalloc(4096)
    iova = await k.dma_map_single(machine.dma, buf, 4096, F)
    transfer = await machine.dma.submit(from_device(iova, b"z" * 4096))
    with pytest.raises(hwsim.DmaInFlight):
        await k.dma_unmap_single(machine.dma, iova, 4096, F)
    assert machine.stats()["dma_api"]["live_mappings"] == 1
    await transfer.wait()
    await k.dma_unmap_single(machine.dma, iova, 4096, F)


# ---------------------------------------------------------------------- caches


@pytest.mark.machine(cpus=2)
async def test_without_dma_map_single_the_device_reads_stale_ram_under_a_dirty_line(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    buf = await k.kzalloc(64)
    await machine.cpus[0].store(buf, b"fresh data")  # dirty in CPU 0's L1
    assert await device_reads(machine, k.virt_to_phys(buf), 10) == b"\0" * 10


@pytest.mark.machine(cpus=2)
async def test_dma_map_single_to_device_writes_dirty_lines_back_for_the_device(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    buf = await k.kzalloc(64)
    await machine.cpus[0].store(buf, b"fresh data")
    bus = await k.dma_map_single(machine.dma, buf, 64, T)
    assert await device_reads(machine, bus, 10) == b"fresh data"
    # The CPU owns the buffer only after unmap or sync_for_device: a store in between is
    # not seen until the buffer is handed back to the device.
    await machine.cpus[0].store(buf, b"newer data")
    assert await device_reads(machine, bus, 10) == b"fresh data"
    await k.dma_sync_single_for_device(machine.dma, bus, 64, T)
    assert await device_reads(machine, bus, 10) == b"newer data"
    await k.dma_unmap_single(machine.dma, bus, 64, T)


@pytest.mark.machine(cpus=2)
@pytest.mark.parametrize("give_back", ["dma_sync_single_for_cpu", "dma_unmap_single"])
async def test_a_cpu_reads_its_stale_cached_copy_of_a_dma_write_until_sync_or_unmap(
    machine: hwsim.Machine, give_back: str
) -> None:
    k, cpu = machine.kernel, machine.cpus[0]
    buf = await k.kzalloc(64)
    assert await cpu.load(buf, 8) == b"\0" * 8  # now cached
    bus = await k.dma_map_single(machine.dma, buf, 64, F)
    await device_writes(machine, bus, b"NEWBYTES")
    assert await cpu.load(buf, 8) == b"\0" * 8  # stale: the line was not invalidated
    await getattr(k, give_back)(machine.dma, bus, 64, F)
    assert await cpu.load(buf, 8) == b"NEWBYTES"
    if give_back == "dma_sync_single_for_cpu":
        await k.dma_unmap_single(machine.dma, bus, 64, F)


@pytest.mark.machine(cpus=2)
async def test_a_dma_memcpy_into_a_cached_buffer_is_stale_until_sync_for_cpu(
    machine: hwsim.Machine,
) -> None:
    k, cpu = machine.kernel, machine.cpus[1]
    src, dst = await k.kmalloc(128), await k.kzalloc(128)
    machine.hierarchy.write(k.virt_to_phys(src), b"m" * 128)
    assert await cpu.load(dst, 128) == b"\0" * 128  # CPU 1 caches dst
    src_bus = await k.dma_map_single(machine.dma, src, 128, T)
    dst_bus = await k.dma_map_single(machine.dma, dst, 128, F)
    await (await machine.dma.memcpy(dst_bus, src_bus, 128)).wait()
    assert await cpu.load(dst, 128) == b"\0" * 128
    await k.dma_sync_single_for_cpu(machine.dma, dst_bus, 128, F)
    assert await cpu.load(dst, 128) == b"m" * 128


@pytest.mark.machine(cpus=2)
async def test_cpu_stores_to_dma_alloc_coherent_memory_reach_the_device_without_a_sync(
    machine: hwsim.Machine,
) -> None:
    k, cpu = machine.kernel, machine.cpus[0]
    cpu_addr, bus = await k.dma_alloc_coherent(machine.dma, PAGE)
    assert machine.dma_api.model.is_uncached(k.virt_to_phys(cpu_addr))
    # Mapped uncached: the store must not sit in a cache the device does not see.
    await cpu.store(cpu_addr, b"to device!")
    assert await device_reads(machine, bus, 10) == b"to device!"
    await k.dma_free_coherent(machine.dma, PAGE, cpu_addr, bus)


@pytest.mark.machine(cpus=2)
async def test_device_writes_to_dma_alloc_coherent_memory_reach_the_cpu_without_a_sync(
    machine: hwsim.Machine,
) -> None:
    k, cpu = machine.kernel, machine.cpus[0]
    cpu_addr, bus = await k.dma_alloc_coherent(machine.dma, PAGE)
    # Mapped uncached: a load must not hit a cached copy older than the device's write.
    assert await cpu.load(cpu_addr, 8) == b"\0" * 8
    await device_writes(machine, bus, b"FROMDEV!")
    assert await cpu.load(cpu_addr, 8) == b"FROMDEV!"
    await k.dma_free_coherent(machine.dma, PAGE, cpu_addr, bus)


@pytest.mark.machine(cpus=2, dma_coherent=True)
async def test_a_snooping_bus_needs_no_sync_for_streaming_buffers(
    machine: hwsim.Machine,
) -> None:
    k, cpu = machine.kernel, machine.cpus[0]
    buf = await k.kzalloc(128)
    phys = k.virt_to_phys(buf)
    await cpu.store(buf, b"fresh data")  # dirty in L1: the device snoops it
    assert await device_reads(machine, phys, 10) == b"fresh data"
    assert await cpu.load(buf + 64, 8) == b"\0" * 8  # cached
    await device_writes(machine, phys + 64, b"FROMDEV!")  # invalidates the cached copy
    assert await cpu.load(buf + 64, 8) == b"FROMDEV!"
    # The syncs cost nothing there: no line is written back or invalidated.
    bus = await k.dma_map_single(machine.dma, buf, 128, B)
    await k.dma_unmap_single(machine.dma, bus, 128, B)
    stats = machine.stats()["dma_api"]
    assert stats["lines_written_back"] == stats["lines_invalidated"] == 0


# ---------------------------------------------------------------------- scatterlists


@pytest.mark.machine(cpus=1, dma=hwsim.DmaConfig(scatter_gather=True))
async def test_dma_map_sg_of_vmalloc_memory_gives_one_segment_per_contiguous_run(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    buf, pfns = await scattered_vmalloc(machine, 8)
    expected = runs(pfns)
    assert 1 < len(expected) < len(pfns)  # precondition: some runs, some merging
    sgl = await k.vmalloc_to_sg(buf, 8 * PAGE)
    assert len(sgl) == 8
    nents = await k.dma_map_sg(machine.dma, sgl, F)
    assert nents == len(expected)
    assert [(sgl[i].dma_address, sgl[i].dma_length) for i in range(nents)] == [
        (pfn * PAGE, n * PAGE) for pfn, n in expected
    ]
    # The device fills the buffer through a chain of one descriptor per segment.
    data = bytes(range(256)) * (8 * PAGE // 256)
    chain, pos = [], 0
    for i in range(nents):
        n = sgl[i].dma_length
        chain.append(from_device(sgl[i].dma_address, data[pos : pos + n]))
        pos += n
    await (await machine.dma.submit(chain)).wait()
    await k.dma_unmap_sg(machine.dma, sgl, F)
    assert await machine.cpus[0].load(buf, 8 * PAGE) == data


@pytest.mark.machine(cpus=1)
async def test_dma_map_sg_of_scattered_pages_fails_on_a_controller_without_scatter_gather(
    machine: hwsim.Machine,
) -> None:
    buf, pfns = await scattered_vmalloc(machine, 4)
    assert len(runs(pfns)) > 1
    sgl = await machine.kernel.vmalloc_to_sg(buf, 4 * PAGE)
    assert await machine.kernel.dma_map_sg(machine.dma, sgl, F) == 0  # Linux's failure
    stats = machine.stats()["dma_api"]
    assert (stats["map_failures"], stats["live_mappings"]) == (1, 0)


@pytest.mark.machine(cpus=1, iommu=True)
async def test_with_the_iommu_a_vmalloc_buffer_is_one_segment_and_the_device_fills_its_pages(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    buf, pfns = await scattered_vmalloc(machine, 8)
    assert len(runs(pfns)) > 1
    sgl = await k.vmalloc_to_sg(buf, 8 * PAGE)
    assert await k.dma_map_sg(machine.dma, sgl, F) == 1
    iova, length = sgl[0].dma_address, sgl[0].dma_length
    assert length == 8 * PAGE
    data = bytes(range(251)) * (8 * PAGE // 251) + bytes(8 * PAGE % 251)
    await device_writes(machine, iova, data)  # one descriptor, no scatter-gather needed
    await k.dma_unmap_sg(machine.dma, sgl, F)
    assert await machine.cpus[0].load(buf, 8 * PAGE) == data
    for i, pfn in enumerate(pfns):  # each IOVA page landed in its own physical page
        assert machine.hierarchy.read(pfn * PAGE, PAGE) == data[i * PAGE : (i + 1) * PAGE]
    # Unmapped, the range faults like any IOVA the device was not given.
    with pytest.raises(hwsim.DmaFault, match="DMAR"):
        await device_writes(machine, iova, b"late")
    assert machine.hierarchy.read(pfns[0] * PAGE, 4) == data[:4]


@pytest.mark.machine(cpus=1, iommu=True)
async def test_with_the_iommu_a_transfer_to_an_unmapped_iova_faults_and_writes_nothing(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    buf = await k.kzalloc(PAGE)
    iova = await k.dma_map_single(machine.dma, buf, PAGE, F)
    before = machine.stats()["dma"]
    with pytest.raises(hwsim.DmaFault, match="fault addr"):
        await device_writes(machine, iova - PAGE, b"12345678")  # the page below the mapping
    with pytest.raises(hwsim.DmaFault):
        await device_writes(machine, k.virt_to_phys(buf), b"12345678")  # a physical address
    after = machine.stats()["dma"]
    assert after["faults"] == before["faults"] + 2
    assert after["transfers"] == before["transfers"]
    await k.dma_unmap_single(machine.dma, iova, PAGE, F)
    assert await machine.cpus[0].load(buf, 8) == b"\0" * 8


# ---------------------------------------------------------------------- CMA and masks


@pytest.mark.machine(cpus=1, cma="16MiB")
async def test_dma_alloc_coherent_comes_from_the_cma_area(machine: hwsim.Machine) -> None:
    k = machine.kernel
    model = machine.dma_api.model
    cpu_addr, bus = await k.dma_alloc_coherent(machine.dma, 64 * 1024)
    base, pages = model.cma_base_pfn * PAGE, model.cma_pages * PAGE
    assert pages == 16 * MIB
    assert base <= bus and bus + 64 * 1024 <= base + pages
    assert k.virt_to_phys(cpu_addr) == bus
    stats = machine.stats()["dma_api"]
    assert stats["cma_allocs"] == 1
    assert stats["cma_free_pages"] == stats["cma_pages"] - 16
    await k.dma_free_coherent(machine.dma, 64 * 1024, cpu_addr, bus)
    assert machine.stats()["dma_api"]["cma_free_pages"] == stats["cma_pages"]


@pytest.mark.machine(cpus=1, dma=hwsim.DmaConfig(mask_bits=24))
async def test_dma_alloc_coherent_for_a_24_bit_device_lands_below_16_mib(
    machine: hwsim.Machine,
) -> None:
    cpu_addr, bus = await machine.kernel.dma_alloc_coherent(machine.dma, 64 * 1024)
    assert bus + 64 * 1024 <= 16 * MIB
    await device_writes(machine, bus, b"isa!")  # the device reaches it
    assert await machine.cpus[0].load(cpu_addr, 4) == b"isa!"


@pytest.mark.machine(cpus=1, cma="16MiB", dma=hwsim.DmaConfig(mask_bits=24))
async def test_a_cma_area_above_a_24_bit_mask_is_skipped_for_lower_memory(
    machine: hwsim.Machine,
) -> None:
    # dma_direct_alloc: a CMA block the device cannot reach is released (dma_coherent_ok)
    # and the pages come from ZONE_DMA instead.
    assert machine.dma_api.model.cma_base_pfn * PAGE >= 16 * MIB
    cpu_addr, bus = await machine.kernel.dma_alloc_coherent(machine.dma, 64 * 1024)
    assert bus + 64 * 1024 <= 16 * MIB
    assert machine.kernel.virt_to_phys(cpu_addr) == bus
    stats = machine.stats()["dma_api"]
    assert stats["cma_allocs"] == 0 and stats["cma_free_pages"] == stats["cma_pages"]


@pytest.mark.machine(ram="5GiB", cpus=1)
async def test_unmapping_a_bounced_mapping_is_refused_while_the_device_writes_its_slots(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    buf = await k.kmalloc(4096)
    assert k.virt_to_phys(buf) >= 1 << 32  # beyond the 32-bit mask: it must bounce
    handle = await k.dma_map_single(machine.dma, buf, 4096, hwsim.DMA_FROM_DEVICE)
    assert handle < 1 << 32  # the swiotlb slots
    transfer = await machine.dma.submit(
        DmaDescriptor(handle, 4096, DEV_TO_MEM, peer=FifoPeripheral(b"x" * 4096))
    )
    with pytest.raises(hwsim.DmaInFlight, match="dma_unmap_single"):
        await k.dma_unmap_single(machine.dma, handle, 4096, hwsim.DMA_FROM_DEVICE)
    await transfer.wait()
    await k.dma_unmap_single(machine.dma, handle, 4096, hwsim.DMA_FROM_DEVICE)
    assert await machine.cpus[0].load(buf, 4) == b"xxxx"  # copied back from the slots


@pytest.mark.machine(cpus=1, iommu=True)
async def test_a_refused_coherent_free_leaves_the_mapping_to_be_refused_again(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    cpu_addr, handle = await k.dma_alloc_coherent(machine.dma, 8192)
    await k.free_pages(k.virt_to_phys(cpu_addr) >> 12, 1)  # behind the DMA API's back
    for _ in range(2):  # the second attempt used to crash the dma_api service
        with pytest.raises(hwsim.DoubleFree):
            await k.dma_free_coherent(machine.dma, 8192, cpu_addr, handle)
    assert machine.stats()["dma_api"]["live_mappings"] == 1


@pytest.mark.machine(cpus=1)
async def test_request_irq_wants_an_async_handler_and_a_str_name(machine: hwsim.Machine) -> None:
    def not_async(irq: int) -> None:  # pragma: no cover - never called
        pass

    async def handler(irq: int) -> None:  # pragma: no cover - never called
        pass

    with pytest.raises(TypeError, match="async function"):
        await machine.kernel.request_irq(5, not_async)
    with pytest.raises(TypeError, match="name is a str"):
        await machine.kernel.request_irq(5, handler, name=3)  # type: ignore[arg-type]
    assert machine.irq.model.handlers(5) == ()
