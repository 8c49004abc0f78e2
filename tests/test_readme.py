"""The README's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_readme_usage_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    usage = next(block for block in python_blocks() if "hwsim.run(main" in block)
    exec(compile(usage, str(README), "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out.splitlines()
    said = re.search(r"virtual time: (\d+) cycles", usage)
    assert said is not None
    assert out[0] == said.group(1)  # the README's comment tells the truth
    assert "'walks': 1" in out[1]


def test_the_readme_has_exactly_two_quick_start_commands() -> None:
    text = README.read_text()
    quick_start = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)```", quick_start, flags=re.DOTALL)
    assert len(commands) == 2
    assert all(len(c.strip().splitlines()) == 1 for c in commands)
    assert "hwsim run" in commands[0] and "pytest" in commands[1]
    ci = (README.parent / ".ci" / "run").read_text()
    assert commands[1].strip() in ci


def test_the_readme_kernel_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    example = next(block for block in python_blocks() if "hwsim.run(driver)" in block)
    exec(compile(example, str(README), "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    phys, pfns = out.splitlines()[0].split(" ", 1)
    assert 0 < int(phys, 16) < 64 << 20  # a physical address of the 64 MiB machine
    assert len(eval(pfns)) == 4
    assert "Node 0, zone      DMA " in out


def test_the_readme_dma_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    example = next(block for block in python_blocks() if "hwsim.run(nic_like_driver)" in block)
    exec(compile(example, str(README), "exec"), {"__name__": "readme"})
    data, rejected = capsys.readouterr().out.splitlines()
    assert data.startswith("b'packet!' [(11, 0, ")  # the bytes, and the interrupt on CPU 0
    assert rejected == "dma: rejecting DMA map of vmalloc memory"
