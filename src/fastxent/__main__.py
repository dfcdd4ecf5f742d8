"""``python -m fastxent COMMAND``: the command line (see fastxent._cli)."""
import sys

from ._cli import main

if __name__ == "__main__":
    sys.exit(main())
