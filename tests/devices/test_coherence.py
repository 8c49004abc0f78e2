"""Coherence: stores seen by every CPU through evictions, MESI's snoops counted and timed,
coherent functional access for the kernel, and DMA that bypasses the caches (or snoops)."""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwsim.config import CacheConfig
from hwsim.devices.cache import CacheModel
from hwsim.devices.coherence import SNOOP_LATENCY, CoherenceStatistics, CoherentHierarchy
from hwsim.devices.ram import RamModel
from hwsim.errors import SegmentationFault

RAM = 1 << 16
L1 = CacheConfig(size=64, ways=2, line=16)  # 2 sets x 2 ways x 16 B
L1_WT = CacheConfig(size=64, ways=2, line=16, write_back=False)
L2 = CacheConfig(size=256, ways=2, line=32)  # 4 sets x 2 ways x 32 B
WINDOW = 512  # addresses the tests use: 32 L1 lines, many more than any cache holds
BYTES = st.binary(min_size=1, max_size=40)
L1_LAT, L2_LAT = 4, 12


def machine(
    cpus: int = 2, *, l2: bool = True, l1: CacheConfig = L1, **kwargs: Any
) -> CoherentHierarchy:
    ram = RamModel(size=RAM)
    below = CacheModel("L2", L2, next_level=None, ram=ram, latency=L2_LAT) if l2 else None
    l1s = [
        CacheModel(f"L1d{i}", l1, next_level=below, ram=ram, latency=L1_LAT) for i in range(cpus)
    ]
    return CoherentHierarchy(l1s, below, ram, **kwargs)


def evict_everything(h: CoherentHierarchy, cpu: int) -> None:
    """Fill ``cpu``'s L1 with lines far from the window (dirty ones, to be written back)."""
    for i in range(8):
        h.store(cpu, 0x8000 + i * 16, b"\xee")


def single_writer(h: CoherentHierarchy) -> None:
    """MESI's invariant: a line dirty in one L1 is in no other L1."""
    for i, l1 in enumerate(h.l1s):
        for ln in l1.resident_lines().tolist():
            if l1.line_state(ln) == 2:
                others = [o.line_state(ln) for j, o in enumerate(h.l1s) if j != i]
                assert not any(others), f"line {ln:#x} dirty in L1d{i}, also in {others}"


# ---------------------------------------------------------------------- stores are seen


@pytest.mark.parametrize("l2", [True, False])
@pytest.mark.parametrize("evict", [False, True])
@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_a_store_on_one_cpu_is_seen_by_a_load_on_every_other(
    order: tuple[int, ...], evict: bool, l2: bool
) -> None:
    h = machine(4, l2=l2)
    for cpu in range(4):
        assert h.load(cpu, 0x40, 4) == bytes(4)  # every L1 holds the line, Shared
    for n, writer in enumerate(order, 1):
        h.store(writer, 0x42, bytes([n, n]))
        if evict:
            evict_everything(h, writer)
        for reader in order:
            assert h.load(reader, 0x40, 4) == bytes([0, 0, n, n])
        single_writer(h)


@pytest.mark.parametrize("l1", [L1, L1_WT], ids=["write-back", "write-through"])
def test_a_store_crossing_lines_is_seen_whole_by_another_cpu(l1: CacheConfig) -> None:
    h = machine(2, l1=l1)
    assert h.load(1, 0x30, 48) == bytes(48)
    h.store(0, 0x38, bytes(range(1, 33)))
    assert h.load(1, 0x30, 48) == bytes(8) + bytes(range(1, 33)) + bytes(8)


def test_an_access_made_directly_on_an_l1_is_coherent_too() -> None:
    h = machine(2)
    h.l1s[0].store(0x80, b"direct")
    assert h.l1s[1].load(0x80, 6) == b"direct"
    assert h.statistics().cache_to_cache == 1


