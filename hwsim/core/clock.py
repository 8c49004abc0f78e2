"""The cycle clock: trio's notion of time, counted in integer CPU cycles.

One trio "second" is one cycle. ``trio.sleep(100)`` therefore waits 100 cycles, and
``trio.current_time()`` returns the cycle count as a float holding an integer (exact up to
2**53 cycles, about 35 days at 3 GHz).

Time only moves when no task can run: then the clock jumps straight to the next deadline,
the way ``trio.testing.MockClock(autojump_threshold=0)`` does. Unlike MockClock it does not
busy-spin when there is no deadline at all. That state means that every task waits on
something only another task could provide; the clock asks the deadlock watchdog
(:mod:`hwsim.core.deadlock`) what to do, and otherwise sleeps for real in short naps so that
genuine outside events (a thread finishing, a socket) can still arrive.
"""

from __future__ import annotations

from collections.abc import Callable
from math import inf

import trio

from . import _trio_knobs

# How long (host seconds) the run loop waits for outside events when nothing is scheduled.
IDLE_NAP = 0.05


class CycleClock(trio.abc.Clock):
    """A virtual clock that counts cycles and jumps to the next deadline when idle.

    Attributes:
        on_idle: called when every task is blocked and no deadline is pending; returns the
            host seconds to wait for outside events. The deadlock watchdog installs itself
            here.
    """

    def __init__(self, start: int = 0) -> None:
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"the clock starts at a non-negative integer cycle, got {start!r}")
        self._now = float(start)
        self.on_idle: Callable[[], float] | None = None
        self.jumps = 0

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self._now

    def deadline_to_sleep_time(self, deadline: float) -> float:
        # trio calls this only when no task is runnable.
        cushion = _trio_knobs.idle_waiter_cushion()
        if cushion is not None:
            # Let wait_all_tasks_blocked() wake first, before time moves.
            return cushion + 1e-9
        if deadline == inf:
            return IDLE_NAP if self.on_idle is None else self.on_idle()
        if deadline > self._now:
            self._now = deadline
            self.jumps += 1
        return 0.0

    def __repr__(self) -> str:
        return f"<CycleClock at cycle {int(self._now)}>"


def current_cycle() -> int:
    """The current virtual time in whole cycles (a plain ``int``)."""
    return int(trio.current_time())


async def sleep(cycles: int) -> None:
    """Let ``cycles`` cycles of virtual time pass. Always a checkpoint.

    Raises:
        ValueError: ``cycles`` is negative or not an integer.
    """
    if isinstance(cycles, bool) or not isinstance(cycles, int) or cycles < 0:
        raise ValueError(f"cycles must be a non-negative int, got {cycles!r}")
    await trio.sleep(cycles)


async def sleep_until(cycle: int) -> None:
    """Wait until virtual time reaches ``cycle`` (at once if it already has). A checkpoint."""
    await trio.sleep_until(cycle)
