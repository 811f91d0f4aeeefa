"""``python -m imatch_s2ld.synthetic``: see :mod:`imatch_s2ld.synthetic.cli`."""

import sys

from .cli import main

sys.exit(main())
