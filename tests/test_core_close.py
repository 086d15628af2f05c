"""Core scripts: closing a connection (RFC 9293 3.6, 3.10.4, 3.10.7.4).

Every script starts from an established connection whose sequence numbers
cross the 2**32 wrap.  Our side sent SYN at ISS, the peer at IRS, so after
the handshake SND.NXT = ISS+1 and RCV.NXT = IRS+1; a FIN occupies one
sequence number, so after our FIN SND.NXT = ISS+2 and after the peer's
FIN RCV.NXT = IRS+2 (plus whatever data was exchanged).

Windows: rcvbuf is 8192 and window scaling is off, so an empty receive
buffer offers 8192.  With unread data the right edge RCV.NXT+RCV.WND stays
where it was advertised (RFC 9293 3.8.6.2.2, receiver SWS avoidance), so
the window is 8192 minus the sequence space consumed since.
"""

from __future__ import annotations

import pytest

from .scripting import ACK, FIN, IRS, ISS, PSH, RST, SYN, Script, State, pattern, seq

S1 = seq(ISS, 1)  # SND.NXT after the handshake
S2 = seq(ISS, 2)  # SND.NXT after our FIN
R1 = seq(IRS, 1)  # RCV.NXT after the handshake
R2 = seq(IRS, 2)  # RCV.NXT after the peer's FIN (no data)
WND = 8192  # rcvbuf, nothing unread


def to_fin_wait_2(s: Script, *, orphan: bool) -> None:
    """ESTABLISHED -> FIN_WAIT_1 -> FIN_WAIT_2 by close() (orphan) or shutdown()."""
    if orphan:
        s.conn.close(s.now)
    else:
        s.conn.shutdown(s.now)
    assert s.state is State.FIN_WAIT_1
    s.expect(s.out(FIN | ACK, S1, R1, WND))
    s.feed(s.seg(ACK, R1, S2))
    assert s.state is State.FIN_WAIT_2
    s.expect_nothing()


def to_time_wait(s: Script) -> float:
    """Active close to TIME_WAIT; returns the time TIME_WAIT was entered."""
    s.establish_active()
    to_fin_wait_2(s, orphan=False)
    s.feed(s.seg(FIN | ACK, R1, S2), at=s.now + 1)
    s.expect(s.out(ACK, S2, R2, WND))
    assert s.state is State.TIME_WAIT
    return s.now


# ---------------------------------------------------------------------------
# Active close


def test_active_close_with_shutdown() -> None:
    # RFC 9293 3.10.4 CLOSE in ESTABLISHED: queue a FIN, enter FIN-WAIT-1.
    s = Script()
    s.establish_active()
    to_fin_wait_2(s, orphan=False)
    # Not orphaned: FIN-WAIT-2 waits for the peer indefinitely (no fin_timeout).
    assert s.conn.get_timer() is None
    # RFC 9293 3.10.7.4 eighth, FIN-WAIT-2: enter TIME-WAIT, ACK the FIN.
    s.feed(s.seg(FIN | ACK, R1, S2), at=s.now + 1)
    s.expect(s.out(ACK, S2, R2, WND))
    assert s.state is State.TIME_WAIT
    assert s.conn.at_eof
    t = s.now
    assert s.conn.get_timer() == t + 2 * s.options.msl  # 2*MSL with the default msl=30
    s.advance(t + 2 * s.options.msl)
    assert s.state is State.CLOSED
    assert s.conn.error is None
    assert s.conn.get_timer() is None
    s.expect_nothing()


