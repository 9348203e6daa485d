"""``python -m salt.cli`` (what ``torchrun ... -m salt.cli train`` runs)."""

import sys

from salt.cli.parser import main

sys.exit(main())
