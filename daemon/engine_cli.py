"""What ``gsv-edge say`` and ``gsv-edge voice`` share: settings, the engine they build, their exit codes.

Exit codes a script can rely on: 0 done; 1 synthesis or audio failed; 2 usage error; 3 bad input (empty text,
unknown voice, unusable clip); 4 configuration, bundle or hardware-profile problem.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .bundle import BundleError
from .config import ConfigError, load_settings
from .engine import Engine, engine_from_settings
from .hardware import ProfileError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INPUT, EXIT_SETUP = 0, 1, 2, 3, 4


class SetupError(RuntimeError):
    """Configuration, bundle or profile cannot be used (exit code 4)."""


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, help="model bundle directory (default: engine.bundle from the config)")
    parser.add_argument("--profile", help="hardware profile name or file (default: engine.hardware_profile)")
    parser.add_argument("--config", type=Path, help="config file (default /etc/gsv-edge/config.toml if present)")


def build_engine(args: argparse.Namespace) -> Engine:
    try:
        settings = load_settings(args.config)
        if (args.bundle or settings.engine.bundle) is None:
            raise SetupError("no model bundle: pass --bundle DIR or set engine.bundle in the config")
        return engine_from_settings(settings, args.bundle, args.profile)
    except (ConfigError, BundleError, ProfileError, OSError, ImportError, ValueError) as exc:
        raise SetupError(str(exc)) from exc
