"""What ``gsv-edge say`` and ``gsv-edge voice`` share: settings and the engine they build."""

from __future__ import annotations

import argparse
from pathlib import Path

from daemon.config import ConfigError, load_settings
from daemon.model.bundle import BundleError
from daemon.model.engine import Engine, engine_from_settings
from daemon.model.hardware import ProfileError


class SetupError(RuntimeError):
    """Configuration, bundle or profile cannot be used (``exit_codes.SETUP``)."""


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
