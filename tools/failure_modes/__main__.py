"""``python -m tools.failure_modes [OUT.md]``: run every live case and write the page."""

import logging

from tools.failure_modes.page import main

logger = logging.getLogger("tools.failure_modes")
logger.addHandler(logging.StreamHandler())
logger.setLevel(logging.INFO)
raise SystemExit(main())
