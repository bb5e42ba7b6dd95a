"""``python -m fwpolicy``: see ``fwpolicy.cli``."""

from __future__ import annotations

import sys

from fwpolicy.cli import main

if __name__ == "__main__":
    sys.exit(main())
