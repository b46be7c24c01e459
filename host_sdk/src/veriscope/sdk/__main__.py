"""``python -m veriscope.sdk``: the ``veriscope`` command line."""

import sys

from veriscope.sdk._cli import main

sys.exit(main())
