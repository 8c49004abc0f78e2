"""``python -m benchmarks [--quick] [--json FILE] [--only NAME ...]``: run and print the figures.

Always exits 0 when the benchmarks ran: a figure that misses its target is a finding to
report (MISS in the table), not a failure.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from time import perf_counter
from typing import Any

from rich.console import Console

from .access_path import access_path
from .allocators import allocators
from .boot import boot_memory
from .cpu import cpu_access
from .dma import dma
from .harness import Section, Settings
from .report import print_section, print_targets, to_json, write_json
from .runtime import request_reply, tracing

BENCHMARKS: dict[str, Callable[[Settings], Section]] = {
    "request-reply": request_reply,
    "tracing": tracing,
    "boot": boot_memory,
    "cpu": cpu_access,
    "allocators": allocators,
    "access-path": access_path,
    "dma": dma,
}


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        **{name: installed(name) for name in ("hwsim", "trio", "simpy", "numpy")},
    }


def installed(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="hwsim's speed against raw trio and SimPy (see benchmarks/README.md).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small iteration counts (CI: under 30 s)"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the figures here")
    parser.add_argument(
        "--only",
        choices=list(BENCHMARKS),
        action="append",
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings.quick() if args.quick else Settings.full()
    # A pipe (CI's log) gets rich's default 80 columns, too narrow for the labels.
    console = Console(width=None if sys.stdout.isatty() else 120)
    progress = Console(stderr=True)
    env = environment()
    console.print(
        f"hwsim benchmarks, {settings.mode} mode: Python {env['python']}, trio {env['trio']}, "
        f"SimPy {env['simpy']}, {env['cpus']} CPUs\n",
        highlight=False,
    )
    sections: dict[str, Section] = {}
    started = perf_counter()
    for name in [name for name in BENCHMARKS if not args.only or name in args.only]:
        with progress.status(f"running {name} ..."):
            start = perf_counter()
            section = BENCHMARKS[name](settings)
        progress.print(f"[dim]{name}: {perf_counter() - start:.1f} s[/]")
        print_section(console, section)
        sections[name] = section
    print_targets(console, list(sections.values()))
    console.print(f"\ntotal {perf_counter() - started:.1f} s", highlight=False)
    if args.json is not None:
        write_json(args.json, to_json(settings, sections, env))
        console.print(f"figures written to {args.json}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
