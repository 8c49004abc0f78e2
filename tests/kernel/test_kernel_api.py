"""machine.kernel: the kernel's memory API through the service actors."""

from __future__ import annotations

import itertools

import pytest
import trio

import hwsim
from hwsim.kernel import gfp as G


@pytest.mark.machine(cpus=1)
async def test_alloc_pages_through_the_buddy_service_costs_cycles_and_aligns(
    machine: hwsim.Machine,
) -> None:
    start = machine.now
    booted = machine.stats()["buddy"]  # boot allocated the kernel page tables
    pfn = await machine.kernel.alloc_pages(4)
    assert pfn % 16 == 0
    assert machine.now > start
    await machine.kernel.free_pages(pfn, 4)
    assert machine.stats()["buddy"]["allocs"] == booted["allocs"] + 1
    assert machine.stats()["buddy"]["frees"] == booted["frees"] + 1


@pytest.mark.machine(cpus=1)
async def test_a_bad_free_raises_at_the_caller_and_changes_nothing(machine: hwsim.Machine) -> None:
    pfn = await machine.kernel.alloc_pages(2)
    before = dict(machine.buddy.model.free_block), dict(machine.buddy.model.allocated)
    with pytest.raises(hwsim.InvalidFree, match="allocated with order 2") as info:
        await machine.kernel.free_pages(pfn, 1)
    assert info.value.actor == "buddy"
    with pytest.raises(hwsim.InvalidFree, match="inside the order-2 block"):
        await machine.kernel.free_pages(pfn + 1, 0)
    assert (dict(machine.buddy.model.free_block), dict(machine.buddy.model.allocated)) == before
    await machine.kernel.free_pages(pfn, 2)
    with pytest.raises(hwsim.DoubleFree, match="already free"):
        await machine.kernel.free_pages(pfn, 2)


@pytest.mark.machine(cpus=1)
async def test_bad_arguments_fail_in_the_callers_task_before_any_message(
    machine: hwsim.Machine,
) -> None:
    booted = machine.stats()["buddy"]["allocs"]
    with pytest.raises(ValueError, match="MAX_PAGE_ORDER"):
        await machine.kernel.alloc_pages(11)
    with pytest.raises(ValueError, match="two zones"):
        await machine.kernel.alloc_pages(0, gfp=G.GFP_DMA | G.GFP_DMA32)
    with pytest.raises(TypeError):
        await machine.kernel.alloc_pages("3")  # type: ignore[arg-type]
    assert machine.stats()["buddy"]["allocs"] == booted


@pytest.mark.machine(ram="32MiB", cpus=1)
async def test_exhausting_zone_dma_fails_with_the_kernels_message(machine: hwsim.Machine) -> None:
    got = []
    with pytest.raises(
        hwsim.OutOfMemory, match=r"page allocation failure: order:4, mode:0x1\(GFP_DMA\)"
    ):
        while True:
            got.append(await machine.kernel.alloc_pages(4, gfp=hwsim.GFP_DMA))
    assert all(pfn < (16 << 20) >> 12 for pfn in got)
    assert any("page allocation failure: order:4" in line for line in machine.kernel.dmesg())


@pytest.mark.machine(cpus=4)
async def test_cpus_allocating_at_once_are_all_served_and_contention_is_counted(
    machine: hwsim.Machine,
) -> None:
    owned: list[tuple[int, int]] = []

    async def worker(cpu: int) -> None:
        kernel = machine.kernel.on_cpu(cpu)
        for i in range(30):
            order = (i + cpu) % 4 + 1  # orders >= 1 take the zone lock
            owned.append((await kernel.alloc_pages(order), order))

    async with trio.open_nursery() as nursery:
        for cpu in range(4):
            nursery.start_soon(worker, cpu)
    spans = sorted((pfn, pfn + (1 << order)) for pfn, order in owned)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    stats = machine.stats()["buddy"]
    assert stats["allocs"] == 120 + machine.pagetable.nr_pagetable_pages
    assert stats["lock_contended"] > 0 and stats["lock_wait_cycles"] > 0


@pytest.mark.machine(cpus=1)
async def test_bulk_allocation_is_one_request(
    machine: hwsim.Machine, hwsim_tracer: hwsim.Tracer
) -> None:
    pfns = await machine.kernel.alloc_pages_bulk(50)
    assert len(pfns) == len(set(pfns)) == 50
    assert [r.kind for r in hwsim_tracer.records] == ["AllocPagesBulk"]


@pytest.mark.machine(cpus=2)
async def test_address_helpers_are_linux_arithmetic(machine: hwsim.Machine) -> None:
    k = machine.kernel
    assert k.page_address(5) == 0xFFFF888000000000 + 5 * 4096
    assert k.virt_to_phys(k.phys_to_virt(0x123456)) == 0x123456
    assert k.is_vmalloc_addr(0xFFFFC90000001000)
    assert not k.is_vmalloc_addr(k.page_address(5))
    with pytest.raises(ValueError, match="vmalloc_to_pfn"):
        k.virt_to_phys(0xFFFFC90000001000)
    with pytest.raises(ValueError, match="cpu must be"):
        k.on_cpu(2)


