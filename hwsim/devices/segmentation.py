"""i386 segmentation: a logical address ``selector:offset`` becomes a linear address.

What the hardware does (Intel SDM vol. 3, ch. 3 and 5), modelled as a plain synchronous class:

- a **segment selector** is 16 bits: ``index << 3 | TI << 2 | RPL``. TI picks the table (0:
  the GDT, 1: the LDT), RPL is the privilege the selector requests;
- the CPU reads the 8-byte **segment descriptor** at ``table base + index * 8`` - from
  memory, here from :class:`~hwsim.devices.ram.RamModel`, so changing the bytes in RAM
  changes the translation. GDTR and LDTR hold *linear* addresses: give ``translate`` (for
  instance an :class:`~hwsim.devices.mmu.MmuModel`'s walk) to send the descriptor read
  through paging; without it the table base is taken as physical (paging off);
- the descriptor holds a 32-bit base (split over bytes 2-4 and 7), a 20-bit limit (bytes 0-1
  and the low nibble of byte 6) counted in bytes or, with G set, in 4 KiB units, and the
  access bits: type (code/data, readable/writable, conforming/expand-down, accessed), S
  (code/data vs system), DPL, P; and AVL, L, D/B, G;
- checks, in the order the CPU makes them: a null selector (#GP(0)), an index past the
  table's limit (#GP(selector)), a system descriptor or the wrong type for the access
  (#GP), privilege - ``max(CPL, RPL) <= DPL`` for data and non-conforming code read as data
  (#GP), not present (#NP(selector)), then the offset against the limit (#GP(0));
- the **linear address** is ``(base + offset) mod 2**32``.

Linux uses the flat model (arch/x86/kernel/cpu/common.c, ``gdt_page``): __KERNEL_CS,
__KERNEL_DS, __USER_CS and __USER_DS all have base 0 and a 4 GiB limit, so the offset - the
value of a C pointer, the kernel's "virtual address" - *is* the linear address, and only
paging is left to translate. :func:`linux_i386_gdt` builds that GDT.

Not modelled: the hidden descriptor caches of the segment registers (each translation
reads the descriptor again), stack-segment faults (#SS), call gates and task switches,
64-bit mode (where bases other than FS/GS are ignored), the accessed bit being set by the
CPU (Linux sets it in every descriptor itself).

Example:
    >>> from hwsim.devices.ram import RamModel
    >>> ram = RamModel(size=1 << 20)
    >>> ram.write(0x1000, gdt_bytes(linux_i386_gdt()))
    >>> seg = Segmentation(ram, gdt_base=0x1000, gdt_limit=GDT_SIZE - 1)
    >>> hex(seg.logical_to_linear(__KERNEL_DS, 0xC0123456).linear)  # flat: offset == linear
    '0xc0123456'
    >>> try:
    ...     seg.logical_to_linear(__KERNEL_DS, 0xC0123456, cpl=3)
    ... except GeneralProtectionFault as fault:
    ...     print(fault)
    general protection fault: 0068 [#1]
    hwsim: privilege: max(CPL 3, RPL 0) > DPL 0 of GDT entry 13 (data, read/write, accessed)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import attrs

from ..errors import SegmentationFault
from .pagefault import GeneralProtectionFault
from .ram import RamModel

# Descriptor flags, as Linux spells them (arch/x86/include/asm/desc_defs.h, v6.8+, where
# every descriptor is created with the accessed bit set). Bits 0-7 are byte 5 of the
# descriptor (type, S, DPL, P), bits 12-15 the high nibble of byte 6 (AVL, L, D/B, G).
_DESC_ACCESSED = 0x0001
_DESC_DATA_WRITABLE = 0x0002
_DESC_CODE_READABLE = 0x0002
_DESC_DATA_EXPAND_DOWN = 0x0004
_DESC_CODE_CONFORMING = 0x0004
_DESC_CODE_EXECUTABLE = 0x0008
_DESC_S = 0x0010
_DESC_PRESENT = 0x0080
_DESC_AVL = 0x1000
_DESC_LONG_CODE = 0x2000
_DESC_DB = 0x4000
_DESC_GRANULARITY_4K = 0x8000

_DESC_DATA = _DESC_S | _DESC_PRESENT | _DESC_ACCESSED | _DESC_DATA_WRITABLE
_DESC_CODE = _DESC_S | _DESC_PRESENT | _DESC_ACCESSED | _DESC_CODE_READABLE | _DESC_CODE_EXECUTABLE
DESC_DATA16 = _DESC_DATA  # 0x0093
DESC_CODE16 = _DESC_CODE  # 0x009b
DESC_DATA32 = _DESC_DATA | _DESC_GRANULARITY_4K | _DESC_DB  # 0xc093
DESC_DATA32_BIOS = _DESC_DATA | _DESC_DB  # 0x4093
DESC_CODE32 = _DESC_CODE | _DESC_GRANULARITY_4K | _DESC_DB  # 0xc09b
DESC_CODE32_BIOS = _DESC_CODE | _DESC_DB  # 0x409b
DESC_USER = 3 << 5  # _DESC_DPL(3)

# The i386 GDT layout (arch/x86/include/asm/segment.h, CONFIG_X86_32).
GDT_ENTRY_KERNEL_CS = 12
GDT_ENTRY_KERNEL_DS = 13
GDT_ENTRY_DEFAULT_USER_CS = 14
GDT_ENTRY_DEFAULT_USER_DS = 15
GDT_ENTRY_TSS = 16
GDT_ENTRY_LDT = 17
GDT_ENTRY_PNPBIOS_CS32 = 18
GDT_ENTRY_PNPBIOS_CS16 = 19
GDT_ENTRY_PNPBIOS_DS = 20
GDT_ENTRY_PNPBIOS_TS1 = 21
GDT_ENTRY_PNPBIOS_TS2 = 22
GDT_ENTRY_APMBIOS_BASE = 23
GDT_ENTRY_ESPFIX_SS = 26
GDT_ENTRY_PERCPU = 27
GDT_ENTRY_DOUBLEFAULT_TSS = 31
GDT_ENTRIES = 32
GDT_SIZE = GDT_ENTRIES * 8

SEGMENT_RPL_MASK = 0x3
SEGMENT_TI_MASK = 0x4
USER_RPL = 0x3

__KERNEL_CS = GDT_ENTRY_KERNEL_CS * 8  # 0x60
__KERNEL_DS = GDT_ENTRY_KERNEL_DS * 8  # 0x68
__USER_CS = GDT_ENTRY_DEFAULT_USER_CS * 8 + 3  # 0x73
__USER_DS = GDT_ENTRY_DEFAULT_USER_DS * 8 + 3  # 0x7b
__KERNEL_PERCPU = GDT_ENTRY_PERCPU * 8  # 0xd8 (CONFIG_SMP)

_U32 = 1 << 32

# S=0 descriptor types (SDM vol. 3, table 3-2, 32-bit).
_SYSTEM_TYPES = {
    0x1: "16-bit TSS (available)",
    0x2: "LDT",
    0x3: "16-bit TSS (busy)",
    0x4: "16-bit call gate",
    0x5: "task gate",
    0x6: "16-bit interrupt gate",
    0x7: "16-bit trap gate",
    0x9: "32-bit TSS (available)",
    0xB: "32-bit TSS (busy)",
    0xC: "32-bit call gate",
    0xE: "32-bit interrupt gate",
    0xF: "32-bit trap gate",
}


def _check_int(value: object, what: str, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {value!r}")
    if not 0 <= value < 1 << bits:
        raise ValueError(
            f"{what} must fit in {bits} bits (0..{(1 << bits) - 1:#x}), got {value:#x}"
        )
    return value


def _check_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be True or False, got {value!r}")
    return value


def _int_field(bits: int) -> int:
    def check(_: object, attribute: attrs.Attribute[int], value: object) -> None:
        _check_int(value, attribute.name, bits)

    return attrs.field(validator=check)


def _bool_field(default: bool) -> bool:
    def check(_: object, attribute: attrs.Attribute[bool], value: object) -> None:
        _check_bool(value, attribute.name)

    return attrs.field(default=default, validator=check)


@attrs.frozen
class SegmentDescriptor:
    """The fields of one 8-byte segment descriptor (SDM vol. 3, figure 3-8).

    Attributes:
        base: the segment's linear base address (32 bits).
        limit: the raw 20-bit limit (see :attr:`effective_limit`).
        type: the 4 type bits: for code/data, bit 0 accessed, bit 1 writable (data) or
            readable (code), bit 2 expand-down (data) or conforming (code), bit 3 code.
        s: 1 for a code or data segment, 0 for a system descriptor (TSS, LDT, gate).
        dpl: the descriptor privilege level (0 kernel .. 3 user).
        present: the P bit.
        avl: the bit available to software.
        long: the L bit (a 64-bit code segment).
        db: the D/B bit (32-bit default operand size; a 4 GiB upper bound if expand-down).
        granularity: the G bit: the limit counts 4 KiB units.
    """

    base: int = _int_field(32)
    limit: int = _int_field(20)
    type: int = _int_field(4)
    s: bool = _bool_field(True)
    dpl: int = attrs.field(default=0, validator=lambda _, a, v: _check_int(v, a.name, 2))
    present: bool = _bool_field(True)
    avl: bool = _bool_field(False)
    long: bool = _bool_field(False)
    db: bool = _bool_field(True)
    granularity: bool = _bool_field(True)

    @property
    def is_code(self) -> bool:
        return self.s and bool(self.type & 0x8)

    @property
    def is_data(self) -> bool:
        return self.s and not self.type & 0x8

    @property
    def writable(self) -> bool:
        return self.is_data and bool(self.type & 0x2)

    @property
    def readable(self) -> bool:
        """Data is always readable; code only with the readable bit."""
        return self.is_data or (self.is_code and bool(self.type & 0x2))

    @property
    def conforming(self) -> bool:
        return self.is_code and bool(self.type & 0x4)

    @property
    def expand_down(self) -> bool:
        return self.is_data and bool(self.type & 0x4)

    @property
    def effective_limit(self) -> int:
        """The last valid offset of an expand-up segment: the limit in bytes, or
        ``limit << 12 | 0xfff`` with G set (so 0xfffff with G is 4 GiB - 1)."""
        return (self.limit << 12) | 0xFFF if self.granularity else self.limit

    @property
    def flags(self) -> int:
        """The 16 flag bits as Linux's GDT_ENTRY_INIT() takes them (``0xc093``...)."""
        return (
            self.type
            | self.s << 4
            | self.dpl << 5
            | self.present << 7
            | self.avl << 12
            | self.long << 13
            | self.db << 14
            | self.granularity << 15
        )

    def describe(self) -> str:
        """The descriptor's kind in words: ``"code, execute/read, accessed"``."""
        if not self.s:
            return f"system: {_SYSTEM_TYPES.get(self.type, f'reserved type {self.type:#x}')}"
        if self.is_code:
            words = ["code", "execute/read" if self.readable else "execute-only"]
            if self.conforming:
                words.append("conforming")
        else:
            words = ["data", "read/write" if self.writable else "read-only"]
            if self.expand_down:
                words.append("expand-down")
        if self.type & 0x1:
            words.append("accessed")
        return ", ".join(words)

    def encode(self) -> bytes:
        """The descriptor's 8 bytes, little-endian, as the CPU reads them."""
        return gdt_entry(self.flags, self.base, self.limit).to_bytes(8, "little")


