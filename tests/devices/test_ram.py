"""RAM: real bytes, sparse storage, latency and bandwidth, clear errors."""

from __future__ import annotations

import bisect
import heapq

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hwsim
from hwsim.devices.ram import BurstPhys, ChannelCalendar, RamModel


def test_untouched_memory_reads_as_zeros_and_costs_no_pages() -> None:
    ram = RamModel(size=64 << 30)
    assert ram.read(123 << 20, 16) == bytes(16)
    assert ram.pages_touched == 0


def test_a_write_across_a_page_boundary_is_read_back_whole() -> None:
    ram = RamModel(size=1 << 20)
    data = bytes(range(256)) * 40
    ram.write(4096 - 100, data)
    assert ram.read(4096 - 100, len(data)) == data
    assert ram.pages_touched == 4


@given(
    writes=st.lists(
        st.tuples(st.integers(0, (1 << 16) - 64), st.binary(min_size=1, max_size=64)),
        max_size=30,
    )
)
def test_ram_behaves_like_a_bytearray(writes: list[tuple[int, bytes]]) -> None:
    ram = RamModel(size=1 << 16)
    reference = bytearray(1 << 16)
    for addr, data in writes:
        ram.write(addr, data)
        reference[addr : addr + len(data)] = data
    assert ram.read(0, 1 << 16) == bytes(reference)


@pytest.mark.parametrize(("addr", "size"), [(1 << 20, 1), ((1 << 20) - 4, 8), (-8, 4)])
def test_an_access_beyond_ram_raises_segmentation_fault_naming_the_address(
    addr: int, size: int
) -> None:
    ram = RamModel(size=1 << 20)
    with pytest.raises(hwsim.SegmentationFault, match="beyond the end of RAM") as info:
        ram.read(addr, size)
    assert info.value.address is not None
    assert f"{info.value.address:#x}" in str(info.value)


@pytest.mark.parametrize(
    ("addr", "size", "error"),
    [(0, 0, ValueError), (0, -1, ValueError), ("0", 4, TypeError), (0, 2.0, TypeError)],
)
def test_bad_arguments_are_refused_without_side_effects(
    addr: object, size: object, error: type[Exception]
) -> None:
    ram = RamModel(size=1 << 20)
    with pytest.raises(error):
        ram.timed_read(addr, size, 0)  # type: ignore[arg-type]
    assert (ram.reads, len(ram.calendar), ram.pages_touched) == (0, 0, 0)


def test_latency_is_fixed_plus_transfer_time_and_the_channel_queues_requests() -> None:
    ram = RamModel(size=1 << 20, latency=100, bytes_per_cycle=16)
    assert ram.timed_read(0, 64, at=0)[1] == 4 + 100
    # A second requester at the same cycle waits for the 4-cycle transfer.
    assert ram.timed_read(64, 64, at=0)[1] == 8 + 100
    # Later, the channel is free again.
    assert ram.timed_read(0, 1, at=1000)[1] == 1000 + 1 + 100


def test_a_burst_charges_the_same_cycles_as_the_same_accesses_one_by_one() -> None:
    addrs = np.arange(0, 64 * 50, 64, dtype=np.int64)
    sizes = np.full(50, 64, dtype=np.int64)
    writes = np.arange(50) % 3 == 0
    one = RamModel(size=1 << 20)
    at = 7
    for a, s, w in zip(addrs, sizes, writes, strict=True):
        at = (
            one.timed_write(int(a), bytes(int(s)), at) if w else one.timed_read(int(a), int(s), at)
        )[1]
    burst = RamModel(size=1 << 20)
    latencies, done = burst.timed_burst(addrs, sizes, writes, 7)
    assert done == at
    assert int(latencies.sum()) == at - 7
    assert (
        burst.reads,
        burst.writes,
        burst.bytes_read,
        burst.bytes_written,
        burst.busy_cycles,
    ) == (one.reads, one.writes, one.bytes_read, one.bytes_written, one.busy_cycles)


def test_a_burst_leaving_ram_charges_nothing() -> None:
    ram = RamModel(size=1 << 20)
    addrs = np.array([0, 1 << 20], dtype=np.int64)
    with pytest.raises(hwsim.SegmentationFault):
        ram.timed_burst(addrs, np.array([8, 8]), np.array([False, False]), 0)
    assert ram.statistics() == RamModel(size=1 << 20).statistics()


