"""Core scripts: data transfer (RFC 9293 3.7, 3.8.6, 3.10.7.4 seventh; RFC 5681 4.2).

Our MSS is 1500 - 20 (IP) - 8 (UDP) - 20 (TCP) = 1452 unless the MTU says
otherwise; the peer's MSS is its option, or 536 without one (RFC 9293 3.7.1).

Receive window: rcvbuf is 8192 (no scaling).  The right edge RCV.NXT+RCV.WND
never moves back, and moves forward only when it can move by at least
min(RCV.BUFF/2, Eff.snd.MSS) = min(4096, 1452) = 1452 bytes, or to offer the
whole (empty) buffer (RFC 9293 3.8.6.2.2 receiver SWS avoidance); so with
``unread`` bytes queued the window is 8192 - unread.
"""

from __future__ import annotations

import pytest

from .scripting import ACK, FIN, IRS, ISS, PSH, Script, State, pattern, seq

S1 = seq(ISS, 1)
R1 = seq(IRS, 1)
WND = 8192
MSS = 1452


def r(n: int) -> int:
    """RCV.NXT after ``n`` bytes from the peer."""
    return seq(R1, n)


def snd(n: int) -> int:
    """Our sequence number after ``n`` bytes sent."""
    return seq(S1, n)


# ---------------------------------------------------------------------------
# Segmentation and the MSS


@pytest.mark.parametrize(
    "mtu, peer_mss, mss",
    [
        (1500, 1452, 1452),
        (1500, 1000, 1000),  # the peer's MSS rules when smaller
        (1500, None, 536),  # no option: 536 (RFC 9293 3.7.1, RFC 1122 4.2.2.6)
        (1500, 9000, 1452),  # never more than our own MTU-derived MSS
        (600, 1452, 600 - 48),  # a small MTU caps the segments we send
    ],
)
def test_segments_honour_mss(mtu: int, peer_mss: int | None, mss: int) -> None:
    s = Script(mtu=mtu, nodelay=True)
    s.establish_active(peer_mss=peer_mss)
    data = pattern(3 * mss + 10)
    assert s.conn.send(data, s.now) == len(data)
    # The last segment empties the queue and carries PSH (RFC 1122 4.2.2.2).
    s.expect(
        s.data_out(0, data[:mss]),
        s.data_out(mss, data[mss : 2 * mss]),
        s.data_out(2 * mss, data[2 * mss : 3 * mss]),
        s.data_out(3 * mss, data[3 * mss :], flags=ACK | PSH),
    )
    s.feed(s.seg(ACK, R1, snd(len(data))))
    assert s.conn.send_queued == 0
    s.expect_nothing()
    assert s.conn.get_timer() is None


def test_passive_side_honours_peer_mss_from_syn() -> None:
    s = Script(nodelay=True)
    s.establish_passive(peer_mss=700)
    data = pattern(1500)
    s.conn.send(data, s.now)
    s.expect(
        s.data_out(0, data[:700]),
        s.data_out(700, data[700:1400]),
        s.data_out(1400, data[1400:], flags=ACK | PSH),
    )


def test_cumulative_ack_removes_data() -> None:
    s = Script(nodelay=True)
    s.establish_active()
    data = pattern(4000)
    s.conn.send(data, s.now)
    s.expect(
        s.data_out(0, data[:MSS]),
        s.data_out(MSS, data[MSS : 2 * MSS]),
        s.data_out(2 * MSS, data[2 * MSS :], flags=ACK | PSH),
    )
    assert s.conn.send_queued == 4000
    s.feed(s.seg(ACK, R1, snd(MSS)))
    assert s.conn.snd_una == snd(MSS)
    assert s.conn.send_queued == 4000 - MSS
    s.feed(s.seg(ACK, R1, snd(2000)))  # an ACK in the middle of a segment
    assert s.conn.send_queued == 2000
    s.feed(s.seg(ACK, R1, snd(1000)))  # an old ACK changes nothing
    assert s.conn.snd_una == snd(2000)
    assert s.conn.send_queued == 2000
    s.feed(s.seg(ACK, R1, snd(4000)))
    assert s.conn.send_queued == 0
    assert s.conn.all_acked
    assert s.conn.get_timer() is None
    s.expect_nothing()


