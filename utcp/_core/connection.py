"""One TCP connection as a sans-IO state machine (RFC 9293).

This module is the only place where a connection's state changes.  It never
reads a clock (every input takes ``now``), never touches a socket (outgoing
datagrams pile up in an outbox the driver drains with
:meth:`TcpConnection.take_datagrams`) and never imports trio.

Inputs:
  * :meth:`TcpConnection.connect` / :meth:`TcpConnection.accept_syn` open it;
  * :meth:`TcpConnection.handle_segment` feeds an arriving segment;
  * :meth:`TcpConnection.handle_timer` fires expired deadlines
    (:meth:`TcpConnection.get_timer` tells when the next one is);
  * :meth:`TcpConnection.send`, :meth:`TcpConnection.read`,
    :meth:`TcpConnection.shutdown`, :meth:`TcpConnection.close`,
    :meth:`TcpConnection.abort` are the user calls.

Arriving segments are processed in the order of RFC 9293 3.10.7: sequence
check, RST, (security), SYN, ACK, URG (ignored), data, FIN.
"""

from __future__ import annotations

from typing import Any

from .codec import ACK, FIN, PSH, RST, SYN, Segment, encode, encode_fields
from .config import Options
from .congestion import CongestionControl, make_congestion_control
from .ratelimit import RateLimiter
from .rtt import RttEstimator
from .seq import HALF, MASK, seq_ge, seq_gt, seq_in, seq_le, seq_lt, seq_sub
from .state import CAN_RECEIVE, CAN_SEND, State
from .timewait import TimeWait

__all__ = ["TcpConnection"]

_CLOSED = State.CLOSED
_LISTEN = State.LISTEN
_SYN_SENT = State.SYN_SENT
_SYN_RECEIVED = State.SYN_RECEIVED
_ESTABLISHED = State.ESTABLISHED
_FIN_WAIT_1 = State.FIN_WAIT_1
_FIN_WAIT_2 = State.FIN_WAIT_2
_CLOSE_WAIT = State.CLOSE_WAIT
_CLOSING = State.CLOSING
_LAST_ACK = State.LAST_ACK
_TIME_WAIT = State.TIME_WAIT

#: States that may (re)transmit data or a FIN.
_SENDING = frozenset({_ESTABLISHED, _CLOSE_WAIT, _FIN_WAIT_1, _CLOSING, _LAST_ACK})
#: States in which keepalive probes make sense (Linux: not after our FIN).
_KEEPALIVE = frozenset({_ESTABLISHED, _CLOSE_WAIT})

_DEFAULT_PEER_MSS = 536  # RFC 9293 3.7.1: no MSS option means 536 (IPv4)
_RTO_AFTER_SYN_TIMEOUT = 3.0  # RFC 6298 5.7
_PAWS_IDLE = 24 * 24 * 3600.0  # RFC 7323 5.5: TS.Recent is valid for 24 days
_DUPTHRESH = 3  # RFC 5681 / RFC 6675 DupThresh
_MIN_PTO = 0.01  # RFC 8985 7.2: floor of the probe timeout
_WC_DELACK = 0.2  # RFC 8985 7.2 WCDelAckT: worst-case delayed-ACK time of a peer
_PREDICT_MASK = FIN | SYN | RST | ACK | 0x20  # URG: header prediction wants ACK alone (PSH ok)
_MAX_SACK_BLOCKS = 256  # scoreboard bound against hostile peers


