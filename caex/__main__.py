"""``python -m caex``: the ``caex`` command, for environments whose scripts folder is not on PATH."""

import sys

from caex.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
