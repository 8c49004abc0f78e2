"""``hwsim.run``: trio.run with the cycle clock, the seeded scheduler and the deadlock watchdog."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import trio

from . import _trio_knobs
from .clock import CycleClock
from .deadlock import open_watchdog

T = TypeVar("T")


def validate_seed(seed: object) -> int:
    """Seeds are non-negative ints; ``None`` means 0 (runs are reproducible by default)."""
    if seed is None:
        return 0
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return seed


def single_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception in ``group`` that is not a cancellation, if there is exactly one.

    trio wraps every error leaving a nursery in an ExceptionGroup. When a machine stops
    for one reason (a Deadlock, a crashed actor, the user's own error) hwsim raises that
    error itself, so that ``except hwsim.Deadlock`` and ``pytest.raises`` work as written.
    """
    _, rest = group.split(trio.Cancelled)
    if rest is None:
        return None
    leaves: list[BaseException] = []
    stack: list[BaseException] = [rest]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else None


@contextlib.contextmanager
def unwrap_single_error() -> Iterator[None]:
    """Re-raise a one-error ExceptionGroup as that error (see :func:`single_error`)."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaf = single_error(group)
        if leaf is None:
            raise
        leaf.__suppress_context__ = True
        raise leaf from leaf.__cause__


def run(async_fn: Callable[..., Awaitable[T]], *args: Any, seed: int | None = None) -> T:
    """Run ``async_fn(*args)`` under trio with hwsim's cycle clock and seeded scheduler.

    The same program and seed give the same result and the same trace in every process.

    Args:
        async_fn: the async function to run (typically one that boots a machine).
        *args: positional arguments for it.
        seed: seeds trio's scheduling decisions; ``None`` means 0.

    Returns:
        What ``async_fn`` returned.

    Raises:
        Deadlock: every task ended up waiting with nothing left to wake them.

    Example:
        >>> import hwsim
        >>> async def main():
        ...     await hwsim.sleep(10)
        ...     return hwsim.current_cycle()
        >>> hwsim.run(main)
        10
    """
    seed = validate_seed(seed)

    async def main() -> T:
        with unwrap_single_error():
            async with open_watchdog():
                return await async_fn(*args)
        raise AssertionError("unreachable")  # pragma: no cover

    clock = CycleClock()
    with _trio_knobs.deterministic_scheduling(seed):
        return trio.run(main, clock=clock)
