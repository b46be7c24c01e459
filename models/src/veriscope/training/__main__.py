"""``python -m veriscope.training``."""

import sys

from veriscope.training.cli import main

sys.exit(main())
