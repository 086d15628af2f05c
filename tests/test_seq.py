"""Tests for utcp._core.seq: sequence-number arithmetic modulo 2**32 (RFC 9293 3.4).

The hypothesis properties compare against reference formulas written
differently from the module: signed 32-bit reinterpretation through
``int.from_bytes(..., signed=True)`` for distances, and explicit interval
splitting for windows that cross the wrap.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from utcp._core.seq import (
    HALF,
    MASK,
    MOD,
    seq_add,
    seq_ge,
    seq_gt,
    seq_in,
    seq_le,
    seq_lt,
    seq_max,
    seq_sub,
)

TOP = 2**32

SETTINGS = settings(deadline=None, derandomize=True, database=None, max_examples=500)

seqs = st.one_of(
    st.integers(0, TOP - 1),
    st.integers(TOP - 2**12, TOP - 1),
    st.integers(0, 2**12),
    st.integers(2**31 - 2**12, 2**31 + 2**12),
)
distances = st.one_of(
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**12), 2**12),
    st.sampled_from([-(2**31), -(2**31) + 1, -1, 0, 1, 2**31 - 2, 2**31 - 1]),
)


def ref_s32(value: int) -> int:
    """``value`` modulo 2**32, reinterpreted as a two's complement int32."""
    return int.from_bytes((value % TOP).to_bytes(4, "big"), "big", signed=True)


def ref_sub(a: int, b: int) -> int:
    return ref_s32(a - b)


def ref_lt(a: int, b: int) -> bool:
    # b lies 1 .. 2**31 - 1 steps ahead of a.
    return 0 < ref_s32(b - a) < 2**31


def ref_in(x: int, start: int, length: int) -> bool:
    end = start + length  # exclusive, unwrapped
    if end <= TOP:
        return start <= x < end
    return x >= start or x < end - TOP


def test_constants() -> None:
    assert MOD == TOP
    assert MASK == TOP - 1
    assert HALF == 2**31


def test_wrap_examples() -> None:
    assert seq_lt(2**32 - 10, 5)
    assert seq_le(2**32 - 10, 5)
    assert not seq_gt(2**32 - 10, 5)
    assert not seq_ge(2**32 - 10, 5)
    assert seq_gt(5, 2**32 - 10)
    assert seq_ge(5, 2**32 - 10)
    assert not seq_lt(5, 2**32 - 10)
    assert seq_lt(2**32 - 1, 0)
    assert seq_gt(0, 2**32 - 1)
    assert seq_max(2**32 - 10, 5) == 5
    assert seq_max(5, 2**32 - 10) == 5
    assert seq_add(2**32 - 1, 1) == 0
    assert seq_add(2**32 - 10, 15) == 5
    assert seq_add(3, -5) == 2**32 - 2


def test_non_wrap_examples() -> None:
    assert seq_lt(1, 2) and not seq_lt(2, 1) and not seq_lt(7, 7)
    assert seq_le(7, 7) and seq_ge(7, 7) and not seq_gt(7, 7)
    assert seq_max(100, 200) == 200
    assert seq_max(2**31 - 1, 0) == 2**31 - 1


def test_seq_sub_signs() -> None:
    assert seq_sub(5, 2**32 - 10) == 15
    assert seq_sub(2**32 - 10, 5) == -15
    assert seq_sub(0, 2**32 - 1) == 1
    assert seq_sub(2**32 - 1, 0) == -1
    assert seq_sub(10, 3) == 7
    assert seq_sub(3, 10) == -7
    assert seq_sub(42, 42) == 0
    assert seq_sub(2**31 - 1, 0) == 2**31 - 1
    # The antipode maps to the bottom of the range [-2**31, 2**31).
    assert seq_sub(2**31, 0) == -(2**31)
    assert seq_sub(0, 2**31) == -(2**31)


def test_seq_in_window_crossing_wrap() -> None:
    start, length = 2**32 - 5, 10  # covers 2**32-5 .. 2**32-1, 0 .. 4
    for x in [2**32 - 5, 2**32 - 1, 0, 4]:
        assert seq_in(x, start, length)
    for x in [2**32 - 6, 5, 2**31, 1000]:
        assert not seq_in(x, start, length)


