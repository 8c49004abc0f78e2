"""Print the sections as rich tables, and write them as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
from rich.console import Console
from rich.table import Table

from .harness import Ratio, Section, Settings


def number(value: float) -> str:
    """A figure with as many digits as are worth reading."""
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def per_second(value: float, unit: str) -> str:
    """``12.5 µs/round trip`` as ``80.0 k/s``; empty for figures that are not per-operation."""
    if not unit.startswith("µs/") or value <= 0:
        return ""
    rate = 1e6 / value
    for factor, prefix in ((1e6, "M"), (1e3, "k")):
        if rate >= factor:
            return f"{rate / factor:.3g} {prefix}/s"
    return f"{rate:.3g} /s"


def verdict(ratio: Ratio) -> str:
    if ratio.passed is None:
        return ""
    return "[bold green]PASS[/]" if ratio.passed else "[bold red]MISS[/]"


def print_section(console: Console, section: Section) -> None:
    figures = Table(title=section.title, title_justify="left", expand=False)
    figures.add_column("measure")
    figures.add_column("median", justify="right")
    figures.add_column("unit")
    figures.add_column("min … max", justify="right")
    figures.add_column("rate", justify="right")
    for fig in section.figures:
        spread = "" if fig.repeats == 1 else f"{number(fig.low)} … {number(fig.high)}"
        figures.add_row(
            fig.label, number(fig.value), fig.unit, spread, per_second(fig.value, fig.unit)
        )
    console.print(figures)
    if section.ratios:
        ratios = Table(show_header=True, expand=False)
        ratios.add_column("ratio")
        ratios.add_column("value", justify="right")
        ratios.add_column("target")
        ratios.add_column("")
        ratios.add_column("of")
        for ratio in section.ratios:
            ratios.add_row(
                ratio.label,
                f"{ratio.value:.3f}x",
                ratio.target,
                verdict(ratio),
                "paired rounds" if ratio.paired else "medians",
            )
        console.print(ratios)
    for note in section.notes:
        console.print(f"  note: {note}", highlight=False)
    console.print()


def print_targets(console: Console, sections: list[Section]) -> None:
    """The ratios that have a target, together (nothing if none was measured)."""
    targeted = [ratio for section in sections for ratio in section.ratios if ratio.below]
    if not targeted:
        return
    table = Table(title="Targets", title_justify="left", expand=False)
    table.add_column("ratio")
    table.add_column("value", justify="right")
    table.add_column("target")
    table.add_column("")
    for ratio in targeted:
        table.add_row(ratio.label, f"{ratio.value:.3f}x", ratio.target, verdict(ratio))
    console.print(table)


def to_json(
    settings: Settings, sections: dict[str, Section], environment: dict[str, Any]
) -> dict[str, Any]:
    """Every figure and ratio as plain JSON data; ``ratios`` repeats them all, flat."""
    return {
        "settings": attrs.asdict(settings),
        "environment": environment,
        "ratios": {
            ratio.key: ratio_json(ratio)
            for section in sections.values()
            for ratio in section.ratios
        },
        "sections": {
            name: {
                "title": section.title,
                "figures": {fig.key: attrs.asdict(fig) for fig in section.figures},
                "ratios": {ratio.key: ratio_json(ratio) for ratio in section.ratios},
                "notes": section.notes,
            }
            for name, section in sections.items()
        },
    }


def ratio_json(ratio: Ratio) -> dict[str, Any]:
    return {**attrs.asdict(ratio), "target": ratio.target, "passed": ratio.passed}


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