def test_active_close_with_close() -> None:
    # close() is CLOSE plus "the application is gone": the same segments.
    s = Script(fin_timeout=20.0)
    s.establish_active()
    to_fin_wait_2(s, orphan=True)
    # Orphaned FIN-WAIT-2 is bounded by fin_timeout from entering FIN-WAIT-2.
    assert s.conn.get_timer() == s.now + 20.0
    s.feed(s.seg(FIN | ACK, R1, S2), at=s.now + 1)
    s.expect(s.out(ACK, S2, R2, WND))
    assert s.state is State.TIME_WAIT
    t = s.now
    # TIME-WAIT's 2*MSL replaces the FIN-WAIT-2 timeout.
    assert s.conn.get_timer() == t + 60.0
    s.advance(t + 60.0)
    assert s.state is State.CLOSED
    s.expect_nothing()


@pytest.mark.parametrize("call", ["shutdown", "close"])
def test_passive_close(call: str) -> None:
    s = Script()
    s.establish_active()
    # RFC 9293 3.10.7.4 eighth, ESTABLISHED: the FIN is ACKed, CLOSE-WAIT.
    s.feed(s.seg(FIN | ACK, R1, S1))
    s.expect(s.out(ACK, S1, R2, WND))
    assert s.state is State.CLOSE_WAIT
    assert s.conn.at_eof
    assert s.conn.get_timer() is None
    # RFC 9293 3.10.4 CLOSE in CLOSE-WAIT: send FIN, enter LAST-ACK.
    getattr(s.conn, call)(s.now)
    s.expect(s.out(FIN | ACK, S1, R2, WND))
    assert s.state is State.LAST_ACK
    # RFC 9293 3.10.7.4 fifth, LAST-ACK: the ACK of our FIN closes.
    s.feed(s.seg(ACK, R2, S2))
    assert s.state is State.CLOSED
    assert s.conn.error is None
    assert s.conn.get_timer() is None
    s.expect_nothing()


def test_simultaneous_close() -> None:
    # RFC 9293 figure 13: both FINs cross.
    s = Script()
    s.establish_active()
    s.conn.shutdown(s.now)
    s.expect(s.out(FIN | ACK, S1, R1, WND))
    # The peer's FIN does not acknowledge ours: FIN-WAIT-1 -> CLOSING, ACK the FIN.
    s.feed(s.seg(FIN | ACK, R1, S1))
    assert s.state is State.CLOSING
    s.expect(s.out(ACK, S2, R2, WND))
    # The ACK of our FIN: CLOSING -> TIME-WAIT (RFC 9293 3.10.7.4 fifth, CLOSING).
    s.feed(s.seg(ACK, R2, S2))
    assert s.state is State.TIME_WAIT
    s.expect_nothing()
    t = s.now
    assert s.conn.get_timer() == t + 60.0
    s.advance(t + 60.0)
    assert s.state is State.CLOSED
    s.expect_nothing()


def test_fin_and_ack_of_our_fin_together_in_fin_wait_1() -> None:
    # RFC 9293 3.10.7.4 eighth, FIN-WAIT-1: "If our FIN has been ACKed (perhaps in
    # this segment), then enter TIME-WAIT".
    s = Script()
    s.establish_active()
    s.conn.shutdown(s.now)
    s.expect(s.out(FIN | ACK, S1, R1, WND))
    s.feed(s.seg(FIN | ACK, R1, S2))
    assert s.state is State.TIME_WAIT
    s.expect(s.out(ACK, S2, R2, WND))
    assert s.conn.get_timer() == s.now + 60.0


# ---------------------------------------------------------------------------
# Half-close


