"""Core scripts: opening a connection (RFC 9293 3.5)."""

from __future__ import annotations

from .scripting import ACK, IRS, ISS, RST, SYN, Script, State, seq


def test_active_open() -> None:
    s = Script()
    s.establish_active()
    assert s.conn.snd_una == seq(ISS, 1)
    assert s.conn.rcv_nxt == seq(IRS, 1)
    s.expect_nothing()
    assert s.conn.get_timer() is None  # nothing outstanding, no timer


def test_passive_open() -> None:
    s = Script()
    s.establish_passive()
    assert s.conn.get_timer() is None


def test_simultaneous_open() -> None:
    # RFC 9293 figure 7: both sides send SYN; each answers SYN-ACK; both reach ESTABLISHED.
    s = Script()
    s.connect()
    s.expect(s.out(SYN, ISS, 0, 8192, mss=1452))
    s.feed(s.seg(SYN, IRS, 0, 8192, mss=1452))
    assert s.state is State.SYN_RECEIVED
    s.expect(s.out(SYN | ACK, ISS, seq(IRS, 1), 8192, mss=1452))
    s.feed(s.seg(SYN | ACK, IRS, seq(ISS, 1), 8192, mss=1452))
    assert s.state is State.ESTABLISHED
    s.expect_nothing()


def test_syn_sent_bad_ack_gets_rst() -> None:
    # RFC 9293 3.10.7.3: an ACK outside (ISS, SND.NXT] is answered <SEQ=SEG.ACK><CTL=RST>.
    s = Script()
    s.connect()
    s.emitted()
    s.feed(s.seg(SYN | ACK, IRS, seq(ISS, 5)))
    s.expect(s.out(RST, seq(ISS, 5), 0, 0))
    assert s.state is State.SYN_SENT


def test_syn_sent_rst_refuses() -> None:
    s = Script()
    s.connect()
    s.emitted()
    s.feed(s.seg(RST | ACK, 0, seq(ISS, 1), 0))
    assert s.state is State.CLOSED
    assert isinstance(s.conn.error, ConnectionRefusedError)
    s.expect_nothing()


def test_syn_retransmission_backoff_then_timeout() -> None:
    s = Script(syn_retries=3)
    s.connect()
    syn = s.out(SYN, ISS, 0, 8192, mss=1452)
    s.expect(syn)
    t0 = s.now
    times = []
    for _ in range(3):
        times.append(s.run_timer() - t0)
        s.expect(syn)
    assert times == [1.0, 3.0, 7.0]  # 1 s, doubling (RFC 6298 5.5)
    s.run_timer()
    assert s.now - t0 == 15.0
    assert s.state is State.CLOSED
    assert isinstance(s.conn.error, TimeoutError)
    s.expect_nothing()
    assert s.conn.get_timer() is None


def test_handshake_ack_is_data_segment_with_wrap() -> None:
    s = Script()
    s.establish_active()
    s.conn.send(b"abcdef", s.now)
    # ISS+1 wraps past 2**32: the data starts at sequence number ISS+1 mod 2**32
    s.expect(s.out(ACK | 0x08, seq(ISS, 1), seq(IRS, 1), 8192, b"abcdef"))
    s.feed(s.seg(ACK, seq(IRS, 1), seq(ISS, 7), 8192))
    assert s.conn.snd_una == seq(ISS, 7) and seq(ISS, 7) < ISS
    s.expect_nothing()
