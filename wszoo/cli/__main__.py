"""``python -m wszoo.cli``: the same as the ``wszoo`` command (torchrun runs it this way)."""

import sys

from . import main

sys.exit(main())
