"""A sans-IO model of a bad network path, in the spirit of Linux ``netem``.

Nothing here imports trio, reads a clock or uses global randomness.  Every
call that depends on time takes ``now`` (seconds, from whatever monotonic
clock the driver uses) and every random decision is drawn from a
:class:`random.Random` owned by the :class:`Link`, so the same seed and the
same sequence of ``submit``/``pop_due`` calls always give the same result.

A :class:`Link` models one direction of a path.  A datagram handed to
:meth:`Link.submit` goes through these stages, in order:

1. **blackout** -- dropped if submitted inside a blackout window;
2. **loss** -- dropped with the iid probability ``loss`` or by the
   Gilbert-Elliott burst model ``burst_loss``;
3. **duplication** -- with probability ``duplicate`` a second copy is made;
   every copy then goes through the remaining stages independently;
4. **corruption** -- with probability ``corrupt`` 1 to 3 distinct bits are
   flipped (the length is unchanged);
5. **rate** -- if ``rate`` is set the copy waits in a FIFO of at most
   ``queue_limit`` bytes to be serialised at ``rate`` bytes/s; it is
   tail-dropped if it does not fit;
6. **delay** -- ``delay`` seconds of propagation delay plus a uniform jitter
   in ``[-jitter, +jitter]`` (never negative in total).  As with netem,
   jitter alone can reorder datagrams;
7. **reorder** -- with probability ``reorder`` the copy is held back for an
   extra ``reorder_delay`` seconds, so that later datagrams overtake it.

Delivered datagrams come out of :meth:`Link.pop_due` in delivery-time order
(ties in submission order).  Once everything has been popped::

    submitted + duplicated == delivered + dropped
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass, field, fields
from typing import NamedTuple

__all__ = ["GilbertElliott", "Impairment", "Link", "LinkStats"]


class GilbertElliott(NamedTuple):
    """Parameters of a two-state Gilbert-Elliott burst-loss model.

    Before each datagram the chain moves from the good to the bad state with
    probability ``p_good_to_bad`` (or back with ``p_bad_to_good``); the
    datagram is then lost with ``loss_good`` or ``loss_bad`` depending on the
    state.  The mean length of a bad period is ``1 / p_bad_to_good``.
    """

    p_good_to_bad: float
    p_bad_to_good: float
    loss_good: float
    loss_bad: float


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return result


def _probability(name: str, value: object) -> float:
    result = _number(name, value)
    if not 0.0 <= result <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return result


def _non_negative(name: str, value: object) -> float:
    result = _number(name, value)
    if result < 0.0:
        raise ValueError(f"{name} must be >= 0 seconds, got {value!r}")
    return result


@dataclass
class Impairment:
    """What a :class:`Link` does to the datagrams it carries.

    Every field defaults to "no impairment".  Probabilities are in [0, 1],
    times are in seconds, ``rate`` is in bytes per second and
    ``queue_limit`` in bytes.  ``blackouts`` is a list of
    ``(start, duration)`` pairs, relative to the link's start time, during
    which every submitted datagram is dropped (the windows are half-open:
    ``start <= t - link.start < start + duration``).

    Invalid values raise :class:`ValueError` from the constructor.
    """

    loss: float = 0.0
    burst_loss: GilbertElliott | tuple[float, float, float, float] | None = None
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.01
    delay: float = 0.0
    jitter: float = 0.0
    corrupt: float = 0.0
    rate: float | None = None
    queue_limit: int = 64 * 1024
    blackouts: list[tuple[float, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Check every field and normalise ``burst_loss`` and ``blackouts``."""
        self.loss = _probability("loss", self.loss)
        self.duplicate = _probability("duplicate", self.duplicate)
        self.reorder = _probability("reorder", self.reorder)
        self.corrupt = _probability("corrupt", self.corrupt)
        self.reorder_delay = _non_negative("reorder_delay", self.reorder_delay)
        self.delay = _non_negative("delay", self.delay)
        self.jitter = _non_negative("jitter", self.jitter)

        if self.burst_loss is not None:
            try:
                values = tuple(self.burst_loss)
            except TypeError:
                values = ()
            if len(values) != 4:
                raise ValueError(
                    "burst_loss must be four probabilities "
                    "(p_good_to_bad, p_bad_to_good, loss_good, loss_bad), "
                    f"got {self.burst_loss!r}"
                )
            names = GilbertElliott._fields
            self.burst_loss = GilbertElliott(
                *(_probability(f"burst_loss.{n}", v) for n, v in zip(names, values, strict=True))
            )

        if self.rate is not None:
            self.rate = _number("rate", self.rate)
            if self.rate <= 0.0:
                raise ValueError(f"rate must be > 0 bytes/s (or None), got {self.rate!r}")
        if isinstance(self.queue_limit, bool) or not isinstance(self.queue_limit, int):
            raise ValueError(
                f"queue_limit must be an integer number of bytes, got {self.queue_limit!r}"
            )
        if self.queue_limit < 1:
            raise ValueError(f"queue_limit must be >= 1 byte, got {self.queue_limit!r}")

        windows: list[tuple[float, float]] = []
        for window in self.blackouts:
            try:
                start, duration = window
            except (TypeError, ValueError):
                raise ValueError(
                    f"each blackout must be a (start, duration) pair, got {window!r}"
                ) from None
            start = _non_negative("blackout start", start)
            duration = _number("blackout duration", duration)
            if duration <= 0.0:
                raise ValueError(f"blackout duration must be > 0 seconds, got {duration!r}")
            windows.append((start, duration))
        self.blackouts = sorted(windows)

    @property
    def is_noop(self) -> bool:
        """True if a link with this impairment passes everything unchanged."""
        return self == Impairment(queue_limit=self.queue_limit, reorder_delay=self.reorder_delay)


