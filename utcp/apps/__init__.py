"""Ready-made applications over utcp, shared by ``python -m utcp`` and ``examples/``.

Each application is an :class:`App`: a name (the ``python -m utcp``
subcommand), a one-line help, a function that adds its arguments to an
:mod:`argparse` parser, and a function that runs it and returns the exit
status.  The example programs are thin wrappers that call :meth:`App.main`.

===================  ====================================  =====================
subcommand           what                                  module
===================  ====================================  =====================
``echo-server``      line echo server                      :mod:`utcp.apps.echo`
``echo``             line echo client                      :mod:`utcp.apps.echo`
``chat-server``      chat room with nicknames              :mod:`utcp.apps.chat`
``chat``             chat client                           :mod:`utcp.apps.chat`
``recv``             receive files, SHA-256 checked        :mod:`utcp.apps.filexfer`
``send``             send one file                         :mod:`utcp.apps.filexfer`
``http-server``      HTTP/1.1 file server (h11)            :mod:`utcp.apps.http`
``http-get``         HTTP/1.1 client (h11)                 :mod:`utcp.apps.http`
===================  ====================================  =====================

This module also holds what the applications share: ``HOST:PORT`` parsing,
the endpoint-option flags (``--msl``, ``--mtu``, ``--keepalive``...), a line
reader, standard-input lines as an async iterator, and :func:`run`, which
runs an application under :func:`trio.run` and turns Ctrl-C and network
errors into a one-line message and an exit status.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVarTuple, Unpack

import trio

from .._core.config import Options

__all__ = [
    "App",
    "AppError",
    "LineReader",
    "add_endpoint_options",
    "add_remote_arguments",
    "announce",
    "endpoint_options",
    "format_address",
    "listen_address",
    "parse_hostport",
    "peer_name",
    "remote_address",
    "run",
    "stdin_lines",
]

Ts = TypeVarTuple("Ts")


class AppError(Exception):
    """A failure to report as one line, with the process exit status to use."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


# -- addresses -----------------------------------------------------------------


def parse_hostport(
    text: str, *, allow_empty_host: bool = False, allow_zero_port: bool = False
) -> tuple[str, int]:
    """Parse ``HOST:PORT`` or ``[IPV6]:PORT`` into ``(host, port)``.

    Raises :class:`ValueError` with a short message on bad input.
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ValueError(f"expected [IPV6]:PORT, got {text!r}")
        host = text[1:end]
        port_text = text[end + 2 :]
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        if ":" in host:
            raise ValueError(f"write IPv6 addresses in brackets, as [ADDR]:PORT (got {text!r})")
        if not host and not allow_empty_host:
            raise ValueError(f"missing host in {text!r}")
        if any(c.isspace() for c in host):
            raise ValueError(f"bad host {host!r}")
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"bad port {port_text!r} in {text!r}")
    port = int(port_text)
    if port > 65535 or (port == 0 and not allow_zero_port):
        low = 0 if allow_zero_port else 1
        raise ValueError(f"port must be in {low}..65535, got {port}")
    return host, port


def _argtype(func: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    """Wrap ``func`` so that its ValueError becomes an argparse error message."""

    def convert(text: str) -> Any:
        try:
            return func(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


listen_address = _argtype(
    lambda t: parse_hostport(t, allow_empty_host=True, allow_zero_port=True), "listen address"
)
"""argparse type for a listening ``HOST:PORT`` (empty host: all IPv4 interfaces; port 0: any)."""

remote_address = _argtype(parse_hostport, "address")
"""argparse type for a server's ``HOST:PORT``."""


def add_remote_arguments(
    parser: argparse.ArgumentParser, *, default: tuple[str, int] | None = None, help: str
) -> None:
    """Add the server's ``HOST:PORT`` positional argument and ``--vport``."""
    if default is None:
        parser.add_argument("address", type=remote_address, metavar="HOST:PORT", help=help)
    else:
        parser.add_argument(
            "address",
            nargs="?",
            type=remote_address,
            default=default,
            metavar="HOST:PORT",
            help=help,
        )
    parser.add_argument(
        "--vport",
        type=_argtype(_vport, "port"),
        metavar="N",
        help="virtual port to connect to (default: PORT); through a relay such as "
        "'utcp chaos', the server's port",
    )


def _vport(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"virtual port must be in 1..65535, got {text!r}")
    return int(text)


def format_address(address: tuple[str, int]) -> str:
    """``host:port``, or ``[host]:port`` for IPv6."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def announce(what: str, listeners: list[Any], detail: str = "") -> tuple[str, int]:
    """Print ``WHAT on HOST:PORT[, DETAIL]`` (then ``WHAT also on ...`` lines); return the address.

    Servers print this first, so that scripts and tests can start them on port
    0 and read the port they got from the first line.
    """
    bound: tuple[str, int] = listeners[0].local_address
    suffix = f", {detail}" if detail else ""
    print(f"{what} on {format_address(bound)}{suffix}", flush=True)
    for extra in listeners[1:]:
        print(f"{what} also on {format_address(extra.local_address)}", flush=True)
    return bound


def peer_name(conn: Any) -> str:
    """A connection's peer as ``host:port`` (UDP address) plus ``/vport`` if it differs."""
    text = format_address(conn.remote_address)
    if conn.remote_port != conn.remote_address[1]:
        text += f"/{conn.remote_port}"
    return text