def gdt_entry(flags: int, base: int, limit: int) -> int:
    """Linux's ``GDT_ENTRY(flags, base, limit)``: the descriptor as a 64-bit integer.

    Raises:
        TypeError, ValueError: ``flags`` beyond 16 bits (or with bits 8-11, which hold the
            limit's top nibble), ``base`` beyond 32 bits, ``limit`` beyond 20 bits.
    """
    flags = _check_int(flags, "flags", 16)
    if flags & 0x0F00:
        raise ValueError(f"flags {flags:#06x}: bits 8-11 are the limit's, not flags")
    base = _check_int(base, "base", 32)
    limit = _check_int(limit, "limit", 20)
    return (
        ((base & 0xFF000000) << (56 - 24))
        | ((flags & 0x0000F0FF) << 40)
        | ((limit & 0x000F0000) << (48 - 16))
        | ((base & 0x00FFFFFF) << 16)
        | (limit & 0x0000FFFF)
    )


def encode_descriptor(
    base: int,
    limit: int,
    *,
    code: bool,
    dpl: int = 0,
    granularity: bool = True,
    present: bool = True,
    writable: bool = True,
    readable: bool = True,
    conforming: bool = False,
    expand_down: bool = False,
    accessed: bool = True,
    db: bool = True,
) -> bytes:
    """The 8 bytes of a code or data segment descriptor.

    Args:
        base: the 32-bit linear base address.
        limit: the 20-bit limit, in bytes or (``granularity``) 4 KiB units.
        code: a code segment (else data).
        dpl: descriptor privilege level, 0..3.
        writable: data segments only: writable.
        readable: code segments only: readable (else execute-only).
        conforming: code segments only.
        expand_down: data segments only.
        accessed: the accessed bit (Linux sets it in every descriptor).
        db: 32-bit segment (D/B).

    Raises:
        TypeError, ValueError: a malformed field, or a code-only option on data (or the
            reverse).
    """
    _check_bool(code, "code")
    for name, value in (
        ("granularity", granularity),
        ("present", present),
        ("writable", writable),
        ("readable", readable),
        ("conforming", conforming),
        ("expand_down", expand_down),
        ("accessed", accessed),
        ("db", db),
    ):
        _check_bool(value, name)
    if code and (expand_down or not writable):
        raise ValueError("expand_down and writable are data-segment options; a code segment")
    if not code and (conforming or not readable):
        raise ValueError("conforming and readable are code-segment options; data is readable")
    type_ = 0x8 | readable << 1 | conforming << 2 if code else writable << 1 | expand_down << 2
    descriptor = SegmentDescriptor(
        base=base,
        limit=limit,
        type=type_ | accessed,
        dpl=dpl,
        present=present,
        db=db,
        granularity=granularity,
    )
    return descriptor.encode()


