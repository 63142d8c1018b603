"""``python -m deployments.webhook PROJECTS TAGS``: see :mod:`deployments.webhook.sender`."""

import sys

from deployments.webhook.sender import main

sys.exit(main())
