"""Scenario loading and running, and every built-in scenario."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hwsim
from hwsim.scenario import (
    InvalidScenario,
    ScenarioNotFound,
    list_scenarios,
    load_scenario,
    machine_config,
    run_scenario,
    to_jsonable,
)

BUILT_IN = list_scenarios()


def write(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def test_the_built_in_scenarios_include_memory_latency() -> None:
    assert "memory_latency" in BUILT_IN
    info = BUILT_IN["memory_latency"]
    assert info.path.name == "memory_latency.py"
    assert info.summary.startswith("Cache, TLB and RAM latency and bandwidth")


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_every_built_in_scenario_runs_and_returns_a_json_able_dict(name: str) -> None:
    scenario = load_scenario(name)
    assert scenario.doc, "a scenario says what it teaches and what to expect"
    result = run_scenario(scenario, seed=1)
    assert isinstance(result, dict)
    assert result


@pytest.fixture(scope="module")
def memory_latency() -> dict[str, Any]:
    return run_scenario("memory_latency", seed=0)


def expected_single_loads(latency: hwsim.LatencyConfig) -> dict[str, tuple[int, int]]:
    """(cycles, walk cycles) of each of the scenario's single loads, from the latencies:
    a line (or a page-table entry) that misses everywhere costs l1 + l2 + RAM's 64 bytes;
    the direct map's walks read 3 entries, vmalloc's 4."""
    tlb, l1, l2 = latency.tlb, latency.l1, latency.l2
    miss = l1 + l2 + latency.ram + -(-64 // latency.ram_bytes_per_cycle)
    return {
        "first touch, kmalloc page": (tlb + 3 * miss + miss, 3 * miss),
        "L1 hit": (tlb + l1, 0),
        "L2 miss (RAM)": (tlb + miss, 0),
        "L1 miss, L2 hit": (tlb + l1 + l2, 0),
        "first touch, vmalloc page": (tlb + 4 * miss + miss, 4 * miss),
        "next vmalloc page": (tlb + 4 * l1 + miss, 4 * l1),
    }


def measured_single_loads(result: dict[str, Any]) -> dict[str, tuple[int, int]]:
    return {r["access"]: (r["cycles"], r["walk_cycles"]) for r in result["single_access"]}


def test_memory_latency_single_loads_cost_the_sum_of_the_levels_they_reach(
    memory_latency: dict[str, Any],
) -> None:
    config = load_scenario("memory_latency").config
    assert config is not None
    expected = expected_single_loads(config.latency)
    assert measured_single_loads(memory_latency) == expected
    assert all(r["cycles"] == r["expected"] for r in memory_latency["single_access"])
    # The default machine's ladder: L1 5, L2 17, RAM 121 cycles.
    assert [expected[k][0] for k in ("L1 hit", "L1 miss, L2 hit", "L2 miss (RAM)")] == [5, 17, 121]


LATENCIES = hwsim.LatencyConfig(tlb=2, l1=3, l2=9, ram=60, ram_bytes_per_cycle=8)


@pytest.mark.machine(cpus=2, latency=LATENCIES)
async def test_memory_latency_single_loads_follow_the_configured_latencies(
    machine: hwsim.Machine,
) -> None:
    result = await load_scenario("memory_latency").function(machine)
    assert measured_single_loads(result) == expected_single_loads(LATENCIES)
    snoop = machine.hierarchy.snoop_latency
    cross_load = LATENCIES.tlb + LATENCIES.l1 + snoop + LATENCIES.l2
    assert result["exchange"]["cross_load_cycles_max"] == cross_load
    miss = LATENCIES.tlb + LATENCIES.l1 + LATENCIES.l2 + LATENCIES.ram + 64 // 8
    assert result["alone_cycles_per_access"] == miss


def test_memory_latency_reads_back_what_the_other_cpu_wrote_out_of_its_cache(
    memory_latency: dict[str, Any],
) -> None:
    assert memory_latency["data_read_back_ok"] is True
    exchange = memory_latency["exchange"]
    lines = 2 * exchange["lines_per_cpu"]
    # Every cross load finds the line Modified in the other L1: one snoop, one
    # cache-to-cache transfer, at L1 + snoop + L2 after the TLB.
    assert exchange["snoops"] == exchange["cache_to_cache"] == lines
    assert exchange["cross_load_cycles_min"] == exchange["cross_load_cycles_max"] == 1 + 4 + 30 + 12
    assert exchange["cross_load_expected"] == 47
    # A store that misses reads the line for ownership from RAM: never cheaper than that.
    assert exchange["store_cycles_min"] == 121


def test_memory_latency_contended_streams_are_never_faster_than_alone(
    memory_latency: dict[str, Any],
) -> None:
    # Alone, every access of the 1 MiB stream misses the L1 and the L2, and nothing else.
    assert memory_latency["alone_cycles_per_access"] == 121
    assert memory_latency["expected_cycles_per_access"] == 121
    rows = memory_latency["streaming"]
    alone = {r["cpu"]: r["cycles"] for r in rows if r["run"] == "alone"}
    together = {r["cpu"]: r["cycles"] for r in rows if r["run"] == "together"}
    assert set(alone) == set(together) == {"cpu0", "cpu1"}
    assert all(r["accesses"] == 16384 and r["tlb_misses"] == 0 for r in rows)
    assert all(alone[cpu] <= together[cpu] for cpu in alone)
    extra = max(together[cpu] - alone[cpu] for cpu in alone)
    assert extra == memory_latency["contended_extra_cycles_max"] > 0
    assert memory_latency["contended_cycles_per_access"] > memory_latency["alone_cycles_per_access"]
    assert memory_latency["slowdown_max"] >= 1
    # The channel only books transfers (4 of every 121 cycles per stream), so the second
    # stream waits for one transfer, not for the whole first stream.
    wall = memory_latency["contended_wall_cycles"]
    assert wall == max(together.values()) < 1.01 * max(alone.values())
    assert 0 < memory_latency["contended_ram_queued_cycles"] < 1024
    assert memory_latency["channel_busy_share"] == pytest.approx(2 * 16384 * 4 / wall)


def test_memory_latency_is_reproducible_for_a_seed(
    memory_latency: dict[str, Any], tmp_path: Path
) -> None:
    assert run_scenario("memory_latency", seed=0) == memory_latency
    out = tmp_path / "memory_latency.json"
    command = ["run", "memory_latency", "--seed", "0", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "hwsim.cli", *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONHASHSEED": "123"},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text()) == memory_latency


def test_an_unknown_name_raises_a_lookup_error_naming_the_known_ones() -> None:
    with pytest.raises(LookupError, match="no scenario named 'nope'") as info:
        load_scenario("nope")
    assert isinstance(info.value, ScenarioNotFound)
    assert "memory_latency" in info.value.known
    assert isinstance(info.value, hwsim.HwsimError)


def test_loading_by_path_gives_the_file_its_config_and_doc(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "tiny",
        '''
        """Tiny.

        More words.
        """
        import hwsim
        CONFIG = hwsim.MachineConfig(cpus=1, seed=9)

        async def scenario(machine):
            return {"cpus": len(machine.cpus)}
        ''',
    )
    scenario = load_scenario(path)
    assert (scenario.name, scenario.path, scenario.summary) == ("tiny", path.resolve(), "Tiny.")
    assert scenario.config == hwsim.MachineConfig(cpus=1, seed=9)
    assert scenario.plot is None
    assert machine_config(scenario).seed == 9
    assert machine_config(scenario, seed=4) == hwsim.MachineConfig(cpus=1, seed=4)
    assert run_scenario(scenario) == {"cpus": 1}


def test_a_scenario_without_config_runs_on_the_default_machine(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "plain",
        "async def scenario(machine):\n    return {'cpus': len(machine.cpus)}\n",
    )
    scenario = load_scenario(str(path))
    assert scenario.config is None
    assert run_scenario(scenario) == {"cpus": hwsim.MachineConfig().cpus}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("X = 1\n", "defines no `async def scenario"),
        ("def scenario(machine):\n    return {}\n", "must be an `async def scenario"),
        (
            "CONFIG = {'cpus': 1}\nasync def scenario(machine):\n    return {}\n",
            "CONFIG must be a hwsim.MachineConfig, got dict",
        ),
    ],
)
def test_a_file_that_is_not_a_scenario_is_refused_clearly(
    tmp_path: Path, source: str, message: str
) -> None:
    path = write(tmp_path, "odd", source)
    with pytest.raises(InvalidScenario, match=message):
        load_scenario(path)


def test_the_scenarios_own_error_comes_out_unwrapped(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "oops",
        "async def scenario(machine):\n    raise KeyError('lost')\n",
    )
    with pytest.raises(KeyError, match="lost"):
        run_scenario(path)


def test_the_trace_is_written_even_when_the_scenario_fails(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "oops",
        """
        async def scenario(machine):
            await machine.cpus[0].load(await machine.kernel.kmalloc(8), 8)
            raise RuntimeError("after one load")
        """,
    )
    trace = tmp_path / "trace.json"
    with pytest.raises(RuntimeError, match="after one load"):
        run_scenario(path, trace_path=trace)
    names = {e["name"] for e in json.loads(trace.read_text())["traceEvents"]}
    assert {"KmallocMsg", "Load", "Translate", "CacheLoad"} <= names


def test_to_jsonable_turns_numpy_and_tuples_into_plain_python() -> None:
    value = {"a": np.int32(3), "b": (np.float64(0.5), np.bool_(True)), "c": np.arange(3)}
    plain = to_jsonable(value)
    assert plain == {"a": 3, "b": [0.5, True], "c": [0, 1, 2]}
    assert type(plain["a"]) is int
    assert type(plain["b"][0]) is float
    assert type(plain["b"][1]) is bool


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"x": object()}, r"result\['x'\] is a object"),
        ({"x": [1.0, float("nan")]}, r"result\['x'\]\[1\] is nan"),
        ({1: 2}, "has a key 1: JSON keys are strings"),
    ],
)
def test_to_jsonable_names_the_value_json_cannot_hold(value: object, message: str) -> None:
    with pytest.raises(InvalidScenario, match=message):
        to_jsonable(value, "result")


@pytest.fixture(scope="module")
def fragmentation() -> dict[str, Any]:
    return run_scenario("fragmentation", seed=1)


def test_fragmentation_makes_kmalloc_fail_while_memory_is_free_and_vmalloc_still_works(
    fragmentation: dict[str, Any],
) -> None:
    by_order = {p["order"]: p for p in fragmentation["kmalloc_vs_vmalloc_by_size"]}
    order4 = by_order[4]["kmalloc_first_failed_round"]
    assert order4 is not None and order4 > 0
    assert by_order[4]["free_MiB_then"] > 8  # many MiB free, none of it contiguous enough
    assert all(p["vmalloc_first_failed_round"] is None for p in by_order.values())
    assert not fragmentation["summary"]["vmalloc_ever_failed"]
    # Bigger blocks run out first: the failures walk down the orders.
    firsts = [by_order[o]["kmalloc_first_failed_round"] for o in range(10, 3, -1)]
    assert all(f is not None for f in firsts)
    assert firsts == sorted(firsts)


def test_fragmentation_drains_the_high_order_free_lists_over_time(
    fragmentation: dict[str, Any],
) -> None:
    rows = fragmentation["buddyinfo_over_time"]
    assert rows[0]["o10"] > 5 and rows[-1]["o10"] == 0
    assert rows[-1]["o0"] > 10 * max(rows[0]["o0"], 1)
    assert rows[-1]["largest_order"] < rows[0]["largest_order"]


def test_fragmentation_plots_its_result(fragmentation: dict[str, Any], tmp_path: Path) -> None:
    scenario = load_scenario("fragmentation")
    assert scenario.plot is not None
    path = tmp_path / "frag.png"
    scenario.plot(fragmentation, str(path))
    assert path.read_bytes().startswith(b"\x89PNG")