def test_half_close_we_keep_receiving_until_peer_fin() -> None:
    s = Script()
    s.establish_active()
    s.conn.shutdown(s.now)
    s.expect(s.out(FIN | ACK, S1, R1, WND))
    # FIN-WAIT-1 still accepts data (RFC 9293 3.10.7.4 seventh).  Two full-sized
    # segments: an ACK at once (RFC 5681 4.2: at least every second full segment).
    a = pattern(1452)
    b = pattern(1452, 1452)
    s.feed(s.data_in(0, a))
    s.expect_nothing()
    s.feed(s.data_in(1452, b))
    s.expect(s.out(ACK, S2, seq(R1, 2904), WND - 2904))
    assert s.state is State.FIN_WAIT_1
    # Our FIN is acknowledged: FIN-WAIT-2, still receiving.
    s.feed(s.data_in(2904, b"", ack_offset=2))
    assert s.state is State.FIN_WAIT_2
    s.expect_nothing()
    c = pattern(100, 2904)
    s.feed(s.data_in(2904, c, ack_offset=2, flags=ACK | PSH))
    s.expect_nothing()  # a single segment: delayed ACK
    s.advance(s.now + s.options.delack)
    s.expect(s.out(ACK, S2, seq(R1, 3004), WND - 3004))
    # The peer's FIN: TIME-WAIT.  The right edge stays at IRS+1+8192 and RCV.NXT
    # is IRS+1+3004+1 (data and FIN).
    s.feed(s.data_in(3004, b"", ack_offset=2, flags=FIN | ACK))
    s.expect(s.out(ACK, S2, seq(R1, 3005), WND - 3005))
    assert s.state is State.TIME_WAIT
    assert s.conn.read(10000, s.now) == a + b + c
    assert s.conn.at_eof
    s.expect_nothing()


def test_half_close_we_keep_sending_in_close_wait() -> None:
    s = Script(nodelay=True)
    s.establish_active()
    s.feed(s.seg(FIN | ACK, R1, S1))
    s.expect(s.out(ACK, S1, R2, WND))
    assert s.state is State.CLOSE_WAIT
    assert s.conn.can_send
    data = pattern(2000)
    assert s.conn.send(data, s.now) == 2000
    # MSS 1452 (peer's MSS = ours), the last segment carries PSH (RFC 1122 4.2.2.2).
    s.expect(
        s.data_out(0, data[:1452], ack_offset=2),
        s.data_out(1452, data[1452:], ack_offset=2, flags=ACK | PSH),
    )
    s.feed(s.seg(ACK, R2, seq(S1, 2000)))
    assert s.conn.send_queued == 0
    s.expect_nothing()
    s.conn.shutdown(s.now)
    s.expect(s.out(FIN | ACK, seq(S1, 2000), R2, WND))
    assert s.state is State.LAST_ACK
    s.feed(s.seg(ACK, R2, seq(S1, 2001)))
    assert s.state is State.CLOSED
    assert s.conn.error is None
    s.expect_nothing()


# ---------------------------------------------------------------------------
# TIME-WAIT


@pytest.mark.parametrize("msl", [5.0, 0.5])
def test_time_wait_lasts_exactly_two_msl(msl: float) -> None:
    s = Script(msl=msl)
    t = to_time_wait(s)
    assert s.conn.get_timer() == t + 2 * msl
    s.advance(t + 2 * msl - 1e-6)
    assert s.state is State.TIME_WAIT
    s.expect_nothing()
    s.advance(t + 2 * msl)
    assert s.state is State.CLOSED
    assert s.conn.error is None
    assert s.conn.get_timer() is None
    s.expect_nothing()


@pytest.mark.parametrize("msl", [5.0, 0.5])
def test_time_wait_reacks_retransmitted_fin_and_restarts_timer(msl: float) -> None:
    # RFC 9293 3.10.7.4 eighth, TIME-WAIT: "Remain in the TIME-WAIT state.
    # Restart the 2 MSL time-wait timeout."
    s = Script(msl=msl)
    t = to_time_wait(s)
    t1 = t + msl  # half-way through TIME-WAIT
    s.feed(s.seg(FIN | ACK, R1, S2), at=t1)
    s.expect(s.out(ACK, S2, R2, WND))
    assert s.state is State.TIME_WAIT
    assert s.conn.get_timer() == t1 + 2 * msl
    s.advance(t + 2 * msl)  # the original expiry passes: still TIME-WAIT
    assert s.state is State.TIME_WAIT
    s.advance(t1 + 2 * msl - 1e-6)
    assert s.state is State.TIME_WAIT
    s.expect_nothing()
    s.advance(t1 + 2 * msl)
    assert s.state is State.CLOSED
    s.expect_nothing()


