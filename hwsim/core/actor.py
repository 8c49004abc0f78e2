"""Actors: named trio tasks with a mailbox, speaking typed messages.

Every hardware unit and kernel service is an :class:`Actor`. A caller sends a message and
waits for the reply with :meth:`Actor.call`; a message nobody waits for goes with
:meth:`Actor.post`. The actor's task takes messages from its mailbox one at a time, hands
each to the handler registered for the message's class, and sends the handler's result back.

Time travels on the messages, not in sleeps (the loosely-timed style of SystemC TLM-2.0):
a request carries ``at``, the cycle it is issued, and a handler returns ``(value, done)``,
the cycle its work completes. Units in a chain add their latencies to the timestamp and
nobody sleeps until the reply reaches the edge of the model (the public API call the user
awaits), which sleeps once, until ``done``. A distinct virtual timestamp costs ~25 µs on
trio; a hop costs a few.

The mailbox is built on trio's low-level primitives (``wait_task_rescheduled`` and
``reschedule``) rather than memory channels: a round trip is then two task switches and no
channel bookkeeping, which makes hwsim's request/reply cheaper than the same pattern on raw
trio channels (see benchmarks/).

Errors: a handler that raises a :class:`~hwsim.HwsimError`, ``ValueError`` or ``TypeError``
has refused the request; the exception is raised at the caller, with a note naming the actor,
and the actor goes on (its model guarantees a refused request changed nothing). Any other
exception is a bug: the actor dies, and the machine stops with :class:`~hwsim.ActorCrashed`.
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import outcome
import trio
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from ..errors import ActorCrashed, HwsimError
from . import registry
from .trace import Tracer

# Exceptions that mean "request refused" rather than "actor broken".
REFUSALS = (HwsimError, ValueError, TypeError)

_F = TypeVar("_F", bound=Callable[..., Any])

_QUEUED, _HANDLING, _DONE = 0, 1, 2


def handles(*message_types: type) -> Callable[[_F], _F]:
    """Mark a method as the handler of one or more message classes.

    The handler is called as ``handler(message, at)`` and returns ``(value, done)``: the
    reply and the cycle the work completes. It may be ``async`` when it must ask other
    actors; a plain function is cheaper.
    """

    def mark(fn: _F) -> _F:
        fn._hwsim_handles = message_types  # type: ignore[attr-defined]
        return fn

    return mark


class Request:
    """A message in a mailbox, with what the actor needs to answer it."""

    __slots__ = ("actor", "at", "msg", "posted", "seq", "state", "task")

    def __init__(self, actor: Actor, msg: object, at: int, task: Task | None) -> None:
        self.actor = actor
        self.msg = msg
        self.at = at
        self.task = task  # None once the caller has given up (or for a posted message)
        self.posted = task is None
        self.state = _QUEUED
        self.seq = 0

    def abort(self, raise_cancel: object) -> Abort:
        # Cancelled before the actor took it: withdraw it, nothing happened. Already being
        # handled (an async handler, waiting on other units): the work completes in the
        # machine, as an issued bus transaction would, but the caller stops waiting and the
        # reply is dropped.
        if self.state == _QUEUED:
            self.actor._queue.remove(self)
            self.state = _DONE
        self.task = None
        return Abort.SUCCEEDED


def _abort_idle(raise_cancel: object) -> Abort:
    return Abort.SUCCEEDED


#: How much of a message an error note shows (a burst's arrays, a chain of descriptors).
NOTE_REPR_LIMIT = 300


def _short(msg: object) -> str:
    text = repr(msg)
    if len(text) > NOTE_REPR_LIMIT:
        text = f"{text[: NOTE_REPR_LIMIT - 20]}... ({len(text)} characters)"
    return text


class Actor:
    """Base class of every unit and service.

    Subclasses register handlers with :func:`handles` and are started with
    ``await nursery.start(actor.serve, name=actor.name)``.

    Attributes:
        name: the unit's name as ``Machine.stats()`` and traces show it (``"cpu0"``, ``"ram"``).
        tracer: where messages are recorded, or ``None`` (the default: tracing off).
    """

    _handler_names: ClassVar[dict[type, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names: dict[type, str] = {}
        for klass in reversed(cls.__mro__):
            for attr, fn in vars(klass).items():
                for message_type in getattr(fn, "_hwsim_handles", ()):
                    names[message_type] = attr
        cls._handler_names = names

    def __init__(self, name: str, *, tracer: Tracer | None = None) -> None:
        if not name or not isinstance(name, str):
            raise ValueError(f"an actor needs a non-empty name, got {name!r}")
        self.name = name
        self.tracer = tracer
        self._queue: deque[Request] = deque()
        self._task: Task | None = None
        self._parked = False
        self._dead = False
        self._current: Request | None = None
        # Plain functions, not bound methods: a bound method here would make every actor a
        # reference cycle, keeping a finished machine (and its RAM) alive until gc runs.
        self._dispatch: dict[type, tuple[Callable[..., Any], bool]] = {}
        for message_type, attr in self._handler_names.items():
            fn = getattr(type(self), attr)
            self._dispatch[message_type] = (fn, inspect.iscoroutinefunction(fn))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # ------------------------------------------------------------------ client side

    async def call(self, msg: object, at: int | None = None) -> tuple[Any, int]:
        """Send ``msg`` and wait for the reply. A checkpoint.

        Args:
            msg: a message instance of a class this actor handles.
            at: the cycle the request is issued; the current cycle if omitted.

        Returns:
            ``(value, done)``: the handler's reply and the cycle the work completes.

        Raises:
            HwsimError: (or ValueError/TypeError) the actor refused the request; the
                exception carries a note naming the actor.
            ActorCrashed: the actor died before answering.
        """
        req = self._enqueue(msg, at, current_task())
        return await wait_task_rescheduled(req.abort)  # type: ignore[no-any-return]

    def call_nowait(self, msg: object, at: int) -> tuple[Any, int]:
        """Atomic mode: run the handler for ``msg`` now, in the caller, as if the actor had
        answered it at once; not a checkpoint. Only synchronous handlers have this path
        (a unit's model step), so that the atomic and timing modes run the same code.

        Returns and raises as :meth:`call`, except that an error other than a refusal
        propagates to the caller as it is (no actor task is there to crash).

        Raises:
            TypeError: the actor does not handle ``msg``, or its handler awaits.
        """
        entry = self._dispatch.get(type(msg))
        if entry is None:
            raise TypeError(f"{self.name} does not understand {type(msg).__name__} messages")
        fn, is_async = entry
        if is_async:
            raise TypeError(
                f"{self.name} handles {type(msg).__name__} asynchronously: no atomic path"
            )
        try:
            return fn(self, msg, at)  # type: ignore[no-any-return]
        except REFUSALS as exc:
            self._refused(exc, msg, at, ", atomic")
            raise

    def _refused(self, exc: BaseException, msg: object, at: int, how: str = "") -> None:
        """Mark a refusal: the actor's name and the cycle its work ended on a hwsim error,
        and a note naming the actor and (the start of) the message."""
        if isinstance(exc, HwsimError) and exc.actor is None:
            exc.actor = self.name
            exc.done = self.refusal_done(exc, at)
        exc.add_note(f"(raised by actor {self.name!r} handling {_short(msg)}{how})")

    def _enqueue(self, msg: object, at: int | None, task: Task | None) -> Request:
        if self._dead:
            raise ActorCrashed(f"actor {self.name!r} is not running")
        req = Request(self, msg, int(trio.current_time()) if at is None else at, task)
        self._queue.append(req)
        if self._parked:
            self._parked = False
            reschedule(self._task)  # type: ignore[arg-type]  # parked implies a task
        return req

    def refusal_done(self, exc: HwsimError, at: int) -> int | None:
        """The cycle a refused request's work ended (None: refused before any work).
        Services whose failures cost time (an allocation that searched before failing)
        override it; the caller's clock is charged with it."""
        return None

    def post(self, msg: object, at: int | None = None) -> None:
        """Send ``msg`` without waiting for an answer. Not a checkpoint.

        An error raised while handling a posted message has nobody to go to, so it ends
        the actor (and the machine) with :class:`~hwsim.ActorCrashed`.
        """
        self._enqueue(msg, at, None)

    # ------------------------------------------------------------------ server side

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The actor's task: answer messages until cancelled."""
        self._task = current_task()
        runs = registry.current()
        runs.add_actor(self)
        if self.tracer is not None:
            self.tracer.register_actor_task(self._task, self.name)
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
                    tracer = self.tracer
                    if tracer is not None:
                        tracer.on_handle(req, self.name)
                    try:
                        if entry is None:
                            raise TypeError(
                                f"{self.name} does not understand {type(msg).__name__} messages"
                            )
                        fn, is_async = entry
                        if is_async:
                            result = await fn(self, msg, req.at)
                        else:
                            result = fn(self, msg, req.at)
                    except REFUSALS as exc:
                        if req.posted:
                            raise ActorCrashed(
                                f"actor {self.name!r} failed on a posted "
                                f"{type(msg).__name__} message: {exc}"
                            ) from exc
                        self._refused(exc, msg, req.at)
                        reply: outcome.Outcome[Any] = outcome.Error(exc)
                        result = None
                    else:
                        reply = outcome.Value(result)
                    req.state = _DONE
                    self._current = None
                    if tracer is not None:
                        tracer.on_reply(req, result)
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
            runs.discard(self)
            self._fail_pending()

    def _fail_pending(self) -> None:
        """Wake everyone still waiting for this actor: it will never answer them."""
        pending = list(self._queue)
        if self._current is not None and self._current.state == _HANDLING:
            pending.insert(0, self._current)
        self._queue.clear()
        self._current = None
        for req in pending:
            req.state = _DONE
            if req.task is not None:
                error = ActorCrashed(
                    f"actor {self.name!r} stopped before answering {type(req.msg).__name__}"
                )
                error.secondary = True  # a consequence: the reason is reported elsewhere
                reschedule(req.task, outcome.Error(error))

    # ------------------------------------------------------------------ introspection

    def pending(self) -> list[Request]:
        """The requests not yet answered: the one being handled first, then the queue."""
        current = [self._current] if self._current is not None else []
        return current + list(self._queue)
