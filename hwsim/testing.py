"""The pytest plugin (entry point ``pytest11``): async tests against a booted machine.

Fixtures:

- ``machine``: a booted :class:`~hwsim.Machine`, configured with
  ``@pytest.mark.machine(ram="128MiB", cpus=4, ...)`` (any MachineConfig field);
- ``kernel``: that machine's kernel API (``machine.kernel``, CPU 0's view);
- ``hwsim_seed``: the seed of this test's run;
- ``hwsim_tracer``: a :class:`~hwsim.Tracer` the ``machine`` fixture records into.

A test that uses one of them, or is marked ``@pytest.mark.hwsim``, runs under pytest-trio
with hwsim's runner instead of plain ``trio.run``: the cycle clock, the deadlock watchdog,
and a scheduler seeded from the test's id, so that every test is reproducible on its own
and across machines. ``--hwsim-seed N`` runs every such test with seed N instead; the
machine marker's ``seed=`` sets the MachineConfig's seed (which otherwise is the same seed).

Example::

    import pytest

    @pytest.mark.machine(ram="32MiB", cpus=1)
    async def test_stores_are_read_back(machine):
        buf = await machine.kernel.kmalloc(64)
        await machine.cpus[0].store(buf, b"abc")
        assert await machine.cpus[0].load(buf, 3) == b"abc"
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
import trio

from .config import MachineConfig
from .core.run import run_with_clock
from .core.trace import Tracer
from .errors import ConfigError
from .kernel.kernel import Kernel
from .machine import Machine, boot

HWSIM_FIXTURES = frozenset({"machine", "kernel", "hwsim_seed", "hwsim_tracer"})


def seed_for(nodeid: str) -> int:
    """The seed a test gets: a stable hash of its id (not Python's salted ``hash``)."""
    return int.from_bytes(hashlib.sha256(nodeid.encode()).digest()[:4], "big")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--hwsim-seed",
        type=int,
        default=None,
        help="run every hwsim test with this scheduler seed instead of one derived from its id",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "machine(**fields): MachineConfig fields for the hwsim `machine` fixture"
    )
    config.addinivalue_line(
        "markers", "hwsim: run this async test under hwsim's cycle clock and seeded scheduler"
    )


def _make_runner(seed: int) -> Callable[..., Any]:
    def run(
        fn: Callable[[], Awaitable[Any]],
        clock: trio.abc.Clock | None = None,
        instruments: Sequence[trio.abc.Instrument] = (),
    ) -> Any:
        if clock is not None:
            raise RuntimeError(
                "this test asks for its own trio clock, but hwsim tests run on hwsim's cycle "
                "clock; drop the clock fixture"
            )
        return run_with_clock(fn, seed=seed, instruments=instruments)

    run.hwsim_seed = seed  # type: ignore[attr-defined]
    return run


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    forced = config.getoption("--hwsim-seed")
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        test_fn = getattr(getattr(item.obj, "hypothesis", None), "inner_test", item.obj)
        if not inspect.iscoroutinefunction(test_fn):
            continue
        uses = HWSIM_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if not uses and item.get_closest_marker("hwsim") is None:
            continue
        seed = forced if forced is not None else seed_for(item.nodeid)
        item.add_marker(pytest.mark.trio(run=_make_runner(seed)), append=False)


def _seed_of(request: pytest.FixtureRequest) -> int:
    for marker in request.node.iter_markers("trio"):
        run = marker.kwargs.get("run")
        if run is not None:
            return int(getattr(run, "hwsim_seed", 0))
    return 0


@pytest.fixture
def hwsim_seed(request: pytest.FixtureRequest) -> int:
    """The scheduler seed this test runs with (print it to reproduce a failure)."""
    return _seed_of(request)


@pytest.fixture
def hwsim_tracer() -> Tracer:
    """A Tracer that the ``machine`` fixture records every message into."""
    return Tracer()


def _config_from_marker(request: pytest.FixtureRequest, seed: int) -> MachineConfig:
    fields: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("machine"))):
        if marker.args:
            raise ConfigError("machine marker", "takes keyword arguments only")
        fields.update(marker.kwargs)
    fields.setdefault("seed", seed)
    try:
        return MachineConfig(**fields)
    except TypeError as exc:
        raise ConfigError("machine marker", str(exc)) from None


@pytest.fixture
async def machine(request: pytest.FixtureRequest) -> AsyncIterator[Machine]:
    """A booted machine, configured with ``@pytest.mark.machine(...)``."""
    seed = _seed_of(request)
    config = _config_from_marker(request, seed)
    tracer = (
        request.getfixturevalue("hwsim_tracer") if "hwsim_tracer" in request.fixturenames else None
    )
    async with boot(config, tracer=tracer) as m:
        yield m


@pytest.fixture
def kernel(machine: Machine) -> Kernel:
    """The booted machine's kernel memory API (``machine.kernel``)."""
    return machine.kernel


__all__ = ["hwsim_seed", "hwsim_tracer", "kernel", "machine", "seed_for"]
