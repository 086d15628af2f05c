"""Compact TIME_WAIT entries (like Linux's ``inet_timewait_sock``).

A connection entering TIME_WAIT leaves the endpoint's connection table for a
small :class:`TimeWait` record: no buffers, no timers of its own, no task.
The endpoint keeps these in a dict keyed by 4-tuple and expires them from a
heap of deadlines.  The record still does everything TIME_WAIT must do:
re-ACK a retransmitted FIN and restart the 2 x MSL timer (RFC 9293
3.10.7.4), ignore RST under RFC 1337, let a new SYN reopen the 4-tuple when
RFC 6191 says it is safe, and let ``tw_reuse`` hand the 4-tuple to a new
``connect`` when timestamps prove it safe.
"""

from __future__ import annotations

from .codec import ACK, FIN, RST, SYN, Segment
from .seq import MASK, seq_gt, seq_in, seq_lt

__all__ = ["TW_ACK", "TW_DROP", "TW_REMOVE", "TW_REOPEN", "TimeWait"]

TW_DROP = 0
TW_ACK = 1
TW_REOPEN = 2
TW_REMOVE = 3


class TimeWait:
    """What TIME_WAIT needs to remember about a connection."""

    __slots__ = (
        "snd_nxt",
        "rcv_nxt",
        "window",
        "ts_offset",
        "ts_recent",
        "ts_stamp",
        "deadline",
        "msl2",
        "rfc1337",
    )

    def __init__(
        self,
        *,
        snd_nxt: int,
        rcv_nxt: int,
        window: int,
        ts_offset: int | None,
        ts_recent: int | None,
        ts_stamp: float,
        deadline: float,
        msl2: float,
        rfc1337: bool,
    ) -> None:
        self.snd_nxt = snd_nxt
        self.rcv_nxt = rcv_nxt
        self.window = window
        self.ts_offset = ts_offset  # None: timestamps were not in use
        self.ts_recent = ts_recent
        self.ts_stamp = ts_stamp
        self.deadline = deadline
        self.msl2 = msl2
        self.rfc1337 = rfc1337

    def handle(self, seg: Segment, now: float) -> int:
        """Decide what a segment arriving in TIME_WAIT does (one of the ``TW_*`` codes)."""
        f = seg.flags
        ts = seg.timestamps if self.ts_offset is not None else None
        if f & RST:
            if self.rfc1337:
                return TW_DROP  # RFC 1337: ignore RST in TIME-WAIT
            return TW_REMOVE if seg.seq == self.rcv_nxt else TW_DROP
        if f & SYN and not f & ACK:
            # RFC 6191: a new incarnation may reuse the 4-tuple if its timestamp
            # (or, without timestamps, its sequence number) is newer.
            if ts is not None and self.ts_recent is not None:
                if seq_gt(ts[0], self.ts_recent):
                    return TW_REOPEN
            elif seq_gt(seg.seq, self.rcv_nxt):
                return TW_REOPEN
            return TW_ACK
        if f & FIN and ((seg.seq + seg.seg_len) & MASK) == self.rcv_nxt:
            # RFC 9293 3.10.7.4: a retransmitted FIN is acknowledged again and the
            # 2 MSL timeout restarts.
            self.deadline = now + self.msl2
            return TW_ACK
        if ts is not None and self.ts_recent is not None and seq_lt(ts[0], self.ts_recent):
            return TW_ACK  # PAWS (RFC 7323 5.3): an old duplicate
        if seg.seg_len == 0 and seq_in(seg.seq, self.rcv_nxt, max(self.window, 1)):
            # An acceptable segment with nothing in it (a pure ACK): nothing to do.
            # Answering it would let two TIME_WAIT ends ACK each other forever.
            return TW_DROP
        return TW_ACK  # unacceptable (RFC 9293 3.10.7.4 first): send an ACK

    def ack(self, local_port: int, remote_port: int, now: float) -> Segment:
        """The ACK TIME_WAIT sends: ``<SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK>``."""
        seg = Segment(local_port, remote_port, self.snd_nxt, self.rcv_nxt, ACK, self.window)
        if self.ts_offset is not None:
            seg.timestamps = ((int(now * 1000) + self.ts_offset) & MASK, self.ts_recent or 0)
        return seg

    def reusable(self, now: float) -> bool:
        """``tw_reuse``: safe once timestamps are in use and 1 s has passed (as Linux)."""
        return self.ts_offset is not None and now - self.ts_stamp >= 1.0
