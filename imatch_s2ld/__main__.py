"""``python -m imatch_s2ld`` is the ``imatch`` command."""

import sys

from .cli import main

sys.exit(main())
