"""Core scripts: timers (RFC 6298 retransmission, RFC 5681 fast retransmit,
RFC 1122 4.2.3.6 keepalive, SYN-ACK retransmission).

Most scripts use ``rto_min=1.0``, RFC 6298 2.4's one-second minimum: a
handshake completed in zero virtual time gives one RTT sample R = 0, so
SRTT = 0, RTTVAR = 0 and RTO = max(SRTT + max(G, 4*RTTVAR), 1 s) = 1 s.
Others use ``establish_after(R)`` with R a power of two, so every value of
RFC 6298 section 2 is exact in binary floating point.
"""

from __future__ import annotations

import pytest

from utcp._core.codec import Segment

from .scripting import ACK, FIN, IRS, ISS, PSH, SYN, Script, State, pattern, seq

S1 = seq(ISS, 1)
R1 = seq(IRS, 1)
R2 = seq(IRS, 2)
WND = 8192
MSS = 1452


def snd(n: int) -> int:
    """Our sequence number after ``n`` bytes sent."""
    return seq(S1, n)


def retransmissions(s: Script, count: int, *segments: Segment) -> list[float]:
    """Fire the next ``count`` timers, each re-sending exactly ``segments``; their times."""
    times = []
    for _ in range(count):
        times.append(s.run_timer())
        s.expect(*segments)
    return times


# ---------------------------------------------------------------------------
# Retransmission timeout (RFC 6298 section 5)


def test_rto_backoff_doubles_up_to_rto_max() -> None:
    s = Script(rto_min=1.0, rto_max=5.0, retries2=10)
    s.establish_active()
    t = s.now
    s.conn.send(pattern(100), t)
    seg = s.data_out(0, pattern(100), flags=ACK | PSH)
    s.expect(seg)
    assert s.conn.get_timer() == t + 1.0  # 5.1: the timer runs for RTO
    times = retransmissions(s, 6, seg)
    # 5.5: RTO doubles each time (1, 2, 4 s), bounded by rto_max (2.5).
    assert [x - t for x in times] == [1.0, 3.0, 7.0, 12.0, 17.0, 22.0]
    assert s.conn.get_timer() == t + 27.0
    # 5.2: everything acknowledged: the timer stops.
    s.feed(s.seg(ACK, R1, snd(100)), at=t + 23.0)
    s.expect_nothing()
    assert s.conn.get_timer() is None
    assert s.state is State.ESTABLISHED


def test_rto_go_back_n_from_snd_una() -> None:
    s = Script(rto_min=1.0, nodelay=True)
    s.establish_active()
    t = s.now
    data = pattern(3 * MSS)
    s.conn.send(data, t)
    segs = [
        s.data_out(0, data[:MSS]),
        s.data_out(MSS, data[MSS : 2 * MSS]),
        s.data_out(2 * MSS, data[2 * MSS :], flags=ACK | PSH),
    ]
    s.expect(*segs)
    # 5.4: retransmit the earliest unacknowledged segment; RFC 5681 3.1: the loss
    # window is one segment.
    assert s.run_timer() == t + 1.0
    s.expect(segs[0])
    # Its ACK: slow start gives cwnd = 2 segments, and sending resumes from
    # SND.UNA: the two later segments are sent again (go-back-N).
    s.feed(s.seg(ACK, R1, snd(MSS)), at=t + 1.5)
    s.expect(segs[1], segs[2])
    s.feed(s.seg(ACK, R1, snd(3 * MSS)), at=t + 1.75)
    s.expect_nothing()
    assert s.conn.get_timer() is None
    assert s.conn.send_queued == 0


def test_rto_retransmits_fin() -> None:
    s = Script(rto_min=1.0)
    s.establish_active()
    t = s.now
    s.conn.shutdown(t)
    fin = s.out(FIN | ACK, S1, R1, WND)
    s.expect(fin)
    assert [x - t for x in retransmissions(s, 2, fin)] == [1.0, 3.0]
    s.feed(s.seg(ACK, R1, snd(1)))
    assert s.state is State.FIN_WAIT_2
    assert s.conn.get_timer() is None
    s.expect_nothing()


