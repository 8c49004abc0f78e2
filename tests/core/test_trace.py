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
    buf = await machine.kernel.kmalloc(64)
    first = len(hwsim_tracer.records)
    await machine.cpus[0].store(buf, b"xy")
    await machine.cpus[0].load(buf, 2)
    records = sorted(hwsim_tracer.records, key=lambda r: r.seq)[first:]
    kinds = [(r.sender, r.receiver, r.kind) for r in records]
    test_task = kinds[0][0]
    assert kinds == [
        (test_task, "cpu0", "Store"),
        ("cpu0", "mmu0", "Translate"),
        ("cpu0", "l1d0", "CacheStore"),
        (test_task, "cpu0", "Load"),
        ("cpu0", "mmu0", "Translate"),
        ("cpu0", "l1d0", "CacheLoad"),
    ]
    store, translate, write, load, translate2, read = records
    assert read.done == load.done
    assert store.sent == translate.sent
    assert translate.done == write.sent  # the line is stored once translated
    assert store.done == write.done
    assert load.sent == store.done
    lat = machine.config.latency
    assert load.done - load.sent == lat.tlb + lat.l1  # a TLB hit, then an L1 hit
    assert translate2.done - translate2.sent == lat.tlb


@pytest.mark.machine(cpus=1)
async def test_a_refused_request_is_traced_as_refused(
    machine: hwsim.Machine, hwsim_tracer: hwsim.Tracer
) -> None:
    with pytest.raises(hwsim.SegmentationFault):
        await machine.cpus[0].load(0x1000, 1)
    records = sorted(hwsim_tracer.records, key=lambda r: r.seq)
    assert [(r.receiver, r.error) for r in records] == [
        ("cpu0", "refused"),  # the access ends in the fault
        ("mmu0", "refused"),  # the translation raised #PF
        ("fault", None),  # the kernel's handler answered with the error to raise
    ]


@pytest.mark.machine(cpus=2)
async def test_the_chrome_export_has_a_track_per_actor_and_paired_flows(
    machine: hwsim.Machine, hwsim_tracer: hwsim.Tracer, tmp_path: Path
) -> None:
    buf = await machine.kernel.kmalloc(64)
    await machine.cpus[0].store(buf, b"a")
    await machine.cpus[1].load(buf, 1)
    path = tmp_path / "trace.json"
    hwsim_tracer.counter("l1d0", machine.now, machine.stats()["l1d0"])
    hwsim_tracer.write(path)
    doc = json.loads(path.read_text())
    events = doc["traceEvents"]
    names = {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert {"cpu0", "cpu1", "mmu0", "mmu1", "l1d0", "l1d1", "slab"} <= names
    starts = sorted(e["id"] for e in events if e["ph"] == "s")
    finishes = sorted(e["id"] for e in events if e["ph"] == "f")
    # kmalloc, then Store/Translate/CacheStore and Load/Translate/CacheLoad: 7 messages,
    # a request and a reply arrow each.
    assert starts == finishes and len(starts) == 2 * 7 == 2 * len(hwsim_tracer.records)
    slices = [e for e in events if e["ph"] == "X"]
    assert all(e["dur"] >= 0 and isinstance(e["ts"], int) for e in slices)
    counters = [e for e in events if e["ph"] == "C"]
    assert counters and counters[0]["args"]["stores"] == 1


@pytest.mark.machine(cpus=1)
async def test_tracing_is_off_unless_asked_for(machine: hwsim.Machine) -> None:
    assert machine.tracer is None
    assert all(unit.tracer is None for unit in machine.units)
