"""The TLB model: set-associative, page-size aware, PCID-tagged, three replacement policies."""

from __future__ import annotations

import attrs
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwsim.config import TlbConfig
from hwsim.devices.tlb import TlbEntry, TlbModel

KIB4, MIB2, MIB4, GIB1 = 1 << 12, 1 << 21, 1 << 22, 1 << 30
KERNEL = 0xFFFF888000000000
VMALLOC = 0xFFFFC90000000000


def tlb(entries: int = 64, ways: int = 4, replacement: str = "lru", **kw: object) -> TlbModel:
    return TlbModel(TlbConfig(entries=entries, ways=ways, replacement=replacement), **kw)  # type: ignore[arg-type]


def pcid_tlb(entries: int = 64, ways: int = 4) -> TlbModel:
    return TlbModel(TlbConfig(entries=entries, ways=ways, pcid=True))


def test_a_lookup_misses_until_the_page_is_inserted_then_hits_anywhere_in_it() -> None:
    t = tlb()
    assert t.lookup(VMALLOC + 0x123) is None
    t.insert(VMALLOC + 0x123, 0x5000, KIB4, 0x63)
    assert t.lookup(VMALLOC).translate(VMALLOC) == 0x5000  # type: ignore[union-attr]
    assert t.lookup(VMALLOC + 0xFFF).translate(VMALLOC + 0xFFF) == 0x5FFF  # type: ignore[union-attr]
    assert t.lookup(VMALLOC + 0x1000) is None
    s = t.statistics()
    assert (s.hits, s.misses, len(t)) == (2, 2, 1)


