"""A line-based chat room (``utcp chat-server``, ``utcp chat``).

Protocol, one UTF-8 line per message in each direction:

* the first line a client sends is its nickname (1-24 printable characters,
  no spaces, not starting with ``/``); a nickname already in use (compared
  case-insensitively) is refused with ``* nickname 'bob' is taken; send
  another`` and the next line is another attempt;
* once in, the client gets ``* welcome bob! online: alice, bob (commands:
  /who /quit)`` and everybody else ``* bob joined``;
* a plain line is broadcast to the others as ``<bob> text``;
* ``/who`` answers ``* online: alice, bob``; ``/quit`` answers ``* bye`` and
  the server closes the connection;
* when a member leaves, the others get ``* bob left``, ``* bob left (timed
  out)`` when keepalive gave up on a client that vanished, or ``* bob left
  (connection reset)``.

The server turns keepalive on for every accepted connection, with short
times (``--keepalive-time 10 --keepalive-intvl 2 --keepalive-probes 3``
by default), so a client whose machine or network disappears is dropped
within about 16 seconds instead of occupying its nickname forever.
Keepalive only probes an idle connection: while data to the client is
unacknowledged, retransmission is in charge, and would take minutes to
give up.  So unless ``--user-timeout`` is given, the server also sets
``user_timeout`` (TCP_USER_TIMEOUT) to the same total, keepalive time plus
interval times probes, as Linux servers do.  Each
member has its own bounded outgoing queue and writer task, so one slow
reader cannot stall the room: a member whose queue overflows is dropped.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

import utcp

from . import (
    App,
    LineReader,
    add_endpoint_options,
    add_remote_arguments,
    announce,
    check_resolvable,
    endpoint_options,
    listen_address,
    peer_name,
    run,
    stdin_lines,
)

__all__ = ["CLIENT", "SERVER", "ChatServer", "chat_client", "serve_chat", "user_timeout_for"]

MAX_NICK = 24
MAX_LINE = 4096
QUEUE = 256
#: How long a leaving member's pending messages may take to drain.
DRAIN_TIMEOUT = 5.0
#: Server keepalive defaults: on, 10 s idle, probes every 2 s, 3 probes.
KEEPALIVE = (True, 10.0, 2.0, 3)


def _leave_reason(exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
    if isinstance(cause, TimeoutError):
        return "left (timed out)"
    if isinstance(cause, ConnectionResetError):
        return "left (connection reset)"
    if isinstance(exc, trio.ClosedResourceError):
        return "left (dropped)"
    return f"left ({cause or exc})"


@dataclass(eq=False)
class Member:
    """A client that has chosen its nickname."""

    nick: str
    conn: trio.abc.Stream
    outbox: trio.MemorySendChannel[bytes]
    inbox: trio.MemoryReceiveChannel[bytes]
    done: trio.Event = field(default_factory=trio.Event)
    dropped: str | None = None

    def post(self, text: str) -> None:
        """Queue one line for this member; drop the member if it is too slow."""
        if self.dropped is not None:
            return
        try:
            self.outbox.send_nowait(text.encode() + b"\n")
        except trio.WouldBlock:
            self.dropped = "left (too slow)"
            self.outbox.close()
            if isinstance(self.conn, utcp.Connection):
                self.conn.abort()  # wakes the reader with ClosedResourceError
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass


class ChatServer:
    """The room: members by nickname, and the per-connection handler."""

    def __init__(self, *, log: Callable[[str], None] | None = None) -> None:
        self.members: dict[str, Member] = {}
        self._log = log if log is not None else _print

    def nicks(self) -> list[str]:
        """Current nicknames, sorted case-insensitively."""
        return sorted((m.nick for m in self.members.values()), key=str.casefold)

    def broadcast(self, text: str, *, exclude: Member | None = None) -> None:
        """Queue ``text`` for every member but ``exclude``."""
        for member in list(self.members.values()):
            if member is not exclude:
                member.post(text)

    def check_nick(self, nick: str) -> str | None:
        """Why ``nick`` can't be used, or None."""
        if not nick:
            return "empty nickname"
        if len(nick) > MAX_NICK:
            return f"nickname longer than {MAX_NICK} characters"
        if not nick.isprintable() or any(c.isspace() for c in nick):
            return "nickname must be printable, without spaces"
        if nick[0] in "/*<":
            return f"nickname must not start with {nick[0]!r}"
        if nick.casefold() in self.members:
            return f"nickname {nick!r} is taken"
        return None

    async def handle(self, conn: trio.abc.Stream) -> None:
        """Run one client's session: nickname, then messages until it leaves."""
        peer = peer_name(conn) if isinstance(conn, utcp.Connection) else repr(conn)
        reader = LineReader(conn, MAX_LINE)
        try:
            nick = await self._choose_nick(conn, reader)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._log(f"{peer} {_leave_reason(exc)} before choosing a nickname")
            return
        if nick is None:
            return
        outbox, inbox = trio.open_memory_channel[bytes](QUEUE)
        member = Member(nick, conn, outbox, inbox)
        self.members[nick.casefold()] = member
        self._log(f"{nick} joined from {peer}")
        reason = "left"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer, member)
            member.post(
                f"* welcome {nick}! online: {', '.join(self.nicks())} (commands: /who /quit)"
            )
            self.broadcast(f"* {nick} joined", exclude=member)
            try:
                reason = await self._session(member, reader)
            finally:
                del self.members[nick.casefold()]
                outbox.close()
            if member.dropped is not None:
                reason = member.dropped
            self.broadcast(f"* {nick} {reason}")
            self._log(f"{nick} {reason}")
            with trio.move_on_after(DRAIN_TIMEOUT):
                await member.done.wait()
            nursery.cancel_scope.cancel()
        if reason == "left":
            await conn.aclose()
        elif isinstance(conn, utcp.Connection):
            conn.abort()
        else:
            await trio.aclose_forcefully(conn)

    async def _choose_nick(self, conn: trio.abc.Stream, reader: LineReader) -> str | None:
        while True:
            line = await reader.readline()
            if not line:
                return None
            nick = line.decode("utf-8", "replace").strip()
            problem = self.check_nick(nick)
            if problem is None:
                return nick
            await conn.send_all(f"* {problem}; send another nickname\n".encode())

    async def _session(self, member: Member, reader: LineReader) -> str:
        """Read the member's lines until it leaves; return how it left."""
        while True:
            try:
                line = await reader.readline()
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                return member.dropped or _leave_reason(exc)
            if not line:
                return "left"
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if text.startswith("/"):
                command = text.split(maxsplit=1)[0].lower()
                if command == "/quit":
                    member.post("* bye")
                    return "left"
                if command == "/who":
                    member.post(f"* online: {', '.join(self.nicks())}")
                else:
                    member.post(f"* unknown command {command}; commands: /who /quit")
            elif text.strip():
                self.broadcast(f"<{member.nick}> {text}", exclude=member)

    async def _writer(self, member: Member) -> None:
        try:
            async for data in member.inbox:
                await member.conn.send_all(data)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the reader sees the same failure
        finally:
            member.done.set()