OPS = st.one_of(
    st.tuples(st.just("load"), st.integers(0, 3), st.integers(0, WINDOW - 40), st.integers(1, 40)),
    st.tuples(
        st.just("store"),
        st.integers(0, 3),
        st.integers(0, WINDOW - 40),
        BYTES,
    ),
    st.tuples(
        st.just("write"),
        st.just(0),
        st.integers(0, WINDOW - 40),
        BYTES,
    ),
    st.tuples(st.just("read"), st.just(0), st.integers(0, WINDOW - 40), st.integers(1, 40)),
    st.tuples(
        st.sampled_from(["trace", "timed trace"]),
        st.integers(0, 3),
        st.lists(st.tuples(st.integers(0, WINDOW - 1), st.booleans()), min_size=1, max_size=12),
        st.just(0),
    ),
    st.tuples(st.sampled_from(["flush", "writeback"]), st.just(0), st.just(0), st.just(0)),
)


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(OPS, max_size=60),
    cpus=st.sampled_from([2, 4]),
    l2=st.booleans(),
    l1=st.sampled_from([L1, L1_WT]),
)
def test_per_cpu_loads_and_stores_behave_as_one_memory(
    ops: list[tuple[str, int, Any, Any]], cpus: int, l2: bool, l1: CacheConfig
) -> None:
    h = machine(cpus, l2=l2, l1=l1)
    ref = bytearray(WINDOW)
    at = 0
    for op, cpu, addr, arg in ops:
        cpu %= cpus
        if op == "load":
            data, at = h.timed_load(cpu, addr, arg, at) if cpu & 1 else (h.load(cpu, addr, arg), 0)
            assert data == ref[addr : addr + arg]
        elif op == "store":
            if cpu & 1:
                _, at = h.timed_store(cpu, addr, arg, at)
            else:
                h.store(cpu, addr, arg)
            ref[addr : addr + len(arg)] = arg
        elif op == "write":
            h.write(addr, arg)
            ref[addr : addr + len(arg)] = arg
        elif op == "read":
            assert h.read(addr, arg) == ref[addr : addr + arg]
        elif op == "flush":
            h.flush_all()
            assert h.dma_read(0, WINDOW) == ref
        elif op == "writeback":
            h.writeback_range(0, WINDOW)
            assert h.dma_read(0, WINDOW) == ref
        else:  # a trace moves no data but leaves lines behind, dirty ones too
            lines = np.array([a for a, _ in addr], dtype=np.int64)
            writes = np.array([w for _, w in addr], dtype=np.bool_)
            if op == "trace":
                h.access_lines(cpu, lines, writes)
            else:
                at = h.timed_access_lines(cpu, lines, writes, at)[1]
        single_writer(h)
    assert h.read(0, WINDOW) == ref
    for cpu in range(cpus):
        assert h.load(cpu, 0, WINDOW) == ref


# ---------------------------------------------------------------------- kernel access


def test_a_functional_write_updates_what_every_cpu_then_loads() -> None:
    h = machine(4)
    for cpu in range(4):
        h.load(cpu, 0x100, 32)  # cached everywhere
    h.store(2, 0x104, b"dirty")  # Modified in CPU 2's L1, its neighbours invalid
    h.load(3, 0x110, 4)
    h.write(0x100, b"\xaa" * 6)  # memset by kernel code
    expected = b"\xaa" * 6 + b"rty" + bytes(23)
    assert h.read(0x100, 32) == expected
    for cpu in range(4):
        assert h.load(cpu, 0x100, 32) == expected
    h.flush_all()
    assert h.ram.read(0x100, 32) == expected


def test_a_functional_read_sees_modified_data_that_ram_does_not_have() -> None:
    h = machine(2)
    h.store(1, 0x20, b"new")
    assert h.ram.read(0x20, 3) == bytes(3)
    assert h.read(0x1F, 5) == b"\x00new\x00"