def decode_descriptor(raw: bytes | bytearray | memoryview) -> SegmentDescriptor:
    """The fields of the 8 bytes ``raw`` (see :class:`SegmentDescriptor`).

    Raises:
        TypeError: ``raw`` is not bytes-like.
        ValueError: ``raw`` is not 8 bytes long.
    """
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise TypeError(f"a descriptor is 8 bytes, got {type(raw).__name__}")
    raw = bytes(raw)
    if len(raw) != 8:
        raise ValueError(f"a descriptor is 8 bytes, got {len(raw)}")
    value = int.from_bytes(raw, "little")
    access = (value >> 40) & 0xFF
    high = (value >> 52) & 0xF
    return SegmentDescriptor(
        base=((value >> 16) & 0xFFFFFF) | ((value >> 56) & 0xFF) << 24,
        limit=(value & 0xFFFF) | ((value >> 48) & 0xF) << 16,
        type=access & 0xF,
        s=bool(access & 0x10),
        dpl=(access >> 5) & 0x3,
        present=bool(access & 0x80),
        avl=bool(high & 0x1),
        long=bool(high & 0x2),
        db=bool(high & 0x4),
        granularity=bool(high & 0x8),
    )


def make_selector(index: int, *, ldt: bool = False, rpl: int = 0) -> int:
    """The selector ``index << 3 | TI << 2 | RPL``."""
    index = _check_int(index, "index", 13)
    _check_bool(ldt, "ldt")
    rpl = _check_int(rpl, "rpl", 2)
    return index << 3 | ldt << 2 | rpl


