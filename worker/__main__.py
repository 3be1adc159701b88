"""``python -m worker``: the worker process (same as ``margin-call worker``)."""

import sys

from worker.cli import main

sys.exit(main(["worker", *sys.argv[1:]]))
