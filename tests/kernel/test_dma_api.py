"""The DMA API: vmalloc refused, bus == phys, swiotlb bouncing, coherent memory below the mask
and from CMA, scatterlists with and without an IOMMU, the non-coherent sync rules, and
dma-debug's complaints."""

from __future__ import annotations

import attrs
import pytest

import hwsim
from hwsim.config import CacheConfig
from hwsim.devices.cache import CacheModel
from hwsim.devices.coherence import CoherentHierarchy
from hwsim.devices.ram import RamModel
from hwsim.kernel.buddy import BuddyAllocator
from hwsim.kernel.dma_api import (
    DMA_BIDIRECTIONAL,
    DMA_FROM_DEVICE,
    DMA_MAPPING_ERROR,
    DMA_NONE,
    DMA_TO_DEVICE,
    IO_TLB_SIZE,
    DmaApi,
    DmaDevice,
    ScatterList,
    sg_from_vmalloc,
)
from hwsim.kernel.kmalloc import Kmalloc
from hwsim.kernel.layout import Layout, layout_for
from hwsim.kernel.pagetable import KernelPageTable
from hwsim.kernel.slab import SlabAllocator
from hwsim.kernel.vmalloc import VmallocAllocator

MIB = 1 << 20
RAM = 64 * MIB
PAGE = 4096
ISA = DmaDevice("floppy", dma_mask=24)
PCI = DmaDevice("0000:00:1f.2", dma_mask=32)
WIDE = DmaDevice("nvme0", dma_mask=64, max_segment_size=1 * MIB)
IOMMU = DmaDevice("0000:03:00.0", dma_mask=64, iommu=True, max_segment_size=1 * MIB)


@attrs.define
class Stack:
    ram: RamModel
    buddy: BuddyAllocator
    layout: Layout
    vmalloc: VmallocAllocator
    kmalloc: Kmalloc
    caches: CoherentHierarchy
    dma: DmaApi

    def phys(self, addr: int) -> int:
        return self.layout.virt_to_phys(addr)


def make_stack(
    *, dma_coherent: bool = False, cma: int = 0, swiotlb_size: int | None = None
) -> Stack:
    ram = RamModel(size=RAM)
    buddy = BuddyAllocator(RAM >> 12, nr_cpus=2)
    layout = layout_for("x86_64", RAM)
    vmalloc = VmallocAllocator(buddy, KernelPageTable(buddy, ram, layout), layout, ram)
    kmalloc = Kmalloc(SlabAllocator(buddy, ram, layout, 2), buddy, ram, layout)
    l2 = CacheModel("l2", CacheConfig(size=256 << 10, ways=8), next_level=None, ram=ram, latency=12)
    l1s = [
        CacheModel(f"l1d{i}", CacheConfig(size=32 << 10, ways=8), next_level=l2, ram=ram, latency=4)
        for i in range(2)
    ]
    caches = CoherentHierarchy(l1s, l2, ram)
    dma = DmaApi(
        buddy,
        layout,
        ram,
        caches=caches,
        vmalloc=vmalloc,
        dma_coherent=dma_coherent,
        cma=cma,
        swiotlb_size=swiotlb_size,
    )
    return Stack(ram, buddy, layout, vmalloc, kmalloc, caches, dma)


@pytest.fixture
def s() -> Stack:
    return make_stack()


def state(s: Stack) -> tuple[object, ...]:
    """What a failed call must leave alone (the failure counters may count it)."""
    stats = s.dma.statistics()
    return (
        s.dma.mappings(),
        (stats.swiotlb_used, stats.cma_free_pages, stats.live_mappings),
        dict(s.buddy.allocated),
    )


def runs(pfns: list[int]) -> list[tuple[int, int]]:
    """Physically contiguous runs of pages as (phys, bytes)."""
    out: list[list[int]] = []
    for pfn in pfns:
        if out and out[-1][0] + out[-1][1] == pfn:
            out[-1][1] += 1
        else:
            out.append([pfn, 1])
    return [(pfn * PAGE, n * PAGE) for pfn, n in out]


# ---------------------------------------------------------------------- dma_map_single


