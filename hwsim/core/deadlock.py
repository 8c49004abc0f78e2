"""Deadlock detection: end a run whose tasks all wait for each other, and say who waits on whom.

The cycle clock calls :meth:`Watchdog.on_idle` when no task can run and no deadline is
pending. If, besides, nothing outside the run can wake a task (no task waits for I/O, no
other thread exists, no callback is queued), the run is stuck for good: the watchdog's task
is woken, builds the wait-for graph from the actors' mailboxes and raises
:class:`~hwsim.Deadlock`, which cancels everything else. This takes one pass of trio's run
loop — no host timeout, no busy spin. When something outside *could* still wake a task, the
clock naps for real (IDLE_NAP) and asks again.

The wait-for graph: a task that called an actor waits for that actor's task; an actor busy
with an ``async`` handler waits for whatever its own task waits for. A cycle in that graph
is the classic deadlock; a chain that ends at an idle actor or a task blocked outside hwsim
means someone waits for a message or event nobody is left to send.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import outcome
import trio
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from ..errors import Deadlock
from . import _trio_knobs, registry
from .clock import IDLE_NAP, CycleClock
from .trace import task_label


def _outside_wakeup_possible() -> bool:
    stats = trio.lowlevel.current_statistics()
    if stats.run_sync_soon_queue_size:
        return True
    io = stats.io_statistics
    waiting = getattr(io, "tasks_waiting_read", 0) + getattr(io, "tasks_waiting_write", 0)
    if waiting > _trio_knobs.TRIO_OWN_IO_WAITERS:
        return True
    return _trio_knobs.busy_threads() > 0


def _all_tasks() -> list[Task]:
    root = trio.lowlevel.current_root_task()
    found: list[Task] = []
    stack = [root] if root is not None else []
    while stack:
        task = stack.pop()
        found.append(task)
        for nursery in reversed(task.child_nurseries):
            stack.extend(reversed(list(nursery.child_tasks)))
    return found


def describe_waits(now: int) -> str:
    """The deadlock report: every blocked party, what it waits for, and any wait-for cycle."""
    actors = registry.current().live_actors()
    actor_of_task = {id(a._task): a for a in actors if a._task is not None}

    def label(task: Task | None) -> str:
        if task is None:
            return "(posted)"
        actor = actor_of_task.get(id(task))
        return actor.name if actor is not None else task_label(task)

    # waiter task id -> (actor it waits for, message kind)
    waits: dict[int, tuple[str, str, Task | None]] = {}
    for actor in actors:
        for req in actor.pending():
            if req.task is not None:
                waits[id(req.task)] = (actor.name, type(req.msg).__name__, actor._task)

    lines: list[str] = []
    edges: dict[str, str] = {}
    for task in _all_tasks():
        name = label(task)
        if id(task) in waits:
            target, kind, _ = waits[id(task)]
            lines.append(f"  {name} waits for {target} to answer {kind}")
            edges[name] = target
        elif id(task) in actor_of_task:
            actor = actor_of_task[id(task)]
            if actor._current is None:
                lines.append(f"  {name} is idle, waiting for a message")
            else:
                lines.append(
                    f"  {name} is handling {type(actor._current.msg).__name__} and blocked "
                    "outside hwsim"
                )
        elif task.name.startswith("<") or task is current_task():
            continue  # trio's own, or the watchdog
        elif _trio_knobs.waits_for_children(task):
            continue
        else:
            chain = _trio_knobs.await_chain(task)
            where = f" in {chain[-2]}" if len(chain) >= 2 else ""
            lines.append(f"  {name} is blocked outside hwsim{where}, which nothing can wake")

    cycle = _find_cycle(edges)
    head = f"Deadlock at cycle {now}: every task is blocked and nothing can wake them."
    if cycle:
        head += "\n  wait-for cycle: " + " -> ".join(cycle)
    else:
        head += "\n  no wait-for cycle: the chains below end at someone nobody will wake."
    return head + "\n" + "\n".join(lines)


def _find_cycle(edges: dict[str, str]) -> list[str]:
    for start in edges:
        seen: list[str] = []
        node = start
        while node in edges and node not in seen:
            seen.append(node)
            node = edges[node]
        if node in seen:
            cycle = seen[seen.index(node) :]
            # Start the cycle at its alphabetically first member so the message is stable.
            first = cycle.index(min(cycle))
            cycle = cycle[first:] + cycle[:first]
            return [*cycle, cycle[0]]
    return []


def _abort(raise_cancel: object) -> Abort:
    return Abort.SUCCEEDED


class Watchdog:
    """Watches a :class:`CycleClock` for the idle-with-nothing-pending state."""

    def __init__(self, clock: CycleClock) -> None:
        self.clock = clock
        self._task: Task | None = None
        self._fired = False

    def on_idle(self) -> float:
        if self._task is None or self._fired:
            return IDLE_NAP
        if _outside_wakeup_possible():
            return IDLE_NAP
        self._fired = True
        reschedule(self._task, outcome.Value(None))
        return 0.0

    async def _watch(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._task = current_task()
        task_status.started()
        try:
            await wait_task_rescheduled(_abort)
        finally:
            self._task = None
        raise Deadlock(describe_waits(int(self.clock.current_time())))


@contextlib.asynccontextmanager
async def open_watchdog() -> AsyncIterator[Watchdog | None]:
    """Run the body under a deadlock watchdog, if the run uses a :class:`CycleClock`.

    Yields the watchdog (``None`` under any other clock: then there is nothing to watch).
    """
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, CycleClock) or clock.on_idle is not None:
        yield None
        return
    watchdog = Watchdog(clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(watchdog._watch, name="<hwsim deadlock watchdog>")
        clock.on_idle = watchdog.on_idle
        try:
            yield watchdog
        finally:
            clock.on_idle = None
            nursery.cancel_scope.cancel()
