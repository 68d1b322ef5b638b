"""``python -m pyrolvm``: the ``pyrolvm`` command (what ``torchrun -m pyrolvm`` runs)."""

import sys

from .cli import main

sys.exit(main())
