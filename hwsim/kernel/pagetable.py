"""The kernel page table (arch/x86/mm/, include/linux/pgtable.h), as data in simulated RAM.

The tables are real: each is a 4 KiB page from the buddy allocator whose entries are stored
little-endian in :class:`~hwsim.devices.ram.RamModel`, so the MMU's page-table walker reads
the very bytes this module writes. Three paging modes, with the hardware's geometry:

==========  ====================================================  ======  ========
mode        levels (virtual address bits)                         entry   per table
==========  ====================================================  ======  ========
4-level     PGD/PML4 47..39, PUD 38..30, PMD 29..21, PTE 20..12   8 B     512
i386        PGD 31..22, PTE 21..12 (PUD and PMD folded away)      4 B     1024
i386 PAE    PGD/PDPT 31..30, PMD 29..21, PTE 20..12               8 B     4/512/512
==========  ====================================================  ======  ========

With 4-level paging Linux folds P4D into the PGD, and the PAE PDPT is Linux's ``pgd``; walk
steps are named as Linux names them ("PGD", "PUD", "PMD", "PTE").

What :class:`KernelPageTable` builds at construction, as the kernel does at boot:

- the top-level table (``swapper_pg_dir``, loaded into CR3);
- the direct map of all RAM (x86_64) or of low memory (i386) at PAGE_OFFSET with large
  pages: 2 MiB PMD entries on x86_64 and with PAE, 4 MiB PGD entries on non-PAE i386, 4 KiB
  PTEs for a tail that is not a whole large page; present|rw|accessed|dirty|global, +NX where
  the hardware has it (``__PAGE_KERNEL_LARGE``);
- on x86_64, the PUD pages of the whole vmalloc range (``preallocate_vmalloc_pages()``,
  arch/x86/mm/init_64.c: 64 pages for the 32 TiB), so every later vmalloc mapping lives
  below PGD entries that all page tables share.

Later mappings (vmalloc) allocate PMD and PTE pages on demand (``__pte_alloc_kernel``) with
GFP_KERNEL|__GFP_ZERO. Kernel page-table pages are never freed when they empty again: Linux
keeps them (``vunmap_range`` clears PTEs only), and so does this model; unmapping therefore
never returns a page-table page to the buddy allocator. An operation that fails (a table
could not be allocated, an entry is already in use) frees the tables it allocated and
restores every entry it wrote, so a failed call changes nothing.

Deviations from Linux, on purpose:

- the direct-map tables come from the buddy allocator (Linux builds them from memblock
  before the buddy allocator exists) and are counted in :attr:`PageTable.nr_pagetable_pages`
  (meminfo's PageTables) with the rest; :attr:`KernelPageTable.nr_boot_pagetable_pages` says
  how many of them were built at construction;
- the direct map uses 2 MiB pages even where Linux would use 1 GiB pages (gbpages); walks
  do decode 1 GiB PUD leaves;
- no TLB here: whoever caches translations must be told about unmaps (the TLB unit);
- a write-through shadow of every page-table page (a list of ints per table) serves the
  model's own map/unmap bookkeeping, which keeps vmalloc fast. RAM is always updated at once
  and :meth:`PageTable.walk` - what the MMU does - always reads RAM. The model assumes, as
  Linux does, that only this code writes the kernel's page tables;
  :meth:`PageTable.check_invariants` compares the shadow with RAM.

Example:
    >>> from hwsim.devices.ram import RamModel
    >>> from hwsim.kernel.buddy import BuddyAllocator
    >>> from hwsim.kernel.layout import layout_for
    >>> ram = RamModel(size=64 << 20)
    >>> pt = KernelPageTable(BuddyAllocator(16384), ram, layout_for("x86_64", 64 << 20))
    >>> t = pt.walk(0xFFFF888000000000 + 0x123456)
    >>> hex(t.phys), t.page_size >> 20, [step.level for step in t.steps]
    ('0x123456', 2, ['PGD', 'PUD', 'PMD'])
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

import attrs

from ..devices.paging import (  # noqa: F401  (re-exported for kernel code and tests)
    _KERNPG_TABLE,
    _PAGE_ACCESSED,
    _PAGE_DIRTY,
    _PAGE_GLOBAL,
    _PAGE_NX,
    _PAGE_PAT,
    _PAGE_PCD,
    _PAGE_PRESENT,
    _PAGE_PSE,
    _PAGE_PWT,
    _PAGE_RW,
    _PAGE_USER,
    I386_2LEVEL,
    I386_PAE,
    X86_64_4LEVEL,
    PagingLevel,
    PagingMode,
    Translation,
    WalkStep,
)
from ..devices.ram import PhysMemory
from ..errors import SegmentationFault
from ..units import PAGE_SHIFT, PAGE_SIZE
from . import gfp as G
from .buddy import BuddyAllocator
from .layout import Layout

# Entry bits (arch/x86/include/asm/pgtable_types.h).
PAGE_KERNEL_EXEC = _PAGE_PRESENT | _PAGE_RW | _PAGE_DIRTY | _PAGE_ACCESSED | _PAGE_GLOBAL
PAGE_KERNEL = PAGE_KERNEL_EXEC | _PAGE_NX
PAGE_KERNEL_LARGE = PAGE_KERNEL | _PAGE_PSE

# GFP_PGTABLE_KERNEL (include/asm-generic/pgalloc.h): zeroed, from low memory.
GFP_PGTABLE_KERNEL = G.GFP_KERNEL | G.__GFP_ZERO

# Costs in cycles. A software walk (vmalloc_to_page) reads entries that are usually cached.
WALK_STEP_CYCLES = 30
ENTRY_WRITE_CYCLES = 50
CLEAR_PAGE_CYCLES = PAGE_SIZE // 16  # clear_page(): rep stosq at ~16 bytes a cycle


class PageNotPresent(SegmentationFault):
    """A walk met a not-present entry.

    Attributes:
        level: the level whose entry was not present.
        steps: the entries read, the not-present one last.
    """

    def __init__(self, message: str, address: int, level: str, steps: tuple[WalkStep, ...]):
        super().__init__(message, address=address)
        self.level = level
        self.steps = steps


@attrs.frozen
class PageTableStatistics:
    nr_pagetable_pages: int
    nr_boot_pagetable_pages: int
    walks: int
    entries_written: int
    pages_mapped: int
    pages_unmapped: int


def _check_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {value!r}")
    return value


class PageTable:
    """A page-table tree in RAM, its pages from the buddy allocator.

    Args:
        buddy: where page-table pages come from (order 0, GFP_KERNEL|__GFP_ZERO).
        ram: where the tables live.
        mode: the paging mode's geometry.
        cpu: the CPU whose per-CPU page lists serve the table allocations.
    """

    def __init__(self, buddy: BuddyAllocator, ram: PhysMemory, mode: PagingMode, cpu: int = 0):
        self.buddy = buddy
        self.ram = ram
        self.mode = mode
        self.cpu = cpu
        self.nr_pagetable_pages = 0
        self.nr_boot_pagetable_pages = 0
        self.walks = self.entries_written = self.pages_mapped = self.pages_unmapped = 0
        self._tables: dict[int, list[int]] = {}  # table phys -> entries (write-through)
        self._table_pfns: set[int] = set()
        self._fmt = "<Q" if mode.entry_size == 8 else "<I"
        self._leaf = mode.levels[-1]
        self._leaf_depth = len(mode.levels) - 1
        self._max_pfn = mode.addr_mask >> PAGE_SHIFT
        # Valid addresses have these top bits: canonical halves on x86_64, 32 bits on i386.
        self._top_shift = 47 if mode.va_bits == 48 else 32
        self._top_ones = (1 << 17) - 1 if mode.va_bits == 48 else 0
        self._clock: int | None = None  # the cycle an operation has reached, when timed
        self._journal: tuple[list[tuple[int, int, int]], list[int]] | None = None
        #: Called as ``flush(start, end)`` after entries were cleared: the machine's TLB
        #: shootdown (``flush_tlb_kernel_range`` on every CPU). None: no TLBs to flush.
        self.tlb_flush: Callable[[int, int], None] | None = None
        self.pgd = self._alloc_table(mode.levels[0].nr_entries)

    @property
    def cr3(self) -> int:
        """The physical address of the top-level table, as loaded into CR3."""
        return self.pgd

    # ------------------------------------------------------------------ entries in RAM

    def read_entry(self, table_phys: int, index: int) -> int:
        """The raw entry ``index`` of the table at ``table_phys``, read from RAM."""
        es = self.mode.entry_size
        data = self.ram.read(table_phys + index * es, es)
        return int.from_bytes(data, "little")

    def write_entry(self, table_phys: int, index: int, value: int) -> None:
        """Store an entry in one of this tree's tables (RAM and the shadow)."""
        entries = self._tables.get(table_phys)
        if entries is None:
            raise ValueError(f"{table_phys:#x} is not a page-table page of this page table")
        if not 0 <= index < len(entries):
            raise ValueError(f"entry index {index} is outside 0..{len(entries) - 1}")
        if not 0 <= value < 1 << (8 * self.mode.entry_size):
            raise ValueError(f"entry value {value:#x} does not fit {self.mode.entry_size} bytes")
        entries[index] = value
        self.ram.write(table_phys + index * self.mode.entry_size, struct.pack(self._fmt, value))
        self.entries_written += 1
        if self._clock is not None:
            self._clock += ENTRY_WRITE_CYCLES

    def _write_run(self, table: int, index: int, values: list[int]) -> None:
        """Store consecutive entries with one RAM write."""
        self._tables[table][index : index + len(values)] = values
        es = self.mode.entry_size
        data = struct.pack(f"<{len(values)}{self._fmt[1]}", *values)
        self.ram.write(table + index * es, data)
        self.entries_written += len(values)
        if self._clock is not None:
            self._clock += ENTRY_WRITE_CYCLES * len(values)

    def is_pagetable_page(self, pfn: int) -> bool:
        """Whether ``pfn`` holds one of this tree's tables (never to be freed by others)."""
        return pfn in self._table_pfns

    def holds_pagetable_page(self, pfns: Sequence[int]) -> bool:
        """Whether any of ``pfns`` holds one of this tree's tables (one C-level pass)."""
        return not self._table_pfns.isdisjoint(pfns)

    def pagetable_pfns(self) -> list[int]:
        """The pfns of this tree's tables, sorted."""
        return sorted(self._table_pfns)

    # ------------------------------------------------------------------ tables

    def _alloc_table(self, nr_entries: int) -> int:
        """``pagetable_alloc(GFP_PGTABLE_KERNEL, 0)``: a zeroed page, counted."""
        pfn = self.buddy.alloc_pages(0, GFP_PGTABLE_KERNEL, self.cpu)
        if self._clock is not None:
            self._clock = self.buddy.charge(self._clock) + CLEAR_PAGE_CYCLES
        phys = pfn << PAGE_SHIFT
        self.ram.write(phys, bytes(PAGE_SIZE))
        self._tables[phys] = [0] * nr_entries
        self._table_pfns.add(pfn)
        self.nr_pagetable_pages += 1
        return phys

    def _free_table(self, phys: int) -> None:
        del self._tables[phys]
        self._table_pfns.discard(phys >> PAGE_SHIFT)
        self.nr_pagetable_pages -= 1
        self.buddy.free_pages(phys >> PAGE_SHIFT, 0, self.cpu)

    def _table_for(
        self, vaddr: int, depth: int, undo: list[tuple[int, int, int]], new: list[int]
    ) -> int:
        """The table at level ``depth`` that covers ``vaddr``, allocating missing ones.

        Entries written and tables allocated are appended to ``undo`` and ``new``.
        """
        table = self.pgd
        tables = self._tables
        levels = self.mode.levels
        for d in range(depth):
            level = levels[d]
            index = (vaddr >> level.shift) & (level.nr_entries - 1)
            entry = tables[table][index]
            if self._clock is not None:
                self._clock += WALK_STEP_CYCLES
            if not entry & _PAGE_PRESENT:
                child = self._alloc_table(levels[d + 1].nr_entries)
                new.append(child)
                undo.append((table, index, entry))
                self.write_entry(table, index, child | level.table_flags)
                table = child
                continue
            if level.large and entry & _PAGE_PSE:
                raise ValueError(
                    f"{vaddr:#x} lies in a {_size_name(1 << level.shift)} page mapped by a "
                    f"{level.name} entry ({entry:#x}); splitting large pages is not modelled"
                )
            table = entry & self.mode.addr_mask
        return table

    def _rollback(self, undo: list[tuple[int, int, int]], new: list[int]) -> None:
        clock, self._clock = self._clock, None  # the failure path is not charged
        for table, index, old in reversed(undo):
            if table in self._tables:
                self.write_entry(table, index, old)
        for phys in reversed(new):
            if any(self._tables[phys]):
                raise AssertionError(f"rolling back table {phys:#x}, which is still in use")
            self._free_table(phys)
        self._clock = clock

    def begin_journal(self) -> None:
        """Remember the tables the following map calls allocate (for :meth:`end_journal`).

        A caller that maps several ranges as one operation (vmalloc and the vmalloc'ed
        array of its pages) uses it to give back, on failure, the tables that the ranges it
        has unmapped again no longer need - so that a failed call changes nothing.
        """
        self._journal = ([], [])

    def end_journal(self, rollback: bool) -> None:
        """Stop remembering; with ``rollback``, free the tables allocated since
        :meth:`begin_journal` and clear the entries that pointed to them (every page mapped
        under them must have been unmapped)."""
        journal, self._journal = self._journal, None
        if rollback and journal is not None:
            self._rollback(*journal)

    # ------------------------------------------------------------------ checks

    def _check_vaddr(self, vaddr: object, what: str, aligned: bool = True) -> int:
        if vaddr.__class__ is int:
            top = vaddr >> self._top_shift
            if (top == 0 or top == self._top_ones) and not (aligned and vaddr & 0xFFF):
                return vaddr
        vaddr = _check_int(vaddr, f"{what}: the virtual address")
        if not 0 <= vaddr < 1 << (64 if self.mode.va_bits == 48 else 32):
            raise ValueError(f"{what}: {vaddr:#x} is not a {self.mode.va_bits}-bit address")
        if self.mode.va_bits == 48 and not self._canonical(vaddr):
            raise ValueError(f"{what}: {vaddr:#x} is not a canonical address")
        if aligned and vaddr & (PAGE_SIZE - 1):
            raise ValueError(f"{what}: {vaddr:#x} is not page aligned")
        return vaddr

    @staticmethod
    def _canonical(vaddr: int) -> bool:
        top = vaddr >> 47
        return top == 0 or top == (1 << 17) - 1

    def _check_flags(self, flags: object) -> int:
        flags = _check_int(flags, "flags")
        allowed = self.mode.flag_mask
        if flags < 0 or flags & ~allowed:
            extra = "" if self.mode.nx or not flags & _PAGE_NX else " (no NX bit in this mode)"
            raise ValueError(f"flags {flags:#x} have bits outside {allowed:#x}{extra}")
        if not flags & _PAGE_PRESENT:
            raise ValueError(f"flags {flags:#x} lack _PAGE_PRESENT: map_page maps present pages")
        return flags

    def _check_pfn(self, pfn: object) -> int:
        pfn = _check_int(pfn, "pfn")
        if pfn < 0 or (pfn << PAGE_SHIFT) & ~self.mode.addr_mask:
            raise ValueError(f"pfn {pfn:#x} does not fit a {self.mode.name} entry")
        return pfn

    # ------------------------------------------------------------------ mapping

    def default_flags(self) -> int:
        """PAGE_KERNEL in this mode (NX only where entries have it)."""
        return PAGE_KERNEL if self.mode.nx else PAGE_KERNEL_EXEC

    def map_page(self, vaddr: int, pfn: int, flags: int | None = None) -> None:
        """Map the 4 KiB page at ``vaddr`` to ``pfn`` (``set_pte_at``), tables as needed.

        Args:
            flags: entry flags; PAGE_KERNEL (present|rw|accessed|dirty|global|NX) if None.

        Raises:
            ValueError: ``vaddr`` is already mapped (Linux's vmap_pte_range WARNs and
                returns -EBUSY), lies in a large page, or an argument is malformed.
            OutOfMemory: a page-table page could not be allocated.
        """
        self.map_pages(vaddr, [pfn], flags)

    def map_pages(self, vaddr: int, pfns: Sequence[int], flags: int | None = None) -> None:
        """Map consecutive 4 KiB pages from ``vaddr`` to ``pfns`` (``vmap_pages_range``).

        All or nothing: on error no entry and no table is left behind.
        """
        vaddr = self._check_vaddr(vaddr, "map_pages")
        flags = self.default_flags() if flags is None else self._check_flags(flags)
        n = len(pfns)
        if not n:
            return
        # One C-level pass over the pfns; the slow loop only runs to name the culprit.
        if set(map(type, pfns)) != {int} or min(pfns) < 0 or max(pfns) > self._max_pfn:
            for pfn in pfns:
                self._check_pfn(pfn)
        self._check_vaddr(vaddr + ((n - 1) << PAGE_SHIFT), "map_pages")
        per_table = self._leaf.nr_entries
        undo: list[tuple[int, int, int]] = []
        new: list[int] = []
        runs: list[tuple[int, int, int, int]] = []
        pos = 0
        try:
            while pos < n:
                va = vaddr + (pos << PAGE_SHIFT)
                table = self._table_for(va, self._leaf_depth, undo, new)
                index = (va >> PAGE_SHIFT) & (per_table - 1)
                count = min(n - pos, per_table - index)
                entries = self._tables[table]
                if any(entries[index : index + count]):  # not pte_none()
                    busy = next(i for i in range(index, index + count) if entries[i])
                    bad = va + ((busy - index) << PAGE_SHIFT)
                    raise ValueError(
                        f"map_pages: {bad:#x} is already mapped (PTE {entries[busy]:#x}): "
                        "vmap_pte_range: WARN_ON(!pte_none(*pte)), -EBUSY"
                    )
                runs.append((table, index, pos, count))
                pos += count
        except BaseException:
            self._rollback(undo, new)
            raise
        for table, index, pos, count in runs:
            values = [(p << PAGE_SHIFT) | flags for p in pfns[pos : pos + count]]
            self._write_run(table, index, values)
        self.pages_mapped += n
        if self._journal is not None:
            self._journal[0].extend(undo)
            self._journal[1].extend(new)

    def unmap_page(self, vaddr: int) -> int:
        """Clear the PTE of ``vaddr``; return the pfn it mapped. Tables stay.

        Raises:
            ValueError: ``vaddr`` is not mapped by a 4 KiB PTE.
        """
        return self.unmap_pages(vaddr, 1)[0]

    def unmap_pages(self, vaddr: int, nr_pages: int) -> list[int]:
        """Clear ``nr_pages`` consecutive PTEs (``vunmap_range``); return their pfns.

        All or nothing: if any page is not mapped by a 4 KiB PTE, nothing changes.
        """
        vaddr = self._check_vaddr(vaddr, "unmap_pages")
        nr_pages = _check_int(nr_pages, "nr_pages")
        if nr_pages < 1:
            raise ValueError(f"nr_pages must be at least 1, got {nr_pages}")
        self._check_vaddr(vaddr + ((nr_pages - 1) << PAGE_SHIFT), "unmap_pages")
        per_table = self._leaf.nr_entries
        mask = self.mode.addr_mask
        runs: list[tuple[int, int, int]] = []
        pfns: list[int] = []
        pos = 0
        while pos < nr_pages:
            va = vaddr + (pos << PAGE_SHIFT)
            table = self._find_table(va, self._leaf_depth)
            index = (va >> PAGE_SHIFT) & (per_table - 1)
            count = min(nr_pages - pos, per_table - index)
            if table is None:
                raise ValueError(f"unmap_pages: {va:#x} is not mapped by a PTE")
            # Entries here are either none (0) or present: map_pages writes present ones only.
            run = self._tables[table][index : index + count]
            if 0 in run:
                missing = va + (run.index(0) << PAGE_SHIFT)
                raise ValueError(f"unmap_pages: {missing:#x} is not mapped by a PTE")
            pfns += [(e & mask) >> PAGE_SHIFT for e in run]
            runs.append((table, index, count))
            pos += count
        for table, index, count in runs:
            self._write_run(table, index, [0] * count)
        self.pages_unmapped += nr_pages
        if self.tlb_flush is not None:
            self.tlb_flush(vaddr, vaddr + (nr_pages << PAGE_SHIFT))
        return pfns

    def _find_table(self, vaddr: int, depth: int) -> int | None:
        """The existing table at level ``depth`` covering ``vaddr`` (shadow), or None."""
        table = self.pgd
        for level in self.mode.levels[:depth]:
            entry = self._tables[table][(vaddr >> level.shift) & (level.nr_entries - 1)]
            if self._clock is not None:
                self._clock += WALK_STEP_CYCLES
            if not entry & _PAGE_PRESENT or (level.large and entry & _PAGE_PSE):
                return None
            table = entry & self.mode.addr_mask
        return table

    # ------------------------------------------------------------------ walking

    def walk(self, vaddr: int) -> Translation:
        """Translate ``vaddr`` as the MMU does, reading every entry from RAM.

        Raises:
            PageNotPresent (a SegmentationFault): an entry on the way is not present; the
                message names the level ("no PTE for 0x... (PMD entry not present)").
            SegmentationFault: ``vaddr`` is not canonical (a general protection fault).
            TypeError, ValueError: ``vaddr`` is not an address of this mode.
        """
        vaddr = _check_int(vaddr, "walk: the virtual address")
        mode = self.mode
        if not 0 <= vaddr < 1 << (64 if mode.va_bits == 48 else 32):
            raise ValueError(f"walk: {vaddr:#x} is not a {mode.va_bits}-bit address")
        if mode.va_bits == 48 and not self._canonical(vaddr):
            raise SegmentationFault(
                f"general protection fault, probably for non-canonical address {vaddr:#x}",
                address=vaddr,
            )
        self.walks += 1
        steps: list[WalkStep] = []
        table = self.pgd
        writable = user = True
        nx = False
        levels = mode.levels
        es = mode.entry_size
        for depth, level in enumerate(levels):
            index = (vaddr >> level.shift) & (level.nr_entries - 1)
            address = table + index * es
            entry = int.from_bytes(self.ram.read(address, es), "little")
            steps.append(WalkStep(level.name, table, index, entry, address))
            if not entry & _PAGE_PRESENT:
                what = levels[depth + 1].name if depth + 1 < len(levels) else "page"
                raise PageNotPresent(
                    f"no {what} for {vaddr:#x} ({level.name} entry not present)",
                    vaddr,
                    level.name,
                    tuple(steps),
                )
            if level.permissions:
                writable = writable and bool(entry & _PAGE_RW)
                user = user and bool(entry & _PAGE_USER)
                nx = nx or bool(mode.nx and entry & _PAGE_NX)
            if depth == len(levels) - 1 or (level.large and entry & _PAGE_PSE):
                size = 1 << level.shift
                base = entry & mode.addr_mask & ~(size - 1)
                return Translation(
                    vaddr=vaddr,
                    phys=base | (vaddr & (size - 1)),
                    page_size=size,
                    flags=entry & mode.flag_mask,
                    steps=tuple(steps),
                    writable=writable,
                    user=user,
                    nx=nx,
                )
            table = entry & mode.addr_mask
        raise AssertionError("unreachable: the last level always maps")  # pragma: no cover

    def translate(self, vaddr: int) -> int:
        """The physical address ``vaddr`` maps to (see :meth:`walk`)."""
        return self.walk(vaddr).phys

    # ------------------------------------------------------------------ timing

    def timed_walk(self, vaddr: int, at: int) -> tuple[Translation, int]:
        translation = self.walk(vaddr)
        return translation, at + WALK_STEP_CYCLES * len(translation.steps)

    def timed_map_pages(
        self, vaddr: int, pfns: Sequence[int], flags: int | None, at: int
    ) -> tuple[None, int]:
        self._clock = at
        try:
            self.map_pages(vaddr, pfns, flags)
            done = at if self._clock is None else self._clock
        finally:
            self._clock = None
        return None, done

    def timed_unmap_pages(self, vaddr: int, nr_pages: int, at: int) -> tuple[list[int], int]:
        self._clock = at
        try:
            pfns = self.unmap_pages(vaddr, nr_pages)
            done = at if self._clock is None else self._clock
        finally:
            self._clock = None
        return pfns, done

    # ------------------------------------------------------------------ introspection

    def statistics(self) -> PageTableStatistics:
        return PageTableStatistics(
            nr_pagetable_pages=self.nr_pagetable_pages,
            nr_boot_pagetable_pages=self.nr_boot_pagetable_pages,
            walks=self.walks,
            entries_written=self.entries_written,
            pages_mapped=self.pages_mapped,
            pages_unmapped=self.pages_unmapped,
        )

    def check_invariants(self) -> None:
        """Assert the shadow equals RAM and every table is a live buddy page."""
        es = self.mode.entry_size
        for phys, entries in self._tables.items():
            raw = self.ram.read(phys, len(entries) * es)
            fmt = f"<{len(entries)}{self._fmt[1]}"
            assert list(struct.unpack(fmt, raw)) == entries, f"table {phys:#x} differs from RAM"
            assert self.buddy.allocated.get(phys >> PAGE_SHIFT) == 0, f"table {phys:#x} freed"
        assert len(self._tables) == self.nr_pagetable_pages


