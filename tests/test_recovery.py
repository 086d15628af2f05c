"""Core scripts: loss recovery and the options that serve it.

RFC 6298 (RTO, Karn), RFC 5681 / RFC 6582 (fast retransmit, NewReno partial
ACKs), RFC 2018 / RFC 6675 (SACK blocks, scoreboard recovery), RFC 9293
3.8.6 (persist, delayed ACK, Nagle), RFC 7323 (timestamps, PAWS, window
scaling) and RFC 9438 (CUBIC), each checked segment by segment with the
:class:`~tests.scripting.Script` harness in virtual time.

The harness's defaults turn timestamps, SACK and window scaling off and use
NewReno; the scripts that need an option turn it on and run their own
handshake, so every option is checked on the SYNs too.  Our timestamp clock
is ``int(now * 1000)`` (the script connections have no offset) and virtual
time starts at 1000 s, so our first TSval is 1000000.

RTT values are powers of two (or sums of them) so that every RFC 6298
computation is exact in binary floating point.
"""

from __future__ import annotations

import pytest

from utcp._core.codec import Segment
from utcp._core.congestion import Cubic

from .scripting import ACK, FIN, IRS, ISS, PSH, SYN, Script, State, pattern, seq

S1 = seq(ISS, 1)
R1 = seq(IRS, 1)
WND = 8192
MSS = 1452
BIG = 65535  # a peer window that never limits these scripts


def snd(n: int) -> int:
    """Our sequence number after ``n`` bytes sent."""
    return seq(S1, n)


def r(n: int) -> int:
    """The peer's sequence number after ``n`` bytes received."""
    return seq(R1, n)


def ms(t: float) -> int:
    """Our TSval at virtual time ``t`` (milliseconds, no offset)."""
    return int(t * 1000)


def segments(s: Script, n: int, *, start: int = 0, total: int | None = None) -> list[Segment]:
    """The ``n`` full data segments we send from stream offset ``start`` (ACK R1)."""
    data = pattern(total if total is not None else start + n * MSS)
    out = []
    for i in range(n):
        lo = start + i * MSS
        chunk = data[lo : lo + MSS]
        last = lo + MSS >= len(data)
        out.append(s.data_out(lo, chunk, flags=ACK | PSH if last else ACK, window=WND))
    return out


def offsets(segs: list[Segment]) -> list[int]:
    """Stream offsets of data segments we emitted (for readable assertions)."""
    return [seq(sg.seq, -S1) for sg in segs if sg.payload]


def establish_with(
    s: Script,
    *,
    rtt: float = 0.0,
    peer_window: int = WND,
    peer_ts: int | None = None,
    peer_sack: bool = False,
    peer_wscale: int | None = None,
) -> None:
    """Active open answered by a SYN-ACK carrying the given options, ``rtt`` later."""
    t0 = s.now
    s.connect()
    [syn] = s.emitted()
    assert syn.flags == SYN
    ts = (peer_ts, ms(t0)) if peer_ts is not None else None
    s.feed(
        s.seg(
            SYN | ACK,
            IRS,
            S1,
            peer_window,
            mss=MSS,
            timestamps=ts,
            sack_permitted=peer_sack,
            wscale=peer_wscale,
        ),
        at=t0 + rtt,
    )
    [ack] = s.emitted()
    assert ack.flags == ACK and ack.ack == R1
    assert s.state is State.ESTABLISHED


# ---------------------------------------------------------------------------
# RFC 6298: RTO computation, backoff, Karn


