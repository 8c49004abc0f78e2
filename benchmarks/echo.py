"""The actors under test: an echo unit, and a copy of it with no tracing code at all.

:class:`UntracedEcho` answers the question "what does tracing cost when it is off?": its
``serve`` is :meth:`hwsim.Actor.serve` copied line for line with the ``tracer`` lines
removed, so that the difference between the two is exactly the ``is not None`` checks.
:func:`copy_is_current` notices when ``Actor.serve`` changes and the copy goes stale.
"""

from __future__ import annotations

import inspect
import textwrap
from typing import Any

import attrs
import outcome
import trio
from trio.lowlevel import current_task, reschedule, wait_task_rescheduled

import hwsim
from hwsim.core import registry
from hwsim.core.actor import _DONE, _HANDLING, REFUSALS, _abort_idle
from hwsim.errors import ActorCrashed, HwsimError


@attrs.frozen
class Ping:
    """The request every request/reply benchmark sends; the reply is ``n + 1``."""

    n: int


class Echo(hwsim.Actor):
    """The cheapest possible unit: a synchronous handler, no state."""

    @hwsim.handles(Ping)
    def _ping(self, msg: Ping, at: int) -> tuple[int, int]:
        return msg.n + 1, at


class UntracedEcho(Echo):
    """:class:`Echo` whose task has no tracing code: the baseline for "tracing off"."""

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The actor's task: answer messages until cancelled."""
        # Copied from hwsim/core/actor.py (Actor.serve) without the tracer lines; keep it
        # otherwise identical (copy_is_current() checks).
        self._task = current_task()
        registry.current().add_actor(self)
        task_status.started()
        queue = self._queue
        dispatch = self._dispatch
        try:
            while True:
                while queue:
                    req = queue.popleft()
                    req.state = _HANDLING
                    self._current = req
                    msg = req.msg
                    entry = dispatch.get(type(msg))
                    try:
                        if entry is None:
                            raise TypeError(
                                f"{self.name} does not understand {type(msg).__name__} messages"
                            )
                        fn, is_async = entry
                        result = (await fn(msg, req.at)) if is_async else fn(msg, req.at)
                    except REFUSALS as exc:
                        if req.posted:
                            raise ActorCrashed(
                                f"actor {self.name!r} failed on a posted "
                                f"{type(msg).__name__} message: {exc}"
                            ) from exc
                        if isinstance(exc, HwsimError) and exc.actor is None:
                            exc.actor = self.name
                        exc.add_note(f"(raised by actor {self.name!r} handling {msg!r})")
                        reply: outcome.Outcome[Any] = outcome.Error(exc)
                        result = None
                    else:
                        reply = outcome.Value(result)
                    req.state = _DONE
                    self._current = None
                    if req.task is not None:
                        reschedule(req.task, reply)
                self._parked = True
                await wait_task_rescheduled(_abort_idle)
        except ActorCrashed:
            raise
        except Exception as exc:
            raise ActorCrashed(f"actor {self.name!r} crashed: {type(exc).__name__}: {exc}") from exc
        finally:
            self._dead = True
            self._parked = False
            self._fail_pending()


def _code_lines(source: str) -> list[str]:
    """The lines of a function's source that are code (no blanks, no comment lines)."""
    lines = textwrap.dedent(source).splitlines()
    return [line.rstrip() for line in lines if line.strip() and not line.strip().startswith("#")]


def without_tracer(source: str) -> list[str]:
    """``source``'s code lines minus every line naming ``tracer`` and the blocks they open."""
    kept: list[str] = []
    skip_deeper_than: int | None = None
    for line in _code_lines(source):
        indent = len(line) - len(line.lstrip())
        if skip_deeper_than is not None:
            if indent > skip_deeper_than:
                continue
            skip_deeper_than = None
        if "tracer" in line:
            if line.endswith(":"):
                skip_deeper_than = indent
            continue
        kept.append(line)
    return kept


def copy_is_current() -> bool:
    """True if :meth:`UntracedEcho.serve` is still ``Actor.serve`` minus its tracer lines."""
    original = without_tracer(inspect.getsource(hwsim.Actor.serve))
    copy = _code_lines(inspect.getsource(UntracedEcho.serve))
    return original == copy
