"""``gsv-edge serve``: run the daemon in the foreground, as systemd starts it.

Loads the configuration, builds the :class:`~daemon.app.service.Service`, tells systemd how start-up goes and
serves until SIGTERM; the exit status says whether a restart could help (``exit_codes``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
from pathlib import Path

from daemon.app.journal_logging import setup_logging
from daemon.app.reload import serve_with_reload
from daemon.app.service import Service, StartFault
from daemon.app.signals import SignalActions
from daemon.app.systemd_notify import Notifier, Watchdog
from daemon.commands import exit_codes
from daemon.config import DEFAULT_CONFIG_PATH, ConfigError, Settings, load_settings

log = logging.getLogger("gsv-edge")

TENSORRT_EXTEND_S = 60.0  # while TensorRT engines build, keep systemd's start timeout this far ahead ...
TENSORRT_BUILD_LIMIT_S = 3600.0  # ... for at most this long (a first build on an Orin Nano takes minutes)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"TOML configuration (default {DEFAULT_CONFIG_PATH}, if present); GSV_EDGE_* variables override it",
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        return exit_codes.fail("serve", exc, exit_codes.SETUP)
    setup_logging(settings.log_level)
    notifier = Notifier.from_environ()
    notifier.status("loading the engine")
    extending = (
        notifier.extending_timeout(TENSORRT_EXTEND_S, TENSORRT_BUILD_LIMIT_S)
        if _builds_tensorrt_engines(settings)
        else contextlib.nullcontext()
    )
    try:
        with extending:
            service = Service(settings, shared_threads=True)
    except ConfigError as exc:
        return exit_codes.fail("serve", exc, exit_codes.SETUP)
    except StartFault as exc:
        return exit_codes.fail("serve", exc, exit_codes.FAILED)
    stopping = service.stopping
    signals = SignalActions()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signals.on(signum, stopping.set)
    try:
        service.start()
    except ConfigError as exc:
        return exit_codes.fail("serve", exc, exit_codes.SETUP)
    reloader = serve_with_reload(service, args.config, signals)
    notifier.status(f"waiting for the MQTT broker {settings.mqtt.host}:{settings.mqtt.port}")
    while not stopping.is_set() and not service.mqtt.ready.wait(0.5):
        pass
    watchdog = Watchdog(notifier, service.problems, service.status_line)
    if not stopping.is_set():  # engine warm (Service() warmed it) and broker connected: ready
        notifier.ready(service.status_line())
        watchdog.start()
    stopping.wait()
    log.info("stopping")
    notifier.stopping(f"stopping: the announcement in progress gets up to {settings.queue.drain_s:g} s")
    watchdog.stop()
    reloader.stop()
    service.drain(settings.queue.drain_s)
    service.stop()
    return 0


def _builds_tensorrt_engines(settings: Settings) -> bool:
    """The profile tries TensorRT, whose engines may be built (minutes) while the engine warms up."""
    if settings.engine.bundle is None:
        return False
    try:
        from daemon.model.hardware import TENSORRT, HardwareProfile

        engine = settings.engine
        return TENSORRT in HardwareProfile.load(engine.hardware_profile, engine.hardware_profile_dir).providers
    except (ImportError, ValueError):  # the engine's own loading reports what is wrong
        return False
