"""A scratch box for the commands that change the state database (``token``, ``schedule``): a config naming a
state directory, the daemon's own connection to its database held open meanwhile, and the command run as a user
runs it (a subprocess with no GSV_EDGE_ variables, so the config file says where)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from daemon.core.state_db import StateDb
from tests.paths import REPO


class StateBox:
    def __init__(self, root: Path, command: str) -> None:
        self.root = root
        self.command = command
        self.state_dir = root / "state"
        self.config = root / "config.toml"
        self.config.write_text(f"state_dir = {json.dumps(str(self.state_dir))}\n")
        self.db = StateDb.in_dir(self.state_dir)

    def gsv(self, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
        """``gsv-edge COMMAND ARGS --config CONFIG``, as the user's shell runs it."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("GSV_EDGE_")}
        env.update(PYTHONPATH=str(REPO), HOME=str(self.root))
        return subprocess.run(
            [sys.executable, "-m", "daemon", self.command, *args, "--config", str(config or self.config)],
            cwd=self.root, env=env, capture_output=True, text=True, timeout=120,
        )
