"""Generate the synthetic dataset (thin wrapper of ``python -m imatch_s2ld.synthetic``).

Example: ``python scripts/generate_synthetic.py --preset default --out data/synthetic --seed 0``.
"""

import sys

from imatch_s2ld.synthetic.cli import main

if __name__ == "__main__":
    sys.exit(main())
