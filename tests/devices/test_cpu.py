"""The CPU unit: loads and stores at virtual addresses through the MMU and the caches."""

from __future__ import annotations

import numpy as np
import pytest
import trio

import hwsim
from hwsim.devices.mmu import NOT_PRESENT, WRITE_TO_READ_ONLY
from hwsim.kernel.fault import GUARD_PAGE
from hwsim.kernel.pagetable import PAGE_KERNEL


@pytest.mark.machine(cpus=1)
async def test_a_load_returns_what_a_store_wrote_and_time_advances_by_the_latency(
    machine: hwsim.Machine,
) -> None:
    cpu = machine.cpus[0]
    buf = await machine.kernel.kmalloc(64)
    start = machine.now
    await cpu.store(buf, b"hello")
    after_store = machine.now
    assert await cpu.load(buf, 5) == b"hello"
    lat = machine.config.latency
    assert machine.now - after_store == lat.tlb + lat.l1  # a TLB hit and an L1 hit
    assert cpu.statistics().cycles == machine.now - start


@pytest.mark.machine(cpus=1)
async def test_a_first_touch_walks_the_page_tables_through_the_l1(
    machine: hwsim.Machine,
) -> None:
    buf = await machine.kernel.kmalloc(64)
    before = machine.stats()
    await machine.cpus[0].load(buf, 8)
    after = machine.stats()
    assert after["tlb0"]["walks"] - before["tlb0"]["walks"] == 1
    # PGD, PUD and PMD entries (a 2 MiB direct-map page), then the data line.
    assert after["l1d0"]["loads"] - before["l1d0"]["loads"] == 4
    assert after["tlb0"]["walk_cycles"] > 0


@pytest.mark.machine(cpus=1, tlb=hwsim.TlbConfig(walk_through_caches=False))
async def test_a_walker_that_bypasses_the_caches_reads_ram(machine: hwsim.Machine) -> None:
    buf = await machine.kernel.kmalloc(64)
    before = machine.stats()
    await machine.cpus[0].load(buf, 8)
    after = machine.stats()
    assert after["l1d0"]["loads"] - before["l1d0"]["loads"] == 1
    # Three entries read from RAM by the walker, then the data line's fill.
    assert after["ram"]["reads"] - before["ram"]["reads"] == 3 + 1
    assert after["tlb0"]["walks"] - before["tlb0"]["walks"] == 1


@pytest.mark.machine(cpus=1)
async def test_an_unmapped_address_raises_a_segmentation_fault_and_the_machine_keeps_running(
    machine: hwsim.Machine,
) -> None:
    cpu = machine.cpus[0]
    with pytest.raises(hwsim.SegmentationFault) as info:
        await cpu.load(0x1000, 4)  # a physical-looking address: nothing maps it
    assert info.value.address == 0x1000
    assert info.value.reason == NOT_PRESENT  # type: ignore[attr-defined]
    assert "not-present page" in str(info.value)
    assert cpu.statistics().loads == 0
    assert cpu.statistics().faults == 1
    assert machine.stats()["fault"]["not_present"] == 1
    buf = await machine.kernel.kmalloc(8)
    await cpu.store(buf, b"ok")
    assert await cpu.load(buf, 2) == b"ok"


@pytest.mark.machine(cpus=1)
async def test_an_access_past_a_vmalloc_buffer_hits_its_guard_page(
    machine: hwsim.Machine,
) -> None:
    cpu = machine.cpus[0]
    buf = await machine.kernel.vmalloc(8192)
    await cpu.store(buf + 8191, b"x")
    with pytest.raises(hwsim.SegmentationFault, match="guard page after the vmalloc area") as info:
        await cpu.store(buf + 8192, b"y")
    assert info.value.reason == GUARD_PAGE  # type: ignore[attr-defined]
    assert info.value.address == buf + 8192
    assert machine.stats()["fault"]["guard_page"] == 1


