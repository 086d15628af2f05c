"""Congestion control behind a small pluggable interface.

A controller owns ``cwnd`` and ``ssthresh`` (bytes).  The connection tells it
about newly acknowledged bytes outside recovery, the start and end of fast
recovery, and retransmission timeouts; loss detection (duplicate ACKs, the
SACK scoreboard) stays in the connection.  Register a new algorithm by adding
its class to :data:`ALGORITHMS`.
"""

from __future__ import annotations


class CongestionControl:
    """Base class: the interface every algorithm implements (RFC 5681 defaults)."""

    name = "base"

    def __init__(self, mss: int) -> None:
        self.mss = mss
        self.cwnd = self.initial_window(mss)
        self.ssthresh = 1 << 30  # RFC 5681 3.1: arbitrarily high

    @staticmethod
    def initial_window(mss: int) -> int:
        """RFC 6928: min(10*MSS, max(2*MSS, 14600))."""
        return min(10 * mss, max(2 * mss, 14600))

    def set_mss(self, mss: int) -> None:
        """Re-derive the initial window when the MSS becomes known."""
        self.mss = mss
        self.cwnd = self.initial_window(mss)

    def slow_start(self, acked: int) -> None:
        """RFC 5681 3.1 slow start with appropriate byte counting (RFC 3465, L=2)."""
        self.cwnd += min(acked, 2 * self.mss)

    def on_ack(self, acked: int, flight: int, now: float, srtt: float) -> None:
        """``acked`` new bytes were cumulatively acknowledged outside recovery."""
        raise NotImplementedError

    def on_enter_recovery(self, flight: int, now: float) -> None:
        """Loss detected by duplicate ACKs or SACK: set ssthresh and cwnd = ssthresh."""
        raise NotImplementedError

    def on_exit_recovery(self, flight: int, now: float) -> None:
        """The recovery point was acknowledged (RFC 6582 3.2 step 3, RFC 6675 5)."""
        self.cwnd = max(self.ssthresh, self.mss)

    def on_rto(self, flight: int, now: float) -> None:
        """A retransmission timeout fired (RFC 5681 3.1, equation 4)."""
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss


class NewReno(CongestionControl):
    """Slow start and congestion avoidance of RFC 5681; halving on loss."""

    name = "newreno"

    def __init__(self, mss: int) -> None:
        super().__init__(mss)
        self._ca_acc = 0

    def on_ack(self, acked: int, flight: int, now: float, srtt: float) -> None:
        if self.cwnd < self.ssthresh:
            self.slow_start(acked)
        else:
            # RFC 5681 3.1 congestion avoidance: about one MSS per RTT
            self._ca_acc += acked
            if self._ca_acc >= self.cwnd:
                self._ca_acc -= self.cwnd
                self.cwnd += self.mss

    def on_enter_recovery(self, flight: int, now: float) -> None:
        self.ssthresh = max(flight // 2, 2 * self.mss)  # RFC 5681 equation 4
        self.cwnd = self.ssthresh
        self._ca_acc = 0


class Cubic(CongestionControl):
    """CUBIC (RFC 9438): a cubic window growth function, TCP-friendly region, fast convergence."""

    name = "cubic"
    C = 0.4  # RFC 9438 4.1
    BETA = 0.7  # RFC 9438 4.6

    def __init__(self, mss: int) -> None:
        super().__init__(mss)
        self._w_max = 0.0  # segments
        self._w_last_max = 0.0
        self._k = 0.0
        self._epoch: float | None = None
        self._w_est = 0.0
        self._acc = 0.0

    def _begin_epoch(self, now: float) -> None:
        cwnd_seg = self.cwnd / self.mss
        self._epoch = now
        if self._w_max <= cwnd_seg:
            self._k = 0.0
            self._w_max = cwnd_seg
        else:
            # RFC 9438 4.2 equation 2
            self._k = ((self._w_max - cwnd_seg) / self.C) ** (1 / 3)
        self._w_est = cwnd_seg

    def on_ack(self, acked: int, flight: int, now: float, srtt: float) -> None:
        if self.cwnd < self.ssthresh:
            self.slow_start(acked)
            return
        if self._epoch is None:
            self._begin_epoch(now)
        assert self._epoch is not None
        mss = self.mss
        cwnd_seg = self.cwnd / mss
        t = now - self._epoch
        # RFC 9438 4.3: Reno-friendly estimate, alpha = 3(1-beta)/(1+beta)
        alpha = 3 * (1 - self.BETA) / (1 + self.BETA)
        self._w_est += alpha * (acked / mss) / cwnd_seg
        # RFC 9438 4.2: target one RTT ahead, clamped to 1.5 x cwnd
        target = self.C * (t + srtt - self._k) ** 3 + self._w_max
        target = min(max(target, cwnd_seg), 1.5 * cwnd_seg)
        if target < self._w_est:
            new = self._w_est  # Reno-friendly region
        else:
            new = cwnd_seg + (target - cwnd_seg) / cwnd_seg * (acked / mss)  # RFC 9438 4.4/4.5
        self._acc += (new - cwnd_seg) * mss
        if self._acc >= 1:
            grow = int(self._acc)
            self.cwnd += grow
            self._acc -= grow

    def _reduce(self, now: float) -> None:
        cwnd_seg = self.cwnd / self.mss
        # RFC 9438 4.7 fast convergence
        if cwnd_seg < self._w_last_max:
            self._w_last_max = cwnd_seg
            self._w_max = cwnd_seg * (1 + self.BETA) / 2
        else:
            self._w_last_max = cwnd_seg
            self._w_max = cwnd_seg
        self._epoch = None
        self._acc = 0.0

    def on_enter_recovery(self, flight: int, now: float) -> None:
        self._reduce(now)
        # RFC 9438 4.6: ssthresh = cwnd * beta_cubic (flight size bounds it from above)
        self.ssthresh = max(int(min(self.cwnd, max(flight, self.mss)) * self.BETA), 2 * self.mss)
        self.cwnd = self.ssthresh

    def on_rto(self, flight: int, now: float) -> None:
        self._reduce(now)
        self.ssthresh = max(int(min(self.cwnd, max(flight, self.mss)) * self.BETA), 2 * self.mss)
        self.cwnd = self.mss


ALGORITHMS: dict[str, type[CongestionControl]] = {
    "newreno": NewReno,
    "reno": NewReno,
    "cubic": Cubic,
}


def make_congestion_control(name: str, mss: int) -> CongestionControl:
    """Build the named algorithm (``ValueError`` for an unknown name)."""
    try:
        cls = ALGORITHMS[name]
    except KeyError:
        raise ValueError(
            f"unknown congestion control {name!r}; known: {', '.join(sorted(ALGORITHMS))}"
        ) from None
    return cls(mss)
