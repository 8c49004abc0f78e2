"""Boot time and host memory of a 64 GiB machine, measured in a fresh process.

RAM's storage is sparse (a dict of 4 KiB numpy pages, created on first write), so RAM
itself costs nothing until it is touched; what a bigger machine does cost at boot is the
kernel's state that grows with memory (the buddy allocator's free lists and pageblock map).

The probe runs as ``python -m benchmarks.boot`` so that what earlier benchmarks allocated
does not blur the RSS figures; it prints JSON.

Figures: the RSS the process gains while a 64 GiB machine is up, the RSS each page costs
once a CPU has stored to it (at its direct-map address: TLB, walk, L1, L2, then the caches
flushed to RAM), whether the pages are freed when the run ends, and host seconds
from entering ``hwsim.boot`` to leaving it (boot + shutdown), for 64 GiB and the default
64 MiB, interleaved.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path
from time import perf_counter
from typing import Any

import hwsim
from hwsim.devices.ram import RamModel

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
    async with hwsim.boot(hwsim.MachineConfig(ram=hwsim.parse_size(ram))):
        pass
    return perf_counter() - start


async def touch(ram: str, pages: int, model: list[weakref.ref[RamModel]]) -> dict[str, int]:
    """Boot, store 8 bytes to ``pages`` pages spread over all of RAM; RSS at each step.

    The CPU stores to virtual addresses: each page's address in the direct map, which covers
    all of RAM on x86_64 (``phys_to_virt``). A store lands in the L1 (write-back), and RAM
    gets the page only when the dirty line is written back, so the caches are flushed (as
    ``wbinvd`` would) before RSS is read: every page stored to is then in RAM.

    Leaves a weak reference to the RAM model in ``model``, to see when the pages are freed.
    """
    before = rss_bytes()
    async with hwsim.boot(hwsim.MachineConfig(ram=hwsim.parse_size(ram))) as m:
        booted = rss_bytes()
        stride = (m.config.ram // pages) & ~(hwsim.PAGE_SIZE - 1)
        for i in range(pages):
            phys = i * stride
            # Step over the kernel's page-table pages: a store there would overwrite entries.
            while m.pagetable.is_pagetable_page(phys >> hwsim.PAGE_SHIFT):
                phys += hwsim.PAGE_SIZE
            await m.cpus[0].store(m.layout.phys_to_virt(phys), b"\x01" * 8)
        m.hierarchy.flush_all()
        touched = rss_bytes()
        model.append(weakref.ref(m.ram.model))
    return {"before": before, "booted": booted, "touched": touched}


def pages_alive(model: weakref.ref[RamModel]) -> int:
    ram = model()
    return 0 if ram is None else ram.pages_touched


def probe(boots: int, pages: int) -> dict[str, Any]:
    """Everything the section reports, measured in this process."""
    hwsim.run(boot_and_shutdown, "64MiB")  # first run: lazy imports, trio's first-run setup
    gc.collect()
    baseline = rss_bytes()
    # Memory first, while malloc has no freed memory to hand out again (which would make
    # new pages look cheaper than they are).
    model: list[weakref.ref[RamModel]] = []
    rss = hwsim.run(touch, BIG, pages, model)
    # Whether the machine and its pages are freed when the run ends, or only when the cyclic
    # GC runs (a reference cycle through any of its units would keep them until then).
    ended = pages_alive(model[0])
    gc.collect()
    collected = pages_alive(model[0])
    before_boots = rss_bytes()
    big: list[float] = []
    whole_runs: list[float] = []
    small: list[float] = []
    for i in range(boots):
        if i % 2:  # alternate who goes first: the first of a pair runs a little slower
            small.append(hwsim.run(boot_and_shutdown, "64MiB"))
        start = perf_counter()
        big.append(hwsim.run(boot_and_shutdown, BIG))
        whole_runs.append(perf_counter() - start)
        if not i % 2:
            small.append(hwsim.run(boot_and_shutdown, "64MiB"))
    return {
        "boot_big": big,
        "boot_small": small,
        "run_big": whole_runs,
        "rss_baseline": baseline,
        "rss_booted": rss["booted"] - rss["before"],
        "rss_touched": rss["touched"] - rss["booted"],
        "rss_boots": rss_bytes() - before_boots,
        "pages_ended": ended,
        "pages_collected": collected,
        "pages": pages,
    }


def boot_memory(settings: Settings) -> Section:
    """Figure 5: run :func:`probe` in a fresh interpreter and turn its JSON into a section."""
    root = Path(__file__).resolve().parent.parent
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    )
    command = [
        sys.executable,
        "-m",
        "benchmarks.boot",
        "--boots",
        str(settings.boots),
        "--pages",
        str(settings.touched_pages),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"the boot probe failed:\n{done.stderr}")
    p = json.loads(done.stdout)
    kib = 1 / 1024
    section = Section(
        f"Boot and host memory (a fresh process, {settings.boots} boots of each size)"
    )
    section.figures += [
        Figure.single(
            "rss_base", "process RSS after imports and one boot", p["rss_baseline"] * kib, "KiB"
        ),
        Figure.single(
            "rss_booted", f"RSS growth while a {BIG} machine is up", p["rss_booted"] * kib, "KiB"
        ),
        Figure.single(
            "rss_per_page",
            f"RSS growth per page stored to ({p['pages']:,} pages, cpu.store)",
            p["rss_touched"] * kib / p["pages"],
            "KiB/page",
        ),
        Figure.single(
            "pages_ended", "RAM pages still alive when hwsim.run returns", p["pages_ended"], "pages"
        ),
        Figure.single(
            "pages_collected",
            "RAM pages still alive after gc.collect()",
            p["pages_collected"],
            "pages",
        ),
        Figure.of("boot_64g", f"boot + shutdown, ram={BIG}", p["boot_big"], "ms", 1e3),
        Figure.of("boot_64m", "boot + shutdown, ram=64MiB", p["boot_small"], "ms", 1e3),
        Figure.of(
            "run_64g", f"whole hwsim.run(boot {BIG}), with trio.run", p["run_big"], "ms", 1e3
        ),
        Figure.single(
            "rss_boots",
            f"RSS growth over those {settings.boots * 2} boots (no gc.collect between)",
            p["rss_boots"] * kib,
            "KiB",
        ),
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