def test_seq_in_edges() -> None:
    assert not seq_in(7, 7, 0)  # an empty window holds nothing
    assert seq_in(7, 7, 1)
    assert not seq_in(8, 7, 1)
    assert not seq_in(6, 7, 1)
    assert seq_in(2**32 - 1, 2**32 - 1, 1)
    assert not seq_in(0, 2**32 - 1, 1)
    assert seq_in(0, 2**32 - 1, 2)
    # A window of the whole space holds everything.
    for x in [0, 1, 2**31, 2**32 - 1]:
        assert seq_in(x, 12345, 2**32)


@SETTINGS
@given(seqs, seqs)
def test_comparisons_match_reference(a: int, b: int) -> None:
    assert seq_lt(a, b) == ref_lt(a, b)
    assert seq_gt(a, b) == ref_lt(b, a)
    assert seq_le(a, b) == (ref_lt(a, b) or a == b)
    assert seq_ge(a, b) == (ref_lt(b, a) or a == b)


@SETTINGS
@given(seqs, seqs)
def test_comparison_consistency(a: int, b: int) -> None:
    assert seq_gt(a, b) == seq_lt(b, a)
    assert seq_ge(a, b) == seq_le(b, a)
    assert seq_le(a, b) == (seq_lt(a, b) or a == b)
    assert not (seq_lt(a, b) and seq_lt(b, a))
    if (a - b) % TOP != HALF:
        # Away from the antipode exactly one of <, ==, > holds.
        assert [seq_lt(a, b), a == b, seq_gt(a, b)].count(True) == 1
    assert seq_lt(a, b) == (seq_sub(a, b) < 0 and (a - b) % TOP != HALF)


@SETTINGS
@given(seqs, seqs)
def test_seq_sub_matches_reference(a: int, b: int) -> None:
    d = seq_sub(a, b)
    assert d == ref_sub(a, b)
    assert -(2**31) <= d < 2**31
    assert (b + d) % TOP == a
    assert seq_add(b, d) == a


@SETTINGS
@given(seqs, distances)
def test_seq_add_then_sub(a: int, n: int) -> None:
    b = seq_add(a, n)
    assert b == (a + n) % TOP
    assert 0 <= b < TOP
    assert seq_sub(b, a) == n
    if n > 0:
        assert seq_lt(a, b) and seq_gt(b, a)
    elif n < 0 and n != -(2**31):
        assert seq_gt(a, b) and seq_lt(b, a)


@SETTINGS
@given(seqs, seqs)
def test_seq_max(a: int, b: int) -> None:
    m = seq_max(a, b)
    assert m in (a, b)
    if (a - b) % TOP != HALF:
        assert m == (b if ref_lt(a, b) else a)
        assert m == seq_max(b, a)
        assert seq_ge(m, a) and seq_ge(m, b)


@SETTINGS
@given(
    x=seqs,
    start=seqs,
    length=st.one_of(
        st.integers(0, 2**32),
        st.integers(0, 2**16),
        st.sampled_from([0, 1, 2**31, 2**32 - 1, 2**32]),
    ),
)
def test_seq_in_matches_reference(x: int, start: int, length: int) -> None:
    assert seq_in(x, start, length) == ref_in(x, start, length)


@SETTINGS
@given(start=seqs, length=st.integers(1, 2**20), offset=st.integers(-(2**20), 2**21))
def test_seq_in_offsets(start: int, length: int, offset: int) -> None:
    x = (start + offset) % TOP
    assert seq_in(x, start, length) == (0 <= offset < length)


@pytest.mark.parametrize("a", [0, 1, 2**31 - 1, 2**31, 2**32 - 1])
def test_antipode_is_neither_before_nor_after(a: int) -> None:
    # RFC 1982 leaves the antipode undefined; the helpers at least never
    # claim both orders at once.
    b = (a + 2**31) % TOP
    assert not (seq_lt(a, b) and seq_gt(a, b))
    assert not (seq_lt(a, b) and seq_lt(b, a))