# ---------------------------------------------------------------------------
# Orphaned FIN-WAIT-2 (fin_timeout)


def test_orphan_fin_wait_2_times_out_after_fin_timeout() -> None:
    s = Script(fin_timeout=10.0)
    s.establish_active()
    to_fin_wait_2(s, orphan=True)
    t = s.now
    assert s.conn.get_timer() == t + 10.0
    s.advance(t + 10.0 - 1e-6)
    assert s.state is State.FIN_WAIT_2
    s.advance(t + 10.0)
    assert s.state is State.CLOSED
    assert s.conn.get_timer() is None
    s.expect_nothing()


def test_fin_timeout_counts_from_entering_fin_wait_2() -> None:
    s = Script(fin_timeout=10.0)
    s.establish_active()
    s.conn.close(s.now)
    s.expect(s.out(FIN | ACK, S1, R1, WND))
    # Our FIN is ACKed 0.125 s later: FIN-WAIT-2 from then on.
    s.feed(s.seg(ACK, R1, S2), at=s.now + 0.125)
    assert s.state is State.FIN_WAIT_2
    t = s.now
    assert s.conn.get_timer() == t + 10.0
    s.advance(t + 10.0)
    assert s.state is State.CLOSED
    s.expect_nothing()


def test_no_fin_timeout_after_shutdown_only() -> None:
    s = Script(fin_timeout=10.0)
    s.establish_active()
    to_fin_wait_2(s, orphan=False)
    t = s.now
    assert s.conn.get_timer() is None
    s.advance(t + 1000.0)
    assert s.state is State.FIN_WAIT_2
    s.expect_nothing()
    # close() later orphans it: the timeout now runs from the close() call.
    s.conn.close(s.now)
    s.expect_nothing()
    assert s.conn.get_timer() == s.now + 10.0
    s.advance(s.now + 10.0)
    assert s.state is State.CLOSED
    s.expect_nothing()


def test_orphan_fin_wait_2_still_completes_normally() -> None:
    s = Script(fin_timeout=10.0)
    s.establish_active()
    to_fin_wait_2(s, orphan=True)
    s.feed(s.seg(FIN | ACK, R1, S2), at=s.now + 5.0)
    s.expect(s.out(ACK, S2, R2, WND))
    assert s.state is State.TIME_WAIT
    assert s.conn.get_timer() == s.now + 60.0


# ---------------------------------------------------------------------------
# Closing with RST (RFC 1122 4.2.2.13, RFC 2525 2.17, RFC 9293 3.10.5)


def test_close_with_unread_data_sends_rst() -> None:
    # RFC 1122 4.2.2.13: "If such a host issues a CLOSE call while received data
    # is still pending in TCP ... its TCP SHOULD send a RST".
    s = Script()
    s.establish_active()
    s.feed(s.data_in(0, pattern(100)))
    s.expect_nothing()  # delayed ACK pending
    s.conn.close(s.now)
    # RFC 9293 3.10.5 ABORT: <SEQ=SND.NXT><CTL=RST>; nothing else (no pending ACK).
    s.expect(s.out(RST, S1, 0, 0))
    assert s.state is State.CLOSED
    assert s.conn.get_timer() is None
    s.advance(s.now + 10.0)
    s.expect_nothing()


def test_close_in_close_wait_with_unread_data_sends_rst() -> None:
    s = Script()
    s.establish_active()
    s.feed(s.data_in(0, pattern(100), flags=ACK | PSH | FIN))
    s.expect(s.out(ACK, S1, seq(R1, 101), WND - 101))
    assert s.state is State.CLOSE_WAIT
    s.conn.close(s.now)
    s.expect(s.out(RST, S1, 0, 0))
    assert s.state is State.CLOSED