def test_dma_map_single_rejects_vmalloc_memory_in_linuxs_words(s: Stack) -> None:
    addr = s.vmalloc.vmalloc(8192, caller="my_driver_probe+0x40/0x100")
    before = state(s)
    with pytest.raises(hwsim.DmaMappingError) as err:
        s.dma.dma_map_single(PCI, addr, 8192, DMA_TO_DEVICE)
    message = str(err.value)
    assert "rejecting DMA map of vmalloc memory" in message
    assert "dma_map_sg" in message and "kmalloc" in message and "dma_alloc_coherent" in message
    assert "my_driver_probe" in message
    assert state(s) == before
    assert s.dma.statistics().rejected_vmalloc == 1


def test_a_kmalloc_buffer_maps_to_its_physical_address_without_an_iommu(s: Stack) -> None:
    buf = s.kmalloc.kmalloc(1000)
    handle = s.dma.dma_map_single(PCI, buf, 1000, DMA_TO_DEVICE)
    assert handle == s.phys(buf)
    [info] = s.dma.mappings()
    assert (info.kind, info.bounced, info.iommu) == ("single", False, False)
    assert info.phys_ranges == ((s.phys(buf), 1000),)
    s.dma.dma_unmap_single(PCI, handle, 1000, DMA_TO_DEVICE)
    assert s.dma.mappings() == []


@pytest.mark.parametrize("size, direction", [(0, DMA_TO_DEVICE), (64, DMA_NONE)])
def test_a_zero_size_or_dma_none_mapping_is_refused(s: Stack, size: int, direction: int) -> None:
    buf = s.kmalloc.kmalloc(64)
    with pytest.raises(ValueError):
        s.dma.dma_map_single(PCI, buf, size, direction)
    assert s.dma.mappings() == []


def test_mapping_memory_outside_the_direct_map_or_free_pages_is_refused(s: Stack) -> None:
    with pytest.raises(hwsim.DmaMappingError, match="maps memory from invalid area"):
        s.dma.dma_map_single(PCI, 0x1000, 64, DMA_TO_DEVICE)
    pfn = s.buddy.alloc_pages(0)
    s.buddy.free_pages(pfn, 0)
    with pytest.raises(hwsim.DmaMappingError, match="not allocated"):
        s.dma.dma_map_single(PCI, s.layout.pfn_to_virt(pfn), 64, DMA_TO_DEVICE)
    with pytest.raises(TypeError):
        s.dma.dma_map_single("eth0", s.kmalloc.kmalloc(64), 64, DMA_TO_DEVICE)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- swiotlb


@pytest.mark.parametrize("direction", [DMA_TO_DEVICE, DMA_FROM_DEVICE, DMA_BIDIRECTIONAL])
def test_a_24_bit_devices_buffer_above_16_mib_bounces_and_the_data_round_trips(
    s: Stack, direction: int
) -> None:
    buf = s.kmalloc.kmalloc(3000)
    phys = s.phys(buf)
    assert phys >= 16 * MIB
    s.caches.store(0, phys, b"from the cpu" * 250)  # dirty in CPU 0's L1, not in RAM
    handle = s.dma.dma_map_single(ISA, buf, 3000, direction)
    assert handle + 3000 <= 16 * MIB and handle != phys
    [info] = s.dma.mappings()
    assert info.bounced
    if direction != DMA_FROM_DEVICE:
        assert s.caches.dma_read(handle, 3000) == b"from the cpu" * 250
    s.caches.dma_write(handle, b"from the device" * 200)
    s.dma.dma_unmap_single(ISA, handle, 3000, direction)
    expected = b"from the device" * 200 if direction != DMA_TO_DEVICE else b"from the cpu" * 250
    assert s.caches.load(1, phys, 3000) == expected
    stats = s.dma.statistics()
    assert stats.bounces == 1 and stats.swiotlb_used == 0
    assert stats.bounce_bytes == 3000 * (2 if direction != DMA_TO_DEVICE else 1)


