"""``python -m worker``: the worker process (same as ``margin-call worker``)."""

import sys

from worker.cli import run

run(["worker", *sys.argv[1:]])
