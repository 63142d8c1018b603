"""``python -m deployments.platform``: see :mod:`deployments.platform.cli`."""

import sys

from deployments.platform.cli import main

sys.exit(main())
