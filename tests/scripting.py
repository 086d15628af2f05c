"""Scripted tests of the sans-IO core in virtual time.

A :class:`Script` wraps one :class:`TcpConnection` and plays the peer: it
feeds segments and timer expiries, and asserts the exact segments the
connection emits, then silence.  Initial sequence numbers sit just below
2**32 so every script crosses the wrap.
"""

from __future__ import annotations

from typing import Any

from utcp._core.codec import ACK, FIN, PSH, RST, SYN, Segment, decode
from utcp._core.config import Options
from utcp._core.connection import TcpConnection
from utcp._core.seq import MASK
from utcp._core.state import State

__all__ = [
    "ACK",
    "FIN",
    "ISS",
    "IRS",
    "LOCAL_PORT",
    "PSH",
    "REMOTE_PORT",
    "RST",
    "SYN",
    "Script",
    "State",
    "seq",
]

#: Our initial send sequence number and the peer's: both wrap within a few segments.
ISS = (1 << 32) - 3
IRS = (1 << 32) - 2000
LOCAL_PORT = 40000
REMOTE_PORT = 80
#: Small buffers keep window values readable: no window scaling unless asked.
DEFAULT_OPTIONS = dict(
    rcvbuf=8192,
    sndbuf=65536,
    window_scaling=False,
    timestamps=False,
    sack=False,
    early_retrans=False,
    congestion="newreno",
    mtu=1500,
)


def seq(base: int, offset: int) -> int:
    """``base + offset`` modulo 2**32."""
    return (base + offset) & MASK


