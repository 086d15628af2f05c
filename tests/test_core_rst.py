"""Core scripts: resets, RFC 5961 challenge ACKs and unacceptable segments.

RFC 9293 3.10.5 (ABORT), 3.10.7.1 (CLOSED), 3.10.7.2 (LISTEN), 3.10.7.3
(SYN-SENT), 3.10.7.4 (the other states) and RFC 5961 3.2, 4.2 and 5.2.
Sequence numbers cross the 2**32 wrap (see tests/scripting.py).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from utcp._core.codec import Segment, decode, encode
from utcp._core.config import Options
from utcp._core.endpoint import EndpointCore, rst_for

from .scripting import ACK, FIN, IRS, ISS, PSH, RST, SYN, Script, State, pattern, seq

S1 = seq(ISS, 1)
S2 = seq(ISS, 2)
R1 = seq(IRS, 1)
R2 = seq(IRS, 2)
WND = 8192


# ---------------------------------------------------------------------------
# Reaching each state.  Each returns (SND.NXT, RCV.NXT) in that state.


def in_syn_received_passive(s: Script) -> tuple[int, int]:
    s.accept(s.seg(SYN, IRS, 0, WND, mss=1452))
    s.expect(s.out(SYN | ACK, ISS, R1, WND, mss=1452))
    return S1, R1


def in_syn_received_active(s: Script) -> tuple[int, int]:
    # Simultaneous open (RFC 9293 figure 7).
    s.connect()
    s.expect(s.out(SYN, ISS, 0, WND, mss=1452))
    s.feed(s.seg(SYN, IRS, 0, WND, mss=1452))
    s.expect(s.out(SYN | ACK, ISS, R1, WND, mss=1452))
    assert s.state is State.SYN_RECEIVED
    return S1, R1


def in_established(s: Script) -> tuple[int, int]:
    s.establish_active()
    return S1, R1


def in_fin_wait_1(s: Script) -> tuple[int, int]:
    s.establish_active()
    s.conn.shutdown(s.now)
    s.expect(s.out(FIN | ACK, S1, R1, WND))
    return S2, R1


def in_fin_wait_2(s: Script) -> tuple[int, int]:
    in_fin_wait_1(s)
    s.feed(s.seg(ACK, R1, S2))
    s.expect_nothing()
    return S2, R1


def in_close_wait(s: Script) -> tuple[int, int]:
    s.establish_active()
    s.feed(s.seg(FIN | ACK, R1, S1))
    s.expect(s.out(ACK, S1, R2, WND))
    return S1, R2


def in_closing(s: Script) -> tuple[int, int]:
    in_fin_wait_1(s)
    s.feed(s.seg(FIN | ACK, R1, S1))
    s.expect(s.out(ACK, S2, R2, WND))
    return S2, R2


def in_last_ack(s: Script) -> tuple[int, int]:
    in_close_wait(s)
    s.conn.shutdown(s.now)
    s.expect(s.out(FIN | ACK, S1, R2, WND))
    return S2, R2


def in_time_wait(s: Script) -> tuple[int, int]:
    in_fin_wait_2(s)
    s.feed(s.seg(FIN | ACK, R1, S2))
    s.expect(s.out(ACK, S2, R2, WND))
    return S2, R2


Setup = Callable[[Script], tuple[int, int]]

STATES: dict[State, Setup] = {
    State.ESTABLISHED: in_established,
    State.FIN_WAIT_1: in_fin_wait_1,
    State.FIN_WAIT_2: in_fin_wait_2,
    State.CLOSE_WAIT: in_close_wait,
    State.CLOSING: in_closing,
    State.LAST_ACK: in_last_ack,
    State.TIME_WAIT: in_time_wait,
}


def setup(state: State, **options: object) -> tuple[Script, int, int]:
    s = Script(**options)
    snd_nxt, rcv_nxt = STATES[state](s)
    assert s.state is state
    return s, snd_nxt, rcv_nxt


# ---------------------------------------------------------------------------
# ABORT (RFC 9293 3.10.5)


@pytest.mark.parametrize(
    "state",
    [State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2, State.CLOSE_WAIT],
)
def test_abort_sends_rst_at_snd_nxt(state: State) -> None:
    # "SYN-RECEIVED, ESTABLISHED, FIN-WAIT-1, FIN-WAIT-2, CLOSE-WAIT STATES:
    # Send a reset segment: <SEQ=SND.NXT><CTL=RST>"
    s, snd_nxt, _ = setup(state)
    s.conn.abort(s.now)
    s.expect(s.out(RST, snd_nxt, 0, 0))
    assert s.state is State.CLOSED
    assert s.conn.get_timer() is None
    s.advance(s.now + 100.0)
    s.expect_nothing()


def test_abort_in_syn_received_sends_rst() -> None:
    s = Script()
    snd_nxt, _ = in_syn_received_passive(s)
    s.conn.abort(s.now)
    s.expect(s.out(RST, snd_nxt, 0, 0))
    assert s.state is State.CLOSED
    assert s.conn.get_timer() is None


def test_abort_with_data_in_flight_uses_snd_nxt() -> None:
    s = Script()
    s.establish_active()
    s.conn.send(pattern(300), s.now)
    s.expect(s.data_out(0, pattern(300), flags=ACK | PSH))
    s.conn.abort(s.now)
    s.expect(s.out(RST, seq(S1, 300), 0, 0))
    assert s.state is State.CLOSED
    assert s.conn.send_queued == 0


@pytest.mark.parametrize("state", [State.CLOSING, State.LAST_ACK, State.TIME_WAIT])
def test_abort_in_closing_states_sends_nothing(state: State) -> None:
    # RFC 9293 3.10.5: "CLOSING STATE, LAST-ACK STATE, TIME-WAIT STATE: Respond
    # with "ok" and delete the TCB, enter CLOSED state, and return." (no RST)
    s, _, _ = setup(state)
    s.conn.abort(s.now)
    s.expect_nothing()
    assert s.state is State.CLOSED
    assert s.conn.get_timer() is None


def test_abort_in_syn_sent_sends_nothing() -> None:
    # RFC 9293 3.10.5 SYN-SENT: "All queued SENDs and RECEIVEs should be given
    # "reset" notification; delete the TCB, enter CLOSED state" (nothing sent).
    s = Script()
    s.connect()
    s.expect(s.out(SYN, ISS, 0, WND, mss=1452))
    s.conn.abort(s.now)
    s.expect_nothing()
    assert s.state is State.CLOSED
    assert s.conn.get_timer() is None
    s.advance(s.now + 100.0)
    s.expect_nothing()


# ---------------------------------------------------------------------------
# A RST arriving (RFC 9293 3.10.7.3 / 3.10.7.4 second, RFC 5961 3.2)


def test_rst_in_syn_sent_with_acceptable_ack_refuses() -> None:
    s = Script()
    s.connect()
    s.emitted()
    s.feed(s.seg(RST | ACK, 0, S1, 0))
    assert s.state is State.CLOSED
    assert isinstance(s.conn.error, ConnectionRefusedError)
    assert s.conn.get_timer() is None
    s.expect_nothing()


@pytest.mark.parametrize("ack_offset", [0, 2, 1000])
def test_rst_in_syn_sent_with_unacceptable_ack_is_ignored(ack_offset: int) -> None:
    # RFC 9293 3.10.7.3 first: unacceptable ACK and RST set: "discard the segment and return".
    s = Script()
    s.connect()
    s.emitted()
    s.feed(s.seg(RST | ACK, 0, seq(ISS, ack_offset), 0))
    assert s.state is State.SYN_SENT
    assert s.conn.error is None
    s.expect_nothing()
    # The SYN is still being retransmitted.
    s.run_timer()
    s.expect(s.out(SYN, ISS, 0, WND, mss=1452))


def test_rst_without_ack_in_syn_sent_is_ignored() -> None:
    # RFC 9293 3.10.7.3 second: "If the ACK was acceptable then ... Otherwise (no
    # ACK), drop the segment and return."
    s = Script()
    s.connect()
    s.emitted()
    s.feed(s.seg(RST, IRS, 0, 0))
    assert s.state is State.SYN_SENT
    s.expect_nothing()


def test_rst_in_passive_syn_received_closes_quietly() -> None:
    # "If this connection was initiated with a passive OPEN ..., then return this
    # connection to LISTEN state and return. The user need not be informed."
    s = Script()
    _, rcv_nxt = in_syn_received_passive(s)
    s.feed(s.seg(RST, rcv_nxt, 0, 0))
    assert s.state is State.CLOSED
    assert s.conn.error is None
    assert s.conn.get_timer() is None
    s.expect_nothing()


def test_rst_in_active_syn_received_refuses() -> None:
    # "If this connection was initiated with an active OPEN (i.e., came from
    # SYN-SENT state), then the connection was refused; signal the user".
    s = Script()
    _, rcv_nxt = in_syn_received_active(s)
    s.feed(s.seg(RST, rcv_nxt, 0, 0))
    assert s.state is State.CLOSED
    assert isinstance(s.conn.error, ConnectionRefusedError)
    assert s.conn.get_timer() is None
    s.expect_nothing()


@pytest.mark.parametrize("flags", [RST, RST | ACK])
@pytest.mark.parametrize(
    "state",
    [State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2, State.CLOSE_WAIT],
)
def test_rst_resets_connection(state: State, flags: int) -> None:
    # "ESTABLISHED, FIN-WAIT-1, FIN-WAIT-2, CLOSE-WAIT: ... users should also
    # receive an unsolicited general "connection reset" signal. Enter the CLOSED state"
    s, snd_nxt, rcv_nxt = setup(state)
    s.feed(s.seg(flags, rcv_nxt, snd_nxt, 0))
    assert s.state is State.CLOSED
    assert isinstance(s.conn.error, ConnectionResetError)
    assert s.conn.get_timer() is None
    s.expect_nothing()


@pytest.mark.parametrize("state", [State.CLOSING, State.LAST_ACK])
def test_rst_in_closing_and_last_ack_closes(state: State) -> None:
    # "CLOSING, LAST-ACK, TIME-WAIT: If the RST bit is set, then enter the CLOSED
    # state, delete the TCB, and return."
    s, snd_nxt, rcv_nxt = setup(state)
    s.feed(s.seg(RST, rcv_nxt, 0, 0))
    assert s.state is State.CLOSED
    assert s.conn.error is None
    assert s.conn.get_timer() is None
    s.expect_nothing()


def test_rst_in_time_wait_ignored_with_rfc1337() -> None:
    # RFC 1337 (TIME-WAIT assassination, fix TW2): ignore RST in TIME-WAIT.
    s, _, rcv_nxt = setup(State.TIME_WAIT)
    assert s.options.rfc1337 is True  # the default
    deadline = s.conn.get_timer()
    s.feed(s.seg(RST, rcv_nxt, 0, 0), at=s.now + 1.0)
    assert s.state is State.TIME_WAIT
    assert s.conn.get_timer() == deadline  # the 2*MSL timer is not restarted either
    s.expect_nothing()
    s.advance(deadline)
    assert s.state is State.CLOSED


def test_rst_in_time_wait_closes_without_rfc1337() -> None:
    s, _, rcv_nxt = setup(State.TIME_WAIT, rfc1337=False)
    s.feed(s.seg(RST, rcv_nxt, 0, 0))
    assert s.state is State.CLOSED
    assert s.conn.error is None
    assert s.conn.get_timer() is None
    s.expect_nothing()


# ---------------------------------------------------------------------------
# RFC 5961 and unacceptable segments


@pytest.mark.parametrize("offset", [1, 100, WND - 1])
@pytest.mark.parametrize("state", [State.ESTABLISHED, State.FIN_WAIT_2, State.CLOSE_WAIT])
def test_in_window_inexact_rst_gets_challenge_ack(state: State, offset: int) -> None:
    # RFC 5961 3.2: "If the RST bit is set and the sequence number is [in the window]
    # but not exactly RCV.NXT: send <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>".
    s, snd_nxt, rcv_nxt = setup(state)
    s.feed(s.seg(RST, seq(rcv_nxt, offset), 0, 0))
    s.expect(s.out(ACK, snd_nxt, rcv_nxt, WND))
    assert s.state is state
    assert s.conn.error is None
    # The connection still works: an exact RST now resets it.
    s.feed(s.seg(RST, rcv_nxt, 0, 0))
    assert s.state is State.CLOSED
    assert isinstance(s.conn.error, ConnectionResetError)
    s.expect_nothing()


@pytest.mark.parametrize("offset", [-1, -1000, WND, WND + 1, 1 << 30])
def test_out_of_window_rst_is_dropped_silently(offset: int) -> None:
    # RFC 5961 3.2 / RFC 9293 3.10.7.4 first: an unacceptable segment with RST is
    # dropped ("unless the RST bit is set, if so drop the segment and return").
    s, _, rcv_nxt = setup(State.ESTABLISHED)
    s.feed(s.seg(RST | ACK, seq(rcv_nxt, offset), S1, 0))
    s.expect_nothing()
    assert s.state is State.ESTABLISHED
    assert s.conn.error is None


@pytest.mark.parametrize(
    "flags, offset",
    [
        (SYN, 0),  # at RCV.NXT
        (SYN, 100),  # in the window
        (SYN, -1),  # the original SYN again
        (SYN, 1 << 20),  # far outside the window
        (SYN | ACK, -1),  # the peer's SYN-ACK again
    ],
)
def test_syn_in_established_gets_challenge_ack(flags: int, offset: int) -> None:
    # RFC 5961 4.2: "If the SYN bit is set, irrespective of the sequence number, TCP
    # MUST send an ACK (also referred to as challenge ACK) to the remote peer:
    # <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>. After sending the acknowledgment, TCP
    # MUST drop the unacceptable segment and stop processing further."
    s, snd_nxt, rcv_nxt = setup(State.ESTABLISHED)
    s.feed(s.seg(flags, seq(rcv_nxt, offset), snd_nxt, WND, mss=1452))
    s.expect(s.out(ACK, snd_nxt, rcv_nxt, WND))
    assert s.state is State.ESTABLISHED
    assert s.conn.error is None
    s.expect_nothing()


def test_syn_with_data_in_established_is_not_delivered() -> None:
    s, snd_nxt, rcv_nxt = setup(State.ESTABLISHED)
    s.feed(s.seg(SYN | ACK, rcv_nxt, snd_nxt, WND, pattern(100)))
    s.expect(s.out(ACK, snd_nxt, rcv_nxt, WND))
    assert s.conn.readable == 0
    assert s.conn.rcv_nxt == rcv_nxt


def test_ack_for_data_never_sent_is_acked_and_dropped() -> None:
    # RFC 9293 3.10.7.4 fifth, ESTABLISHED: "If the ACK acks something not yet sent
    # (SEG.ACK > SND.NXT), then send an ACK, drop the segment, and return."
    s = Script()
    s.establish_active()
    s.conn.send(pattern(100), s.now)
    s.expect(s.data_out(0, pattern(100), flags=ACK | PSH))
    s.feed(s.data_in(0, pattern(50), ack_offset=1 + 101))
    s.expect(s.out(ACK, seq(S1, 100), R1, WND))
    # Dropped: no data taken, nothing acknowledged.
    assert s.conn.readable == 0
    assert s.conn.snd_una == S1
    assert s.conn.send_queued == 100
    assert s.state is State.ESTABLISHED


def test_too_old_ack_gets_challenge_ack_and_is_dropped() -> None:
    # RFC 5961 5.2: acceptable iff (SND.UNA - MAX.SND.WND) =< SEG.ACK =< SND.NXT;
    # otherwise discard and send an ACK.  MAX.SND.WND is the peer's 8192.
    s = Script()
    s.establish_active()
    s.feed(s.data_in(0, pattern(50), ack_offset=1 - WND - 1))
    s.expect(s.out(ACK, S1, R1, WND))
    assert s.conn.readable == 0


def test_old_but_acceptable_ack_still_delivers_data() -> None:
    # SEG.ACK = SND.UNA - MAX.SND.WND is acceptable: the duplicate ACK is ignored
    # and the text is processed.
    s = Script()
    s.establish_active()
    s.feed(s.data_in(0, pattern(50), ack_offset=1 - WND))
    s.expect_nothing()  # delayed ACK
    assert s.conn.read(100, s.now) == pattern(50)


def test_in_window_syn_in_passive_syn_received_returns_to_listen() -> None:
    # RFC 9293 3.10.7.4 fourth, SYN-RECEIVED: "If the connection was initiated
    # with a passive OPEN, then return this connection to the LISTEN state and
    # return."  (The listener lives in the endpoint: the connection is dropped.)
    s = Script()
    _, rcv_nxt = in_syn_received_passive(s)
    s.feed(s.seg(SYN, seq(rcv_nxt, 10), 0, WND, mss=1452))
    assert s.state is State.CLOSED
    assert s.conn.error is None
    assert s.conn.get_timer() is None
    s.expect_nothing()


@pytest.mark.parametrize("ack_offset", [0, 2, 100, -5])
def test_syn_received_unacceptable_ack_gets_rst(ack_offset: int) -> None:
    # RFC 9293 3.10.7.4 fifth, SYN-RECEIVED: unless SND.UNA < SEG.ACK =< SND.NXT,
    # "form a reset segment <SEQ=SEG.ACK><CTL=RST> and send it".
    s = Script()
    in_syn_received_passive(s)
    bad = seq(ISS, ack_offset)
    s.feed(s.seg(ACK, R1, bad, WND))
    s.expect(s.out(RST, bad, 0, 0))
    assert s.state is State.SYN_RECEIVED
    # The right ACK still completes the handshake.
    s.feed(s.seg(ACK, R1, S1, WND))
    assert s.state is State.ESTABLISHED
    s.expect_nothing()


@pytest.mark.parametrize(
    "offset, length",
    [
        (WND, 100),  # starts at the right edge
        (WND + 5000, 100),  # far beyond
        (-200, 100),  # entirely old (a retransmission)
        (-1, 1),  # the last old byte
    ],
)
def test_unacceptable_segment_gets_ack(offset: int, length: int) -> None:
    # RFC 9293 3.10.7.4 first: "If an incoming segment is not acceptable, an
    # acknowledgment should be sent in reply: <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>".
    s = Script()
    s.establish_active()
    s.feed(s.data_in(offset, pattern(length)))
    s.expect(s.out(ACK, S1, R1, WND))
    assert s.conn.readable == 0
    assert s.state is State.ESTABLISHED


def test_unacceptable_empty_segment_gets_ack() -> None:
    # An empty segment is acceptable only if RCV.NXT =< SEG.SEQ < RCV.NXT+RCV.WND.
    s = Script()
    s.establish_active()
    s.feed(s.data_in(-1, b""))
    s.expect(s.out(ACK, S1, R1, WND))
    s.feed(s.data_in(WND, b""))
    s.expect(s.out(ACK, S1, R1, WND))
    s.feed(s.data_in(WND - 1, b""))  # in the window: acceptable, nothing to say
    s.expect_nothing()


def test_unacceptable_segment_in_fin_wait_2_gets_ack() -> None:
    s, snd_nxt, rcv_nxt = setup(State.FIN_WAIT_2)
    s.feed(s.seg(ACK, seq(rcv_nxt, WND + 10), snd_nxt, WND, pattern(10)))
    s.expect(s.out(ACK, snd_nxt, rcv_nxt, WND))
    assert s.state is State.FIN_WAIT_2


# ---------------------------------------------------------------------------
# Segments for no connection (RFC 9293 3.10.7.1) and for a listener (3.10.7.2)


PEER = ("192.0.2.7", 4321)


def test_rst_for_ack() -> None:
    # "If the ACK bit is on, <SEQ=SEG.ACK><CTL=RST>"
    seg = Segment(5000, 80, 123456, 0xFFFFFFF0, ACK | PSH, 1000, b"hello")
    assert rst_for(seg) == Segment(80, 5000, 0xFFFFFFF0, 0, RST, 0)


@pytest.mark.parametrize(
    "flags, payload, seg_len",
    [
        (SYN, b"", 1),
        (0, b"abcdef", 6),
        (FIN, b"abc", 4),
        (SYN | FIN, b"ab", 4),
        (0, b"", 0),
    ],
)
def test_rst_for_segment_without_ack(flags: int, payload: bytes, seg_len: int) -> None:
    # "If the ACK bit is off, sequence number zero is used,
    # <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>"  (crossing the wrap here)
    s0 = (1 << 32) - 2
    seg = Segment(5000, 80, s0, 0, flags, 1000, payload)
    assert rst_for(seg) == Segment(80, 5000, 0, seq(s0, seg_len), RST | ACK, 0)


@pytest.mark.parametrize("flags", [RST, RST | ACK, RST | SYN])
def test_rst_for_rst_is_none(flags: int) -> None:
    # "An incoming segment containing a RST is discarded."
    assert rst_for(Segment(5000, 80, 1, 2, flags, 0)) is None


def test_endpoint_answers_segment_for_nobody_with_rst() -> None:
    ep = EndpointCore(Options())
    data = Segment(5000, 80, 1000, 0xFFFFFFFF, ACK, 512, b"xyz")
    assert ep.receive(encode(data), PEER, 1.0) is None
    assert len(ep.outbox) == 1
    datagram, addr = ep.outbox[0]
    assert addr == PEER
    assert decode(datagram) == Segment(80, 5000, 0xFFFFFFFF, 0, RST, 0)

    ep.outbox.clear()
    syn = Segment(5001, 81, 0xFFFFFFFF, 0, SYN, 512, mss=1452)
    ep.receive(encode(syn), PEER, 1.0)
    assert [(decode(d), a) for d, a in ep.outbox] == [(Segment(81, 5001, 0, 0, RST | ACK, 0), PEER)]

    ep.outbox.clear()
    ep.receive(encode(Segment(5000, 80, 1000, 7, RST | ACK, 0)), PEER, 1.0)
    assert ep.outbox == []
    assert ep.connections == {}


def test_listener_answers_ack_with_rst_and_ignores_rst() -> None:
    ep = EndpointCore(Options())
    ep.listen(80, Options())
    # RFC 9293 3.10.7.2 second: "Any acknowledgment is bad if it arrives on a
    # connection still in the LISTEN state. An acceptable reset segment should
    # be formed for any arriving ACK-bearing segment: <SEQ=SEG.ACK><CTL=RST>"
    ep.receive(encode(Segment(5000, 80, 77, 0xFFFFFFFE, ACK, 512)), PEER, 1.0)
    assert [(decode(d), a) for d, a in ep.outbox] == [
        (Segment(80, 5000, 0xFFFFFFFE, 0, RST, 0), PEER)
    ]
    # First: "An incoming RST segment could not be valid ... and should be ignored."
    ep.outbox.clear()
    ep.receive(encode(Segment(5000, 80, 77, 0, RST, 0)), PEER, 1.0)
    ep.receive(encode(Segment(5000, 80, 77, 5, RST | ACK, 0)), PEER, 1.0)
    assert ep.outbox == []
    # Fifth: neither SYN nor RST nor ACK: drop.
    ep.receive(encode(Segment(5000, 80, 77, 0, PSH, 512, b"data")), PEER, 1.0)
    assert ep.outbox == []
    assert ep.connections == {}
    assert ep.new_connections == []
