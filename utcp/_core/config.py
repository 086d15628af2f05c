"""Options, named after their Linux counterparts, with defaults and validation.

One frozen :class:`Options` holds every tunable.  ``open_endpoint`` builds the
endpoint-wide defaults; ``listen`` and ``connect`` derive per-connection
options from them with :meth:`Options.replace`.  Bad values raise
``ValueError`` / ``TypeError`` naming the option.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

#: The names in this set are endpoint-wide only; the rest may be given per connection.
ENDPOINT_ONLY = frozenset(
    {
        "somaxconn",
        "max_tw_buckets",
        "ephemeral_ports",
        "close_timeout",
        "challenge_ack_limit",
        "rst_limit",
        "udp_buffer",
    }
)


@dataclass(frozen=True, slots=True)
class Options:
    """Every tunable of an endpoint, listener or connection (see docs/options.md)."""

    msl: float = 30.0
    backlog: int = 128
    syn_backlog: int = 1024
    somaxconn: int = 4096
    accept_overflow: str = "drop"
    syncookies: str = "auto"
    syn_retries: int = 6
    synack_retries: int = 5
    retries2: int = 15
    fin_timeout: float = 60.0
    tw_reuse: bool = False
    rfc1337: bool = True
    max_tw_buckets: int = 180000
    keepalive: bool = False
    keepalive_time: float = 7200.0
    keepalive_intvl: float = 75.0
    keepalive_probes: int = 9
    user_timeout: float = 0.0
    nodelay: bool = False
    linger: float | None = None
    mtu: int = 1500
    rcvbuf: int = 262144
    sndbuf: int = 262144
    congestion: str = "cubic"
    window_scaling: bool = True
    timestamps: bool = True
    sack: bool = True
    early_retrans: bool = True
    rto_initial: float = 1.0
    rto_min: float = 0.2
    rto_max: float = 120.0
    delack: float = 0.04
    ephemeral_ports: tuple[int, int] = (32768, 60999)
    close_timeout: float = 5.0
    challenge_ack_limit: float = 1000.0
    rst_limit: float = 1000.0
    udp_buffer: int = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        _check_number("msl", self.msl, minimum=0.0)
        for name in ("backlog", "syn_backlog", "somaxconn", "max_tw_buckets"):
            _check_int(name, getattr(self, name), minimum=0)
        for name in ("syn_retries", "synack_retries", "retries2", "keepalive_probes"):
            _check_int(name, getattr(self, name), minimum=0, maximum=255)
        for name in (
            "fin_timeout",
            "user_timeout",
            "delack",
            "close_timeout",
            "challenge_ack_limit",
            "rst_limit",
        ):
            _check_number(name, getattr(self, name), minimum=0.0)
        for name in ("keepalive_time", "keepalive_intvl", "rto_initial", "rto_min", "rto_max"):
            _check_number(name, getattr(self, name), minimum=0.0, strict=True)
        if self.rto_min > self.rto_max:
            raise ValueError(f"rto_min ({self.rto_min}) must not exceed rto_max ({self.rto_max})")
        for name in (
            "tw_reuse",
            "rfc1337",
            "keepalive",
            "nodelay",
            "window_scaling",
            "timestamps",
            "sack",
            "early_retrans",
        ):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, not {type(getattr(self, name)).__name__}")
        if self.accept_overflow not in ("drop", "reset"):
            raise ValueError(
                f"accept_overflow must be 'drop' or 'reset', not {self.accept_overflow!r}"
            )
        if self.syncookies not in ("auto", "always", "never"):
            raise ValueError(
                f"syncookies must be 'auto', 'always' or 'never', not {self.syncookies!r}"
            )
        if self.linger is not None:
            _check_number("linger", self.linger, minimum=0.0)
        _check_int("mtu", self.mtu, minimum=128, maximum=65535)
        _check_int("udp_buffer", self.udp_buffer, minimum=65536, maximum=1 << 30)
        _check_int("rcvbuf", self.rcvbuf, minimum=1024, maximum=1 << 30)
        _check_int("sndbuf", self.sndbuf, minimum=1024, maximum=1 << 30)
        if not isinstance(self.congestion, str):
            raise TypeError("congestion must be a string such as 'newreno'")
        from .congestion import ALGORITHMS

        if self.congestion not in ALGORITHMS:
            raise ValueError(
                f"unknown congestion control {self.congestion!r}; "
                f"known: {', '.join(sorted(ALGORITHMS))}"
            )
        lo, hi = self.ephemeral_ports
        _check_int("ephemeral_ports[0]", lo, minimum=1, maximum=65535)
        _check_int("ephemeral_ports[1]", hi, minimum=lo, maximum=65535)

    def replace(self, **changes: Any) -> Options:
        """A copy with ``changes`` applied and validated (unknown names raise TypeError)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def per_connection(self, **changes: Any) -> Options:
        """Like :meth:`replace` but refuses endpoint-wide-only options."""
        bad = set(changes) & ENDPOINT_ONLY
        if bad:
            raise TypeError(
                f"option(s) {', '.join(sorted(bad))} apply to the whole endpoint; "
                "pass them to open_endpoint()"
            )
        return self.replace(**changes)

    def mss_for(self, ipv6: bool) -> int:
        """The MSS to advertise: MTU - IP - UDP - TCP header (wire-format spec)."""
        return self.mtu - (40 if ipv6 else 20) - 8 - 20


def _check_int(name: str, value: object, *, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum or (maximum is not None and value > maximum):
        hi = "" if maximum is None else f" and <= {maximum}"
        raise ValueError(f"{name} must be >= {minimum}{hi}, got {value}")


def _check_number(name: str, value: object, *, minimum: float, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if value != value or value < minimum or (strict and value <= minimum):
        op = ">" if strict else ">="
        raise ValueError(f"{name} must be {op} {minimum}, got {value}")
