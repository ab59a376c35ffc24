"""Moved: the README generator is ``python -m wszoo.readme --check|--write`` (this forwards to it)."""

import sys

from wszoo.readme import main

if __name__ == "__main__":
    print("tools/readme.py is deprecated: use `python -m wszoo.readme`", file=sys.stderr)
    sys.exit(main())