def test_bounce_slots_are_2_kib_and_a_full_pool_fails_without_changing_anything() -> None:
    s = make_stack(swiotlb_size=256 << 10)  # one segment: 128 slots
    assert s.dma.statistics().swiotlb_slots == 128
    buf = s.kmalloc.kmalloc(8192)
    first = s.dma.dma_map_single(ISA, buf, 100, DMA_TO_DEVICE)
    second = s.dma.dma_map_single(ISA, buf + 4096, 100, DMA_TO_DEVICE)
    assert second - first == IO_TLB_SIZE
    big = s.kmalloc.kmalloc(256 << 10)
    before = state(s)
    with pytest.raises(hwsim.DmaMappingError, match="swiotlb buffer is full"):
        s.dma.dma_map_single(ISA, big, 256 << 10, DMA_TO_DEVICE)
    assert state(s) == before


def test_without_swiotlb_a_buffer_above_the_mask_cannot_be_mapped() -> None:
    s = make_stack(swiotlb_size=0)
    with pytest.raises(hwsim.DmaMappingError, match="no swiotlb"):
        s.dma.dma_map_single(ISA, s.kmalloc.kmalloc(64), 64, DMA_TO_DEVICE)


# ---------------------------------------------------------------------- coherent memory


@pytest.mark.parametrize("dev, limit", [(ISA, 16 * MIB), (PCI, 4 << 30), (WIDE, 1 << 64)])
def test_coherent_memory_is_zeroed_and_below_the_coherent_mask(
    s: Stack, dev: DmaDevice, limit: int
) -> None:
    pfn = s.buddy.alloc_pages(2)
    s.ram.write(pfn * PAGE, b"\xff" * 4 * PAGE)
    s.buddy.free_pages(pfn, 2)  # garbage the allocation might get
    cpu_addr, handle = s.dma.dma_alloc_coherent(dev, 3 * PAGE)
    assert handle + 3 * PAGE <= limit
    assert s.layout.virt_to_phys(cpu_addr) == handle
    assert s.caches.read(handle, 3 * PAGE) == bytes(3 * PAGE)
    s.dma.dma_free_coherent(dev, 3 * PAGE, cpu_addr, handle)
    assert s.dma.mappings() == []


def test_coherent_memory_comes_from_cma_when_configured_and_goes_back_there() -> None:
    s = make_stack(cma=8 * MIB)
    base = s.dma.cma_base_pfn * PAGE
    assert s.dma.statistics().cma_pages == 2048
    cpu_addr, handle = s.dma.dma_alloc_coherent(PCI, 64 << 10)
    assert base <= handle < base + 8 * MIB
    assert s.dma.statistics().cma_free_pages == 2048 - 16
    s.dma.dma_free_coherent(PCI, 64 << 10, cpu_addr, handle)
    assert s.dma.statistics().cma_free_pages == 2048
    # A 24-bit device cannot use a CMA area above 16 MiB: ZONE_DMA pages instead.
    assert base >= 16 * MIB
    cpu_addr, handle = s.dma.dma_alloc_coherent(ISA, 64 << 10)
    assert handle < 16 * MIB and s.dma.statistics().cma_allocs == 1


def test_coherent_memory_is_uncached_on_a_non_coherent_platform_only() -> None:
    for coherent in (False, True):
        s = make_stack(dma_coherent=coherent)
        _, handle = s.dma.dma_alloc_coherent(PCI, 5000)
        assert s.dma.is_uncached(handle + 8191) is not coherent
        assert not s.dma.is_uncached(handle + 8192)


def test_dma_free_coherent_checks_size_address_and_double_free(s: Stack) -> None:
    cpu_addr, handle = s.dma.dma_alloc_coherent(PCI, 8192)
    before = state(s)
    with pytest.raises(hwsim.InvalidFree, match="frees DMA memory with different size"):
        s.dma.dma_free_coherent(PCI, 4096, cpu_addr, handle)
    with pytest.raises(hwsim.InvalidFree, match="with different CPU address"):
        s.dma.dma_free_coherent(PCI, 8192, cpu_addr + 64, handle)
    with pytest.raises(hwsim.InvalidFree, match="it has not allocated"):
        s.dma.dma_free_coherent(PCI, 8192, cpu_addr, handle + PAGE)
    assert state(s) == before
    s.dma.dma_free_coherent(PCI, 8192, cpu_addr, handle)
    with pytest.raises(hwsim.DoubleFree, match="it has not allocated"):
        s.dma.dma_free_coherent(PCI, 8192, cpu_addr, handle)


