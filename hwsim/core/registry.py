"""What is alive in the current trio run: the actors, for deadlock reports and shutdown."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
from trio.lowlevel import RunVar

if TYPE_CHECKING:
    from .actor import Actor


@attrs.define
class Registry:
    """The actors started in this run, in the order they started (which is deterministic)."""

    actors: list[Actor] = attrs.Factory(list)

    def add_actor(self, actor: Actor) -> None:
        self.actors.append(actor)

    def discard(self, actor: Actor) -> None:
        if actor in self.actors:
            self.actors.remove(actor)

    def live_actors(self) -> list[Actor]:
        return [a for a in self.actors if not a._dead]


_registry: RunVar[Registry] = RunVar("hwsim_registry")


def current() -> Registry:
    """The registry of the current run, created on first use."""
    try:
        return _registry.get()
    except LookupError:
        registry = Registry()
        _registry.set(registry)
        return registry
