"""The dma_cache_sync scenario: on a non-coherent bus, the DMA API decides who reads what."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import hwsim
from hwsim.cli import main
from hwsim.devices.dma import MEM_TO_DEV, DmaDescriptor, FifoPeripheral
from hwsim.scenario import list_scenarios, load_scenario, run_scenario

LINES = 8  # the scenario's 512-byte buffers
CORRECT = {
    "1": False,
    "2": True,
    "3": False,
    "4": True,
    "5a": False,
    "5b": True,
    "6a": True,
    "6b": True,
    "7a": True,
    "7b": True,
    "7c": True,
}
NO_API = ("1", "3", "6a", "6b", "7a", "7b")


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    return run_scenario("dma_cache_sync", seed=0)


def case(result: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [r for r in result["cases"] if r["case"] == name]
    assert isinstance(found, dict)
    return found


def work(result: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [r for r in result["cache_work"] if r["case"] == name]
    assert isinstance(found, dict)
    return found


def test_dma_cache_sync_is_listed_with_its_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert list_scenarios()["dma_cache_sync"].summary.startswith("Caches versus DMA:")
    assert main(["list"]) == 0
    assert "dma_cache_sync" in capsys.readouterr().out


def test_every_case_is_there_in_order_on_the_bus_it_names(result: dict[str, Any]) -> None:
    assert [r["case"] for r in result["cases"]] == list(CORRECT)
    assert [r["case"] for r in result["cache_work"]] == list(CORRECT)
    assert [r["case"] for r in result["why"]] == list(CORRECT)
    assert all(r["why"] for r in result["why"])
    for r in result["cases"]:
        assert r["bus"] == ("snooping" if r["case"].startswith("7") else "non-coherent")
        coherent = r["case"].startswith("6")
        assert r["buffer"] == ("dma_alloc_coherent" if coherent else "kmalloc")


@pytest.mark.parametrize(("name", "correct"), CORRECT.items())
def test_only_the_cases_that_skip_a_sync_on_a_non_coherent_bus_read_stale_data(
    result: dict[str, Any], name: str, correct: bool
) -> None:
    row = case(result, name)
    assert row["correct"] is correct
    assert row["old"] != row["expected"]  # the bytes tell OLD from NEW
    if correct:
        assert row["saw"] == row["expected"]
        assert row["per_line"] == "N" * LINES
        assert work(result, name)["old_lines_seen"] == 0


@pytest.mark.parametrize("name", ["1", "3"])
def test_a_missing_sync_shows_the_old_bytes_on_every_line(
    result: dict[str, Any], name: str
) -> None:
    row = case(result, name)
    assert row["saw"] == row["old"]
    assert row["per_line"] == "O" * LINES
    assert work(result, name)["old_lines_seen"] == LINES


def test_the_device_reads_ram_while_the_new_bytes_sit_dirty_in_the_l1(
    result: dict[str, Any],
) -> None:
    assert work(result, "1")["l1_lines_at_read"] == f"{LINES} dirty"
    # The map cleaned them: still cached, no longer dirty.
    assert work(result, "2")["l1_lines_at_read"] == f"{LINES} clean"


def test_a_peek_while_the_device_owns_the_buffer_makes_only_that_line_stale(
    result: dict[str, Any],
) -> None:
    peek = case(result, "5a")
    assert peek["per_line"] == "O" + "N" * (LINES - 1)
    assert peek["saw"] == peek["old"]  # the 8-byte prefix is the peeked status word
    assert work(result, "5a")["l1_lines_at_read"] == "1 clean"
    assert work(result, "5a")["dma_api_lines_invalidated"] == 0
    # sync_for_cpu invalidates what the peek cached: the read then misses to RAM.
    assert work(result, "5b")["dma_api_lines_invalidated"] > 0
    assert work(result, "5b")["l1_lines_at_read"] == "none"
    assert "dma_sync_single_for_cpu" in case(result, "5b")["api_calls"]


def test_the_map_writes_back_for_the_device_and_the_unmap_invalidates_for_the_cpu(
    result: dict[str, Any],
) -> None:
    to_device, from_device = work(result, "2"), work(result, "4")
    assert to_device["dma_api_lines_written_back"] >= LINES
    assert to_device["l1d0_writebacks"] == LINES
    assert to_device["dma_api_lines_invalidated"] == 0
    assert from_device["dma_api_lines_written_back"] == 0  # nothing was dirty
    assert from_device["dma_api_lines_invalidated"] >= LINES
    assert from_device["l1_lines_at_read"] == "none"
    summary = result["summary"]
    assert summary["map_to_device_lines_written_back"] == to_device["dma_api_lines_written_back"]
    assert (
        summary["unmap_from_device_lines_invalidated"] == from_device["dma_api_lines_invalidated"]
    )


@pytest.mark.parametrize("name", NO_API)
def test_cases_without_the_dma_api_clean_and_invalidate_nothing(
    result: dict[str, Any], name: str
) -> None:
    assert case(result, name)["api_calls"] == "none"
    row = work(result, name)
    assert row["dma_api_lines_written_back"] == row["dma_api_lines_invalidated"] == 0


def test_a_snooping_bus_needs_no_cache_maintenance(result: dict[str, Any]) -> None:
    assert work(result, "7c")["dma_api_lines_written_back"] == 0
    assert work(result, "7a")["l1_lines_at_read"] == f"{LINES} dirty"  # read by snooping
    assert work(result, "7b")["l1_lines_at_read"] == "none"  # the device's write invalidated


def test_a_stale_read_is_a_fast_one_and_coherent_memory_is_never_cached(
    result: dict[str, Any],
) -> None:
    cycles = {r["case"]: r["cpu_read_cycles"] for r in result["cache_work"]}
    assert cycles["3"] < cycles["4"]  # L1 hits on stale lines against misses to RAM
    assert cycles["5a"] < cycles["5b"]
    assert work(result, "6b")["l1_lines_at_read"] == "none"
    assert work(result, "6a")["l1_lines_at_read"] == "none"


def test_coherent_memory_costs_ram_latency_on_every_read_unless_the_bus_snoops(
    result: dict[str, Any],
) -> None:
    cost = {(r["bus"], r["buffer"]): r for r in result["cpu_read_cost"]}
    cached = cost["non-coherent", "kmalloc"]
    uncached = cost["non-coherent", "dma_alloc_coherent"]
    snooped = cost["snooping", "dma_alloc_coherent"]
    assert uncached["mapped_uncached"] is True
    assert cached["mapped_uncached"] is snooped["mapped_uncached"] is False
    assert uncached["first_read_cycles_per_line"] == uncached["second_read_cycles_per_line"]
    assert cached["second_read_cycles_per_line"] < cached["first_read_cycles_per_line"]
    assert uncached["second_read_cycles_per_line"] > 10 * cached["second_read_cycles_per_line"]
    assert snooped["second_read_cycles_per_line"] == cached["second_read_cycles_per_line"]
    summary = result["summary"]
    assert summary["coherent_read_cycles_per_line"] == uncached["second_read_cycles_per_line"]


def test_the_summary_lists_the_stale_and_the_correct_cases(result: dict[str, Any]) -> None:
    summary = result["summary"]
    assert summary["stale_cases"] == ", ".join(n for n, ok in CORRECT.items() if not ok)
    assert summary["correct_cases"] == ", ".join(n for n, ok in CORRECT.items() if ok)


def test_the_result_is_reproducible_for_a_seed(result: dict[str, Any]) -> None:
    assert run_scenario("dma_cache_sync", seed=0) == result


def test_another_seed_changes_the_bytes_but_not_the_outcomes(result: dict[str, Any]) -> None:
    other = run_scenario("dma_cache_sync", seed=1)
    assert [r["saw"] for r in other["cases"]] != [r["saw"] for r in result["cases"]]
    assert [r["per_line"] for r in other["cases"]] == [r["per_line"] for r in result["cases"]]
    assert other["cache_work"] == result["cache_work"]


def test_the_plot_is_a_png(result: dict[str, Any], tmp_path: Path) -> None:
    scenario = load_scenario("dma_cache_sync")
    assert scenario.plot is not None
    path = tmp_path / "dma_cache_sync.png"
    scenario.plot(result, path)
    assert path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.machine(cpus=1)
async def test_stores_after_the_map_need_dma_sync_single_for_device(
    machine: hwsim.Machine,
) -> None:
    """A buffer mapped once and reused (a TX ring): the CPU writes it again while it is
    mapped, and only sync_for_device makes the device see the second message."""
    cpu, kernel = machine.cpus[0], machine.kernel
    buf = await kernel.kmalloc(128)
    handle = await kernel.dma_map_single(machine.dma, buf, 128, hwsim.DMA_TO_DEVICE)

    async def device_reads() -> bytes:
        fifo = FifoPeripheral()
        desc = DmaDescriptor(handle, 128, MEM_TO_DEV, peer=fifo)
        await (await machine.dma.submit(desc)).wait()
        return bytes(fifo.received)

    await cpu.store(buf, b"A" * 128)
    assert await device_reads() != b"A" * 128  # stored after the map: still in the L1
    await kernel.dma_sync_single_for_device(machine.dma, handle, 128, hwsim.DMA_TO_DEVICE)
    assert await device_reads() == b"A" * 128
    await kernel.dma_unmap_single(machine.dma, handle, 128, hwsim.DMA_TO_DEVICE)
