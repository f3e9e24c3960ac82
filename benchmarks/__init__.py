"""Benchmarks of thermal-pools, each measured against a baseline in the same run.

Run them with ``scripts/bench`` (or ``python -m benchmarks``). Each benchmark module exposes
``NAME``, ``TITLE`` and ``run(quick: bool) -> list[Figure]``; :mod:`benchmarks.runner` records
the figures with the command, the machine and the date. A missed target is reported, not
raised, and pytest does not collect this folder (its ``testpaths`` is ``tests``). The results
and what they mean are on docs/benchmarks.md.
"""
