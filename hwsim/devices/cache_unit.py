"""The cache units: ``"l1d{i}"`` (a CPU's L1, serving its loads, stores and traces through the
coherent hierarchy) and ``"l2"`` (the shared level, answering maintenance), with the messages
they speak. The models are in :mod:`hwsim.devices.cache` and
:mod:`hwsim.devices.coherence`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import numpy as np
import numpy.typing as npt

from ..core.actor import Actor, handles
from ..core.clock import current_cycle
from .cache import CacheModel, CacheStatistics

if TYPE_CHECKING:
    from .coherence import CoherentHierarchy


@attrs.frozen
class CacheLoad:
    """Load ``size`` bytes at physical ``phys`` through this L1 (within one page)."""

    phys: int
    size: int


@attrs.frozen
class CacheStore:
    """Store ``data`` at physical ``phys`` through this L1."""

    phys: int
    data: bytes


@attrs.frozen(eq=False)
class LineTrace:
    """A trace of line accesses run as a dependent chain through this L1
    (:meth:`CoherentHierarchy.timed_access_lines`); the reply is the latencies."""

    lines: npt.NDArray[np.int64]
    writes: npt.NDArray[np.bool_]
    gaps: npt.NDArray[np.int64] | None = None


@attrs.frozen
class WritebackRange:
    """Clean the lines of ``[phys, phys + size)`` in this level and below (``dc cvac``);
    the reply is how many dirty lines were written back."""

    phys: int
    size: int


@attrs.frozen
class InvalidateRange:
    """Drop the lines of ``[phys, phys + size)`` from this level and below (``dc ivac``);
    dirty data in them is lost. The reply is how many lines were dropped."""

    phys: int
    size: int


class Cache(Actor):
    """A cache unit: ``"l1d{i}"`` (CPU ``i``'s L1, serving its loads, stores and traces,
    kept coherent with the other L1s) or ``"l2"`` (the shared level, which the L1s reach
    as a model inside their own messages, since a line fill is one dependent chain; its
    actor answers maintenance). Handlers are synchronous: the CPU's atomic mode calls them
    directly.

    Args:
        model: the cache level.
        hierarchy: the machine's caches; with ``cpu``, this unit is that CPU's L1.
        cpu: the CPU whose L1 this is, or None for a shared level.
    """

    def __init__(
        self,
        model: CacheModel,
        hierarchy: CoherentHierarchy,
        cpu: int | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(model.name, **kwargs)  # type: ignore[arg-type]
        if cpu is not None and hierarchy._l1(cpu) is not model:  # _l1 checks the number
            raise ValueError(f"{model.name} is not CPU {cpu}'s L1")
        self.model = model
        self.hierarchy = hierarchy
        self.cpu = cpu

    def _l1(self) -> int:
        if self.cpu is None:
            raise TypeError(f"{self.name} is a shared level: CPUs access memory through an L1")
        return self.cpu

    def _prune(self) -> None:
        # The CPUs' misses book the RAM channel through the cache models, not the RAM
        # actor: keep its calendar short from here (see RamModel.prune).
        self.hierarchy.ram.prune(current_cycle())

    @handles(CacheLoad)
    def _load(self, msg: CacheLoad, at: int) -> tuple[bytes, int]:
        reply = self.hierarchy.timed_load(self._l1(), msg.phys, msg.size, at)
        self._prune()
        return reply

    @handles(CacheStore)
    def _store(self, msg: CacheStore, at: int) -> tuple[None, int]:
        reply = self.hierarchy.timed_store(self._l1(), msg.phys, msg.data, at)
        self._prune()
        return reply

    @handles(LineTrace)
    def _trace(self, msg: LineTrace, at: int) -> tuple[npt.NDArray[np.int64], int]:
        reply = self.hierarchy.timed_access_lines(self._l1(), msg.lines, msg.writes, at, msg.gaps)
        self._prune()
        return reply

    @handles(WritebackRange)
    def _writeback(self, msg: WritebackRange, at: int) -> tuple[int, int]:
        return self.model.timed_writeback_range(msg.phys, msg.size, at)

    @handles(InvalidateRange)
    def _invalidate(self, msg: InvalidateRange, at: int) -> tuple[int, int]:
        return self.model.invalidate_range(msg.phys, msg.size), at + self.model.latency

    def statistics(self) -> CacheStatistics:
        return self.model.statistics()
