"""The machine's timer: call a function at a given virtual cycle.

Messages are handled in host order, not in order of their cycles (see docs/architecture.md,
"Time travels on messages"). Things that must *happen* at a cycle - a DMA transfer
completing, an interrupt reaching a CPU - are scheduled here instead: one trio task keeps a
heap of ``(cycle, sequence number, function)`` and calls each function when virtual time
reaches its cycle, in that fixed order (SimPy's event queue, in a dozen lines). The
functions are synchronous and quick (they post a message, set an event).

With nothing scheduled the task waits on an event, with no deadline, so an idle timer
never keeps a deadlocked machine alive.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import attrs
import trio


@attrs.frozen
class TimerStatistics:
    """Calls scheduled and made so far, and how many are waiting."""

    scheduled: int
    fired: int
    pending: int


class Timer:
    """Calls functions at virtual cycles. One per machine (``machine.timer``).

    Example:
        >>> import hwsim, trio
        >>> async def main():
        ...     timer, fired = Timer(), []
        ...     async with trio.open_nursery() as nursery:
        ...         await nursery.start(timer.serve)
        ...         timer.call_at(50, lambda: fired.append(hwsim.current_cycle()))
        ...         timer.call_at(20, lambda: fired.append(hwsim.current_cycle()))
        ...         await hwsim.sleep(100)
        ...         nursery.cancel_scope.cancel()
        ...     return fired
        >>> hwsim.run(main)
        [20, 50]
    """

    name = "timer"

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Callable[[], object]]] = []
        self._seq = 0
        self._fired = 0
        self._wake: trio.Event | None = None

    def call_at(self, cycle: int, fn: Callable[[], object]) -> None:
        """Call ``fn()`` when virtual time reaches ``cycle`` (at once if it has passed).
        Calls due at the same cycle run in the order they were scheduled."""
        if isinstance(cycle, bool) or not isinstance(cycle, int):
            raise TypeError(f"a cycle is an int, got {cycle!r}")
        if not callable(fn):
            raise TypeError(f"call_at needs a callable, got {fn!r}")
        heapq.heappush(self._heap, (cycle, self._seq, fn))
        self._seq += 1
        if self._wake is not None:
            self._wake.set()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The timer's task: run until cancelled."""
        task_status.started()
        heap = self._heap
        while True:
            if heap and heap[0][0] <= trio.current_time():
                _, _, fn = heapq.heappop(heap)
                self._fired += 1
                fn()
                continue
            self._wake = trio.Event()
            if heap:
                with trio.move_on_at(heap[0][0]):
                    await self._wake.wait()
            else:
                await self._wake.wait()
            self._wake = None

    def statistics(self) -> TimerStatistics:
        return TimerStatistics(scheduled=self._seq, fired=self._fired, pending=len(self._heap))
