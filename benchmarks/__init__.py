"""Benchmarks of thermal-pools, each measured against a baseline in the same run.

Run them with ``scripts/bench`` (or ``python -m benchmarks``). Each benchmark module exposes
``NAME``, ``TITLE`` and ``run(quick: bool) -> list[Figure]``; :mod:`benchmarks.runner` records
the figures with the command, the machine and the date. A benchmark reports: it never fails on
a missed target, and it is not part of the pytest suite. Results and their reading are on
docs/benchmarks.md.
"""
