"""Caches: pycachesim's counts, real data through evictions, write policies, DMA-style
maintenance by address, deterministic replacement, timing, and clean failures."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hwsim
from hwsim.config import CacheConfig
from hwsim.devices.cache import CacheModel, CacheStatistics
from hwsim.devices.ram import RamModel

RAM = 1 << 20
TINY = CacheConfig(size=512, ways=2, line=64)  # 4 sets x 2 ways x 64 B


def hierarchy(
    *configs: CacheConfig, latencies: tuple[int, ...] = (4, 12), **kwargs: Any
) -> tuple[list[CacheModel], RamModel]:
    """L1 first; every level shares one RAM."""
    ram = RamModel(size=RAM)
    levels: list[CacheModel] = []
    below = None
    for i in reversed(range(len(configs))):
        below = CacheModel(
            f"L{i + 1}", configs[i], next_level=below, ram=ram, latency=latencies[i], **kwargs
        )
        levels.insert(0, below)
    return levels, ram


# ---------------------------------------------------------------------- pycachesim


def pycachesim_twin(*configs: CacheConfig) -> tuple[Any, list[Any]]:
    import cachesim  # pycachesim, installed by the test command's bench extra

    below = None
    caches: list[Any] = []
    for i in reversed(range(len(configs))):
        c = configs[i]
        below = cachesim.Cache(
            f"L{i + 1}",
            sets=c.size // (c.ways * c.line),
            ways=c.ways,
            cl_size=c.line,
            replacement_policy=c.replacement.upper(),
            write_back=c.write_back,
            write_allocate=c.write_back,  # pycachesim's write-through never allocates
            load_from=below,
            store_to=below,
        )
        caches.insert(0, below)
    memory = cachesim.MainMemory()
    memory.load_to(caches[-1])
    memory.store_from(caches[-1])
    return cachesim.CacheSimulator(caches[0], memory), caches


def as_pycachesim_counts(level: CacheModel) -> dict[str, int]:
    """Our statistics in pycachesim's terms: it counts a write-allocate fill as a load and
    a load miss, store hits not at all, and write-through stores passed on as evictions."""
    s = level.statistics()
    fills = s.store_misses if level.config.write_back else 0
    lines_stored = s.store_hits + s.store_misses
    passed_on = 0 if level.config.write_back or level.next_level is None else lines_stored
    return {
        "LOAD": s.loads + fills,
        "STORE": s.stores,
        "HIT": s.load_hits,
        "MISS": s.load_misses + fills,
        "EVICT": s.writebacks + passed_on,
    }


def assert_same_counts(levels: list[CacheModel], twins: list[Any]) -> None:
    for ours, theirs in zip(levels, twins, strict=True):
        stats = theirs.stats()
        assert as_pycachesim_counts(ours) == {
            key: stats[f"{key}_count"] for key in ("LOAD", "STORE", "HIT", "MISS", "EVICT")
        }, ours.name


HIERARCHIES = {
    "L1 lru": (CacheConfig(size=1024, ways=2),),
    "L1 fifo": (CacheConfig(size=1024, ways=4, replacement="fifo"),),
    "L1 write-through": (CacheConfig(size=1024, ways=2, write_back=False),),
    "L1+L2 lru": (CacheConfig(size=1024, ways=2), CacheConfig(size=4096, ways=4)),
    "L1+L2 fifo": (
        CacheConfig(size=1024, ways=2, replacement="fifo"),
        CacheConfig(size=4096, ways=4, replacement="fifo"),
    ),
    "L1+L2 longer L2 lines": (
        CacheConfig(size=1024, ways=4),
        CacheConfig(size=8192, ways=2, line=128, replacement="fifo"),
    ),
    "L1 + smaller L2": (CacheConfig(size=1024, ways=2), CacheConfig(size=256, ways=2)),
    "L1 write-through + L2": (
        CacheConfig(size=1024, ways=2, write_back=False),
        CacheConfig(size=4096, ways=4),
    ),
}

accesses = st.lists(
    st.tuples(
        st.booleans(),
        st.integers(0, 16 << 10),
        st.sampled_from([1, 4, 8, 60, 64, 100, 200]),  # 60..200 cross lines
    ),
    max_size=300,
)


@pytest.mark.parametrize("name", HIERARCHIES)
@settings(max_examples=30, deadline=None)
@given(trace=accesses)
def test_counts_per_level_equal_pycachesims_for_random_loads_and_stores(
    name: str, trace: list[tuple[bool, int, int]]
) -> None:
    configs = HIERARCHIES[name]
    levels, _ = hierarchy(*configs, lru_on_store=False)
    simulator, twins = pycachesim_twin(*configs)
    for is_store, addr, size in trace:
        if is_store:
            levels[0].store(addr, bytes(size))
            twins[0].iterstore([addr], length=size)  # iter*: Cache.load parses 32-bit ints
        else:
            levels[0].load(addr, size)
            twins[0].iterload([addr], length=size)
    assert_same_counts(levels, twins)
    levels[0].flush_all()
    simulator.force_write_back()
    assert_same_counts(levels, twins)
    for _, addr, size in trace:  # what the flush left where
        levels[0].load(addr, size)
        twins[0].iterload([addr], length=size)
    assert_same_counts(levels, twins)


@pytest.mark.parametrize("name", HIERARCHIES)
def test_the_trace_path_counts_like_pycachesim_on_long_and_streaming_traces(name: str) -> None:
    configs = HIERARCHIES[name]
    rng = np.random.default_rng(5)
    n = 20_000
    hot = rng.integers(0, 2048, n)
    cold = rng.integers(0, 64 << 10, n)
    stream = np.arange(n) * 8  # 8-byte steps: 8 accesses per line
    addrs = np.concatenate([np.where(rng.random(n) < 0.6, hot, cold), stream])
    writes = rng.random(2 * n) < 0.3
    levels, _ = hierarchy(*configs, lru_on_store=False)
    _, twins = pycachesim_twin(*configs)
    hits = levels[0].access_lines(addrs, writes)
    for addr, write in zip(addrs.tolist(), writes.tolist(), strict=True):
        (twins[0].iterstore if write else twins[0].iterload)([addr])
    assert_same_counts(levels, twins)
    assert 0 < hits.mean() < 1


def test_a_load_across_a_line_is_one_request_and_two_line_lookups_as_in_pycachesim() -> None:
    (l1,), _ = hierarchy(CacheConfig(size=1024, ways=2))
    l1.load(60, 8)
    s = l1.statistics()
    assert (s.loads, s.load_hits, s.load_misses) == (1, 0, 2)


def test_a_store_hit_refreshes_lru_unless_told_to_count_like_pycachesim() -> None:
    one_set = CacheConfig(size=128, ways=2)  # lines 0, 64 and 128 share the only set
    for lru_on_store, survivor in ((True, 0), (False, 64)):
        (l1,), _ = hierarchy(one_set, lru_on_store=lru_on_store)
        l1.load(0, 1)
        l1.load(64, 1)
        l1.store(0, b"x")  # hits
        l1.load(128, 1)  # evicts the least recently used line
        assert l1.contains(survivor) and not l1.contains(64 - survivor)


# ---------------------------------------------------------------------- data


ops = st.lists(
    st.tuples(
        st.sampled_from(["load", "store", "trace", "flush", "clean", "invalidate"]),
        st.integers(0, 4095),
        st.integers(1, 150),
        st.integers(0, 255),
    ),
    max_size=120,
)
DATA_HIERARCHIES = {
    "tiny L1": (TINY,),
    "tiny write-through L1": (CacheConfig(size=512, ways=2, write_back=False),),
    "tiny L1 + L2": (TINY, CacheConfig(size=1024, ways=2, line=128, replacement="fifo")),
    "tiny random L1 + write-through L2": (
        CacheConfig(size=512, ways=2, replacement="random"),
        CacheConfig(size=2048, ways=4, write_back=False),
    ),
}


def run_program(name: str, program: list[tuple[str, int, int, int]]) -> list[CacheModel]:
    """Run the program against a reference bytearray; every load and peek must agree."""
    levels, ram = hierarchy(*DATA_HIERARCHIES[name])
    l1 = levels[0]
    reference = bytearray(RAM)
    for op, addr, size, seed in program:
        if op == "load":
            assert l1.load(addr, size) == reference[addr : addr + size]
        elif op == "store":
            data = random.Random(seed).randbytes(size)
            l1.store(addr, data)
            reference[addr : addr + size] = data
        elif op == "trace":  # moves lines around without data
            rng = np.random.default_rng(seed)
            l1.access_lines(rng.integers(0, 4096, 16), rng.random(16) < 0.5)
        elif op == "flush":
            l1.flush_all()
        elif op == "clean":
            l1.writeback_range(addr, size)
            assert ram.read(addr, size) == reference[addr : addr + size]
        else:  # invalidate loses dirty lines: clean them first, as a DMA sync would
            l1.writeback_range(addr, size)
            l1.invalidate_range(addr, size)
        assert l1.peek(addr, size) == reference[addr : addr + size]
    l1.flush_all()
    assert ram.read(0, 8192) == reference[:8192]
    return levels


@pytest.mark.parametrize("name", DATA_HIERARCHIES)
@settings(max_examples=100, deadline=None)
@given(program=ops)
def test_loads_return_what_stores_wrote_through_evictions_and_write_backs(
    name: str, program: list[tuple[str, int, int, int]]
) -> None:
    run_program(name, program)


@pytest.mark.parametrize("name", DATA_HIERARCHIES)
def test_a_long_random_program_reads_back_every_byte_it_wrote(name: str) -> None:
    rng = random.Random(name)
    kinds = ["load"] * 8 + ["store"] * 8 + ["trace", "flush", "clean", "invalidate"]
    program = [
        (rng.choice(kinds), rng.randrange(4096), rng.randrange(1, 150), rng.randrange(256))
        for _ in range(3000)
    ]
    levels = run_program(name, program)
    assert all(level.statistics().evictions > 300 for level in levels)


def test_write_back_leaves_ram_stale_until_eviction_or_flush() -> None:
    (l1,), ram = hierarchy(TINY)
    l1.store(0x40, b"new!")
    assert ram.read(0x40, 4) == bytes(4)
    for way in range(1, 3):  # two more lines of the same set evict it
        l1.load(0x40 + way * 256, 1)
    assert ram.read(0x40, 4) == b"new!"
    l1.store(0x80, b"more")
    assert ram.read(0x80, 4) == bytes(4)
    assert l1.flush_all() == 1
    assert ram.read(0x80, 4) == b"more"
    assert l1.statistics().writebacks == 2


def test_write_through_never_leaves_ram_stale_and_does_not_allocate_on_a_store() -> None:
    (l1,), ram = hierarchy(CacheConfig(size=512, ways=2, write_back=False))
    l1.store(0x40, b"new!")
    assert ram.read(0x40, 4) == b"new!"
    assert not l1.contains(0x40)
    l1.load(0x40, 4)
    l1.store(0x42, b"XY")  # a hit updates the line and RAM
    assert ram.read(0x40, 4) == l1.load(0x40, 4) == b"neXY"
    assert l1.flush_all() == 0
    assert l1.statistics().writebacks == 0


def test_a_line_not_invalidated_reads_stale_data_after_ram_changed_underneath() -> None:
    levels, ram = hierarchy(TINY, CacheConfig(size=2048, ways=4))
    l1 = levels[0]
    assert l1.load(0x100, 4) == bytes(4)
    ram.write(0x100, b"DMA!")  # a device writes RAM behind the caches' back
    assert l1.load(0x100, 4) == bytes(4)  # stale
    assert l1.invalidate_range(0x100, 4) == 2  # the line in L1 and in L2
    assert not l1.contains(0x100) and not levels[1].contains(0x100)
    assert l1.load(0x100, 4) == b"DMA!"


def test_writeback_range_cleans_only_the_dirty_lines_in_the_range_down_to_ram() -> None:
    levels, ram = hierarchy(TINY, CacheConfig(size=2048, ways=4))
    l1 = levels[0]
    l1.store(0x3E, b"abcd")  # crosses into the line at 0x40
    l1.store(0x200, b"elsewhere")
    assert l1.writeback_range(0x40, 1) == 2  # line 0x40 in L1, then in L2
    assert ram.read(0x3E, 4) == b"\x00\x00cd"
    assert l1.writeback_range(0x40, 1) == 0  # clean now
    assert ram.read(0x200, 9) == bytes(9)
    assert l1.contains(0x40)


def test_invalidate_range_discards_dirty_data_of_every_line_it_touches() -> None:
    (l1,), ram = hierarchy(TINY)
    l1.store(0x10, b"lost")
    assert l1.invalidate_range(0x3F, 1) == 1  # one byte of the line drops all of it
    assert l1.load(0x10, 4) == bytes(4) == ram.read(0x10, 4)
    assert l1.statistics().writebacks == 0


def test_peek_and_poke_change_no_statistics_and_no_replacement_state() -> None:
    levels, ram = hierarchy(TINY, CacheConfig(size=2048, ways=4))
    l1 = levels[0]
    l1.store(0x40, b"dirty")
    before = [level.statistics() for level in levels]
    assert l1.peek(0x3E, 8) == b"\x00\x00dirty\x00"
    l1.poke(0x42, b"RT")  # in L1's dirty copy and in RAM
    assert ram.read(0x42, 2) == b"RT"
    assert l1.peek(0x40, 5) == b"diRTy"
    assert [level.statistics() for level in levels] == before
    l1.flush_all()
    assert ram.read(0x40, 5) == b"diRTy"


def test_every_fill_is_either_an_eviction_or_a_line_still_resident() -> None:
    (l1,), _ = hierarchy(CacheConfig(size=1024, ways=2, replacement="random"))
    rng = np.random.default_rng(1)
    l1.access_lines(rng.integers(0, 1 << 15, 5000), rng.random(5000) < 0.5)
    s = l1.statistics()
    resident = sum(l1.contains(a) for a in range(0, 1 << 15, 64))
    assert s.load_misses + s.store_misses == s.evictions + resident == s.evictions + 16
    assert s.writebacks <= s.evictions


# ---------------------------------------------------------------------- replacement


def test_random_replacement_is_deterministic_for_a_seed() -> None:
    config = CacheConfig(size=1024, ways=4, replacement="random")
    rng = np.random.default_rng(2)
    addrs, writes = rng.integers(0, 1 << 14, 4000), rng.random(4000) < 0.3

    def run(seed: int) -> tuple[bytes, CacheStatistics]:
        (l1,), _ = hierarchy(config, seed=seed)
        return l1.access_lines(addrs, writes).tobytes(), l1.statistics()

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_the_trace_path_matches_loads_and_stores_made_one_by_one() -> None:
    configs = (CacheConfig(size=1024, ways=4, replacement="random"), CacheConfig(size=4096))
    rng = np.random.default_rng(3)
    addrs, writes = rng.integers(0, 1 << 14, 3000), rng.random(3000) < 0.4
    batched, _ = hierarchy(*configs)
    hits = batched[0].access_lines(addrs, writes)
    single, _ = hierarchy(*configs)
    one_by_one = []
    for addr, write in zip(addrs.tolist(), writes.tolist(), strict=True):
        was_there = single[0].contains(addr)
        single[0].store(addr, b"w") if write else single[0].load(addr, 1)
        one_by_one.append(was_there)
    assert hits.tolist() == one_by_one
    assert [c.statistics() for c in batched] == [c.statistics() for c in single]


# ---------------------------------------------------------------------- timing


def test_latency_is_l1_on_a_hit_plus_l2_on_a_miss_plus_ram_when_both_miss() -> None:
    levels, ram = hierarchy(TINY, CacheConfig(size=2048, ways=4), latencies=(4, 12))
    l1 = levels[0]
    ram_cycles = ram.latency + 64 // ram.bytes_per_cycle  # a line on an idle channel
    _, done = l1.timed_load(0x40, 8, 1000)
    assert done == 1000 + 4 + 12 + ram_cycles
    _, done = l1.timed_load(0x40, 8, 2000)
    assert done == 2000 + 4
    l1.invalidate_range(0, 64 * 8)
    levels[1].load(0x40, 1)  # in L2 only
    _, done = l1.timed_load(0x40, 8, 3000)
    assert done == 3000 + 4 + 12
    assert ram.statistics().reads == 1


def test_a_store_miss_waits_for_the_line_and_a_dirty_victim_is_posted_to_ram() -> None:
    (l1,), ram = hierarchy(CacheConfig(size=128, ways=1), latencies=(4,))
    _, done = l1.timed_store(0x0, b"x", 0)
    assert done == 4 + 104  # read for ownership
    _, done = l1.timed_load(0x80, 1, 1000)  # same set: evicts the dirty line
    assert done == 1000 + 4 + 104  # the write-back does not delay the load...
    assert ram.statistics().writes == 1
    assert ram.read(0, 1) == b"x"
    _, done = l1.timed_load(0x100, 1, 1000 + 4)  # ...but it holds the channel
    assert done > 1000 + 4 + 4 + 104


@pytest.mark.parametrize("write_back", [True, False])
def test_batched_latencies_equal_timed_accesses_made_one_by_one(write_back: bool) -> None:
    configs = (
        CacheConfig(size=512, ways=2, write_back=write_back),
        CacheConfig(size=2048, ways=4, replacement="fifo"),
    )
    rng = np.random.default_rng(4)
    addrs = rng.integers(0, 1 << 14, 2000)
    writes = rng.random(2000) < 0.4
    batched, ram_b = hierarchy(*configs)
    latencies, done = batched[0].timed_access_lines(addrs, writes, 500)
    single, ram_s = hierarchy(*configs)
    t, expected = 500, []
    for addr, write in zip(addrs.tolist(), writes.tolist(), strict=True):
        if write:  # a line-sized store, as the trace path stores lines
            _, finish = single[0].timed_store(addr & ~63, bytes(64), t)
        else:
            _, finish = single[0].timed_load(addr, 1, t)
        expected.append(finish - t)
        t = finish
    assert latencies.tolist() == expected
    assert done == t == 500 + sum(expected)
    assert [c.statistics() for c in batched] == [c.statistics() for c in single]
    assert ram_b.statistics() == ram_s.statistics()
    assert set(expected) > {4, 4 + 12}


def test_timed_writeback_range_completes_when_ram_has_the_lines() -> None:
    (l1,), ram = hierarchy(TINY, latencies=(4,))
    assert l1.timed_writeback_range(0, 4096, 50) == (0, 50)
    l1.store(0x0, b"a")
    l1.store(0x40, b"b")
    count, done = l1.timed_writeback_range(0, 4096, 10_000)
    assert count == 2
    assert done == 10_000 + 2 * 4 + 100  # two 4-cycle transfers back to back, then latency
    assert ram.read(0x40, 1) == b"b"


# ---------------------------------------------------------------------- bad input


def snapshot(levels: list[CacheModel], ram: RamModel) -> object:
    return (
        [c.statistics() for c in levels],
        [[c.contains(a) for a in range(0, 4096, 64)] for c in levels],
        levels[0].peek(0, 4096),
        ram.statistics(),
        ram.calendar.starts.tolist(),
    )


good_lines = np.array([0, 64], dtype=np.int64)
good_writes = np.array([False, True])


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda c: c.load(RAM - 4, 8), hwsim.SegmentationFault, "beyond the end of RAM"),
        (lambda c: c.load(-64, 1), hwsim.SegmentationFault, "beyond the end of RAM"),
        (lambda c: c.load(0, 0), ValueError, "must be positive"),
        (lambda c: c.load("0", 4), TypeError, "is an int"),
        (lambda c: c.store(0, "text"), TypeError, "bytes-like"),
        (lambda c: c.store(0, b""), ValueError, "must be positive"),
        (lambda c: c.store(RAM - 1, b"ab"), hwsim.SegmentationFault, "beyond"),
        (lambda c: c.timed_load(0, 4, -1), ValueError, "cycle must be >= 0"),
        (lambda c: c.timed_store(0, b"x", 1.5), TypeError, "cycle is an int"),
        (lambda c: c.access_lines([0, 64], good_writes), TypeError, "numpy integer"),
        (lambda c: c.access_lines(good_lines, good_lines), TypeError, "numpy bool"),
        (lambda c: c.access_lines(good_lines, good_writes[:1]), ValueError, "equal length"),
        (
            lambda c: c.access_lines(np.array([0, RAM]), good_writes),
            hwsim.SegmentationFault,
            "beyond",
        ),
        (
            lambda c: c.timed_access_lines(np.array([-1, 0]), good_writes, 0),
            hwsim.SegmentationFault,
            "beyond",
        ),
        (lambda c: c.timed_access_lines(good_lines, good_writes, True), TypeError, "int"),
        (lambda c: c.contains(RAM), hwsim.SegmentationFault, "beyond"),
        (lambda c: c.invalidate_range(0, RAM + 1), hwsim.SegmentationFault, "beyond"),
        (lambda c: c.writeback_range(0, -5), ValueError, "positive"),
        (lambda c: c.timed_writeback_range(0, 64, None), TypeError, "int"),
        (lambda c: c.peek(RAM, 1), hwsim.SegmentationFault, "beyond"),
        (lambda c: c.poke(0, 5), TypeError, "bytes-like"),
    ],
)
def test_bad_input_raises_a_clear_error_and_changes_nothing(
    call: Any, error: type[Exception], match: str
) -> None:
    levels, ram = hierarchy(TINY, CacheConfig(size=2048, ways=4))
    levels[0].store(0x40, b"dirty")
    levels[0].timed_load(0x400, 4, 0)
    before = snapshot(levels, ram)
    with pytest.raises(error, match=match):
        call(levels[0])
    assert snapshot(levels, ram) == before


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"config": "32KiB"}, TypeError, "CacheConfig"),
        ({"latency": -1}, ValueError, "latency must be >= 0"),
        ({"seed": "7"}, TypeError, "seed"),
        ({"ram": RamModel(size=RAM + 32)}, ValueError, "whole number of 64-byte lines"),
        ({"next_level": "L2"}, TypeError, "CacheModel or None"),
        ({"lru_on_store": 1}, TypeError, "True or False"),
    ],
)
def test_a_cache_is_not_built_from_bad_arguments(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    ram = RamModel(size=RAM)
    args: dict[str, Any] = {"config": TINY, "next_level": None, "ram": ram, "latency": 4}
    with pytest.raises(error, match=match):
        CacheModel("L1", **(args | kwargs))


def test_levels_must_share_ram_and_lines_may_only_grow_towards_it() -> None:
    ram = RamModel(size=RAM)
    l2 = CacheModel("L2", CacheConfig(size=4096, line=32), next_level=None, ram=ram, latency=9)
    with pytest.raises(ValueError, match="lines may only grow towards RAM"):
        CacheModel("L1", TINY, next_level=l2, ram=ram, latency=4)
    with pytest.raises(ValueError, match="uses another RAM"):
        CacheModel("L1", TINY, next_level=l2, ram=RamModel(size=RAM), latency=4)


@pytest.mark.parametrize("replacement", ["lru", "fifo", "random"])
@pytest.mark.parametrize("with_l2", [True, False])
def test_batched_runs_of_one_line_and_gaps_cost_what_they_cost_one_by_one(
    replacement: str, with_l2: bool
) -> None:
    # Sequential accesses make runs of one line, which the batch sums up instead of looping.
    configs = (CacheConfig(size=512, ways=2, replacement=replacement),)
    if with_l2:
        configs += (CacheConfig(size=2048, ways=4),)
    rng = np.random.default_rng(11)
    lines = rng.integers(0, 1 << 14, 700) & ~63
    addrs = np.repeat(lines, rng.integers(1, 6, 700)) + rng.integers(0, 8, 1) * 8
    writes = rng.random(len(addrs)) < 0.3
    gaps = rng.integers(0, 3, len(addrs))
    batched, _ = hierarchy(*configs, seed=3)
    latencies, done = batched[0].timed_access_lines(addrs, writes, 500, gaps)
    single, _ = hierarchy(*configs, seed=3)
    t, expected = 500, []
    for addr, write, gap in zip(addrs.tolist(), writes.tolist(), gaps.tolist(), strict=True):
        issue, t = t, t + gap
        if write:
            _, t = single[0].timed_store(addr & ~63, bytes(64), t)
        else:
            _, t = single[0].timed_load(addr, 1, t)
        expected.append(t - issue)
    assert latencies.tolist() == expected
    assert done == t
    assert [c.statistics() for c in batched] == [c.statistics() for c in single]
    # The same lines are dirty: flushing writes back as many.
    assert batched[0].flush_all() == single[0].flush_all()
