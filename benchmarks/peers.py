"""The same request/reply pattern on SimPy, hwsim's closest peer (a plain event heap).

SimPy has no real concurrency to manage: a process is a generator and the environment
resumes it from a heap of (time, priority, sequence) events. That is the floor a
discrete-event simulator in Python can reach; hwsim pays for trio's task machinery on top.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Generator
from time import perf_counter
from typing import Any

import simpy

from .echo import Ping
from .harness import BLOCK, WARMUP

Process = Generator[simpy.Event, Any, None]


def per_round_trip(env: simpy.Environment, client: Callable[[int], Process], n: int) -> float:
    """Warm up, time ``n`` round trips in blocks; the median block's seconds per round trip."""
    env.run(until=env.process(client(WARMUP)))
    times = []
    for _ in range(max(1, n // BLOCK)):
        start = perf_counter()
        env.run(until=env.process(client(BLOCK)))
        times.append(perf_counter() - start)
    return statistics.median(times) / BLOCK


def simpy_stores_sample(n: int) -> float:
    """Requests and replies through two Stores; returns seconds per round trip."""
    env = simpy.Environment()
    requests = simpy.Store(env)
    replies = simpy.Store(env)

    def server() -> Process:
        while True:
            msg = yield requests.get()
            # An unbounded Store accepts a put at once: nothing to wait for.
            replies.put(msg.n + 1)

    def client(count: int) -> Process:
        for i in range(count):
            requests.put(Ping(i))
            yield replies.get()

    env.process(server())
    return per_round_trip(env, client, n)


def simpy_event_sample(n: int) -> float:
    """Requests through a Store, each answered by succeeding its own Event."""
    env = simpy.Environment()
    requests = simpy.Store(env)

    def server() -> Process:
        while True:
            msg, done = yield requests.get()
            done.succeed(msg.n + 1)

    def client(count: int) -> Process:
        for i in range(count):
            done = env.event()
            requests.put((Ping(i), done))
            yield done

    env.process(server())
    return per_round_trip(env, client, n)
