"""Page faults as the x86 MMU raises them: #PF with CR2 and an error code, #GP.

The message of a :class:`PageFault` has the shape of Linux's oops (arch/x86/mm/fault.c,
``show_fault_oops``), with a last line saying what the walker (or, later, the kernel's fault
handler: :mod:`hwsim.kernel.fault`) found. :mod:`hwsim.devices.mmu` raises them and
re-exports every name here.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ..errors import SegmentationFault
from .paging import WalkStep

_EMPTY = np.zeros(0, dtype=np.int64)

# Page-fault error code bits (arch/x86/include/asm/trap_pf.h).
X86_PF_PROT = 1 << 0  # 0: not-present page; 1: protection violation
X86_PF_WRITE = 1 << 1  # a write access
X86_PF_USER = 1 << 2  # from user mode
X86_PF_RSVD = 1 << 3  # a reserved bit was set (here: an entry pointing to no table)
X86_PF_INSTR = 1 << 4  # an instruction fetch

# PageFault.reason values.
NOT_PRESENT = "not present"
WRITE_TO_READ_ONLY = "protection: write to read-only page"
USER_TO_KERNEL = "protection: user access to kernel page"
FETCH_FROM_NX = "protection: instruction fetch from NX page"
BEYOND_RAM = "corrupted entry: no page table there"


class GeneralProtectionFault(SegmentationFault):
    """#GP: a non-canonical x86_64 address (no TLB lookup, no walk), or a segmentation check
    that failed (see :mod:`hwsim.devices.segmentation`)."""


class PageFault(SegmentationFault):
    """#PF: a translation failed. The kernel's page-fault handler decides what happens next.

    The message has the shape of Linux's oops (arch/x86/mm/fault.c, show_fault_oops), with a
    last line saying what the walker found.

    Attributes:
        address: the faulting virtual address (CR2).
        write, user, exec_: the access (a write, from user mode, an instruction fetch).
        reason: :data:`NOT_PRESENT`, :data:`WRITE_TO_READ_ONLY`, :data:`USER_TO_KERNEL` or
            :data:`FETCH_FROM_NX`.
        level: the level whose entry caused it ("PGD".."PTE"): the not-present entry, or the
            first entry lacking RW/USER or having NX. For a fault decided by a TLB entry:
            the level of the entry the TLB entry was cached from.
        error_code: x86's error code (X86_PF_PROT | X86_PF_WRITE | X86_PF_USER |
            X86_PF_INSTR bits).
        from_tlb: the TLB entry decided it (no walk).
        steps: the entries the walker read (empty when the TLB decided).
        done: the cycle the fault was raised at (:meth:`MmuModel.timed_translate`), or None.
        detail: overrides the walker's explanation on the last line (the kernel's fault
            handler knows more: "guard page after a vmalloc area", say).
        index: for :meth:`MmuModel.translate_many`, the index of the faulting access;
            ``translated`` holds the physical addresses of the accesses before it.
    """

    address: int

    def __init__(
        self,
        address: int,
        *,
        write: bool,
        user: bool,
        exec_: bool = False,
        reason: str,
        level: str,
        error_code: int,
        steps: tuple[WalkStep, ...] = (),
        from_tlb: bool = False,
        done: int | None = None,
        address_width: int = 16,
        detail: str | None = None,
    ) -> None:
        super().__init__(
            _oops(address, error_code, reason, level, from_tlb, address_width, detail),
            address=address,
        )
        self.address_width = address_width
        self.write = write
        self.user = user
        self.exec_ = exec_
        self.reason = reason
        self.level = level
        self.error_code = error_code
        self.steps = steps
        self.from_tlb = from_tlb
        self.done = done
        self.index: int | None = None
        #: For translate_many: the physical addresses of the accesses before ``index``.
        self.translated: npt.NDArray[np.int64] = _EMPTY


def _oops(
    address: int,
    error_code: int,
    reason: str,
    level: str,
    from_tlb: bool,
    width: int,
    detail: str | None = None,
) -> str:
    user = bool(error_code & X86_PF_USER)
    addr = f"{address:0{width}x}"
    lines = []
    if error_code & X86_PF_INSTR and error_code & X86_PF_PROT and not user:
        lines.append("kernel tried to execute NX-protected page - exploit attempt? (uid: 0)")
    if not user and address < 4096:
        lines.append(f"BUG: kernel NULL pointer dereference, address: {addr}")
    else:
        lines.append(f"BUG: unable to handle page fault for address: {addr}")
    access = (
        "instruction fetch"
        if error_code & X86_PF_INSTR
        else "write access"
        if error_code & X86_PF_WRITE
        else "read access"
    )
    lines.append(
        f"#PF: {'user' if user else 'supervisor'} {access} in {'user' if user else 'kernel'} mode"
    )
    kind = "permissions violation" if error_code & X86_PF_PROT else "not-present page"
    lines.append(f"#PF: error_code({error_code:#06x}) - {kind}")
    where = f"(TLB entry of a {level}-mapped page)" if from_tlb else f"in the {level} entry"
    if detail is not None:
        pass
    elif reason == NOT_PRESENT:
        detail = f"the {level} entry is not present"
    elif reason == FETCH_FROM_NX:
        detail = f"NX set {where}"
    elif reason == BEYOND_RAM:
        detail = (
            f"the {level} entry points to a table beyond the end of physical memory (a "
            "corrupted page table: something wrote over it)"
        )
    else:
        detail = f"{'RW' if reason == WRITE_TO_READ_ONLY else 'USER'} clear {where}"
    lines.append(f"hwsim: {reason}: {detail}")
    return "\n".join(lines)
