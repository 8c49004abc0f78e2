"""The ``hwsim`` command: list the built-in scenarios and run one.

::

    hwsim list
    hwsim run memory_latency --seed 3 --json result.json --trace trace.json
    hwsim run ./my_study.py

Exit status: 0 on success, 1 when the scenario raised (or returned something that is not a
JSON-able dict), 2 for a usage error: bad options, an unknown scenario, a file that is not a
scenario, or an option the machine or scenario does not support yet.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from . import __version__
from .scenario import (
    InvalidScenario,
    NotAvailable,
    Scenario,
    ScenarioNotFound,
    list_scenarios,
    load_scenario,
    machine_config,
    run_scenario,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _seed(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a seed is a non-negative integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hwsim",
        description="Memory hardware and the Linux memory allocators, simulated as actors.",
    )
    parser.add_argument("--version", action="version", version=f"hwsim {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    commands.add_parser("list", help="list the built-in scenarios")

    run = commands.add_parser(
        "run",
        help="run a scenario and print its result",
        description="Run a scenario (a name from `hwsim list` or a path to a .py file) and "
        "print its result as tables.",
    )
    run.add_argument("scenario", metavar="SCENARIO", help="a name from `hwsim list` or a path")
    run.add_argument(
        "--seed", type=_seed, metavar="N", help="seed for the machine and the scheduler"
    )
    run.add_argument("--json", type=Path, metavar="FILE", help="write the result as JSON")
    run.add_argument(
        "--trace",
        type=Path,
        metavar="FILE",
        help="record every message; write a Chrome trace (open at https://ui.perfetto.dev)",
    )
    run.add_argument(
        "--proc", type=Path, metavar="DIR", help="dump the machine's /proc files into DIR"
    )
    run.add_argument("--plot", type=Path, metavar="FILE", help="plot the result into FILE")
    run.add_argument(
        "--traceback", action="store_true", help="show the full traceback when it fails"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``hwsim`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 done, 1 the scenario failed, 2 a usage error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        # argparse exits for --help, --version and bad options; hand the status back
        # instead, so that main() can be called in-process.
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    if args.command == "list":
        return _list()
    if args.command == "run":
        return _run(args)
    parser.print_help(sys.stderr)
    return EXIT_USAGE


# ---------------------------------------------------------------------- hwsim list


def _console() -> Console:
    # Piped into a file or another program, a table is not squeezed to 80 columns (rich's
    # default there): truncated column names would defeat the point.
    console = Console(file=sys.stdout)
    if not console.is_terminal:
        console = Console(file=sys.stdout, width=200)
    return console


def _list() -> int:
    scenarios = list_scenarios()
    out = _console()
    if not scenarios:
        print("no scenarios found", file=sys.stderr)
        return EXIT_OK
    table = Table(title="Scenarios (hwsim run NAME)", title_justify="left")
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("what it shows")
    for name, info in scenarios.items():
        table.add_row(Text(name), Text(info.summary))
    out.print(table)
    return EXIT_OK


# ---------------------------------------------------------------------- hwsim run


def _error(message: str) -> None:
    print(f"hwsim: error: {message}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    try:
        scenario = load_scenario(args.scenario)
    except ScenarioNotFound as exc:
        _error(str(exc))
        if exc.known:
            print("known scenarios:", file=sys.stderr)
            for name in exc.known:
                print(f"  {name}", file=sys.stderr)
        else:
            print("no scenarios are known (see HWSIM_SCENARIOS)", file=sys.stderr)
        return EXIT_USAGE
    except InvalidScenario as exc:
        _error(str(exc))
        return EXIT_USAGE
    except Exception as exc:
        return _failed(args, args.scenario, exc)

    try:
        result = run_scenario(
            scenario,
            seed=args.seed,
            trace_path=args.trace,
            proc_dir=args.proc,
            plot_path=args.plot,
        )
    except NotAvailable as exc:
        _error(str(exc))
        return EXIT_USAGE
    except Exception as exc:
        status = _failed(args, scenario.name, exc)
        if args.trace is not None and args.trace.exists():
            print(f"the trace up to the failure is in {args.trace}", file=sys.stderr)
        return status

    _print_result(scenario, args.seed, result)
    if args.trace is not None:
        print(f"wrote trace to {args.trace}", file=sys.stderr)
    if args.json is not None:
        try:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        except OSError as exc:
            _error(f"cannot write {args.json}: {exc}")
            return EXIT_FAILED
        print(f"wrote result to {args.json}", file=sys.stderr)
    if args.proc is not None:
        print(f"wrote /proc files to {args.proc}", file=sys.stderr)
    if args.plot is not None:
        print(f"wrote plot to {args.plot}", file=sys.stderr)
    return EXIT_OK


def _failed(args: argparse.Namespace, name: str, exc: BaseException) -> int:
    if args.traceback:
        traceback.print_exception(exc, file=sys.stderr)
    _error(f"scenario {name} failed: {type(exc).__name__}: {exc}")
    for note in getattr(exc, "__notes__", ()):
        print(f"  {note}", file=sys.stderr)
    if not args.traceback:
        print("(run with --traceback to see where)", file=sys.stderr)
    return EXIT_FAILED


# ---------------------------------------------------------------------- result tables


def _print_result(scenario: Scenario, seed: int | None, result: Mapping[str, Any]) -> None:
    out = _console()
    config = machine_config(scenario, seed)
    out.print(Text.assemble((scenario.name, "bold"), f" (seed {config.seed}): {scenario.summary}"))
    for table in result_tables(result, title=scenario.name):
        out.print(table)


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


def _is_rows(value: object) -> bool:
    return (
        isinstance(value, list) and bool(value) and all(isinstance(row, Mapping) for row in value)
    )


def format_value(value: object) -> str:
    """A cell's text: thousands separators for ints, a few significant digits for floats."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        # About four significant digits, at least one decimal so that it reads as a float.
        if value == 0 or not math.isfinite(value):
            return f"{value:.1f}"
        decimals = min(max(1, 3 - math.floor(math.log10(abs(value)))), 9)
        return f"{value:,.{decimals}f}"
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(_is_scalar(item) for item in value):
        return ", ".join(format_value(item) for item in value)
    return json.dumps(value)