class Script:
    """Drive one core connection as its peer would, in virtual time."""

    def __init__(self, *, now: float = 1000.0, iss: int = ISS, **options: Any) -> None:
        opts = dict(DEFAULT_OPTIONS)
        opts.update(options)
        self.options = Options(**opts)
        self.now = now
        self.conn = TcpConnection(
            self.options, local_port=LOCAL_PORT, remote_port=REMOTE_PORT, iss=iss
        )

    # -- building segments ------------------------------------------------
    def seg(
        self,
        flags: int,
        seqno: int,
        ack: int = 0,
        window: int = 8192,
        payload: bytes = b"",
        *,
        incoming: bool = True,
        **opts: Any,
    ) -> Segment:
        """A segment from the peer (``incoming``) or one we expect the connection to send."""
        sport, dport = (REMOTE_PORT, LOCAL_PORT) if incoming else (LOCAL_PORT, REMOTE_PORT)
        return Segment(sport, dport, seqno & MASK, ack & MASK, flags, window, payload, **opts)

    def out(
        self,
        flags: int,
        seqno: int,
        ack: int = 0,
        window: int = 8192,
        payload: bytes = b"",
        **opts: Any,
    ) -> Segment:
        """A segment we expect the connection to emit."""
        return self.seg(flags, seqno, ack, window, payload, incoming=False, **opts)

    # -- driving ----------------------------------------------------------
    def connect(self) -> None:
        """Active open."""
        self.conn.connect(self.now)

    def accept(self, syn: Segment) -> None:
        """Passive open from the peer's SYN."""
        self.conn.accept_syn(syn, self.now)

    def feed(self, segment: Segment, *, at: float | None = None) -> None:
        """Deliver ``segment`` to the connection (at virtual time ``at``)."""
        if at is not None:
            self.now = at
        self.conn.handle_segment(segment, self.now)

    def advance(self, to: float) -> None:
        """Move virtual time to ``to``, firing timers in order on the way."""
        assert to >= self.now
        while True:
            deadline = self.conn.get_timer()
            if deadline is None or deadline > to:
                break
            self.now = max(self.now, deadline)
            self.conn.handle_timer(self.now)
        self.now = to

    def run_timer(self) -> float:
        """Jump to the next deadline and fire it; returns that time."""
        deadline = self.conn.get_timer()
        assert deadline is not None, "no timer is armed"
        self.now = max(self.now, deadline)
        self.conn.handle_timer(self.now)
        return self.now

    # -- asserting --------------------------------------------------------
    def emitted(self) -> list[Segment]:
        """Decode everything emitted since the last check."""
        return [decode(d) for d in self.conn.take_datagrams()]

    def expect(self, *expected: Segment) -> None:
        """Exactly these segments were emitted, in this order, and nothing else."""
        got = self.emitted()
        assert got == list(expected), f"\nexpected {list(expected)}\n     got {got}"

    def expect_nothing(self) -> None:
        """Nothing was emitted."""
        got = self.emitted()
        assert got == [], f"expected silence, got {got}"

    @property
    def state(self) -> State:
        return self.conn.state

    # -- common openings ---------------------------------------------------
    def establish_active(self, peer_window: int = 8192, peer_mss: int | None = 1452) -> None:
        """Run the active 3-way handshake to ESTABLISHED and check its segments."""
        self.connect()
        self.expect(self.out(SYN, ISS, 0, self.syn_window(), mss=self.local_mss()))
        self.feed(self.seg(SYN | ACK, IRS, seq(ISS, 1), peer_window, mss=peer_mss))
        self.expect(self.out(ACK, seq(ISS, 1), seq(IRS, 1), self.window()))
        assert self.state is State.ESTABLISHED

    def establish_passive(self, peer_window: int = 8192, peer_mss: int | None = 1452) -> None:
        """Run the passive 3-way handshake to ESTABLISHED and check its segments."""
        self.accept(self.seg(SYN, IRS, 0, peer_window, mss=peer_mss))
        self.expect(self.out(SYN | ACK, ISS, seq(IRS, 1), self.syn_window(), mss=self.local_mss()))
        assert self.state is State.SYN_RECEIVED
        self.feed(self.seg(ACK, seq(IRS, 1), seq(ISS, 1), peer_window))
        self.expect_nothing()
        assert self.state is State.ESTABLISHED

    def local_mss(self) -> int:
        return self.options.mtu - 20 - 8 - 20

    def syn_window(self) -> int:
        return min(self.options.rcvbuf, 0xFFFF)

    def window(self, unread: int = 0) -> int:
        """Our window with ``unread`` bytes in the receive buffer (no scaling)."""
        return self.options.rcvbuf - unread

    # -- helpers appended for the close / RST / data / timer scripts ---------
    def establish_after(
        self, rtt: float, peer_window: int = 8192, peer_mss: int | None = 1452
    ) -> None:
        """Active open whose SYN-ACK arrives ``rtt`` seconds after the SYN.

        The SYN is not retransmitted, so the handshake yields exactly one clean
        RTT sample R = ``rtt`` (RFC 6298 2.2: SRTT = R, RTTVAR = R/2).
        """
        self.connect()
        self.expect(self.out(SYN, ISS, 0, self.syn_window(), mss=self.local_mss()))
        syn_ack = self.seg(SYN | ACK, IRS, seq(ISS, 1), peer_window, mss=peer_mss)
        self.feed(syn_ack, at=self.now + rtt)
        self.expect(self.out(ACK, seq(ISS, 1), seq(IRS, 1), self.window()))
        assert self.state is State.ESTABLISHED

    def data_in(
        self,
        offset: int,
        payload: bytes,
        *,
        ack_offset: int = 1,
        flags: int = ACK,
        window: int = 8192,
    ) -> Segment:
        """A peer segment carrying ``payload`` at stream ``offset`` (IRS+1+offset).

        It acknowledges ISS+``ack_offset``.
        """
        return self.seg(flags, seq(IRS, 1 + offset), seq(ISS, ack_offset), window, payload)

    def data_out(
        self,
        offset: int,
        payload: bytes,
        *,
        ack_offset: int = 1,
        flags: int = ACK,
        window: int = 8192,
    ) -> Segment:
        """A segment we expect to carry ``payload`` at stream ``offset`` (ISS+1+offset).

        It acknowledges IRS+``ack_offset``.
        """
        return self.out(flags, seq(ISS, 1 + offset), seq(IRS, ack_offset), window, payload)


def pattern(n: int, start: int = 0) -> bytes:
    """``n`` recognisable bytes: stream bytes ``start`` .. ``start+n-1`` of a fixed pattern."""
    return bytes((i * 7 + 3) % 251 for i in range(start, start + n))
