"""The dma_vs_vmalloc scenario: a 1 MiB DMA buffer on an aged machine, five ways and the naive
driver that hands the device a vmalloc buffer's first physical page with the whole length."""

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
from hwsim.devices.dma import DEV_TO_MEM, DmaDescriptor, FifoPeripheral
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
# The scenario's machine, for the tests that boot one themselves.
MACHINE = {**attrs.asdict(DVV.CONFIG, recurse=False), "seed": 0}


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    return run_scenario("dma_vs_vmalloc", seed=0)


def row(result: dict[str, Any], way: str) -> dict[str, Any]:
    (found,) = [r for r in result["rows"] if r["way"] == way]
    return found


def cycles(result: dict[str, Any], way: str) -> dict[str, Any]:
    (found,) = [r for r in result["cycles"] if r["way"] == way]
    return found


def why(result: dict[str, Any], way: str) -> dict[str, Any]:
    (found,) = [r for r in result["why"] if r["way"] == way]
    return found


def pfns_by_page_walk(machine: hwsim.Machine, buf: int) -> list[int]:
    """The frames behind a buffer, from the MMU's own (functional) page walk: not the
    vmalloc_to_pfn the scenario uses."""
    walk = machine.mmus[0].model.walk
    return [walk(buf + i * PAGE).pfn for i in range(PAGES)]


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


def test_the_table_has_the_six_ways_in_order(result: dict[str, Any]) -> None:
    assert [r["way"] for r in result["rows"]] == list(DVV.WAYS)
    assert DVV.WAYS[-1] == "vmalloc, naive driver (first page's phys + whole length)"
    assert [r["way"] for r in result["why"]] == list(DVV.WAYS)
    assert all(r["why"] for r in result["why"])


def test_ageing_leaves_memory_free_but_no_block_of_order_8(result: dict[str, Any]) -> None:
    fresh, aged, aged_iommu = result["buddyinfo"]
    assert fresh["o8"] + fresh["o9"] + fresh["o10"] > 0
    assert aged["o8"] == aged["o9"] == aged["o10"] == 0
    assert aged["free_MiB"] > 16  # plenty free, none of it contiguous enough
    assert result["summary"]["largest_free_order_after_ageing"] < 8
    # The IOMMU machine aged the same way with the same seed.
    assert {k: v for k, v in aged_iommu.items() if k != "machine"} == {
        k: v for k, v in aged.items() if k != "machine"
    }
    assert result["summary"]["ageing_same_on_the_iommu_machine"] is True


def test_kmalloc_on_the_fresh_machine_is_one_run_one_descriptor_and_reads_right(
    result: dict[str, Any],
) -> None:
    (fresh,) = result["before_ageing"]
    assert (fresh["alloc"], fresh["runs"], fresh["dma"], fresh["descriptors"]) == ("ok", 1, "ok", 1)
    assert fresh["tlb_misses"] == 1  # one 2 MiB page of the direct map
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
    assert cycles(result, DVV.MAP_SINGLE)["dma_cycles"] == 0  # the device never started


def test_scatter_gather_takes_a_descriptor_per_contiguous_run_and_reads_right(
    result: dict[str, Any],
) -> None:
    sg = row(result, DVV.SCATTER_GATHER)
    assert (sg["alloc"], sg["dma"], sg["data_ok"]) == ("ok", "ok", True)
    # Ageing scattered the pages: no run reaches the 64 KiB max segment, none is merged.
    assert 100 < sg["runs"] == sg["descriptors"] <= PAGES
    assert sg["tlb_misses"] == PAGES  # 4 KiB PTEs: one TLB miss per page
    assert result["summary"]["sg_without_scatter_gather"].startswith("dma_map_sg returns 0")


