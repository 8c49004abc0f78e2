"""The actors under test: an echo unit, and a copy of it with no tracing code at all.

:class:`UntracedEcho` answers the question "what does tracing cost when it is off?": its
``serve`` is :meth:`hwsim.Actor.serve` with every ``tracer`` line removed, so that the
difference between the two is exactly the ``is not None`` checks. The copy is made from
``Actor.serve``'s source when this module is imported, so it can never go stale;
:func:`copy_is_current` checks the result.
"""

from __future__ import annotations

import inspect
import textwrap
from typing import Any

import attrs

import hwsim
from hwsim.core import actor as actor_module


@attrs.frozen
class Ping:
    """The request every request/reply benchmark sends; the reply is ``n + 1``."""

    n: int


class Echo(hwsim.Actor):
    """The cheapest possible unit: a synchronous handler, no state."""

    @hwsim.handles(Ping)
    def _ping(self, msg: Ping, at: int) -> tuple[int, int]:
        return msg.n + 1, at


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
    """True if :meth:`UntracedEcho.serve` has no tracer code and was built from the current
    ``Actor.serve``."""
    code = UntracedEcho.serve.__code__
    return (
        "tracer" not in code.co_names
        and code.co_firstlineno == 1
        and (code.co_filename == "<Actor.serve without tracing>")
    )


def _untraced_serve() -> Any:
    """``Actor.serve`` compiled again from its source without the tracer lines."""
    source = "\n".join(without_tracer(inspect.getsource(hwsim.Actor.serve)))
    namespace: dict[str, Any] = dict(vars(actor_module))
    exec(compile(source, "<Actor.serve without tracing>", "exec"), namespace)
    return namespace["serve"]


class UntracedEcho(Echo):
    """:class:`Echo` whose task has no tracing code: the baseline for "tracing off"."""

    serve = _untraced_serve()
