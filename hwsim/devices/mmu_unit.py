"""The MMU unit: the actor around :class:`~hwsim.devices.mmu.MmuModel` and its messages.

``mmu{i}`` answers CPU ``i``'s translations - one access (:class:`Translate`) or a trace
(:class:`TranslateTrace`) - and its TLB maintenance (:class:`Invlpg`,
:class:`FlushTlbKernelRange`, :class:`LoadCr3`). No algorithm lives here: every handler
calls the model and counts what happened (:class:`MmuStatistics`). The names are
re-exported by :mod:`hwsim.devices.mmu`, which is where the rest of hwsim imports them from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import numpy as np
import numpy.typing as npt

from ..core.actor import Actor, handles
from ..errors import SegmentationFault
from .pagefault import GeneralProtectionFault, PageFault

if TYPE_CHECKING:
    # For the annotations only: mmu.py re-exports this module's names, so importing it
    # at run time would be a cycle.
    from .mmu import MmuModel


@attrs.frozen
class Translate:
    """Translate one access at ``vaddr``; the reply is the physical address."""

    vaddr: int
    write: bool
    user: bool = False


@attrs.frozen(eq=False)
class TranslateTrace:
    """Translate a trace (:meth:`~hwsim.devices.mmu.MmuModel.translate_many`); the reply is a
    :class:`TraceTranslation`. The walker's accesses are recorded, not timed: the CPU
    replays them through its L1 in order with the data accesses."""

    vaddrs: npt.NDArray[np.uint64]
    writes: npt.NDArray[np.bool_]
    user: bool = False


@attrs.frozen(eq=False)
class TraceTranslation:
    """What :class:`TranslateTrace` found: the physical address of each access translated
    (all of them, or those before ``fault.index``), the walker's accesses
    (``(access index, phys, is_write)``) and the fault that stopped the trace, if any."""

    phys: npt.NDArray[np.int64]
    walk_log: list[tuple[int, int, bool]]
    fault: PageFault | None


@attrs.frozen
class RecordWalkCycles:
    """The CPU reports what the walks of a trace cost once replayed through its L1."""

    cycles: int


@attrs.frozen
class Invlpg:
    """``INVLPG vaddr``; the reply is how many TLB entries were dropped."""

    vaddr: int


@attrs.frozen
class FlushTlbKernelRange:
    """This CPU's share of ``flush_tlb_kernel_range(start, end)`` (a TLB shootdown)."""

    start: int
    end: int


@attrs.frozen
class LoadCr3:
    """``MOV to CR3``: switch page tables (see :meth:`~hwsim.devices.mmu.MmuModel.load_cr3`)."""

    root: int
    asid: int = 0
    noflush: bool = False


@attrs.frozen
class MmuStatistics:
    """What an MMU has done: ``translations`` (single accesses and trace accesses),
    ``page_faults`` and ``general_protection_faults`` raised. The TLB's own counters (hits,
    misses, walks, walk cycles) are the ``tlb{i}`` statistics."""

    translations: int
    page_faults: int
    general_protection_faults: int


class Mmu(Actor):
    """CPU ``index``'s MMU unit (``"mmu{index}"``): the model, answering translations and
    TLB maintenance. Every handler is synchronous, so the CPU's atomic mode calls the same
    handlers directly (:meth:`~hwsim.core.actor.Actor.call_nowait`)."""

    def __init__(self, index: int, model: MmuModel, **kwargs: object) -> None:
        super().__init__(f"mmu{index}", **kwargs)  # type: ignore[arg-type]
        self.index = index
        self.model = model
        self.translations = self.page_faults = self.gp_faults = 0

    def _count_fault(self, exc: SegmentationFault) -> None:
        if isinstance(exc, PageFault):
            self.page_faults += 1
        else:
            self.gp_faults += 1

    @handles(Translate)
    def _translate(self, msg: Translate, at: int) -> tuple[int, int]:
        self.translations += 1
        try:
            phys, done, _ = self.model.timed_translate(msg.vaddr, at, msg.write, msg.user)
        except SegmentationFault as exc:
            self._count_fault(exc)
            raise
        return phys, done

    @handles(TranslateTrace)
    def _translate_trace(self, msg: TranslateTrace, at: int) -> tuple[TraceTranslation, int]:
        log: list[tuple[int, int, bool]] = []  # the replay through the L1 times the walks
        try:
            phys, _ = self.model.translate_many(msg.vaddrs, msg.writes, msg.user, walk_log=log)
        except PageFault as fault:
            self.page_faults += 1
            assert fault.index is not None
            self.translations += fault.index + 1
            return TraceTranslation(fault.translated, log, fault), at
        except GeneralProtectionFault:
            self.gp_faults += 1
            raise
        self.translations += len(phys)
        return TraceTranslation(phys, log, None), at

    @handles(RecordWalkCycles)
    def _record_walk_cycles(self, msg: RecordWalkCycles, at: int) -> tuple[None, int]:
        self.model.tlb.add_walk_cycles(msg.cycles)
        return None, at

    @handles(Invlpg)
    def _invlpg(self, msg: Invlpg, at: int) -> tuple[int, int]:
        return self.model.invlpg(msg.vaddr), at + self.model.tlb_latency

    @handles(FlushTlbKernelRange)
    def _flush_range(self, msg: FlushTlbKernelRange, at: int) -> tuple[int, int]:
        return self.model.flush_tlb_kernel_range(msg.start, msg.end), at

    @handles(LoadCr3)
    def _load_cr3(self, msg: LoadCr3, at: int) -> tuple[None, int]:
        self.model.load_cr3(msg.root, msg.asid, noflush=msg.noflush)
        return None, at

    def statistics(self) -> MmuStatistics:
        return MmuStatistics(
            translations=self.translations,
            page_faults=self.page_faults,
            general_protection_faults=self.gp_faults,
        )