@pytest.mark.machine(cpus=1)
async def test_a_store_that_crosses_into_the_guard_page_changes_nothing(
    machine: hwsim.Machine,
) -> None:
    cpu = machine.cpus[0]
    buf = await machine.kernel.vmalloc(4096)
    await cpu.store(buf + 4088, b"AAAAAAAA")
    with pytest.raises(hwsim.SegmentationFault, match="guard page"):
        await cpu.store(buf + 4092, b"BBBBBBBB")  # 4 bytes in the page, 4 in the guard
    assert await cpu.load(buf + 4088, 8) == b"AAAAAAAA"
    assert cpu.statistics().stores == 1


@pytest.mark.machine(cpus=1)
async def test_a_write_to_a_read_only_page_faults_and_a_read_does_not(
    machine: hwsim.Machine,
) -> None:
    cpu = machine.cpus[0]
    pfn = await machine.kernel.alloc_pages(0)
    va = machine.layout.vmalloc_end - (64 << 20)  # far from any vmalloc area
    machine.pagetable.map_page(va, pfn, PAGE_KERNEL & ~0x2)  # PAGE_KERNEL_RO
    cpu.poke(machine.layout.phys_to_virt(pfn << 12), b"read me")  # through the direct map
    assert await cpu.load(va, 7) == b"read me"
    with pytest.raises(hwsim.SegmentationFault, match="permissions violation") as info:
        await cpu.store(va, b"no")
    assert info.value.reason == WRITE_TO_READ_ONLY  # type: ignore[attr-defined]
    assert machine.stats()["fault"]["permission"] == 1


@pytest.mark.machine(cpus=1)
async def test_an_access_across_a_page_boundary_lands_in_both_physical_pages(
    machine: hwsim.Machine,
) -> None:
    cpu = machine.cpus[0]
    buf = await machine.kernel.vmalloc(8192)
    await cpu.store(buf + 4092, b"ABCDEFGH")
    assert await cpu.load(buf + 4092, 8) == b"ABCDEFGH"
    first = await machine.kernel.vmalloc_to_pfn(buf)
    second = await machine.kernel.vmalloc_to_pfn(buf + 4096)
    assert machine.hierarchy.read((first << 12) + 4092, 4) == b"ABCD"
    assert machine.hierarchy.read(second << 12, 4) == b"EFGH"
    assert cpu.statistics().loads == 1


@pytest.mark.machine(cpus=1)
async def test_an_access_across_cache_lines_counts_each_line(machine: hwsim.Machine) -> None:
    cpu = machine.cpus[0]
    buf = await machine.kernel.kmalloc(256)
    await cpu.load(buf, 8)  # warm the TLB
    before = machine.stats()["l1d0"]
    await cpu.load(buf + 60, 8)  # two lines
    after = machine.stats()["l1d0"]
    lines = (after["load_hits"] + after["load_misses"]) - (
        before["load_hits"] + before["load_misses"]
    )
    assert lines == 2


