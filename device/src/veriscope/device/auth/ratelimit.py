"""Token-bucket rate limits, one bucket per caller (an API token's id, or a peer's address).

Each bucket holds up to ``burst`` calls and refills at ``rate_per_s``; a call
takes one. A caller that has used its burst waits for the refill, and is told
how long.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Per-key token buckets.

    Args:
        rate_per_s: Calls per second each key regains; 0 turns the limit off.
        burst: Calls a key may make at once after being idle (the bucket's size), at least 1.
        clock: Monotonic seconds; tests pass their own.
        max_keys: Buckets kept at most; idle (full) buckets are forgotten first, so a flood of new peers cannot
            grow memory without bound.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        if rate_per_s < 0 or burst < 1:
            raise ValueError("rate_per_s must be >= 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (calls left, at time)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        """False when the limit is off (``rate_per_s`` 0)."""
        return self.rate_per_s > 0

    def acquire(self, key: str) -> float:
        """Count one call of ``key``: 0.0 when it may go ahead, else the seconds until it may retry (not counted)."""
        if not self.enabled:
            return 0.0
        now = self._clock()
        with self._lock:
            left, then = self._buckets.get(key, (float(self.burst), now))
            left = min(float(self.burst), left + (now - then) * self.rate_per_s)
            if left >= 1.0:
                self._buckets[key] = (left - 1.0, now)
                if len(self._buckets) > self._max_keys:
                    self._forget_idle(now)
                return 0.0
            self._buckets[key] = (left, now)
            return (1.0 - left) / self.rate_per_s

    def _forget_idle(self, now: float) -> None:
        full_after_s = self.burst / self.rate_per_s
        idle = [k for k, (_, then) in self._buckets.items() if now - then >= full_after_s]
        for key in idle:
            del self._buckets[key]
        if len(self._buckets) > self._max_keys:
            # Still too many active callers: forget the longest-quiet ones (they start again with a full bucket).
            oldest = sorted(self._buckets, key=lambda k: self._buckets[k][1])
            for key in oldest[: len(self._buckets) - self._max_keys]:
                del self._buckets[key]