def test_sender_respects_peer_window_and_sender_sws() -> None:
    # Peer window 3000: two full segments fit (2904); the 96 bytes left in the
    # window are less than min(MSS, Max(SND.WND)/2 = 1500): RFC 9293 3.8.6.2.1
    # sender SWS avoidance waits.
    s = Script(nodelay=True)
    s.establish_active(peer_window=3000)
    data = pattern(5000)
    s.conn.send(data, s.now)
    s.expect(s.data_out(0, data[:MSS]), s.data_out(MSS, data[MSS : 2 * MSS]))
    # One segment acknowledged: 1548 usable, a full segment goes; the 96 bytes
    # left in the window still wait.
    s.feed(s.seg(ACK, R1, snd(MSS), 3000))
    s.expect(s.data_out(2 * MSS, data[2 * MSS : 3 * MSS]))
    # All acknowledged: the last 644 bytes are everything queued and fit the window.
    s.feed(s.seg(ACK, R1, snd(3 * MSS), 3000))
    s.expect(s.data_out(3 * MSS, data[3 * MSS :], flags=ACK | PSH))
    s.feed(s.seg(ACK, R1, snd(5000), 3000))
    s.expect_nothing()
    assert s.conn.get_timer() is None


# ---------------------------------------------------------------------------
# Nagle (RFC 896, RFC 9293 3.7.4)


def test_nagle_holds_second_small_segment_until_ack() -> None:
    s = Script()
    s.establish_active()
    s.conn.send(b"a" * 10, s.now)
    s.expect(s.data_out(0, b"a" * 10, flags=ACK | PSH))
    s.conn.send(b"b" * 10, s.now)
    s.conn.send(b"c" * 10, s.now)
    s.expect_nothing()  # unacknowledged data outstanding: buffer the small data
    s.feed(s.seg(ACK, R1, snd(10)), at=s.now + 0.125)
    s.expect(s.data_out(10, b"b" * 10 + b"c" * 10, flags=ACK | PSH))
    s.feed(s.seg(ACK, R1, snd(30)))
    s.expect_nothing()


def test_nodelay_sends_small_segments_at_once() -> None:
    s = Script(nodelay=True)
    s.establish_active()
    s.conn.send(b"a" * 10, s.now)
    s.expect(s.data_out(0, b"a" * 10, flags=ACK | PSH))
    s.conn.send(b"b" * 10, s.now)
    s.expect(s.data_out(10, b"b" * 10, flags=ACK | PSH))


def test_nagle_holds_partial_tail_behind_full_segments() -> None:
    # RFC 9293 3.7.4: with data unacknowledged, buffer "until the outstanding data
    # has been acknowledged or until the TCP endpoint can send a full-sized segment".
    s = Script()
    s.establish_active()
    data = pattern(3000)
    s.conn.send(data, s.now)
    s.expect(s.data_out(0, data[:MSS]), s.data_out(MSS, data[MSS : 2 * MSS]))
    s.feed(s.seg(ACK, R1, snd(MSS)))
    s.expect_nothing()  # still 1452 outstanding
    s.feed(s.seg(ACK, R1, snd(2 * MSS)))
    s.expect(s.data_out(2 * MSS, data[2 * MSS :], flags=ACK | PSH))


def test_nagle_sends_full_segment_while_small_one_outstanding() -> None:
    s = Script()
    s.establish_active()
    s.conn.send(b"x" * 10, s.now)
    s.expect(s.data_out(0, b"x" * 10, flags=ACK | PSH))
    data = pattern(MSS + 5)
    s.conn.send(data, s.now)
    s.expect(s.data_out(10, data[:MSS]))  # full-sized: allowed
    s.feed(s.seg(ACK, R1, snd(10 + MSS)))
    s.expect(s.data_out(10 + MSS, data[MSS:], flags=ACK | PSH))


# ---------------------------------------------------------------------------
# Reassembly (RFC 9293 3.10.7.4 seventh, RFC 5681 4.2)


