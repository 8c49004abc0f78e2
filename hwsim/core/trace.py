"""Opt-in message tracing, exported as Chrome trace-event JSON (opens in ui.perfetto.dev).

Off by default: an actor checks ``self.tracer is not None`` once per message, which is all
tracing costs when it is off (benchmarks/ measures it). When on, every message is recorded
as (seq, sender, receiver, kind, cycle sent, cycle handled, cycle done), where "sent" is the
cycle the message carries, "handled" the virtual time at which the actor took it from its
mailbox and "done" the completion cycle of the reply (``None`` for posted messages).

The export has one track per actor (and per user task that sent messages), a slice per
handled message spanning sent..done, flow arrows from each request to the slice that served
it and back to the caller, and counter tracks for the statistics recorded with
:meth:`Tracer.counter`. Timestamps are cycles; the viewer labels them microseconds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

if TYPE_CHECKING:
    from trio.lowlevel import Task

    from .actor import Request


@attrs.frozen
class MessageRecord:
    """One message as the trace saw it."""

    seq: int
    sender: str
    receiver: str
    kind: str
    sent: int
    handled: int
    done: int | None
    error: str | None = None


def task_label(task: Task | None) -> str:
    """A readable, deterministic name for the task that sent a message."""
    if task is None:
        return "(posted)"
    name = task.name
    if not name.startswith("<") and "." in name:
        name = name.rsplit(".", 1)[-1]
    return name


@attrs.define
class Tracer:
    """Collects message records and counters during a run.

    Example:
        >>> tracer = Tracer()          # pass to hwsim.boot(config, tracer=tracer)
        >>> tracer.records
        []
    """

    records: list[MessageRecord] = attrs.Factory(list)
    counters: list[tuple[str, int, dict[str, int]]] = attrs.Factory(list)
    _seq: int = 0
    _actor_names: dict[int, str] = attrs.Factory(dict)
    _handled: dict[int, int] = attrs.Factory(dict)

    def register_actor_task(self, task: Task, name: str) -> None:
        self._actor_names[id(task)] = name

    def _sender(self, task: Task | None) -> str:
        if task is None:
            return "(posted)"
        return self._actor_names.get(id(task)) or task_label(task)

    def on_handle(self, req: Request, receiver: str) -> None:
        self._seq += 1
        req.seq = self._seq
        self._handled[self._seq] = int(trio.current_time())

    def on_reply(self, req: Request, result: Any) -> None:
        done: int | None
        error: str | None = None
        if result is None:
            done = None if req.task is None else req.at
            if req.task is not None:
                error = "refused"
        else:
            done = int(result[1])
        self.records.append(
            MessageRecord(
                seq=req.seq,
                sender=self._sender(req.task),
                receiver=req.actor.name,
                kind=type(req.msg).__name__,
                sent=int(req.at),
                handled=self._handled.pop(req.seq),
                done=done,
                error=error,
            )
        )

    def counter(self, name: str, cycle: int, values: dict[str, int]) -> None:
        """Record counter values (a unit's statistics, say) at ``cycle``."""
        self.counters.append((name, int(cycle), dict(values)))

    def lines(self) -> list[str]:
        """The records as text, one message a line: the form the determinism tests compare."""
        return [
            f"{r.seq} {r.sent}->{r.done} {r.sender}->{r.receiver} {r.kind}"
            + (f" !{r.error}" if r.error else "")
            for r in sorted(self.records, key=lambda r: r.seq)
        ]

    def to_chrome(self) -> dict[str, Any]:
        """The trace as a Chrome trace-event JSON object."""
        tids: dict[str, int] = {}

        def tid(name: str) -> int:
            if name not in tids:
                tids[name] = len(tids) + 1
            return tids[name]

        actor_names = set(self._actor_names.values())
        events: list[dict[str, Any]] = []
        for r in sorted(self.records, key=lambda r: r.seq):
            done = r.sent if r.done is None else r.done
            rtid = tid(r.receiver)
            args = {
                "seq": r.seq,
                "from": r.sender,
                "sent": r.sent,
                "handled": r.handled,
                "done": r.done,
            }
            if r.error:
                args["error"] = r.error
            events.append(
                {
                    "name": r.kind,
                    "cat": "msg",
                    "ph": "X",
                    "ts": r.sent,
                    "dur": done - r.sent,
                    "pid": 1,
                    "tid": rtid,
                    "args": args,
                }
            )
            if r.sender == "(posted)":
                continue
            stid = tid(r.sender)
            if r.sender not in actor_names:
                # A user task has no slice of its own to hang the arrows on: give it one
                # spanning the wait for the reply.
                events.append(
                    {
                        "name": f"{r.receiver}.{r.kind}",
                        "cat": "call",
                        "ph": "X",
                        "ts": r.sent,
                        "dur": done - r.sent,
                        "pid": 1,
                        "tid": stid,
                    }
                )
            events.append(
                {
                    "name": "request",
                    "cat": "flow",
                    "ph": "s",
                    "id": 2 * r.seq,
                    "ts": r.sent,
                    "pid": 1,
                    "tid": stid,
                }
            )
            events.append(
                {
                    "name": "request",
                    "cat": "flow",
                    "ph": "f",
                    "bp": "e",
                    "id": 2 * r.seq,
                    "ts": r.sent,
                    "pid": 1,
                    "tid": rtid,
                }
            )
            events.append(
                {
                    "name": "reply",
                    "cat": "flow",
                    "ph": "s",
                    "id": 2 * r.seq + 1,
                    "ts": done,
                    "pid": 1,
                    "tid": rtid,
                }
            )
            events.append(
                {
                    "name": "reply",
                    "cat": "flow",
                    "ph": "f",
                    "bp": "e",
                    "id": 2 * r.seq + 1,
                    "ts": done,
                    "pid": 1,
                    "tid": stid,
                }
            )
        for name, cycle, values in self.counters:
            events.append(
                {"name": name, "cat": "stats", "ph": "C", "ts": cycle, "pid": 1, "args": values}
            )
        meta: list[dict[str, Any]] = [
            {"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "hwsim machine"}}
        ]
        for name, number in tids.items():
            meta.append(
                {"name": "thread_name", "ph": "M", "pid": 1, "tid": number, "args": {"name": name}}
            )
            meta.append(
                {
                    "name": "thread_sort_index",
                    "ph": "M",
                    "pid": 1,
                    "tid": number,
                    "args": {"sort_index": number},
                }
            )
        return {
            "traceEvents": meta + events,
            "displayTimeUnit": "ns",
            "otherData": {"time_unit": "1 trace microsecond = 1 cycle"},
        }

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_chrome` to ``path`` (open it at https://ui.perfetto.dev)."""
        Path(path).write_text(json.dumps(self.to_chrome(), indent=None) + "\n")