# ---------------------------------------------------------------------- the channel calendar


class ReferenceChannel:
    """The calendar's rules in plain Python, one request at a time.

    A request wanted at ``at`` for ``transfer`` cycles looks at the first booked block that
    ends after ``at``; if the request would overlap it, it waits until that block ends (one
    bump). It then books its transfer; touching or overlapping blocks merge.
    """

    def __init__(self) -> None:
        self.busy: list[tuple[int, int]] = []

    def book(self, at: int, transfer: int) -> int:
        j = bisect.bisect_right([end for _, end in self.busy], at)
        delay = 0
        if j < len(self.busy) and self.busy[j][0] < at + transfer:
            delay = self.busy[j][1] - at
        start, end = at + delay, at + delay + transfer
        apart = [(s, e) for s, e in self.busy if e < start or s > end]
        touching = [(s, e) for s, e in self.busy if not (e < start or s > end)]
        merged = (min([start] + [s for s, _ in touching]), max([end] + [e for _, e in touching]))
        self.busy = sorted([*apart, merged])
        return delay

    def chain(self, at: int, transfers: list[int], latency: int) -> list[int]:
        """Dependent accesses one by one: the latency of each."""
        latencies = []
        for transfer in transfers:
            took = transfer + latency + self.book(at, transfer)
            latencies.append(took)
            at += took
        return latencies


def calendar_of(ram: RamModel) -> list[tuple[int, int]]:
    return list(zip(ram.calendar.starts.tolist(), ram.calendar.ends.tolist(), strict=True))