def test_rto_retransmits_fin_in_last_ack() -> None:
    s = Script(rto_min=1.0)
    s.establish_active()
    s.feed(s.seg(FIN | ACK, R1, S1))
    s.expect(s.out(ACK, S1, R2, WND))
    t = s.now
    s.conn.shutdown(t)
    fin = s.out(FIN | ACK, S1, R2, WND)
    s.expect(fin)
    assert s.state is State.LAST_ACK
    assert [x - t for x in retransmissions(s, 3, fin)] == [1.0, 3.0, 7.0]
    s.feed(s.seg(ACK, R2, snd(1)))
    assert s.state is State.CLOSED
    assert s.conn.get_timer() is None
    s.expect_nothing()


def test_timeout_after_retries2_retransmissions() -> None:
    s = Script(rto_min=1.0, retries2=3)
    s.establish_active()
    t = s.now
    s.conn.send(pattern(100), t)
    seg = s.data_out(0, pattern(100), flags=ACK | PSH)
    s.expect(seg)
    assert [x - t for x in retransmissions(s, 3, seg)] == [1.0, 3.0, 7.0]
    assert s.run_timer() == t + 15.0
    assert s.state is State.CLOSED
    assert isinstance(s.conn.error, TimeoutError)
    assert s.conn.get_timer() is None
    s.expect_nothing()


def test_rto_restarts_on_partial_ack() -> None:
    # RFC 6298 5.3: an ACK of new data restarts the timer for the current RTO.
    s = Script(nodelay=True)
    s.establish_after(0.25)  # RTO = 0.25 + 4 * 0.125 = 0.75
    t = s.now
    data = pattern(2 * MSS)
    s.conn.send(data, t)
    s.expect(s.data_out(0, data[:MSS]), s.data_out(MSS, data[MSS:], flags=ACK | PSH))
    assert s.conn.get_timer() == t + 0.75
    # 0.25 s later the first segment is ACKed: sample R' = 0.25 (it was timed).
    # RTTVAR = 3/4 * 0.125 + 1/4 * |0.25 - 0.25| = 0.09375, SRTT = 0.25,
    # RTO = 0.25 + 4 * 0.09375 = 0.625.
    s.feed(s.seg(ACK, R1, snd(MSS)), at=t + 0.25)
    assert s.conn.get_timer() == t + 0.25 + 0.625
    s.feed(s.seg(ACK, R1, snd(2 * MSS)), at=t + 0.5)
    assert s.conn.get_timer() is None
    s.expect_nothing()


# ---------------------------------------------------------------------------
# RTT estimation (RFC 6298 section 2) and Karn's algorithm (section 3)


@pytest.mark.parametrize(
    "rtt, options, rto",
    [
        (0.25, {}, 0.25 + 4 * 0.125),  # 2.2: SRTT = R, RTTVAR = R/2, RTO = R + 4*R/2
        (2.0, {}, 6.0),
        (0.03125, {}, 0.2),  # R + 2R = 0.09375 < rto_min: 2.4 rounds up
        (0.03125, {"rto_min": 1.0}, 1.0),  # RFC 6298's own 1 s minimum
        (2.0, {"rto_max": 4.0}, 4.0),  # 2.5: an upper bound
    ],
)
def test_rto_after_first_sample(rtt: float, options: dict[str, float], rto: float) -> None:
    s = Script(**options)
    s.establish_after(rtt)
    assert s.conn.rtt.srtt == rtt
    assert s.conn.rtt.rttvar == rtt / 2
    assert s.conn.rtt.rto == rto
    t = s.now
    s.conn.send(b"x", t)
    s.expect(s.data_out(0, b"x", flags=ACK | PSH))
    assert s.conn.get_timer() == t + rto


