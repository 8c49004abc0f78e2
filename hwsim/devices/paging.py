"""x86 paging as the hardware defines it: entry bits, the paging modes' geometry, and what a
walk reads. Shared by the MMU (which walks) and the kernel's page-table code (which writes
the tables), so that both agree on one definition.
"""

from __future__ import annotations

import attrs

# Entry bits (arch/x86/include/asm/pgtable_types.h).
_PAGE_PRESENT = 0x001
_PAGE_RW = 0x002
_PAGE_USER = 0x004
_PAGE_PWT = 0x008
_PAGE_PCD = 0x010
_PAGE_ACCESSED = 0x020
_PAGE_DIRTY = 0x040
_PAGE_PSE = 0x080  # in a PMD/PUD (or non-PAE PGD) entry: a large page; in a PTE: PAT
_PAGE_PAT = 0x080
_PAGE_GLOBAL = 0x100
_PAGE_NX = 1 << 63  # 64-bit entries only (x86_64 and PAE)

_KERNPG_TABLE = _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY


@attrs.frozen
class PagingLevel:
    """One level of the hardware's page-table tree."""

    name: str  # Linux's name: "PGD", "PUD", "PMD", "PTE"
    shift: int  # the virtual-address bit where this level's index starts
    nr_entries: int
    large: bool  # an entry may map a page itself with _PAGE_PSE (or is the PTE level)
    table_flags: int  # the flags of an entry that points to the next level's table
    permissions: bool = True  # entries carry RW/US/NX (not so in the PAE PDPT)


@attrs.frozen
class PagingMode:
    """The geometry of one x86 paging mode."""

    name: str
    levels: tuple[PagingLevel, ...]
    entry_size: int
    addr_mask: int  # the physical-address bits of an entry
    va_bits: int  # 48 (canonical addresses) or 32
    nx: bool  # entries have the NX bit

    @property
    def flag_mask(self) -> int:
        """The bits of an entry that are flags (not address, not ignored)."""
        return 0xFFF | (_PAGE_NX if self.nx else 0)


_ADDR_MASK_64 = 0x000F_FFFF_FFFF_F000
X86_64_4LEVEL = PagingMode(
    name="4-level",
    levels=(
        PagingLevel("PGD", 39, 512, False, _KERNPG_TABLE),
        PagingLevel("PUD", 30, 512, True, _KERNPG_TABLE),
        PagingLevel("PMD", 21, 512, True, _KERNPG_TABLE),
        PagingLevel("PTE", 12, 512, True, 0),
    ),
    entry_size=8,
    addr_mask=_ADDR_MASK_64,
    va_bits=48,
    nx=True,
)
I386_2LEVEL = PagingMode(
    name="2-level",
    levels=(
        PagingLevel("PGD", 22, 1024, True, _KERNPG_TABLE),
        PagingLevel("PTE", 12, 1024, True, 0),
    ),
    entry_size=4,
    addr_mask=0xFFFF_F000,
    va_bits=32,
    nx=False,
)
# PAE: the PDPT's entries have only the present bit (RW/US/A/D are reserved there), so
# Linux's pud_populate() writes __pa(pmd) | _PAGE_PRESENT.
I386_PAE = PagingMode(
    name="PAE",
    levels=(
        PagingLevel("PGD", 30, 4, False, _PAGE_PRESENT, permissions=False),
        PagingLevel("PMD", 21, 512, True, _KERNPG_TABLE),
        PagingLevel("PTE", 12, 512, True, 0),
    ),
    entry_size=8,
    addr_mask=_ADDR_MASK_64,
    va_bits=32,
    nx=True,
)
PAGING_MODES = {mode.name: mode for mode in (X86_64_4LEVEL, I386_2LEVEL, I386_PAE)}

_FLAG_NAMES = (
    (_PAGE_PRESENT, "PRESENT"),
    (_PAGE_RW, "RW"),
    (_PAGE_USER, "USER"),
    (_PAGE_PWT, "PWT"),
    (_PAGE_PCD, "PCD"),
    (_PAGE_ACCESSED, "ACCESSED"),
    (_PAGE_DIRTY, "DIRTY"),
    (_PAGE_PSE, "PSE"),
    (_PAGE_GLOBAL, "GLOBAL"),
    (_PAGE_NX, "NX"),
)


def decode_flags(entry: int, *, pte: bool = False, nx: bool = True) -> tuple[str, ...]:
    """The names of the flag bits set in ``entry`` (``_PAGE_`` dropped), low bit first.

    Args:
        pte: the entry is a PTE, where bit 7 is PAT rather than PSE.
        nx: the mode's entries have the NX bit (bit 63).
    """
    names = []
    for bit, name in _FLAG_NAMES:
        if entry & bit and (nx or bit != _PAGE_NX):
            names.append("PAT" if pte and bit == _PAGE_PSE else name)
    return tuple(names)


@attrs.frozen
class WalkStep:
    """One entry read during a walk.

    Attributes:
        level: "PGD", "PUD", "PMD" or "PTE".
        table: physical address of the table.
        index: the entry's index in the table.
        entry: the raw entry value.
        address: physical address of the entry (what the walker reads).
        flags: the names of the entry's flag bits (see :func:`decode_flags`).
        target: the physical address the entry points to: the next table, or the page.
    """

    level: str
    table: int
    index: int
    entry: int
    address: int
    flags: tuple[str, ...] = ()
    target: int = 0


@attrs.frozen
class Translation:
    """The result of a walk (:meth:`MmuModel.walk`).

    Attributes:
        flags: the flag bits of the leaf entry (low 12 bits, plus NX where entries have it).
        writable, user, nx: the effective permissions over all levels, as the hardware
            combines them (RW and US must be set at every level, NX at any level forbids
            execution; the PAE PDPT has no such bits).
    """

    vaddr: int
    phys: int
    page_size: int
    flags: int
    steps: tuple[WalkStep, ...]
    writable: bool
    user: bool
    nx: bool

    @property
    def pfn(self) -> int:
        return self.phys >> 12

    @property
    def level(self) -> str:
        """The level whose entry mapped the page ("PTE", or "PMD"/"PUD"/"PGD" for large)."""
        return self.steps[-1].level
