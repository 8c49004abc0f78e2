"""Booting, stats, shutdown, and the public namespace."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import trio

import hwsim


def test_a_machine_boots_and_shuts_down_under_hwsim_run() -> None:
    async def main() -> tuple[int, list[str]]:
        async with hwsim.boot(hwsim.MachineConfig(cpus=3)) as m:
            names = sorted(m.stats())
            await m.cpus[2].store(await m.kernel.kmalloc(8), b"z")
            return m.now, names

    now, names = hwsim.run(main)
    assert {"cpu0", "cpu1", "cpu2", "ram", "buddy", "tlb2", "l1d2", "l2", "fault"} <= set(names)
    assert now > 0


def test_boot_outside_the_cycle_clock_says_what_to_do_instead() -> None:
    async def main() -> None:
        async with hwsim.boot():
            pass

    with pytest.raises(RuntimeError, match=r"hwsim\.run"):
        trio.run(main)


@pytest.mark.hwsim
async def test_boot_rejects_something_that_is_not_a_config() -> None:
    with pytest.raises(TypeError, match="MachineConfig"):
        async with hwsim.boot({"ram": "64MiB"}):  # type: ignore[arg-type]
            pass


@pytest.mark.hwsim
async def test_an_error_in_the_body_comes_out_as_itself() -> None:
    with pytest.raises(KeyError, match="mine"):
        async with hwsim.boot():
            raise KeyError("mine")


@pytest.mark.hwsim
async def test_leaving_the_block_stops_every_actor() -> None:
    async with hwsim.boot() as m:
        pass
    with pytest.raises(hwsim.ActorCrashed, match="not running"):
        await m.cpus[0].load(0, 1)


@pytest.mark.machine(ram="16MiB", cpus=4, seed=9)
async def test_the_machine_marker_configures_the_fixture(machine: hwsim.Machine) -> None:
    assert (machine.config.ram, machine.config.cpus, machine.config.seed) == (16 << 20, 4, 9)
    assert [cpu.name for cpu in machine.cpus] == ["cpu0", "cpu1", "cpu2", "cpu3"]


async def test_every_test_gets_a_seed_derived_from_its_id(
    machine: hwsim.Machine, hwsim_seed: int, request: pytest.FixtureRequest
) -> None:
    from hwsim.testing import seed_for

    assert hwsim_seed == seed_for(request.node.nodeid)
    assert machine.config.seed == hwsim_seed


def test_a_64_gib_machine_boots_without_allocating_its_memory() -> None:
    # RSS is measured in a fresh process; no time is asserted (speed lives in benchmarks/).
    code = (
        "import resource, hwsim\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "async def main():\n"
        "    async with hwsim.boot(hwsim.MachineConfig(ram='64GiB')) as m:\n"
        "        top = m.layout.phys_to_virt((64 << 30) - 8)\n"
        "        await m.cpus[0].store(top, b'top')\n"
        "        return await m.cpus[0].load(top, 3), m.ram.model.pages_touched\n"
        "print(hwsim.run(main), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split(")")
    data, pages = out[0].split(", ")
    assert data == "(b'top'"
    # The page written, plus the kernel page tables (direct map in 2 MiB pages, vmalloc's
    # preallocated tables), which live in simulated RAM: a few hundred of 16 M pages.
    assert 1 < int(pages) < 500
    assert int(out[1]) < 100 * 1024  # KiB: far below 64 GiB


def test_the_public_namespace_only_re_exports_each_name_once() -> None:
    source = Path(hwsim.__file__).read_text()
    tree = ast.parse(source)
    exported: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                assert alias.asname == alias.name
                exported.append(alias.asname or alias.name)
        elif isinstance(node, ast.Assign):
            assert [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__version__"]
        elif not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
            raise AssertionError(f"hwsim/__init__.py should only re-export, found {ast.dump(node)}")
    assert len(exported) == len(set(exported))
    for name in exported:
        assert getattr(hwsim, name) is not None


@pytest.mark.parametrize(
    "name",
    [
        "MachineConfig",
        "boot",
        "run",
        "Machine",
        "HwsimError",
        "ConfigError",
        "OutOfMemory",
        "InvalidFree",
        "DoubleFree",
        "DmaMappingError",
        "DmaFault",
        "SegmentationFault",
        "Deadlock",
    ],
)
def test_the_contracts_names_exist(name: str) -> None:
    assert hasattr(hwsim, name)
    if name.endswith(("Error", "Memory", "Free", "Fault", "Deadlock")):
        assert issubclass(getattr(hwsim, name), hwsim.HwsimError)


def test_a_finished_machine_is_freed_without_waiting_for_the_garbage_collector() -> None:
    import gc
    import weakref

    refs: list[weakref.ref[object]] = []

    async def main() -> None:
        async with hwsim.boot(hwsim.MachineConfig(ram="64MiB")) as m:
            await m.kernel.kmalloc(100)
            await m.cpus[0].store(m.layout.phys_to_virt(0x100000), b"x" * 4096)
            refs.extend(weakref.ref(o) for o in (m, m.ram.model, m.buddy.model, m.slab.model))

    enabled = gc.isenabled()
    gc.disable()
    try:
        hwsim.run(main)
        assert [r() is None for r in refs] == [True] * 4  # no reference cycle holds them
    finally:
        if enabled:
            gc.enable()


@pytest.mark.machine(ram="32MiB", cpus=1)
async def test_the_kernel_fixture_is_the_machines_kernel(
    kernel: hwsim.Kernel, machine: hwsim.Machine
) -> None:
    assert kernel is machine.kernel
    addr = await kernel.kmalloc(64)
    assert await kernel.ksize(addr) == 64


async def test_a_test_asking_only_for_the_kernel_runs_on_a_booted_machine(
    kernel: hwsim.Kernel,
) -> None:
    pfn = await kernel.alloc_pages(1)
    assert pfn % 2 == 0
    assert hwsim.current_cycle() > 0


@pytest.mark.parametrize(("pae", "levels", "large"), [(False, 2, "4M"), (True, 3, "2M")])
def test_an_i386_machine_boots_with_2_level_or_pae_page_tables(
    pae: bool, levels: int, large: str
) -> None:
    async def main() -> tuple[int, str]:
        config = hwsim.MachineConfig(arch="i386", ram="1GiB" if not pae else "6GiB", pae=pae)
        async with hwsim.boot(config) as m:
            addr = await m.kernel.vmalloc(4096)
            walk = m.pagetable.walk(addr)
            assert walk.pfn == await m.kernel.vmalloc_to_pfn(addr)
            meminfo = m.proc.read("meminfo")
            return len(walk.steps), next(
                line
                for line in meminfo.splitlines()
                if line.startswith("DirectMap") and "4k" not in line
            )

    steps, line = hwsim.run(main)
    assert steps == levels
    assert line.startswith(f"DirectMap{large}:")


@pytest.mark.hwsim
async def test_boot_rejects_a_tracer_that_is_not_a_tracer() -> None:
    with pytest.raises(TypeError, match=r"hwsim\.Tracer"):
        async with hwsim.boot(hwsim.MachineConfig(), tracer="trace.json"):  # type: ignore[arg-type]
            pass


@pytest.mark.machine(cpus=2)
async def test_wbinvd_and_flush_tlb_all_leave_every_cache_and_tlb_cold(
    machine: hwsim.Machine,
) -> None:
    buf = await machine.kernel.kmalloc(64)
    for cpu in machine.cpus:
        await cpu.store(buf + 8 * cpu.index, b"x")
    assert machine.flush_tlb_all() == 2  # one direct-map entry per CPU
    assert machine.wbinvd() >= 1  # write-backs, L1s and L2 together
    assert machine.wbinvd() == 0  # nothing dirty (nor cached) is left
    assert machine.cpus[0].peek(buf, 9) == b"x" + bytes(7) + b"x"  # written back to RAM
    before = machine.stats()
    await machine.cpus[0].load(buf, 8)
    after = machine.stats()
    assert after["tlb0"]["walks"] - before["tlb0"]["walks"] == 1
    assert after["l2"]["load_misses"] - before["l2"]["load_misses"] == 4  # 3 entries + data


def test_a_cache_level_that_is_not_a_cache_config_is_a_config_error() -> None:
    with pytest.raises(hwsim.ConfigError, match=r"caches\.l1d: must be a CacheConfig"):
        hwsim.CachesConfig(l1d=None)  # type: ignore[arg-type]
    with pytest.raises(hwsim.ConfigError, match=r"caches\.l2: must be a CacheConfig or None"):
        hwsim.CachesConfig(l2="x")  # type: ignore[arg-type]
    assert hwsim.CachesConfig(l2=None).l2 is None


@pytest.mark.machine(cpus=1)
async def test_plug_and_unplug_refuse_what_they_cannot_take(machine: hwsim.Machine) -> None:
    class Mute(hwsim.Actor):
        pass

    with pytest.raises(TypeError, match="statistics"):
        machine.plug(Mute("mute"))
    with pytest.raises(ValueError, match="was not plugged"):
        machine.unplug(machine.ram)
    assert "mute" not in machine.stats()