def check_resolvable(parser: argparse.ArgumentParser, host: str) -> None:
    """Exit with a usage error (status 2) if ``host`` is neither an address nor a known name."""
    if not host:
        return
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return
    except ValueError:
        pass
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError):
        parser.error(f"cannot resolve host {host!r}")


# -- endpoint options ----------------------------------------------------------


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def _seconds(text: str) -> float:
    scale = 1.0
    body = text
    if body.endswith("ms"):
        body, scale = body[:-2], 0.001
    elif body.endswith("s"):
        body = body[:-1]
    value = _number(body) * scale
    if value < 0:
        raise ValueError(f"time must be >= 0, got {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise ValueError(f"must be >= 0, got {text!r}")
    return value


_SIZE_SUFFIXES = {"k": 1024, "K": 1024, "m": 1024**2, "M": 1024**2, "g": 1024**3, "G": 1024**3}


def _size(text: str) -> int:
    scale = 1
    body = text
    if body and body[-1] in _SIZE_SUFFIXES:
        body, scale = body[:-1], _SIZE_SUFFIXES[body[-1]]
    value = _number(body) * scale
    if value <= 0 or value != int(value):
        raise ValueError(f"expected a whole number of bytes (k/M/G suffixes: 1024), got {text!r}")
    return int(value)


seconds = _argtype(_seconds, "seconds")
"""argparse type for a duration: ``2``, ``0.5``, ``1.5s`` or ``200ms``."""

count = _argtype(_count, "count")
"""argparse type for a non-negative integer."""

size = _argtype(_size, "size")
"""argparse type for a byte count: ``65536``, ``64k``, ``4M``."""

# flag -> (Options field, argparse keyword arguments)
_ENDPOINT_FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "--msl": ("msl", dict(type=seconds, metavar="S", help="maximum segment lifetime; TIME_WAIT lasts 2*MSL (default 30)")),
    "--mtu": ("mtu", dict(type=count, metavar="BYTES", help="path MTU the MSS is derived from (default 1500)")),
    "--nodelay": ("nodelay", dict(action="store_true", default=None, help="disable Nagle's algorithm (TCP_NODELAY)")),
    "--rcvbuf": ("rcvbuf", dict(type=size, metavar="BYTES", help="receive buffer, e.g. 256k (default 256k)")),
    "--sndbuf": ("sndbuf", dict(type=size, metavar="BYTES", help="send buffer, e.g. 256k (default 256k)")),
    "--congestion": ("congestion", dict(metavar="ALGO", help="congestion control, e.g. newreno or cubic")),
    "--syn-retries": ("syn_retries", dict(type=count, metavar="N", help="SYN retransmissions before connect gives up (default 6)")),
    "--keepalive": ("keepalive", dict(action=argparse.BooleanOptionalAction, help="send keepalive probes on idle connections")),
    "--keepalive-time": ("keepalive_time", dict(type=seconds, metavar="S", help="idle time before the first probe")),
    "--keepalive-intvl": ("keepalive_intvl", dict(type=seconds, metavar="S", help="time between probes")),
    "--keepalive-probes": ("keepalive_probes", dict(type=count, metavar="N", help="unanswered probes before the connection is dropped")),
    "--user-timeout": ("user_timeout", dict(type=seconds, metavar="S", help="drop a connection whose sent data stays unacknowledged this long (TCP_USER_TIMEOUT; default 0: off)")),
}  # fmt: skip


def add_endpoint_options(
    parser: argparse.ArgumentParser,
    *,
    keepalive: tuple[bool, float, float, int] | None = None,
) -> None:
    """Add the endpoint-option flags (``--msl``, ``--mtu``, ``--keepalive``...) to ``parser``.

    ``keepalive`` overrides the defaults of ``--keepalive``, ``--keepalive-time``,
    ``--keepalive-intvl`` and ``--keepalive-probes`` (a server that wants to
    notice vanished clients quickly turns keepalive on with short times).
    """
    defaults: dict[str, Any] = {}
    if keepalive is not None:
        on, time, intvl, probes = keepalive
        defaults = {
            "keepalive": on,
            "keepalive_time": time,
            "keepalive_intvl": intvl,
            "keepalive_probes": probes,
        }
    group = parser.add_argument_group("endpoint options")
    for flag, (field, kwargs) in _ENDPOINT_FLAGS.items():
        kwargs = dict(kwargs)
        if field in defaults:
            kwargs["default"] = defaults[field]
            kwargs["help"] = f"{kwargs['help']} (default {defaults[field]})"
        elif field.startswith("keepalive_"):
            default = getattr(Options(), field)
            kwargs["help"] = f"{kwargs['help']} (default {default:g})"
        group.add_argument(flag, dest=f"opt_{field}", **kwargs)


