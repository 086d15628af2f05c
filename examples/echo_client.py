"""A line-by-line echo client over utcp.

    python examples/echo_client.py 127.0.0.1:4000

Each line typed (or piped) on standard input is sent; each echoed line is
printed.  At end of input the client half-closes, prints what is still on
its way back, and exits.  Ctrl-C exits at once.
"""

from __future__ import annotations

import argparse
import sys

import trio

import utcp

try:
    from _common import host_port
except ImportError:  # imported as examples.echo_client
    from examples._common import host_port


async def run(address: tuple[str, int]) -> None:
    """Send standard input line by line and print the echoes."""
    async with utcp.open_endpoint(("::1" if ":" in address[0] else "127.0.0.1", 0)) as ep:
        conn = await ep.connect(address)

        async def pump_stdin() -> None:
            while True:
                line = await trio.to_thread.run_sync(
                    sys.stdin.buffer.readline, abandon_on_cancel=True
                )
                if not line:
                    break
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
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Line-by-line echo client over utcp.")
    parser.add_argument(
        "address",
        nargs="?",
        type=host_port,
        default=("127.0.0.1", 4000),
        help="server's UDP address, HOST:PORT (default 127.0.0.1:4000)",
    )
    args = parser.parse_args(argv)
    try:
        trio.run(run, args.address)
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