def test_functional_access_costs_no_statistics_and_no_time() -> None:
    h = machine(2)
    h.load(0, 0, 16)
    before = all_statistics(h)
    h.write(0, b"x" * 64)
    h.read(0, 64)
    after = all_statistics(h)
    after[-1] = attrs.evolve(after[-1], pages_touched=before[-1].pages_touched)  # host memory
    assert after == before


def test_the_hierarchy_offers_what_kernel_models_use_of_ram() -> None:
    h = machine(2)
    assert h.size == RAM
    h.write(0x10, bytearray(b"ab"))
    assert h.read(0x10, 2) == b"ab"
    with pytest.raises(SegmentationFault):
        h.check_range(RAM - 1, 2)
    with pytest.raises(SegmentationFault):
        h.write(RAM - 1, b"ab")
    with pytest.raises(TypeError):
        h.write(0, "ab")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- DMA


def test_a_non_coherent_dma_write_leaves_a_cached_copy_stale_until_it_is_invalidated() -> None:
    h = machine(2)
    assert h.load(0, 0x200, 16) == bytes(16)
    h.dma_write(0x200, b"from the device!")
    assert h.load(0, 0x200, 16) == bytes(16)  # the bug dma_sync_single_for_cpu prevents
    h.invalidate_range(0x200, 16)
    assert h.load(0, 0x200, 16) == b"from the device!"


def test_a_coherent_dma_write_is_seen_at_once_and_keeps_the_rest_of_a_dirty_line() -> None:
    h = machine(2)
    h.load(0, 0x200, 16)
    h.store(1, 0x20C, b"cpu!")  # dirty in CPU 1, straddling the end of the DMA buffer
    h.dma_write_coherent(0x200, b"device" * 2 + b"XY")
    assert h.load(0, 0x200, 18) == b"devicedeviceXYu!" + bytes(2)
    assert h.load(1, 0x20C, 4) == b"XYu!"
    assert h.dma_read(0x200, 18) == b"devicedeviceXYu!" + bytes(2)
    assert not any(l1.line_state(0x200 >> 4) == 2 for l1 in h.l1s)  # invalidated, refilled


def test_a_non_coherent_dma_read_misses_dirty_data_until_it_is_written_back() -> None:
    h = machine(2)
    h.store(1, 0x300, b"packet")
    assert h.dma_read(0x300, 6) == bytes(6)  # the bug dma_sync_single_for_device prevents
    assert h.writeback_range(0x300, 6) == 1  # one line (cleaned in the L1, then the L2)
    assert h.dma_read(0x300, 6) == b"packet"


def test_a_coherent_dma_read_sees_modified_data() -> None:
    h = machine(2)
    h.store(1, 0x300, b"packet")
    assert h.dma_read_coherent(0x300, 6) == b"packet"


# ---------------------------------------------------------------------- counts and time


def test_snoops_invalidations_and_cache_to_cache_transfers_are_counted() -> None:
    h = machine(3)
    h.store(0, 0x40, b"a")  # a miss nobody else holds: no snoop
    assert h.statistics() == CoherenceStatistics(0, 0, 0)
    h.load(1, 0x40, 1)  # CPU 0's Modified copy supplies it
    assert h.statistics() == CoherenceStatistics(1, 0, 1)
    h.load(2, 0x40, 1)  # clean copies only: L2 serves it
    assert h.statistics() == CoherenceStatistics(1, 0, 1)
    h.store(1, 0x40, b"b")  # a Shared hit: CPUs 0 and 2 invalidated
    assert h.statistics() == CoherenceStatistics(2, 2, 1)
    h.store(2, 0x40, b"c")  # a miss: CPU 1's Modified copy supplies it, then goes
    assert h.statistics() == CoherenceStatistics(3, 3, 2)
    assert [h.l1s[i].line_state(4) for i in range(3)] == [0, 0, 2]


def test_a_store_to_an_exclusive_line_needs_no_snoop() -> None:
    h = machine(2)
    h.load(0, 0x40, 1)
    h.store(0, 0x40, b"E to M, silently")
    assert h.statistics() == CoherenceStatistics(0, 0, 0)


