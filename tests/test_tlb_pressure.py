"""The tlb_pressure scenario: vmalloc memory strains the TLB, kmalloc memory does not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hwsim
from hwsim.scenario import list_scenarios, load_scenario, run_scenario

PAGE = hwsim.PAGE_SIZE
BUFFER = 4 << 20
PATTERNS = ("sequential", "page_stride", "random_pages")


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    return run_scenario("tlb_pressure", seed=0)


def row(result: dict[str, Any], pattern: str, buffer: str, pass_: str) -> dict[str, Any]:
    (found,) = [
        r
        for r in result["runs"]
        if (r["pattern"], r["buffer"], r["pass"]) == (pattern, buffer, pass_)
    ]
    return found


def test_tlb_pressure_is_listed_with_its_summary() -> None:
    assert list_scenarios()["tlb_pressure"].summary.startswith("TLB pressure:")


def test_the_page_tables_map_kmalloc_with_two_large_pages_and_vmalloc_page_by_page(
    result: dict[str, Any],
) -> None:
    buffers = {b["buffer"]: b for b in result["buffers"]}
    assert (buffers["kmalloc"]["mapped_by"], buffers["kmalloc"]["page_size"]) == ("PMD", "2 MiB")
    assert (buffers["vmalloc"]["mapped_by"], buffers["vmalloc"]["page_size"]) == ("PTE", "4 KiB")
    assert buffers["kmalloc"]["tlb_entries_needed"] == 2
    assert buffers["vmalloc"]["tlb_entries_needed"] == BUFFER // PAGE


def test_a_sequential_read_of_kmalloc_misses_the_tlb_once_per_2mib_and_vmalloc_once_per_page(
    result: dict[str, Any],
) -> None:
    kmalloc = row(result, "sequential", "kmalloc", "cold")
    vmalloc = row(result, "sequential", "vmalloc", "cold")
    assert kmalloc["loads"] == vmalloc["loads"] == BUFFER // 64
    assert 1 <= kmalloc["tlb_misses"] <= 3
    assert vmalloc["tlb_misses"] >= BUFFER // PAGE
    assert vmalloc["walks"] == vmalloc["tlb_misses"]
    assert result["summary"]["sequential_cold_kmalloc_tlb_misses"] == kmalloc["tlb_misses"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_warm_tlb_holds_the_kmalloc_buffer_but_not_the_vmalloc_one(
    result: dict[str, Any], pattern: str
) -> None:
    assert row(result, pattern, "kmalloc", "warm")["tlb_misses"] == 0
    assert row(result, pattern, "kmalloc", "warm")["walk_cycles"] == 0
    # 1024 pages do not fit in 64 entries: the second pass misses on every page again.
    assert row(result, pattern, "vmalloc", "warm")["tlb_misses"] == BUFFER // PAGE


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("pass_", ["cold", "warm"])
def test_vmalloc_costs_more_walk_cycles_and_the_walks_are_the_whole_difference(
    result: dict[str, Any], pattern: str, pass_: str
) -> None:
    kmalloc = row(result, pattern, "kmalloc", pass_)
    vmalloc = row(result, pattern, "vmalloc", pass_)
    assert vmalloc["walk_cycles"] > kmalloc["walk_cycles"]
    assert vmalloc["cycles"] > kmalloc["cycles"]
    (comparison,) = [
        c for c in result["vmalloc_vs_kmalloc"] if (c["pattern"], c["pass"]) == (pattern, pass_)
    ]
    assert comparison["extra_cycles"] == comparison["extra_walk_cycles"] > 0


def test_walks_hide_in_a_sequential_read_but_dominate_a_warm_page_stride_read(
    result: dict[str, Any],
) -> None:
    slowdown = {
        (c["pattern"], c["pass"]): c["vmalloc_slowdown"] for c in result["vmalloc_vs_kmalloc"]
    }
    assert slowdown["sequential", "cold"] < 1.01
    assert slowdown["sequential", "warm"] < 1.01
    assert slowdown["page_stride", "cold"] > 1.15
    assert slowdown["page_stride", "warm"] > 1.8
    assert row(result, "page_stride", "vmalloc", "warm")["walk_share_pct"] > 40
    assert row(result, "sequential", "vmalloc", "warm")["walk_share_pct"] < 1


def test_each_row_counts_bytes_and_cache_misses_consistently(result: dict[str, Any]) -> None:
    for r in result["runs"]:
        assert r["cycles_per_byte"] == pytest.approx(r["cycles"] / (64 * r["loads"]))
        # Every load's line misses the L1 at least once, except those a warm pass finds.
        assert r["l1_misses"] >= r["l2_misses"]
        if r["pass"] == "cold":
            assert r["l2_misses"] >= r["loads"]
    # A warm page-stride pass finds its 64 KiB of lines in the 256 KiB L2.
    assert row(result, "page_stride", "kmalloc", "warm")["l2_misses"] == 0


def test_the_scenario_reads_back_what_it_stored(result: dict[str, Any]) -> None:
    assert result["summary"]["data_read_back_ok"] is True


def test_the_result_is_reproducible_for_a_seed(result: dict[str, Any]) -> None:
    assert run_scenario("tlb_pressure", seed=0) == result


def test_another_seed_changes_the_random_lines_but_not_the_tlb_counts(
    result: dict[str, Any],
) -> None:
    other = run_scenario("tlb_pressure", seed=1)
    assert [r["tlb_misses"] for r in other["runs"]] == [r["tlb_misses"] for r in result["runs"]]
    assert other["runs"] != result["runs"]


def test_the_plot_is_a_png(result: dict[str, Any], tmp_path: Path) -> None:
    scenario = load_scenario("tlb_pressure")
    assert scenario.plot is not None
    path = tmp_path / "tlb.png"
    scenario.plot(result, path)
    assert path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.machine(cpus=1)
async def test_bytes_stored_through_either_buffer_are_loaded_back(
    machine: hwsim.Machine,
) -> None:
    cpu = machine.cpus[0]
    kbuf = await machine.kernel.kmalloc(BUFFER)
    vbuf = await machine.kernel.vmalloc(BUFFER)
    # Page starts, a 4 KiB boundary, the 2 MiB boundary and the last bytes.
    places = [0, PAGE - 3, 5 * PAGE + 100, (2 << 20) - 5, BUFFER - 16]
    for buf in (kbuf, vbuf):
        patterns = [machine.random.randbytes(16) for _ in places]
        for offset, data in zip(places, patterns, strict=True):
            await cpu.store(buf + offset, data)
        assert [await cpu.load(buf + offset, 16) for offset in places] == patterns


@pytest.mark.machine(cpus=1)
async def test_a_vmalloc_page_is_the_same_memory_as_its_direct_map_alias(
    machine: hwsim.Machine,
) -> None:
    cpu = machine.cpus[0]
    vbuf = await machine.kernel.vmalloc(BUFFER)
    page = vbuf + 700 * PAGE
    await cpu.store(page + 64, b"through vmalloc")
    pfn = await machine.kernel.vmalloc_to_pfn(page)
    alias = machine.kernel.page_address(pfn)
    assert await cpu.load(alias + 64, 15) == b"through vmalloc"


@pytest.mark.machine(cpus=1, tlb=hwsim.TlbConfig(entries=64, ways=4))
async def test_64_vmalloc_pages_stay_in_the_tlb_but_80_do_not(machine: hwsim.Machine) -> None:
    cpu = machine.cpus[0]
    vbuf = await machine.kernel.vmalloc(80 * PAGE)
    for pages, second_pass_misses in ((64, 0), (80, 80)):
        offsets = np.arange(pages, dtype=np.int64) * PAGE
        await cpu.access(offsets, base=vbuf)
        again = await cpu.access(offsets, base=vbuf)
        assert again.tlb_misses == second_pass_misses