def linux_i386_gdt(percpu_offset: int = 0) -> dict[int, SegmentDescriptor]:
    """The GDT an i386 Linux CPU runs with: ``gdt_page`` (arch/x86/kernel/cpu/common.c).

    Entries by index; the others are zero (not present). The four flat segments have base 0
    and limit 0xfffff with 4 KiB granularity: 4 GiB. The PnP/APM BIOS segments have byte
    granularity and 64 KiB limits (their bases are set when those BIOS calls are made). The
    per-CPU segment (__KERNEL_PERCPU, loaded into %fs in the kernel) gets its base from
    ``setup_percpu_segment()``: the CPU's ``per_cpu_offset`` - the one segment Linux does
    not keep flat. The TSS and LDT descriptors are written at run time (not included).

    Args:
        percpu_offset: the base of the per-CPU segment (``per_cpu_offset(cpu)``).
    """
    percpu_offset = _check_int(percpu_offset, "percpu_offset", 32)
    entries = {
        GDT_ENTRY_KERNEL_CS: (DESC_CODE32, 0, 0xFFFFF),
        GDT_ENTRY_KERNEL_DS: (DESC_DATA32, 0, 0xFFFFF),
        GDT_ENTRY_DEFAULT_USER_CS: (DESC_CODE32 | DESC_USER, 0, 0xFFFFF),
        GDT_ENTRY_DEFAULT_USER_DS: (DESC_DATA32 | DESC_USER, 0, 0xFFFFF),
        GDT_ENTRY_PNPBIOS_CS32: (DESC_CODE32_BIOS, 0, 0xFFFF),
        GDT_ENTRY_PNPBIOS_CS16: (DESC_CODE16, 0, 0xFFFF),
        GDT_ENTRY_PNPBIOS_DS: (DESC_DATA16, 0, 0xFFFF),
        GDT_ENTRY_PNPBIOS_TS1: (DESC_DATA16, 0, 0),
        GDT_ENTRY_PNPBIOS_TS2: (DESC_DATA16, 0, 0),
        GDT_ENTRY_APMBIOS_BASE: (DESC_CODE32_BIOS, 0, 0xFFFF),
        GDT_ENTRY_APMBIOS_BASE + 1: (DESC_CODE16, 0, 0xFFFF),
        GDT_ENTRY_APMBIOS_BASE + 2: (DESC_DATA32_BIOS, 0, 0xFFFF),
        GDT_ENTRY_ESPFIX_SS: (DESC_DATA32, 0, 0xFFFFF),
        GDT_ENTRY_PERCPU: (DESC_DATA32, percpu_offset, 0xFFFFF),
    }
    return {
        index: decode_descriptor(gdt_entry(*fields).to_bytes(8, "little"))
        for index, fields in sorted(entries.items())
    }