@pytest.mark.machine(**MACHINE)
async def test_dma_map_sg_gives_the_physically_contiguous_runs_counted_independently(
    machine: hwsim.Machine,
) -> None:
    await DVV.age(machine)
    buf = await machine.kernel.vmalloc(BUFFER)
    pfns = pfns_by_page_walk(machine, buf)
    runs: list[list[int]] = []
    for pfn in pfns:
        if runs and pfn == runs[-1][-1] + 1:
            runs[-1].append(pfn)
        else:
            runs.append([pfn])
    max_pages = machine.dma.device.max_segment_size // PAGE
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
    assert (cma["alloc"], cma["runs"], cma["dma"], cma["descriptors"]) == ("ok", 1, "ok", 1)
    assert cma["data_ok"] is True
    assert cma["tlb_misses"] == 1  # the direct map
    assert cycles(result, DVV.CMA)["dma_api_cycles"] == 0  # no map, no unmap, no sync


def test_the_iommu_maps_the_scattered_pages_at_one_bus_range(result: dict[str, Any]) -> None:
    iommu = row(result, DVV.IOMMU)
    assert (iommu["alloc"], iommu["dma"], iommu["data_ok"]) == ("ok", "ok", True)
    assert iommu["runs"] > 100  # physically as scattered as ever
    assert result["summary"]["iommu_bus_ranges"] == 1
    # One IOVA range, cut only by the device's max segment size (64 KiB: 16 descriptors).
    max_segment = result["summary"]["max_segment_size_KiB"] << 10
    assert iommu["descriptors"] == BUFFER // max_segment
    assert iommu["descriptors"] < row(result, DVV.SCATTER_GATHER)["descriptors"]
    # The transfer pays one IOTLB miss per page on top of the plain scatter-gather one.
    extra = (
        cycles(result, DVV.IOMMU)["dma_cycles"] - cycles(result, DVV.SCATTER_GATHER)["dma_cycles"]
    )
    assert extra == PAGES * IOMMU_WALK_CYCLES
    assert result["summary"]["naive_driver_with_iommu"].startswith("DMAR:")


def test_the_naive_driver_corrupts_pages_it_does_not_own_and_reads_wrong_data(
    result: dict[str, Any],
) -> None:
    naive = row(result, DVV.NAIVE)
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


@pytest.mark.machine(**MACHINE)
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
    transfer = await machine.dma.submit(desc)
    await transfer.wait()
    assert transfer.status == "corruption"
    (report,) = machine.dma.reports
    assert set(report.pfns) == set(range(pfns[0], pfns[0] + PAGES)) - set(pfns)
    assert all(o != owner for o in report.owners)


def test_every_transfer_that_went_through_delivered_the_right_bytes(
    result: dict[str, Any],
) -> None:
    ok = [r for r in result["rows"] if r["dma"] == "ok"]
    assert [r["way"] for r in ok] == [DVV.SCATTER_GATHER, DVV.CMA, DVV.IOMMU]
    assert all(r["data_ok"] is True for r in ok)


def test_reading_through_vmalloc_misses_the_tlb_per_page_and_costs_more(
    result: dict[str, Any],
) -> None:
    (fresh,) = result["before_ageing"]
    sg = cycles(result, DVV.SCATTER_GATHER)
    reference = cycles(result, fresh["way"])
    assert sg["read_cycles"] > reference["read_cycles"]
    assert row(result, DVV.SCATTER_GATHER)["tlb_misses"] == PAGES > fresh["tlb_misses"]


def test_the_result_is_json_able(result: dict[str, Any]) -> None:
    assert json.loads(json.dumps(result)) == result


def test_the_result_is_reproducible_for_a_seed(result: dict[str, Any]) -> None:
    assert run_scenario("dma_vs_vmalloc", seed=0) == result


def test_another_seed_ages_differently_but_tells_the_same_story(result: dict[str, Any]) -> None:
    other = run_scenario("dma_vs_vmalloc", seed=5)
    outcome = ("alloc", "dma", "data_ok")
    assert [[r[k] for k in outcome] for r in other["rows"]] == [
        [r[k] for k in outcome] for r in result["rows"]
    ]
    assert other["buddyinfo"] != result["buddyinfo"]


def test_the_plot_is_a_png(result: dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    scenario = load_scenario("dma_vs_vmalloc")
    assert scenario.plot is not None
    path = tmp_path / "dvv.png"
    scenario.plot(result, path)
    assert path.read_bytes().startswith(b"\x89PNG")


def test_hwsim_run_writes_the_same_json_and_a_png(result: dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
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
