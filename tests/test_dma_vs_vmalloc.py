"""The dma_vs_vmalloc scenario: a 1 MiB DMA buffer on an aged machine, six ways and the naive
driver that hands the device a vmalloc buffer's first physical page with the whole length; on
the default board, and on variants of it that add the hardware a way needs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest

import hwsim
from hwsim.devices.dma import DESCRIPTOR_BYTES, DEV_TO_MEM, DmaDescriptor, FifoPeripheral
from hwsim.devices.iommu import IOMMU_WALK_CYCLES
from hwsim.scenario import list_scenarios, load_scenario, run_scenario

PAGE = hwsim.PAGE_SIZE
BUFFER = 1 << 20
PAGES = BUFFER // PAGE


def scenario_module() -> ModuleType:
    """The scenario file as a module, for its helpers (``age``, the way names)."""
    path = list_scenarios()["dma_vs_vmalloc"].path
    spec = importlib.util.spec_from_file_location("dma_vs_vmalloc_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DVV = scenario_module()


def fields(config: hwsim.MachineConfig) -> dict[str, Any]:
    """A config as ``@pytest.mark.machine`` keywords, with seed 0."""
    return {**attrs.asdict(config, recurse=False), "seed": 0}


# The default board, and the variant with the scatter-gather controller, for the tests that
# boot one themselves.
DEFAULT_BOARD = fields(DVV.CONFIG)
SG_BOARD = fields(DVV.variants(DVV.CONFIG)[DVV.SG_BOARD][0])
# What the engine pays per chained descriptor, from the default latencies: a RAM read.
LATENCY = hwsim.MachineConfig().latency
FETCH = LATENCY.ram + -(-DESCRIPTOR_BYTES // LATENCY.ram_bytes_per_cycle)


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    return run_scenario("dma_vs_vmalloc", seed=0)


def row(result: dict[str, Any], way: str) -> dict[str, Any]:
    (found,) = [r for r in result["rows"] if r["way"] == way]
    return found


def cycles(result: dict[str, Any], way: str) -> dict[str, Any]:
    (found,) = [r for r in result["cycles"] if r["way"] == way]
    return found


def transfer(result: dict[str, Any], way: str) -> dict[str, Any]:
    (found,) = [r for r in result["transfers"] if r["way"] == way]
    return found


def why(result: dict[str, Any], way: str) -> dict[str, Any]:
    (found,) = [r for r in result["why"] if r["way"] == way]
    return found


def pfns_by_page_walk(machine: hwsim.Machine, buf: int) -> list[int]:
    """The frames behind a buffer, from the MMU's own (functional) page walk: not the
    vmalloc_to_pfn the scenario uses."""
    walk = machine.mmus[0].model.walk
    return [walk(buf + i * PAGE).pfn for i in range(PAGES)]


def contiguous_runs(pfns: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for pfn in pfns:
        if runs and pfn == runs[-1][-1] + 1:
            runs[-1].append(pfn)
        else:
            runs.append([pfn])
    return runs


def test_dma_vs_vmalloc_is_listed_with_its_summary() -> None:
    assert list_scenarios()["dma_vs_vmalloc"].summary.startswith("DMA vs vmalloc:")
    done = subprocess.run(
        [sys.executable, "-m", "hwsim.cli", "list"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "dma_vs_vmalloc" in done.stdout


def test_the_scenario_runs_on_the_default_config() -> None:
    # Only the seed may differ from the default embedded board (``--seed`` replaces it).
    assert DVV.CONFIG.evolve(seed=0) == hwsim.MachineConfig()
    assert load_scenario("dma_vs_vmalloc").config == DVV.CONFIG


def test_each_variant_is_the_default_board_plus_what_its_row_needs() -> None:
    base = hwsim.MachineConfig(seed=3)
    boards = DVV.variants(base)
    assert list(boards) == [DVV.SG_BOARD, DVV.CMA_BOARD, DVV.IOMMU_BOARD]
    sg, cma, iommu = (boards[name][0] for name in boards)
    assert sg == base.evolve(dma=hwsim.DmaConfig(scatter_gather=True))
    assert cma == base.evolve(cma="8MiB")
    assert iommu == base.evolve(
        iommu=True, dma=hwsim.DmaConfig(scatter_gather=True, max_segment_size=(1 << 32) - 1)
    )
    assert {c.seed for c in (sg, cma, iommu)} == {3}  # aged with the same seed


def test_the_table_has_the_ways_in_order_each_with_its_machine(result: dict[str, Any]) -> None:
    assert [r["way"] for r in result["rows"]] == list(DVV.WAYS)
    assert DVV.WAYS[-1] == "vmalloc, naive driver"
    assert {r["way"]: r["machine"] for r in result["rows"]} == {
        DVV.KMALLOC: "default",
        DVV.MAP_SINGLE: "default",
        DVV.SG_REJECTED: "default",
        DVV.SCATTER_GATHER: "+ SG controller",
        DVV.CMA: "+ 8 MiB CMA",
        DVV.IOMMU: "+ IOMMU, max seg 4 GiB",
        DVV.NAIVE: "default",
    }
    assert [m["machine"] for m in result["machines"]] == [
        "default",
        "+ SG controller",
        "+ 8 MiB CMA",
        "+ IOMMU, max seg 4 GiB",
    ]
    assert all(m["hardware"] and m["why"] for m in result["machines"])
    assert "without scatter-gather" in result["machines"][0]["hardware"]
    assert [r["way"] for r in result["why"]] == list(DVV.WAYS)
    assert all(r["why"] for r in result["why"])


def test_ageing_leaves_memory_free_but_no_block_of_order_8(result: dict[str, Any]) -> None:
    fresh, aged, sg, cma, iommu = result["buddyinfo"]
    assert fresh["o8"] + fresh["o9"] + fresh["o10"] > 0
    for board in (aged, sg, cma, iommu):
        assert board["o8"] == board["o9"] == board["o10"] == 0
        assert board["free_MiB"] > 16  # plenty free, none of it contiguous enough
    assert result["summary"]["largest_free_order_after_ageing"] < 8

    # The SG and IOMMU boards aged exactly as the default one (the same seed); the CMA board
    # has 8 MiB fewer pages for the page cache, so it ends up with less free.
    def counts(board: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in board.items() if k != "machine"}

    assert counts(sg) == counts(aged) == counts(iommu)
    assert cma["free_MiB"] < aged["free_MiB"]
    assert result["summary"]["same_buddyinfo_after_ageing"] == (
        "+ SG controller; + IOMMU, max seg 4 GiB"
    )


def test_kmalloc_on_the_fresh_machine_is_one_run_one_descriptor_and_reads_right(
    result: dict[str, Any],
) -> None:
    (fresh,) = result["before_ageing"]
    assert (fresh["alloc"], fresh["runs"], fresh["dma"], fresh["descriptors"]) == ("ok", 1, "ok", 1)
    assert fresh["machine"] == "default"
    assert cycles(result, fresh["way"])["tlb_misses"] == 1  # one 2 MiB page of the direct map
    assert fresh["data_ok"] is True


def test_kmalloc_fails_with_a_page_allocation_failure_of_order_8_after_ageing(
    result: dict[str, Any],
) -> None:
    kmalloc = row(result, DVV.KMALLOC)
    assert kmalloc["alloc"] == "failed"
    assert (kmalloc["dma"], kmalloc["descriptors"], kmalloc["data_ok"]) == ("not started", 0, None)
    assert why(result, DVV.KMALLOC)["kernel_says"].startswith("page allocation failure: order:8")


def test_dma_map_single_of_vmalloc_memory_is_rejected_in_linuxs_words(
    result: dict[str, Any],
) -> None:
    single = row(result, DVV.MAP_SINGLE)
    assert (single["alloc"], single["dma"], single["descriptors"]) == ("ok", "rejected", 0)
    assert single["runs"] > 1
    assert "rejecting DMA map of vmalloc memory" in why(result, DVV.MAP_SINGLE)["kernel_says"]
    assert cycles(result, DVV.MAP_SINGLE)["transfer"] == 0  # the device never started


def test_dma_map_sg_on_the_default_controller_returns_0_and_the_row_says_rejected(
    result: dict[str, Any],
) -> None:
    rejected = row(result, DVV.SG_REJECTED)
    assert rejected["machine"] == "default"
    assert (rejected["alloc"], rejected["dma"], rejected["descriptors"]) == ("ok", "rejected", 0)
    assert rejected["data_ok"] is None  # nothing to read: the device never started
    said = why(result, DVV.SG_REJECTED)
    assert said["kernel_says"].startswith("dma_map_sg returns 0: ")
    assert "cannot do scatter-gather" in said["kernel_says"]
    assert said["why"].startswith("Rejected: the controller cannot do scatter-gather.")
    assert cycles(result, DVV.SG_REJECTED)["transfer"] == 0
    # A chain built by hand is refused by the controller itself.
    assert result["summary"]["chain_on_the_default_controller"].startswith(
        "controller has no scatter-gather"
    )


@pytest.mark.machine(**DEFAULT_BOARD)
async def test_the_default_controller_refuses_a_scatterlist_and_a_chain(
    machine: hwsim.Machine,
) -> None:
    await DVV.age(machine)
    buf = await machine.kernel.vmalloc(BUFFER)
    sglist = await machine.kernel.vmalloc_to_sg(buf, BUFFER)
    assert await machine.kernel.dma_map_sg(machine.dma, sglist, hwsim.DMA_FROM_DEVICE) == 0
    runs = contiguous_runs(pfns_by_page_walk(machine, buf))
    assert len(runs) > 1
    peer = FifoPeripheral()
    chain = [DmaDescriptor(run[0] * PAGE, len(run) * PAGE, DEV_TO_MEM, peer=peer) for run in runs]
    with pytest.raises(hwsim.DmaDescriptorError, match="no scatter-gather"):
        await machine.dma.submit(chain)
    assert machine.dma.statistics().transfers == 0  # nothing moved


def test_scatter_gather_takes_a_descriptor_per_run_and_pays_a_fetch_for_each_after_the_first(
    result: dict[str, Any],
) -> None:
    sg = row(result, DVV.SCATTER_GATHER)
    assert sg["machine"] == "+ SG controller"
    assert (sg["alloc"], sg["dma"], sg["data_ok"]) == ("ok", "ok", True)
    # Ageing scattered the pages: no run reaches the 64 KiB max segment, none is cut.
    assert 100 < sg["runs"] == sg["descriptors"] <= PAGES
    assert cycles(result, DVV.SCATTER_GATHER)["tlb_misses"] == PAGES  # 4 KiB PTEs
    # The transfer: what a contiguous buffer costs, plus a descriptor fetch (a RAM read) for
    # every descriptor after the first.
    (fresh,) = result["before_ageing"]
    contiguous = cycles(result, fresh["way"])["transfer"]
    assert contiguous == cycles(result, DVV.CMA)["transfer"]
    assert FETCH == result["summary"]["descriptor_fetch_cycles"] == 102
    assert cycles(result, DVV.SCATTER_GATHER)["transfer"] == (
        contiguous + (sg["descriptors"] - 1) * FETCH
    )
    assert transfer(result, DVV.SCATTER_GATHER)["fetches"] == (sg["descriptors"] - 1) * FETCH
    assert "descriptor from RAM" in why(result, DVV.SCATTER_GATHER)["why"]


def test_the_sg_board_vmalloc_gets_the_pages_the_default_board_refused(
    result: dict[str, Any],
) -> None:
    assert result["summary"]["same_pages_on_the_sg_board"] is True
    assert row(result, DVV.SCATTER_GATHER)["runs"] == row(result, DVV.SG_REJECTED)["runs"]


@pytest.mark.machine(**SG_BOARD)
async def test_dma_map_sg_gives_the_physically_contiguous_runs_counted_independently(
    machine: hwsim.Machine,
) -> None:
    await DVV.age(machine)
    buf = await machine.kernel.vmalloc(BUFFER)
    pfns = pfns_by_page_walk(machine, buf)
    runs = contiguous_runs(pfns)
    max_pages = machine.config.dma.max_segment_size // PAGE
    expected = [run[i : i + max_pages] for run in runs for i in range(0, len(run), max_pages)]
    sglist = await machine.kernel.vmalloc_to_sg(buf, BUFFER)
    nents = await machine.kernel.dma_map_sg(machine.dma, sglist, hwsim.DMA_FROM_DEVICE)
    assert nents == len(expected) > 100
    segments = [(sg.dma_address, sg.dma_length) for sg in sglist.entries[:nents]]
    # Without an IOMMU a segment's bus address is its first page's physical address.
    assert segments == [(piece[0] * PAGE, len(piece) * PAGE) for piece in expected]
    assert DVV.count_runs(pfns) == len(runs)


def test_cma_gives_one_run_one_descriptor_and_needs_no_sync(result: dict[str, Any]) -> None:
    cma = row(result, DVV.CMA)
    assert cma["machine"] == "+ 8 MiB CMA"
    assert (cma["alloc"], cma["runs"], cma["dma"], cma["descriptors"]) == ("ok", 1, "ok", 1)
    assert cma["data_ok"] is True
    assert cycles(result, DVV.CMA)["tlb_misses"] == 1  # the direct map
    assert cycles(result, DVV.CMA)["dma_api"] == 0  # no map, no unmap, no sync
    summary = result["summary"]
    assert summary["cma_reserved_at_boot"].startswith("cma: Reserved 8 MiB")
    assert summary["cma_meminfo_with_the_buffer"] == "CmaTotal: 8192 kB, CmaFree: 7168 kB"
    # Without the area (the default board), dma_alloc_coherent needs an order-8 block.
    assert summary["coherent_without_cma"].startswith("fails: ")
    assert "page allocation failure: order:8" in summary["coherent_without_cma"]


def test_the_iommu_maps_the_scattered_pages_at_one_bus_range_one_descriptor(
    result: dict[str, Any],
) -> None:
    iommu = row(result, DVV.IOMMU)
    assert iommu["machine"] == "+ IOMMU, max seg 4 GiB"
    assert (iommu["alloc"], iommu["dma"], iommu["data_ok"]) == ("ok", "ok", True)
    assert iommu["runs"] > 100  # physically as scattered as ever
    assert result["summary"]["iommu_bus_ranges"] == 1
    # The max segment size raised to 4 GiB - 1: dma_map_sg leaves the range whole.
    assert iommu["descriptors"] == 1
    assert why(result, DVV.IOMMU)["kernel_says"] == "dma_map_sg: 1 segment, one IOVA range"
    # No descriptor fetch, but one IOTLB miss per page on top of a contiguous transfer.
    assert result["summary"]["iommu_iotlb_misses"] == PAGES
    (fresh,) = result["before_ageing"]
    extra = cycles(result, DVV.IOMMU)["transfer"] - cycles(result, fresh["way"])["transfer"]
    assert extra == PAGES * IOMMU_WALK_CYCLES == transfer(result, DVV.IOMMU)["iotlb"]
    assert transfer(result, DVV.IOMMU)["fetches"] == 0
    assert result["summary"]["naive_driver_with_iommu"].startswith("DMAR:")


def test_every_transfer_splits_into_fetches_iotlb_misses_and_moving_the_data(
    result: dict[str, Any],
) -> None:
    (fresh,) = result["before_ageing"]
    moving = cycles(result, fresh["way"])["transfer"]
    assert moving == BUFFER // hwsim.MachineConfig().dma.bytes_per_cycle + LATENCY.ram
    assert len(result["transfers"]) == 5  # SG, CMA, IOMMU, naive, reference
    for t in result["transfers"]:
        assert t["transfer"] == t["fetches"] + t["iotlb"] + t["moving_data"]
        assert t["moving_data"] == moving


def test_the_naive_driver_corrupts_pages_it_does_not_own_and_reads_wrong_data(
    result: dict[str, Any],
) -> None:
    naive = row(result, DVV.NAIVE)
    assert naive["machine"] == "default"
    assert (naive["alloc"], naive["dma"], naive["descriptors"]) == ("ok", "corruption", 1)
    assert naive["data_ok"] is False
    summary = result["summary"]
    victims = result["naive_driver_victims"]
    assert sum(v["pages"] for v in victims) == summary["naive_victim_pages"] > 100
    # Every page of the 1 MiB written is either the buffer's own or a victim.
    assert summary["naive_victim_pages"] + summary["naive_own_pages_in_range"] == PAGES
    owners = {v["owner"] for v in victims}
    assert "none (free page)" in owners
    assert any(owner.startswith("slab kmalloc-") for owner in owners)
    assert not any(owner.startswith("vmalloc") for owner in owners)  # not the buffer's own
    assert summary["naive_pages_right"] < PAGES // 2
    assert summary["kasan_report"].startswith("BUG: KASAN: wild-memory-access")
    assert why(result, DVV.NAIVE)["kernel_says"].startswith("BUG: KASAN")


def test_the_naive_drivers_smashed_page_tables_end_the_read_with_a_machine_check(
    result: dict[str, Any],
) -> None:
    # Seed 0: the buffer's PMD and PTE pages are in range; the PMD entry now reads as a
    # 2 MiB page beyond RAM, so the CPU's batched read stops at its first access.
    summary = result["summary"]
    assert summary["naive_page_table_pages_hit"] == 2
    assert summary["naive_read"].startswith("machine check: access 0 of the batch")
    assert "beyond the end of RAM" in summary["naive_read"]
    assert (
        "its PMD entry now holds random bytes that read as a 2 MiB page"
        in (why(result, DVV.NAIVE)["why"])
    )


@pytest.mark.machine(**DEFAULT_BOARD)
async def test_the_controller_reports_exactly_the_pages_in_range_the_buffer_does_not_own(
    machine: hwsim.Machine,
) -> None:
    await DVV.age(machine)
    buf = await machine.kernel.vmalloc(BUFFER)
    pfns = pfns_by_page_walk(machine, buf)
    owner = machine.page_owner.owner_of(pfns[0])
    desc = DmaDescriptor(
        pfns[0] * PAGE, BUFFER, DEV_TO_MEM, peer=FifoPeripheral(), expected_owner=owner
    )
    done = await machine.dma.submit(desc)
    await done.wait()
    assert done.status == "corruption"
    (report,) = machine.dma.reports
    assert set(report.pfns) == set(range(pfns[0], pfns[0] + PAGES)) - set(pfns)
    assert all(o != owner for o in report.owners)


def test_every_transfer_that_went_through_delivered_the_right_bytes(
    result: dict[str, Any],
) -> None:
    ok = [r for r in result["rows"] if r["dma"] == "ok"]
    assert [r["way"] for r in ok] == [DVV.SCATTER_GATHER, DVV.CMA, DVV.IOMMU]
    assert all(r["data_ok"] is True for r in ok)
    assert all(r["machine"] != "default" for r in ok)  # each needed more than the default


def test_reading_through_vmalloc_misses_the_tlb_per_page_and_costs_more(
    result: dict[str, Any],
) -> None:
    (fresh,) = result["before_ageing"]
    sg = cycles(result, DVV.SCATTER_GATHER)
    reference = cycles(result, fresh["way"])
    assert sg["read"] > reference["read"]
    assert sg["tlb_misses"] == PAGES > reference["tlb_misses"]


def test_the_result_is_reproducible_for_a_seed(result: dict[str, Any]) -> None:
    assert run_scenario("dma_vs_vmalloc", seed=0) == result


def test_another_seed_ages_differently_but_tells_the_same_story(result: dict[str, Any]) -> None:
    other = run_scenario("dma_vs_vmalloc", seed=1)
    outcome = ("machine", "alloc", "dma", "data_ok")
    assert [[r[k] for k in outcome] for r in other["rows"]] == [
        [r[k] for k in outcome] for r in result["rows"]
    ]
    assert other["buddyinfo"] != result["buddyinfo"]
    assert row(other, DVV.IOMMU)["descriptors"] == 1
    # Seed 1: no page table is in range, so the read does not fault; the data is wrong.
    assert other["summary"]["naive_page_table_pages_hit"] == 0
    assert other["summary"]["naive_read"] == "no fault: wrong data"


def test_the_plot_is_a_png(result: dict[str, Any], tmp_path: Path) -> None:
    scenario = load_scenario("dma_vs_vmalloc")
    assert scenario.plot is not None
    path = tmp_path / "dvv.png"
    scenario.plot(result, path)
    assert path.read_bytes().startswith(b"\x89PNG")


def test_hwsim_run_writes_the_same_json_and_a_png(result: dict[str, Any], tmp_path: Path) -> None:
    out, png = tmp_path / "dvv.json", tmp_path / "dvv.png"
    command = ["run", "dma_vs_vmalloc", "--json", str(out), "--plot", str(png)]
    done = subprocess.run(
        [sys.executable, "-m", "hwsim.cli", *command],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == result
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "rejecting DMA map of vmalloc memory" in done.stdout