class TcpConnection:
    """A TCP connection's transmission control block and state machine.

    ``iss`` (the initial send sequence number) is chosen by the caller, so
    tests can start near the 2**32 wrap and the endpoint can apply RFC 6528.
    """

    def __init__(
        self,
        options: Options,
        *,
        local_port: int,
        remote_port: int,
        iss: int,
        ipv6: bool = False,
        ts_offset: int = 0,
        challenge_limiter: RateLimiter | None = None,
    ) -> None:
        self.options = options
        self.local_port = local_port
        self.remote_port = remote_port
        self.state = _CLOSED
        #: True when created from a listener (passive open).
        self.passive = False
        #: Set when the connection failed: the OSError the user should see.
        self.error: OSError | None = None
        #: True once the application fully closed (``close()``): the connection is orphaned.
        self.app_closed = False

        # Send sequence space (RFC 9293 3.3.1)
        self.iss = iss & MASK
        self.snd_una = self.iss
        self.snd_nxt = self.iss
        self.snd_max = self.iss  # highest sequence number sent + 1
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = 0
        self.max_snd_wnd = 0
        self.snd_wscale = 0  # shift applied to the peer's window field
        # Receive sequence space
        self.irs = 0
        self.rcv_nxt = 0
        self.rcv_adv = 0  # right edge of the window last advertised
        self.rcv_wscale = 0  # shift applied to our window field
        self._ws_ok = False

        # Timestamps (RFC 7323) and SACK (RFC 2018), negotiated on the SYNs.
        self._ts_ok = False
        self._ts_offset = ts_offset & MASK
        self.ts_recent: int | None = None
        self._ts_recent_stamp = 0.0
        self._last_ack_sent = 0
        self._sack_ok = False
        self._sacked: list[list[int]] = []  # scoreboard: [start, end) blocks above SND.UNA
        # Holes retransmitted in this recovery: (start, end, SND.MAX when resent).
        self._rxt_holes: list[tuple[int, int, int]] = []
        self._high_rxt = self.iss  # RFC 6675 HighRxt
        self._ooo_last = 0  # sequence number of the latest out-of-order arrival
        self._now = 0.0  # time of the current input (for timestamps on emitted segments)
        #: Shared, endpoint-wide limit on RFC 5961 challenge ACKs (None: unlimited).
        self.challenge_limiter = challenge_limiter

        self.local_mss = options.mss_for(ipv6)
        self._rcvbuf = options.rcvbuf
        self._delack_bytes = 2 * self.local_mss
        self._rcv_wnd_max = min(options.rcvbuf, 0xFFFF)
        self._sws_threshold = min(options.rcvbuf // 2, self.local_mss)
        self.peer_mss = _DEFAULT_PEER_MSS
        self.snd_mss = min(self.peer_mss, self.local_mss)

        # Send buffer: unacknowledged and unsent data; _sndbuf[0] has sequence number _snd_buf_seq.
        self._sndbuf = bytearray()
        self._snd_buf_seq = (self.iss + 1) & MASK
        self.fin_queued = False
        self._fin_seq = 0

        # Receive side: in-order unread data, out-of-order segments keyed by sequence number.
        self._rcvq = bytearray()
        self._ooo: dict[int, tuple[bytes, bool]] = {}
        self._ooo_limit = options.rcvbuf // 256 + 16
        self.fin_received = False
        self._rcv_unacked = 0  # bytes received since the last ACK we sent
        self._ack_now = False

        # Timers: absolute deadlines or None.
        self._rtx_deadline: float | None = None
        self._persist_deadline: float | None = None
        self._delack_deadline: float | None = None
        self._close_deadline: float | None = None  # TIME_WAIT or orphaned FIN_WAIT_2
        self._ka_deadline: float | None = None

        self.rtt = RttEstimator(options.rto_initial, options.rto_min, options.rto_max)
        self._backoff = (
            0  # RTO multiplier exponent: reset only by a valid RTT sample (RFC 6298 5.5)
        )
        self._retries = 0  # consecutive timeouts without progress: the give-up counter
        self._persist_backoff = 0
        self._probes_unanswered = 0
        self._rtt_seq: int | None = None  # sequence number being timed (Karn)
        self._rtt_time = 0.0
        self._syn_retransmitted = False
        self._unacked_since: float | None = None  # for user_timeout

        self.cc: CongestionControl = make_congestion_control(options.congestion, self.snd_mss)
        self._dupacks = 0
        self._early = options.early_retrans
        self._tlp_deadline: float | None = None
        self._tlp_high: int | None = None  # RFC 8985 TLPRxtOut episode: SND.MAX at the probe
        self._ts_rto_floor: int | None = None  # TSval of the last RTO retransmission
        self.tlp_probes = 0
        self._in_recovery = False
        self._recover = self.iss
        self._recover_passed = True  # RFC 6582: an ACK covered more than `recover`

        self._ka_probes = 0
        self._ka_deadline_base: float | None = None  # when the peer was last heard from
        self._out: list[bytes] = []
        self.counters_paws = 0

        # Counters for info()
        self.bytes_sent = 0
        self.bytes_acked = 0
        self.bytes_received = 0
        self.total_retransmits = 0
        self.fast_retransmits = 0
        self.lost_retransmits = 0
        self.rsts_sent = 0
        self.bytes_retransmitted = 0
        self.segments_in = 0
        self.segments_out = 0

    # ------------------------------------------------------------------
    # Driver-facing helpers

    def take_datagrams(self) -> list[bytes]:
        """The datagrams emitted since the last call, in order."""
        out = self._out
        self._out = []
        return out

    @property
    def has_output(self) -> bool:
        """Whether datagrams are waiting in the outbox."""
        return bool(self._out)

    def get_timer(self) -> float | None:
        """The earliest pending deadline, or None when no timer runs."""
        best = self._rtx_deadline
        for d in (
            self._tlp_deadline,
            self._delack_deadline,
            self._persist_deadline,
            self._close_deadline,
            self._ka_deadline,
        ):
            if d is not None and (best is None or d < best):
                best = d
        return best

    @property
    def readable(self) -> int:
        """Bytes the application can read now."""
        return len(self._rcvq)

    @property
    def at_eof(self) -> bool:
        """The peer's FIN has arrived and every byte before it has been read."""
        return self.fin_received and not self._rcvq

    @property
    def send_space(self) -> int:
        """Bytes :meth:`send` would accept now."""
        return max(0, self.options.sndbuf - len(self._sndbuf))

    @property
    def send_queued(self) -> int:
        """Bytes sent but unacknowledged plus bytes not yet sent (Send-Q)."""
        return len(self._sndbuf)

    @property
    def can_send(self) -> bool:
        """Whether the application may still queue data."""
        return not self.fin_queued and (
            self.state in CAN_SEND or self.state in (_SYN_SENT, _SYN_RECEIVED)
        )

    @property
    def all_acked(self) -> bool:
        """Everything queued (and the FIN, if any) has been acknowledged."""
        return self.snd_una == self.snd_max and not self._sndbuf

    # ------------------------------------------------------------------
    # Opening

    def connect(self, now: float) -> None:
        """Active open (RFC 9293 3.10.1): send SYN, enter SYN_SENT."""
        if self.state is not _CLOSED:
            raise RuntimeError(f"connect() in state {self.state}")
        self._now = now
        self._set_state(_SYN_SENT)
        self._send_syn(now)

    def accept_syn(self, seg: Segment, now: float) -> None:
        """Passive open: ``seg`` is a SYN that reached a listener (RFC 9293 3.10.7.2).

        The connection enters SYN_RECEIVED and answers SYN-ACK.
        """
        if self.state is not _CLOSED:
            raise RuntimeError(f"accept_syn() in state {self.state}")
        self._now = now
        self.passive = True
        self._set_state(_LISTEN)
        self._take_peer_syn(seg)
        self.snd_wnd = seg.window  # RFC 7323 2.2: the window in a SYN is never scaled
        self.max_snd_wnd = self.snd_wnd
        self.snd_wl1 = seg.seq
        self.snd_wl2 = seg.ack
        self._set_state(_SYN_RECEIVED)
        self._send_syn(now)
        self.segments_in += 1

    def accept_cookie(self, seg: Segment, mss: int, now: float) -> None:
        """Passive open completed by the ACK of a valid SYN cookie (our ISS is the cookie).

        The connection starts in ESTABLISHED with the MSS the cookie encoded
        and without window scaling, SACK or timestamps, which a cookie cannot
        carry.  Data or FIN in the ACK is processed as usual.
        """
        if self.state is not _CLOSED:
            raise RuntimeError(f"accept_cookie() in state {self.state}")
        self._now = now
        self.passive = True
        self.irs = (seg.seq - 1) & MASK
        self.rcv_nxt = seg.seq
        self.peer_mss = mss
        self.snd_mss = max(1, min(mss, self.local_mss))
        self.cc.set_mss(self.snd_mss)
        self._set_rcv_limits()
        self.rcv_adv = (self.rcv_nxt + min(self.options.rcvbuf, 0xFFFF)) & MASK
        self.snd_una = self.snd_nxt = self.snd_max = (self.iss + 1) & MASK
        self.snd_wnd = seg.window
        self.max_snd_wnd = seg.window
        self.snd_wl1 = seg.seq
        self.snd_wl2 = seg.ack
        self._set_state(_ESTABLISHED)
        self.segments_in += 1
        if seg.payload or seg.flags & FIN:
            self._rx_data(seg.seq, seg.payload, bool(seg.flags & FIN), now)
        self._transmit(now)

    def time_wait_record(self) -> TimeWait:
        """A compact record of this TIME_WAIT connection (see :mod:`.timewait`)."""
        return TimeWait(
            snd_nxt=self.snd_nxt,
            rcv_nxt=self.rcv_nxt,
            window=self._window_field(),
            ts_offset=self._ts_offset if self._ts_ok else None,
            ts_recent=self.ts_recent if self._ts_ok else None,
            ts_stamp=self._ts_recent_stamp,
            deadline=self._close_deadline if self._close_deadline is not None else self._now,
            msl2=2 * self.options.msl,
            rfc1337=self.options.rfc1337,
        )

    def finish_time_wait(self) -> None:
        """TIME_WAIT ended in the endpoint's compact table: the connection is CLOSED."""
        if self.state is _TIME_WAIT:
            self._set_state(_CLOSED)

    def _after_handshake(self) -> None:
        """RFC 6298 5.7: after a retransmitted SYN, data starts with a 3 s RTO, no backoff."""
        if self._syn_retransmitted:
            self._backoff = 0
            if self.rtt.rto < _RTO_AFTER_SYN_TIMEOUT and self.rtt.samples == 0:
                self.rtt.rto = _RTO_AFTER_SYN_TIMEOUT

    def _challenge_ack(self) -> None:
        """RFC 5961 challenge ACK, subject to the endpoint's rate limit (RFC 5961 7)."""
        limiter = self.challenge_limiter
        if limiter is None or limiter.allow(self._now):
            self._ack_now = True

    def _take_peer_syn(self, seg: Segment) -> None:
        """Record IRS and negotiate MSS and window scale from the peer's SYN."""
        self.irs = seg.seq
        self.rcv_nxt = (seg.seq + 1) & MASK
        if seg.mss is not None and seg.mss > 0:
            self.peer_mss = seg.mss
        # RFC 7323 3.2 / RFC 2018 2: used only if both SYNs carry the option
        self._ts_ok = self.options.timestamps and seg.timestamps is not None
        if self._ts_ok and seg.timestamps is not None:
            self.ts_recent = seg.timestamps[0]
            self._ts_recent_stamp = self._now
        self._sack_ok = self.options.sack and seg.sack_permitted
        # RFC 6691: the MSS counts no options; leave room for the ones every segment carries
        self.snd_mss = max(1, min(self.peer_mss, self.local_mss) - (12 if self._ts_ok else 0))
        self.cc.set_mss(self.snd_mss)
        if self.options.window_scaling and seg.wscale is not None:
            # RFC 7323 2.2/2.3: both sides must send the option; shift capped at 14
            self._ws_ok = True
            self.snd_wscale = min(seg.wscale, 14)
            self.rcv_wscale = self._our_wscale()
        else:
            self._ws_ok = False
            self.snd_wscale = 0
            self.rcv_wscale = 0
        self._set_rcv_limits()
        self.rcv_adv = (self.rcv_nxt + self._rcv_wnd_max) & MASK

    def _our_wscale(self) -> int:
        shift = 0
        while (self.options.rcvbuf >> shift) > 0xFFFF and shift < 14:
            shift += 1
        return shift

    def _set_rcv_limits(self) -> None:
        """Cache the window constants once the window scale is known."""
        self._rcv_wnd_max = min(self._rcvbuf, 0xFFFF << self.rcv_wscale)  # largest expressible
        self._sws_threshold = min(self._rcvbuf // 2, self.local_mss)

    def _send_syn(self, now: float) -> None:
        """Send (or re-send) our SYN or SYN-ACK with its options."""
        if self.state is _SYN_SENT:
            flags = SYN
            ack = 0
            wscale = self._our_wscale() if self.options.window_scaling else None
            sack_ok = self.options.sack
            ts = (self._tsval(), 0) if self.options.timestamps else None
        else:
            flags = SYN | ACK
            ack = self.rcv_nxt
            wscale = self.rcv_wscale if self._ws_ok else None
            sack_ok = self._sack_ok
            ts = (self._tsval(), self.ts_recent or 0) if self._ts_ok else None
        seg = Segment(
            self.local_port,
            self.remote_port,
            self.iss,
            ack,
            flags,
            min(self.options.rcvbuf, 0xFFFF),
            mss=self.local_mss,
            wscale=wscale,
            sack_permitted=sack_ok,
            timestamps=ts,
        )
        self._emit(seg)
        self.snd_nxt = (self.iss + 1) & MASK
        if seq_gt(self.snd_nxt, self.snd_max):
            self.snd_max = self.snd_nxt
        if self._rtx_deadline is None:
            self._rtx_deadline = now + self.rtt.backed_off(self._backoff)
        if self._rtt_seq is None and not self._syn_retransmitted:
            self._rtt_seq = self.snd_nxt
            self._rtt_time = now

    # ------------------------------------------------------------------
    # User calls

    def send(self, data: bytes | bytearray | memoryview, now: float) -> int:
        """Queue as much of ``data`` as the send buffer takes; returns the count.

        Raises RuntimeError if sending is no longer allowed (the driver checks
        :attr:`can_send` first and maps that to the user's error).
        """
        if not self.can_send:
            raise RuntimeError(f"send() in state {self.state}")
        self._now = now
        n = min(len(data), self.send_space)
        if n:
            self._sndbuf += data[:n]
            self._transmit(now)
        return n

    def read(self, max_bytes: int, now: float) -> bytes:
        """Take up to ``max_bytes`` of in-order data (b"" when none is buffered)."""
        if not self._rcvq:
            return b""
        self._now = now
        before = self._window_now()
        if max_bytes >= len(self._rcvq):
            data = bytes(self._rcvq)
            self._rcvq.clear()
        else:
            data = bytes(self._rcvq[:max_bytes])
            del self._rcvq[:max_bytes]
        if self.state in CAN_RECEIVE:
            # RFC 9293 3.8.6.2.2: announce the reopened window once it grew enough
            # (Linux's rule: the window was at most half open and would at least double).
            after = self._rcv_space()
            if (
                after - before >= min(self.options.rcvbuf // 2, self.local_mss)
                and 2 * before <= self._rcv_wnd_max
                and after >= 2 * before
            ):
                self._ack_now = True
                self._transmit(now)
        return data

    def shutdown(self, now: float) -> None:
        """Half-close: queue a FIN after the data (RFC 9293 3.10.4 CLOSE, sending side only)."""
        st = self.state
        self._now = now
        if self.fin_queued or st in (_CLOSED, _LISTEN):
            return
        if st is _SYN_SENT:
            self._set_state(_CLOSED)  # RFC 9293 3.10.4: delete the TCB
            return
        if st is _SYN_RECEIVED:
            # utcp hands only ESTABLISHED connections to users; an unaccepted
            # half-open connection being closed is simply reset.
            self.abort(now)
            return
        if st in (_ESTABLISHED, _CLOSE_WAIT):
            self.fin_queued = True
            self._fin_seq = (self._snd_buf_seq + len(self._sndbuf)) & MASK
            self._set_state(_FIN_WAIT_1 if st is _ESTABLISHED else _LAST_ACK)
            self._transmit(now)

    def close(self, now: float) -> None:
        """Full close: like ``close(2)`` on a socket.

        Unread data (or ``linger=0``) turns it into an abort with RST (RFC 9293
        3.10.4 / RFC 2525 2.17, as Linux does); otherwise a FIN is queued and
        the connection finishes on its own, orphaned.
        """
        if self.app_closed:
            return
        self._now = now
        self.app_closed = True
        if self.state in (_CLOSED, _TIME_WAIT):
            return
        if self.options.linger == 0 or self._rcvq or self._ooo:
            self.abort(now)
            return
        self.shutdown(now)
        if self.state is _FIN_WAIT_2:
            self._close_deadline = now + self.options.fin_timeout

    def abort(self, now: float) -> None:
        """ABORT (RFC 9293 3.10.5): send RST if synchronized, drop everything."""
        self._now = now
        if self.state in (
            _SYN_RECEIVED,
            _ESTABLISHED,
            _FIN_WAIT_1,
            _FIN_WAIT_2,
            _CLOSE_WAIT,
        ):
            self._emit(Segment(self.local_port, self.remote_port, self.snd_max, 0, RST, 0))
        self._sndbuf.clear()
        self._rcvq.clear()
        self._ooo.clear()
        self._set_state(_CLOSED)

    # ------------------------------------------------------------------
    # Arriving segments (RFC 9293 3.10.7)

    def handle_segment(self, seg: Segment, now: float) -> None:
        """Process one arriving segment addressed to this connection."""
        st = self.state
        if st is _ESTABLISHED and (seg.flags & _PREDICT_MASK) == ACK and self._fast_path(seg, now):
            return
        if st is _CLOSED or st is _LISTEN:
            return
        self._now = now
        self.segments_in += 1
        if st is _SYN_SENT:
            self._rx_syn_sent(seg, now)
        else:
            self._rx_other(seg, now)
        if self.state is not _CLOSED:
            if self.options.keepalive and self.state in _KEEPALIVE:
                self._heard_from_peer(now)
            self._transmit(now)

    def _fast_path(self, seg: Segment, now: float) -> bool:
        """Header prediction (Van Jacobson; RFC 7323 appendix, Linux's fast path).

        The common segment in ESTABLISHED: in order, ACK (maybe PSH) only, no
        window change, nothing unusual pending.  It either advances SND.UNA or
        carries in-order data, and is processed here with the same outcome as
        the full RFC 9293 3.10.7.4 path, at a fraction of the cost.  Anything
        else returns False before touching any state.
        """
        if seg.seq != self.rcv_nxt or self._ooo or self._in_recovery or seg.sack_blocks:
            return False
        ts = seg.timestamps
        if self._ts_ok:
            if ts is None:
                return False
            recent = self.ts_recent
            if recent is not None and ((ts[0] - recent) & MASK) >= HALF:
                return False  # PAWS candidate: the full path decides
        payload = seg.payload
        n = len(payload)
        if n > ((self.rcv_adv - self.rcv_nxt) & MASK):
            return False
        ack = seg.ack
        una = self.snd_una
        d = (ack - una) & MASK
        if d > ((self.snd_max - una) & MASK):
            return False  # acks something not sent, or an old ACK
        if d == 0 and n == 0:
            return False  # a duplicate ACK: the full path counts it
        wnd_field = seg.window << self.snd_wscale
        if wnd_field == 0 and self.snd_wnd != 0:
            return False  # the window closes: the full path arms the persist timer
        self._now = now
        self.segments_in += 1
        if ts is not None and seg.seq == self._last_ack_sent:
            self.ts_recent = ts[0]  # RFC 7323 4.3
            self._ts_recent_stamp = now
        self._probes_unanswered = 0
        if d:
            self._ack_advances(ack, now, ts[1] if ts is not None else 0)
        wl1 = self.snd_wl1
        if seq_lt(wl1, seg.seq) or (wl1 == seg.seq and seq_le(self.snd_wl2, ack)):
            # RFC 9293 3.10.7.4 fifth: window update (SND.UNA =< SEG.ACK holds here)
            self.snd_wl1 = seg.seq
            self.snd_wl2 = ack
            if wnd_field != self.snd_wnd:
                self.snd_wnd = wnd_field
                if wnd_field > self.max_snd_wnd:
                    self.max_snd_wnd = wnd_field
                if wnd_field:
                    self._persist_deadline = None
                    self._persist_backoff = 0
        if n:
            self._take_in_order(payload)
            self._schedule_ack(now)
        if self.options.keepalive:
            self._heard_from_peer(now)
        self._transmit(now)
        return True

    def _rx_syn_sent(self, seg: Segment, now: float) -> None:
        """RFC 9293 3.10.7.3: SYN-SENT."""
        f = seg.flags
        ack_ok = False
        if f & ACK:
            # first: an ACK outside (ISS, SND.NXT] gets a RST unless it is one
            if seq_le(seg.ack, self.iss) or seq_gt(seg.ack, self.snd_max):
                if not f & RST:
                    self._send_rst(seg.ack)
                return
            ack_ok = True
        if f & RST:
            # second: RFC 5961 3.2: only a RST acknowledging our SYN is believed
            if ack_ok:
                self._fail(ConnectionRefusedError("connection refused by peer (RST)"))
            return
        if not f & SYN:
            return  # fifth: neither SYN nor RST
        # fourth: SYN
        self._take_peer_syn(seg)
        if ack_ok:
            self._ack_advances(seg.ack, now)
            self.snd_wnd = seg.window  # RFC 7323 2.2: never scaled on a SYN
            self.max_snd_wnd = self.snd_wnd
            self.snd_wl1 = seg.seq
            self.snd_wl2 = seg.ack
            self._set_state(_ESTABLISHED)
            self._after_handshake()
            self._ack_now = True
            if seg.payload or f & FIN:
                self._rx_data(self.rcv_nxt, seg.payload, bool(f & FIN), now)
        else:
            # Simultaneous open (RFC 9293 3.5 figure 7): answer SYN-ACK.
            self.snd_wnd = seg.window
            self.max_snd_wnd = self.snd_wnd
            self.snd_wl1 = seg.seq
            self.snd_wl2 = seg.ack
            self._set_state(_SYN_RECEIVED)
            self._send_syn(now)

    def _rx_other(self, seg: Segment, now: float) -> None:
        """RFC 9293 3.10.7.4: SYN-RECEIVED and the synchronized states."""
        f = seg.flags
        st = self.state
        seq = seg.seq
        payload = seg.payload
        fin = bool(f & FIN)
        syn = bool(f & SYN)

        if st is _SYN_RECEIVED and syn and seq == self.irs and not f & RST:
            if not f & ACK:
                # A retransmitted SYN: our SYN-ACK was lost; answer it again (as Linux).
                self._send_syn(now)
                return
            if not self.passive and seg.ack == ((self.iss + 1) & MASK):
                # Simultaneous open: the peer's SYN-ACK acknowledges our SYN.
                # Its SYN was already counted; treat the rest as a plain ACK.
                syn = False
                seq = (seq + 1) & MASK

        if st is _TIME_WAIT and fin and not f & RST and not syn:
            if ((seq + seg.seg_len) & MASK) == self.rcv_nxt:
                # RFC 9293 3.10.7.4 eighth: a retransmitted FIN in TIME-WAIT is
                # acknowledged again and the 2 MSL timeout restarts.
                self._ack_now = True
                self._close_deadline = now + 2 * self.options.msl
                return

        # PAWS (RFC 7323 5.3 R1): a segment whose timestamp is older than
        # TS.Recent is an old duplicate: ACK it and drop it.
        ts = seg.timestamps if self._ts_ok else None
        if (
            ts is not None
            and self.ts_recent is not None
            and not f & RST
            and seq_lt(ts[0], self.ts_recent)
        ):
            if now - self._ts_recent_stamp <= _PAWS_IDLE:
                self.counters_paws += 1
                self._ack_now = True
                return
            self.ts_recent = None  # RFC 7323 5.5: TS.Recent too old to compare

        # first: sequence number check
        seg_len = len(payload) + syn + fin
        wnd = self._window_now()
        rcv_nxt = self.rcv_nxt
        if seg_len == 0:
            ok = seq == rcv_nxt if wnd == 0 else seq_in(seq, rcv_nxt, wnd)
        elif wnd == 0:
            ok = False
        else:
            ok = seq_in(seq, rcv_nxt, wnd) or seq_in((seq + seg_len - 1) & MASK, rcv_nxt, wnd)
        if not ok:
            if wnd == 0 and seq == rcv_nxt and not f & RST:
                # Zero window: still take the ACK, drop the data (RFC 9293 3.10.7.4).
                payload = b""
                fin = False
                syn = False
                self._ack_now = True
            else:
                if syn and not f & RST:
                    self._challenge_ack()  # RFC 5961 4.2: any SYN, whatever its sequence number
                elif not f & RST:
                    self._ack_now = True  # send <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>
                return

        # RFC 7323 4.3: remember the timestamp of the segment covering Last.ACK.sent
        if ts is not None and seq_le(seq, self._last_ack_sent):
            self.ts_recent = ts[0]
            self._ts_recent_stamp = now

        # second: RST (RFC 5961 3.2: exact match resets, in-window gets a challenge ACK)
        if f & RST:
            if seg.seq != rcv_nxt:
                self._challenge_ack()
                return
            if st is _TIME_WAIT and self.options.rfc1337:
                return  # RFC 1337: ignore RST in TIME-WAIT
            if st is _SYN_RECEIVED:
                if self.passive:
                    self._set_state(_CLOSED)  # "return to LISTEN": the listener stays
                else:
                    self._fail(ConnectionRefusedError("connection refused by peer (RST)"))
            elif st in (_ESTABLISHED, _FIN_WAIT_1, _FIN_WAIT_2, _CLOSE_WAIT):
                self._fail(ConnectionResetError("connection reset by peer"))
            else:  # CLOSING, LAST-ACK, TIME-WAIT
                self._set_state(_CLOSED)
            return

        # trim to the window (RFC 9293 3.10.7.4 first, "trimmed to only the portion within")
        if seq_lt(seq, rcv_nxt):
            cut = seq_sub(rcv_nxt, seq)
            if syn:
                syn = False
                cut -= 1
            payload = payload[cut:]
            seq = rcv_nxt
        room = wnd - seq_sub(seq, rcv_nxt)
        if len(payload) > room:
            payload = payload[: max(room, 0)]
            fin = False

        # fourth: SYN in a synchronized state
        if syn:
            if st is _SYN_RECEIVED and self.passive:
                self._set_state(_CLOSED)  # RFC 9293: return to LISTEN
                return
            self._challenge_ack()  # RFC 5961 4.2
            return

        # fifth: ACK
        if not f & ACK:
            return
        ack = seg.ack
        if st is _SYN_RECEIVED:
            if seq_lt(self.snd_una, ack) and seq_le(ack, self.snd_max):
                self._set_state(_ESTABLISHED)
                self._after_handshake()
                self.snd_wnd = seg.window << self.snd_wscale
                self.max_snd_wnd = max(self.max_snd_wnd, self.snd_wnd)
                self.snd_wl1 = seq
                self.snd_wl2 = ack
                st = _ESTABLISHED
            else:
                self._send_rst(ack)
                return
        if seq_gt(ack, self.snd_max):
            self._ack_now = True  # acks something not yet sent: ACK and drop
            return
        if seq_lt(ack, (self.snd_una - max(self.max_snd_wnd, 1)) & MASK):
            self._challenge_ack()  # RFC 5961 5.2: too old
            return
        wnd_field = seg.window << self.snd_wscale
        new_sack = self._sack_ok and bool(seg.sack_blocks) and self._update_scoreboard(seg, ack)
        if seq_gt(ack, self.snd_una):
            self._ack_advances(ack, now, ts[1] if ts is not None else 0)
        elif ack == self.snd_una and self.snd_una != self.snd_max:
            if new_sack or (not payload and not fin and wnd_field == self.snd_wnd):
                # RFC 5681 2 duplicate ACK; with SACK, an ACK bringing new SACK
                # information counts (RFC 6675 2).
                self._on_dupack(now)
        self._probes_unanswered = 0  # the peer answers: persist never gives up (MUST-37)
        # window update (RFC 9293 3.10.7.4 fifth: only if SND.UNA =< SEG.ACK =< SND.NXT)
        if seq_le(self.snd_una, ack) and (
            seq_lt(self.snd_wl1, seq) or (self.snd_wl1 == seq and seq_le(self.snd_wl2, ack))
        ):
            self.snd_wnd = wnd_field
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            if wnd_field > self.max_snd_wnd:
                self.max_snd_wnd = wnd_field
            if wnd_field:
                self._persist_deadline = None
                self._persist_backoff = 0
        fin_acked = self.fin_queued and seq_gt(self.snd_una, self._fin_seq)
        if st is _FIN_WAIT_1 and fin_acked:
            self._set_state(_FIN_WAIT_2)
            st = _FIN_WAIT_2
            if self.app_closed:
                self._close_deadline = now + self.options.fin_timeout
        elif st is _CLOSING and fin_acked:
            self._enter_time_wait(now)
            return
        elif st is _LAST_ACK and fin_acked:
            self._set_state(_CLOSED)
            return

        # sixth: URG is ignored (RFC 9293 3.8.5 leaves it to applications; utcp has none)
        # seventh and eighth: data and FIN
        if payload or fin:
            if st in CAN_RECEIVE:
                if self.app_closed and payload:
                    # Data for an application that closed: RST (RFC 9293 3.10.7.4 / Linux)
                    self.abort(now)
                    return
                self._rx_data(seq, payload, fin, now)
            # CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT: the peer already sent FIN; ignore

    def _rx_data(self, seq: int, payload: bytes, fin: bool, now: float) -> None:
        """Queue in-window data and FIN, in order, reassembling out-of-order pieces."""
        if seq != self.rcv_nxt:
            # Out of order (RFC 9293 3.10.7.4 seventh): keep it, ACK at once (RFC 5681 4.2).
            old = self._ooo.get(seq)
            if (old is None and len(self._ooo) < self._ooo_limit) or (
                old is not None and len(payload) > len(old[0])
            ):
                self._ooo[seq] = (payload, fin)
            self._ooo_last = seq
            self._ack_now = True
            return
        if payload:
            self._take_in_order(payload)
        if self._ooo:
            fin = self._drain_ooo() or fin
            self._ack_now = True  # filled (part of) a hole: ACK at once
        if fin:
            self._rx_fin(now)
        elif payload and not self._ack_now:
            self._schedule_ack(now)

    def _take_in_order(self, payload: bytes) -> None:
        """Queue in-order data for the application and advance RCV.NXT."""
        n = len(payload)
        self._rcvq += payload
        self.rcv_nxt = (self.rcv_nxt + n) & MASK
        self.bytes_received += n
        self._rcv_unacked += n

    def _schedule_ack(self, now: float) -> None:
        """Delayed ACK (RFC 9293 3.8.6.3, RFC 5681 4.2): every second full segment,
        else within ``delack``."""
        if self._rcv_unacked >= self._delack_bytes or self.options.delack <= 0:
            self._ack_now = True
        elif self._delack_deadline is None:
            self._delack_deadline = now + self.options.delack

    def _heard_from_peer(self, now: float) -> None:
        """A segment arrived: the keepalive count restarts and the idle timer re-arms."""
        self._ka_probes = 0
        self._ka_deadline = now + self.options.keepalive_time
        self._ka_deadline_base = now

    def _drain_ooo(self) -> bool:
        """Move out-of-order pieces that now continue the stream; True if a FIN was reached."""
        ooo = self._ooo
        rcv_nxt = self.rcv_nxt
        for s in sorted(ooo, key=lambda k: (k - rcv_nxt) & MASK):
            rel = seq_sub(s, self.rcv_nxt)
            if rel > 0:
                break
            data, fin = ooo.pop(s)
            skip = -rel
            if skip < len(data):
                tail = data[skip:]
                self._rcvq += tail
                self.rcv_nxt = (self.rcv_nxt + len(tail)) & MASK
                self.bytes_received += len(tail)
            if fin and skip <= len(data):
                ooo.clear()
                return True
        # Discard pieces now entirely below rcv_nxt.
        for s in [s for s, (d, _f) in ooo.items() if seq_le((s + len(d)) & MASK, self.rcv_nxt)]:
            del ooo[s]
        return False

    def _rx_fin(self, now: float) -> None:
        """RFC 9293 3.10.7.4 eighth: the FIN, once everything before it has arrived."""
        self.rcv_nxt = (self.rcv_nxt + 1) & MASK
        self.fin_received = True
        self._ack_now = True
        st = self.state
        if st in (_SYN_RECEIVED, _ESTABLISHED):
            self._set_state(_CLOSE_WAIT)
        elif st is _FIN_WAIT_1:
            self._set_state(_CLOSING)
        elif st is _FIN_WAIT_2:
            self._enter_time_wait(now)

    def _enter_time_wait(self, now: float) -> None:
        self._set_state(_TIME_WAIT)
        self._sndbuf.clear()
        self._rtx_deadline = None
        self._persist_deadline = None
        self._ka_deadline = None
        self._close_deadline = now + 2 * self.options.msl

    # ------------------------------------------------------------------
    # ACK processing

    def _ack_advances(self, ack: int, now: float, tsecr: int = 0) -> None:
        """SND.UNA < SEG.ACK =< SND.MAX: new data (or our SYN / FIN) acknowledged."""
        acked = seq_sub(ack, self.snd_una)
        data_acked = min(max(seq_sub(ack, self._snd_buf_seq), 0), len(self._sndbuf))
        if data_acked:
            del self._sndbuf[:data_acked]
            self._snd_buf_seq = (self._snd_buf_seq + data_acked) & MASK
            self.bytes_acked += data_acked
        self.snd_una = ack
        if seq_lt(self.snd_nxt, ack):
            self.snd_nxt = ack
        if self._sacked:
            self._trim_scoreboard()
        # RTT sample (RFC 6298 3): from the timed segment if it was not retransmitted
        # (Karn), else from the echoed timestamp (RFC 7323 4.1), which stays valid
        # across retransmissions.
        if self._rtt_seq is not None and seq_ge(ack, self._rtt_seq):
            self.rtt.on_sample(now - self._rtt_time)
            self._rtt_seq = None
            self._backoff = 0  # RFC 6298 5.5 note: keep the backoff until a valid sample
        elif (
            self._ts_ok
            and tsecr
            and self._rtt_seq is None
            and (self._ts_rto_floor is None or seq_ge(tsecr, self._ts_rto_floor))
        ):
            # An ACK echoing a timestamp from before the last RTO would measure
            # the backoff too (RFC 7323 appendix G): only later echoes count.
            sample = ((self._tsval() - tsecr) & MASK) / 1000.0
            if sample < 3600:
                self.rtt.on_sample(sample)
                self._backoff = 0
        self._retries = 0
        self._ka_probes = 0
        if seq_gt(ack, self._recover):
            self._recover_passed = True
        flight = seq_sub(self.snd_max, self.snd_una)
        if self._in_recovery:
            if seq_ge(ack, self._recover):
                # RFC 6582 3.2 step 3 / RFC 6675 5: full acknowledgment ends recovery
                self._in_recovery = False
                self._rxt_holes = []
                self.cc.on_exit_recovery(flight, now)
            elif not self._sack_ok:
                # RFC 6582 3.2 step 3: partial acknowledgment: retransmit the next
                # hole, deflate by the amount acknowledged, add back one MSS.
                self._retransmit_head(now)
                self.cc.cwnd = max(self.cc.cwnd - acked + self.snd_mss, self.snd_mss)
        elif self.state not in (_SYN_SENT, _SYN_RECEIVED):
            self.cc.on_ack(acked, flight, now, self.rtt.srtt or 0.0)
        self._dupacks = 0
        if self._tlp_high is not None and seq_ge(ack, self._tlp_high):
            self._tlp_high = None  # RFC 8985 7.4: the probe episode is over
        # RFC 6298 5.2 / 5.3
        if self.snd_una == self.snd_max:
            self._rtx_deadline = None
            self._tlp_deadline = None
            self._unacked_since = None
        else:
            self._rtx_deadline = now + self.rtt.rto
            self._unacked_since = now
            if self._early:
                self._arm_tlp(now)
        if self._sack_ok and not self._in_recovery and self._sacked and self._is_lost(ack):
            self._enter_recovery(now)

    def _on_dupack(self, now: float) -> None:
        """RFC 5681 3.2 / RFC 6582 / RFC 6675 5: count duplicate ACKs, recover on the third."""
        self._dupacks += 1
        if self._in_recovery:
            if not self._sack_ok:
                self.cc.cwnd += self.snd_mss  # RFC 5681 3.2 step 4: inflate
            return
        threshold = _DUPTHRESH
        if self._early:
            # RFC 5827 early retransmit: with fewer than four segments outstanding and
            # nothing new to send, three duplicate ACKs can never come.
            oseg = -(-seq_sub(self.snd_max, self.snd_una) // self.snd_mss)
            if oseg < 4 and not self._can_send_new():
                threshold = max(oseg - 1, 1)
        if self._dupacks >= threshold or (self._sack_ok and self._is_lost(self.snd_una)):
            # RFC 6582 3.2 step 2: only if the ACK covers more than the last recovery point
            if self._recover_passed:
                self._enter_recovery(now)

    def _can_send_new(self) -> bool:
        """Whether unsent data exists and the peer's window would take some of it."""
        return self._unsent() > 0 and seq_sub(self.snd_max, self.snd_una) < self.snd_wnd

    def _arm_tlp(self, now: float) -> None:
        """RFC 8985 7.2: schedule a tail loss probe 2 x SRTT after the last send or ACK."""
        srtt = self.rtt.srtt
        if srtt is None or self._in_recovery or self._tlp_high is not None:
            self._tlp_deadline = None
            return
        pto = 2 * srtt
        if seq_sub(self.snd_max, self.snd_una) <= self.snd_mss:
            pto += _WC_DELACK  # a lone segment may wait for the peer's delayed ACK
        pto = max(pto, _MIN_PTO)
        deadline = now + pto
        if self._rtx_deadline is not None and deadline >= self._rtx_deadline:
            self._tlp_deadline = None  # the RTO comes first anyway
        else:
            self._tlp_deadline = deadline

    def _on_tlp(self, now: float) -> None:
        """RFC 8985 7.3: send one probe, new data if possible, else the last segment.

        The probe's ACK (with SACK) lets fast recovery repair a tail loss that
        would otherwise wait for the RTO.
        """
        if (
            self.state not in _SENDING
            or self._in_recovery
            or self.snd_una == self.snd_max
            or self._tlp_high is not None
        ):
            return
        self.tlp_probes += 1
        if self._can_send_new() and self.snd_nxt == self.snd_max:
            self._transmit(now, force=True, probe=True)
        else:
            end = self.snd_max
            fin = self.fin_queued and seq_gt(end, self._fin_seq)
            data_end = self._fin_seq if fin else end
            n = min(self.snd_mss, seq_sub(data_end, self.snd_una))
            seq = (data_end - n) & MASK
            self._send_data(seq, seq_sub(seq, self._snd_buf_seq), n, fin, now)
        self._tlp_high = self.snd_max
        self._rtx_deadline = now + self.rtt.backed_off(self._backoff)  # RFC 8985 7.3

    def _enter_recovery(self, now: float) -> None:
        """Fast retransmit and the start of fast recovery."""
        flight = seq_sub(self.snd_max, self.snd_una)
        self._in_recovery = True
        self._recover = self.snd_max
        self._recover_passed = False
        self.fast_retransmits += 1
        self.cc.on_enter_recovery(flight, now)
        if self._sack_ok:
            # RFC 6675 5 step 4.3: retransmit the first presumed-lost segment now,
            # whatever the pipe; further holes follow from the pipe in _transmit.
            self._high_rxt = self.snd_una
            hole = self._next_hole()
            if hole is not None:
                seq, n = hole
                sent = self._send_data(seq, seq_sub(seq, self._snd_buf_seq), n, False, now)
                if sent > 0:
                    self._high_rxt = (seq + sent) & MASK
                    self._rxt_holes.append((seq, self._high_rxt, self.snd_max))
        else:
            self.cc.cwnd += 3 * self.snd_mss  # RFC 5681 3.2 step 3: inflate
            self._retransmit_head(now)

    def _retransmit_head(self, now: float) -> None:
        """Re-send the first unacknowledged segment (fast retransmit)."""
        seq = self.snd_una
        off = seq_sub(seq, self._snd_buf_seq)
        if off < 0:
            return
        n = min(self.snd_mss, len(self._sndbuf) - off)
        fin = (
            self.fin_queued
            and ((seq + max(n, 0)) & MASK) == self._fin_seq
            and seq_gt(self.snd_max, self._fin_seq)
        )
        if n <= 0 and not fin:
            return
        self._send_data(seq, off, max(n, 0), fin, now)

    # ------------------------------------------------------------------
    # SACK scoreboard (RFC 6675)

    def _update_scoreboard(self, seg: Segment, ack: int) -> bool:
        """Merge the peer's SACK blocks; True if they covered new data."""
        changed = False
        una = ack if seq_gt(ack, self.snd_una) else self.snd_una
        for left, right in seg.sack_blocks:
            # RFC 2018 / RFC 6675: only blocks above SND.UNA and within what was sent count
            if not seq_lt(left, right) or not seq_le(right, self.snd_max):
                continue
            if seq_le(right, una):
                continue  # D-SACK or stale: nothing new
            if seq_lt(left, una):
                left = una
            if self._add_sacked(left, right):
                changed = True
        if changed and self._rxt_holes:
            self._detect_lost_retransmissions()
        return changed

    def _detect_lost_retransmissions(self) -> None:
        """A retransmitted hole still missing while data sent after it is SACKed was lost.

        Linux's classic lost-retransmit detection (before RACK, RFC 8985):
        the hole becomes eligible for retransmission again instead of
        waiting for the RTO.
        """
        top = self._sacked[-1][1] if self._sacked else self.snd_una
        kept = []
        for start, end, sent_after in self._rxt_holes:
            if seq_le(end, self.snd_una):
                continue  # repaired
            if seq_gt(top, sent_after) and not self._sacked_between(start, end):
                if seq_lt(start, self._high_rxt):
                    self._high_rxt = start if seq_gt(start, self.snd_una) else self.snd_una
                self.lost_retransmits += 1
                continue
            kept.append((start, end, sent_after))
        self._rxt_holes = kept

    def _add_sacked(self, left: int, right: int) -> bool:
        una = self.snd_una
        blocks = self._sacked
        before = sum(seq_sub(b[1], b[0]) for b in blocks)
        blocks.append([left, right])
        blocks.sort(key=lambda b: (b[0] - una) & MASK)
        merged: list[list[int]] = []
        for b in blocks:
            if merged and seq_le(b[0], merged[-1][1]):
                if seq_gt(b[1], merged[-1][1]):
                    merged[-1][1] = b[1]
            else:
                merged.append(b)
        if len(merged) > _MAX_SACK_BLOCKS:
            del merged[_MAX_SACK_BLOCKS:]
        self._sacked = merged
        return sum(seq_sub(b[1], b[0]) for b in merged) > before

    def _trim_scoreboard(self) -> None:
        una = self.snd_una
        kept: list[list[int]] = []
        for b in self._sacked:
            if seq_le(b[1], una):
                continue
            if seq_lt(b[0], una):
                b = [una, b[1]]
            kept.append(b)
        self._sacked = kept

    def _lost_boundary(self) -> int:
        """Unsacked data below this sequence number is deemed lost (RFC 6675 IsLost)."""
        count = 0
        total = 0
        boundary = self.snd_una
        for left, right in reversed(self._sacked):
            count += 1
            total += seq_sub(right, left)
            if count >= _DUPTHRESH or total > (_DUPTHRESH - 1) * self.snd_mss:
                boundary = left
                break
        if self._in_recovery and seq_lt(boundary, self.snd_una + 1):
            # A partial ACK during recovery says the next hole is lost too (RFC 6582 spirit).
            boundary = (self.snd_una + 1) & MASK
        return boundary

    def _is_lost(self, seqno: int) -> bool:
        return seq_lt(seqno, self._lost_boundary())

    def _sacked_between(self, a: int, b: int) -> int:
        """SACKed bytes inside [a, b)."""
        total = 0
        for left, right in self._sacked:
            lo = left if seq_gt(left, a) else a
            hi = right if seq_lt(right, b) else b
            if seq_lt(lo, hi):
                total += seq_sub(hi, lo)
        return total

    def _pipe(self) -> int:
        """RFC 6675 SetPipe: bytes believed to be in the network."""
        una, high = self.snd_una, self.snd_max
        flight = seq_sub(high, una)
        lost_end = self._lost_boundary()
        if seq_gt(lost_end, high):
            lost_end = high
        lost = seq_sub(lost_end, una) - self._sacked_between(una, lost_end)
        rxt_end = self._high_rxt if seq_lt(self._high_rxt, lost_end) else lost_end
        retransmitted = 0
        if seq_gt(rxt_end, una):
            retransmitted = seq_sub(rxt_end, una) - self._sacked_between(una, rxt_end)
        return flight - self._sacked_between(una, high) - lost + retransmitted

    def _next_hole(self) -> tuple[int, int] | None:
        """RFC 6675 NextSeg rule 1: the first lost, unsacked, not yet retransmitted range."""
        start = self._high_rxt if seq_gt(self._high_rxt, self.snd_una) else self.snd_una
        lost_end = self._lost_boundary()
        for left, right in self._sacked:
            if seq_le(right, start):
                continue
            if seq_lt(start, left):
                if not seq_lt(start, lost_end):
                    return None
                return start, min(seq_sub(left, start), self.snd_mss)
            start = right
        if seq_lt(start, lost_end) and seq_lt(start, self.snd_max):
            end = lost_end if seq_lt(lost_end, self.snd_max) else self.snd_max
            return start, min(seq_sub(end, start), self.snd_mss)
        return None

    # ------------------------------------------------------------------
    # Timers

    def handle_timer(self, now: float) -> None:
        """Fire every deadline that is due at ``now``."""
        self._now = now
        if self._close_deadline is not None and now >= self._close_deadline:
            self._close_deadline = None
            if self.state in (_TIME_WAIT, _FIN_WAIT_2):
                self._set_state(_CLOSED)
                return
        if self._rtx_deadline is not None and now >= self._rtx_deadline:
            self._rtx_deadline = None
            self._on_rto(now)
            if self.state is _CLOSED:
                return
        if self._tlp_deadline is not None and now >= self._tlp_deadline:
            self._tlp_deadline = None
            self._on_tlp(now)
        if self._persist_deadline is not None and now >= self._persist_deadline:
            self._persist_deadline = None
            self._on_persist(now)
            if self.state is _CLOSED:
                return
        if self._ka_deadline is not None and now >= self._ka_deadline:
            self._ka_deadline = None
            self._on_keepalive(now)
            if self.state is _CLOSED:
                return
        if self._delack_deadline is not None and now >= self._delack_deadline:
            self._delack_deadline = None
            self._ack_now = True
        self._transmit(now)

    def _on_rto(self, now: float) -> None:
        """RFC 6298 5.4-5.6: retransmit the earliest segment, back off, restart."""
        st = self.state
        if st is _SYN_SENT:
            limit = self.options.syn_retries
        elif st is _SYN_RECEIVED:
            limit = self.options.synack_retries
        else:
            limit = self.options.retries2
        ut = self.options.user_timeout
        timed_out = ut > 0 and self._unacked_since is not None and now - self._unacked_since >= ut
        if self._retries >= limit or timed_out:
            if st is _SYN_RECEIVED and self.passive:
                self._set_state(_CLOSED)  # the listener forgets the half-open connection
            else:
                what = "connection attempt" if st is _SYN_SENT else "connection"
                self._fail(TimeoutError(f"{what} timed out after {self._retries} retransmissions"))
            return
        self._retries += 1
        self._backoff += 1
        self._rtt_seq = None  # Karn's rule
        if st in (_SYN_SENT, _SYN_RECEIVED):
            self.total_retransmits += 1
            self._syn_retransmitted = True
            self._send_syn(now)
        else:
            flight = seq_sub(self.snd_max, self.snd_una)
            self.cc.on_rto(flight, now)
            self._tlp_deadline = None
            self._tlp_high = None
            if self._ts_ok:
                self._ts_rto_floor = self._tsval()
            self._in_recovery = False
            self._dupacks = 0
            self._recover = self.snd_max
            self._recover_passed = False
            self._high_rxt = self.snd_una
            self._rxt_holes = []
            if self._retries >= 2:
                # Repeated timeouts: stop trusting SACK information in case the
                # receiver reneged (RFC 2018 8, RFC 6675 5.1).
                self._sacked = []
            # Go back N, skipping SACKed data: everything in flight is presumed
            # lost (RFC 5681 3.1, RFC 6298 5.4)
            self.snd_nxt = self.snd_una
        self._rtx_deadline = now + self.rtt.backed_off(self._backoff)
        if ut > 0 and self._unacked_since is not None:
            self._rtx_deadline = min(self._rtx_deadline, self._unacked_since + ut)

    def _on_persist(self, now: float) -> None:
        """RFC 9293 3.8.6.1: probe a zero window; backoff, never give up while answered."""
        if self.state not in _SENDING or not self._unsent():
            return
        self._persist_backoff += 1
        self._probes_unanswered += 1
        if self._probes_unanswered > self.options.retries2:
            self._fail(TimeoutError("peer's zero window never reopened (persist timeout)"))
            return
        if self.snd_wnd > 0:
            self._transmit(now, force=True)
        else:
            self._send_probe()
        self._persist_deadline = now + self.rtt.backed_off(self._persist_backoff)

    def _on_keepalive(self, now: float) -> None:
        if not self.options.keepalive or self.state not in _KEEPALIVE:
            return
        if self.snd_una != self.snd_max:
            # Data in flight: the retransmission timer watches the peer instead.
            self._ka_deadline = now + self.options.keepalive_intvl
            return
        ut = self.options.user_timeout
        base = self._ka_deadline_base
        silent = now - base if base is not None else 0.0
        if ut > 0 and self._ka_probes and silent >= ut:
            # TCP_USER_TIMEOUT overrides keepalive_probes (as Linux): give up once
            # the peer has been silent that long, however many probes went out.
            self._fail(TimeoutError(f"peer silent for {silent:.1f} s (user_timeout)"))
            return
        if ut <= 0 and self._ka_probes >= self.options.keepalive_probes:
            self._fail(TimeoutError(f"peer did not answer {self._ka_probes} keepalive probes"))
            return
        self._ka_probes += 1
        self._send_probe()
        self._ka_deadline = now + self.options.keepalive_intvl
        if ut > 0 and self._ka_deadline_base is not None:
            self._ka_deadline = min(self._ka_deadline, self._ka_deadline_base + ut)

    def _send_probe(self) -> None:
        """A segment the peer must answer: ``<SEQ=SND.UNA-1><ACK=RCV.NXT><CTL=ACK>``."""
        self._emit(
            Segment(
                self.local_port,
                self.remote_port,
                (self.snd_una - 1) & MASK,
                self.rcv_nxt,
                ACK,
                self._window_field(),
            )
        )

    # ------------------------------------------------------------------
    # Output

    def _unsent(self) -> int:
        """Data bytes queued but not yet sent (from SND.NXT)."""
        return len(self._sndbuf) - max(seq_sub(self.snd_nxt, self._snd_buf_seq), 0)

    def _transmit(self, now: float, *, force: bool = False, probe: bool = False) -> None:
        """Send what the windows allow (RFC 9293 3.8.6.2.1, RFC 896, RFC 5681, RFC 6675).

        During SACK recovery, lost holes go first, as far as cwnd - pipe
        allows; then new data (or, after an RTO, the go-back-N resend that
        skips SACKed ranges), limited by the peer's window and cwnd.
        """
        if self.state in _SENDING:
            mss = self.snd_mss
            sack_recovery = self._in_recovery and self._sack_ok
            if sack_recovery:
                pipe = self._pipe()
                while self.cc.cwnd - pipe >= mss:
                    hole = self._next_hole()
                    if hole is None:
                        break
                    seq, n = hole
                    sent = self._send_data(seq, seq_sub(seq, self._snd_buf_seq), n, False, now)
                    if sent <= 0:
                        break
                    self._high_rxt = (seq + sent) & MASK
                    self._rxt_holes.append((seq, self._high_rxt, self.snd_max))
                    pipe += sent
                flight_now = pipe
            sndbuf_len = len(self._sndbuf)
            nodelay = self.options.nodelay
            seg_max = mss - self._sack_option_len() if self._ooo else mss
            cc = self.cc
            # RFC 3042 limited transmit: one new segment beyond cwnd per early
            # duplicate ACK (at most two); a tail loss probe may send one segment.
            extra = mss if probe else 0
            if self._early and self._dupacks and not self._in_recovery:
                extra = min(self._dupacks, 2) * mss
            while True:
                snd_nxt = self.snd_nxt
                sacked = self._sacked and seq_lt(snd_nxt, self.snd_max)
                if sacked:
                    self._skip_sacked()
                    snd_nxt = self.snd_nxt
                off = (snd_nxt - self._snd_buf_seq) & MASK
                if off >= HALF:
                    off -= 1 << 32
                avail = sndbuf_len - off
                fin_pending = self.fin_queued and seq_le(snd_nxt, self._fin_seq)
                if avail <= 0 and not fin_pending:
                    break
                in_flight = (snd_nxt - self.snd_una) & MASK
                cwnd_room = cc.cwnd + extra - (flight_now if sack_recovery else in_flight)
                usable = self.snd_wnd - in_flight
                if cwnd_room < usable:
                    usable = cwnd_room
                n = avail if avail < seg_max else seg_max
                if usable < n:
                    n = usable
                if sacked:
                    n = min(n, self._room_before_sacked())
                if n < 0:
                    n = 0
                fin = fin_pending and n == avail
                if n == 0 and not fin:
                    break
                if n == 0 and fin and usable <= 0 and avail > 0:
                    break
                if n < seg_max and n < avail and not force:
                    # Window-limited partial segment: sender SWS avoidance
                    # (RFC 9293 3.8.6.2.1) waits for half the peer's max window.
                    if n < self.max_snd_wnd // 2 or in_flight:
                        break
                elif n < seg_max and not nodelay and in_flight and not fin and not force:
                    break  # Nagle (RFC 896): one small segment in flight at a time
                sent = self._send_data(self.snd_nxt, off, n, fin, now)
                if sack_recovery:
                    flight_now += sent
                force = False
                if probe:
                    break
            if (
                self._rtx_deadline is None
                and self._persist_deadline is None
                and self.snd_una == self.snd_nxt
                and self._unsent() > 0
            ):
                # Nothing in flight and the window blocks us: arm the persist timer.
                self._persist_deadline = now + self.rtt.backed_off(self._persist_backoff)
        if self._ack_now and self.state is not _CLOSED and self.state is not _SYN_SENT:
            # <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>, where SND.NXT is the highest
            # sequence number sent: after an RTO our go-back-N pointer (snd_nxt)
            # may lag behind what the peer already received, and a peer ignores
            # the ACK field of a segment below its RCV.NXT.
            self._emit_ack_bearing(self.snd_max, ACK, b"")

    def _skip_sacked(self) -> None:
        """Move SND.NXT past a SACKed range it stands in (go-back-N after an RTO)."""
        for left, right in self._sacked:
            if seq_le(left, self.snd_nxt) and seq_lt(self.snd_nxt, right):
                self.snd_nxt = right
            elif seq_gt(left, self.snd_nxt):
                break

    def _room_before_sacked(self) -> int:
        """Bytes from SND.NXT to the next SACKed range (or a large number)."""
        for left, _right in self._sacked:
            if seq_gt(left, self.snd_nxt):
                return seq_sub(left, self.snd_nxt)
        return 1 << 30

    def _send_data(self, seq: int, off: int, n: int, fin: bool, now: float) -> int:
        """Emit one data (and/or FIN) segment at ``seq`` (buffer offset ``off``).

        Returns the sequence space it covered.
        """
        if self._ooo:
            room = self.snd_mss - self._sack_option_len()
            if n > room:
                n = room
                fin = False
        payload = self._sndbuf[off : off + n] if n else b""
        flags = ACK
        if fin:
            flags |= FIN
        if n and off + n == len(self._sndbuf):
            flags |= PSH
        self._emit_ack_bearing(seq, flags, payload)
        covered = n + (1 if fin else 0)
        end = (seq + covered) & MASK
        if seq == self.snd_nxt:
            self.snd_nxt = end
        if seq_lt(seq, self.snd_max):
            self.total_retransmits += 1
            self.bytes_retransmitted += n
            if self._rtt_seq is not None and seq_lt(seq, self._rtt_seq):
                self._rtt_seq = None  # a retransmission covers the timed segment: Karn
        if seq_gt(end, self.snd_max):
            if self._rtt_seq is None and not seq_lt(seq, self.snd_max):
                self._rtt_seq = end
                self._rtt_time = now
            self.bytes_sent += seq_sub(end, self.snd_max) - (1 if fin else 0)
            self.snd_max = end
            if self._early and self._tlp_high is None and not self._in_recovery:
                srtt = self.rtt.srtt
                if srtt is not None:
                    self._tlp_deadline = now + max(2 * srtt, _MIN_PTO)
        if self._rtx_deadline is None:
            self._rtx_deadline = now + self.rtt.backed_off(self._backoff)
        if self._unacked_since is None:
            self._unacked_since = now
        self._persist_deadline = None
        return covered

    def _send_rst(self, seq: int) -> None:
        """``<SEQ=seq><CTL=RST>``, as RFC 9293 3.10.7 prescribes for a bad ACK."""
        self._emit(Segment(self.local_port, self.remote_port, seq, 0, RST, 0))

    def _tsval(self) -> int:
        """Our timestamp clock: milliseconds plus a per-connection offset (RFC 7323 5.4)."""
        return (int(self._now * 1000) + self._ts_offset) & MASK

    def _emit(self, seg: Segment) -> None:
        f = seg.flags
        if f & RST:
            self.rsts_sent += 1
        if not f & SYN:
            if self._ts_ok and not f & RST:
                seg.timestamps = (self._tsval(), self.ts_recent or 0)
            if f & ACK and self._sack_ok and self._ooo:
                seg.sack_blocks = self._sack_blocks()
        if f & ACK:
            self._ack_now = False
            self._rcv_unacked = 0
            self._delack_deadline = None
            self._last_ack_sent = seg.ack
            if not f & SYN:
                self._advance_adv()
        self.segments_out += 1
        self._out.append(encode(seg))

    def _emit_ack_bearing(self, seq: int, flags: int, payload: bytes | bytearray) -> None:
        """Emit an ACK-bearing segment (data, FIN or pure ACK): the per-segment hot path."""
        window = self._window_field()
        if self._sack_ok and self._ooo:
            self._emit(
                Segment(
                    self.local_port,
                    self.remote_port,
                    seq,
                    self.rcv_nxt,
                    flags,
                    window,
                    bytes(payload),
                )
            )
            return
        ack = self.rcv_nxt
        self._ack_now = False
        self._rcv_unacked = 0
        self._delack_deadline = None
        self._last_ack_sent = ack
        self.segments_out += 1
        self._out.append(
            encode_fields(
                self.local_port,
                self.remote_port,
                seq,
                ack,
                flags,
                window,
                payload,
                (self._tsval(), self.ts_recent or 0) if self._ts_ok else None,
            )
        )

    def _sack_blocks(self) -> tuple[tuple[int, int], ...]:
        """SACK blocks for our out-of-order data (RFC 2018 4).

        The first block holds the most recently received segment; the rest
        follow in descending sequence order, at most 3 with timestamps, else 4.
        """
        rcv_nxt = self.rcv_nxt
        blocks: list[list[int]] = []
        for s in sorted(self._ooo, key=lambda k: (k - rcv_nxt) & MASK):
            end = (s + len(self._ooo[s][0])) & MASK
            if blocks and seq_le(s, blocks[-1][1]):
                if seq_gt(end, blocks[-1][1]):
                    blocks[-1][1] = end
            else:
                blocks.append([s, end])
        limit = 3 if self._ts_ok else 4
        last = self._ooo_last
        first = [b for b in blocks if seq_le(b[0], last) and seq_lt(last, b[1])]
        rest = [b for b in reversed(blocks) if not first or b is not first[0]]
        return tuple((b[0], b[1]) for b in (first[:1] + rest)[:limit])

    def _sack_option_len(self) -> int:
        """Bytes the SACK option takes on our next ACK-bearing segment."""
        if not (self._sack_ok and self._ooo):
            return 0
        return 4 + 8 * min(len(self._ooo), 3 if self._ts_ok else 4)

    # ------------------------------------------------------------------
    # Receive window

    def _rcv_space(self) -> int:
        """Free receive buffer, bounded by what the window field can express."""
        space = self._rcvbuf - len(self._rcvq)
        if space > self._rcv_wnd_max:
            return self._rcv_wnd_max
        return space if space > 0 else 0

    def _window_now(self) -> int:
        """The window currently offered: from RCV.NXT to the advertised right edge."""
        d = (self.rcv_adv - self.rcv_nxt) & MASK
        return d if d < HALF else 0

    def _advance_adv(self) -> None:
        """Move the advertised right edge, never backwards, avoiding silly windows.

        RFC 9293 3.8.6.2.2: the edge moves only when it can move by at least
        min(RCV.BUFF/2, MSS); RFC 7323 2.3 rounding keeps it from shrinking.
        """
        space = self._rcv_space()
        grow = (self.rcv_nxt + space - self.rcv_adv) & MASK
        if 0 < grow < HALF and (grow >= self._sws_threshold or space >= self._rcv_wnd_max):
            self.rcv_adv = (self.rcv_nxt + space) & MASK

    def _window_field(self) -> int:
        """The 16-bit window field for the current advertisement."""
        self._advance_adv()
        wnd = (self.rcv_adv - self.rcv_nxt) & MASK
        if wnd >= HALF:
            return 0
        shift = self.rcv_wscale
        field = (wnd + (1 << shift) - 1) >> shift if shift else wnd
        return field if field < 0xFFFF else 0xFFFF

    # ------------------------------------------------------------------
    # State changes and failure

    def _set_state(self, new: State) -> None:
        self.state = new
        if new is _CLOSED:
            self._rtx_deadline = None
            self._tlp_deadline = None
            self._persist_deadline = None
            self._delack_deadline = None
            self._close_deadline = None
            self._ka_deadline = None
            self._ack_now = False
        elif new is _ESTABLISHED and self.options.keepalive:
            self._ka_deadline = None  # armed on the next segment or timer pass

    def _fail(self, exc: OSError) -> None:
        """Enter CLOSED with ``exc`` as the error the user will see."""
        self.error = exc
        self._sndbuf.clear()
        self._ooo.clear()
        self._set_state(_CLOSED)

    def start_keepalive(self, now: float) -> None:
        """Arm the keepalive timer (the driver calls it once the connection is established)."""
        if self.options.keepalive and self.state in _KEEPALIVE and self._ka_deadline is None:
            self._heard_from_peer(now)

    # ------------------------------------------------------------------
    # Introspection

    def info(self) -> dict[str, Any]:
        """A TCP_INFO-like snapshot of the connection."""
        return {
            "state": self.state,
            "srtt": self.rtt.srtt,
            "rttvar": self.rtt.rttvar,
            "rto": self.rtt.backed_off(self._backoff),
            "cwnd": self.cc.cwnd,
            "ssthresh": self.cc.ssthresh,
            "snd_mss": self.snd_mss,
            "rcv_mss": self.local_mss,
            "snd_wnd": self.snd_wnd,
            "rcv_wnd": self._window_now(),
            "snd_wscale": self.snd_wscale,
            "rcv_wscale": self.rcv_wscale,
            "unacked": seq_sub(self.snd_max, self.snd_una),
            "send_queue": len(self._sndbuf),
            "recv_queue": len(self._rcvq),
            "bytes_sent": self.bytes_sent,
            "bytes_acked": self.bytes_acked,
            "bytes_received": self.bytes_received,
            "retransmits": self._retries,
            "total_retransmits": self.total_retransmits,
            "fast_retransmits": self.fast_retransmits,
            "lost_retransmits": self.lost_retransmits,
            "bytes_retransmitted": self.bytes_retransmitted,
            "timestamps": self._ts_ok,
            "sack": self._sack_ok,
            "congestion": self.cc.name,
            "paws_drops": self.counters_paws,
            "tlp_probes": self.tlp_probes,
            "backoff": self._backoff,
            "retries": self._retries,
            "probes": self._ka_probes + self._probes_unanswered,
            "segments_in": self.segments_in,
            "segments_out": self.segments_out,
        }
