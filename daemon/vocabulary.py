"""Words every layer shares: request priorities, outputs, audio formats and the protocols requests arrive on.

It sits beside ``config.py`` at the bottom of the daemon and imports nothing of it, so the configuration, the
queue and the protocol parsers all name these the same way.
"""

from __future__ import annotations

from typing import Literal

Priority = Literal["emergency", "high", "normal", "low"]
Output = Literal["play", "publish", "both"]
AudioFormat = Literal["wav", "pcm"]
Source = Literal["native", "hermes", "wyoming"]

PRIORITY_RANK: dict[str, int] = {"emergency": 0, "high": 1, "normal": 2, "low": 3}
