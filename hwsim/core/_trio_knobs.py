"""Every private trio detail hwsim relies on, in one place.

trio shuffles runnable tasks on purpose, so that no program comes to depend on an order trio
never promised. A simulator needs the opposite: the same program and seed must give the same
interleaving in every process. trio has a switch for that, used by its Hypothesis plugin: with
``_ALLOW_DETERMINISTIC_SCHEDULING`` set, each batch of runnable tasks is sorted by creation
order and then shuffled with the module's private ``random.Random`` ``_r``, which we seed.

The cycle clock also needs to know whether a task waits in ``wait_all_tasks_blocked()``, so
that such a task is woken before virtual time jumps (as ``MockClock`` promises).

These names are private to trio. pyproject.toml pins trio's version range, and
tests/core/test_trio_knobs.py (the canary) fails loudly if a release moves them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from trio._core import _run as _trio_run
from trio.lowlevel import Task

# trio's own task that serves TrioToken.run_sync_soon always waits to read its wakeup socket,
# so an idle run shows one I/O waiter that is not a user's.
TRIO_OWN_IO_WAITERS = 1


def knobs_available() -> bool:
    """True if the trio in use still has every private name hwsim reaches for."""
    return (
        hasattr(_trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING")
        and hasattr(_trio_run, "_r")
        and hasattr(_trio_run, "GLOBAL_RUN_CONTEXT")
    )


@contextlib.contextmanager
def deterministic_scheduling(seed: int) -> Iterator[None]:
    """Make trio's scheduling decisions a function of ``seed`` for the duration of a run.

    The previous setting and the generator's state are restored afterwards, so that plain
    trio runs in the same process (other tests, say) keep trio's usual behaviour.
    """
    previous_flag = _trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    previous_state = _trio_run._r.getstate()
    _trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True  # type: ignore[misc]
    _trio_run._r.seed(seed)
    try:
        yield
    finally:
        _trio_run._ALLOW_DETERMINISTIC_SCHEDULING = previous_flag  # type: ignore[misc]
        _trio_run._r.setstate(previous_state)


def idle_waiter_cushion() -> float | None:
    """The smallest cushion of a task in ``trio.testing.wait_all_tasks_blocked()``, if any."""
    runner = getattr(_trio_run.GLOBAL_RUN_CONTEXT, "runner", None)
    waiting = getattr(runner, "waiting_for_idle", None)
    if not waiting:
        return None
    cushion, _ = waiting.keys()[0]
    return float(cushion)


def await_chain(task: Task) -> list[str]:
    """The qualified names of the coroutines ``task`` is suspended in, outermost first."""
    names: list[str] = []
    coro: Any = task.coro
    while coro is not None:
        code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
        code = code or getattr(coro, "ag_code", None)
        if code is not None:
            names.append(code.co_qualname)
        coro = (
            getattr(coro, "cr_await", None)
            or getattr(coro, "gi_yieldfrom", None)
            or getattr(coro, "ag_await", None)
        )
    return names


def waits_for_children(task: Task) -> bool:
    """True if ``task`` is parked at the end of a nursery block, waiting for its children."""
    return "Nursery._nested_child_finished" in await_chain(task)


def busy_threads() -> int:
    """Threads other than the main one that could still wake the run.

    trio keeps finished ``to_thread`` workers alive for 10 s in a cache, idle; they will not
    wake anything, so they do not count.
    """
    from trio._core import _thread_cache

    idle = len(getattr(_thread_cache.THREAD_CACHE, "_idle_workers", ()))
    return max(0, threading.active_count() - 1 - idle)
