"""RAM: real bytes, sparse storage, latency and bandwidth, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import hwsim
from hwsim.devices.ram import RamModel


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