def test_rto_after_samples_and_backoff() -> None:
    s = Script(nodelay=True)
    s.establish_after(0.5)
    # 2.2: first sample R: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4 * RTTVAR = 1.5
    assert (s.conn.rtt.srtt, s.conn.rtt.rttvar, s.conn.rtt.rto) == (0.5, 0.25, 1.5)
    t = s.now
    s.conn.send(pattern(100), t)
    s.expect(s.data_out(0, pattern(100), flags=ACK | PSH))
    assert s.conn.get_timer() == t + 1.5  # 5.1
    # 2.3: R' = 0.25: RTTVAR = 3/4 * 0.25 + 1/4 * |0.5 - 0.25| = 0.25,
    # SRTT = 7/8 * 0.5 + 1/8 * 0.25 = 0.46875, RTO = 0.46875 + 1.0 = 1.46875
    s.feed(s.seg(ACK, R1, snd(100)), at=t + 0.25)
    assert (s.conn.rtt.srtt, s.conn.rtt.rttvar, s.conn.rtt.rto) == (0.46875, 0.25, 1.46875)
    assert s.conn.get_timer() is None  # 5.2: all acknowledged
    # 5.5: each expiry doubles the timeout; 5.6: the timer restarts with it.
    t2 = s.now
    s.conn.send(b"x", t2)
    seg = s.data_out(100, b"x", flags=ACK | PSH)
    s.expect(seg)
    fired = []
    for k in range(4):
        fired.append(s.run_timer() - t2)
        s.expect(seg)
        assert s.conn.info()["backoff"] == k + 1
        assert s.conn.info()["rto"] == 1.46875 * 2 ** (k + 1)
    assert fired == [1.46875, 1.46875 * 3, 1.46875 * 7, 1.46875 * 15]


def test_rto_is_bounded_by_rto_min_and_rto_max() -> None:
    s = Script(rto_min=0.5, rto_max=2.0)
    s.establish_after(0.0625)  # 0.0625 + 4 * 0.03125 = 0.1875 < rto_min
    assert s.conn.rtt.rto == 0.5
    s.conn.send(b"x", s.now)
    t = s.now
    seg = s.data_out(0, b"x", flags=ACK | PSH)
    s.expect(seg)
    times = []
    for _ in range(4):
        times.append(s.run_timer() - t)
        s.expect(seg)
    assert times == [0.5, 1.5, 3.5, 5.5]  # 0.5, 1, 2, then capped at 2


def test_karn_no_sample_from_an_ambiguous_ack() -> None:
    s = Script(nodelay=True)
    s.establish_after(0.25)  # SRTT 0.25, RTTVAR 0.125, RTO 0.75
    t = s.now
    s.conn.send(pattern(10), t)
    seg = s.data_out(0, pattern(10), flags=ACK | PSH)
    s.expect(seg)
    assert s.run_timer() == t + 0.75
    s.expect(seg)
    # Acknowledged 0.0625 s after the retransmission (or 0.8125 s after the first
    # copy): Karn's algorithm takes no sample and keeps the backed-off RTO.
    s.feed(s.seg(ACK, R1, snd(10)), at=t + 0.8125)
    assert s.conn.rtt.samples == 1
    assert (s.conn.rtt.srtt, s.conn.rtt.rttvar) == (0.25, 0.125)
    t2 = s.now
    s.conn.send(b"y", t2)
    s.expect(s.data_out(10, b"y", flags=ACK | PSH))
    assert s.conn.get_timer() == t2 + 1.5  # still backed off (2 x 0.75)
    # A segment sent once gives a valid sample, which collapses the backoff.
    s.feed(s.seg(ACK, R1, snd(11)), at=t2 + 0.25)
    assert s.conn.rtt.samples == 2
    assert s.conn.info()["backoff"] == 0


# ---------------------------------------------------------------------------
# RFC 5681 fast retransmit, RFC 6582 NewReno


def test_fast_retransmit_on_the_third_duplicate_ack_only() -> None:
    s = Script(nodelay=True)
    s.establish_active(peer_window=BIG)
    data = pattern(6 * MSS)
    s.conn.send(data, s.now)
    segs = segments(s, 6)
    s.expect(*segs)
    dup = s.seg(ACK, R1, snd(MSS), BIG)
    s.feed(dup)  # segment 0 arrived: new data acknowledged
    s.expect_nothing()
    s.feed(dup)
    s.expect_nothing()
    s.feed(dup)
    s.expect_nothing()
    assert s.conn.info()["fast_retransmits"] == 0
    s.feed(dup)  # the third duplicate
    s.expect(segs[1])
    info = s.conn.info()
    assert info["fast_retransmits"] == 1
    # RFC 5681 3.2: ssthresh = FlightSize / 2, cwnd = ssthresh + 3 * SMSS
    assert info["ssthresh"] == 5 * MSS // 2
    assert info["cwnd"] == 5 * MSS // 2 + 3 * MSS
    s.feed(dup)  # a fourth: inflate only
    s.expect_nothing()
    assert s.conn.info()["cwnd"] == 5 * MSS // 2 + 4 * MSS


