"""``python -m tools.bench``: see ``tools.bench``."""

from tools.bench.run import main

main()
