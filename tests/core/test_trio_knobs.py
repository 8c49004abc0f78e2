"""The canary: trio's private knobs still make runs reproducible, across processes.

If a trio release moves ``_ALLOW_DETERMINISTIC_SCHEDULING``, ``_r`` or the run loop's use
of them, these tests fail loudly — update hwsim/core/_trio_knobs.py and the pinned range.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import trio

import hwsim
from hwsim.core import _trio_knobs

# Four tasks race through an actor, each doing a few calls with checkpoints in between; the
# order in which the actor sees them is decided by trio's scheduler alone.
PROGRAM = textwrap.dedent(
    """
    import sys, attrs, trio, hwsim

    @attrs.frozen
    class Hit:
        who: int

    class Counter(hwsim.Actor):
        @hwsim.handles(Hit)
        def _hit(self, msg, at):
            return msg.who, at + 1

    async def main():
        tracer = hwsim.Tracer()
        counter = Counter("counter", tracer=tracer)
        async with trio.open_nursery() as nursery:
            await nursery.start(counter.serve)

            async def worker(k):
                for _ in range(5):
                    await counter.call(Hit(k))
                    await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as workers:
                for k in range(4):
                    workers.start_soon(worker, k, name=f"worker{k}")
            nursery.cancel_scope.cancel()
        return tracer.lines()

    print("\\n".join(hwsim.run(main, seed=int(sys.argv[1]))))
    """
)


def run_program(seed: int, hashseed: str) -> str:
    env = dict(os.environ, PYTHONHASHSEED=hashseed)
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(seed)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    return done.stdout


def test_trio_still_has_the_private_knobs_hwsim_uses() -> None:
    assert _trio_knobs.knobs_available(), f"trio {trio.__version__} moved its private knobs"


def test_the_same_seed_gives_the_same_trace_in_processes_with_different_hash_seeds() -> None:
    first = run_program(3, "1")
    second = run_program(3, "12345")
    assert first == second
    assert len(first.splitlines()) == 20


def test_different_seeds_give_different_interleavings() -> None:
    traces = {run_program(seed, "0") for seed in range(4)}
    assert len(traces) > 1, "the seed no longer reaches trio's scheduler"


def test_the_knobs_are_restored_after_a_run() -> None:
    from trio._core import _run

    before = _run._ALLOW_DETERMINISTIC_SCHEDULING

    async def main() -> bool:
        return bool(_run._ALLOW_DETERMINISTIC_SCHEDULING)

    assert hwsim.run(main, seed=1) is True
    assert before == _run._ALLOW_DETERMINISTIC_SCHEDULING
