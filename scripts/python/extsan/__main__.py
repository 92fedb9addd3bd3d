"""python -m extsan: the extsan command."""

import sys

from extsan.cli import main

sys.exit(main())