def endpoint_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The endpoint options given on the command line, validated (bad values: exit 2)."""
    options: dict[str, Any] = {}
    for field, _ in _ENDPOINT_FLAGS.values():
        value = getattr(args, f"opt_{field}", None)
        if value is not None:
            options[field] = value
    try:
        Options().replace(**options)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    return options


# -- application plumbing ------------------------------------------------------


@dataclass(frozen=True)
class App:
    """A command-line application: the unit shared by the CLI and the examples."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, argparse.ArgumentParser], int]
    usage: str | None = None
    epilog: str | None = None

    def parser(self, prog: str | None = None) -> argparse.ArgumentParser:
        """A stand-alone parser for this application."""
        parser = argparse.ArgumentParser(
            prog=prog,
            description=self.help,
            usage=self.usage,
            epilog=self.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        self.configure(parser)
        return parser

    def main(self, argv: list[str] | None = None, *, prog: str | None = None) -> int:
        """Parse ``argv`` (default ``sys.argv[1:]``) and run; return the exit status."""
        parser = self.parser(prog)
        args = parser.parse_args(argv)
        return self.run(args, parser)


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def describe(exc: BaseException) -> str:
    """A one-line description of a network error, looking through BrokenResourceError."""
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, OSError) and exc.strerror:
        if exc.filename is not None:
            return f"{exc.filename}: {exc.strerror}"
        return str(exc.strerror)
    text = str(exc)
    if not text:
        defaults: dict[type[BaseException], str] = {
            ConnectionRefusedError: "connection refused",
            ConnectionResetError: "connection reset by peer",
            TimeoutError: "timed out",
        }
        return defaults.get(type(exc), type(exc).__name__)
    return text


def run(
    prog: str,
    async_fn: Callable[[Unpack[Ts]], Awaitable[int | None]],
    *args: *Ts,
    interrupted: int = 130,
    farewell: str | None = None,
) -> int:
    """Run ``async_fn(*args)`` under Trio and return an exit status.

    The function's own return value (an int) is the status, ``None`` means 0.
    Ctrl-C returns ``interrupted`` (130 for clients, 0 for servers, whose
    normal way to stop it is) after printing ``farewell`` on standard output,
    or ``PROG: interrupted`` on standard error; :class:`AppError` prints its message and
    returns its status; network errors (``OSError``, ``trio.BrokenResourceError``)
    print ``PROG: error: MESSAGE`` on one line and return 1.
    """
    status: int | None = None
    try:
        status = trio.run(async_fn, *args)
    except* KeyboardInterrupt:
        status = interrupted
        if farewell is not None:
            print(farewell, flush=True)
        else:
            print(f"{prog}: interrupted", file=sys.stderr, flush=True)
    except* AppError as group:
        leaf = _leaf(group)
        assert isinstance(leaf, AppError)
        print(f"{prog}: {leaf}", file=sys.stderr, flush=True)
        status = leaf.status
    except* (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as group:
        print(f"{prog}: error: {describe(_leaf(group))}", file=sys.stderr, flush=True)
        status = 1
    return 0 if status is None else status


# -- I/O helpers ---------------------------------------------------------------


class LineReader:
    """Read ``\\n``-terminated lines from a :class:`trio.abc.ReceiveStream`.

    ``readline`` returns a line with its ``\\n``, a last unterminated line
    without it, and ``b""`` at end of stream.  A line longer than
    ``max_line`` bytes comes back in ``max_line``-byte pieces.  Bytes read past
    a line stay in :attr:`buffer` (for protocols that switch to raw data).
    """

    def __init__(self, stream: trio.abc.ReceiveStream, max_line: int = 65536) -> None:
        self.stream = stream
        self.max_line = max_line
        self.buffer = bytearray()
        self.eof = False

    async def readline(self) -> bytes:
        """The next line (with ``\\n``), or ``b""`` at end of stream."""
        start = 0
        while True:
            end = self.buffer.find(b"\n", start)
            if end >= 0 and end < self.max_line:
                line = bytes(self.buffer[: end + 1])
                del self.buffer[: end + 1]
                return line
            if len(self.buffer) >= self.max_line or (self.eof and self.buffer):
                line = bytes(self.buffer[: self.max_line])
                del self.buffer[: self.max_line]
                return line
            if self.eof:
                return b""
            start = len(self.buffer)
            data = await self.stream.receive_some(65536)
            if data:
                self.buffer += data
            else:
                self.eof = True


async def stdin_lines() -> AsyncIterator[bytes]:
    """Lines of standard input (with their ``\\n``; the last one may lack it).

    Reads with :func:`os.read` in a worker thread that is abandoned on
    cancellation.  (Not ``sys.stdin.readline``: a thread left blocked
    inside it holds the buffer's lock, and the interpreter can abort when
    it closes ``sys.stdin`` at exit.)
    """
    fd = sys.stdin.fileno()
    pending = b""
    while True:
        data = await trio.to_thread.run_sync(os.read, fd, 65536, abandon_on_cancel=True)
        if not data:
            if pending:
                yield pending
            return
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line + b"\n"
