"""``python -m gatrank`` is the same as the ``gatrank`` command."""

import sys

from gatrank.cli import main

sys.exit(main())