def test_a_cache_to_cache_load_costs_the_snoop_latency() -> None:
    h = machine(2)
    h.timed_store(0, 0x40, b"x", 0)
    h.timed_load(1, 0x40, 1, 1000)  # warms nothing that matters: a fresh line next
    data, done = h.timed_load(1, 0x40, 1, 2000)
    assert (data, done) == (b"x", 2000 + L1_LAT)  # a hit
    h.timed_store(0, 0x80, b"y", 3000)
    data, done = h.timed_load(1, 0x80, 1, 5000)
    assert (data, done) == (b"y", 5000 + SNOOP_LATENCY + L1_LAT + L2_LAT)


def test_an_invalidating_store_hit_costs_the_snoop_latency() -> None:
    h = machine(2, snoop_latency=7)
    h.load(0, 0x40, 1)
    h.load(1, 0x40, 1)
    assert h.timed_store(0, 0x40, b"x", 100) == (None, 100 + 7 + L1_LAT)
    assert h.timed_store(0, 0x40, b"y", 200) == (None, 200 + L1_LAT)  # Modified now


def random_trace(seed: int, n: int, span: int = WINDOW) -> tuple[Any, Any]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, span, n, dtype=np.int64), rng.random(n) < 0.3


def all_statistics(h: CoherentHierarchy) -> list[Any]:
    levels = [*h.l1s] + ([h.l2] if h.l2 else [])
    return [x.statistics() for x in levels] + [h.statistics(), h.ram.statistics()]


@pytest.mark.parametrize("l2", [True, False])
def test_one_cpu_gives_the_counts_and_latencies_of_a_plain_cache_chain(l2: bool) -> None:
    h = machine(1, l2=l2)
    ram = RamModel(size=RAM)
    below = CacheModel("L2", L2, next_level=None, ram=ram, latency=L2_LAT) if l2 else None
    plain = CacheModel("L1d0", L1, next_level=below, ram=ram, latency=L1_LAT)
    assert h.l1s[0].snoop is None
    lines, writes = random_trace(1, 5000)
    got = h.timed_access_lines(0, lines, writes, 0)
    want = plain.timed_access_lines(lines, writes, 0)
    assert got[1] == want[1] and np.array_equal(got[0], want[0])
    assert np.array_equal(h.access_lines(0, lines, writes), plain.access_lines(lines, writes))
    assert h.l1s[0].statistics() == plain.statistics()
    assert h.ram.statistics() == ram.statistics()
    if below is not None:
        assert h.l2 is not None and h.l2.statistics() == below.statistics()


