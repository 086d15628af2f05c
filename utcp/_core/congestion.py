"""Congestion control behind a small pluggable interface (RFC 5681).

A controller owns ``cwnd`` and ``ssthresh`` (bytes).  The connection tells it
about acknowledged bytes, the start of fast recovery, the end of recovery and
retransmission timeouts; loss detection itself stays in the connection.
"""

from __future__ import annotations


class CongestionControl:
    """Base class: the interface every algorithm implements."""

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

    def on_ack(self, acked: int, flight: int, now: float) -> None:
        """``acked`` new bytes were cumulatively acknowledged outside recovery."""
        raise NotImplementedError

    def on_enter_recovery(self, flight: int, now: float) -> None:
        """Fast retransmit: the third duplicate ACK arrived (RFC 5681 3.2 step 2)."""
        raise NotImplementedError

    def on_exit_recovery(self, flight: int, now: float) -> None:
        """The recovery point was acknowledged (RFC 6582 3.2 step 3)."""
        self.cwnd = max(min(self.ssthresh, flight + self.mss), self.mss)

    def on_rto(self, flight: int, now: float) -> None:
        """A retransmission timeout fired (RFC 5681 3.1, equation 4)."""
        self.ssthresh = max(flight // 2, 2 * self.mss)
        self.cwnd = self.mss


class NewReno(CongestionControl):
    """Slow start and congestion avoidance of RFC 5681, NewReno recovery (RFC 6582)."""

    name = "newreno"

    def __init__(self, mss: int) -> None:
        super().__init__(mss)
        self._ca_acc = 0

    def on_ack(self, acked: int, flight: int, now: float) -> None:
        if self.cwnd < self.ssthresh:
            # RFC 5681 3.1 slow start, with appropriate byte counting (RFC 3465, L=2)
            self.cwnd += min(acked, 2 * self.mss)
        else:
            # RFC 5681 3.1 congestion avoidance: about one MSS per RTT
            self._ca_acc += acked
            if self._ca_acc >= self.cwnd:
                self._ca_acc -= self.cwnd
                self.cwnd += self.mss

    def on_enter_recovery(self, flight: int, now: float) -> None:
        self.ssthresh = max(flight // 2, 2 * self.mss)  # RFC 5681 equation 4
        self.cwnd = self.ssthresh + 3 * self.mss  # RFC 5681 3.2 step 3


ALGORITHMS: dict[str, type[CongestionControl]] = {"newreno": NewReno, "reno": NewReno}


def make_congestion_control(name: str, mss: int) -> CongestionControl:
    """Build the named algorithm (``ValueError`` for an unknown name)."""
    try:
        cls = ALGORITHMS[name]
    except KeyError:
        raise ValueError(
            f"unknown congestion control {name!r}; known: {', '.join(sorted(ALGORITHMS))}"
        ) from None
    return cls(mss)
