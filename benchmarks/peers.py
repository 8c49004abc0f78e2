"""The same request/reply pattern on SimPy, hwsim's closest peer (a plain event heap).

SimPy has no real concurrency to manage: a process is a generator and the environment
resumes it from a heap of (time, priority, sequence) events. That is the floor a
discrete-event simulator in Python can reach; hwsim pays for trio's task machinery on top.
"""

from __future__ import annotations

from collections.abc import Generator
from time import perf_counter
from typing import Any

import simpy

from .echo import Ping

WARMUP = 200

Process = Generator[simpy.Event, Any, None]


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
    env.run(until=env.process(client(WARMUP)))
    start = perf_counter()
    env.run(until=env.process(client(n)))
    return (perf_counter() - start) / n


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
    env.run(until=env.process(client(WARMUP)))
    start = perf_counter()
    env.run(until=env.process(client(n)))
    return (perf_counter() - start) / n
