"""Market-crash benchmark (``make bench``), measured against the engine's own ceiling.

    .venv/bin/python -m tools.bench --accounts 2000 [--open 1000] [--deadlines 1000] [--scan 10000,100000,1000000]

Everything on one machine, in one run: a Temporal dev server (SQLite + WAL, as
the embedded stack runs it), an embedded PostgreSQL, the webhook receiver, and
one worker whose settings serve both the ceiling workflow and the cases.
Prints a table with each figure beside its goal and writes
``bench-results/bench.json`` and ``bench-results/bench.png``.

The package: ``run`` (options, bring-up, phases in order), ``phases`` (one
method per figure), ``feeds`` (trades and marks through the HTTP API),
``harness`` (seeding, waiting, CPU and memory), ``report``
(table and chart), ``worker`` (the worker process), ``ceiling`` (the trivial
workflow; alone in its module, which the workflow sandbox re-imports), ``scan``
(``python -m tools.bench.scan``: the breach scan alone over a large book).
This module imports nothing, so that ``tools.bench.ceiling`` stays light.
"""
