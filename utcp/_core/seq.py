"""Sequence-number arithmetic modulo 2**32 (RFC 9293 3.4).

Every comparison of sequence numbers in utcp goes through these helpers, so
wrap-around is handled in one place.
"""

from __future__ import annotations

MOD = 1 << 32
MASK = MOD - 1
HALF = 1 << 31


def seq_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32."""
    return (a + n) & MASK


def seq_sub(a: int, b: int) -> int:
    """Signed distance ``a - b`` in the range [-2**31, 2**31)."""
    d = (a - b) & MASK
    return d - MOD if d >= HALF else d


def seq_lt(a: int, b: int) -> bool:
    """``a`` comes strictly before ``b``."""
    return 0 < ((b - a) & MASK) < HALF


def seq_le(a: int, b: int) -> bool:
    """``a`` comes before ``b`` or equals it."""
    return ((b - a) & MASK) < HALF


def seq_gt(a: int, b: int) -> bool:
    """``a`` comes strictly after ``b``."""
    return 0 < ((a - b) & MASK) < HALF


def seq_ge(a: int, b: int) -> bool:
    """``a`` comes after ``b`` or equals it."""
    return ((a - b) & MASK) < HALF


def seq_max(a: int, b: int) -> int:
    """The later of two sequence numbers."""
    return a if ((a - b) & MASK) < HALF else b


def seq_in(x: int, start: int, length: int) -> bool:
    """``start <= x < start + length`` modulo 2**32."""
    return ((x - start) & MASK) < length