@dataclass
class LinkStats:
    """Counters kept by a :class:`Link` (all counts are datagrams)."""

    submitted: int = 0
    delivered: int = 0
    dropped_loss: int = 0
    dropped_blackout: int = 0
    dropped_queue: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0

    @property
    def dropped(self) -> int:
        """Datagrams dropped for any reason."""
        return self.dropped_loss + self.dropped_blackout + self.dropped_queue

    def __add__(self, other: LinkStats) -> LinkStats:
        """Field-wise sum, to aggregate the stats of several links."""
        if not isinstance(other, LinkStats):
            return NotImplemented
        return LinkStats(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dictionary."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Link:
    """One direction of an impaired path.

    ``Link(impairment, seed)`` creates the model; :meth:`submit` hands it a
    datagram, :meth:`next_deadline` says when the next one is due and
    :meth:`pop_due` takes out the datagrams that are due.

    ``start`` is the time that blackout windows are relative to; if it is not
    given, the ``now`` of the first :meth:`submit` is used.  ``max_pending``
    and ``max_pending_bytes`` bound what the link holds in flight (datagrams
    beyond them are counted in ``dropped_queue``); ``None`` means no bound.
    """

    def __init__(
        self,
        impairment: Impairment | None = None,
        seed: int | None = 0,
        *,
        start: float | None = None,
        max_pending: int | None = None,
        max_pending_bytes: int | None = None,
    ) -> None:
        """Create a link; see the class docstring."""
        self.impairment = impairment if impairment is not None else Impairment()
        self.stats = LinkStats()
        self.start = start
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self._rng = random.Random(seed)
        self._heap: list[tuple[float, int, bytes]] = []
        self._counter = 0
        self._pending_bytes = 0
        self._bad_state = False
        # Time at which the (rate-limited) transmitter has serialised all
        # queued bytes; the backlog at ``now`` is (busy_until - now) * rate.
        self._busy_until = -math.inf

    # -- queries ---------------------------------------------------------

    @property
    def pending(self) -> int:
        """Number of datagrams in flight (submitted but not yet popped)."""
        return len(self._heap)

    @property
    def pending_bytes(self) -> int:
        """Total size of the datagrams in flight."""
        return self._pending_bytes

    def queued_bytes(self, now: float) -> float:
        """Bytes still waiting to be serialised at ``now`` (0 without ``rate``)."""
        rate = self.impairment.rate
        if rate is None or self._busy_until <= now:
            return 0.0
        return (self._busy_until - now) * rate

    def next_deadline(self) -> float | None:
        """Delivery time of the earliest pending datagram, or ``None``."""
        return self._heap[0][0] if self._heap else None

    def in_blackout(self, now: float) -> bool:
        """True if ``now`` falls inside one of the blackout windows."""
        if self.start is None:
            return False
        t = now - self.start
        return any(s <= t < s + d for s, d in self.impairment.blackouts)

    # -- input -----------------------------------------------------------

    def submit(self, data: bytes, now: float) -> None:
        """Hand ``data`` to the link at time ``now``."""
        imp = self.impairment
        rng = self._rng
        stats = self.stats
        stats.submitted += 1
        if self.start is None:
            self.start = now

        if imp.blackouts and self.in_blackout(now):
            stats.dropped_blackout += 1
            return

        lost = imp.loss > 0.0 and rng.random() < imp.loss
        if imp.burst_loss is not None:
            p_gb, p_bg, loss_good, loss_bad = imp.burst_loss
            if self._bad_state:
                if rng.random() < p_bg:
                    self._bad_state = False
            elif rng.random() < p_gb:
                self._bad_state = True
            p = loss_bad if self._bad_state else loss_good
            if p > 0.0 and rng.random() < p:
                lost = True
        if lost:
            stats.dropped_loss += 1
            return

        copies = 1
        if imp.duplicate > 0.0 and rng.random() < imp.duplicate:
            copies = 2
            stats.duplicated += 1

        for _ in range(copies):
            self._transmit(bytes(data), now)

    def _transmit(self, data: bytes, now: float) -> None:
        imp = self.impairment
        rng = self._rng
        stats = self.stats

        if imp.corrupt > 0.0 and data and rng.random() < imp.corrupt:
            data = self._flip_bits(data)
            stats.corrupted += 1

        if (self.max_pending is not None and len(self._heap) >= self.max_pending) or (
            self.max_pending_bytes is not None
            and self._pending_bytes + len(data) > self.max_pending_bytes
        ):
            stats.dropped_queue += 1
            return

        t = now
        if imp.rate is not None:
            # The small tolerance absorbs float rounding in the backlog.
            if self.queued_bytes(now) + len(data) > imp.queue_limit + 1e-6:
                stats.dropped_queue += 1
                return
            t = max(now, self._busy_until) + len(data) / imp.rate
            self._busy_until = t

        extra = imp.delay
        if imp.jitter > 0.0:
            extra += rng.uniform(-imp.jitter, imp.jitter)
        t += max(0.0, extra)

        if imp.reorder > 0.0 and rng.random() < imp.reorder:
            t += imp.reorder_delay
            stats.reordered += 1

        self._counter += 1
        heapq.heappush(self._heap, (t, self._counter, data))
        self._pending_bytes += len(data)

    def _flip_bits(self, data: bytes) -> bytes:
        buf = bytearray(data)
        nbits = len(buf) * 8
        count = min(self._rng.randint(1, 3), nbits)
        for bit in self._rng.sample(range(nbits), count):
            buf[bit >> 3] ^= 1 << (bit & 7)
        return bytes(buf)

    # -- output ----------------------------------------------------------

    def pop_due(self, now: float) -> list[bytes]:
        """Remove and return the datagrams due at ``now``, in delivery order."""
        out: list[bytes] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, data = heapq.heappop(heap)
            self._pending_bytes -= len(data)
            out.append(data)
        self.stats.delivered += len(out)
        return out
