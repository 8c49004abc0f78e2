"""The MMU: x86 address translation in hardware - TLB, page-table walker, permission checks.

A plain synchronous model; the actor that wraps it and its messages are in
:mod:`hwsim.devices.mmu_unit`, the batch path (:meth:`MmuModel.translate_many`) in
:mod:`hwsim.devices.mmu_batch`, page faults in :mod:`hwsim.devices.pagefault`; this module
re-exports their public names, so ``hwsim.devices.mmu`` stays the one place to import
the MMU from.

The walker knows only what the hardware knows: the paging mode's geometry (levels, index
bits, entry size), the x86 entry bits and CR3, the physical address of the top-level table.
It reads the entries from :class:`~hwsim.devices.ram.RamModel` - the bytes the kernel's
page-table code wrote - so it sees exactly what is mapped. The geometry and the bits are
defined on the hardware side (:mod:`hwsim.devices.paging`), so that the kernel
(``hwsim.kernel.pagetable``) can import them and devices never import the kernel.

What a translation does, as x86 does it (Intel SDM vol. 3, ch. 4; Linux arch/x86/mm/fault.c):

- a TLB hit costs ``tlb_latency`` cycles; the cached entry holds the effective rights, so a
  hit is checked without walking;
- a miss walks the tables from CR3, one entry read per level (``walk_latency_per_level``
  cycles each in the functional path; a RAM access each, with the channel's contention, in
  :meth:`MmuModel.timed_translate`), stops at a large page (PSE in a PMD/PUD entry, or a
  non-PAE i386 PGD entry: 4 MiB) and caches ONE entry of that page's size: a 2 MiB page of
  the kernel's direct map is one TLB entry;
- checks, with CR0.WP=1 as Linux sets it: present at every level; a write needs RW at every
  level, in kernel mode too; a user access needs USER at every level; an instruction fetch
  faults if any level has NX (modes with NX: x86_64 and PAE). The PAE PDPT entries carry no
  rights. A violation raises :class:`PageFault` with x86's error code;
- accessed/dirty bits: the walker sets ACCESSED in every entry it used (not in the PAE PDPT,
  whose entries have no such bit) and DIRTY in the leaf on a write, in RAM, as the hardware
  does with a locked update - only once the translation has succeeded. A write that hits a
  TLB entry cached without DIRTY walks again to set it (x86 never writes through a clean
  entry); that costs a walk, counted as one, but the lookup stays a hit. With
  ``set_accessed_dirty=False`` the MMU never writes RAM;
- global entries (G in the leaf) survive CR3 loads; Linux sets CR4.PGE, so G is always
  honoured here;
- a page fault invalidates the TLB entries of the faulting page (SDM 4.10.4.1: "a page-fault
  exception ... will invalidate ... any TLB entry for that address's page number"), so that
  the retry after the fault handler fixed the tables walks afresh. Apart from that and the
  TLB's lookup/walk counters, a failed translation changes nothing (no A/D bit, no fill);
- CR3 loads: without PCID they flush every non-global entry; with PCID (x86_64 only) they
  flush the new ASID's non-global entries unless ``noflush`` (CR3 bit 63) is given;
- a non-canonical x86_64 address is a general protection fault, not a page fault
  (:class:`GeneralProtectionFault`), raised before the TLB is consulted.

Not modelled: SMEP/SMAP (a supervisor access to a user page is allowed), protection keys,
reserved-bit faults (RSVD), PAT/PCD/PWT effects, the paging-structure caches (each miss
reads every level), separate instruction and data TLBs, 5-level paging, PSE-36, and the
PAE PDPTE registers (the PDPT is read at each walk instead of at the CR3 load).

Example:
    >>> from hwsim.config import TlbConfig
    >>> from hwsim.devices.ram import RamModel
    >>> from hwsim.devices.tlb import TlbModel
    >>> ram = RamModel(size=1 << 20)
    >>> # A 2 MiB kernel page at virtual 0x40000000, built by hand: PGD -> PUD -> PMD leaf.
    >>> ram.write(0x1000, (0x2000 | 0x63).to_bytes(8, "little"))  # present|rw|accessed|dirty
    >>> ram.write(0x2000 + 1 * 8, (0x3000 | 0x63).to_bytes(8, "little"))
    >>> ram.write(0x3000, (0x0 | 0xE3).to_bytes(8, "little"))  # ... |PSE: a 2 MiB page at 0
    >>> mmu = MmuModel(ram, TlbModel(TlbConfig()), mode=X86_64_4LEVEL,
    ...                walk_latency_per_level=30, tlb_latency=1)
    >>> mmu.load_cr3(0x1000)
    >>> phys, cycles = mmu.translate(0x40012345, write=False, user=False)
    >>> hex(phys), cycles  # a miss: the TLB lookup and three levels
    ('0x12345', 91)
    >>> mmu.translate(0x401FFFF0, write=False, user=False)[1]  # same 2 MiB page: a hit
    1
    >>> try:
    ...     mmu.translate(0x40000000, write=False, user=True)
    ... except PageFault as fault:
    ...     print(fault)
    BUG: unable to handle page fault for address: 0000000040000000
    #PF: user read access in user mode
    #PF: error_code(0x0005) - permissions violation
    hwsim: protection: user access to kernel page: USER clear (TLB entry of a PMD-mapped page)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from . import mmu_batch

# The actor and its messages, re-exported (mmu_unit imports this module for types only).
from .mmu_unit import FlushTlbKernelRange as FlushTlbKernelRange
from .mmu_unit import Invlpg as Invlpg
from .mmu_unit import LoadCr3 as LoadCr3
from .mmu_unit import Mmu as Mmu
from .mmu_unit import MmuStatistics as MmuStatistics
from .mmu_unit import RecordWalkCycles as RecordWalkCycles
from .mmu_unit import TraceTranslation as TraceTranslation
from .mmu_unit import Translate as Translate
from .mmu_unit import TranslateTrace as TranslateTrace
from .pagefault import (
    BEYOND_RAM,
    FETCH_FROM_NX,
    NOT_PRESENT,
    USER_TO_KERNEL,
    WRITE_TO_READ_ONLY,
    X86_PF_INSTR,
    X86_PF_PROT,
    X86_PF_RSVD,
    X86_PF_USER,
    X86_PF_WRITE,
    GeneralProtectionFault,
    PageFault,
)
from .paging import (  # noqa: F401  (re-exported: the MMU's public vocabulary)
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
    PAGING_MODES,
    X86_64_4LEVEL,
    PagingLevel,
    PagingMode,
    Translation,
    WalkStep,
    decode_flags,
)
from .ram import TimedMemory
from .tlb import TlbEntry, TlbModel

#: Linux's tlb_single_page_flush_ceiling: above this many pages a range flush flushes all.
TLB_SINGLE_PAGE_FLUSH_CEILING = 33
PAGE_SIZE = 4096


def _check_bool(value: object, what: str) -> bool:
    if value.__class__ is not bool:
        raise TypeError(f"{what} must be True or False, got {value!r}")
    return value


def _check_cycles(value: object, what: str) -> int:
    if value.__class__ is int and value >= 0:  # the common case
        return value
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{what} must be an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    return int(value)


class MmuModel:
    """One CPU's MMU: translates virtual addresses through its TLB and the page tables in RAM.

    Args:
        ram: what the walker reads the page tables through: RAM itself, or the CPU's L1
            (a :class:`~hwsim.devices.coherence.WalkerPort`, as x86's walker does).
        tlb: the CPU's TLB.
        mode: the paging mode (:data:`X86_64_4LEVEL`, :data:`I386_2LEVEL`, :data:`I386_PAE`).
        walk_latency_per_level: cycles per entry read in the functional path.
        tlb_latency: cycles of a TLB lookup (every translation pays it).
        set_accessed_dirty: set the A/D bits in RAM as the hardware does.

    Raises:
        TypeError, ValueError: malformed arguments; a PCID-tagged TLB outside 4-level paging
            (CR4.PCIDE exists only in 64-bit mode).
    """

    def __init__(
        self,
        ram: TimedMemory,
        tlb: TlbModel,
        *,
        mode: PagingMode,
        walk_latency_per_level: int,
        tlb_latency: int,
        set_accessed_dirty: bool = True,
    ) -> None:
        if not isinstance(ram, TimedMemory):
            raise TypeError(f"ram must be a RamModel or a WalkerPort, got {ram!r}")
        if not isinstance(tlb, TlbModel):
            raise TypeError(f"tlb must be a TlbModel, got {tlb!r}")
        if not isinstance(mode, PagingMode):
            raise TypeError(
                f"mode must be a hwsim.devices.mmu.PagingMode (one of {', '.join(PAGING_MODES)}"
                f"), got {mode!r}"
            )
        if tlb.pcid and mode.va_bits != 48:
            raise ValueError(f"PCID exists only in 64-bit mode; {mode.name} paging has none")
        self.ram = ram
        self.tlb = tlb
        self.mode = mode
        self.walk_latency_per_level = _check_cycles(
            walk_latency_per_level, "walk_latency_per_level"
        )
        self.tlb_latency = _check_cycles(tlb_latency, "tlb_latency")
        self.set_accessed_dirty = _check_bool(set_accessed_dirty, "set_accessed_dirty")
        self.asid = 0
        self._cr3: int | None = None
        self._levels = mode.levels
        self._last = len(mode.levels) - 1
        self._va_limit = 1 << (64 if mode.va_bits == 48 else 32)
        self._width = 16 if mode.va_bits == 48 else 8
        self._level_of_size = {1 << lv.shift: lv.name for lv in mode.levels if lv.large}
        # translate_many's record of the walker's memory accesses: (access index, physical
        # address, is a write), so that a caller can replay them through the caches.
        self._walk_log: list[tuple[int, int, bool]] | None = None
        self._walk_pos = 0

    def __repr__(self) -> str:
        cr3 = "unset" if self._cr3 is None else f"{self._cr3:#x}"
        return f"<MmuModel {self.mode.name} paging, CR3 {cr3}, asid {self.asid}>"

    @property
    def address_limit(self) -> int:
        """One past the last virtual address: 2**64 (x86_64), 2**32 (i386)."""
        return self._va_limit

    @property
    def address_width(self) -> int:
        """Hex digits of an address in an oops: 16 (x86_64), 8 (i386)."""
        return self._width

    # ------------------------------------------------------------------ CR3

    @property
    def cr3(self) -> int | None:
        """The physical address of the top-level table (None until :meth:`load_cr3`)."""
        return self._cr3

    def load_cr3(self, root_phys: int, asid: int = 0, *, noflush: bool = False) -> None:
        """``MOV to CR3``: switch to the page tables at ``root_phys``.

        Without PCID every non-global TLB entry is flushed (``asid`` must be 0). With PCID
        the entries of ``asid`` are flushed unless ``noflush`` (CR3 bit 63), which keeps
        them valid: Linux's switch_mm when the ASID's TLB generation is current.

        Raises:
            TypeError, ValueError: a root that is not an aligned table inside RAM (4 KiB;
                32 bytes for the PAE PDPT), a bad ASID, ``noflush`` without PCID.
        """
        root = _check_cycles(root_phys, "root_phys")
        asid = _check_cycles(asid, "asid")
        _check_bool(noflush, "noflush")
        align = 32 if self.mode.name == "PAE" else 4096
        if root % align:
            raise ValueError(f"CR3: the top-level table at {root:#x} is not {align}-byte aligned")
        top = self._levels[0]
        if root + top.nr_entries * self.mode.entry_size > self.ram.size:
            raise ValueError(f"CR3: the top-level table at {root:#x} is beyond the end of RAM")
        self.tlb.check_asid(asid)
        if not self.tlb.pcid:
            if asid or noflush:
                raise ValueError(
                    "CR3: without PCID (TlbConfig(pcid=True)) the ASID must be 0 and a CR3 "
                    "load always flushes the non-global TLB entries"
                )
            self.tlb.flush_all()
        elif not noflush:
            self.tlb.flush_asid(asid)
        self._cr3 = root
        self.asid = asid

    def invlpg(self, vaddr: int) -> int:
        """``INVLPG``: drop the TLB entries of ``vaddr``'s page (this ASID's and global ones)."""
        return self.tlb.invlpg(vaddr, self.asid)

    def flush_tlb_kernel_range(self, start: int, end: int) -> int:
        """This CPU's part of Linux's ``flush_tlb_kernel_range`` (arch/x86/mm/tlb.c): one
        ``INVLPG`` per page up to ``tlb_single_page_flush_ceiling`` (33) pages, beyond that
        the whole TLB, global entries included (kernel mappings are global). Returns how
        many entries were dropped."""
        start = _check_cycles(start, "start") & ~(PAGE_SIZE - 1)
        end = _check_cycles(end, "end")
        if end > self._va_limit:  # checked before any entry is dropped
            raise ValueError(f"flush_tlb_kernel_range: end {end:#x} is beyond the address space")
        pages = -(-(end - start) // PAGE_SIZE)
        if pages > TLB_SINGLE_PAGE_FLUSH_CEILING:
            return self.tlb.flush_all(include_global=True)
        return sum(self.tlb.invlpg(start + i * PAGE_SIZE, self.asid) for i in range(pages))

    # ------------------------------------------------------------------ checks

    def _check_vaddr(self, vaddr: object) -> int:
        if vaddr.__class__ is not int:
            if isinstance(vaddr, bool) or not isinstance(vaddr, int | np.integer):
                raise TypeError(f"a virtual address is an int, got {vaddr!r}")
            vaddr = int(vaddr)
        if vaddr < 0:
            raise ValueError(f"a virtual address cannot be negative, got {vaddr}")
        if vaddr >= self._va_limit:
            raise ValueError(f"{vaddr:#x} is not a {self._width * 4}-bit virtual address")
        if self._width == 16:
            top = vaddr >> 47
            if top and top != 0x1FFFF:
                raise GeneralProtectionFault(
                    f"general protection fault, probably for non-canonical address {vaddr:#x}: "
                    "0000 [#1] (bits 63..48 must all equal bit 47)",
                    address=vaddr,
                )
        return vaddr

    def _check_access(self, write: object, user: object, exec_: object) -> None:
        if write.__class__ is not bool or user.__class__ is not bool or exec_.__class__ is not bool:
            _check_bool(write, "write")
            _check_bool(user, "user")
            _check_bool(exec_, "exec_")
        if write and exec_:
            raise ValueError("an instruction fetch (exec_=True) is not a write")
        if self._cr3 is None:
            raise RuntimeError("the MMU has no page tables yet: call load_cr3(root_phys) first")

    # ------------------------------------------------------------------ translating

    def translate(
        self, vaddr: int, *, write: bool, user: bool, exec_: bool = False
    ) -> tuple[int, int]:
        """Translate one access: ``(phys, latency_cycles)``.

        Raises:
            PageFault: not present, or the rights forbid the access.
            GeneralProtectionFault: a non-canonical x86_64 address.
            TypeError, ValueError: malformed arguments (nothing changes).
            RuntimeError: no CR3 loaded yet.
        """
        vaddr = self._check_vaddr(vaddr)
        self._check_access(write, user, exec_)
        phys, cycles, _ = self._access(vaddr, write, user, exec_, None)
        return phys, cycles

    def timed_translate(
        self, vaddr: int, at: int, write: bool, user: bool, *, exec_: bool = False
    ) -> tuple[int, int, int]:
        """Translate one access issued at cycle ``at``: ``(phys, done, walk_steps)``.

        A miss reads each level's entry with ``ram.timed_read`` (and writes A/D updates with
        ``ram.timed_write``), each issued when the previous one completed, so the walk queues
        behind other traffic on the memory channel. ``walk_steps`` is the number of entries
        read (0 for a hit).

        Raises:
            PageFault: as :meth:`translate`, with ``done`` set to the cycle of the fault.
        """
        vaddr = self._check_vaddr(vaddr)
        self._check_access(write, user, exec_)
        at = _check_cycles(at, "at")
        return self._access(vaddr, write, user, exec_, at)

    def _access(
        self, vaddr: int, write: bool, user: bool, exec_: bool, at: int | None
    ) -> tuple[int, int, int]:
        """(phys, cycle reached, entries read); ``at`` None: functional (cycles from 0)."""
        t = (0 if at is None else at) + self.tlb_latency
        e = self.tlb.lookup(vaddr, self.asid)
        if e is not None:
            flags = e.flags
            if (
                (user and not flags & _PAGE_USER)
                or (write and not flags & _PAGE_RW)
                or (exec_ and flags & _PAGE_NX)
            ):
                raise self._tlb_fault(vaddr, write, user, exec_, e, None if at is None else t)
            if not (write and self.set_accessed_dirty and not flags & _PAGE_DIRTY):
                return e.phys + (vaddr - e.vaddr), t, 0
        return self._fill(vaddr, write, user, exec_, t, at is not None)

    def _record_walk(self, cycles: int) -> None:
        """Count a walk in the TLB's statistics. A walk recorded for a replay through the
        caches (``translate_many``'s ``walk_log``) counts no cycles here: the replay times
        it, and the caller adds them (:meth:`TlbModel.add_walk_cycles`)."""
        self.tlb.record_walk(0 if self._walk_log is not None else cycles)

    def _read_entries(self, vaddr: int, t: int, timed: bool) -> tuple[list[int], list[int], int]:
        """Read the entries of ``vaddr``'s walk, from CR3 down to the leaf or the first
        not-present entry: ``(entries, their addresses, cycle reached)``."""
        ram = self.ram
        es = self.mode.entry_size
        mask = self.mode.addr_mask
        last = self._last
        wl = self.walk_latency_per_level
        table = self._cr3
        assert table is not None
        entries: list[int] = []
        addrs: list[int] = []
        for depth, level in enumerate(self._levels):
            addr = table + ((vaddr >> level.shift) & (level.nr_entries - 1)) * es
            if timed:
                raw, t = ram.timed_read(addr, es, t)
            else:
                raw = ram.read(addr, es)
                t += wl
                if self._walk_log is not None:
                    self._walk_log.append((self._walk_pos, addr, False))
            entry = int.from_bytes(raw, "little")
            entries.append(entry)
            addrs.append(addr)
            if not entry & _PAGE_PRESENT or depth == last or (level.large and entry & _PAGE_PSE):
                break
            table = entry & mask
            if table >= ram.size:
                break  # a table beyond RAM: the walk cannot go on (see _fill)
        return entries, addrs, t

    def _fill(
        self, vaddr: int, write: bool, user: bool, exec_: bool, t: int, timed: bool
    ) -> tuple[int, int, int]:
        """Walk, check, set A/D, cache the translation: ``(phys, cycle reached, entries)``."""
        tlb = self.tlb
        start = t
        entries, addrs, t = self._read_entries(vaddr, t, timed)
        depth = len(entries) - 1
        levels = self._levels
        if not entries[-1] & _PAGE_PRESENT:
            self._record_walk(t - start)
            raise self._walk_fault(
                vaddr, write, user, exec_, NOT_PRESENT, depth, entries, addrs, t, timed
            )
        ro_at = us_at = nx_at = -1  # the first level lacking RW / lacking USER / with NX
        for d in range(depth + 1):
            if levels[d].permissions:
                entry = entries[d]
                if ro_at < 0 and not entry & _PAGE_RW:
                    ro_at = d
                if us_at < 0 and not entry & _PAGE_USER:
                    us_at = d
                if nx_at < 0 and entry & _PAGE_NX and self.mode.nx:
                    nx_at = d
        bad = -1
        if user and us_at >= 0:
            reason, bad = USER_TO_KERNEL, us_at
        elif write and ro_at >= 0:
            reason, bad = WRITE_TO_READ_ONLY, ro_at
        elif exec_ and nx_at >= 0:
            reason, bad = FETCH_FROM_NX, nx_at
        size = 1 << levels[depth].shift
        base = entries[depth] & self.mode.addr_mask & ~(size - 1)
        leaf = depth == self._last or (levels[depth].large and entries[depth] & _PAGE_PSE)
        if bad < 0 and not leaf:
            # A table pointer past RAM (a corrupted entry): there is no table to read, so
            # the walk ends here, attributed to this access. (A leaf may map memory that is
            # not RAM - device memory - so the MMU does not check leaves; the CPU does.)
            reason, bad = BEYOND_RAM, depth
        if bad >= 0:
            self._record_walk(t - start)
            raise self._walk_fault(vaddr, write, user, exec_, reason, bad, entries, addrs, t, timed)
        if self.set_accessed_dirty:
            es = self.mode.entry_size
            ram = self.ram
            for d in range(depth + 1):
                if not levels[d].permissions:
                    continue  # the PAE PDPT has no accessed bit
                entry = entries[d]
                new = entry | _PAGE_ACCESSED
                if write and d == depth:
                    new |= _PAGE_DIRTY
                if new != entry:
                    data = new.to_bytes(es, "little")
                    if timed:
                        _, t = ram.timed_write(addrs[d], data, t)
                    else:
                        ram.write(addrs[d], data)
                        if self._walk_log is not None:
                            self._walk_log.append((self._walk_pos, addrs[d], True))
                    entries[d] = new
        self._record_walk(t - start)
        leaf = entries[depth]
        flags = leaf & self.mode.flag_mask & ~(_PAGE_RW | _PAGE_USER | _PAGE_NX)
        if ro_at < 0:
            flags |= _PAGE_RW
        if us_at < 0:
            flags |= _PAGE_USER
        if nx_at >= 0:
            flags |= _PAGE_NX
        tlb.insert(vaddr, base, size, flags, self.asid, bool(leaf & _PAGE_GLOBAL))
        return base + (vaddr & (size - 1)), t, depth + 1

    # ------------------------------------------------------------------ faults

    @staticmethod
    def _error_code(write: bool, user: bool, exec_: bool, present: bool) -> int:
        return (
            (X86_PF_PROT if present else 0)
            | (X86_PF_WRITE if write else 0)
            | (X86_PF_USER if user else 0)
            | (X86_PF_INSTR if exec_ else 0)
        )

    def _steps(self, vaddr: int, entries: list[int], addrs: list[int]) -> tuple[WalkStep, ...]:
        mode = self.mode
        steps = []
        for d, (entry, addr) in enumerate(zip(entries, addrs, strict=True)):
            level = self._levels[d]
            index = (vaddr >> level.shift) & (level.nr_entries - 1)
            leaf = d == self._last or (level.large and bool(entry & _PAGE_PSE))
            size = 1 << level.shift if leaf else 4096
            steps.append(
                WalkStep(
                    level=level.name,
                    table=addr - index * mode.entry_size,
                    index=index,
                    entry=entry,
                    address=addr,
                    flags=decode_flags(entry, pte=d == self._last, nx=mode.nx),
                    target=entry & mode.addr_mask & ~(size - 1),
                )
            )
        return tuple(steps)

    def _walk_fault(
        self,
        vaddr: int,
        write: bool,
        user: bool,
        exec_: bool,
        reason: str,
        depth: int,
        entries: list[int],
        addrs: list[int],
        t: int,
        timed: bool,
    ) -> PageFault:
        self.tlb.drop_page(vaddr, self.asid)
        return PageFault(
            vaddr,
            write=write,
            user=user,
            exec_=exec_,
            reason=reason,
            level=self._levels[depth].name,
            error_code=self._error_code(write, user, exec_, reason != NOT_PRESENT)
            | (X86_PF_RSVD if reason == BEYOND_RAM else 0),
            steps=self._steps(vaddr, entries, addrs),
            done=t if timed else None,
            address_width=self._width,
        )

    def _tlb_fault(
        self, vaddr: int, write: bool, user: bool, exec_: bool, e: TlbEntry, done: int | None
    ) -> PageFault:
        flags = e.flags
        if user and not flags & _PAGE_USER:
            reason = USER_TO_KERNEL
        elif write and not flags & _PAGE_RW:
            reason = WRITE_TO_READ_ONLY
        else:
            reason = FETCH_FROM_NX
        self.tlb.drop_page(vaddr, self.asid)
        return PageFault(
            vaddr,
            write=write,
            user=user,
            exec_=exec_,
            reason=reason,
            level=self._level_of_size.get(e.page_size, "?"),
            error_code=self._error_code(write, user, exec_, True),
            from_tlb=True,
            done=done,
            address_width=self._width,
        )

    # ------------------------------------------------------------------ batches

    def translate_many(
        self,
        vaddrs: npt.ArrayLike,
        writes: npt.ArrayLike,
        user: bool = False,
        *,
        walk_log: list[tuple[int, int, bool]] | None = None,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Translate a trace of data accesses: ``(phys, latencies)``, int64 arrays.

        The same results, TLB state, statistics and RAM (A/D bits) as :meth:`translate`
        called for each access in turn. Consecutive accesses to one 4 KiB page with the same
        ``write`` form a run: its first access goes through the TLB (and walks on a miss),
        the others are hits on the entry it left - so a sequential trace costs one Python
        step per page, not per access.

        Args:
            vaddrs: virtual addresses (any integer dtype; kernel addresses need uint64).
            writes: one bool per access, or a single bool for all.
            user: all accesses are from user mode.
            walk_log: if given, a list that receives one ``(index, phys, is_write)`` per
                memory access of the walker (entry reads, A/D updates) in the order made,
                ``index`` being the access that caused it: what a caller replays through
                the caches to interleave walks with the data accesses, as the hardware does.

        Raises:
            PageFault: at the first access that faults, with ``index`` set; the accesses
                before it have taken effect (TLB fills, A/D bits, statistics), as if issued
                one by one.
            GeneralProtectionFault, TypeError, ValueError: some address is non-canonical or
                malformed, or ``writes`` does not match; checked first, so nothing changes.
            RuntimeError: no CR3 loaded yet.
        """
        return mmu_batch.translate_many(self, vaddrs, writes, user, walk_log=walk_log)

    # ------------------------------------------------------------------ inspection

    def walk(self, vaddr: int) -> Translation:
        """Walk the page tables for ``vaddr`` as the hardware would, but without the TLB,
        statistics or A/D updates: every level, for scenarios that print the walk.

        Raises:
            PageFault: an entry on the way is not present (as a supervisor read would see
                it; ``steps`` holds the entries read, the not-present one last).
            GeneralProtectionFault: a non-canonical x86_64 address.
            TypeError, ValueError: a malformed address.
            RuntimeError: no CR3 loaded yet.
        """
        vaddr = self._check_vaddr(vaddr)
        self._check_access(False, False, False)
        entries, addrs, _ = self._read_entries(vaddr, 0, False)
        depth = len(entries) - 1
        steps = self._steps(vaddr, entries, addrs)
        leaf = entries[-1]
        level = self._levels[depth]
        is_leaf = depth == self._last or (level.large and bool(leaf & _PAGE_PSE))
        if leaf & _PAGE_PRESENT and not is_leaf:
            raise PageFault(
                vaddr,
                write=False,
                user=False,
                reason=BEYOND_RAM,
                level=level.name,
                error_code=X86_PF_PROT | X86_PF_RSVD,
                steps=steps,
                address_width=self._width,
            )
        if not leaf & _PAGE_PRESENT:
            raise PageFault(
                vaddr,
                write=False,
                user=False,
                reason=NOT_PRESENT,
                level=self._levels[depth].name,
                error_code=0,
                steps=steps,
                address_width=self._width,
            )
        writable = user = True
        nx = False
        for d in range(depth + 1):
            if self._levels[d].permissions:
                writable = writable and bool(entries[d] & _PAGE_RW)
                user = user and bool(entries[d] & _PAGE_USER)
                nx = nx or bool(self.mode.nx and entries[d] & _PAGE_NX)
        size = 1 << self._levels[depth].shift
        return Translation(
            vaddr=vaddr,
            phys=(leaf & self.mode.addr_mask & ~(size - 1)) | (vaddr & (size - 1)),
            page_size=size,
            flags=leaf & self.mode.flag_mask,
            steps=steps,
            writable=writable,
            user=user,
            nx=nx,
        )

    def walk_for(self, vaddr: int, write: bool) -> Translation:
        """:meth:`walk`, then the rights check of a supervisor access: the functional path's
        translation (no TLB, no statistics, no A/D bits).

        Raises:
            PageFault: as :meth:`walk`; for a write, also the hardware's protection fault,
                naming the first level whose entry lacks RW.
        """
        _check_bool(write, "write")
        t = self.walk(vaddr)
        if write and not t.writable:
            levels = self._levels
            level = next(
                levels[d].name
                for d, step in enumerate(t.steps)
                if levels[d].permissions and not step.entry & _PAGE_RW
            )
            raise PageFault(
                t.vaddr,
                write=True,
                user=False,
                reason=WRITE_TO_READ_ONLY,
                level=level,
                error_code=self._error_code(True, False, False, True),
                steps=t.steps,
                address_width=self._width,
            )
        return t
