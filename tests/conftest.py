"""Fixtures for the loopback integration tests (test_integration.py, test_streams.py)."""

from __future__ import annotations

import socket

import pytest


def _have_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HAVE_IPV6 = _have_ipv6_loopback()


@pytest.fixture(
    params=[
        pytest.param("127.0.0.1", id="ipv4"),
        pytest.param(
            "::1",
            id="ipv6",
            marks=pytest.mark.skipif(not HAVE_IPV6, reason="no IPv6 loopback"),
        ),
    ]
)
def host(request: pytest.FixtureRequest) -> str:
    """A loopback address to bind endpoints on: IPv4, then IPv6 when available."""
    return str(request.param)