def burst_of(sizes: list[int], base: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(sizes)
    addrs = base + np.arange(n, dtype=np.int64) * 4096
    return addrs, np.asarray(sizes, dtype=np.int64), np.zeros(n, dtype=np.bool_)


requests = st.lists(
    st.tuples(
        st.integers(0, 3000),  # issue cycle: requests arrive out of cycle order
        st.lists(st.integers(1, 600), min_size=1, max_size=8),  # sizes of a dependent chain
        st.booleans(),  # True: one timed_burst; False: timed_read one by one
    ),
    max_size=12,
)


@settings(max_examples=200)
@given(requests=requests, latency=st.sampled_from([0, 1, 7, 100]))
def test_bursts_and_single_accesses_follow_the_same_calendar_rules(
    requests: list[tuple[int, list[int], bool]], latency: int
) -> None:
    ram = RamModel(size=1 << 26, latency=latency, bytes_per_cycle=16)
    reference = ReferenceChannel()
    queued = 0
    for at, sizes, as_burst in requests:
        transfers = [-(-size // 16) for size in sizes]
        expected = reference.chain(at, transfers, latency)
        queued += sum(expected) - sum(transfers) - latency * len(transfers)
        if as_burst:
            latencies, done = ram.timed_burst(*burst_of(sizes), at)
            assert latencies.tolist() == expected
        else:
            done = at
            for i, size in enumerate(sizes):
                _, finished = ram.timed_read(i * 4096, size, done)
                assert finished - done == expected[i]
                done = finished
        assert done == at + sum(expected)
        assert calendar_of(ram) == reference.busy
    assert ram.queued_cycles == queued
    assert ram.statistics().queued_cycles == queued


@settings(max_examples=100)
@given(
    requests=st.lists(
        st.tuples(st.integers(0, 3000), st.lists(st.integers(1, 600), min_size=1, max_size=40)),
        max_size=8,
    )
)
def test_a_burst_that_collides_often_still_books_a_consistent_calendar(
    requests: list[tuple[int, list[int]]],
) -> None:
    # One exact pass only: the rest of each burst is estimated in chunks.
    ram = RamModel(size=1 << 26, calendar=ChannelCalendar(max_passes=1))
    for at, sizes in requests:
        transfers = -(-np.asarray(sizes, dtype=np.int64) // 16)
        latencies, done = ram.timed_burst(*burst_of(sizes), at)
        assert (latencies >= transfers + 100).all()
        assert done == at + int(latencies.sum())
        issued = at + np.cumsum(latencies) - latencies
        starts = issued + latencies - 100 - transfers  # issued + delay
        cal_s, cal_e = ram.calendar.starts, ram.calendar.ends
        assert (cal_s[1:] > cal_e[:-1]).all() and (cal_e > cal_s).all()
        # every transfer lies inside one booked block
        j = np.searchsorted(cal_e, starts, side="right")
        assert (cal_s[j] <= starts).all() and (cal_e[j] >= starts + transfers).all()
    assert ram.busy_cycles == sum(int((-(-np.asarray(s) // 16)).sum()) for _, s in requests)


def test_a_request_landing_inside_a_booked_transfer_waits_exactly_until_it_ends() -> None:
    ram = RamModel(size=1 << 20, latency=100, bytes_per_cycle=16)
    ram.timed_read(0, 4096, at=1000)  # books [1000, 1256)
    _, done = ram.timed_read(8192, 64, at=1100)
    assert done == 1256 + 4 + 100
    assert ram.queued_cycles == 156
    # A burst whose first access lands inside a booked transfer: only that one waits.
    latencies, _ = ram.timed_burst(*burst_of([64, 64]), 1000)
    assert latencies.tolist() == [260 + 4 + 100, 104]


def test_a_late_request_fits_in_an_earlier_gap_of_the_calendar() -> None:
    ram = RamModel(size=1 << 20, latency=100, bytes_per_cycle=16)
    ram.timed_read(0, 64, at=0)  # [0, 4)
    ram.timed_read(0, 64, at=100)  # [100, 104)
    # Arrives after them but is issued at cycle 10: the channel was free then.
    assert ram.timed_read(0, 64, at=10)[1] == 10 + 104
    # Issued at 98, its transfer would overlap [100, 104): it waits until 104.
    assert ram.timed_read(0, 64, at=98)[1] == 104 + 104
    assert calendar_of(ram) == [(0, 4), (10, 14), (100, 108)]


def test_one_bump_only_a_request_is_not_moved_again_if_the_next_gap_is_too_short() -> None:
    ram = RamModel(size=1 << 20, latency=100, bytes_per_cycle=16)
    ram.timed_read(0, 64, at=0)  # [0, 4)
    ram.timed_read(0, 64, at=6)  # [6, 10)
    # Issued at 2: waits for [0, 4) to end, then overlaps [6, 10) for two cycles.
    assert ram.timed_read(0, 64, at=2)[1] == 4 + 104
    assert calendar_of(ram) == [(0, 10)]


@pytest.mark.parametrize("size", [8, 64, 256, 4096])
def test_a_fast_chain_trailing_a_slower_one_is_exact_however_long(size: int) -> None:
    # Every access of the 64-byte chain lands in the next transfer of the other chain.
    ram = RamModel(size=1 << 26, calendar=ChannelCalendar(max_passes=2))
    reference = ReferenceChannel()
    slow = [size] * 300
    reference.chain(0, [-(-s // 16) for s in slow], 100)
    ram.timed_burst(*burst_of(slow), 0)
    fast = [8] * 300
    latencies, _ = ram.timed_burst(*burst_of(fast, base=1 << 22), 0)
    assert latencies.tolist() == reference.chain(0, [1] * 300, 100)
    assert calendar_of(ram) == reference.busy


def interleaved_singles(ram: RamModel, chains: list[list[int]], starts: list[int]) -> list[int]:
    """Each chain's accesses one by one, all chains served in order of issue cycle."""
    heap = [(at, who, 0) for who, at in enumerate(starts)]
    heapq.heapify(heap)
    done = list(starts)
    while heap:
        at, who, i = heapq.heappop(heap)
        done[who] = ram.timed_read((who << 22) + i * 64, chains[who][i], at)[1]
        if i + 1 < len(chains[who]):
            heapq.heappush(heap, (done[who], who, i + 1))
    return [d - at for d, at in zip(done, starts, strict=True)]


@settings(max_examples=60, deadline=None)
@given(offset=st.integers(0, 3000), size=st.sampled_from([8, 64, 256]))
def test_two_dependent_bursts_contend_only_where_their_transfers_meet(
    offset: int, size: int
) -> None:
    n = 1024
    alone, _ = RamModel(size=1 << 26).timed_burst(*burst_of([size] * n), 0)
    ram = RamModel(size=1 << 26)
    _, first = ram.timed_burst(*burst_of([size] * n), 0)
    _, second = ram.timed_burst(*burst_of([size] * n, base=1 << 22), offset)
    bursts = [first, second - offset]
    assert bursts[0] == alone.sum()
    assert bursts[1] < 1.1 * alone.sum()
    # The same accesses one at a time, both chains served in the order of their cycles:
    # the same contention, give or take who of the two waits at their first meeting.
    singles = interleaved_singles(RamModel(size=1 << 26), [[size] * n] * 2, [0, offset])
    transfer = -(-size // 16)
    assert abs(sum(bursts) - sum(singles)) <= 2 * transfer
    assert abs(bursts[1] - singles[1]) <= 2 * transfer


@settings(max_examples=100)
@given(
    before=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 300)), max_size=20),
    after=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 300)), max_size=20),
    cut=st.integers(0, 2500),
)
def test_forgetting_the_past_changes_no_later_result(
    before: list[tuple[int, int]], after: list[tuple[int, int]], cut: int
) -> None:
    kept, pruned = RamModel(size=1 << 20), RamModel(size=1 << 20)
    for at, size in before:
        assert kept.timed_read(0, size, at) == pruned.timed_read(0, size, at)
    live = len(pruned.calendar)
    dropped = pruned.forget_before(cut)
    assert len(pruned.calendar) == live - dropped
    assert (pruned.calendar.ends > cut).all()
    assert [iv for iv in calendar_of(kept) if iv[1] > cut] == calendar_of(pruned)
    for at, size in after:  # nothing is issued before the cut
        assert kept.timed_read(0, size, cut + at) == pruned.timed_read(0, size, cut + at)
        burst = burst_of([size, size])
        assert kept.timed_burst(*burst, cut + at)[1] == pruned.timed_burst(*burst, cut + at)[1]


def test_without_pruning_the_calendar_keeps_at_most_max_intervals() -> None:
    ram = RamModel(size=1 << 26, calendar=ChannelCalendar(max_intervals=100))
    for i in range(1000):
        ram.timed_read(0, 64, at=i * 10)
    assert 50 <= len(ram.calendar) <= 100
    ram.timed_burst(*burst_of([64] * 500), 20_000)
    assert 50 <= len(ram.calendar) <= 100
    assert int(ram.calendar.ends[-1]) == 20_000 + 499 * 104 + 4


@pytest.mark.machine(cpus=1)
async def test_the_ram_actor_forgets_transfers_that_ended_before_now(
    machine: hwsim.Machine,
) -> None:
    addrs = np.arange(5000, dtype=np.int64) * 64
    burst = BurstPhys(addrs, np.full(5000, 64, dtype=np.int64), np.zeros(5000, dtype=np.bool_))
    for _ in range(3):
        _, done = await machine.ram.call(burst)
        await hwsim.sleep_until(done)
    # The third burst found 10 000 transfers booked, all in the past: they were dropped.
    assert len(machine.ram.model.calendar) == 5000
    assert machine.stats()["ram"]["queued_cycles"] == 0


def test_refused_requests_book_nothing() -> None:
    ram = RamModel(size=1 << 20)
    with pytest.raises(hwsim.SegmentationFault):
        ram.timed_write((1 << 20) - 4, bytes(8), 0)
    with pytest.raises(hwsim.SegmentationFault):
        ram.timed_burst(*burst_of([8, 8], base=(1 << 20) - 4096), 0)
    assert len(ram.calendar) == 0
    assert ram.statistics() == RamModel(size=1 << 20).statistics()


def test_a_memoryview_of_wide_items_is_written_and_checked_as_its_bytes() -> None:
    from array import array

    ram = RamModel(size=1 << 16)
    wide = memoryview(array("I", [0x01020304] * 4))  # 4 items, 16 bytes
    with pytest.raises(hwsim.SegmentationFault):
        ram.write((1 << 16) - 8, wide)
    assert ram.pages_touched == 0
    ram.timed_write(0, wide, 0)
    assert ram.read(0, 16) == bytes(wide)
    assert ram.statistics().bytes_written == 16


def test_a_malformed_burst_is_refused_before_anything_is_booked() -> None:
    ram = RamModel(size=1 << 20)
    addrs, sizes, _ = burst_of([64, 64])
    with pytest.raises(TypeError, match="writes must be a 1-d numpy bool array"):
        ram.timed_burst(addrs, sizes, np.array([0, 1]), 0)
    with pytest.raises(ValueError, match="differ in length"):
        ram.timed_burst(addrs, sizes, np.zeros(3, dtype=np.bool_), 0)
    assert len(ram.calendar) == 0
    assert ram.statistics() == RamModel(size=1 << 20).statistics()
