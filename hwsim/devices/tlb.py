"""The TLB: a set-associative cache of translations, as a plain synchronous model.

An entry maps one virtual page (4 KiB, 2 MiB, 4 MiB or 1 GiB) to a physical page and keeps
the flags the MMU needs to check an access without walking: the effective RW/USER/NX bits,
ACCESSED/DIRTY and GLOBAL. The MMU (:mod:`hwsim.devices.mmu`) fills it; the TLB itself knows
nothing of page tables.

Organisation. ``entries`` split into ``entries // ways`` sets of ``ways``. Real x86 cores keep
separate arrays per page size (Skylake's L1 DTLB: 64 entries for 4 KiB pages, 32 for
2M/4M, 4 for 1G) beside a unified second level. This model keeps **one unified array** whose
entries record their page size: an entry of size ``S`` lives in set
``(vaddr >> log2(S)) % nr_sets``, indexed by its virtual page number *at its own size*, and a
lookup probes every page size that currently has entries, smallest first (the set to probe
differs per size). So a 2 MiB page costs one entry wherever in the 2 MiB it is touched, and
pages of different sizes compete for the same ways, as in a unified STLB.

Replacement per set: ``lru`` (a hit makes the entry the most recent), ``fifo`` (the oldest
insertion goes; hits change nothing) or ``random`` (a victim drawn from a
``random.Random(seed)``: deterministic for a seed). Invalidated entries leave free ways,
filled before anything is evicted.

Tagging. Without PCID (``TlbConfig.pcid=False``) entries carry no address-space tag and the
``asid`` arguments must be 0: a CR3 load flushes the non-global entries instead (the MMU does
that). With PCID, each entry carries the 12-bit PCID (``asid`` 0..4095) it was filled under,
and a lookup matches only entries of its ASID - or GLOBAL entries, which match every ASID
(x86: "global translations are used regardless of PCID").

Invalidation, as the x86 instructions do:

- :meth:`TlbModel.flush_all` drops every non-global entry of every ASID (a CR3 write
  without PCID, INVPCID all-contexts); ``include_global=True`` drops global ones too (a CR4.PGE
  toggle, INVPCID type 2: Linux's ``__flush_tlb_all``);
- :meth:`TlbModel.flush_asid` drops one ASID's non-global entries (INVPCID single-context);
- :meth:`TlbModel.invlpg` drops the entries of one page, of any page size: those of ``asid``
  plus global ones (INVLPG acts on the current PCID and global entries), or of every ASID
  with ``asid=None``.

Overlapping entries (a 4 KiB entry and a 2 MiB entry covering one address) arise only when
software changes a mapping without flushing; a lookup then finds the smaller page. x86 leaves
the choice undefined.

Example:
    >>> from hwsim.config import TlbConfig
    >>> tlb = TlbModel(TlbConfig(entries=64, ways=4))
    >>> tlb.lookup(0xFFFF888000123456) is None
    True
    >>> _ = tlb.insert(0xFFFF888000123456, 0x0, 2 << 20, flags=0x163, global_=True)
    >>> hex(tlb.lookup(0xFFFF8880001FFFFF).translate(0xFFFF8880001FFFFF))
    '0x1fffff'
    >>> s = tlb.statistics()
    >>> s.hits, s.misses, len(tlb)
    (1, 1, 1)
"""

from __future__ import annotations

import random

import attrs
import numpy as np
import numpy.typing as npt

from ..config import TlbConfig

# The page sizes an entry may have, smallest first (the lookup order).
PAGE_SIZES = (1 << 12, 1 << 21, 1 << 22, 1 << 30)
_SHIFTS = (12, 21, 22, 30)
_CODE = {size: code for code, size in enumerate(PAGE_SIZES)}
MAX_ASID = (1 << 12) - 1  # PCIDs are 12 bits
# Key of an entry in its set: (vpn << 15) | (size code << 13) | tag. The tag is ASID + 1,
# or 0 for a global entry when entries are PCID-tagged (globals match every ASID).
_TAG_BITS = 13
_PAGE_BITS = _TAG_BITS + 2
_ADDR_LIMIT = 1 << 64


@attrs.frozen(slots=True)
class TlbEntry:
    """One cached translation.

    Attributes:
        vaddr: the virtual address of the page (aligned to ``page_size``).
        phys: the physical address of the page (aligned to ``page_size``).
        page_size: 4 KiB, 2 MiB, 4 MiB or 1 GiB.
        flags: the bits the MMU cached (x86 entry bits; it stores the effective rights).
        asid: the ASID (PCID) the entry was filled under (0 without PCID).
        global_: a global entry (G bit): survives non-global flushes, matches any ASID.
    """

    vaddr: int
    phys: int
    page_size: int
    flags: int
    asid: int = 0
    global_: bool = False

    def translate(self, vaddr: int) -> int:
        """The physical address of ``vaddr`` (which must lie in this entry's page)."""
        return self.phys + (vaddr - self.vaddr)


