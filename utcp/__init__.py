"""utcp: real TCP (RFC 9293) over UDP datagrams, in pure Python on Trio.

An endpoint owns one UDP socket and runs full TCP connection logic over it,
one TCP segment per datagram::

    async with utcp.open_endpoint(("127.0.0.1", 4000)) as ep:
        listener = ep.listen()
        conn = await listener.accept()
        await conn.send(await conn.recv())
"""

from ._connection import Connection
from ._core.codec import CodecError, Segment
from ._core.config import Options
from ._core.state import State
from ._endpoint import ConnectionInfo, Endpoint, Listener, open_endpoint
from ._highlevel import open_listeners, open_stream, serve

__all__ = [
    "CodecError",
    "Connection",
    "ConnectionInfo",
    "Endpoint",
    "Listener",
    "Options",
    "Segment",
    "State",
    "open_endpoint",
    "open_listeners",
    "open_stream",
    "serve",
]

__version__ = "0.1.0"