# ---------------------------------------------------------------------- scatterlists


def scattered_vmalloc(s: Stack, size: int) -> int:
    """A vmalloc buffer whose first pages are scattered (every other page of a run, from the
    per-CPU list, last freed first) and whose other pages are one run (a fresh refill)."""
    pfns = [s.buddy.alloc_pages(0) for _ in range(6)]
    for pfn in pfns[::2]:
        s.buddy.free_pages(pfn, 0)
    return s.vmalloc.vmalloc(size)


def test_dma_map_sg_over_vmalloc_gives_one_segment_per_contiguous_run(s: Stack) -> None:
    addr = scattered_vmalloc(s, 10 * PAGE)
    sgl = sg_from_vmalloc(s.vmalloc, addr, 10 * PAGE)
    pfns = [s.vmalloc.vmalloc_to_pfn(addr + i * PAGE) for i in range(10)]
    assert [sg.pfn for sg in sgl] == pfns
    expected = runs(pfns)
    assert 1 < len(expected) < 10  # scattered pages, and a run of contiguous ones
    nents = s.dma.dma_map_sg(WIDE, sgl, DMA_FROM_DEVICE)
    assert nents == len(expected) > 1
    assert [(sg.dma_address, sg.dma_length) for sg in sgl][:nents] == expected
    s.dma.dma_unmap_sg(WIDE, sgl, DMA_FROM_DEVICE)
    assert s.dma.mappings() == []


def test_physically_contiguous_entries_merge_into_one_segment(s: Stack) -> None:
    pfn = s.buddy.alloc_pages(2)
    sgl = ScatterList.from_pages([(pfn + i, 0, PAGE) for i in range(4)])
    assert s.dma.dma_map_sg(WIDE, sgl, DMA_TO_DEVICE) == 1
    assert (sgl[0].dma_address, sgl[0].dma_length) == (pfn * PAGE, 4 * PAGE)
    # ...but never beyond the device's max segment size (64 KiB unless it says otherwise).
    big = s.buddy.alloc_pages(5)
    sgl = ScatterList.from_pages([(big + i, 0, PAGE) for i in range(32)])
    assert s.dma.dma_map_sg(PCI, sgl, DMA_TO_DEVICE) == 2


def test_a_device_without_scatter_gather_gets_0_for_a_scattered_list(s: Stack) -> None:
    addr = scattered_vmalloc(s, 4 * PAGE)
    sgl = sg_from_vmalloc(s.vmalloc, addr, 4 * PAGE)
    before = state(s)
    dev = DmaDevice("isa-dma", dma_mask=32, scatter_gather=False)
    assert s.dma.dma_map_sg(dev, sgl, DMA_TO_DEVICE) == 0
    assert "cannot do scatter-gather" in s.dma.log[-1]
    assert state(s) == before


def test_with_an_iommu_a_scattered_list_is_one_iova_segment_translated_page_by_page(
    s: Stack,
) -> None:
    addr = scattered_vmalloc(s, 10 * PAGE)
    sgl = sg_from_vmalloc(s.vmalloc, addr, 10 * PAGE)
    assert s.dma.dma_map_sg(IOMMU, sgl, DMA_FROM_DEVICE) == 1
    iova, length = sgl[0].dma_address, sgl[0].dma_length
    assert length == 10 * PAGE and iova % PAGE == 0 and iova < 1 << 32
    for i in range(10):
        phys = s.dma.iommu_translate(IOMMU, iova + i * PAGE + 12, write=True)
        assert phys == s.vmalloc.vmalloc_to_pfn(addr + i * PAGE) * PAGE + 12
    with pytest.raises(hwsim.DmaFault, match="PTE Read access is not set"):
        s.dma.iommu_translate(IOMMU, iova + 16 * PAGE)
    s.dma.dma_unmap_sg(IOMMU, sgl, DMA_FROM_DEVICE)
    with pytest.raises(hwsim.DmaFault, match=r"fault addr 0x[0-9a-f]+"):
        s.dma.iommu_translate(IOMMU, iova)