class KernelPageTable(PageTable):
    """The kernel's page table (``init_mm.pgd``): the direct map plus vmalloc mappings.

    Args:
        buddy: the page allocator (its arch must be the layout's).
        ram: physical memory.
        layout: the kernel's address layout (PAGE_OFFSET, the direct map's size, vmalloc).
        pae: on i386, use PAE (3-level, 8-byte entries, NX) instead of 2-level paging.

    Raises:
        ValueError: mismatched arch, RAM smaller than the layout, PAE on x86_64.
        OutOfMemory: the tables do not fit (nothing is left allocated).
    """

    def __init__(
        self, buddy: BuddyAllocator, ram: PhysMemory, layout: Layout, *, pae: bool = False
    ) -> None:
        if not isinstance(buddy, BuddyAllocator):
            raise TypeError(f"buddy must be a BuddyAllocator, got {buddy!r}")
        if not isinstance(ram, PhysMemory):
            raise TypeError(f"ram must be a RamModel or a CoherentHierarchy, got {ram!r}")
        if not isinstance(layout, Layout):
            raise TypeError(f"layout must be a Layout, got {layout!r}")
        if not isinstance(pae, bool):
            raise TypeError(f"pae must be a bool, got {pae!r}")
        if buddy.arch != layout.arch:
            raise ValueError(f"the buddy allocator is {buddy.arch}, the layout {layout.arch}")
        if ram.size < layout.direct_map_size:
            raise ValueError(
                f"RAM ({ram.size:#x} bytes) is smaller than the direct map "
                f"({layout.direct_map_size:#x} bytes)"
            )
        if layout.arch == "x86_64":
            if pae:
                raise ValueError("PAE is a 32-bit (i386) paging mode; x86_64 uses 4-level")
            mode = X86_64_4LEVEL
        else:
            mode = I386_PAE if pae else I386_2LEVEL
        self.layout = layout
        self.pae = pae
        super().__init__(buddy, ram, mode)
        try:
            self._map_direct()
            if layout.arch == "x86_64":
                self._preallocate_vmalloc()
        except BaseException:
            for phys in list(self._tables):
                self._free_table(phys)
            raise
        self.nr_boot_pagetable_pages = self.nr_pagetable_pages

    def _map_direct(self) -> None:
        """``kernel_physical_mapping_init``: large pages, 4 KiB PTEs for a short tail."""
        layout, mode = self.layout, self.mode
        nx = _PAGE_NX if mode.nx else 0
        large = [lv for lv in mode.levels[:-1] if lv.large][-1]  # 2 MiB, or 4 MiB on i386
        depth = mode.levels.index(large)
        size = 1 << large.shift
        whole = layout.direct_map_size & ~(size - 1)
        undo: list[tuple[int, int, int]] = []
        new: list[int] = []
        dirty: dict[int, None] = {}
        for phys in range(0, whole, size):
            va = layout.page_offset + phys
            table = self._table_for(va, depth, undo, new)
            index = (va >> large.shift) & (large.nr_entries - 1)
            self._tables[table][index] = phys | PAGE_KERNEL_EXEC | _PAGE_PSE | nx
            dirty[table] = None
        for phys in range(whole, layout.direct_map_size, PAGE_SIZE):
            va = layout.page_offset + phys
            table = self._table_for(va, len(mode.levels) - 1, undo, new)
            index = (va >> PAGE_SHIFT) & (self._leaf.nr_entries - 1)
            self._tables[table][index] = phys | PAGE_KERNEL_EXEC | nx
            dirty[table] = None
        for table in dirty:
            entries = self._tables[table]
            self.ram.write(table, struct.pack(f"<{len(entries)}{self._fmt[1]}", *entries))
            self.entries_written += len(entries)

    def _preallocate_vmalloc(self) -> None:
        """``preallocate_vmalloc_pages``: a PUD page under each PGD entry of vmalloc space."""
        pgd = self.mode.levels[0]
        step = 1 << pgd.shift
        first = self.layout.vmalloc_start >> pgd.shift
        last = (self.layout.vmalloc_end - 1) >> pgd.shift
        for i in range(first, last + 1):
            self._table_for(i * step, 1, [], [])


def _size_name(size: int) -> str:
    return f"{size >> 30} GiB" if size >= 1 << 30 else f"{size >> 20} MiB"