def test_newreno_partial_ack_retransmits_next_hole_and_full_ack_ends_recovery() -> None:
    # Segments 1 and 3 of 0..5 are lost.
    s = Script(nodelay=True)
    s.establish_active(peer_window=BIG)
    s.conn.send(pattern(6 * MSS), s.now)
    segs = segments(s, 6)
    s.expect(*segs)
    s.feed(s.seg(ACK, R1, snd(MSS), BIG))
    dup = s.seg(ACK, R1, snd(MSS), BIG)
    for _ in range(3):  # segments 2, 4 and 5 arrive
        s.feed(dup)
    s.expect(segs[1])
    ssthresh = 5 * MSS // 2
    assert s.conn.cc.ssthresh == ssthresh
    # The retransmitted segment 1 fills the first hole: the ACK covers up to the
    # second hole (a partial ACK, below recover = 6 * MSS).  RFC 6582 3.2 step 3:
    # retransmit the first unacknowledged segment at once, deflate cwnd by the
    # amount acknowledged and add back one SMSS; stay in recovery.
    cwnd = s.conn.cc.cwnd
    s.feed(s.seg(ACK, R1, snd(3 * MSS), BIG))
    s.expect(segs[3])
    assert s.conn.cc.cwnd == cwnd - 2 * MSS + MSS
    assert s.conn._in_recovery
    assert s.conn.info()["fast_retransmits"] == 1  # no new recovery episode
    # The full acknowledgment (of everything up to recover) ends recovery with
    # cwnd = ssthresh (RFC 6582 3.2 step 3, "full acknowledgment").
    s.feed(s.seg(ACK, R1, snd(6 * MSS), BIG))
    s.expect_nothing()
    assert not s.conn._in_recovery
    assert s.conn.cc.cwnd == ssthresh
    assert s.conn.get_timer() is None


def test_newreno_duplicate_acks_below_recover_do_not_start_a_new_recovery() -> None:
    # RFC 6582 3.2 step 2: after an RTO, duplicate ACKs for data sent before
    # the timeout must not trigger another fast retransmit.
    s = Script(nodelay=True, rto_min=1.0)
    s.establish_active(peer_window=BIG)
    s.conn.send(pattern(6 * MSS), s.now)
    segs = segments(s, 6)
    s.expect(*segs)
    s.run_timer()
    s.expect(segs[0])  # RTO: first segment, cwnd = 1 SMSS
    dup = s.seg(ACK, R1, S1, BIG)
    for _ in range(4):
        s.feed(dup)
    s.expect_nothing()
    assert s.conn.info()["fast_retransmits"] == 0


# ---------------------------------------------------------------------------
# SACK (RFC 2018 blocks, RFC 6675 recovery)


def test_receiver_sack_blocks_most_recent_first_at_most_4() -> None:
    s = Script(sack=True, rcvbuf=BIG)
    establish_with(s, peer_sack=True)
    piece = b"z" * 100
    wnd = BIG

    def arrive(off: int) -> tuple[tuple[int, int], ...]:
        s.feed(s.data_in(off, piece))
        [a] = s.emitted()  # out-of-order data is acknowledged at once
        assert (a.seq, a.ack, a.flags, a.window) == (S1, R1, ACK, wnd)
        return a.sack_blocks

    def blk(lo: int, hi: int) -> tuple[int, int]:
        return (r(lo), r(hi))

    assert arrive(1000) == (blk(1000, 1100),)
    assert arrive(3000) == (blk(3000, 3100), blk(1000, 1100))
    # The newest first, then the others (highest first).
    assert arrive(2000) == (blk(2000, 2100), blk(3000, 3100), blk(1000, 1100))
    # Contiguous data extends its block, which is then the newest.
    assert arrive(1100) == (blk(1000, 1200), blk(3000, 3100), blk(2000, 2100))
    assert arrive(5000) == (blk(5000, 5100), blk(3000, 3100), blk(2000, 2100), blk(1000, 1200))
    # Five blocks exist now; without timestamps at most 4 fit (RFC 2018 3).
    blocks = arrive(7000)
    assert len(blocks) == 4
    assert blocks[0] == blk(7000, 7100)
    assert set(blocks[1:]) <= {blk(1000, 1200), blk(2000, 2100), blk(3000, 3100), blk(5000, 5100)}
    # Filling the first hole: the cumulative ACK moves and the covered block goes.
    s.feed(s.data_in(0, b"a" * 1000))
    [a] = s.emitted()
    assert a.ack == r(1200)
    assert blk(1000, 1200) not in a.sack_blocks
    assert a.sack_blocks[0] in {blk(2000, 2100), blk(7000, 7100)}


