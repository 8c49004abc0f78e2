"""Scenarios: runnable studies, one Python file each, found by name or by path.

A scenario file is a module with

- a docstring: what it teaches and what result to expect (its first line is the summary
  ``hwsim list`` shows);
- ``CONFIG = hwsim.MachineConfig(...)`` (optional: the default machine otherwise);
- ``async def scenario(machine) -> dict``: the study itself; the dict is its result, printed
  as tables by ``hwsim run`` and written as JSON;
- ``def plot(result, path)`` (optional): draws the result into ``path`` for ``--plot``.

Built-in scenarios live in the repository's ``scenarios/`` directory. Setting the environment
variable ``HWSIM_SCENARIOS`` to one or more directories (separated by ``os.pathsep``) makes
those the places names are looked up in instead.

Example:
    >>> from hwsim.scenario import load_scenario, run_scenario
    >>> result = run_scenario(load_scenario("memory_latency"), seed=1)
    >>> result["data_read_back_ok"]
    True
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
import math
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, NamedTuple

import attrs
import numpy as np

from .config import MachineConfig
from .core.run import run
from .core.trace import Tracer
from .errors import HwsimError
from .machine import Machine, boot

ENV_VAR = "HWSIM_SCENARIOS"

ScenarioFunction = Callable[[Machine], Awaitable[dict[str, Any]]]
PlotFunction = Callable[[dict[str, Any], Path], object]


class ScenarioNotFound(HwsimError, LookupError):
    """No scenario of that name (or no such file).

    Attributes:
        name: what was asked for.
        known: the names of the scenarios that do exist.
    """

    def __init__(self, name: str, known: list[str], message: str | None = None) -> None:
        if message is None:
            message = f"no scenario named {name!r}"
            close = difflib.get_close_matches(name, known, n=3)
            if close:
                message += f" (did you mean {', '.join(close)}?)"
        super().__init__(message)
        self.name = name
        self.known = known


class InvalidScenario(HwsimError, ValueError):
    """A file that is not a scenario: no ``async def scenario``, a CONFIG that is not a
    :class:`~hwsim.MachineConfig`, or a result that is not a JSON-able dict."""


class NotAvailable(HwsimError):
    """An option asked for something the machine or the scenario cannot do yet
    (``--proc`` before the machine has /proc views, ``--plot`` for a scenario without
    ``plot()``)."""


class ScenarioInfo(NamedTuple):
    """What ``hwsim list`` shows about a scenario, found without running it."""

    path: Path
    summary: str


@attrs.frozen
class Scenario:
    """A loaded scenario file.

    Attributes:
        name: the file's stem (``"memory_latency"``).
        path: the file.
        config: its ``CONFIG``, or ``None`` for the default machine.
        function: its ``async def scenario(machine) -> dict``.
        doc: its docstring (``""`` if it has none).
        plot: its ``plot(result, path)``, or ``None``.
    """

    name: str
    path: Path
    config: MachineConfig | None
    function: ScenarioFunction
    doc: str
    plot: PlotFunction | None = None

    @property
    def summary(self) -> str:
        """The docstring's first line."""
        return _first_line(self.doc)


# ---------------------------------------------------------------------- finding


def scenario_dirs() -> list[Path]:
    """Where scenario names are looked up: ``$HWSIM_SCENARIOS`` or the built-in directory."""
    env = os.environ.get(ENV_VAR)
    if env:
        return [Path(part) for part in env.split(os.pathsep) if part]
    # hwsim is installed editable (or run from the checkout): scenarios/ sits beside it.
    return [Path(__file__).resolve().parent.parent / "scenarios"]