def test_rto_after_second_sample() -> None:
    s = Script()
    s.establish_after(0.25)
    t = s.now
    s.conn.send(b"x", t)
    s.expect(s.data_out(0, b"x", flags=ACK | PSH))
    s.feed(s.seg(ACK, R1, snd(1)), at=t + 0.5)
    # 2.3: RTTVAR = 3/4 * 0.125 + 1/4 * |0.25 - 0.5| = 0.15625
    #      SRTT = 7/8 * 0.25 + 1/8 * 0.5 = 0.28125
    #      RTO = 0.28125 + 4 * 0.15625 = 0.90625
    assert s.conn.rtt.rttvar == 0.15625
    assert s.conn.rtt.srtt == 0.28125
    assert s.conn.rtt.rto == 0.90625
    t2 = s.now
    s.conn.send(b"y", t2)
    s.expect(s.data_out(1, b"y", flags=ACK | PSH))
    assert s.conn.get_timer() == t2 + 0.90625


def test_karn_no_sample_from_retransmitted_segment() -> None:
    s = Script()
    s.establish_after(0.25)  # SRTT 0.25, RTTVAR 0.125, RTO 0.75
    t = s.now
    seg = s.data_out(0, pattern(100), flags=ACK | PSH)
    s.conn.send(pattern(100), t)
    s.expect(seg)
    assert s.run_timer() == t + 0.75
    s.expect(seg)
    # The ACK is ambiguous (first copy after 1.25 s or second after 0.5 s): no sample.
    s.feed(s.seg(ACK, R1, snd(100)), at=t + 1.25)
    assert s.conn.rtt.samples == 1
    assert s.conn.rtt.srtt == 0.25
    assert s.conn.rtt.rttvar == 0.125
    assert s.conn.get_timer() is None
    # A segment sent once and ACKed 0.25 s later is a valid sample again.
    t2 = s.now
    s.conn.send(b"z", t2)
    s.expect(s.data_out(100, b"z", flags=ACK | PSH))
    s.feed(s.seg(ACK, R1, snd(101)), at=t2 + 0.25)
    assert s.conn.rtt.samples == 2
    assert s.conn.rtt.srtt == 0.25
    assert s.conn.rtt.rttvar == 0.09375


def test_karn_backed_off_rto_kept_until_valid_sample() -> None:
    # RFC 6298 5.5 doubles RTO itself; section 5 (after 5.7): "once a new RTT
    # measurement is obtained (which can only happen when new data has been sent
    # and acknowledged), the computations outlined in Section 2 are performed,
    # including the computation of RTO, which may result in "collapsing" RTO back
    # down after it has been subject to exponential back off".  Until then the
    # backed-off RTO stays (Karn and Partridge; Linux: "only reset backoff on valid
    # RTT measurement").
    s = Script()
    s.establish_after(0.25)  # RTO 0.75
    t = s.now
    seg = s.data_out(0, pattern(100), flags=ACK | PSH)
    s.conn.send(pattern(100), t)
    s.expect(seg)
    assert s.run_timer() == t + 0.75
    s.expect(seg)
    s.feed(s.seg(ACK, R1, snd(100)), at=t + 1.25)  # no sample (Karn)
    t2 = s.now
    s.conn.send(b"z", t2)
    s.expect(s.data_out(100, b"z", flags=ACK | PSH))
    assert s.conn.get_timer() == t2 + 1.5  # the backed-off RTO, 2 * 0.75
    s.feed(s.seg(ACK, R1, snd(101)), at=t2 + 0.25)  # a valid sample: RTO collapses
    t3 = s.now
    s.conn.send(b"w", t3)
    s.expect(s.data_out(101, b"w", flags=ACK | PSH))
    assert s.conn.get_timer() == t3 + 0.625


def test_rto_is_three_seconds_after_syn_retransmission() -> None:
    # RFC 6298 5.7: the SYN timed out, so "the RTO MUST be re-initialized to 3
    # seconds when data transmission begins"; Karn: the handshake gives no sample.
    s = Script()
    s.connect()
    syn = s.out(SYN, ISS, 0, WND, mss=1452)
    s.expect(syn)
    t = s.now
    assert s.run_timer() == t + 1.0
    s.expect(syn)
    s.feed(s.seg(SYN | ACK, IRS, S1, WND, mss=1452), at=t + 1.5)
    s.expect(s.out(ACK, S1, R1, WND))
    assert s.conn.rtt.samples == 0
    t2 = s.now
    s.conn.send(b"x", t2)
    s.expect(s.data_out(0, b"x", flags=ACK | PSH))
    assert s.conn.get_timer() == t2 + 3.0