def test_receiver_sack_blocks_at_most_3_with_timestamps() -> None:
    s = Script(sack=True, timestamps=True, rcvbuf=BIG)
    establish_with(s, peer_sack=True, peer_ts=500)
    for i, off in enumerate((1000, 3000, 5000, 7000)):
        seg = s.data_in(off, b"z" * 100)
        seg.timestamps = (600 + i, ms(s.now))
        s.feed(seg)
        [a] = s.emitted()
        assert len(a.sack_blocks) == min(i + 1, 3)
        assert a.sack_blocks[0] == (r(off), r(off + 100))
        assert a.timestamps is not None and a.timestamps[1] == 500  # TS.Recent: last in-order


def test_sack_recovery_retransmits_only_the_holes() -> None:
    # Segments 0..7 sent; 1 and 4 are lost, the others arrive and are SACKed.
    s = Script(sack=True, nodelay=True)
    establish_with(s, peer_window=BIG, peer_sack=True)
    s.conn.send(pattern(8 * MSS), s.now)
    segs = segments(s, 8)
    s.expect(*segs)
    sent: list[Segment] = []

    def ack(upto: int, *blocks: tuple[int, int]) -> None:
        sack = tuple((snd(lo * MSS), snd(hi * MSS)) for lo, hi in blocks)
        s.feed(s.seg(ACK, R1, snd(upto * MSS), BIG, sack_blocks=sack))
        sent.extend(s.emitted())

    ack(1)
    ack(1, (2, 3))
    ack(1, (2, 4))
    ack(1, (5, 6), (2, 4))  # third duplicate ACK: segment 1 is lost (RFC 6675 IsLost)
    ack(1, (5, 7), (2, 4))
    ack(1, (5, 8), (2, 4))  # 3 segments SACKed above 4: segment 4 is lost too
    assert s.conn._in_recovery
    ack(4, (5, 8))  # the retransmitted 1 arrived
    ack(8)  # the retransmitted 4 arrived: recovery ends
    assert not s.conn._in_recovery
    # Exactly the holes went out again, once each, and nothing SACKed did.
    assert sent == [segs[1], segs[4]]
    assert s.conn.info()["bytes_retransmitted"] == 2 * MSS
    assert s.conn.info()["fast_retransmits"] == 1
    assert s.conn.get_timer() is None


def test_sack_recovery_retransmits_first_hole_on_entry() -> None:
    s = Script(sack=True, nodelay=True)
    establish_with(s, peer_window=BIG, peer_sack=True)
    s.conn.send(pattern(8 * MSS), s.now)
    segs = segments(s, 8)
    s.expect(*segs)
    for blocks in ((), ((2, 3),), ((2, 4),)):
        sack = tuple((snd(lo * MSS), snd(hi * MSS)) for lo, hi in blocks)
        s.feed(s.seg(ACK, R1, snd(MSS), BIG, sack_blocks=sack))
        s.expect_nothing()
    # The third duplicate ACK: recovery starts and segment 1 goes out now.
    sack = ((snd(5 * MSS), snd(6 * MSS)), (snd(2 * MSS), snd(4 * MSS)))
    s.feed(s.seg(ACK, R1, snd(MSS), BIG, sack_blocks=sack))
    assert s.conn._in_recovery
    s.expect(segs[1])