@attrs.frozen
class TlbStatistics:
    """What a TLB has seen. ``walks``/``walk_cycles`` are reported by its MMU."""

    hits: int
    misses: int
    walks: int
    walk_cycles: int
    flushes: int
    invlpgs: int
    evictions: int

    @property
    def lookups(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        """Hits over lookups (0.0 before any lookup)."""
        return self.hits / self.lookups if self.lookups else 0.0


def _check_int(value: object, what: str) -> int:
    if value.__class__ is int:
        return value
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{what} must be an int, got {value!r}")
    return int(value)


def check_vaddr(vaddr: object, what: str = "a virtual address") -> int:
    """``vaddr`` as an int in [0, 2**64); TypeError/ValueError naming ``what`` otherwise."""
    vaddr = _check_int(vaddr, what)
    if not 0 <= vaddr < _ADDR_LIMIT:
        raise ValueError(f"{what} must be in [0, 2**64), got {vaddr:#x}")
    return vaddr


def as_addresses(vaddrs: npt.ArrayLike, what: str = "vaddrs") -> npt.NDArray[np.uint64]:
    """A 1-D array of virtual addresses as uint64 (kernel addresses do not fit int64).

    Raises:
        TypeError: not integers (a bool or float array, or Python ints beyond 64 bits).
        ValueError: not one-dimensional, or a negative address (naming its index).
    """
    arr = np.asarray(vaddrs)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        if arr.size == 0:
            return np.zeros(0, dtype=np.uint64)
        raise TypeError(f"{what} must be an array of integer addresses, got dtype {arr.dtype}")
    if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
        i = int(np.flatnonzero(arr < 0)[0])
        raise ValueError(f"{what}[{i}] is a negative address ({int(arr[i])})")
    return arr.astype(np.uint64, copy=False)


class TlbModel:
    """A set-associative TLB (see the module docstring).

    Args:
        config: entries, ways, replacement policy, PCID tagging.
        seed: seeds the random replacement policy.

    Raises:
        TypeError: ``config`` is not a TlbConfig or ``seed`` not an int.
    """

    def __init__(self, config: TlbConfig, *, seed: int = 0) -> None:
        if not isinstance(config, TlbConfig):
            raise TypeError(f"config must be a TlbConfig, got {config!r}")
        self.config = config
        self.seed = _check_int(seed, "seed")
        self.ways = config.ways
        self.nr_sets = config.entries // config.ways
        self.pcid = config.pcid
        self.policy = config.replacement
        self._lru = config.replacement == "lru"
        self._rng = random.Random(self.seed)
        self._sets: list[dict[int, TlbEntry]] = [{} for _ in range(self.nr_sets)]
        self._count = [0, 0, 0, 0]  # entries per page size
        self._nr_global = 0
        # (shift, code) of the page sizes that have entries: what a lookup probes.
        self._active: tuple[tuple[int, int], ...] = ()
        self._global_probe = False  # PCID on and global entries present: probe tag 0 too
        self.hits = self.misses = self.walks = self.walk_cycles = 0
        self.flushes = self.invlpgs = self.evictions = 0

    def __len__(self) -> int:
        """How many valid entries the TLB holds."""
        return sum(self._count)

    def __repr__(self) -> str:
        return (
            f"<TlbModel {self.config.entries} entries, {self.ways}-way, {self.policy}"
            f"{', pcid' if self.pcid else ''}: {len(self)} valid>"
        )

    # ------------------------------------------------------------------ helpers

    def _tag(self, asid: object) -> int:
        """The tag of a non-global entry of ``asid`` (validated)."""
        if asid.__class__ is not int:
            asid = _check_int(asid, "asid")
        if self.pcid:
            if not 0 <= asid <= MAX_ASID:
                raise ValueError(f"asid (PCID) must be in 0..{MAX_ASID}, got {asid}")
            return asid + 1
        if asid != 0:
            raise ValueError(
                f"asid {asid} needs PCID (TlbConfig(pcid=True)); without PCID entries carry "
                "no ASID and a CR3 load flushes them instead"
            )
        return 1

    def check_asid(self, asid: int) -> int:
        """``asid`` if this TLB can tag entries with it (0..4095 with PCID, else only 0).

        Raises:
            TypeError, ValueError: it cannot.
        """
        return self._tag(asid) - 1

    def _refresh(self) -> None:
        self._active = tuple((_SHIFTS[c], c) for c in range(4) if self._count[c])
        self._global_probe = self.pcid and self._nr_global > 0

    def _recount(self) -> None:
        count = [0, 0, 0, 0]
        nr_global = 0
        for s in self._sets:
            for e in s.values():
                count[_CODE[e.page_size]] += 1
                nr_global += e.global_
        self._count = count
        self._nr_global = nr_global
        self._refresh()

    def _find(self, vaddr: int, tag: int) -> tuple[dict[int, TlbEntry], int, TlbEntry] | None:
        """The set, key and entry that translate ``vaddr`` for ``tag``, or None. No stats."""
        sets, nr_sets = self._sets, self.nr_sets
        for shift, code in self._active:
            vpn = vaddr >> shift
            s = sets[vpn % nr_sets]
            key = (vpn << _PAGE_BITS) | (code << _TAG_BITS) | tag
            e = s.get(key)
            if e is None and self._global_probe:
                key ^= tag
                e = s.get(key)
            if e is not None:
                return s, key, e
        return None

    def _remove(self, s: dict[int, TlbEntry], key: int) -> TlbEntry:
        e = s.pop(key)
        self._count[_CODE[e.page_size]] -= 1
        self._nr_global -= e.global_
        return e

    # ------------------------------------------------------------------ lookups

    def lookup(self, vaddr: int, asid: int = 0) -> TlbEntry | None:
        """The entry that translates ``vaddr`` for ``asid``, or None; counts a hit or a miss.

        Under LRU a hit makes the entry the most recently used of its set.

        Raises:
            TypeError, ValueError: a malformed address or ASID (nothing is counted).
        """
        if vaddr.__class__ is not int or not 0 <= vaddr < _ADDR_LIMIT:
            vaddr = check_vaddr(vaddr)
        found = self._find(vaddr, self._tag(asid))
        if found is None:
            self.misses += 1
            return None
        s, key, e = found
        if self._lru:
            del s[key]
            s[key] = e
        self.hits += 1
        return e

    def hit_for(self, vaddr: int, forbidden: int, required: int) -> TlbEntry | None:
        """The fast path of a kernel-mode lookup without PCID: the entry translating
        ``vaddr`` if there is one whose flags have none of ``forbidden`` and all of
        ``required`` - then counted as a hit (LRU updated) - else None, and nothing is
        counted or changed: the caller then takes the full path (:meth:`lookup`).

        ``vaddr`` must be a valid address (not checked: this is the per-access path of
        :meth:`~hwsim.devices.mmu.MmuModel.translate_many`).
        """
        sets, nr_sets = self._sets, self.nr_sets
        for shift, code in self._active:
            vpn = vaddr >> shift
            s = sets[vpn % nr_sets]
            key = (vpn << _PAGE_BITS) | (code << _TAG_BITS) | 1
            e = s.get(key)
            if e is not None:
                flags = e.flags
                if flags & forbidden or flags & required != required:
                    return None
                if self._lru:
                    del s[key]
                    s[key] = e
                self.hits += 1
                return e
        return None

    def probe(self, vaddr: int, asid: int = 0) -> TlbEntry | None:
        """Like :meth:`lookup` but changes nothing: no statistics, no LRU update."""
        found = self._find(check_vaddr(vaddr), self._tag(asid))
        return None if found is None else found[2]

    def lookup_many(
        self, vaddrs: npt.ArrayLike, asid: int = 0
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
        """Look up a whole trace: ``(hit flags, physical addresses)``, -1 where it missed.

        The same result, statistics and final LRU order as :meth:`lookup` called for each
        address in turn. A lookup never fills the TLB, so which addresses hit is decided by
        the entries present at the start: the work is one pass per distinct 4 KiB page, and
        the LRU order is then updated once per entry, in the order of its last hit.

        Raises:
            TypeError, ValueError: malformed addresses or ASID (nothing changes).
        """
        tag = self._tag(asid)
        va = as_addresses(vaddrs)
        n = len(va)
        hits = np.zeros(n, dtype=np.bool_)
        phys = np.full(n, -1, dtype=np.int64)
        if n == 0:
            return hits, phys
        pages, inverse = np.unique(va >> np.uint64(12), return_inverse=True)
        hit_found: list[tuple[dict[int, TlbEntry], int, TlbEntry] | None] = []
        page_phys = np.zeros(len(pages), dtype=np.int64)
        find = self._find
        for i, page in enumerate(pages.tolist()):
            found = find(page << 12, tag)
            hit_found.append(found)
            if found is not None:
                e = found[2]
                page_phys[i] = e.phys + ((page << 12) - e.vaddr)
        page_hit = np.fromiter((f is not None for f in hit_found), np.bool_, len(pages))
        hits = page_hit[inverse]
        nr_hits = int(np.count_nonzero(hits))
        if nr_hits:
            offsets = (va & np.uint64(0xFFF)).astype(np.int64)
            phys = np.where(hits, page_phys[inverse] + offsets, -1)
            if self._lru:
                # last[i]: the index of the last access to page i.
                last = np.full(len(pages), -1, dtype=np.int64)
                np.maximum.at(last, inverse, np.arange(n, dtype=np.int64))
                for i in np.argsort(last, kind="stable").tolist():
                    touched = hit_found[i]
                    if touched is not None:
                        s, key, e = touched
                        del s[key]
                        s[key] = e
        self.hits += nr_hits
        self.misses += n - nr_hits
        return hits, phys

    # ------------------------------------------------------------------ filling

    def insert(
        self,
        vaddr: int,
        phys_base: int,
        page_size: int,
        flags: int,
        asid: int = 0,
        global_: bool = False,
    ) -> TlbEntry:
        """Cache the translation of the page containing ``vaddr``; return the entry.

        A full set first loses its victim (counted in ``evictions``). Re-inserting a page
        already cached for the same tag replaces its entry in place (an LRU entry becomes
        the most recent; a FIFO entry keeps its age).

        Args:
            vaddr: any address in the page.
            phys_base: the physical address of the page (aligned to ``page_size``).
            page_size: 4 KiB, 2 MiB, 4 MiB or 1 GiB.
            flags: the bits to cache (any non-negative int: the MMU's business).
            asid: the ASID (PCID) the entry belongs to (0 without PCID).
            global_: the G bit.

        Raises:
            TypeError, ValueError: a malformed argument (nothing changes).
        """
        vaddr = check_vaddr(vaddr)
        phys_base = _check_int(phys_base, "phys_base")
        page_size = _check_int(page_size, "page_size")
        flags = _check_int(flags, "flags")
        tag = self._tag(asid)
        if not isinstance(global_, bool):
            raise TypeError(f"global_ must be a bool, got {global_!r}")
        code = _CODE.get(page_size)
        if code is None:
            raise ValueError(f"page_size must be 4 KiB, 2 MiB, 4 MiB or 1 GiB, got {page_size:#x}")
        if phys_base < 0 or phys_base & (page_size - 1):
            raise ValueError(
                f"phys_base {phys_base:#x} is not a page of {page_size:#x} bytes (misaligned "
                "or negative)"
            )
        if flags < 0:
            raise ValueError(f"flags must be >= 0, got {flags:#x}")
        if global_ and self.pcid:
            tag = 0
        vpn = vaddr >> _SHIFTS[code]
        s = self._sets[vpn % self.nr_sets]
        key = (vpn << _PAGE_BITS) | (code << _TAG_BITS) | tag
        entry = TlbEntry(
            vaddr=vpn << _SHIFTS[code],
            phys=phys_base,
            page_size=page_size,
            flags=flags,
            asid=_check_int(asid, "asid"),
            global_=global_,
        )
        old = s.get(key)
        if old is not None:
            self._nr_global += global_ - old.global_
            if self._lru:
                del s[key]
            s[key] = entry
            self._refresh()
            return entry
        refresh = False
        if len(s) >= self.ways:
            if self.policy == "random":
                victim = list(s)[self._rng.randrange(len(s))]
            else:  # lru and fifo: the front of the set's order
                victim = next(iter(s))
            gone = self._remove(s, victim)
            self.evictions += 1
            refresh = not self._count[_CODE[gone.page_size]] or (
                gone.global_ and not self._nr_global
            )
        s[key] = entry
        self._count[code] += 1
        self._nr_global += global_
        # The probe list changes only when a page size (or the first global) comes or goes.
        if refresh or self._count[code] == 1 or (global_ and self._nr_global == 1):
            self._refresh()
        return entry

    # ------------------------------------------------------------------ invalidation

    def flush_all(self, include_global: bool = False) -> int:
        """Drop every non-global entry (all ASIDs); with ``include_global``, every entry.

        Returns:
            How many entries were dropped.
        """
        if not isinstance(include_global, bool):
            raise TypeError(f"include_global must be a bool, got {include_global!r}")
        before = len(self)
        for i, s in enumerate(self._sets):
            if include_global:
                s.clear()
            elif s:
                self._sets[i] = {k: e for k, e in s.items() if e.global_}
        self._recount()
        self.flushes += 1
        return before - len(self)

    def flush_asid(self, asid: int) -> int:
        """Drop the non-global entries of ``asid`` (INVPCID single-context); return how many.

        Without PCID, ``asid`` must be 0 and this equals :meth:`flush_all`.
        """
        tag = self._tag(asid)
        before = len(self)
        for i, s in enumerate(self._sets):
            if s:
                self._sets[i] = {
                    k: e for k, e in s.items() if e.global_ or (k & ((1 << _TAG_BITS) - 1)) != tag
                }
        self._recount()
        self.flushes += 1
        return before - len(self)

    def _drop_page(self, vaddr: int, tag: int | None) -> int:
        dropped = 0
        tag_mask = (1 << _TAG_BITS) - 1
        for shift, code in self._active:
            vpn = vaddr >> shift
            s = self._sets[vpn % self.nr_sets]
            page = (vpn << 2) | code
            for key in [k for k in s if k >> _TAG_BITS == page]:
                if tag is None or (key & tag_mask) == tag or s[key].global_:
                    self._remove(s, key)
                    dropped += 1
        if dropped:
            self._refresh()
        return dropped

    def invlpg(self, vaddr: int, asid: int | None = None) -> int:
        """Drop the entries that translate ``vaddr`` (INVLPG); return how many.

        Args:
            asid: drop that ASID's entry and global ones, as INVLPG does for the current
                PCID; None: drop the page's entries of every ASID.
        """
        vaddr = check_vaddr(vaddr)
        tag = None if asid is None else self._tag(asid)
        self.invlpgs += 1
        return self._drop_page(vaddr, tag)

    def drop_page(self, vaddr: int, asid: int | None = None) -> int:
        """Drop the entries of ``vaddr``'s page like :meth:`invlpg`, without counting an
        INVLPG: what a page fault does to the faulting address's entries on x86."""
        vaddr = check_vaddr(vaddr)
        return self._drop_page(vaddr, None if asid is None else self._tag(asid))

    # ------------------------------------------------------------------ accounting

    def record_walk(self, cycles: int) -> None:
        """Count one page-table walk of ``cycles`` (the MMU reports its walks here)."""
        self.walks += 1
        self.walk_cycles += cycles

    def add_walk_cycles(self, cycles: int) -> None:
        """Add the cycles of walks counted (by :meth:`record_walk`) before they were timed:
        a batch's walks, timed when replayed through the caches."""
        self.walk_cycles += _check_int(cycles, "cycles")

    def record_hits(self, n: int) -> None:
        """Count ``n`` more hits: accesses a batched caller served from the entry that its
        previous lookup returned, with nothing in between (so the LRU order is unchanged)."""
        self.hits += n

    # ------------------------------------------------------------------ introspection

    def entries(self) -> list[TlbEntry]:
        """The valid entries, set by set, each set from its victim end (LRU/FIFO order)."""
        return [e for s in self._sets for e in s.values()]

    def statistics(self) -> TlbStatistics:
        return TlbStatistics(
            hits=self.hits,
            misses=self.misses,
            walks=self.walks,
            walk_cycles=self.walk_cycles,
            flushes=self.flushes,
            invlpgs=self.invlpgs,
            evictions=self.evictions,
        )

    def check_invariants(self) -> None:
        """Assert that every entry sits in its set under its key and the counts agree."""
        count = [0, 0, 0, 0]
        nr_global = 0
        for index, s in enumerate(self._sets):
            assert len(s) <= self.ways, f"set {index} holds {len(s)} > {self.ways} entries"
            for key, e in s.items():
                code = _CODE[e.page_size]
                vpn = e.vaddr >> _SHIFTS[code]
                assert vpn << _SHIFTS[code] == e.vaddr, f"{e} is not aligned"
                assert vpn % self.nr_sets == index, f"{e} is in set {index}"
                tag = 0 if e.global_ and self.pcid else e.asid + 1
                assert key == (vpn << _PAGE_BITS) | (code << _TAG_BITS) | tag, f"{e} key {key}"
                count[code] += 1
                nr_global += e.global_
        assert count == self._count, f"counts {self._count} != {count}"
        assert nr_global == self._nr_global
        assert self._active == tuple((_SHIFTS[c], c) for c in range(4) if count[c])
        assert self._global_probe == (self.pcid and nr_global > 0)