# ---------------------------------------------------------------------------
# Fast retransmit (RFC 5681 3.2)


def test_fast_retransmit_on_third_duplicate_ack() -> None:
    s = Script(nodelay=True, rto_min=1.0)
    s.establish_active()
    data = pattern(4 * MSS)
    s.conn.send(data, s.now)
    segs = [s.data_out(i * MSS, data[i * MSS : (i + 1) * MSS]) for i in range(3)]
    segs.append(s.data_out(3 * MSS, data[3 * MSS :], flags=ACK | PSH))
    s.expect(*segs)
    s.feed(s.seg(ACK, R1, snd(MSS)))  # the first segment arrives
    s.expect_nothing()
    dup = s.seg(ACK, R1, snd(MSS))  # the second is lost: the others produce duplicates
    s.feed(dup)
    s.expect_nothing()
    s.feed(dup)
    s.expect_nothing()
    s.feed(dup)
    s.expect(segs[1])  # the third duplicate: retransmit the missing segment
    s.feed(dup)
    s.expect_nothing()  # further duplicates only inflate cwnd (no new data to send)
    s.feed(s.seg(ACK, R1, snd(4 * MSS)))
    s.expect_nothing()
    assert s.conn.get_timer() is None


def test_new_segments_are_not_counted_as_retransmissions() -> None:
    # Regression: new segments not starting at SND.UNA used to be counted as
    # retransmissions in info()["retransmits"] / ["total_retransmits"].
    s = Script(nodelay=True, rto_min=1.0)
    s.establish_active()
    s.conn.send(pattern(3 * MSS), s.now)
    assert len(s.emitted()) == 3
    assert s.conn.info()["retransmits"] == 0
    assert s.conn.info()["total_retransmits"] == 0
    s.run_timer()  # one retransmission of the first segment
    assert len(s.emitted()) == 1
    assert s.conn.info()["total_retransmits"] == 1


@pytest.mark.parametrize("variant", ["payload", "window", "fin"])
def test_segments_that_are_not_duplicate_acks(variant: str) -> None:
    # RFC 5681 2: a duplicate ACK carries no data, has SYN and FIN off, and does not
    # change the advertised window.  Three such non-duplicates: no fast retransmit.
    s = Script(nodelay=True, rto_min=1.0)
    s.establish_active()
    s.conn.send(pattern(4 * MSS), s.now)
    assert len(s.emitted()) == 4
    s.feed(s.seg(ACK, R1, snd(MSS)))
    if variant == "payload":
        for i in range(3):
            s.feed(s.data_in(i, b"d", ack_offset=1 + MSS))
        s.expect_nothing()  # (their ACK is delayed)
    elif variant == "window":
        for i in range(3):
            s.feed(s.seg(ACK, R1, snd(MSS), WND - 100 * (i + 1)))
        s.expect_nothing()
    else:
        # The FIN is not a duplicate ACK; the two pure ACKs after it are only two.
        s.feed(s.seg(ACK | FIN, R1, snd(MSS)))
        s.expect(s.out(ACK, snd(4 * MSS), R2, WND))
        s.feed(s.seg(ACK, R2, snd(MSS)))
        s.feed(s.seg(ACK, R2, snd(MSS)))
        s.expect_nothing()