def test_lost_retransmission_is_sent_again_without_rto() -> None:
    # 14 segments queued; the initial window (10 segments) sends 0..9. Segment 0
    # is lost; recovery resends it. As SACKs free the pipe, new segments 10..13
    # go out. When segment 11, sent after the resend, is SACKed while 0 is still
    # missing, the resend of 0 was lost too: 0 goes out again at once, no RTO.
    s = Script(sack=True, nodelay=True)
    establish_with(s, peer_window=BIG, peer_sack=True)
    s.conn.send(pattern(14 * MSS), s.now)
    everything = segments(s, 14, total=14 * MSS)
    s.expect(*everything[:10])
    sent: list[Segment] = []

    def ack(*blocks: tuple[int, int]) -> None:
        sack = tuple((snd(lo * MSS), snd(hi * MSS)) for lo, hi in blocks)
        s.feed(s.seg(ACK, R1, S1, BIG, sack_blocks=sack))
        sent.extend(s.emitted())

    ack((1, 2))
    ack((1, 3))
    ack((1, 4))  # three SACKed segments above 0: recovery, 0 is resent
    assert offsets(sent) == [0] and s.conn._in_recovery
    sent.clear()
    ack((1, 10))  # the pipe drains: new data goes out (cwnd 5 - pipe 1)
    assert offsets(sent) == [10 * MSS, 11 * MSS, 12 * MSS, 13 * MSS]
    sent.clear()
    ack((1, 12))  # 10 and 11, sent after the resend of 0, arrived; 0 did not
    assert offsets(sent) == [0]
    assert s.conn.info()["lost_retransmits"] == 1
    sent.clear()
    ack((1, 14))
    assert sent == []  # no third copy: the second resend is still in its round trip
    s.feed(s.seg(ACK, R1, snd(14 * MSS), BIG))
    assert not s.conn._in_recovery
    assert s.conn.get_timer() is None


# ---------------------------------------------------------------------------
# Persist, delayed ACK, Nagle (RFC 9293 3.8.6)


def test_persist_probes_zero_window_and_window_reopening() -> None:
    s = Script(rto_min=1.0)
    s.establish_active(peer_window=0)
    t = s.now
    s.conn.send(pattern(100), t)
    s.expect_nothing()  # the window is zero: nothing may be sent
    probe = s.out(ACK, seq(S1, -1), R1, WND)  # <SEQ=SND.UNA-1><ACK=RCV.NXT><CTL=ACK>
    assert s.run_timer() == t + 1.0
    s.expect(probe)
    s.feed(s.seg(ACK, R1, S1, 0))  # answered, still zero
    s.expect_nothing()
    assert s.run_timer() == t + 3.0  # backs off: 1, 2, 4 s
    s.expect(probe)
    assert s.run_timer() == t + 7.0
    s.expect(probe)
    assert s.state is State.ESTABLISHED
    # The window reopens: the data goes at once and the persist timer stops.
    s.feed(s.seg(ACK, R1, S1, WND), at=t + 7.5)
    s.expect(s.data_out(0, pattern(100), flags=ACK | PSH))
    assert s.conn._persist_deadline is None
    assert s.conn.get_timer() == t + 7.5 + s.conn.rtt.rto  # the retransmission timer


def test_delayed_ack_timing() -> None:
    s = Script(delack=0.04)
    s.establish_active()
    t = s.now
    s.feed(s.data_in(0, b"a" * 100, flags=ACK | PSH))
    s.expect_nothing()
    assert s.conn.get_timer() == t + 0.04
    s.advance(t + 0.039)
    s.expect_nothing()
    assert s.run_timer() == t + 0.04
    s.expect(s.out(ACK, S1, r(100), WND - 100))
    # Two full-sized segments are acknowledged at once (RFC 5681 4.2).
    s.feed(s.data_in(100, b"b" * MSS))
    s.expect_nothing()
    s.feed(s.data_in(100 + MSS, b"c" * MSS))
    s.expect(s.out(ACK, S1, r(100 + 2 * MSS), WND - 100 - 2 * MSS))
    assert s.conn.get_timer() is None


def test_nagle_holds_small_segments_until_ack() -> None:
    s = Script()
    s.establish_active()
    s.conn.send(b"a" * 10, s.now)
    s.expect(s.data_out(0, b"a" * 10, flags=ACK | PSH))
    s.conn.send(b"b" * 10, s.now)
    s.conn.send(b"c" * 10, s.now)
    s.expect_nothing()  # one small segment in flight at a time (RFC 896)
    s.feed(s.seg(ACK, R1, snd(10)))
    s.expect(s.data_out(10, b"b" * 10 + b"c" * 10, flags=ACK | PSH))