def gdt_bytes(entries: Mapping[int, SegmentDescriptor], nr_entries: int = GDT_ENTRIES) -> bytes:
    """A descriptor table of ``nr_entries`` 8-byte slots with ``entries`` filled in.

    Raises:
        ValueError: an index outside the table (or entry 0, the null descriptor).
    """
    nr_entries = _check_int(nr_entries, "nr_entries", 13 + 1)
    table = bytearray(nr_entries * 8)
    for index, descriptor in entries.items():
        if not 0 < index < nr_entries:
            raise ValueError(f"descriptor index {index} is outside 1..{nr_entries - 1}")
        if not isinstance(descriptor, SegmentDescriptor):
            raise TypeError(f"entry {index} is not a SegmentDescriptor: {descriptor!r}")
        table[index * 8 : index * 8 + 8] = descriptor.encode()
    return bytes(table)


# ---------------------------------------------------------------------- faults


class SegmentFault(GeneralProtectionFault):
    """#GP raised by segmentation. Its message has the shape of Linux's oops
    ("general protection fault: 0068 [#1]", the error code in hex) and a line saying what
    the CPU found.

    Attributes:
        selector: the selector used.
        offset: the offset used.
        error_code: x86's error code: the selector's index and TI bits
            (``selector & 0xfffc``), or 0 (a null selector, a limit violation).
        reason: what failed, in a few words ("null selector", "limit", "privilege", ...).
    """

    vector = "general protection fault"

    def __init__(
        self, selector: int, offset: int, *, error_code: int, reason: str, detail: str
    ) -> None:
        super().__init__(f"{self.vector}: {error_code:04x} [#1]\nhwsim: {reason}: {detail}")
        self.selector = selector
        self.offset = offset
        self.error_code = error_code
        self.reason = reason


