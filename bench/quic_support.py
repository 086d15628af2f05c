"""aioquic driven on Trio for the bulk comparison.

aioquic is sans-IO like utcp's core, so both sides are driven the same way
utcp's endpoint drives its core: a non-blocking UDP socket, wait until
readable, drain every queued datagram into ``receive_datagram``, process
events, then send everything ``datagrams_to_send`` returns; ``get_timer`` /
``handle_timer`` for timers.  Client and server run in this process, each in
its own task.  The server's TLS certificate is a self-signed P-256 one made
at runtime with ``cryptography`` in a temporary directory.

Settings: aioquic defaults (Reno congestion control, 1 MiB stream and
connection flow-control windows) except ``max_datagram_size=1472``, the UDP
payload size of a full utcp segment, so both send datagrams of the same size.
The stream is fed 64 KiB at a time while less than 1 MiB is buffered.
"""

from __future__ import annotations

import datetime
import math
import os
import socket as stdsocket
import ssl
import tempfile
import time
from collections.abc import Callable
from typing import Any

import trio

_cert_cache: tuple[str, str] | None = None
_CHUNK = 64 * 1024
_DATA = b"\x3c" * _CHUNK


def make_self_signed_cert() -> tuple[str, str]:
    """Create (once per process) a self-signed cert + key; returns their file paths."""
    global _cert_cache
    if _cert_cache is not None and all(os.path.exists(p) for p in _cert_cache):
        return _cert_cache
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory = tempfile.mkdtemp(prefix="utcp-bench-quic-")
    certfile = os.path.join(directory, "cert.pem")
    keyfile = os.path.join(directory, "key.pem")
    with open(certfile, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(keyfile, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    _cert_cache = (certfile, keyfile)
    return _cert_cache


def _udp_socket() -> stdsocket.socket:
    s = stdsocket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
    s.setblocking(False)
    for opt in (stdsocket.SO_RCVBUF, stdsocket.SO_SNDBUF):
        s.setsockopt(stdsocket.SOL_SOCKET, opt, 4 * 1024 * 1024)
    s.bind(("127.0.0.1", 0))
    return s


async def _drive(
    sock: stdsocket.socket,
    get_conn: Callable[[bytes, Any], Any],
    on_events: Callable[[Any], None],
    done: trio.Event,
) -> None:
    """Run one QUIC endpoint until ``done`` is set.

    ``get_conn(datagram, addr)`` returns the QuicConnection for an arriving
    datagram (the server creates it on the first one); ``on_events(conn)``
    handles events and may queue stream data.
    """
    conn = get_conn(b"", None)
    while not done.is_set():
        if conn is not None:
            now = trio.current_time()
            for data, addr in conn.datagrams_to_send(now=now):
                while True:
                    try:
                        sock.sendto(data, addr)
                        break
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(sock)
            timer = conn.get_timer()
        else:
            timer = None
        with trio.move_on_at(math.inf if timer is None else timer):
            await trio.lowlevel.wait_readable(sock)
        now = trio.current_time()
        got = False
        while True:
            try:
                data, addr = sock.recvfrom(65536)
            except BlockingIOError:
                break
            if conn is None:
                conn = get_conn(data, addr)
            conn.receive_datagram(data, addr, now=now)
            got = True
        if conn is None:
            continue
        if not got:
            timer = conn.get_timer()
            if timer is not None and now >= timer:
                conn.handle_timer(now=now)
        on_events(conn)
        await trio.sleep(0)


async def quic_bulk(total: int) -> tuple[float, dict[str, Any]]:
    """Send ``total`` bytes client->server on one stream; returns (elapsed, extra)."""
    try:
        from aioquic.buffer import Buffer
        from aioquic.quic import events
        from aioquic.quic.configuration import QuicConfiguration
        from aioquic.quic.connection import QuicConnection
        from aioquic.quic.packet import pull_quic_header
    except ImportError as exc:
        from .common import Unavailable

        raise Unavailable(f"aioquic not importable: {exc}") from None

    certfile, keyfile = make_self_signed_cert()
    server_cfg = QuicConfiguration(is_client=False, alpn_protocols=["bench"])
    server_cfg.max_datagram_size = 1472
    server_cfg.load_cert_chain(certfile, keyfile)
    client_cfg = QuicConfiguration(
        is_client=True, alpn_protocols=["bench"], server_name="localhost"
    )
    client_cfg.verify_mode = ssl.CERT_NONE
    client_cfg.max_datagram_size = 1472

    ssock = _udp_socket()
    csock = _udp_socket()
    server_addr = ssock.getsockname()
    done = trio.Event()
    handshake = trio.Event()
    state: dict[str, Any] = {"received": 0, "written": 0, "t0": None, "t1": None, "sid": None}

    def server_conn(data: bytes, addr: Any) -> Any:
        if not data:
            return None
        header = pull_quic_header(Buffer(data=data), host_cid_length=8)
        return QuicConnection(
            configuration=server_cfg,
            original_destination_connection_id=header.destination_cid,
        )

    def server_events(conn: Any) -> None:
        while (ev := conn.next_event()) is not None:
            if isinstance(ev, events.StreamDataReceived):
                state["received"] += len(ev.data)
                if ev.end_stream:
                    conn.send_stream_data(ev.stream_id, b"", end_stream=True)

    client = QuicConnection(configuration=client_cfg)
    client.connect(server_addr, now=trio.current_time())

    def client_conn(data: bytes, addr: Any) -> Any:
        return client

    def feed(conn: Any) -> None:
        sid = state["sid"]
        if sid is None or state["written"] >= total:
            return
        stream = conn._streams.get(sid)  # private, but the only way to see the buffer
        buffered = len(stream.sender._buffer) if stream is not None else 0
        while buffered < (1 << 20) and state["written"] < total:
            n = min(_CHUNK, total - state["written"])
            state["written"] += n
            conn.send_stream_data(
                sid, _DATA if n == _CHUNK else _DATA[:n], end_stream=state["written"] >= total
            )
            buffered += n

    def client_events(conn: Any) -> None:
        while (ev := conn.next_event()) is not None:
            if isinstance(ev, events.HandshakeCompleted):
                handshake.set()
                state["sid"] = conn.get_next_available_stream_id()
                state["t0"] = time.perf_counter()
            elif isinstance(ev, events.StreamDataReceived) and ev.end_stream:
                state["t1"] = time.perf_counter()
                done.set()
            elif isinstance(ev, events.ConnectionTerminated):
                raise RuntimeError(f"QUIC connection terminated: {ev.reason_phrase}")
        feed(conn)

    with ssock, csock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drive, ssock, server_conn, server_events, done)
            nursery.start_soon(_drive, csock, client_conn, client_events, done)
            await done.wait()
            nursery.cancel_scope.cancel()
    if state["received"] != total:
        raise RuntimeError(f"QUIC server received {state['received']} bytes, expected {total}")
    return state["t1"] - state["t0"], {"max_datagram_size": 1472, "congestion": "reno"}
