"""SYN cookies: a stateless SYN-ACK whose ISN proves the handshake later.

When a listener's SYN queue is full (``syncookies="auto"``) or always
(``"always"``), the endpoint answers a SYN without creating any state.  The
ISN of its SYN-ACK is a cookie, built as Linux builds its own from

* a 5-bit time counter (64-second slots),
* a 3-bit index into a table of common MSS values,
* a 24-bit keyed MAC (HMAC-SHA256 from the ``cryptography`` package) over the
  4-tuple, the client's ISN and the full time counter (only its low 5 bits
  travel in the cookie; the checker rebuilds the rest from its own clock).

The client's ACK carries ``cookie + 1``; if the MAC verifies and the counter
is at most :data:`MAX_AGE_SLOTS` old, the connection is created directly in
ESTABLISHED.  As in Linux without timestamps, the options a cookie cannot
carry (window scale, SACK, timestamps) are off for such a connection.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, hmac

from .seq import MASK

__all__ = ["MSS_TABLE", "SLOT_SECONDS", "check_cookie", "make_cookie"]

#: MSS values a cookie can encode (index in 3 bits), as Linux's msstab does.
MSS_TABLE = (536, 1200, 1300, 1380, 1400, 1412, 1432, 1452)
SLOT_SECONDS = 64.0
MAX_AGE_SLOTS = 2  # about two minutes, as Linux's MAX_SYNCOOKIE_AGE


def _mac(secret: bytes, tuple_id: bytes, client_isn: int, slot: int) -> int:
    # The MAC covers the full slot counter, not just the 5 bits the cookie
    # carries, so a cookie never verifies again 32 slots later (as Linux).
    h = hmac.HMAC(secret, hashes.SHA256())
    h.update(tuple_id + client_isn.to_bytes(4, "big") + slot.to_bytes(8, "big", signed=True))
    return int.from_bytes(h.finalize()[:3], "big")


def _slot(now: float) -> int:
    return int(now // SLOT_SECONDS)


def make_cookie(secret: bytes, tuple_id: bytes, client_isn: int, mss: int, now: float) -> int:
    """The ISN to answer a SYN with: time slot, MSS index and MAC in 32 bits."""
    index = 0
    for i, value in enumerate(MSS_TABLE):
        if value <= mss:
            index = i
    slot = _slot(now)
    return (((slot & 0x1F) << 27) | (index << 24) | _mac(secret, tuple_id, client_isn, slot)) & MASK


def check_cookie(
    secret: bytes, tuple_id: bytes, client_isn: int, cookie: int, now: float
) -> int | None:
    """The MSS encoded in a valid, fresh ``cookie``; None if forged or stale."""
    current = _slot(now)
    age = (current - (cookie >> 27)) & 0x1F
    if age > MAX_AGE_SLOTS:
        return None
    if _mac(secret, tuple_id, client_isn, current - age) != cookie & 0xFFFFFF:
        return None
    return MSS_TABLE[(cookie >> 24) & 0x7]
