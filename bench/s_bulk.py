"""Scenario 1: bulk transfer over one connection, five ways.

Every variant is timed the same way: the clock starts when the connection is
ready (after the handshake) and the sender writes its first 64 KiB chunk; it
stops when the sender sees the receiver's end-of-stream, which the receiver
sends only after it has read every byte.  MB/s = bytes / elapsed / 10**6.
"""

from __future__ import annotations

import time
from typing import Any

import trio

import utcp

from .common import MB, PAYLOAD, Child, Sizes, send_then_drain


async def _utcp_sink(conn: utcp.Connection) -> int:
    got = 0
    while True:
        data = await conn.recv(1 << 20)
        if not data:
            break
        got += len(data)
    await conn.close()
    return got


def _retx_fields(info: dict[str, Any], total: int) -> dict[str, Any]:
    """Retransmission counters: utcp's own, and an independent estimate.

    The estimate is segments the sender emitted beyond the minimum (one per
    MSS of data, plus SYN and FIN): it does not depend on utcp's counters.
    """
    mss = int(info.get("snd_mss") or PAYLOAD)
    minimum = -(-total // mss) + 2
    return {
        "total_retransmits": info.get("total_retransmits"),
        "segments_out": info.get("segments_out"),
        "extra_segments": max(0, int(info.get("segments_out", 0)) - minimum),
    }


async def bulk_utcp(sizes: Sizes) -> dict[str, Any]:
    """utcp sender and receiver on two endpoints in this process."""
    total = sizes.bulk_bytes
    async with (
        utcp.open_endpoint(("127.0.0.1", 0)) as server_ep,
        utcp.open_endpoint(("127.0.0.1", 0)) as client_ep,
    ):
        listener = server_ep.listen()
        got = 0
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                nonlocal got
                got = await _utcp_sink(await listener.accept())

            nursery.start_soon(serve)
            conn = await client_ep.connect(server_ep.local_address)
            elapsed = await send_then_drain(conn, total)
            info = conn.info()
            await conn.close()
    if got != total:
        raise RuntimeError(f"receiver got {got} bytes, expected {total}")
    return {"mbps": total / elapsed / MB, "extra": _retx_fields(info, total)}


async def bulk_utcp_2proc(sizes: Sizes) -> dict[str, Any]:
    """utcp sender here, receiver in a ``python -m bench.peer sink`` child process."""
    total = sizes.bulk_bytes
    async with Child(["sink"]) as child:
        hello = await child.read_json()
        async with utcp.open_endpoint(("127.0.0.1", 0)) as ep:
            conn = await ep.connect(tuple(hello["address"]), hello["port"])
            elapsed = await send_then_drain(conn, total)
            info = conn.info()
            await conn.close()
        report = await child.read_json()
    if report["received"] != total:
        raise RuntimeError(f"child received {report['received']} bytes, expected {total}")
    return {"mbps": total / elapsed / MB, "extra": _retx_fields(info, total)}


async def bulk_tcp(sizes: Sizes) -> dict[str, Any]:
    """Kernel TCP on 127.0.0.1 through Trio's SocketStream (the same 64 KiB writes)."""
    total = sizes.bulk_bytes
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    got = 0
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            nonlocal got
            async with listeners[0]:
                stream = await listeners[0].accept()
            async with stream:
                while True:
                    data = await stream.receive_some(1 << 20)
                    if not data:
                        break
                    got += len(data)

        nursery.start_soon(serve)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            elapsed = await send_then_drain(stream, total)
    if got != total:
        raise RuntimeError(f"receiver got {got} bytes, expected {total}")
    return {"mbps": total / elapsed / MB}


# ----------------------------------------------------------------------
# Raw Trio UDP

_UDP_WINDOW = 176  # datagrams in flight: 176 * 1452 ~ utcp's 256 KiB receive window
_UDP_ACK_EVERY = 16  # the receiver reports its count every 16 datagrams
_UDP_STALL = 0.05  # no report for this long: presume the window lost and go on


async def bulk_udp(sizes: Sizes) -> dict[str, Any]:
    """Raw Trio UDP: the cost floor of "one ``await sock.sendto`` per datagram".

    Method: the sender does one ``await sock.sendto`` of a 1452-byte payload
    (utcp's MSS, so the same datagram count as utcp) per datagram; the
    receiver does one ``await sock.recv`` per datagram and counts datagrams
    and bytes.  To keep the sender from overrunning the receiver (which would
    measure drops, not delivery), the receiver sends its cumulative count
    back every 16 datagrams and the sender keeps at most 176 datagrams
    (~256 KiB, utcp's default receive window) unreported.  If no report
    arrives for 50 ms the sender presumes the outstanding ones lost and goes
    on (nothing is retransmitted; losses are reported, normally 0 on
    loopback).  At the end the sender sends an end marker until the receiver
    answers with its final byte count.  MB/s counts *delivered* payload
    bytes.  There is no header, checksum, reordering or retransmission work,
    but there is a Trio checkpoint and one system call per datagram each
    way: this is the cost floor of a protocol built on Trio UDP *that way*.
    utcp's endpoint does not work that way (it sends with non-blocking
    ``sendto``/``sendmsg``, using UDP GSO when the kernel has it, and drains
    the socket in batches with ``recvmsg``/GRO, without a checkpoint per
    datagram), so it can beat this baseline.  Both sockets use 4 MiB
    buffers, like utcp's endpoint.
    """
    import socket as stdsocket

    count = max(1, sizes.bulk_bytes // PAYLOAD)
    payload = b"\x5a" * PAYLOAD
    rx = trio.socket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
    tx = trio.socket.socket(stdsocket.AF_INET, stdsocket.SOCK_DGRAM)
    for s in (rx, tx):
        for opt in (stdsocket.SO_RCVBUF, stdsocket.SO_SNDBUF):
            s.setsockopt(stdsocket.SOL_SOCKET, opt, 4 * 1024 * 1024)
    with rx, tx:
        await rx.bind(("127.0.0.1", 0))
        await tx.bind(("127.0.0.1", 0))
        rx_addr = rx.getsockname()
        tx_addr = tx.getsockname()
        reported = 0  # receiver's cumulative count, as last reported
        final: tuple[int, int] | None = None
        progress = trio.Event()
        stalls = 0

        async def receiver() -> None:
            n = 0
            nbytes = 0
            while True:
                data = await rx.recv(65536)
                if len(data) == 1:  # end marker
                    await rx.sendto(
                        b"F" + n.to_bytes(8, "big") + nbytes.to_bytes(8, "big"), tx_addr
                    )
                    continue
                n += 1
                nbytes += len(data)
                if n % _UDP_ACK_EVERY == 0:
                    await rx.sendto(b"A" + n.to_bytes(8, "big"), tx_addr)

        async def report_reader() -> None:
            nonlocal reported, final, progress
            while True:
                data = await tx.recv(64)
                if data[:1] == b"A":
                    reported = max(reported, int.from_bytes(data[1:9], "big"))
                else:
                    final = (int.from_bytes(data[1:9], "big"), int.from_bytes(data[9:17], "big"))
                progress.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            nursery.start_soon(report_reader)
            await trio.sleep(0)
            t0 = time.perf_counter()
            sent = 0
            written_off = 0  # datagrams presumed lost after a stall
            while sent < count:
                while sent < count and sent - reported - written_off < _UDP_WINDOW:
                    await tx.sendto(payload, rx_addr)
                    sent += 1
                if sent >= count:
                    break
                progress = trio.Event()
                with trio.move_on_after(_UDP_STALL) as scope:
                    await progress.wait()
                if scope.cancelled_caught:
                    stalls += 1
                    written_off = sent - reported
            while final is None:
                await tx.sendto(b"E", rx_addr)
                progress = trio.Event()
                with trio.move_on_after(_UDP_STALL):
                    await progress.wait()
            elapsed = time.perf_counter() - t0
            nursery.cancel_scope.cancel()
    received, nbytes = final
    return {
        "mbps": nbytes / elapsed / MB,
        "extra": {"datagrams_sent": count, "datagrams_lost": count - received, "stalls": stalls},
    }


# ----------------------------------------------------------------------
# aioquic


async def bulk_quic(sizes: Sizes) -> dict[str, Any]:
    """aioquic, one bidirectional stream (see :mod:`bench.quic_support`)."""
    from .quic_support import quic_bulk

    total = sizes.quic_bytes
    elapsed, extra = await quic_bulk(total)
    return {"mbps": total / elapsed / MB, "extra": extra}