def test_nodelay_sends_small_segments_at_once() -> None:
    s = Script(nodelay=True)
    s.establish_active()
    for i, ch in enumerate(b"abc"):
        s.conn.send(bytes([ch]) * 10, s.now)
        s.expect(s.data_out(10 * i, bytes([ch]) * 10, flags=ACK | PSH))


# ---------------------------------------------------------------------------
# RFC 7323 timestamps, PAWS, window scaling


def test_timestamps_negotiated_on_syn_and_echoed() -> None:
    s = Script(timestamps=True)
    t0 = s.now
    s.connect()
    s.expect(s.out(SYN, ISS, 0, WND, mss=MSS, timestamps=(ms(t0), 0)))
    s.feed(s.seg(SYN | ACK, IRS, S1, WND, mss=MSS, timestamps=(777, ms(t0))), at=t0 + 0.25)
    # Our ACK echoes the peer's TSval (TSecr = 777) and carries our clock.
    s.expect(s.out(ACK, S1, R1, WND, timestamps=(ms(t0 + 0.25), 777)))
    info = s.conn.info()
    assert info["timestamps"] is True
    assert info["snd_mss"] == MSS - 12  # room for the 12-byte option on every segment
    # In-order data moves TS.Recent; our (delayed) ACK echoes its TSval.
    seg = s.data_in(0, b"d" * 100, flags=ACK | PSH)
    seg.timestamps = (800, ms(t0 + 0.25))
    s.feed(seg, at=t0 + 0.5)
    t = s.run_timer()
    s.expect(s.out(ACK, S1, r(100), WND - 100, timestamps=(ms(t), 800)))


def test_timestamps_not_used_unless_both_syns_carry_them() -> None:
    s = Script(timestamps=True)
    s.connect()
    s.emitted()
    s.feed(s.seg(SYN | ACK, IRS, S1, WND, mss=MSS))
    s.expect(s.out(ACK, S1, R1, WND))  # no option on anything that follows
    assert s.conn.info()["timestamps"] is False
    assert s.conn.info()["snd_mss"] == MSS


def test_rtt_measured_from_tsecr_of_a_retransmitted_segment() -> None:
    s = Script(timestamps=True, nodelay=True)
    establish_with(s, rtt=0.25, peer_ts=100)  # SRTT 0.25, RTTVAR 0.125, RTO 0.75
    assert s.conn.rtt.samples == 1
    t = s.now
    s.conn.send(b"x" * 10, t)
    [first] = s.emitted()
    assert first.timestamps == (ms(t), 100)
    assert s.run_timer() == t + 0.75
    [again] = s.emitted()
    assert again.payload == first.payload and again.timestamps == (ms(t + 0.75), 100)
    # The ACK echoes the retransmission's TSval: unambiguous (RFC 7323 4.1), so it
    # is a valid sample even though Karn's rule forbids timing the segment.
    ack = s.seg(ACK, R1, snd(10), WND, timestamps=(101, ms(t + 0.75)))
    s.feed(ack, at=t + 0.875)
    assert s.conn.rtt.samples == 2
    # R = 0.125: RTTVAR = 3/4 * 0.125 + 1/4 * 0.125, SRTT = 7/8 * 0.25 + 1/8 * 0.125
    assert s.conn.rtt.rttvar == 0.125
    assert s.conn.rtt.srtt == 0.234375
    assert s.conn.info()["backoff"] == 0


def test_paws_drops_segment_with_old_timestamp_and_acks_it() -> None:
    s = Script(timestamps=True)
    establish_with(s, peer_ts=1000)
    seg = s.data_in(0, b"n" * 100, flags=ACK | PSH)
    seg.timestamps = (2000, ms(s.now))
    s.feed(seg)
    s.run_timer()  # delayed ACK
    s.emitted()
    assert s.conn.ts_recent == 2000
    # A segment with TSval < TS.Recent is an old duplicate (RFC 7323 5.3 R1):
    # dropped even though its sequence number is fine, and answered with an ACK.
    old = s.data_in(100, b"o" * 100, flags=ACK | PSH)
    old.timestamps = (1500, ms(s.now))
    s.feed(old)
    s.expect(s.out(ACK, S1, r(100), WND - 100, timestamps=(ms(s.now), 2000)))
    assert s.conn.readable == 100  # only the first segment's data
    assert s.conn.counters_paws == 1
    assert s.conn.info()["paws_drops"] == 1
    # The same data with a current timestamp is accepted.
    new = s.data_in(100, b"o" * 100, flags=ACK | PSH)
    new.timestamps = (2001, ms(s.now))
    s.feed(new)
    assert s.conn.readable == 200
    assert s.conn.info()["paws_drops"] == 1


