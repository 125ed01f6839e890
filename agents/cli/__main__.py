"""``python -m agents.cli``: the ``proxy-rlhf`` command."""

import sys

from agents.cli.app import main

sys.exit(main())