@pytest.mark.parametrize("size", [KIB4, MIB2, MIB4, GIB1])
def test_an_entry_of_any_page_size_is_one_entry_for_its_whole_page(size: int) -> None:
    t = tlb()
    base = KERNEL + 7 * GIB1
    t.insert(base + size // 3, 5 * size, size, 0x63)
    for offset in (0, size // 2, size - 1):
        e = t.lookup(base + offset)
        assert e is not None and e.page_size == size
        assert e.translate(base + offset) == 5 * size + offset
    assert t.lookup(base + size) is None
    assert len(t) == 1


def test_an_entry_is_placed_in_the_set_of_its_page_number_at_its_own_size() -> None:
    t = tlb(entries=8, ways=2)  # 4 sets
    # Four 2 MiB pages whose 2 MiB page numbers are 0, 4, 8, 12 (mod 4 all 0): one set of 2
    for i in range(4):
        t.insert(i * 4 * MIB2, i * MIB2, MIB2, 0)
    assert len(t) == 2 and t.statistics().evictions == 2
    # ... while 2 MiB pages 1, 2, 3 go to the other sets
    for i in (1, 2, 3):
        t.insert(i * MIB2, 0, MIB2, 0)
    assert len(t) == 5 and t.statistics().evictions == 2
    t.check_invariants()


def test_invlpg_drops_exactly_one_page() -> None:
    t = tlb()
    for i in range(3):
        t.insert(VMALLOC + i * KIB4, i * KIB4, KIB4, 0x63)
    t.insert(KERNEL, 0, MIB2, 0x63, global_=True)
    assert t.invlpg(VMALLOC + KIB4 + 17) == 1
    assert t.lookup(VMALLOC + KIB4) is None
    assert t.lookup(VMALLOC) is not None and t.lookup(VMALLOC + 2 * KIB4) is not None
    assert t.invlpg(KERNEL + MIB2 - 1) == 1  # anywhere in a large page drops it
    assert t.lookup(KERNEL) is None
    assert t.invlpg(VMALLOC + KIB4) == 0
    assert t.statistics().invlpgs == 3
    t.check_invariants()


def test_a_flush_keeps_global_entries_unless_told_to_drop_them() -> None:
    t = tlb()
    t.insert(0x400000, 0x1000, KIB4, 0x67)
    t.insert(KERNEL, 0, MIB2, 0x163, global_=True)
    assert t.flush_all() == 1
    assert t.lookup(0x400000) is None and t.lookup(KERNEL + 5) is not None
    assert t.flush_all(include_global=True) == 1
    assert len(t) == 0 and t.statistics().flushes == 2
    t.check_invariants()


def test_with_pcid_entries_of_another_asid_do_not_hit_but_global_entries_do() -> None:
    t = pcid_tlb()
    t.insert(0x400000, 0x1000, KIB4, 0x67, asid=1)
    t.insert(0x400000, 0x9000, KIB4, 0x67, asid=2)
    t.insert(KERNEL, 0, MIB2, 0x163, asid=1, global_=True)
    assert t.lookup(0x400000, asid=1).translate(0x400000) == 0x1000  # type: ignore[union-attr]
    assert t.lookup(0x400000, asid=2).translate(0x400000) == 0x9000  # type: ignore[union-attr]
    assert t.lookup(0x400000, asid=3) is None
    assert t.lookup(KERNEL, asid=3) is not None
    t.check_invariants()


def test_with_pcid_a_global_entry_hits_from_every_asid_whatever_was_cached_before() -> None:
    t = pcid_tlb()
    t.insert(KERNEL, 0, MIB2, 0x63, asid=1)  # a non-global 2 MiB entry first
    t.insert(KERNEL + MIB2, MIB2, MIB2, 0x163, asid=1, global_=True)
    assert t.lookup(KERNEL + MIB2, asid=7) is not None
    assert t.lookup(KERNEL, asid=7) is None
    t.check_invariants()


def test_flush_asid_drops_only_that_asids_non_global_entries() -> None:
    t = pcid_tlb()
    t.insert(0x400000, 0x1000, KIB4, 0x67, asid=1)
    t.insert(0x400000, 0x9000, KIB4, 0x67, asid=2)
    t.insert(KERNEL, 0, MIB2, 0x163, asid=1, global_=True)
    assert t.flush_asid(1) == 1
    assert t.probe(0x400000, asid=1) is None
    assert t.probe(0x400000, asid=2) is not None
    assert t.probe(KERNEL, asid=1) is not None


def test_invlpg_with_an_asid_spares_other_asids_and_drops_global_entries() -> None:
    t = pcid_tlb()
    t.insert(0x400000, 0x1000, KIB4, 0x67, asid=1)
    t.insert(0x400000, 0x9000, KIB4, 0x67, asid=2)
    t.insert(0x400000, 0x5000, KIB4, 0x67, asid=3, global_=True)
    assert t.invlpg(0x400000, asid=1) == 2
    assert [e.asid for e in t.entries()] == [2]
    assert t.invlpg(0x400000) == 1 and len(t) == 0


def test_without_pcid_a_nonzero_asid_is_refused_and_nothing_changes() -> None:
    t = tlb()
    with pytest.raises(ValueError, match="needs PCID"):
        t.lookup(0x1000, asid=1)
    with pytest.raises(ValueError, match="needs PCID"):
        t.insert(0x1000, 0, KIB4, 0, asid=1)
    with pytest.raises(ValueError, match="PCID"):
        pcid_tlb().lookup(0, asid=4096)
    assert t.statistics() == tlb().statistics() and len(t) == 0


def crafted_trace(policy: str) -> list[bool]:
    """Two ways, one set: A, B, touch A, C (evicts B under LRU, A under FIFO), then A, B."""
    t = tlb(entries=2, ways=2, replacement=policy)
    a, b, c = 0x1000, 0x2000, 0x3000
    t.insert(a, a, KIB4, 0)
    t.insert(b, b, KIB4, 0)
    assert t.lookup(a) is not None
    t.insert(c, c, KIB4, 0)
    return [t.probe(a) is not None, t.probe(b) is not None]


def test_lru_and_fifo_evict_different_entries_on_a_crafted_trace() -> None:
    assert crafted_trace("lru") == [True, False]
    assert crafted_trace("fifo") == [False, True]


def random_survivors(seed: int) -> list[int]:
    t = tlb(entries=4, ways=4, replacement="random", seed=seed)
    for i in range(12):
        t.insert(i * KIB4, 0, KIB4, 0)
    return sorted(e.vaddr >> 12 for e in t.entries())


def test_random_replacement_is_deterministic_for_a_seed() -> None:
    assert random_survivors(3) == random_survivors(3)
    assert len({tuple(random_survivors(seed)) for seed in range(10)}) > 1


def test_a_free_way_is_filled_before_anything_is_evicted() -> None:
    t = tlb(entries=2, ways=2)
    t.insert(0x1000, 0, KIB4, 0)
    t.insert(0x2000, 0, KIB4, 0)
    t.invlpg(0x1000)
    t.insert(0x3000, 0, KIB4, 0)
    assert t.statistics().evictions == 0
    assert t.probe(0x2000) is not None and t.probe(0x3000) is not None


def test_reinserting_a_page_replaces_its_entry_in_place() -> None:
    t = tlb()
    t.insert(0x1000, 0x5000, KIB4, 0x23)
    t.insert(0x1000, 0x5000, KIB4, 0x63)
    assert len(t) == 1 and t.probe(0x1000).flags == 0x63  # type: ignore[union-attr]


# --------------------------------------------------------------------- against a reference


class ReferenceTlb:
    """Lists of entries per set, searched by brute force: what the model must equal."""

    def __init__(self, entries: int, ways: int, policy: str) -> None:
        self.nr_sets, self.ways, self.policy = entries // ways, ways, policy
        self.sets: list[list[tuple[int, int]]] = [[] for _ in range(self.nr_sets)]

    def _where(self, vaddr: int, size: int) -> tuple[list[tuple[int, int]], tuple[int, int]]:
        vpn = vaddr // size
        return self.sets[vpn % self.nr_sets], (vpn, size)

    def lookup(self, vaddr: int) -> bool:
        for size in (KIB4, MIB2):
            s, tag = self._where(vaddr, size)
            if tag in s:
                if self.policy == "lru":
                    s.remove(tag)
                    s.append(tag)
                return True
        return False

    def insert(self, vaddr: int, size: int) -> None:
        s, tag = self._where(vaddr, size)
        if tag in s:
            if self.policy == "lru":
                s.remove(tag)
                s.append(tag)
            return
        if len(s) == self.ways:
            s.pop(0)
        s.append(tag)

    def invlpg(self, vaddr: int) -> None:
        for size in (KIB4, MIB2):
            s, tag = self._where(vaddr, size)
            if tag in s:
                s.remove(tag)


ops = st.lists(
    st.tuples(
        st.sampled_from(["lookup", "insert4k", "insert2m", "invlpg"]),
        # Four 2 MiB pages, eight 4 KiB pages in each: the sizes collide in the sets.
        st.tuples(st.integers(0, 3), st.integers(0, 7)).map(lambda p: p[0] * MIB2 + p[1] * KIB4),
    ),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(ops=ops, policy=st.sampled_from(["lru", "fifo"]), ways=st.sampled_from([1, 2, 4]))
def test_the_tlb_behaves_like_a_brute_force_reference(
    ops: list[tuple[str, int]], policy: str, ways: int
) -> None:
    t, ref = tlb(entries=8, ways=ways, replacement=policy), ReferenceTlb(8, ways, policy)
    for op, vaddr in ops:
        if op == "lookup":
            assert (t.lookup(vaddr) is not None) == ref.lookup(vaddr)
        elif op == "invlpg":
            t.invlpg(vaddr)
            ref.invlpg(vaddr)
        else:
            size = KIB4 if op == "insert4k" else MIB2
            t.insert(vaddr, 0, size, 0)
            ref.insert(vaddr, size)
        t.check_invariants()
    assert sorted((e.vaddr // e.page_size, e.page_size) for e in t.entries()) == sorted(
        tag for s in ref.sets for tag in s
    )


# --------------------------------------------------------------------- batched lookups


@settings(max_examples=100, deadline=None)
@given(
    resident=st.lists(st.integers(0, 31), max_size=20),
    trace=st.lists(st.tuples(st.integers(0, 31), st.integers(0, KIB4 - 1)), max_size=200),
    policy=st.sampled_from(["lru", "fifo", "random"]),
    large=st.booleans(),
)
def test_lookup_many_equals_looking_up_one_by_one(
    resident: list[int], trace: list[tuple[int, int]], policy: str, large: bool
) -> None:
    def fresh() -> TlbModel:
        t = tlb(entries=16, ways=4, replacement=policy)
        for page in resident:
            t.insert(KERNEL + page * KIB4, page * KIB4, KIB4, 0x63)
        if large:
            t.insert(KERNEL + 16 * KIB4, 0, MIB2, 0x63, global_=True)
        return t

    vaddrs = [KERNEL + page * KIB4 + offset for page, offset in trace]
    one = fresh()
    expected = [one.lookup(v) for v in vaddrs]
    batch = fresh()
    hits, phys = batch.lookup_many(np.array(vaddrs, dtype=np.uint64))
    assert hits.tolist() == [e is not None for e in expected]
    assert phys.tolist() == [
        -1 if e is None else e.translate(v) for e, v in zip(expected, vaddrs, strict=True)
    ]
    assert batch.statistics() == one.statistics()
    assert batch.entries() == one.entries()  # the same LRU order too


def test_lookup_many_refuses_bad_addresses_and_changes_nothing() -> None:
    t = tlb()
    t.insert(0x1000, 0, KIB4, 0)
    with pytest.raises(ValueError, match=r"vaddrs\[1\] is a negative address"):
        t.lookup_many(np.array([0x1000, -4096]))
    with pytest.raises(TypeError, match="integer addresses"):
        t.lookup_many(np.array([4096.0]))
    with pytest.raises(ValueError, match="1-D"):
        t.lookup_many(np.zeros((2, 2), dtype=np.uint64))
    assert t.statistics() == tlb().statistics()
    hits, phys = t.lookup_many(np.array([], dtype=np.uint64))
    assert len(hits) == len(phys) == 0


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda t: t.lookup(-1), ValueError),
        (lambda t: t.lookup(1 << 64), ValueError),
        (lambda t: t.lookup("0x1000"), TypeError),
        (lambda t: t.lookup(True), TypeError),
        (lambda t: t.insert(0x1000, 0x800, KIB4, 0), ValueError),  # misaligned frame
        (lambda t: t.insert(0x1000, 0, 8192, 0), ValueError),  # no such page size
        (lambda t: t.insert(0x1000, 0, KIB4, -1), ValueError),
        (lambda t: t.insert(0x1000, 0, KIB4, 0, global_=1), TypeError),
        (lambda t: t.flush_all(include_global=1), TypeError),
    ],
)
def test_bad_arguments_raise_and_change_nothing(call: object, error: type[Exception]) -> None:
    t = tlb()
    t.insert(0x5000, 0, KIB4, 0)
    before = (t.statistics(), t.entries())
    with pytest.raises(error):
        call(t)  # type: ignore[operator]
    assert (t.statistics(), t.entries()) == before


def test_a_tlb_needs_a_tlb_config_and_its_statistics_are_frozen() -> None:
    with pytest.raises(TypeError, match="TlbConfig"):
        TlbModel({"entries": 64})  # type: ignore[arg-type]
    s = tlb().statistics()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        s.hits = 3  # type: ignore[misc]
    assert s.hit_rate == 0.0
    assert isinstance(TlbEntry(0, 0, KIB4, 0), TlbEntry)
