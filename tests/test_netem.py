"""Tests for the sans-IO impairment model in utcp.netem."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from utcp.netem import GilbertElliott, Impairment, Link, LinkStats


def seqs(n: int) -> list[bytes]:
    """n distinct datagrams numbered 0..n-1."""
    return [i.to_bytes(4, "big") for i in range(n)]


def num(data: bytes) -> int:
    return int.from_bytes(data[:4], "big")


def drain(link: Link) -> list[tuple[float, bytes]]:
    """Pop everything, each datagram at exactly its delivery time."""
    out: list[tuple[float, bytes]] = []
    while (deadline := link.next_deadline()) is not None:
        out.extend((deadline, d) for d in link.pop_due(deadline))
    return out


def pump(
    link: Link, datagrams: list[bytes], *, interval: float = 0.0, t0: float = 0.0
) -> list[bytes]:
    """Submit datagrams ``interval`` apart, popping due ones as time goes by."""
    out: list[bytes] = []
    for i, d in enumerate(datagrams):
        now = t0 + i * interval
        out.extend(link.pop_due(now))
        link.submit(d, now)
    out.extend(d for _, d in drain(link))
    return out


def burst_lengths(lost: list[bool]) -> list[int]:
    runs: list[int] = []
    run = 0
    for x in lost:
        if x:
            run += 1
        elif run:
            runs.append(run)
            run = 0
    if run:
        runs.append(run)
    return runs


def check_invariant(link: Link) -> None:
    s = link.stats
    assert s.submitted + s.duplicated == s.delivered + s.dropped + link.pending


# -- no impairment -------------------------------------------------------------


def test_default_is_transparent() -> None:
    link = Link(Impairment(), seed=1)
    assert Impairment().is_noop
    data = seqs(100) + [b"", b"x" * 70000]
    for d in data:
        link.submit(d, 5.0)
    assert link.next_deadline() == 5.0
    assert link.pop_due(4.999) == []
    assert link.pop_due(5.0) == data
    assert link.next_deadline() is None
    assert link.stats == LinkStats(submitted=102, delivered=102)
    assert link.pending == 0 and link.pending_bytes == 0


# -- loss ----------------------------------------------------------------------


def test_iid_loss_rate() -> None:
    n = 100_000
    link = Link(Impairment(loss=0.1), seed=1234)
    out = pump(link, seqs(n))
    rate = link.stats.dropped_loss / n
    # std of the estimate is sqrt(0.09 / 1e5) ~= 0.00095; allow ~6 sigma.
    assert abs(rate - 0.1) < 0.006
    assert len(out) == n - link.stats.dropped_loss
    assert [num(d) for d in out] == sorted(num(d) for d in out)
    check_invariant(link)


def test_gilbert_elliott_bursts() -> None:
    n = 50_000
    ge = GilbertElliott(p_good_to_bad=0.01, p_bad_to_good=0.25, loss_good=0.0, loss_bad=1.0)
    burst = Link(Impairment(burst_loss=ge), seed=7)
    got = {num(d) for d in pump(burst, seqs(n))}
    lost_ge = [i not in got for i in range(n)]
    rate = sum(lost_ge) / n
    # Stationary bad-state probability 0.01 / 0.26 ~= 3.8%.
    assert 0.025 < rate < 0.055

    iid = Link(Impairment(loss=rate), seed=7)
    got_iid = {num(d) for d in pump(iid, seqs(n))}
    lost_iid = [i not in got_iid for i in range(n)]

    mean_ge = statistics.mean(burst_lengths(lost_ge))
    mean_iid = statistics.mean(burst_lengths(lost_iid))
    assert mean_ge > 3.0  # expected 1 / p_bad_to_good = 4
    assert mean_iid < 1.2
    assert mean_ge > 2 * mean_iid


def test_burst_loss_accepts_plain_tuple() -> None:
    imp = Impairment(burst_loss=(0.1, 0.5, 0.0, 1.0))
    assert isinstance(imp.burst_loss, GilbertElliott)
    assert imp.burst_loss.p_bad_to_good == 0.5


# -- duplication ------------------------------------------------------------------


def test_duplication() -> None:
    n = 20_000
    link = Link(Impairment(duplicate=0.25), seed=3)
    out = pump(link, seqs(n), interval=0.001)
    dup = link.stats.duplicated
    assert abs(dup / n - 0.25) < 0.02
    assert len(out) == n + dup == link.stats.delivered
    counts: dict[bytes, int] = {}
    for d in out:
        counts[d] = counts.get(d, 0) + 1
    assert set(counts) == set(seqs(n))
    assert sum(1 for c in counts.values() if c == 2) == dup
    assert max(counts.values()) == 2
    check_invariant(link)


# -- reordering --------------------------------------------------------------------


def test_reorder_changes_order() -> None:
    n = 2_000
    link = Link(Impairment(reorder=0.2, reorder_delay=0.05), seed=11)
    for i, d in enumerate(seqs(n)):
        link.submit(d, i * 0.001)
    out = drain(link)
    order = [num(d) for _, d in out]
    assert sorted(order) == list(range(n))  # nothing lost or duplicated
    assert order != list(range(n))
    held = link.stats.reordered
    assert abs(held / n - 0.2) < 0.04
    # Every held datagram arrives exactly reorder_delay late; the others on time.
    late = [t - num(d) * 0.001 for t, d in out]
    assert sum(1 for x in late if math.isclose(x, 0.05)) == held
    assert sum(1 for x in late if abs(x) < 1e-9) == n - held
    # Some datagram is overtaken by a later one.
    assert any(a > b for a, b in zip(order, order[1:], strict=False))


def test_jitter_can_reorder_and_is_bounded() -> None:
    n = 5_000
    link = Link(Impairment(delay=0.1, jitter=0.02), seed=5)
    for i, d in enumerate(seqs(n)):
        link.submit(d, i * 0.001)
    out = drain(link)
    delays = [t - num(d) * 0.001 for t, d in out]
    assert len(delays) == n
    assert min(delays) >= 0.08 - 1e-9
    assert max(delays) <= 0.12 + 1e-9
    assert min(delays) < 0.082 and max(delays) > 0.118  # the whole range is used
    assert abs(statistics.mean(delays) - 0.1) < 0.002
    order = [num(d) for _, d in out]
    assert order != sorted(order)
    assert [t for t, _ in out] == sorted(t for t, _ in out)  # delivery order


def test_jitter_larger_than_delay_is_clamped() -> None:
    link = Link(Impairment(delay=0.01, jitter=0.05), seed=2)
    for i, d in enumerate(seqs(1000)):
        link.submit(d, float(i))
    delays = [t - num(d) for t, d in drain(link)]
    assert min(delays) == 0.0
    assert max(delays) <= 0.06 + 1e-9


def test_fixed_delay() -> None:
    link = Link(Impairment(delay=0.25), seed=0)
    link.submit(b"a", 10.0)
    link.submit(b"b", 10.1)
    assert link.next_deadline() == pytest.approx(10.25)
    assert link.pop_due(10.2499) == []
    assert link.pop_due(10.25) == [b"a"]
    assert link.pop_due(11.0) == [b"b"]


# -- corruption ---------------------------------------------------------------------


def test_corruption_flips_one_to_three_bits() -> None:
    link = Link(Impairment(corrupt=1.0), seed=9)
    originals = [bytes(range(i % 200 + 1)) for i in range(500)]
    out = pump(link, originals)
    assert link.stats.corrupted == 500
    flips = []
    for a, b in zip(originals, out, strict=True):
        assert len(a) == len(b)
        diff = sum(bin(x ^ y).count("1") for x, y in zip(a, b, strict=True))
        assert 1 <= diff <= 3
        flips.append(diff)
    assert set(flips) == {1, 2, 3}


def test_corruption_rate_and_empty_datagrams() -> None:
    n = 10_000
    link = Link(Impairment(corrupt=0.3), seed=4)
    data = [b"\x00" * 16] * n
    out = pump(link, data)
    changed = sum(1 for d in out if d != b"\x00" * 16)
    assert changed == link.stats.corrupted
    assert abs(changed / n - 0.3) < 0.02

    empty = Link(Impairment(corrupt=1.0), seed=4)
    assert pump(empty, [b""]) == [b""]
    assert empty.stats.corrupted == 0


def test_corruption_does_not_mutate_input() -> None:
    buf = bytearray(b"hello world")
    link = Link(Impairment(corrupt=1.0), seed=1)
    link.submit(bytes(buf), 0.0)
    assert buf == bytearray(b"hello world")
    assert link.pop_due(0.0) != [b"hello world"]


# -- rate limiting ------------------------------------------------------------------


def test_rate_spaces_deliveries() -> None:
    link = Link(Impairment(rate=1000.0, queue_limit=10_000), seed=0)
    for d in seqs(5):
        link.submit(d + b"\x00" * 96, 0.0)  # 100 bytes each
    times = [t for t, _ in drain(link)]
    assert times == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


def test_rate_with_delay_and_idle_gap() -> None:
    link = Link(Impairment(rate=1000.0, delay=1.0), seed=0)
    link.submit(b"x" * 100, 0.0)
    link.submit(b"x" * 100, 0.0)
    link.submit(b"x" * 100, 5.0)  # the queue was empty again by then
    times = [t for t, _ in drain(link)]
    assert times == pytest.approx([1.1, 1.2, 6.1])


def test_rate_tail_drop_when_queue_full() -> None:
    link = Link(Impairment(rate=1000.0, queue_limit=1000), seed=0)
    for d in seqs(30):
        link.submit(d + b"\x00" * 96, 0.0)
    assert link.stats.dropped_queue == 20
    assert link.queued_bytes(0.0) == pytest.approx(1000)
    out = drain(link)
    assert [num(d) for _, d in out] == list(range(10))  # tail drop: the first ones survive
    # Half drained at t=0.5: room for five more, not six.
    link2 = Link(Impairment(rate=1000.0, queue_limit=1000), seed=0)
    for d in seqs(10):
        link2.submit(d + b"\x00" * 96, 0.0)
    for d in seqs(6):
        link2.submit(d + b"\x00" * 96, 0.5)
    assert link2.stats.dropped_queue == 1
    check_invariant(link2)


def test_datagram_larger_than_queue_is_dropped() -> None:
    link = Link(Impairment(rate=1e6, queue_limit=100), seed=0)
    link.submit(b"x" * 101, 0.0)
    link.submit(b"x" * 100, 0.0)
    assert link.stats.dropped_queue == 1
    assert len(drain(link)) == 1


def test_max_pending_bounds() -> None:
    link = Link(Impairment(delay=1.0), seed=0, max_pending=3, max_pending_bytes=250)
    for _ in range(5):
        link.submit(b"x" * 10, 0.0)
    assert link.pending == 3 and link.stats.dropped_queue == 2
    link.pop_due(1.0)
    link.submit(b"y" * 200, 1.0)
    link.submit(b"z" * 100, 1.0)  # 300 bytes > 250
    assert link.pending == 1 and link.pending_bytes == 200
    assert link.stats.dropped_queue == 3
    check_invariant(link)


# -- blackouts ----------------------------------------------------------------------


def test_blackout_drops_exactly_in_window() -> None:
    link = Link(Impairment(blackouts=[(1.0, 0.5), (2.0, 0.25)]), seed=0, start=10.0)
    sent = []
    for i in range(300):
        now = 10.0 + i / 100
        sent.append((now, i.to_bytes(4, "big")))
        link.submit(sent[-1][1], now)
    got = {num(d) for _, d in drain(link)}
    for now, d in sent:
        rel = now - 10.0
        in_window = 1.0 <= rel < 1.5 or 2.0 <= rel < 2.25
        assert (num(d) not in got) == in_window, rel
    assert link.stats.dropped_blackout == 300 - len(got) == 50 + 25


def test_blackout_start_defaults_to_first_submit() -> None:
    link = Link(Impairment(blackouts=[(0.5, 0.5)]), seed=0)
    assert not link.in_blackout(100.7)  # not started yet
    link.submit(b"a", 100.0)
    assert link.start == 100.0
    link.submit(b"b", 100.49)
    link.submit(b"c", 100.5)
    link.submit(b"d", 100.99)
    link.submit(b"e", 101.0)
    assert [d for _, d in drain(link)] == [b"a", b"b", b"e"]
    assert link.stats.dropped_blackout == 2


# -- determinism --------------------------------------------------------------------

EVERYTHING = Impairment(
    loss=0.05,
    burst_loss=(0.02, 0.3, 0.0, 0.8),
    duplicate=0.05,
    reorder=0.1,
    reorder_delay=0.02,
    delay=0.05,
    jitter=0.01,
    corrupt=0.05,
    rate=200_000.0,
    queue_limit=20_000,
    blackouts=[(0.5, 0.1)],
)


def run_everything(seed: int) -> tuple[list[tuple[float, bytes]], LinkStats]:
    link = Link(EVERYTHING, seed=seed)
    out: list[tuple[float, bytes]] = []
    for i in range(3000):
        now = i * 0.0005
        out.extend((now, d) for d in link.pop_due(now))
        link.submit(i.to_bytes(4, "big") * 50, now)
    out.extend(drain(link))
    check_invariant(link)
    return out, link.stats


def test_determinism() -> None:
    a, stats_a = run_everything(42)
    b, stats_b = run_everything(42)
    c, stats_c = run_everything(43)
    assert a == b and stats_a == stats_b
    assert a != c
    # Every kind of impairment actually happened.
    for name in (
        "dropped_loss",
        "dropped_blackout",
        "dropped_queue",
        "duplicated",
        "reordered",
        "corrupted",
    ):
        assert getattr(stats_a, name) > 0, name


def test_stats_helpers() -> None:
    s = LinkStats(submitted=3, dropped_loss=1, dropped_queue=1)
    assert s.dropped == 2
    total = s + LinkStats(submitted=1, dropped_blackout=1)
    assert total.as_dict()["submitted"] == 4
    assert total.dropped == 3


# -- validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": 1.5}, "loss must be a probability"),
        ({"loss": -0.1}, "loss must be a probability"),
        ({"loss": float("nan")}, "loss must be finite"),
        ({"loss": "0.1"}, "loss must be a number"),
        ({"duplicate": 2}, "duplicate"),
        ({"reorder": -1}, "reorder"),
        ({"corrupt": 1.01}, "corrupt"),
        ({"delay": -0.1}, "delay must be >= 0"),
        ({"jitter": float("inf")}, "jitter must be finite"),
        ({"reorder_delay": -1}, "reorder_delay"),
        ({"rate": 0}, "rate must be > 0"),
        ({"rate": -5.0}, "rate must be > 0"),
        ({"queue_limit": 0}, "queue_limit must be >= 1"),
        ({"queue_limit": 1.5}, "queue_limit must be an integer"),
        ({"burst_loss": (0.1, 0.2, 0.3)}, "burst_loss must be four"),
        ({"burst_loss": (0.1, 0.2, 0.3, 1.2)}, "burst_loss.loss_bad"),
        ({"blackouts": [(1.0,)]}, "start, duration"),
        ({"blackouts": [(-1.0, 1.0)]}, "blackout start"),
        ({"blackouts": [(1.0, 0.0)]}, "blackout duration must be > 0"),
    ],
)
def test_validation(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Impairment(**kwargs)  # type: ignore[arg-type]


# -- properties ---------------------------------------------------------------------

impairments = st.builds(
    Impairment,
    loss=st.floats(0, 1),
    duplicate=st.floats(0, 1),
    reorder=st.floats(0, 1),
    reorder_delay=st.floats(0, 0.1),
    delay=st.floats(0, 0.5),
    jitter=st.floats(0, 0.5),
    corrupt=st.floats(0, 1),
    rate=st.none() | st.floats(100, 1e6),
    queue_limit=st.integers(1, 5000),
    blackouts=st.lists(st.tuples(st.floats(0, 2), st.floats(0.01, 1)), max_size=2),
)


@settings(max_examples=60, deadline=None)
@given(
    imp=impairments,
    seed=st.integers(0, 2**32),
    steps=st.lists(st.tuples(st.floats(0, 0.1), st.binary(max_size=300)), max_size=60),
)
def test_properties(imp: Impairment, seed: int, steps: list[tuple[float, bytes]]) -> None:
    link = Link(imp, seed=seed)
    now = 0.0
    out_times: list[float] = []
    out_lengths: list[int] = []
    for gap, data in steps:
        now += gap
        for d in link.pop_due(now):
            out_times.append(now)
            out_lengths.append(len(d))
        link.submit(data, now)
        deadline = link.next_deadline()
        assert deadline is None or deadline >= now  # nothing is delivered before it is sent
        check_invariant(link)
    for t, d in drain(link):
        assert t >= now
        out_times.append(t)
        out_lengths.append(len(d))
    assert out_times == sorted(out_times)
    assert set(out_lengths) <= {len(d) for _, d in steps}
    check_invariant(link)
    assert link.pending == 0 and link.pending_bytes == 0