def test_window_scaling_negotiated_and_window_field_scaled() -> None:
    s = Script(window_scaling=True, rcvbuf=262144)
    s.connect()
    # rcvbuf 256 KiB > 64 KiB: shift 3 (262144 >> 3 = 32768 fits 16 bits);
    # the window in a SYN is never scaled (RFC 7323 2.2).
    s.expect(s.out(SYN, ISS, 0, 65535, mss=MSS, wscale=3))
    s.feed(s.seg(SYN | ACK, IRS, S1, 1000, mss=MSS, wscale=2))
    s.expect(s.out(ACK, S1, R1, 262144 >> 3))
    info = s.conn.info()
    assert (info["snd_wscale"], info["rcv_wscale"]) == (2, 3)
    assert info["snd_wnd"] == 1000  # from the SYN-ACK: unscaled
    s.feed(s.seg(ACK, R1, S1, 1000))
    assert s.conn.info()["snd_wnd"] == 4000  # later windows are shifted by 2
    assert s.conn.info()["rcv_wnd"] == 262144


def test_window_scaling_small_buffer_and_peer_without_option() -> None:
    s = Script(window_scaling=True, rcvbuf=BIG)
    s.connect()
    s.expect(s.out(SYN, ISS, 0, BIG, mss=MSS, wscale=0))  # 64 KiB - 1 needs no shift
    s = Script(window_scaling=True, rcvbuf=262144)
    s.connect()
    s.emitted()
    s.feed(s.seg(SYN | ACK, IRS, S1, 1000, mss=MSS))  # the peer does not scale
    s.expect(s.out(ACK, S1, R1, 65535))  # so we cannot either: capped at 65535
    s.feed(s.seg(ACK, R1, S1, 1000))
    assert s.conn.info()["snd_wnd"] == 1000
    assert (s.conn.info()["snd_wscale"], s.conn.info()["rcv_wscale"]) == (0, 0)


# ---------------------------------------------------------------------------
# CUBIC (RFC 9438)