def test_without_sharing_the_batched_path_matches_the_cpu_alone() -> None:
    h, alone = machine(2), machine(1)
    h.load(1, 0x1000, 64)  # CPU 1 holds lines, none of the trace's
    alone.l2.load(0x1000, 64)  # type: ignore[union-attr]  # the same L2 state
    lines, writes = random_trace(2, 3000)
    got = h.timed_access_lines(0, lines, writes, 0)
    want = alone.timed_access_lines(0, lines, writes, 0)
    assert got[1] == want[1] and np.array_equal(got[0], want[0])
    assert h.l1s[0].statistics() == alone.l1s[0].statistics()
    assert h.statistics() == CoherenceStatistics(0, 0, 0)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    warm=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 127), st.booleans()), max_size=30),
    cpu=st.integers(0, 3),
    timed=st.booleans(),
)
def test_a_batch_with_sharing_matches_the_same_accesses_one_by_one(
    seed: int, warm: list[tuple[int, int, bool]], cpu: int, timed: bool
) -> None:
    batch, single = machine(4), machine(4)
    for h in (batch, single):
        for c, addr, write in warm:
            if write:
                h.store(c, addr, b"w")
            else:
                h.load(c, addr, 1)
    lines, writes = random_trace(seed, 40, span=128)
    if timed:
        latencies, done = batch.timed_access_lines(cpu, lines, writes, 10)
        t = 10
        for i, (addr, write) in enumerate(zip(lines.tolist(), writes.tolist(), strict=True)):
            if write:
                t2 = single.timed_store(cpu, addr, b"w", t)[1]
            else:
                t2 = single.timed_load(cpu, addr, 1, t)[1]
            assert latencies[i] == t2 - t
            t = t2
        assert done == t
    else:
        hits = batch.access_lines(cpu, lines, writes)
        before = single.l1s[cpu].statistics()
        for addr, write in zip(lines.tolist(), writes.tolist(), strict=True):
            if write:
                single.store(cpu, addr, b"w")
            else:
                single.load(cpu, addr, 1)
        after = single.l1s[cpu].statistics()
        assert int(hits.sum()) == (
            after.load_hits + after.store_hits - before.load_hits - before.store_hits
        )
    # the stores in `single` carried data; counts and states do not depend on it
    assert all_statistics(batch)[:-1] == all_statistics(single)[:-1]
    for a, b in zip(batch.l1s, single.l1s, strict=True):
        assert sorted(a.resident_lines().tolist()) == sorted(b.resident_lines().tolist())
        assert [a.line_state(ln) for ln in range(8)] == [b.line_state(ln) for ln in range(8)]


# ---------------------------------------------------------------------- failures


def test_a_bad_cpu_number_is_refused() -> None:
    h = machine(2)
    with pytest.raises(ValueError, match="no CPU 2"):
        h.load(2, 0, 1)
    with pytest.raises(TypeError):
        h.store(True, 0, b"x")


def test_a_malformed_or_out_of_range_trace_changes_nothing() -> None:
    h = machine(2)
    h.store(1, 0, b"x")
    before = all_statistics(h)
    with pytest.raises(TypeError):
        h.access_lines(0, [0, 16], np.array([True, False]))  # type: ignore[arg-type]
    with pytest.raises(SegmentationFault):
        h.access_lines(0, np.array([0, RAM]), np.array([True, False]))
    with pytest.raises(SegmentationFault):
        h.timed_access_lines(0, np.array([0, RAM]), np.array([True, False]), 0)
    assert all_statistics(h) == before
    assert h.l1s[1].line_state(0) == 2


def test_an_l1_cannot_serve_two_hierarchies_or_two_cpus() -> None:
    h = machine(2)
    with pytest.raises(ValueError, match="already kept coherent"):
        CoherentHierarchy(h.l1s, h.l2, h.ram)
    ram = RamModel(size=RAM)
    l1 = CacheModel("L1", L1, next_level=None, ram=ram, latency=1)
    with pytest.raises(ValueError, match="its own L1"):
        CoherentHierarchy([l1, l1], None, ram)
    other = CacheModel("L1x", L2, next_level=None, ram=ram, latency=1)
    with pytest.raises(ValueError, match="lines differ"):
        CoherentHierarchy([l1, other], None, ram)
    with pytest.raises(ValueError, match="not above"):
        CoherentHierarchy([l1], h.l2, ram)


def test_uncached_accesses_are_checked_like_cached_ones() -> None:
    h = machine(1)
    h.map_uncached(0x1000, 4096)
    for size in (0, -4):
        with pytest.raises(ValueError, match="positive"):
            h.timed_load(0, 0x1000, size, 0)
    with pytest.raises(TypeError, match="bytes-like"):
        h.timed_store(0, 0x1000, 5, 0)  # type: ignore[arg-type]
    assert h.ram.statistics() == RamModel(size=RAM).statistics()
    _, done = h.timed_store(0, 0x1000, b"ok", 0)
    assert h.ram.read(0x1000, 2) == b"ok" and done > 0
    with pytest.raises(ValueError, match="overlaps an uncached range"):
        h.map_uncached(0x1800, 4096)
