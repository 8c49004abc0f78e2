"""Boot time and host memory of a 64 GiB machine, measured in a fresh process.

RAM is sparse (a dict of 4 KiB numpy pages, created on first write), so a machine's size
should cost nothing until it is touched. The probe runs as ``python -m benchmarks.boot`` so
that what earlier benchmarks allocated does not blur the RSS figures; it prints JSON.

Figures: host seconds from entering ``hwsim.boot`` to leaving it (boot + shutdown, median
over several boots), the same for the default 64 MiB machine for comparison, the RSS the
process gains while a 64 GiB machine is up, and the RSS each page costs once a CPU has
stored to it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from time import perf_counter

import hwsim

from .harness import Figure, Section, Settings

BIG = "64GiB"


def rss_bytes() -> int:
    """The process's resident set size now, from /proc/self/status (Linux only)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line in /proc/self/status")


async def boot_and_shutdown(ram: str) -> float:
    """Host seconds to boot a machine and shut it down again."""
    start = perf_counter()
    async with hwsim.boot(hwsim.MachineConfig(ram=ram)):
        pass
    return perf_counter() - start


async def touch(ram: str, pages: int) -> dict[str, int]:
    """Boot, store 8 bytes to ``pages`` pages spread over all of RAM; RSS at each step."""
    before = rss_bytes()
    async with hwsim.boot(hwsim.MachineConfig(ram=ram)) as m:
        booted = rss_bytes()
        stride = (m.config.ram // pages) & ~(hwsim.PAGE_SIZE - 1)
        for i in range(pages):
            await m.cpus[0].store(i * stride, b"\x01" * 8)
        touched = rss_bytes()
        assert m.ram.model.pages_touched == pages
    return {"before": before, "booted": booted, "touched": touched, "after": rss_bytes()}


def probe(boots: int, pages: int) -> dict[str, float]:
    """Everything the section reports, measured in this process."""
    hwsim.run(boot_and_shutdown, "64MiB")  # first run: lazy imports, trio's first-run setup
    baseline = rss_bytes()
    start = perf_counter()
    big = [hwsim.run(boot_and_shutdown, BIG) for _ in range(boots)]
    whole_run = (perf_counter() - start) / boots
    small = [hwsim.run(boot_and_shutdown, "64MiB") for _ in range(boots)]
    rss = hwsim.run(touch, BIG, pages)
    return {
        "boot_big": statistics.median(big),
        "boot_small": statistics.median(small),
        "run_big": whole_run,
        "rss_baseline": baseline,
        "rss_boots": rss["before"] - baseline,
        "rss_booted": rss["booted"] - rss["before"],
        "rss_touched": rss["touched"] - rss["booted"],
        "rss_after": rss["after"] - rss["before"],
        "pages": pages,
    }


def boot_memory(settings: Settings) -> Section:
    """Figure 5: run :func:`probe` in a fresh interpreter and turn its JSON into a section."""
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    command = [
        sys.executable,
        "-m",
        "benchmarks.boot",
        "--boots",
        str(settings.boots),
        "--pages",
        str(settings.touched_pages),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    p = json.loads(done.stdout)
    kib = 1 / 1024
    section = Section(f"Boot and host memory (fresh process, median of {settings.boots} boots)")
    section.figures += [
        Figure.single("boot_64g", f"boot + shutdown, ram={BIG}", p["boot_big"] * 1e3, "ms"),
        Figure.single("boot_64m", "boot + shutdown, ram=64MiB", p["boot_small"] * 1e3, "ms"),
        Figure.single(
            "run_64g", f"whole hwsim.run(boot {BIG}), incl. trio.run", p["run_big"] * 1e3, "ms"
        ),
        Figure.single("rss_base", "process RSS after imports and one boot", p["rss_baseline"] * kib, "KiB"),
        Figure.single("rss_boots", f"RSS growth over the {settings.boots * 2} boots", p["rss_boots"] * kib, "KiB"),
        Figure.single("rss_booted", f"RSS growth while a {BIG} machine is up", p["rss_booted"] * kib, "KiB"),
        Figure.single(
            "rss_per_page",
            f"RSS growth per page stored to ({p['pages']:,} pages, cpu.store)",
            p["rss_touched"] * kib / p["pages"],
            "KiB/page",
        ),
        Figure.single("rss_after", "RSS still held after shutdown", p["rss_after"] * kib, "KiB"),
    ]
    section.ratio("boot_64g_vs_64m", f"boot {BIG} / boot 64MiB", "boot_64g", "boot_64m")
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--boots", type=int, default=5)
    parser.add_argument("--pages", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(probe(args.boots, args.pages)))


if __name__ == "__main__":
    main()
