"""Helpers shared by the example programs: address parsing for argparse."""

from __future__ import annotations

import argparse


def host_port(text: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` or ``[V6]:PORT`` for argparse, with a clear error."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT or [IPV6]:PORT, got {text!r}")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a number, got {port!r}") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {number}")
    return host, number
