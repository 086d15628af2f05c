"""Nothing a peer sends can crash an endpoint or grow it without bound.

Hypothesis throws well-formed segments with arbitrary flags, sequence and
acknowledgment numbers, windows, options and payloads (plus raw garbage) at
an EndpointCore holding a listener and connections in several states, and
fires timers in between.  The endpoint must never raise, every connection
must stay in a valid state with sane invariants, and memory-bearing tables
must stay within their limits.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from utcp._core.codec import ACK, Segment, encode
from utcp._core.config import Options
from utcp._core.endpoint import EndpointCore
from utcp._core.seq import seq_le, seq_sub
from utcp._core.state import State

SERVER = ("10.0.0.2", 5000)
CLIENT = ("10.0.0.1", 40000)
PORT = 80

seqnos = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 2**31, 2**32 - 1]))
segments = st.builds(
    Segment,
    src_port=st.sampled_from([1111, 2222, 3333]),
    dst_port=st.sampled_from([PORT, 81]),
    seq=seqnos,
    ack=seqnos,
    flags=st.integers(0, 255),
    window=st.integers(0, 65535),
    payload=st.binary(max_size=64),
    mss=st.none() | st.integers(1, 65535),
    wscale=st.none() | st.integers(0, 255),
    sack_permitted=st.booleans(),
    sack_blocks=st.lists(st.tuples(seqnos, seqnos), max_size=2).map(tuple),
    timestamps=st.none() | st.tuples(seqnos, seqnos),
)
events = st.lists(
    st.one_of(
        st.tuples(st.just("seg"), segments),
        st.tuples(st.just("raw"), st.binary(max_size=80)),
        st.tuples(st.just("time"), st.floats(0.0, 5.0)),
        st.tuples(st.just("reply"), st.integers(0, 3)),
        # near the live connection's window: these reach data, FIN and RST handling
        st.tuples(
            st.just("near"),
            st.tuples(
                st.one_of(st.integers(-2, 2), st.integers(-3, 3000)),
                st.one_of(st.integers(-1, 1), st.integers(-3, 6000)),
                st.integers(0, 255),
                st.binary(max_size=64),
                st.booleans(),
            ),
        ),
    ),
    max_size=60,
)


def _handshake(server: EndpointCore, client: EndpointCore, now: float) -> None:
    """Open a real connection so the fuzz also hits ESTABLISHED and closing states."""
    conn = client.connect(SERVER, PORT, client.options, now, local_port=3333)
    for _ in range(4):
        for d in conn.take_datagrams():
            server.receive(d, CLIENT, now)
        for c in list(server.connections.values()):
            for d in c.take_datagrams():
                client.receive(d, SERVER, now)


def _check(core: EndpointCore) -> None:
    for conn in core.connections.values():
        assert isinstance(conn.state, State)
        assert seq_le(conn.snd_una, conn.snd_max)
        assert 0 <= seq_sub(conn.snd_max, conn.snd_una) <= conn.options.sndbuf + 2
        assert len(conn._ooo) <= conn._ooo_limit
        assert len(conn._sacked) <= 256
        assert conn.readable <= conn.options.rcvbuf + 65536
    for listener in core.listeners.values():
        assert len(listener.syn_queue) <= listener.options.syn_backlog
        assert len(listener.accept_queue) <= listener.backlog
    assert len(core.time_wait) <= core.options.max_tw_buckets


@settings(
    max_examples=600,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(events=events, closing=st.integers(0, 3), opts=st.sampled_from(["default", "plain"]))
def test_arbitrary_segments_never_break_the_endpoint(
    events: list[tuple[str, object]], closing: int, opts: str
) -> None:
    extra = (
        {} if opts == "default" else {"timestamps": False, "sack": False, "window_scaling": False}
    )
    options = Options(msl=1.0, syn_backlog=4, backlog=2, max_tw_buckets=4, **extra)
    server = EndpointCore(options, secret=b"s", rng=random.Random(1))
    client = EndpointCore(options, secret=b"c", rng=random.Random(2))
    server.listen(PORT, options)
    now = 100.0
    _handshake(server, client, now)
    live = list(server.connections.values())
    if live and closing == 1:
        live[0].shutdown(now)
    elif live and closing == 2:
        live[0].close(now)
    elif live and closing == 3:
        live[0].send(b"z" * 5000, now)
    for kind, value in events:
        if kind == "seg":
            assert isinstance(value, Segment)
            try:
                data = encode(value)
            except Exception:
                continue  # e.g. too many options for 40 bytes: not something a peer can send
            server.receive(data, CLIENT, now)
        elif kind == "near":
            assert isinstance(value, tuple)
            dseq, dack, flags, payload, with_ts = value
            for conn in list(server.connections.values())[:1]:
                seg = Segment(
                    conn.remote_port,
                    conn.local_port,
                    (conn.rcv_nxt + dseq) & 0xFFFFFFFF,
                    (conn.snd_una + dack) & 0xFFFFFFFF,
                    flags,
                    4096,
                    payload,
                    timestamps=((int(now * 1000) + 5) & 0xFFFFFFFF, 0) if with_ts else None,
                )
                server.receive(encode(seg), CLIENT, now)
        elif kind == "raw":
            assert isinstance(value, bytes)
            server.receive(value, CLIENT, now)
        elif kind == "time":
            assert isinstance(value, float)
            now += value
            for conn in list(server.connections.values()):
                deadline = conn.get_timer()
                if deadline is not None and deadline <= now:
                    conn.handle_timer(now)
            server.expire_time_wait(now)
        else:
            # the application reads and writes a little on a live connection
            for conn in list(server.connections.values())[:1]:
                conn.read(100, now)
                if conn.can_send:
                    conn.send(b"r" * 10, now)
        server.new_connections.clear()
        server.outbox.clear()
        for conn in list(server.connections.values()):
            conn.take_datagrams()
            server.settle(conn, now)
        _check(server)


def test_ack_flood_to_listener_is_answered_within_the_rst_limit() -> None:
    options = Options(rst_limit=10.0)
    server = EndpointCore(options, secret=b"s")
    server.listen(PORT, options)
    for i in range(1000):
        seg = Segment(2000 + i, PORT, i, i, ACK, 100)
        server.receive(encode(seg), CLIENT, 50.0)
    assert len(server.outbox) == 10  # the burst of the token bucket, nothing more
    assert server.counters["OutRstsLimited"] == 990