@pytest.mark.parametrize(
    ("args", "error"),
    [((0, 0), ValueError), ((0, -4), ValueError), ((0.5, 4), TypeError), ((0, "4"), TypeError)],
)
@pytest.mark.machine(cpus=1)
async def test_bad_load_arguments_raise_clear_errors(
    machine: hwsim.Machine, args: tuple[object, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await machine.cpus[0].load(*args)  # type: ignore[arg-type]


@pytest.mark.machine(cpus=1)
async def test_negative_and_wrapping_addresses_are_refused(machine: hwsim.Machine) -> None:
    cpu = machine.cpus[0]
    with pytest.raises(ValueError, match="negative"):
        await cpu.load(-8, 8)
    with pytest.raises(ValueError, match="past the end of the address space"):
        await cpu.load((1 << 64) - 4, 8)
    assert cpu.statistics() == hwsim.devices.cpu.CpuStatistics(0, 0, 0, 0, 0, 0, 0)


@pytest.mark.machine(cpus=1)
async def test_storing_nothing_or_not_bytes_is_refused(machine: hwsim.Machine) -> None:
    with pytest.raises(ValueError, match="zero bytes"):
        await machine.cpus[0].store(0, b"")
    with pytest.raises(TypeError, match="bytes-like"):
        await machine.cpus[0].store(0, "text")  # type: ignore[arg-type]


async def _mixed_workload(m: hwsim.Machine, timing: bool) -> list[object]:
    """Loads, stores and batches over a kmalloc and a vmalloc buffer."""
    cpu = m.cpus[0]
    k = await m.kernel.kmalloc(64 << 10)
    v = await m.kernel.vmalloc(64 << 10)
    rng = np.random.default_rng(5)
    out: list[object] = []
    for i in range(120):
        base = k if i % 2 else v
        addr = base + int(rng.integers(0, (64 << 10) // 8)) * 8
        write = bool(rng.random() < 0.4)
        if i % 30 == 29:
            offsets = rng.integers(0, (64 << 10) // 64, 500) * 64
            writes = rng.random(500) < 0.3
            r = (
                await cpu.access(offsets, 8, writes, base=base)
                if timing
                else cpu.access_nowait(offsets, 8, writes, base=base)
            )
            out.append(r.latencies.tolist())
        elif write:
            data = addr.to_bytes(8, "little")
            if timing:
                await cpu.store(addr, data)
            else:
                cpu.store_nowait(addr, data)
        else:
            out.append(await cpu.load(addr, 8) if timing else cpu.load_nowait(addr, 8))
    return out


def _counts(m: hwsim.Machine) -> dict[str, dict[str, int]]:
    return {k: v for k, v in m.stats().items() if k in ("cpu0", "tlb0", "mmu0", "l1d0", "l2")}


def test_atomic_mode_gives_the_same_data_counts_and_cycles_as_timing_mode() -> None:
    config = hwsim.MachineConfig(cpus=1)

    async def run(timing: bool) -> tuple[list[object], dict[str, dict[str, int]], int, int]:
        async with hwsim.boot(config) as m:
            data = await _mixed_workload(m, timing)
            return data, _counts(m), m.cpus[0].statistics().cycles, m.now

    t_data, t_counts, t_cycles, t_now = hwsim.run(run, True)
    a_data, a_counts, a_cycles, a_now = hwsim.run(run, False)
    assert a_data == t_data
    assert a_counts == t_counts
    assert a_cycles == t_cycles
    assert t_now > 0
    assert a_now < t_now  # atomic mode leaves global virtual time behind


@pytest.mark.machine(cpus=1)
async def test_a_batched_trace_costs_what_the_same_accesses_cost_one_by_one(
    machine: hwsim.Machine,
) -> None:
    cpu = machine.cpus[0]
    k = await machine.kernel.kmalloc(32 << 10)
    v = await machine.kernel.vmalloc(32 << 10)
    offsets = np.arange(0, 32 << 10, 256)
    results = []
    for base in (k, v):
        before = _counts(machine)
        start = machine.now
        for off in offsets:
            await cpu.load(base + int(off), 8)
        one_by_one = (machine.now - start, _delta(before, _counts(machine)))
        before = _counts(machine)
        # The same trace again, from the same state: flush so that both runs start cold.
        machine.wbinvd()
        machine.flush_tlb_all()
        results.append(one_by_one)
        result = await cpu.access(offsets, 8, base=base)
        batched = (result.cycles, _delta(before, _counts(machine)))
        assert batched[0] == one_by_one[0]
        for unit in ("l1d0", "l2"):
            assert batched[1][unit] == one_by_one[1][unit], unit
        for key in ("hits", "misses", "walks", "walk_cycles", "evictions"):
            assert batched[1]["tlb0"][key] == one_by_one[1]["tlb0"][key], key
        assert result.tlb_misses == one_by_one[1]["tlb0"]["walks"]
        assert machine.now == result.done
        machine.wbinvd()
        machine.flush_tlb_all()
    assert results[1][1]["tlb0"]["walks"] > results[0][1]["tlb0"]["walks"]


def _delta(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict:  # type: ignore[type-arg]
    return {u: {k: after[u][k] - before[u][k] for k in after[u]} for u in after}


@pytest.mark.machine(cpus=1)
async def test_a_batch_that_faults_names_the_access_and_keeps_what_came_before(
    machine: hwsim.Machine,
) -> None:
    cpu = machine.cpus[0]
    buf = await machine.kernel.vmalloc(4096)
    with pytest.raises(hwsim.SegmentationFault, match="guard page") as info:
        await cpu.access(np.arange(0, 8192, 512), 8, True, base=buf)
    assert info.value.index == 8  # type: ignore[attr-defined]
    assert cpu.statistics().stores == 8
    assert cpu.statistics().faults == 1


@pytest.mark.machine(cpus=2)
async def test_two_cpus_streaming_at_once_queue_for_the_memory_channel(
    machine: hwsim.Machine,
) -> None:
    bufs = [await machine.kernel.kmalloc(1 << 20) for _ in range(3)]
    offsets = np.arange(0, 1 << 20, 64)
    alone = (await machine.cpus[0].access(offsets, 64, base=bufs[0])).cycles
    results: list[int] = []

    async def stream(i: int) -> None:
        results.append((await machine.cpus[i].access(offsets, 64, base=bufs[1 + i])).cycles)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream, 0)
        nursery.start_soon(stream, 1)
    assert max(results) > alone
    assert machine.stats()["ram"]["queued_cycles"] > 0


@pytest.mark.machine(cpus=2)
async def test_a_store_on_one_cpu_is_seen_by_the_other(machine: hwsim.Machine) -> None:
    buf = await machine.kernel.kmalloc(64)
    await machine.cpus[0].store(buf, b"ping")
    assert await machine.cpus[1].load(buf, 4) == b"ping"
    assert machine.stats()["coherence"]["cache_to_cache"] == 1


@pytest.mark.machine(cpus=2)
async def test_vfree_shoots_down_every_cpus_tlb_entry(machine: hwsim.Machine) -> None:
    buf = await machine.kernel.vmalloc(4096)
    for cpu in machine.cpus:
        await cpu.load(buf, 8)  # both TLBs now translate the page
    await machine.kernel.vfree(buf)
    for cpu in machine.cpus:
        with pytest.raises(hwsim.SegmentationFault, match="not-present page"):
            await cpu.load(buf, 8)
    assert all(machine.stats()[f"tlb{i}"]["invlpgs"] >= 1 for i in range(2))


@pytest.mark.machine(cpus=1)
async def test_peek_and_poke_touch_neither_statistics_nor_time(machine: hwsim.Machine) -> None:
    cpu = machine.cpus[0]
    buf = await machine.kernel.vmalloc(8192)
    await cpu.store(buf + 100, b"cached")  # dirty in the L1
    before, now = machine.stats(), machine.now
    assert cpu.peek(buf + 100, 6) == b"cached"
    cpu.poke(buf + 4094, b"span")  # across two pages
    assert cpu.peek(buf + 4094, 4) == b"span"
    after = machine.stats()
    # RAM's host storage grew by a page (pages_touched): host bookkeeping, not simulation.
    del before["ram"]["pages_touched"], after["ram"]["pages_touched"]
    assert after == before
    assert machine.now == now
    assert await cpu.load(buf + 4094, 4) == b"span"
    with pytest.raises(hwsim.SegmentationFault, match="guard page"):
        cpu.peek(buf + 8192, 1)


@pytest.mark.machine(cpus=1)
async def test_batched_arguments_are_validated(machine: hwsim.Machine) -> None:
    cpu = machine.cpus[0]
    with pytest.raises(TypeError, match="1-D array of integer"):
        await cpu.access(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="1-D array of integer"):
        await cpu.access([0.5, 1.5])
    with pytest.raises(ValueError, match="positive"):
        await cpu.access([0, 64], sizes=[8, 0])
    with pytest.raises(ValueError, match="negative"):
        await cpu.access([-64, 0])
    with pytest.raises(TypeError, match="bools"):
        await cpu.access([0, 64], writes=[1, 0])
    with pytest.raises(hwsim.SegmentationFault):
        await cpu.access([0, 64])  # nothing maps low virtual addresses
    assert cpu.statistics().loads == 0
    assert (await cpu.access([])).accesses == 0


@pytest.mark.machine(cpus=1, quantum=10_000)
async def test_with_a_quantum_a_cpu_runs_ahead_of_virtual_time_and_syncs_when_it_is_used_up(
    machine: hwsim.Machine,
) -> None:
    cpu = machine.cpus[0]
    buf = await machine.kernel.kmalloc(64 << 10)
    start = machine.now
    assert cpu.cycle > start  # kmalloc's own cycles, run ahead too
    start_cycles = cpu.statistics().cycles
    await cpu.load(buf, 8)  # the walk and the first miss
    for i in range(1, 50):  # more loads, all inside one quantum
        await cpu.load(buf + i * 64, 8)
    assert machine.now == start
    assert cpu.statistics().cycles > start_cycles
    for i in range(50, 400):  # crossing the quantum makes virtual time catch up
        await cpu.load(buf + i * 64, 8)
    assert start < machine.now <= cpu.cycle


@pytest.mark.machine(cpus=1)
async def test_coherent_dma_memory_bypasses_the_caches_one_by_one_and_in_batches(
    machine: hwsim.Machine,
) -> None:
    cpu = machine.cpus[0]
    cpu_addr, dma_addr = await machine.kernel.dma_alloc_coherent(machine.dma, 8192)
    await cpu.load(cpu_addr, 8)  # the TLB now holds the direct-map page
    lat = machine.config.latency
    uncached = lat.tlb + lat.ram + 64 // lat.ram_bytes_per_cycle  # a line from RAM, no L1/L2
    batch = await cpu.access(np.arange(64, 8192, 64), 8, base=cpu_addr)
    assert batch.latencies.tolist() == [uncached] * 127
    start = machine.now
    await cpu.store(cpu_addr + 64, b"one")  # a single store goes to RAM too
    assert machine.now - start == lat.tlb + lat.ram + 1  # 3 bytes: one transfer cycle
    assert machine.ram.model.read(dma_addr + 64, 3) == b"one"  # not dirty in a cache
    assert not any(
        level.contains(dma_addr + off)
        for level in (*machine.hierarchy.l1s, machine.hierarchy.l2)
        if level is not None
        for off in range(0, 8192, 64)
    )


@pytest.mark.machine(cpus=1)
async def test_a_page_table_entry_pointing_past_ram_faults_at_the_access_that_uses_it(
    machine: hwsim.Machine,
) -> None:
    cpu = machine.cpus[0]
    buf = await machine.kernel.vmalloc(8192)
    leaf = machine.mmus[0].model.walk(buf + 4096).steps[-1]
    # Something scribbles over the second page's PTE (a naive driver's DMA, say).
    machine.hierarchy.write(leaf.address, (machine.config.ram * 4 | 0x63).to_bytes(8, "little"))
    machine.flush_tlb_all()
    with pytest.raises(hwsim.SegmentationFault, match="beyond the end of RAM") as info:
        await cpu.access(np.arange(0, 8192, 512), 8, base=buf)
    assert info.value.index == 8  # type: ignore[attr-defined]
    assert cpu.statistics().loads == 8  # the accesses before it took effect
    assert await cpu.load(buf, 8) == bytes(8)  # the first page still works
    with pytest.raises(hwsim.SegmentationFault, match="beyond the end of RAM"):
        await cpu.load(buf + 4096, 8)  # one by one: the cache refuses the address


@pytest.mark.machine(cpus=1)
async def test_a_table_pointer_past_ram_ends_the_walk_with_a_fault(
    machine: hwsim.Machine,
) -> None:
    buf = await machine.kernel.vmalloc(4096)
    pmd = machine.mmus[0].model.walk(buf).steps[-2]  # the PMD entry: points to the PTE table
    machine.hierarchy.write(pmd.address, (machine.config.ram * 4 | 0x63).to_bytes(8, "little"))
    machine.flush_tlb_all()
    with pytest.raises(hwsim.SegmentationFault, match="corrupted page table") as info:
        await machine.cpus[0].load(buf, 8)
    assert info.value.error_code & 0x8  # type: ignore[attr-defined]  # X86_PF_RSVD
    assert machine.stats()["fault"]["corrupted"] == 1


@pytest.mark.machine(cpus=1)
async def test_a_batch_stops_at_a_pte_past_ram_even_when_later_accesses_walk(
    machine: hwsim.Machine,
) -> None:
    cpu = machine.cpus[0]
    buf = await machine.kernel.vmalloc(4 * 4096)
    leaf = machine.mmus[0].model.walk(buf + 4096).steps[-1]
    machine.hierarchy.write(leaf.address, (machine.config.ram * 4 | 0x63).to_bytes(8, "little"))
    machine.flush_tlb_all()
    with pytest.raises(hwsim.SegmentationFault, match="beyond the end of RAM") as info:
        await cpu.access(np.arange(0, 4 * 4096, 1024), 8, base=buf)  # pages 2 and 3 walk too
    assert info.value.index == 4  # type: ignore[attr-defined]
    assert cpu.statistics().loads == 4


def test_with_the_walker_bypassing_the_caches_a_batch_still_costs_what_it_costs_one_by_one() -> (
    None
):
    config = hwsim.MachineConfig(cpus=1, tlb=hwsim.TlbConfig(walk_through_caches=False))

    async def run(batched: bool) -> tuple[list[int], dict[str, dict[str, int]]]:
        async with hwsim.boot(config) as m:
            buf = await m.kernel.vmalloc(16 << 10)
            offsets = np.arange(0, 16 << 10, 512)
            m.flush_tlb_all()
            m.wbinvd()
            if batched:
                lat = (await m.cpus[0].access(offsets, 8, base=buf)).latencies.tolist()
            else:
                lat = []
                for off in offsets.tolist():
                    start = m.now
                    await m.cpus[0].load(buf + off, 8)
                    lat.append(m.now - start)
            stats = m.stats()
            return lat, {k: stats[k] for k in ("tlb0", "l1d0", "l2")}

    one, batch = hwsim.run(run, False), hwsim.run(run, True)
    assert batch[0] == one[0]
    assert batch[1]["l1d0"] == one[1]["l1d0"]  # the walks never touched the L1
    assert batch[1]["tlb0"]["walk_cycles"] == one[1]["tlb0"]["walk_cycles"] > 0


@pytest.mark.machine(cpus=1)
async def test_poke_and_store_name_the_same_read_only_level(machine: hwsim.Machine) -> None:
    buf = await machine.kernel.vmalloc(4096)
    pmd = machine.mmus[0].model.walk(buf).steps[-2]
    machine.hierarchy.write(pmd.address, (pmd.entry & ~0x2).to_bytes(8, "little"))  # no RW
    machine.flush_tlb_all()
    with pytest.raises(hwsim.SegmentationFault) as functional:
        machine.cpus[0].poke(buf, b"x")
    with pytest.raises(hwsim.SegmentationFault) as timed:
        await machine.cpus[0].store(buf, b"x")
    for info in (functional, timed):
        assert info.value.level == "PMD"  # type: ignore[attr-defined]
        assert info.value.error_code == 0x3  # type: ignore[attr-defined]  # PROT | WRITE
    assert machine.cpus[0].peek(buf, 1) == bytes(1)


@pytest.mark.machine(cpus=1)
async def test_a_tlb_range_flush_past_the_address_space_changes_nothing(
    machine: hwsim.Machine,
) -> None:
    tlb = machine.mmus[0].model.tlb
    before = tlb.statistics()
    with pytest.raises(ValueError, match="beyond the address space"):
        machine.mmus[0].model.flush_tlb_kernel_range((1 << 64) - 4096, (1 << 64) + 4096)
    assert tlb.statistics() == before
