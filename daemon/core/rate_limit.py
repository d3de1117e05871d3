"""Per-topic token buckets: one flooding publisher cannot starve the queue or the CPU.

MQTT 3.1.1 does not tell a subscriber who published a message, so the topic is the finest key there
is; Hermes and native requests therefore have separate budgets.
"""

from __future__ import annotations

import threading
import time


class RateLimiter:
    """``rate_per_s`` requests per second per key, with bursts of up to ``burst``."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, monotonic time)
        self._lock = threading.Lock()

    def allow(self, key: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate_per_s)
            allowed = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            return allowed