def _print(text: str) -> None:
    print(text, flush=True)


async def serve_chat(
    address: tuple[str, int],
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Run a chat server at ``address`` until cancelled; prints ``chat server on HOST:PORT``.

    ``options`` are endpoint options; pass ``keepalive=True``, short
    ``keepalive_*`` times and a ``user_timeout`` to drop vanished clients
    (see :func:`user_timeout_for`).
    """
    server = ChatServer()
    host, port = address
    async with trio.open_nursery() as nursery:
        listeners: list[utcp.Listener] = await nursery.start(
            functools.partial(utcp.serve, server.handle, port, host=host, **options)
        )
        bound = announce("chat server", listeners)
        task_status.started(bound)


async def chat_client(
    address: tuple[str, int], nick: str | None, *, vport: int | None = None, **options: Any
) -> int:
    """Connect, send ``nick`` (or the first line typed), then chat until either side quits."""
    async with utcp.open_stream(address[0], address[1], vport=vport, **options) as conn:
        if nick is not None:
            await conn.send_all(nick.encode() + b"\n")
        elif sys.stdin.isatty():
            print("nickname? ", end="", file=sys.stderr, flush=True)

        async def pump_stdin() -> None:
            async for line in stdin_lines():
                await conn.send_all(line)
            await conn.send_eof()

        reader = LineReader(conn, MAX_LINE)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump_stdin)
            while line := await reader.readline():
                sys.stdout.write(line.decode("utf-8", "replace"))
                sys.stdout.flush()
            nursery.cancel_scope.cancel()
    return 0


def _server_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "address",
        type=listen_address,
        metavar="HOST:PORT",
        help="UDP address to listen on (port 0: any free port, printed on the first line)",
    )
    add_endpoint_options(parser, keepalive=KEEPALIVE)


def user_timeout_for(options: dict[str, Any]) -> float:
    """The ``user_timeout`` matching keepalive's time to give up (0 without keepalive)."""
    if not options.get("keepalive"):
        return 0.0
    defaults = utcp.Options()
    return float(
        options.get("keepalive_time", defaults.keepalive_time)
        + options.get("keepalive_intvl", defaults.keepalive_intvl)
        * options.get("keepalive_probes", defaults.keepalive_probes)
    )


def _run_server(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    options = endpoint_options(args, parser)
    options.setdefault("user_timeout", user_timeout_for(options))
    check_resolvable(parser, args.address[0])
    return run(
        parser.prog,
        functools.partial(serve_chat, args.address, **options),
        interrupted=0,
        farewell="bye",
    )


def _client_args(parser: argparse.ArgumentParser) -> None:
    add_remote_arguments(parser, help="the chat server's UDP address")
    parser.add_argument(
        "--nick", metavar="NAME", help="nickname to send first (default: the first line typed)"
    )
    add_endpoint_options(parser)


def _run_client(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    options = endpoint_options(args, parser)
    check_resolvable(parser, args.address[0])
    if args.nick is not None and (not args.nick or "\n" in args.nick):
        parser.error("--nick must be one non-empty line")
    call = functools.partial(chat_client, args.address, args.nick, vport=args.vport, **options)
    return run(parser.prog, call)


SERVER = App(
    "chat-server",
    "chat room with nicknames; keepalive drops vanished clients",
    _server_args,
    _run_server,
    usage="%(prog)s HOST:PORT [options]",
)
"""``utcp chat-server HOST:PORT``."""

CLIENT = App(
    "chat",
    "chat client: lines typed are sent; /who lists members, /quit leaves",
    _client_args,
    _run_client,
    usage="%(prog)s HOST:PORT [--nick NAME] [options]",
)
"""``utcp chat HOST:PORT [--nick NAME]``."""
