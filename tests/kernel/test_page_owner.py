"""Who owns a page: what the DMA controller's naive-driver detector asks."""

from __future__ import annotations

import pytest

import hwsim


@pytest.mark.machine(cpus=1)
async def test_each_allocator_names_its_pages_and_free_pages_have_no_owner(
    machine: hwsim.Machine,
) -> None:
    k, owner = machine.kernel, machine.page_owner.owner_of
    v = await k.vmalloc(8192)
    big = await k.kmalloc(64 << 10)
    small = await k.kmalloc(64)
    pfn = await k.alloc_pages(1)
    vpfns = [await k.vmalloc_to_pfn(v), await k.vmalloc_to_pfn(v + 4096)]
    assert {owner(p) for p in vpfns} == {f"vmalloc {v:#x}-{v + 8192:#x}"}
    big_pfn = k.virt_to_phys(big) >> 12
    assert owner(big_pfn) == owner(big_pfn + 15) == f"kmalloc {big:#x} (order 4)"
    assert owner(k.virt_to_phys(small) >> 12) == "slab kmalloc-64"
    assert owner(pfn) == owner(pfn + 1) == f"alloc_pages pfn {pfn:#x} (order 1)"
    assert owner(machine.pagetable.cr3 >> 12) == "page table"
    assert owner(0).startswith("reserved")
    await k.free_pages(pfn, 1)
    assert owner(pfn) is None
    await k.vfree(v)
    assert owner(vpfns[0]) is None  # the page went back (to a per-CPU list)
    with pytest.raises(ValueError, match="not a page"):
        owner(machine.config.ram >> 12)


@pytest.mark.machine(cpus=1)
async def test_a_naive_driver_dma_into_a_vmalloc_buffer_is_reported_like_kasan(
    machine: hwsim.Machine,
) -> None:
    k = machine.kernel
    for _ in range(64):  # something to live right after the vmalloc pages
        await k.kmalloc(4096)
    v = await k.vmalloc(64 << 10)
    first = await k.vmalloc_to_pfn(v)
    victims = [
        p
        for p in range(first, first + 16)
        if machine.page_owner.owner_of(p) != (machine.page_owner.owner_of(first))
    ]
    src = await k.kmalloc(64 << 10)
    t = await machine.dma.memcpy(
        first << 12,
        k.virt_to_phys(src),
        64 << 10,
        expected_owner=machine.page_owner.owner_of(first),
    )
    await t.wait()
    assert victims, "the set-up must put foreign pages after the buffer's first page"
    assert t.status == "corruption"
    report = machine.dma.reports[-1]
    assert list(report.pfns) == victims
    assert "BUG: KASAN: wild-memory-access" in str(report)
    assert machine.stats()["dma"]["corruptions"] == 1
