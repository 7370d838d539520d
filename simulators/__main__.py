"""`python -m simulators simulate SCENARIO ...`."""

import sys

from simulators.cli import main

sys.exit(main())