class SegmentNotPresent(SegmentationFault):
    """#NP: the descriptor's P bit is clear ("segment not present: 0068 [#1]").

    Attributes: as :class:`SegmentFault`.
    """

    def __init__(self, selector: int, offset: int, *, error_code: int, detail: str) -> None:
        super().__init__(f"segment not present: {error_code:04x} [#1]\nhwsim: {detail}")
        self.selector = selector
        self.offset = offset
        self.error_code = error_code
        self.reason = "not present"


# ---------------------------------------------------------------------- translating


@attrs.frozen
class LinearTranslation:
    """A logical address translated (:meth:`Segmentation.logical_to_linear`).

    Attributes:
        selector, offset: the logical address.
        index, ti, rpl: the selector's fields (ti: 0 GDT, 1 LDT).
        table: ``"GDT"`` or ``"LDT"``.
        table_base: the table's linear base (GDTR/LDTR).
        descriptor_address: the linear address of the descriptor.
        descriptor_phys: its physical address (equal without paging).
        raw: the 8 bytes read.
        descriptor: the decoded descriptor.
        linear: ``(base + offset) mod 2**32``.
    """

    selector: int
    offset: int
    index: int
    ti: int
    rpl: int
    table: str
    table_base: int
    descriptor_address: int
    descriptor_phys: int
    raw: bytes
    descriptor: SegmentDescriptor
    linear: int

    @property
    def flat(self) -> bool:
        """The segment adds nothing: ``linear == offset``."""
        return self.linear == self.offset

    def steps(self) -> list[dict[str, str]]:
        """What the CPU did, one row a step (``step``, ``value``, ``how``), for printing."""
        d = self.descriptor
        limit_how = (
            f"limit {d.limit:#07x} x 4 KiB + 0xfff"
            if d.granularity
            else f"limit {d.limit:#07x} bytes (G=0)"
        )
        return [
            {
                "step": "selector",
                "value": f"{self.selector:#06x}",
                "how": f"index {self.index} | TI {self.ti} ({self.table}) | RPL {self.rpl}",
            },
            {
                "step": "descriptor address",
                "value": f"{self.descriptor_address:#010x}",
                "how": f"{self.table} base {self.table_base:#010x} + {self.index} x 8"
                + (
                    f" (physical {self.descriptor_phys:#x})"
                    if self.descriptor_phys != self.descriptor_address
                    else ""
                ),
            },
            {
                "step": "descriptor",
                "value": f"{int.from_bytes(self.raw, 'little'):#018x}",
                "how": f"flags {d.flags:#06x}: {d.describe()}, DPL {d.dpl}, "
                f"{'present' if d.present else 'NOT present'}",
            },
            {
                "step": "base",
                "value": f"{d.base:#010x}",
                "how": "bytes 2-4 and 7 of the descriptor",
            },
            {
                "step": "limit check",
                "value": f"{self.offset:#010x} <= {d.effective_limit:#010x}",
                "how": limit_how,
            },
            {
                "step": "linear",
                "value": f"{self.linear:#010x}",
                "how": f"base {d.base:#x} + offset {self.offset:#x} (mod 2**32)"
                + (": the offset itself" if self.flat else ""),
            },
        ]


