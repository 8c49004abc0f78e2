"""The ``hwsim`` command, run in-process through ``main()`` and once as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import hwsim
from hwsim.cli import format_value, main

CUSTOM = '''
"""A custom study: reports its machine."""
import numpy as np
import hwsim

CONFIG = hwsim.MachineConfig(cpus=1, seed=3)

async def scenario(machine):
    buf = await machine.kernel.kmalloc(64)
    await machine.cpus[0].store(buf, b"hi")
    data = await machine.cpus[0].load(buf, 2)
    return {
        "cpus": len(machine.cpus),
        "seed": machine.config.seed,
        "now": machine.now,
        "data": data.decode(),
        "numpy_int": np.int64(7),
        "rows": [{"a": 1, "b": np.float64(2.5)}, {"a": 2, "b": 0.5}],
    }
'''

RAISES = '''
"""Fails on purpose."""
async def scenario(machine):
    await machine.cpus[0].load(await machine.kernel.kmalloc(8), 8)
    raise ValueError("the flux capacitor is empty")
'''


def write(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


def test_list_shows_memory_latency_with_its_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "memory_latency" in out
    assert "RAM latency and bandwidth" in out


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"hwsim {hwsim.__version__}"


def test_no_command_prints_usage_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: hwsim" in capsys.readouterr().err


def test_run_prints_tables_and_writes_valid_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "result.json"
    assert main(["run", "memory_latency", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    # One table per nested entry, with its column names; numbers with separators.
    assert "memory_latency.streaming" in out
    assert "cycles_per_access" in out
    assert "memory_latency.ram" in out
    assert "16,384" in out  # the accesses of each stream
    result = json.loads(out_json.read_text())
    assert result["data_read_back_ok"] is True
    assert result["streaming"][0]["cpu"] == "cpu0"


def test_unknown_scenario_exits_2_and_lists_the_known_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "memory_latncy"]) == 2
    err = capsys.readouterr().err
    assert "no scenario named 'memory_latncy'" in err
    assert "did you mean memory_latency" in err
    assert "known scenarios:" in err
    assert "  memory_latency" in err


def test_missing_scenario_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(tmp_path / "nothing.py")]) == 2
    assert "no scenario file" in capsys.readouterr().err


def test_a_file_without_a_scenario_function_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "helper", '"""Not a scenario."""\nX = 1\n')
    assert main(["run", str(path)]) == 2
    assert "defines no `async def scenario(machine) -> dict`" in capsys.readouterr().err


def test_a_scenario_that_raises_exits_1_with_the_error_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "broken", RAISES)
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err
    assert "scenario broken failed: ValueError: the flux capacitor is empty" in err
    assert "Traceback" not in err


def test_traceback_option_shows_where_the_scenario_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "broken", RAISES)
    assert main(["run", str(path), "--traceback"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert f'File "{path}", line 5, in scenario' in err


def test_a_scenario_returning_a_non_dict_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "listy", "async def scenario(machine):\n    return [1, 2]\n")
    assert main(["run", str(path)]) == 1
    assert "returned list, expected a dict" in capsys.readouterr().err


def test_a_custom_scenario_file_runs_with_its_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "custom", CUSTOM)
    out_json = tmp_path / "custom.json"
    assert main(["run", str(path), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "custom (seed 3): A custom study: reports its machine." in out
    assert "custom.rows" in out
    result = json.loads(out_json.read_text())
    assert result == {
        "cpus": 1,
        "seed": 3,
        # kmalloc (573 cycles), a store that walks 3 levels and misses to RAM for each
        # entry and the line (1 + 4 x 120), and a load that hits the TLB and the L1 (1 + 4).
        "now": 573 + 481 + 5,
        "data": "hi",
        "numpy_int": 7,
        "rows": [{"a": 1, "b": 2.5}, {"a": 2, "b": 0.5}],
    }


def test_seed_option_replaces_the_config_seed(tmp_path: Path) -> None:
    path = write(tmp_path, "custom", CUSTOM)
    out_json = tmp_path / "custom.json"
    assert main(["run", str(path), "--seed", "11", "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["seed"] == 11


def test_a_negative_seed_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "memory_latency", "--seed", "-1"]) == 2
    assert "a seed is a non-negative integer" in capsys.readouterr().err


def test_running_twice_with_the_same_seed_gives_identical_json(tmp_path: Path) -> None:
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["run", "memory_latency", "--seed", "5", "--json", str(first)]) == 0
    assert main(["run", "memory_latency", "--seed", "5", "--json", str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()
    assert json.loads(first.read_text())["config"]["seed"] == 5


def test_trace_option_writes_a_chrome_trace(tmp_path: Path) -> None:
    path = write(tmp_path, "custom", CUSTOM)
    trace = tmp_path / "trace.json"
    assert main(["run", str(path), "--trace", str(trace)]) == 0
    events = json.loads(trace.read_text())["traceEvents"]
    slices = [e for e in events if e.get("ph") == "X" and e.get("cat") == "msg"]
    # kmalloc; the store and the load, each seen by the CPU, its MMU and its L1.
    assert sorted(e["name"] for e in slices) == [
        "CacheLoad",
        "CacheStore",
        "KmallocMsg",
        "Load",
        "Store",
        "Translate",
        "Translate",
    ]


def test_plot_for_a_scenario_without_plot_says_not_available_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "custom", CUSTOM)
    assert main(["run", str(path), "--plot", str(tmp_path / "p.png")]) == 2
    assert "not available yet" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def test_plot_calls_the_scenarios_plot_function_with_the_result(tmp_path: Path) -> None:
    source = CUSTOM + textwrap.dedent(
        """
        def plot(result, path):
            path.write_text(f"cpus={result['cpus']} seed={result['seed']}")
        """
    )
    path = write(tmp_path, "custom", source)
    picture = tmp_path / "plot.txt"
    assert main(["run", str(path), "--plot", str(picture)]) == 0
    assert picture.read_text() == "cpus=1 seed=3"


def test_proc_option_dumps_the_machines_proc_files(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    assert main(["run", "memory_latency", "--proc", str(proc)]) == 0
    names = {p.name for p in proc.iterdir()}
    assert {"buddyinfo", "meminfo", "zoneinfo", "pagetypeinfo", "vmallocinfo"} <= names
    assert (proc / "buddyinfo").read_text().startswith("Node 0, zone      DMA ")
    assert (proc / "meminfo").read_text().startswith("MemTotal:")


def test_scenario_dirs_can_be_replaced_with_an_environment_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "custom", CUSTOM)
    write(tmp_path, "_helper", "X = 1\n")
    monkeypatch.setenv("HWSIM_SCENARIOS", str(tmp_path))
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "custom" in out
    assert "A custom study" in out
    assert "memory_latency" not in out
    assert "_helper" not in out
    assert main(["run", "custom"]) == 0


def test_result_text_is_printed_literally_not_as_rich_markup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = """
    async def scenario(machine):
        return {"[red]key": "[bold]value", "[b]nested": {"[i]x": 1}}
    """
    assert main(["run", str(write(tmp_path, "markup", source))]) == 0
    out = capsys.readouterr().out
    assert "[red]key" in out
    assert "[bold]value" in out
    assert "markup.[b]nested" in out
    assert "[i]x" in out


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1234567, "1,234,567"),
        (104.0, "104.0"),
        (207.90234375, "207.9"),
        (0.03847960468218627, "0.03848"),
        (1.9990609975961537, "1.999"),
        (212892.0, "212,892.0"),
        (0.0, "0.0"),
        (True, "True"),
        ([1, 2, 3], "1, 2, 3"),
    ],
)
def test_format_value_keeps_about_four_significant_digits(value: object, text: str) -> None:
    assert format_value(value) == text


def test_the_hwsim_module_runs_as_a_real_command(tmp_path: Path) -> None:
    out_json = tmp_path / "result.json"
    command = ["run", "memory_latency", "--seed", "2", "--json", str(out_json)]
    proc = subprocess.run(
        [sys.executable, "-m", "hwsim.cli", *command],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "memory_latency.streaming" in proc.stdout
    assert f"wrote result to {out_json}" in proc.stderr
    assert json.loads(out_json.read_text())["config"]["seed"] == 2


def test_the_real_command_exits_2_for_an_unknown_scenario() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hwsim.cli", "run", "no_such_study"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "memory_latency" in proc.stderr
    assert proc.stdout == ""


def test_a_scenarios_trace_is_identical_across_processes_with_different_hash_seeds(
    tmp_path: Path,
) -> None:
    traces = []
    for hashseed in ("1", "4242"):
        path = tmp_path / f"trace-{hashseed}.json"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "hwsim.cli",
                "run",
                "memory_latency",
                "--seed",
                "5",
                "--trace",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONHASHSEED": hashseed},
        )
        assert done.returncode == 0, done.stderr
        traces.append(path.read_bytes())
    assert traces[0] == traces[1]
    assert len(json.loads(traces[0])["traceEvents"]) > 100