@pytest.mark.machine(cpus=4)
async def test_cpus_kmallocing_at_once_get_disjoint_objects_from_their_own_slabs(
    machine: hwsim.Machine,
) -> None:
    got: dict[int, list[int]] = {}

    async def worker(cpu: int) -> None:
        kernel = machine.kernel.on_cpu(cpu)
        got[cpu] = [await kernel.kmalloc(192) for _ in range(40)]

    async with trio.open_nursery() as nursery:
        for cpu in range(4):
            nursery.start_soon(worker, cpu)
    everything = sorted(a for addrs in got.values() for a in addrs)
    assert len(set(everything)) == 160
    assert all(b - a >= 192 for a, b in itertools.pairwise(everything))
    # Each CPU allocates from its own per-CPU slab: the first objects of two CPUs never
    # share a slab page.
    first_pages = {got[cpu][0] >> 12 for cpu in range(4)}
    assert len(first_pages) == 4
    for cpu, addrs in got.items():
        for addr in addrs:
            await machine.kernel.on_cpu(cpu).kfree(addr)
    assert machine.slab.model.find_cache("kmalloc-192").nr_allocated == 0


@pytest.mark.machine(cpus=1)
async def test_kvmalloc_falls_back_to_vmalloc_and_kvfree_frees_either(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    small = await k.kvmalloc(1000)
    assert not k.is_vmalloc_addr(small)
    # Take every page, then give back every other one: plenty free, nothing contiguous.
    hog: list[int] = []
    while True:
        try:
            hog.extend(await k.alloc_pages_bulk(256, gfp=hwsim.GFP_KERNEL | hwsim.GFP_NOWARN))
        except hwsim.OutOfMemory:
            break
    hog.sort()
    for pfn in hog[::2]:
        await k.free_pages(pfn)
    hog = hog[1::2]
    pairs: list[int] = []  # and every block of order >= 1 left below the watermarks
    while True:
        try:
            pairs.append(await k.alloc_pages(1, gfp=hwsim.GFP_KERNEL | hwsim.GFP_NOWARN))
        except hwsim.OutOfMemory:
            break
    big = await k.kvmalloc(64 * 1024)
    assert k.is_vmalloc_addr(big)
    with pytest.raises(hwsim.InvalidFree, match="vfree"):
        await k.kfree(big)
    await k.kvfree(big)
    await k.kvfree(small)
    for pfn in hog:
        await k.free_pages(pfn)
    for pfn in pairs:
        await k.free_pages(pfn, 1)
    assert machine.vmalloc.model.vmalloc_used_pages == 0


@pytest.mark.machine(cpus=1)
async def test_a_failed_allocation_charges_the_work_it_did_to_the_calling_cpu(
    machine: hwsim.Machine,
) -> None:
    from hwsim.kernel.buddy import ALLOC_FAILURE_CYCLES
    from hwsim.kernel.dma_mapping import DMA_API_CYCLES

    k = machine.kernel
    while True:  # take every block of order 8 and above
        try:
            await k.alloc_pages(8, hwsim.GFP_KERNEL | hwsim.GFP_NOWARN)
        except hwsim.OutOfMemory:
            break
    start = machine.now
    with pytest.raises(hwsim.OutOfMemory, match="order:8") as info:
        await k.kmalloc(1 << 20)
    assert info.value.done is not None
    assert machine.now - start >= ALLOC_FAILURE_CYCLES
    assert machine.cpus[0].cycle == machine.now == info.value.done
    buf = await k.vmalloc(4096)
    start = machine.now
    with pytest.raises(hwsim.DmaMappingError):
        await k.dma_map_single(machine.dma, buf, 4096, hwsim.DMA_TO_DEVICE)
    assert machine.now - start == DMA_API_CYCLES  # the checks before the refusal


@pytest.mark.machine(cpus=1)
async def test_a_wrong_gfp_type_is_refused_on_the_fast_paths_too(machine: hwsim.Machine) -> None:
    k = machine.kernel
    await k.kfree(await k.kmalloc(10))  # a freed object waits on the CPU's freelist
    for bad in (float(hwsim.GFP_KERNEL), [1]):
        with pytest.raises(TypeError, match="gfp flags are an int"):
            await k.kmalloc(10, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes a pfn"):
        await k.free_pages([1])  # type: ignore[arg-type]


def test_a_scatterlist_entry_checks_what_it_is_given() -> None:
    from hwsim.kernel.scatterlist import SgEntry

    with pytest.raises(TypeError, match="pfn is an int"):
        SgEntry(pfn="x")  # type: ignore[arg-type]
    entry = SgEntry(pfn=5, offset=0, length=64)
    with pytest.raises(ValueError, match="offset must be >= 0"):
        entry.offset = -5000  # would reach the page before
    assert (entry.pfn, entry.offset, entry.length) == (5, 0, 64)
