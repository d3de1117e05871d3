"""Log records to the journal when systemd runs the daemon, to stderr with timestamps otherwise.

Under systemd, stderr is a stream into journald (``$JOURNAL_STREAM`` names it): records then go through
``systemd.journal.JournalHandler`` when systemd-python is installed (structured fields), else to stderr
with ``<N>`` syslog-priority prefixes, which journald turns into the record's priority (sd-daemon(3)),
so ``journalctl -p warning`` works without the extra package. The journal adds its own timestamps.
"""

from __future__ import annotations

import logging
import os
import sys

JOURNAL_FORMAT = "%(name)s: %(message)s"
STDERR_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SYSLOG_IDENTIFIER = "gsv-edge"


def stderr_is_journal() -> bool:
    """``$JOURNAL_STREAM`` (``device:inode``) is our stderr: systemd connected it to journald."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in stream.split(":"))
        stat = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (stat.st_dev, stat.st_ino) == (device, inode)


class PriorityPrefixFormatter(logging.Formatter):
    """Every line (tracebacks too) starts with ``<N>``, the record's syslog priority."""

    @staticmethod
    def priority(levelno: int) -> int:
        if levelno >= logging.CRITICAL:
            return 2
        if levelno >= logging.ERROR:
            return 3
        if levelno >= logging.WARNING:
            return 4
        return 6 if levelno >= logging.INFO else 7

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{self.priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def journal_handler() -> logging.Handler:
    try:
        from systemd.journal import JournalHandler  # systemd-python / python3-systemd, optional
    except ImportError:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(PriorityPrefixFormatter(JOURNAL_FORMAT))
        return handler
    handler = JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)
    handler.setFormatter(logging.Formatter(JOURNAL_FORMAT))
    return handler


def setup_logging(level: str) -> None:
    if stderr_is_journal():
        handler = journal_handler()
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(STDERR_FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