def test_no_fast_retransmit_below_recover_when_recover_is_zero() -> None:
    # Regression: recover == 0 used to mean "unset", so this wrap case misfired.
    # ISS = 2**32 - 3: after 2 bytes, SND.MAX = ISS + 3 = 0 (mod 2**32).
    # RFC 6582 3.2 step 4: after a timeout, recover = the highest sequence number
    # transmitted (here 0).  Step 2: on the third duplicate ACK, fast retransmit
    # only "if the Cumulative Acknowledgment field covers more than recover";
    # SND.UNA = ISS + 1 does not.
    s = Script(rto_min=1.0)
    s.establish_active()
    s.conn.send(b"ab", s.now)
    seg = s.data_out(0, b"ab", flags=ACK | PSH)
    s.expect(seg)
    assert s.conn.snd_max == 0
    s.run_timer()
    s.expect(seg)
    dup = s.seg(ACK, R1, S1)
    for _ in range(3):
        s.feed(dup)
    s.expect_nothing()


# ---------------------------------------------------------------------------
# SYN-ACK retransmission (passive open)


def test_synack_retransmitted_then_passive_connection_dropped() -> None:
    s = Script(synack_retries=2)
    t = s.now
    s.accept(s.seg(SYN, IRS, 0, WND, mss=1452))
    synack = s.out(SYN | ACK, ISS, R1, WND, mss=1452)
    s.expect(synack)
    assert [x - t for x in retransmissions(s, 2, synack)] == [1.0, 3.0]
    assert s.run_timer() == t + 7.0
    # Silently forgotten: no RST, no error for a user who never saw it.
    assert s.state is State.CLOSED
    assert s.conn.error is None
    assert s.conn.get_timer() is None
    s.expect_nothing()


def test_retransmitted_syn_in_syn_received_gets_synack_again() -> None:
    s = Script()
    syn = s.seg(SYN, IRS, 0, WND, mss=1452)
    s.accept(syn)
    synack = s.out(SYN | ACK, ISS, R1, WND, mss=1452)
    s.expect(synack)
    s.feed(syn, at=s.now + 0.5)  # our SYN-ACK was lost; the peer's SYN times out
    s.expect(synack)
    assert s.state is State.SYN_RECEIVED
    s.feed(s.seg(ACK, R1, S1, WND))
    assert s.state is State.ESTABLISHED
    s.expect_nothing()


# ---------------------------------------------------------------------------
# Keepalive (RFC 1122 4.2.3.6)

KA = {"keepalive": True, "keepalive_time": 10.0, "keepalive_intvl": 2.0, "keepalive_probes": 3}


def test_keepalive_probes_then_timeout() -> None:
    s = Script(**KA)  # type: ignore[arg-type]
    s.establish_active()
    t = s.now
    s.conn.start_keepalive(t)
    assert s.conn.get_timer() == t + 10.0
    # A probe is <SEQ=SND.NXT-1><ACK=RCV.NXT><CTL=ACK> with no data.
    probe = s.out(ACK, ISS, R1, WND)
    assert [x - t for x in retransmissions(s, 3, probe)] == [10.0, 12.0, 14.0]
    assert s.run_timer() == t + 16.0
    assert s.state is State.CLOSED
    assert isinstance(s.conn.error, TimeoutError)
    assert s.conn.get_timer() is None
    s.expect_nothing()


def test_keepalive_answered_probe_resets_count() -> None:
    s = Script(**KA)  # type: ignore[arg-type]
    s.establish_active()
    t = s.now
    s.conn.start_keepalive(t)
    probe = s.out(ACK, ISS, R1, WND)
    assert [x - t for x in retransmissions(s, 2, probe)] == [10.0, 12.0]
    s.feed(s.seg(ACK, R1, S1), at=t + 13.0)  # the peer answers
    s.expect_nothing()
    assert s.conn.get_timer() == t + 23.0  # idle again from now
    assert [x - t for x in retransmissions(s, 3, probe)] == [23.0, 25.0, 27.0]
    s.run_timer()
    assert s.now == t + 29.0
    assert isinstance(s.conn.error, TimeoutError)
    s.expect_nothing()


def test_no_keepalive_by_default() -> None:
    s = Script()
    s.establish_active()
    s.conn.start_keepalive(s.now)
    assert s.conn.get_timer() is None
    s.advance(s.now + 100000.0)
    s.expect_nothing()
    assert s.state is State.ESTABLISHED
