"""A token bucket, for rate limits that take ``now`` as input."""

from __future__ import annotations


class RateLimiter:
    """Allow at most ``rate`` events per second, with bursts up to ``burst``.

    ``rate <= 0`` means unlimited.
    """

    __slots__ = ("rate", "burst", "_tokens", "_stamp", "dropped")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self._tokens = self.burst
        self._stamp: float | None = None
        self.dropped = 0

    def allow(self, now: float) -> bool:
        """Take one token if available at ``now``."""
        if self.rate <= 0:
            return True
        if self._stamp is not None and now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now if self._stamp is None else max(self._stamp, now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.dropped += 1
        return False
