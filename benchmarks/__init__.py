"""Speed figures for hwsim against raw trio and SimPy: run ``python -m benchmarks``.

Each module measures one thing and returns a :class:`~benchmarks.harness.Section` of figures
and ratios; ``__main__`` runs them all, prints the tables and writes JSON. Nothing here is an
assertion: a figure that misses its target is reported as MISS, never as a failure (timing
belongs in benchmarks, not in tests). See benchmarks/README.md for what each figure means.

This module imports nothing heavy on purpose: the boot probe runs as ``python -m
benchmarks.boot`` in a fresh process and measures RSS from there.
"""
