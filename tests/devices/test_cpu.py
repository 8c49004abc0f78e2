"""The CPU unit: loads/stores at physical addresses, batches, atomic twins."""

from __future__ import annotations

import numpy as np
import pytest
import trio

import hwsim


@pytest.mark.machine(cpus=1)
async def test_a_load_returns_what_a_store_wrote_and_time_advances_by_the_latency(
    machine: hwsim.Machine,
) -> None:
    cpu = machine.cpus[0]
    await cpu.store(0x2000, b"hello")
    after_store = machine.now
    assert await cpu.load(0x2000, 5) == b"hello"
    lat = machine.config.latency
    assert after_store == lat.ram + 1
    assert machine.now - after_store == lat.ram + 1
    assert cpu.statistics().cycles == machine.now


@pytest.mark.machine(cpus=1)
async def test_an_access_beyond_ram_raises_and_the_machine_keeps_running(
    machine: hwsim.Machine,
) -> None:
    cpu = machine.cpus[0]
    with pytest.raises(hwsim.SegmentationFault) as info:
        await cpu.load(machine.config.ram - 2, 4)
    assert info.value.address == machine.config.ram
    assert cpu.statistics().loads == 0
    await cpu.store(0, b"ok")
    assert await cpu.load(0, 2) == b"ok"


@pytest.mark.parametrize(
    ("args", "error"),
    [((0, 0), ValueError), ((0, -4), ValueError), ((0.5, 4), TypeError), ((0, "4"), TypeError)],
)
@pytest.mark.machine(cpus=1)
async def test_bad_load_arguments_raise_clear_errors(
    machine: hwsim.Machine, args: tuple[object, object], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await machine.cpus[0].load(*args)  # type: ignore[arg-type]


@pytest.mark.machine(cpus=1)
async def test_storing_nothing_or_not_bytes_is_refused(machine: hwsim.Machine) -> None:
    with pytest.raises(ValueError, match="zero bytes"):
        await machine.cpus[0].store(0, b"")
    with pytest.raises(TypeError, match="bytes-like"):
        await machine.cpus[0].store(0, "text")  # type: ignore[arg-type]


@pytest.mark.machine(cpus=1)
async def test_a_batched_trace_costs_what_the_same_accesses_cost_one_by_one(
    machine: hwsim.Machine,
) -> None:
    cpu = machine.cpus[0]
    addrs = np.arange(0, 64 * 64, 64)
    start = machine.now
    for addr in addrs[:32]:
        await cpu.load(int(addr), 8)
    one_by_one = machine.now - start
    result = await cpu.access(addrs[32:], 8)
    assert result.cycles == one_by_one
    assert machine.now == result.done
    assert result.latencies.shape == (32,)
    assert result.summary()["accesses"] == 32


@pytest.mark.machine(cpus=1)
async def test_atomic_mode_gives_the_same_data_counts_and_cycles_as_timing_mode(
    machine: hwsim.Machine,
) -> None:
    cpu = machine.cpus[0]
    rng = np.random.default_rng(5)
    ops = [
        (int(a) * 8, bool(w))
        for a, w in zip(rng.integers(0, 4096, 200), rng.random(200) < 0.4, strict=True)
    ]
    timing_data = []
    for addr, write in ops:
        if write:
            await cpu.store(addr, addr.to_bytes(8, "little"))
        else:
            timing_data.append(await cpu.load(addr, 8))
    timing = (cpu.statistics(), machine.ram.statistics())
    timing_elapsed = machine.now

    async with hwsim.boot(machine.config) as other:
        cpu2 = other.cpus[0]
        atomic_data = []
        for addr, write in ops:
            if write:
                cpu2.store_nowait(addr, addr.to_bytes(8, "little"))
            else:
                atomic_data.append(cpu2.load_nowait(addr, 8))
        assert other.now == timing_elapsed  # the clock moved only during the timing half
        assert atomic_data == timing_data
        assert (cpu2.statistics(), other.ram.statistics()) == timing
        assert cpu2.cycle == 2 * timing_elapsed  # its own clock ran the same span again


@pytest.mark.machine(cpus=2)
async def test_two_cpus_streaming_at_once_queue_for_the_memory_channel(
    machine: hwsim.Machine,
) -> None:
    addrs = np.arange(0, 1 << 16, 64)
    alone = (await machine.cpus[0].access(addrs, 64)).cycles
    results: list[int] = []

    async def stream(i: int) -> None:
        results.append((await machine.cpus[i].access(addrs, 64)).cycles)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream, 0)
        nursery.start_soon(stream, 1)
    assert max(results) > alone


@pytest.mark.machine(cpus=1)
async def test_batched_arguments_are_validated(machine: hwsim.Machine) -> None:
    cpu = machine.cpus[0]
    with pytest.raises(TypeError, match="1-D array of integer"):
        await cpu.access(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(TypeError, match="1-D array of integer"):
        await cpu.access([0.5, 1.5])
    with pytest.raises(ValueError, match="positive"):
        await cpu.access([0, 64], sizes=[8, 0])
    with pytest.raises(hwsim.SegmentationFault):
        await cpu.access([0, machine.config.ram])
    assert cpu.statistics().loads == 0


@pytest.mark.machine(cpus=1, quantum=10_000)
async def test_with_a_quantum_a_cpu_runs_ahead_of_virtual_time_and_syncs_when_it_is_used_up(
    machine: hwsim.Machine,
) -> None:
    cpu = machine.cpus[0]
    for i in range(50):  # 50 loads of ~101 cycles: 5050 cycles, inside one quantum
        await cpu.load(i * 64, 8)
    assert machine.now == 0
    assert cpu.cycle == 50 * 101
    for i in range(100):  # crossing the quantum makes virtual time catch up
        await cpu.load(i * 64, 8)
    assert cpu.cycle == 150 * 101
    assert 0 < machine.now <= cpu.cycle
    assert cpu.statistics().cycles == 150 * 101  # the same cycles as with quantum 0
