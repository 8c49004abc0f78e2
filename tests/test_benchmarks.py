"""The benchmarks' own machinery (their figures are never asserted here)."""

from __future__ import annotations

import hwsim
from benchmarks.echo import UntracedEcho, copy_is_current


def test_the_no_tracing_baseline_is_actor_serve_without_its_tracer_lines() -> None:
    assert copy_is_current()
    assert "tracer" in hwsim.Actor.serve.__code__.co_names
    assert "tracer" not in UntracedEcho.serve.__code__.co_names
