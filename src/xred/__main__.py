"""``python -m xred`` is the ``xred`` command (also what ``torchrun -m xred`` runs)."""

import sys

from xred.cli import main

sys.exit(main())
