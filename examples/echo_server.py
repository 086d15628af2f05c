"""A line-by-line echo server over utcp.

    python examples/echo_server.py 127.0.0.1:4000

Every line a client sends comes back to it.  Ctrl-C stops the server.
"""

from __future__ import annotations

import argparse
import sys

import trio

import utcp

try:
    from _common import host_port
except ImportError:  # imported as examples.echo_server
    from examples._common import host_port


async def handle(conn: utcp.Connection) -> None:
    """Echo whole lines until the client half-closes, then close."""
    peer = f"{conn.remote_address[0]}:{conn.remote_address[1]}/{conn.remote_port}"
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
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the echo server at ``address`` until cancelled."""
    async with utcp.open_endpoint(address) as ep:
        listener = ep.listen()
        print(f"echo server on {ep.local_address[0]}:{ep.local_address[1]}", flush=True)
        task_status.started(ep.local_address)
        async with trio.open_nursery() as nursery:
            while True:
                conn = await listener.accept()
                nursery.start_soon(handle, conn)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Line-by-line echo server over utcp.")
    parser.add_argument(
        "address",
        nargs="?",
        type=host_port,
        default=("127.0.0.1", 4000),
        help="UDP address to listen on, HOST:PORT (default 127.0.0.1:4000)",
    )
    args = parser.parse_args(argv)
    try:
        trio.run(serve, args.address)
    except KeyboardInterrupt:
        print("bye", flush=True)
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
