"""``python -m worker.cli``: the same as the ``margin-call`` console script."""

from worker.cli import run

run()
