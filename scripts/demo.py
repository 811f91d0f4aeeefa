"""Thin wrapper: ``python scripts/demo.py`` is ``imatch demo`` (see imatch_s2ld/demo.py)."""

import sys

from imatch_s2ld.demo import main

if __name__ == "__main__":
    sys.exit(main())
