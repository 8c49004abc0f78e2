"""Tracing: every message recorded; Chrome trace-event export; off by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import hwsim


@pytest.mark.machine(cpus=1)
async def test_every_message_is_recorded_with_sender_receiver_and_cycles(
    machine: hwsim.Machine, hwsim_tracer: hwsim.Tracer
) -> None:
    await machine.cpus[0].store(0x100, b"xy")
    await machine.cpus[0].load(0x100, 2)
    records = hwsim_tracer.records
    kinds = [(r.sender, r.receiver, r.kind) for r in sorted(records, key=lambda r: r.seq)]
    test_task = kinds[0][0]
    assert kinds == [
        (test_task, "cpu0", "Store"),
        ("cpu0", "ram", "WritePhys"),
        (test_task, "cpu0", "Load"),
        ("cpu0", "ram", "ReadPhys"),
    ]
    store, write, load, read = sorted(records, key=lambda r: r.seq)
    assert store.sent == write.sent == 0
    assert store.done == write.done == 101
    assert load.sent == read.sent == 101
    assert load.done == 202


@pytest.mark.machine(cpus=1)
async def test_a_refused_request_is_traced_as_refused(
    machine: hwsim.Machine, hwsim_tracer: hwsim.Tracer
) -> None:
    with pytest.raises(hwsim.SegmentationFault):
        await machine.cpus[0].load(machine.config.ram, 1)
    assert [r.error for r in hwsim_tracer.records] == ["refused", "refused"]


@pytest.mark.machine(cpus=2)
async def test_the_chrome_export_has_a_track_per_actor_and_paired_flows(
    machine: hwsim.Machine, hwsim_tracer: hwsim.Tracer, tmp_path: Path
) -> None:
    await machine.cpus[0].store(0x100, b"a")
    await machine.cpus[1].load(0x100, 1)
    path = tmp_path / "trace.json"
    hwsim_tracer.counter("ram", machine.now, machine.stats()["ram"])
    hwsim_tracer.write(path)
    doc = json.loads(path.read_text())
    events = doc["traceEvents"]
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"cpu0", "cpu1", "ram"} <= names
    starts = sorted(e["id"] for e in events if e["ph"] == "s")
    finishes = sorted(e["id"] for e in events if e["ph"] == "f")
    assert starts == finishes and len(starts) == 8  # request + reply arrow per message
    slices = [e for e in events if e["ph"] == "X"]
    assert all(e["dur"] >= 0 and isinstance(e["ts"], int) for e in slices)
    counters = [e for e in events if e["ph"] == "C"]
    assert counters and counters[0]["args"]["writes"] == 1


@pytest.mark.machine(cpus=1)
async def test_tracing_is_off_unless_asked_for(machine: hwsim.Machine) -> None:
    assert machine.tracer is None
    assert all(unit.tracer is None for unit in machine.units)