def test_out_of_order_segments_3_2_1() -> None:
    s = Script()
    s.establish_active()
    data = pattern(300)
    # Each out-of-order segment is ACKed at once with ACK=RCV.NXT (a duplicate ACK).
    s.feed(s.data_in(200, data[200:]))
    s.expect(s.out(ACK, S1, R1, WND))
    s.feed(s.data_in(100, data[100:200]))
    s.expect(s.out(ACK, S1, R1, WND))
    assert s.conn.readable == 0
    # The hole fills: everything is delivered, and ACKed at once.
    s.feed(s.data_in(0, data[:100]))
    s.expect(s.out(ACK, S1, r(300), WND - 300))
    assert s.conn.read(1000, s.now) == data
    s.expect_nothing()
    assert s.conn.get_timer() is None


def test_out_of_order_segments_2_3_1_with_psh() -> None:
    s = Script()
    s.establish_active()
    data = pattern(300)
    s.feed(s.data_in(100, data[100:200]))
    s.expect(s.out(ACK, S1, R1, WND))
    s.feed(s.data_in(200, data[200:], flags=ACK | PSH))
    s.expect(s.out(ACK, S1, R1, WND))
    s.feed(s.data_in(0, data[:100]))
    s.expect(s.out(ACK, S1, r(300), WND - 300))
    assert s.conn.read(1000, s.now) == data


@pytest.mark.parametrize(
    "pieces",
    [
        [(100, 300), (50, 150), (0, 100)],  # overlapping holes
        [(200, 300), (100, 250), (0, 100)],
        [(150, 200), (100, 300), (0, 100)],  # a bigger piece covers a smaller one
        [(100, 300), (100, 200), (0, 120)],  # a smaller duplicate, then overlap at the front
        [(250, 300), (100, 200), (0, 260)],  # the last piece spans a hole
    ],
)
def test_overlapping_out_of_order_segments(pieces: list[tuple[int, int]]) -> None:
    s = Script()
    s.establish_active()
    data = pattern(300)
    *ooo, (start, end) = pieces
    for lo, hi in ooo:
        s.feed(s.data_in(lo, data[lo:hi]))
        s.expect(s.out(ACK, S1, R1, WND))
    assert s.conn.readable == 0
    s.feed(s.data_in(start, data[start:end]))
    s.expect(s.out(ACK, S1, r(300), WND - 300))
    assert s.conn.read(1000, s.now) == data
    s.expect_nothing()


def test_duplicate_segments() -> None:
    s = Script()
    s.establish_active()
    data = pattern(200)
    s.feed(s.data_in(100, data[100:]))
    s.expect(s.out(ACK, S1, R1, WND))
    s.feed(s.data_in(100, data[100:]))  # the same out-of-order segment again
    s.expect(s.out(ACK, S1, R1, WND))
    s.feed(s.data_in(0, data[:100]))
    s.expect(s.out(ACK, S1, r(200), WND - 200))
    # A duplicate of data already received: unacceptable, ACK (RFC 9293 3.10.7.4 first).
    s.feed(s.data_in(0, data[:100]))
    s.expect(s.out(ACK, S1, r(200), WND - 200))
    s.feed(s.data_in(100, data[100:]))
    s.expect(s.out(ACK, S1, r(200), WND - 200))
    assert s.conn.read(1000, s.now) == data
    s.expect_nothing()


def test_data_before_rcv_nxt_is_trimmed() -> None:
    s = Script()
    s.establish_active()
    data = pattern(200)
    t = s.now
    s.feed(s.data_in(0, data[:100]))
    s.expect_nothing()  # delayed ACK
    # Starts 50 bytes before RCV.NXT: the old part is trimmed, the rest delivered.
    s.feed(s.data_in(50, data[50:]), at=t + 0.01)
    s.expect_nothing()
    s.advance(t + s.options.delack)  # the delay counts from the first unacked segment
    s.expect(s.out(ACK, S1, r(200), WND - 200))
    assert s.conn.read(1000, s.now) == data
    assert s.conn.bytes_received == 200


def test_ooo_segment_overlapping_rcv_nxt_and_stored_piece() -> None:
    s = Script()
    s.establish_active()
    data = pattern(400)
    s.feed(s.data_in(0, data[:100]))
    s.expect_nothing()
    s.feed(s.data_in(300, data[300:]))
    s.expect(s.out(ACK, S1, r(100), WND - 100))  # the out-of-order ACK also covers the 100
    s.feed(s.data_in(50, data[50:350]))  # old head, fills the hole, overlaps the stored piece
    s.expect(s.out(ACK, S1, r(400), WND - 400))
    assert s.conn.read(1000, s.now) == data