def test_an_iommu_mapping_only_allows_the_mapped_direction(s: Stack) -> None:
    buf = s.kmalloc.kmalloc(512)
    handle = s.dma.dma_map_single(IOMMU, buf, 512, DMA_TO_DEVICE)
    assert handle % PAGE == s.phys(buf) % PAGE
    assert s.dma.iommu_translate(IOMMU, handle) == s.phys(buf)
    with pytest.raises(hwsim.DmaFault, match="PTE Write access is not set"):
        s.dma.iommu_translate(IOMMU, handle, write=True)


# ---------------------------------------------------------------------- cache maintenance


def test_a_to_device_mapping_writes_dirty_cpu_lines_back_to_ram(s: Stack) -> None:
    buf = s.kmalloc.kmalloc(256)
    phys = s.phys(buf)
    s.caches.store(0, phys, b"x" * 256)
    assert s.caches.dma_read(phys, 256) != b"x" * 256  # still only in the cache
    handle = s.dma.dma_map_single(PCI, buf, 256, DMA_TO_DEVICE)
    assert s.caches.dma_read(handle, 256) == b"x" * 256
    assert s.dma.statistics().lines_written_back >= 4  # 4 lines in L1 (and L2 below)


def test_the_cpu_reads_stale_data_until_the_from_device_mapping_is_unmapped(s: Stack) -> None:
    buf = s.kmalloc.kmalloc(256)
    phys = s.phys(buf)
    s.caches.store(0, phys, b"old!" * 64)
    handle = s.dma.dma_map_single(PCI, buf, 256, DMA_FROM_DEVICE)
    s.caches.dma_write(handle, b"new!" * 64)
    assert s.caches.load(0, phys, 256) == b"old!" * 64  # the missing sync's stale read
    s.dma.dma_unmap_single(PCI, handle, 256, DMA_FROM_DEVICE)
    assert s.caches.load(0, phys, 256) == b"new!" * 64


def test_dma_sync_single_for_cpu_gives_fresh_data_without_unmapping(s: Stack) -> None:
    buf = s.kmalloc.kmalloc(256)
    phys = s.phys(buf)
    s.caches.load(1, phys, 256)
    handle = s.dma.dma_map_single(PCI, buf, 256, DMA_FROM_DEVICE)
    s.caches.dma_write(handle, b"A" * 256)
    s.dma.dma_sync_single_for_cpu(PCI, handle, 256, DMA_FROM_DEVICE)
    assert s.caches.load(1, phys, 256) == b"A" * 256
    s.caches.dma_write(handle, b"B" * 256)
    s.dma.dma_sync_single_for_device(PCI, handle, 256, DMA_FROM_DEVICE)
    s.dma.dma_sync_single_for_cpu(PCI, handle + 128, 128, DMA_FROM_DEVICE)
    assert s.caches.load(1, phys + 128, 128) == b"B" * 128
    with pytest.raises(hwsim.DmaMappingError, match="syncs DMA memory outside allocated range"):
        s.dma.dma_sync_single_for_cpu(PCI, handle + 128, 256, DMA_FROM_DEVICE)
    with pytest.raises(hwsim.DmaMappingError, match="syncs DMA memory with different direction"):
        s.dma.dma_sync_single_for_cpu(PCI, handle, 256, DMA_TO_DEVICE)
    assert s.dma.statistics().syncs == 3


def test_a_coherent_platform_needs_no_cache_maintenance() -> None:
    s = make_stack(dma_coherent=True)
    buf = s.kmalloc.kmalloc(256)
    phys = s.phys(buf)
    s.caches.store(0, phys, b"old!" * 64)
    handle = s.dma.dma_map_single(PCI, buf, 256, DMA_BIDIRECTIONAL)
    assert s.caches.dma_read_coherent(handle, 256) == b"old!" * 64  # the bus snoops
    s.caches.dma_write_coherent(handle, b"new!" * 64)
    assert s.caches.load(0, phys, 256) == b"new!" * 64
    s.dma.dma_unmap_single(PCI, handle, 256, DMA_BIDIRECTIONAL)
    stats = s.dma.statistics()
    assert stats.lines_written_back == stats.lines_invalidated == 0