def _justify(values: list[object]) -> JustifyMethod:
    """Numbers line up on the right; anything else reads from the left."""
    numbers = [v for v in values if v is not None]
    if numbers and all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
        return "right"
    return "left"


def result_tables(result: Mapping[str, Any], title: str = "result") -> list[Table]:
    """Tables for a scenario's result.

    A dict's scalar entries (and lists of scalars) make one two-column table; each entry
    that is a list of dicts makes a table with a column per key; each entry that is a dict
    is laid out the same way, recursively, with a dotted title.
    """
    tables: list[Table] = []
    scalars = {k: v for k, v in result.items() if not (isinstance(v, Mapping) or _is_rows(v))}
    if scalars:
        table = _titled_table(title, show_header=False)
        table.add_column("key", style="bold", overflow="fold")
        table.add_column("value", overflow="fold")
        for key, value in scalars.items():
            table.add_row(Text(key), Text(format_value(value), justify=_justify([value])))
        tables.append(table)
    for key, value in result.items():
        if isinstance(value, Mapping):
            tables.extend(result_tables(value, title=f"{title}.{key}"))
        elif _is_rows(value):
            tables.append(_rows_table(value, f"{title}.{key}"))
    return tables


def _titled_table(title: str, *, show_header: bool = True) -> Table:
    # A table at least as wide as its title, so that the title is never wrapped.
    return Table(
        title=Text(title),
        title_justify="left",
        show_header=show_header,
        min_width=len(title),
    )


def _rows_table(rows: list[Mapping[str, Any]], title: str) -> Table:
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    table = _titled_table(title)
    for column in columns:
        justify = _justify([row.get(column) for row in rows])
        table.add_column(Text(column), justify=justify, overflow="fold")
    for row in rows:
        table.add_row(*(Text(format_value(row[c]) if c in row else "") for c in columns))
    return table


if __name__ == "__main__":
    raise SystemExit(main())
