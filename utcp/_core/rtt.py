"""Retransmission timeout estimation (RFC 6298)."""

from __future__ import annotations


class RttEstimator:
    """SRTT/RTTVAR/RTO as RFC 6298 section 2 computes them.

    ``rto`` is the base timeout; :meth:`backed_off` applies exponential
    backoff (RFC 6298 5.5) bounded by ``rto_max``.
    """

    __slots__ = ("srtt", "rttvar", "rto", "rto_min", "rto_max", "samples")

    K = 4
    ALPHA = 1 / 8
    BETA = 1 / 4
    G = 0.001  # clock granularity: utcp's clocks are floats, 1 ms is safe

    def __init__(self, rto_initial: float, rto_min: float, rto_max: float) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = rto_initial  # RFC 6298 2.1
        self.rto_min = rto_min
        self.rto_max = rto_max
        self.samples = 0

    def on_sample(self, r: float) -> None:
        """Feed one round-trip measurement ``r`` (seconds), never from a retransmission (Karn)."""
        if r < 0:
            return
        if self.srtt is None:  # RFC 6298 2.2
            self.srtt = r
            self.rttvar = r / 2
        else:  # RFC 6298 2.3
            self.rttvar = (1 - self.BETA) * self.rttvar + self.BETA * abs(self.srtt - r)
            self.srtt = (1 - self.ALPHA) * self.srtt + self.ALPHA * r
        self.samples += 1
        # RFC 6298 2.4 (floor) and 2.5 (ceiling)
        rto = self.srtt + max(self.G, self.K * self.rttvar)
        self.rto = min(max(rto, self.rto_min), self.rto_max)

    def backed_off(self, backoff: int) -> float:
        """The timeout after ``backoff`` consecutive expirations (RFC 6298 5.5)."""
        return min(self.rto * (1 << min(backoff, 30)), self.rto_max)
