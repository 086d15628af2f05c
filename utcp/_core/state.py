"""The eleven connection states of RFC 9293 3.3.2."""

from __future__ import annotations

import enum


class State(enum.Enum):
    """A TCP connection state, as RFC 9293 3.3.2 names them."""

    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN_SENT"
    SYN_RECEIVED = "SYN_RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN_WAIT_1"
    FIN_WAIT_2 = "FIN_WAIT_2"
    CLOSE_WAIT = "CLOSE_WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST_ACK"
    TIME_WAIT = "TIME_WAIT"

    def __str__(self) -> str:
        return self.value

    # Identity hashing at C speed: states are looked up in sets on every segment.
    __hash__ = object.__hash__


#: States in which both sequence spaces are synchronized (RFC 9293 3.5).
SYNCHRONIZED = frozenset(
    {
        State.ESTABLISHED,
        State.FIN_WAIT_1,
        State.FIN_WAIT_2,
        State.CLOSE_WAIT,
        State.CLOSING,
        State.LAST_ACK,
        State.TIME_WAIT,
    }
)

#: States in which the local side may still send data.
CAN_SEND = frozenset({State.ESTABLISHED, State.CLOSE_WAIT})

#: States in which data from the peer is still accepted (RFC 9293 3.10.7.4, seventh).
CAN_RECEIVE = frozenset({State.ESTABLISHED, State.FIN_WAIT_1, State.FIN_WAIT_2})
