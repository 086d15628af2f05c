"""The echo example in one process: a server and a client talking over utcp.

    python examples/echo_demo.py

Starts the echo server on 127.0.0.1 (a free port), connects a client, sends a
few lines, prints what comes back, and shows the connection table.
"""

from __future__ import annotations

import argparse
import sys

import trio

import utcp
from utcp.apps.echo import serve

LINES = [b"hello over utcp\n", b"TCP state machine, on UDP datagrams\n", b"bye\n"]


async def demo() -> None:
    async with trio.open_nursery() as nursery:
        address = await nursery.start(serve, ("127.0.0.1", 0))
        async with utcp.open_endpoint() as ep:
            conn = await ep.connect(address)
            print(f"client: {conn}")
            for line in LINES:
                await conn.send(line)
                echoed = b""
                while not echoed.endswith(b"\n"):
                    echoed += await conn.recv()
                print(f"client got: {echoed.decode().rstrip()}")
            await conn.shutdown()
            assert await conn.recv() == b""
            print(f"info: srtt={conn.info()['srtt']:.6f}s cwnd={conn.info()['cwnd']}")
            await conn.close()
            for row in ep.connections():
                print(
                    f"client table: {row.state} {row.local_port} -> {row.remote_address}/{row.remote_port}"
                )
        nursery.cancel_scope.cancel()
    print("echo demo OK")


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n", 1)[0]).parse_args(argv)
    trio.run(demo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