def test_close_with_unread_out_of_order_data_sends_rst() -> None:
    s = Script()
    s.establish_active()
    s.feed(s.data_in(100, pattern(100, 100)))
    s.expect(s.out(ACK, S1, R1, WND))  # out of order: immediate duplicate ACK
    s.conn.close(s.now)
    s.expect(s.out(RST, S1, 0, 0))
    assert s.state is State.CLOSED


def test_close_after_reading_everything_sends_fin() -> None:
    s = Script()
    s.establish_active()
    s.feed(s.data_in(0, pattern(100)))
    assert s.conn.read(1000, s.now) == pattern(100)
    s.conn.close(s.now)
    # The FIN carries the pending ACK of the 100 bytes.
    s.expect(s.out(FIN | ACK, S1, seq(R1, 100), WND))
    assert s.state is State.FIN_WAIT_1


def test_close_in_syn_sent_sends_nothing() -> None:
    # RFC 9293 3.10.4 CLOSE, SYN-SENT: "Delete the TCB and return".
    s = Script()
    s.connect()
    s.expect(s.out(SYN, ISS, 0, WND, mss=1452))
    s.conn.close(s.now)
    assert s.state is State.CLOSED
    assert s.conn.get_timer() is None
    s.expect_nothing()


def test_data_after_peer_fin_is_ignored_in_close_wait() -> None:
    # RFC 9293 3.10.7.4 seventh, CLOSE-WAIT: "This should not occur since a FIN has
    # been received from the remote side. Ignore the segment text."
    s = Script()
    s.establish_active()
    s.feed(s.seg(FIN | ACK, R1, S1))
    s.expect(s.out(ACK, S1, R2, WND))
    s.feed(s.seg(ACK | PSH, R2, S1, WND, pattern(10)))
    assert s.state is State.CLOSE_WAIT
    assert s.conn.readable == 0
    assert s.conn.rcv_nxt == R2


def test_linger_zero_close_sends_rst() -> None:
    s = Script(linger=0)
    s.establish_active()
    s.conn.send(pattern(100), s.now)
    s.expect(s.data_out(0, pattern(100), flags=ACK | PSH))
    s.conn.close(s.now)
    # SND.NXT is past the unacknowledged data: <SEQ=ISS+101><CTL=RST>.
    s.expect(s.out(RST, seq(S1, 100), 0, 0))
    assert s.state is State.CLOSED
    assert s.conn.get_timer() is None
    s.advance(s.now + 100.0)
    s.expect_nothing()


@pytest.mark.parametrize("fin_acked", [False, True])
def test_data_after_close_gets_rst(fin_acked: bool) -> None:
    # RFC 1122 4.2.2.13: "... or if new data is received after CLOSE is called,
    # its TCP SHOULD send a RST to show that data was lost."
    s = Script()
    s.establish_active()
    s.conn.close(s.now)
    s.expect(s.out(FIN | ACK, S1, R1, WND))
    if fin_acked:
        s.feed(s.seg(ACK, R1, S2))
        assert s.state is State.FIN_WAIT_2
        s.expect_nothing()
    s.feed(s.data_in(0, pattern(100), ack_offset=2 if fin_acked else 1))
    s.expect(s.out(RST, S2, 0, 0))
    assert s.state is State.CLOSED
    assert s.conn.get_timer() is None
    s.expect_nothing()


def test_data_after_shutdown_is_not_reset() -> None:
    # shutdown() keeps the application: data is still wanted (contrast with close()).
    s = Script()
    s.establish_active()
    s.conn.shutdown(s.now)
    s.expect(s.out(FIN | ACK, S1, R1, WND))
    s.feed(s.seg(ACK, R1, S2))
    s.feed(s.data_in(0, pattern(100), ack_offset=2))
    s.expect_nothing()
    assert s.state is State.FIN_WAIT_2
    assert s.conn.readable == 100
