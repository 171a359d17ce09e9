"""The bench CSMS's former home: ``python -m chargerd.benchcsms`` still starts it.

Test rigs of CSMS teams call it by this name; the code lives in ``chargerd.bench.csms``.
"""

import sys

from chargerd.bench.csms import *  # noqa: F403
from chargerd.bench.csms.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