def test_data_beyond_window_is_trimmed_with_its_fin() -> None:
    # rcvbuf 4096: the window is 4096.  The part beyond it, FIN included, is cut
    # (RFC 9293 3.10.7.4: "trimmed to only the portion within the window").
    s = Script(rcvbuf=4096)
    s.establish_active()
    data = pattern(4200)
    s.feed(s.data_in(0, data, flags=ACK | FIN | PSH))
    # 4096 bytes >= two full segments: ACK at once (RFC 5681 4.2); window now zero.
    s.expect(s.out(ACK, S1, r(4096), 0))
    assert s.state is State.ESTABLISHED
    assert not s.conn.fin_received
    assert s.conn.read(10000, s.now) == data[:4096]
    # Reading everything reopens the window: a window update (4096 >= min(2048, 1452)).
    s.expect(s.out(ACK, S1, r(4096), 4096))
    # The peer sends the rest and its FIN again.
    s.feed(s.data_in(4096, data[4096:], flags=ACK | FIN | PSH))
    assert s.state is State.CLOSE_WAIT
    # Right edge stays at IRS+1+8192; RCV.NXT = IRS+1+4200+1.
    s.expect(s.out(ACK, S1, r(4201), 8192 - 4201))
    assert s.conn.read(10000, s.now) == data[4096:]
    assert s.conn.at_eof


def test_out_of_order_segment_beyond_window_is_trimmed() -> None:
    s = Script(rcvbuf=4096)
    s.establish_active()
    data = pattern(4200)
    s.feed(s.data_in(100, data[100:]))
    s.expect(s.out(ACK, S1, R1, 4096))
    s.feed(s.data_in(0, data[:100]))
    s.expect(s.out(ACK, S1, r(4096), 0))
    assert s.conn.read(10000, s.now) == data[:4096]


# ---------------------------------------------------------------------------
# Receive window


def test_window_shrinks_with_unread_data_and_reopens_after_read() -> None:
    s = Script()
    s.establish_active()
    data = pattern(4 * MSS)
    for i in range(4):
        s.feed(s.data_in(i * MSS, data[i * MSS : (i + 1) * MSS]))
        if i % 2 == 0:
            s.expect_nothing()
        else:  # every second full-sized segment is ACKed at once
            n = (i + 1) * MSS
            s.expect(s.out(ACK, S1, r(n), WND - n))
    # 5808 unread, window 2384.  Reading 100 bytes frees too little to move the
    # right edge (100 < min(4096, 1452)): no window update.
    assert s.conn.read(100, s.now) == data[:100]
    s.expect_nothing()
    # Reading the rest frees 5808 bytes: the window reopens to the whole buffer and
    # the update is announced at once.
    assert s.conn.read(10000, s.now) == data[100:]
    s.expect(s.out(ACK, S1, r(4 * MSS), WND))
    s.expect_nothing()


def test_window_closes_to_zero_and_reopens() -> None:
    s = Script()
    s.establish_active()
    data = pattern(WND)
    sizes = [MSS] * 5 + [WND - 5 * MSS]  # 5 x 1452 + 932 = 8192
    off = 0
    for i, n in enumerate(sizes):
        s.feed(s.data_in(off, data[off : off + n]))
        off += n
        if i in (1, 3):
            s.expect(s.out(ACK, S1, r(off), WND - off))
        else:
            s.expect_nothing()
    # 1452 + 932 = 2384 bytes unacknowledged, less than two full segments: delayed.
    s.advance(s.now + s.options.delack)
    s.expect(s.out(ACK, S1, r(WND), 0))
    # Window zero: new data is not acceptable and is answered with an ACK.
    s.feed(s.data_in(WND, b"z"))
    s.expect(s.out(ACK, S1, r(WND), 0))
    # A zero-window probe <SEQ=RCV.NXT-1> is answered too.
    s.feed(s.data_in(WND - 1, b""))
    s.expect(s.out(ACK, S1, r(WND), 0))
    # An ACK exactly at RCV.NXT is acceptable (RFC 9293: "special allowance ... to
    # accept valid ACKs"): nothing to answer.
    s.feed(s.data_in(WND, b""))
    s.expect_nothing()
    assert s.conn.readable == WND
    assert s.conn.read(WND, s.now) == data
    s.expect(s.out(ACK, S1, r(WND), WND))


