"""``python -m daemon``: the ``gsv-edge`` command."""

import sys

from daemon.commands.cli import main

sys.exit(main())
