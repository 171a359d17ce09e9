"""``python -m chargerd.bench``: the speed and footprint figures (see perf.py)."""

import sys

from chargerd.bench.perf import main

if __name__ == "__main__":
    sys.exit(main())