def test_zero_window_accepts_ack_and_drops_data() -> None:
    # RFC 9293 3.10.7.4: with RCV.WND = 0 "special allowance should be made to
    # accept valid ACKs": the ACK field is processed even though the data is not.
    s = Script(nodelay=True)
    s.establish_active()
    s.feed(s.data_in(0, pattern(WND)))
    s.expect(s.out(ACK, S1, r(WND), 0))
    s.conn.send(b"hello", s.now)
    s.expect(s.out(ACK | PSH, S1, r(WND), 0, b"hello"))
    s.feed(s.data_in(WND, b"more", ack_offset=6))
    s.expect(s.out(ACK, snd(5), r(WND), 0))
    assert s.conn.snd_una == snd(5)
    assert s.conn.send_queued == 0
    assert s.conn.readable == WND


# ---------------------------------------------------------------------------
# The peer's zero window and the persist timer (RFC 9293 3.8.6.1)


def test_peer_zero_window_holds_data_and_persist_probes() -> None:
    s = Script(rto_min=1.0)  # RFC 6298 2.4's one-second minimum: RTO = 1 s
    s.establish_active(peer_window=0)
    t = s.now
    s.conn.send(pattern(100), t)
    s.expect_nothing()  # the window is zero: nothing goes
    assert s.conn.send_queued == 100
    # Probes <SEQ=SND.UNA-1><ACK=RCV.NXT><CTL=ACK>: first after one RTO, then
    # backing off exponentially (1, 2, 4 s).
    probe = s.out(ACK, ISS, R1, WND)
    times = []
    for _ in range(3):
        times.append(s.run_timer() - t)
        s.expect(probe)
        s.feed(s.seg(ACK, R1, S1, 0))  # answered, window still zero
        s.expect_nothing()
    assert times == [1.0, 3.0, 7.0]
    assert s.conn.get_timer() == t + 15.0
    # The window reopens: the data goes at once and the persist timer stops.
    s.feed(s.seg(ACK, R1, S1, WND), at=t + 8.0)
    s.expect(s.data_out(0, pattern(100), flags=ACK | PSH))
    s.feed(s.seg(ACK, R1, snd(100), WND))
    s.expect_nothing()
    assert s.conn.get_timer() is None


def test_window_closing_mid_stream_holds_data() -> None:
    s = Script(rto_min=1.0, nodelay=True)
    s.establish_active()
    s.conn.send(pattern(100), s.now)
    s.expect(s.data_out(0, pattern(100), flags=ACK | PSH))
    s.feed(s.seg(ACK, R1, snd(100), 0))  # acknowledged, but the window closes
    t = s.now
    s.conn.send(pattern(50, 100), t)
    s.expect_nothing()
    assert s.run_timer() == t + 1.0
    s.expect(s.out(ACK, snd(99), R1, WND))  # <SEQ=SND.UNA-1>
    s.feed(s.seg(ACK, R1, snd(100), 0))
    s.expect_nothing()
    assert s.run_timer() == t + 3.0
    s.expect(s.out(ACK, snd(99), R1, WND))
    s.feed(s.seg(ACK, R1, snd(100), 200))
    s.expect(s.data_out(100, pattern(50, 100), flags=ACK | PSH))


def test_answered_zero_window_probes_never_time_out() -> None:
    # RFC 9293 3.8.6.1: "As long as the receiving TCP peer continues to send
    # acknowledgments in response to the probe segments, the sending TCP peer MUST
    # allow the connection to stay open (MUST-37)."
    s = Script(rto_min=1.0, rto_max=4.0, retries2=2)
    s.establish_active(peer_window=0)
    t = s.now
    s.conn.send(pattern(100), t)
    times = []
    for _ in range(6):
        times.append(s.run_timer() - t)
        assert s.state is State.ESTABLISHED
        s.expect(s.out(ACK, ISS, R1, WND))
        s.feed(s.seg(ACK, R1, S1, 0))
    assert times == [1.0, 3.0, 7.0, 11.0, 15.0, 19.0]  # backoff capped by rto_max
    assert s.state is State.ESTABLISHED
    assert s.conn.error is None