def test_cubic_reduction_and_window_growth_shape() -> None:
    mss = 1000
    rtt = 0.1
    cc = Cubic(mss)
    cc.cwnd = 100 * mss
    cc.ssthresh = 50 * mss  # in congestion avoidance
    cc.on_enter_recovery(100 * mss, 10.0)
    # RFC 9438 4.6: ssthresh = cwnd = beta_cubic * cwnd = 0.7 * W_max
    assert cc.ssthresh == cc.cwnd == 70 * mss
    cc.on_exit_recovery(70 * mss, 10.0)
    assert cc.cwnd == 70 * mss
    k = ((100 - 70) / Cubic.C) ** (1 / 3)  # RFC 9438 equation 2: about 4.22 s
    # One round trip per step, every segment acknowledged.
    trace = []
    t = 10.0
    for _ in range(int((k + 3) / rtt)):
        t += rtt
        for _ in range(cc.cwnd // mss):
            cc.on_ack(mss, cc.cwnd, t, rtt)
        trace.append((t - 10.0, cc.cwnd / mss))

    def w_cubic(x: float) -> float:
        return Cubic.C * (x - k) ** 3 + 100

    # The window follows W_cubic(t) (RFC 9438 equation 1) within a few segments.
    for x, w in trace:
        assert abs(w - w_cubic(x)) < 3.5, (x, w, w_cubic(x))
    # Concave below W_max: growth per RTT shrinks as t approaches K ...
    growth = [b[1] - a[1] for a, b in zip(trace, trace[1:], strict=False)]
    n_k = int(k / rtt)
    early, late = growth[: n_k // 3], growth[n_k - n_k // 3 : n_k]
    assert sum(early) / len(early) > 4 * sum(late) / len(late)
    # ... the plateau is at W_max ...
    plateau = [w for x, w in trace if abs(x - k) < 0.5]
    assert all(97 <= w <= 103 for w in plateau)
    # ... and convex beyond it: growth accelerates.
    after = growth[n_k + 5 :]
    third = len(after) // 3
    assert sum(after[-third:]) > 2 * sum(after[:third])
    assert trace[-1][1] > 105


def test_cubic_fast_convergence_lowers_w_max() -> None:
    mss = 1000
    cc = Cubic(mss)
    cc.cwnd = 100 * mss
    cc.ssthresh = 50 * mss
    cc.on_enter_recovery(100 * mss, 0.0)
    cc.on_exit_recovery(0, 0.0)
    # A second loss before reaching the previous W_max: RFC 9438 4.7 remembers
    # W_max = cwnd * (1 + beta) / 2 to release bandwidth to new flows.
    cc.on_enter_recovery(cc.cwnd, 1.0)
    assert cc._w_max == pytest.approx(70 * (1 + 0.7) / 2)
    assert cc.cwnd == int(70 * mss * 0.7)


# ---------------------------------------------------------------------------
# Giving up


def test_timeout_after_retries2_raises_timeout_error() -> None:
    s = Script(rto_min=1.0, retries2=4, sack=True, timestamps=True)
    establish_with(s, peer_sack=True, peer_ts=1)
    t = s.now
    s.conn.send(b"q" * 10, t)
    s.emitted()
    times = []
    for _ in range(4):
        times.append(s.run_timer() - t)
        [seg] = s.emitted()
        assert seg.payload == b"q" * 10
    assert times == [1.0, 3.0, 7.0, 15.0]
    s.run_timer()  # the fifth expiry: retries exhausted
    assert s.state is State.CLOSED
    assert isinstance(s.conn.error, TimeoutError)
    s.expect_nothing()
    assert s.conn.get_timer() is None


def test_syn_timeout_after_syn_retries_raises_timeout_error() -> None:
    s = Script(syn_retries=2)
    s.connect()
    syn = s.out(SYN, ISS, 0, WND, mss=MSS)
    s.expect(syn)
    t = s.now
    assert s.run_timer() == t + 1.0
    s.expect(syn)
    assert s.run_timer() == t + 3.0
    s.expect(syn)
    s.run_timer()
    assert s.state is State.CLOSED
    assert isinstance(s.conn.error, TimeoutError)


# ---------------------------------------------------------------------------
# Go-back-N and the sequence number of ACKs


def test_ack_after_rto_carries_highest_sequence_number_sent() -> None:
    s = Script(rto_min=1.0, nodelay=True)
    s.establish_active(peer_window=BIG)
    s.conn.send(pattern(3 * MSS), s.now)
    segs = segments(s, 3)
    s.expect(*segs)
    # The peer got all three segments but its ACKs were lost: our RTO fires.
    s.run_timer()
    s.expect(segs[0])
    # Data from the peer (still acknowledging only S1): our ACK must carry a
    # sequence number the peer accepts (RFC 9293: SEQ=SND.NXT, the next new
    # byte, here 3 * MSS); the peer's RCV.NXT is already at 3 * MSS.
    s.feed(s.data_in(0, b"p" * (2 * MSS), window=BIG))
    s.expect(s.out(ACK, snd(3 * MSS), r(2 * MSS), WND - 2 * MSS))


def test_fin_is_fast_retransmitted_with_the_last_segment() -> None:
    # The FIN rides on the last data segment; losing it is repaired like data.
    s = Script(nodelay=True)
    s.establish_active(peer_window=0)  # hold the data until the FIN is queued too
    s.conn.send(pattern(4 * MSS), s.now)
    s.conn.shutdown(s.now)
    s.expect_nothing()
    s.feed(s.seg(ACK, R1, S1, BIG))  # the window opens
    out = s.emitted()
    assert len(out) == 4
    assert out[-1].flags & FIN and out[-1].payload
    dup = s.seg(ACK, R1, snd(3 * MSS), BIG)
    s.feed(dup)
    for _ in range(3):
        s.feed(dup)
    [rtx] = s.emitted()
    assert rtx == out[-1]
    s.feed(s.seg(ACK, R1, snd(4 * MSS + 1), BIG))
    assert s.state is State.FIN_WAIT_2