class Segmentation:
    """The segmentation unit of an i386 CPU: GDTR, LDTR and the descriptor checks.

    Args:
        ram: where the descriptor tables live.
        gdt_base: GDTR's base: the GDT's linear address.
        gdt_limit: GDTR's limit: the table's size in bytes minus one (16 bits).
        ldt_base, ldt_limit: the LDT (as LDTR's hidden part holds them), or None: no LDT
            loaded, and a selector with TI=1 is a #GP.
        translate: linear -> physical for the descriptor reads (the MMU's walk, when
            paging is on); None: the table addresses are physical.

    Raises:
        TypeError, ValueError: malformed arguments.
    """

    def __init__(
        self,
        ram: RamModel,
        gdt_base: int,
        gdt_limit: int,
        *,
        ldt_base: int | None = None,
        ldt_limit: int = 0,
        translate: Callable[[int], int] | None = None,
    ) -> None:
        if not isinstance(ram, RamModel):
            raise TypeError(f"ram must be a RamModel, got {ram!r}")
        if translate is not None and not callable(translate):
            raise TypeError(f"translate must be callable or None, got {translate!r}")
        self.ram = ram
        self.gdt_base = _check_int(gdt_base, "gdt_base", 32)
        self.gdt_limit = _check_int(gdt_limit, "gdt_limit", 16)
        self.ldt_base = None if ldt_base is None else _check_int(ldt_base, "ldt_base", 32)
        self.ldt_limit = _check_int(ldt_limit, "ldt_limit", 20)
        self.translate = translate

    def __repr__(self) -> str:
        ldt = "none" if self.ldt_base is None else f"{self.ldt_base:#x}/{self.ldt_limit:#x}"
        return f"<Segmentation GDT {self.gdt_base:#x}/{self.gdt_limit:#x}, LDT {ldt}>"

    def _phys(self, linear: int) -> int:
        return linear if self.translate is None else self.translate(linear)

    def read_descriptor(self, linear: int) -> tuple[bytes, int]:
        """The 8 bytes at table address ``linear``, and the physical address of the first.

        A descriptor that straddles a page is read in two parts, each translated.
        """
        first = self._phys(linear)
        split = 0x1000 - (linear & 0xFFF)
        if self.translate is None or split >= 8:
            return self.ram.read(first, 8), first
        second = self._phys((linear + split) % _U32)
        return self.ram.read(first, split) + self.ram.read(second, 8 - split), first

    def descriptor(self, selector: int) -> SegmentDescriptor:
        """The descriptor ``selector`` names, read from RAM (no checks but the table's
        limit: a null selector or one beyond the table raises :class:`SegmentFault`)."""
        selector = _check_int(selector, "selector", 16)
        return self._lookup(selector, 0)[4]

    def _lookup(
        self, selector: int, offset: int
    ) -> tuple[str, int, int, int, SegmentDescriptor, bytes]:
        """(table name, table base, descriptor address, its physical address, descriptor,
        raw bytes) of ``selector``; #GP for a null selector or one beyond the table."""
        index, ti = selector >> 3, (selector >> 2) & 1
        code = selector & 0xFFFC
        if not ti and index == 0:
            raise SegmentFault(
                selector,
                offset,
                error_code=0,
                reason="null selector",
                detail=f"selector {selector:#06x} is the null selector (GDT entry 0)",
            )
        if ti:
            if self.ldt_base is None:
                raise SegmentFault(
                    selector,
                    offset,
                    error_code=code,
                    reason="no LDT",
                    detail=f"selector {selector:#06x} has TI=1 but no LDT is loaded",
                )
            table, base, limit = "LDT", self.ldt_base, self.ldt_limit
        else:
            table, base, limit = "GDT", self.gdt_base, self.gdt_limit
        if index * 8 + 7 > limit:
            raise SegmentFault(
                selector,
                offset,
                error_code=code,
                reason="beyond the table",
                detail=f"{table} entry {index} ends at byte {index * 8 + 7}, beyond the "
                f"{table} limit {limit:#x} ({(limit + 1) // 8} entries)",
            )
        address = (base + index * 8) % _U32
        raw, phys = self.read_descriptor(address)
        return table, base, address, phys, decode_descriptor(raw), raw

    def logical_to_linear(
        self,
        selector: int,
        offset: int,
        *,
        write: bool = False,
        execute: bool = False,
        cpl: int = 0,
        size: int = 1,
    ) -> LinearTranslation:
        """Translate the logical address ``selector:offset`` for an access of ``size``
        bytes, with the checks the CPU makes (see the module docstring).

        Args:
            selector: the 16-bit segment selector.
            offset: the 32-bit offset (the "virtual address" a pointer holds).
            write: a write access.
            execute: an instruction fetch (the selector is CS's).
            cpl: the current privilege level (0 kernel, 3 user).
            size: bytes accessed: ``offset + size - 1`` must be within the limit too.

        Raises:
            SegmentFault: (a :class:`GeneralProtectionFault`) null selector, index beyond
                the table, a system descriptor, write to code or read-only data, read of
                execute-only code, execution of data, privilege, offset beyond the limit.
            SegmentNotPresent: the descriptor's P bit is clear (#NP).
            TypeError, ValueError: malformed arguments.
        """
        selector = _check_int(selector, "selector", 16)
        offset = _check_int(offset, "offset", 32)
        _check_bool(write, "write")
        _check_bool(execute, "execute")
        cpl = _check_int(cpl, "cpl", 2)
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"size must be an int, got {size!r}")
        if not 1 <= size <= 16:
            raise ValueError(f"size must be 1..16 bytes, got {size}")
        if write and execute:
            raise ValueError("an instruction fetch (execute=True) is not a write")
        table, base, address, phys, d, raw = self._lookup(selector, offset)
        index, rpl = selector >> 3, selector & SEGMENT_RPL_MASK
        code = selector & 0xFFFC
        what = f"{table} entry {index} ({d.describe()})"

        def gp(reason: str, detail: str, error_code: int = code) -> SegmentFault:
            return SegmentFault(
                selector, offset, error_code=error_code, reason=reason, detail=detail
            )

        # Loading the segment register: the descriptor's type, privilege and P bit, each
        # failure reported with the selector as the error code.
        if not d.s:
            raise gp("type", f"{what} is not a code or data segment")
        if execute:
            if not d.is_code:
                raise gp("type", f"instruction fetch from {what}: not a code segment")
            # A far transfer to non-conforming code needs DPL == CPL and RPL <= CPL; to
            # conforming code, DPL <= CPL (SDM vol. 3, 5.8.1).
            if d.conforming and d.dpl > cpl:
                raise gp("privilege", f"DPL {d.dpl} > CPL {cpl} of conforming {what}")
            if not d.conforming and (d.dpl != cpl or rpl > cpl):
                raise gp("privilege", f"CPL {cpl}, RPL {rpl}: not DPL {d.dpl} of {what}")
        else:
            if not d.readable:
                raise gp("type", f"{what} cannot be read: a data segment register refuses it")
            # Data, and code read as data unless conforming: max(CPL, RPL) <= DPL (5.6).
            if not d.conforming and max(cpl, rpl) > d.dpl:
                raise gp("privilege", f"max(CPL {cpl}, RPL {rpl}) > DPL {d.dpl} of {what}")
        if not d.present:
            raise SegmentNotPresent(selector, offset, error_code=code, detail=f"P clear in {what}")
        # The access itself: its kind and its extent, #GP(0) when they fail.
        if write and not d.writable:
            raise gp(
                "type",
                f"write to {what}: "
                + ("a code segment is never writable" if d.is_code else "read-only"),
                0,
            )
        last = offset + size - 1
        if d.expand_down:
            upper = 0xFFFFFFFF if d.db else 0xFFFF
            if offset <= d.effective_limit or last > upper:
                raise gp(
                    "limit",
                    f"offset {offset:#x}+{size} outside {d.effective_limit + 1:#x}..{upper:#x}"
                    f" of expand-down {what}",
                    0,
                )
        elif last > d.effective_limit:
            raise gp(
                "limit",
                f"offset {offset:#x}+{size} beyond the limit {d.effective_limit:#x} of {what}",
                0,
            )
        return LinearTranslation(
            selector=selector,
            offset=offset,
            index=index,
            ti=(selector >> 2) & 1,
            rpl=rpl,
            table=table,
            table_base=base,
            descriptor_address=address,
            descriptor_phys=phys,
            raw=raw,
            descriptor=d,
            linear=(d.base + offset) % _U32,
        )