# ---------------------------------------------------------------------------
# Delayed ACK (RFC 9293 3.8.6.3, RFC 5681 4.2)


def test_single_segment_acked_after_delack() -> None:
    s = Script()
    s.establish_active()
    t = s.now
    s.feed(s.data_in(0, pattern(100)))
    s.expect_nothing()
    assert s.conn.get_timer() == t + s.options.delack
    s.advance(t + s.options.delack - 1e-6)
    s.expect_nothing()
    s.advance(t + s.options.delack)
    s.expect(s.out(ACK, S1, r(100), WND - 100))
    assert s.conn.get_timer() is None
    s.advance(t + 10.0)
    s.expect_nothing()


def test_delack_is_exactly_options_delack() -> None:
    s = Script(delack=0.125)
    s.establish_active()
    t = s.now
    s.feed(s.data_in(0, pattern(100)))
    s.expect_nothing()
    assert s.conn.get_timer() == t + 0.125
    s.advance(t + 0.124)
    s.expect_nothing()
    s.advance(t + 0.125)
    s.expect(s.out(ACK, S1, r(100), WND - 100))


def test_two_full_segments_acked_at_once() -> None:
    s = Script()
    s.establish_active()
    s.feed(s.data_in(0, pattern(MSS)))
    s.expect_nothing()
    s.feed(s.data_in(MSS, pattern(MSS, MSS)))
    s.expect(s.out(ACK, S1, r(2 * MSS), WND - 2 * MSS))
    assert s.conn.get_timer() is None  # no delayed ACK left pending


def test_delayed_ack_piggybacks_on_data() -> None:
    s = Script()
    s.establish_active()
    t = s.now
    s.feed(s.data_in(0, pattern(100)))
    s.expect_nothing()
    s.conn.send(b"reply", t + 0.01)
    s.expect(s.out(ACK | PSH, S1, r(100), WND - 100, b"reply"))
    s.advance(t + s.options.delack)
    s.expect_nothing()  # the ACK already went with the data


# ---------------------------------------------------------------------------
# More reassembly and ACK processing


def test_out_of_order_fin_is_processed_when_the_hole_fills() -> None:
    # RFC 9293 3.10.7.4 eighth: the FIN is processed once everything before it is in.
    s = Script()
    s.establish_active()
    data = pattern(200)
    s.feed(s.data_in(100, data[100:], flags=ACK | FIN))
    s.expect(s.out(ACK, S1, R1, WND))
    assert s.state is State.ESTABLISHED
    assert not s.conn.fin_received
    s.feed(s.data_in(0, data[:100]))
    # RCV.NXT = IRS+1+200+1; the right edge stays at IRS+1+8192.
    s.expect(s.out(ACK, S1, r(201), WND - 201))
    assert s.state is State.CLOSE_WAIT
    assert s.conn.read(1000, s.now) == data
    assert s.conn.at_eof


def test_old_ack_does_not_update_send_window() -> None:
    # RFC 9293 3.10.7.4 fifth, ESTABLISHED: "If the ACK is a duplicate (SEG.ACK <
    # SND.UNA), it can be ignored. ... If SND.UNA =< SEG.ACK =< SND.NXT, the send
    # window should be updated."  Here a segment with a newer SEG.SEQ but an old
    # SEG.ACK (acceptable under RFC 5961 5.2) carries window 0: it must not close
    # the window.
    s = Script()
    s.establish_active()
    s.conn.send(pattern(100), s.now)
    s.expect(s.data_out(0, pattern(100), flags=ACK | PSH))
    s.feed(s.data_in(0, b"a" * 10, ack_offset=101))  # SND.UNA = ISS+101, SND.WL1 = IRS+1
    s.feed(s.data_in(10, b"b" * 10, ack_offset=1, window=0))  # old ACK, window 0
    s.expect_nothing()  # (the ACK of the 20 bytes is delayed)
    assert s.conn.snd_wnd == WND
    s.conn.send(pattern(50), s.now)
    s.expect(s.out(ACK | PSH, snd(100), r(20), WND - 20, pattern(50)))