# ---------------------------------------------------------------------- dma-debug


def test_unmap_errors_use_dma_debugs_words_and_change_nothing(s: Stack) -> None:
    buf = s.kmalloc.kmalloc(512)
    handle = s.dma.dma_map_single(ISA, buf, 512, DMA_FROM_DEVICE)  # bounced: slots held
    s.caches.dma_write(handle, b"D" * 512)
    before = state(s)
    cases = [
        (handle, 256, DMA_FROM_DEVICE, "frees DMA memory with different size"),
        (handle, 512, DMA_TO_DEVICE, "frees DMA memory with different direction"),
        (handle + 2048, 512, DMA_FROM_DEVICE, "free DMA memory it has not allocated"),
        (DMA_MAPPING_ERROR, 512, DMA_FROM_DEVICE, "free an invalid DMA memory address"),
    ]
    for dma_addr, size, direction, words in cases:
        with pytest.raises(hwsim.InvalidFree, match=words) as err:
            s.dma.dma_unmap_single(ISA, dma_addr, size, direction)
        assert not isinstance(err.value, hwsim.DoubleFree)
        assert str(err.value).startswith("DMA-API: floppy: device driver")
        assert state(s) == before
    assert s.caches.read(s.phys(buf), 512) != b"D" * 512  # nothing was copied back
    s.dma.dma_unmap_single(ISA, handle, 512, DMA_FROM_DEVICE)
    after = state(s)
    with pytest.raises(
        hwsim.DoubleFree, match="device driver tries to free DMA memory it has not allocated"
    ):
        s.dma.dma_unmap_single(ISA, handle, 512, DMA_FROM_DEVICE)
    assert state(s) == after


def test_unmapping_with_the_wrong_function_is_reported(s: Stack) -> None:
    pfn = s.buddy.alloc_pages(0)
    sgl = ScatterList.from_pages([(pfn, 0, 512)])
    s.dma.dma_map_sg(PCI, sgl, DMA_TO_DEVICE)
    with pytest.raises(hwsim.InvalidFree, match=r"wrong function .*\[mapped as scather-gather\]"):
        s.dma.dma_unmap_single(PCI, sgl[0].dma_address, 512, DMA_TO_DEVICE)
    with pytest.raises(hwsim.InvalidFree, match="different direction"):
        s.dma.dma_unmap_sg(PCI, sgl, DMA_FROM_DEVICE)
    s.dma.dma_unmap_sg(PCI, sgl, DMA_TO_DEVICE)
    with pytest.raises(hwsim.InvalidFree, match="it has not allocated"):
        s.dma.dma_unmap_sg(PCI, sgl, DMA_TO_DEVICE)


def test_dma_mapping_error_recognises_only_dma_mapping_error(s: Stack) -> None:
    assert s.dma.dma_mapping_error(PCI, DMA_MAPPING_ERROR)
    assert not s.dma.dma_mapping_error(PCI, 0x1000)


def test_a_device_rejects_masks_outside_24_to_64_bits() -> None:
    with pytest.raises(ValueError, match=r"24\.\.64"):
        DmaDevice("bad", dma_mask=16)
    assert DmaDevice("d", dma_mask=24).coherent_mask == 24


def test_the_swiotlb_pool_and_cma_area_are_taken_from_the_buddy_allocator() -> None:
    plain = make_stack(swiotlb_size=0)
    s = make_stack(cma=4 * MIB, swiotlb_size=2 * MIB)
    taken = plain.buddy.nr_free_pages() - s.buddy.nr_free_pages()
    assert taken == (4 * MIB + 2 * MIB) // PAGE
    assert any(line.startswith("cma: Reserved 4 MiB at 0x") for line in s.dma.log)