def _first_line(doc: str | None) -> str:
    for line in (doc or "").strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def _docstring_of(path: Path) -> str:
    """The module docstring, read without running the file (listing must not execute code)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return ""
    return ast.get_docstring(tree) or ""


def list_scenarios() -> dict[str, ScenarioInfo]:
    """Every scenario in :func:`scenario_dirs`, by name, sorted: ``name -> (path, summary)``.

    Files whose name starts with ``_`` are helpers, not scenarios. When two directories
    hold the same name, the first directory wins.
    """
    found: dict[str, ScenarioInfo] = {}
    for directory in scenario_dirs():
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.py")):
            if path.name.startswith("_") or path.stem in found:
                continue
            found[path.stem] = ScenarioInfo(path, _first_line(_docstring_of(path)))
    return dict(sorted(found.items()))


def _looks_like_path(name: str) -> bool:
    return name.endswith(".py") or os.sep in name or (os.altsep is not None and os.altsep in name)


def load_scenario(name_or_path: str | os.PathLike[str]) -> Scenario:
    """Import a scenario by name (from :func:`list_scenarios`) or from a ``.py`` file.

    Raises:
        ScenarioNotFound: no scenario of that name, or no such file (a ``LookupError``;
            ``.known`` lists the names that exist).
        InvalidScenario: the file has no ``async def scenario(machine)``, or its CONFIG is
            not a MachineConfig.
        Exception: whatever the file itself raises while it is imported.
    """
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(str(name_or_path)):
        path = Path(name_or_path)
        if not path.is_file():
            raise ScenarioNotFound(
                str(path), list(list_scenarios()), f"no scenario file {str(path)!r}"
            )
    else:
        name = str(name_or_path)
        known = list_scenarios()
        if name not in known:
            raise ScenarioNotFound(name, list(known))
        path = known[name].path
    return _import(path.resolve())


def _import(path: Path) -> Scenario:
    name = path.stem
    module_name = f"_hwsim_scenario_{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - only for odd suffixes
        raise InvalidScenario(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs, so that dataclasses/attrs/pickle inside the file can find
    # their own module, as they would for a normal import.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return _from_module(name, path, module)


def _from_module(name: str, path: Path, module: ModuleType) -> Scenario:
    function = getattr(module, "scenario", None)
    if function is None:
        raise InvalidScenario(
            f"{path} is not a scenario: it defines no `async def scenario(machine) -> dict`"
        )
    if not inspect.iscoroutinefunction(function):
        raise InvalidScenario(
            f"{path}: scenario must be an `async def scenario(machine)`, "
            f"got {type(function).__name__} {function!r}"
        )
    config = getattr(module, "CONFIG", None)
    if config is not None and not isinstance(config, MachineConfig):
        raise InvalidScenario(
            f"{path}: CONFIG must be a hwsim.MachineConfig, got {type(config).__name__}"
        )
    plot = getattr(module, "plot", None)
    if plot is not None and not callable(plot):
        raise InvalidScenario(f"{path}: plot must be a function plot(result, path)")
    return Scenario(
        name=name,
        path=path,
        config=config,
        function=function,
        doc=inspect.getdoc(module) or "",
        plot=plot,
    )


# ---------------------------------------------------------------------- running


def machine_config(scenario: Scenario, seed: int | None = None) -> MachineConfig:
    """The machine a scenario runs on: its CONFIG (or the default), with ``seed`` if given."""
    config = scenario.config if scenario.config is not None else MachineConfig()
    return config if seed is None else config.evolve(seed=seed)


def run_scenario(
    scenario: Scenario | str | os.PathLike[str],
    *,
    seed: int | None = None,
    trace_path: str | os.PathLike[str] | None = None,
    proc_dir: str | os.PathLike[str] | None = None,
    plot_path: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Boot the scenario's machine, run the scenario under :func:`hwsim.run`, return its dict.

    One seed drives everything: ``seed`` (or, when it is ``None``, the CONFIG's own seed)
    becomes both ``MachineConfig.seed`` and the scheduler's seed, so the same scenario and
    seed give the same result and the same trace.

    Args:
        scenario: a loaded :class:`Scenario`, or a name or path for :func:`load_scenario`.
        seed: overrides the config's seed.
        trace_path: record every message and write a Chrome trace JSON here (written also
            when the scenario fails, to show how it got there).
        proc_dir: after the scenario, dump the machine's /proc files into this directory.
        plot_path: after the scenario, call its ``plot(result, plot_path)``.

    Returns:
        The scenario's result, with numpy numbers and arrays turned into plain Python ones
        and tuples into lists, so that it is JSON-serialisable as it is.

    Raises:
        NotAvailable: ``proc_dir`` or ``plot_path`` asked for something not there (checked
            before the scenario runs).
        InvalidScenario: the result is not a dict of JSON-able values.
        Exception: whatever the scenario raises.
    """
    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    config = machine_config(scenario, seed)
    if plot_path is not None and scenario.plot is None:
        raise NotAvailable(
            f"not available yet: scenario {scenario.name!r} cannot plot "
            "(it defines no `def plot(result, path)`)"
        )
    tracer = Tracer() if trace_path is not None else None
    function = scenario.function

    async def main() -> object:
        async with boot(config, tracer=tracer) as machine:
            dump = None
            if proc_dir is not None:
                dump = getattr(getattr(machine, "proc", None), "dump", None)
                if not callable(dump):
                    raise NotAvailable(
                        "not available yet: this machine has no /proc views to dump "
                        "(Machine.proc.dump)"
                    )
            result = await function(machine)
            if dump is not None and proc_dir is not None:
                # Blocking file I/O inside the run is harmless here: virtual time stands
                # still while the host writes, and nothing else is waiting on the host.
                _dump_proc(dump, Path(proc_dir))
        return result

    try:
        raw = run(main, seed=config.seed)
    finally:
        if tracer is not None and trace_path is not None:
            tracer.write(trace_path)
    if not isinstance(raw, Mapping):
        raise InvalidScenario(
            f"scenario {scenario.name!r} returned {type(raw).__name__}, expected a dict"
        )
    result = to_jsonable(raw, "result")
    assert isinstance(result, dict)
    if plot_path is not None and scenario.plot is not None:
        scenario.plot(result, Path(plot_path))
    return result


def _dump_proc(dump: Callable[[Path], object], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    dump(directory)


def to_jsonable(value: object, where: str = "value") -> Any:
    """``value`` as plain JSON types: numpy scalars and arrays and tuples converted.

    Raises:
        InvalidScenario: a value JSON cannot hold (an object, a NaN, a non-string key),
            naming where it is (``result['ram']['reads']``).
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        if not math.isfinite(number):
            raise InvalidScenario(f"{where} is {number}, which JSON cannot hold")
        return number
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidScenario(f"{where} has a key {key!r}: JSON keys are strings")
            out[key] = to_jsonable(item, f"{where}[{key!r}]")
        return out
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return [to_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise InvalidScenario(
        f"{where} is a {type(value).__name__} ({value!r:.60}), which JSON cannot hold"
    )
