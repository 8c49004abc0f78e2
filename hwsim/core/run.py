"""``hwsim.run``: trio.run with the cycle clock, the seeded scheduler and the deadlock watchdog."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
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
    # Callers left waiting by a crashed actor get a "secondary" error; the crash itself is
    # the one worth raising.
    primary = [leaf for leaf in leaves if not getattr(leaf, "secondary", False)] or leaves
    return primary[0] if len(primary) == 1 else None


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
    return run_with_clock(async_fn, args, seed=seed)


def run_with_clock(
    async_fn: Callable[..., Awaitable[T]],
    args: tuple[Any, ...] = (),
    *,
    seed: int | None = None,
    instruments: Sequence[trio.abc.Instrument] = (),
) -> T:
    """:func:`run` with trio instruments: the entry point the pytest plugin shares."""
    seed = validate_seed(seed)

    async def main() -> T:
        with unwrap_single_error():
            async with open_watchdog():
                return await async_fn(*args)
        raise AssertionError("unreachable")  # pragma: no cover

    # Name the main task after the user's function, so deadlock reports and traces say
    # "simulate waits for cpu0", not "main waits for cpu0".
    for attr in ("__module__", "__name__", "__qualname__"):
        value = getattr(async_fn, attr, None)
        if isinstance(value, str):
            setattr(main, attr, value)
    clock = CycleClock()
    with _trio_knobs.deterministic_scheduling(seed):
        return trio.run(main, clock=clock, instruments=instruments)
