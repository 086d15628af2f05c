"""Line echo server and client (``utcp echo-server``, ``utcp echo``).

The server sends every line back to the client that sent it and closes when
the client half-closes; the client sends standard input line by line,
prints the echoes, and at end of input half-closes and prints what is still
on its way back.
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Any

import trio

import utcp

from . import (
    App,
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

__all__ = ["CLIENT", "SERVER", "client", "handle", "serve"]

DEFAULT_ADDRESS = ("127.0.0.1", 4000)


async def handle(conn: utcp.Connection) -> None:
    """Echo whole lines until the client half-closes, then close."""
    peer = peer_name(conn)
    print(f"connected: {peer}", flush=True)
    pending = b""
    try:
        while True:
            data = await conn.recv()
            if not data:
                break
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                await conn.send(line + b"\n")
        if pending:
            await conn.send(pending)
        await conn.close()
    except OSError as exc:
        print(f"{peer}: {exc}", flush=True)
        conn.abort()
    print(f"closed: {peer}", flush=True)


async def serve(
    address: tuple[str, int],
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Run the echo server at ``address`` until cancelled; report the bound address.

    Prints ``echo server on HOST:PORT`` first (port 0 picks a free port).
    """
    host, port = address
    async with trio.open_nursery() as nursery:
        listeners: list[utcp.Listener] = await nursery.start(
            functools.partial(utcp.serve, handle, port, host=host, **options)
        )
        bound = announce("echo server", listeners)
        task_status.started(bound)


async def client(address: tuple[str, int], *, vport: int | None = None, **options: Any) -> None:
    """Send standard input line by line and print the echoes."""
    async with utcp.open_stream(address[0], address[1], vport=vport, **options) as conn:

        async def pump_stdin() -> None:
            async for line in stdin_lines():
                await conn.send(line)
            await conn.shutdown()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(pump_stdin)
            while True:
                data = await conn.recv()
                if not data:
                    break
                sys.stdout.write(data.decode(errors="replace"))
                sys.stdout.flush()
            nursery.cancel_scope.cancel()


def _server_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "address",
        nargs="?",
        type=listen_address,
        default=DEFAULT_ADDRESS,
        metavar="HOST:PORT",
        help="UDP address to listen on (default 127.0.0.1:4000; port 0: any free port)",
    )
    add_endpoint_options(parser)


def _run_server(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    options = endpoint_options(args, parser)
    check_resolvable(parser, args.address[0])
    return run(
        parser.prog,
        functools.partial(serve, args.address, **options),
        interrupted=0,
        farewell="bye",
    )


def _client_args(parser: argparse.ArgumentParser) -> None:
    add_remote_arguments(
        parser, default=DEFAULT_ADDRESS, help="the server's UDP address (default 127.0.0.1:4000)"
    )
    add_endpoint_options(parser)


def _run_client(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    options = endpoint_options(args, parser)
    check_resolvable(parser, args.address[0])
    return run(parser.prog, functools.partial(client, args.address, vport=args.vport, **options))


SERVER = App(
    "echo-server",
    "line echo server over utcp",
    _server_args,
    _run_server,
    usage="%(prog)s [HOST:PORT] [options]",
)
"""``utcp echo-server [HOST:PORT]``: echo every line back; Ctrl-C stops."""

CLIENT = App(
    "echo",
    "line echo client: sends standard input, prints the echoes",
    _client_args,
    _run_client,
    usage="%(prog)s [HOST:PORT] [options]",
)
"""``utcp echo [HOST:PORT]``: send standard input, print what comes back."""
