"""HTTP/1.1 over utcp with h11 (``utcp http-server``, ``utcp http-get``).

`h11 <https://h11.readthedocs.io>`_ is a sans-IO HTTP/1.1 implementation:
it turns bytes into events and events into bytes, and the program moves the
bytes.  Here they move over a :class:`utcp.Connection`, exactly as they
would over a ``trio.SocketStream``.  h11 is imported only when an HTTP
application runs (``pip install 'utcp[examples]'``).

The server answers ``GET`` and ``HEAD`` with files from a directory
(``--root``; a directory gives its ``index.html`` or a listing) or, without
``--root``, with a small built-in page that shows the connection's TCP
state; it keeps connections alive between requests and closes idle ones
after 30 seconds.  The client sends one request and prints the status line,
the headers, a blank line and the body.
"""

from __future__ import annotations

import argparse
import email.utils
import functools
import html
import mimetypes
import os
import sys
import urllib.parse
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

import utcp

from . import (
    App,
    AppError,
    add_endpoint_options,
    add_remote_arguments,
    announce,
    check_resolvable,
    endpoint_options,
    format_address,
    listen_address,
    peer_name,
    run,
)

if TYPE_CHECKING:
    import h11

__all__ = ["CLIENT", "SERVER", "http_get", "serve_http"]

CHUNK = 65536
IDLE_TIMEOUT = 30.0
SERVER_NAME = f"utcp-http/{utcp.__version__}"

_NETWORK_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


def _h11() -> Any:
    try:
        import h11
    except ImportError:
        raise AppError(
            "error: the HTTP applications need h11: pip install 'utcp[examples]'"
        ) from None
    return h11


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream) -> Any:
    """The next h11 event, reading from ``stream`` as h11 needs."""
    import h11

    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(CHUNK)))
            continue
        return event


async def _send(conn: h11.Connection, stream: trio.abc.Stream, event: Any) -> None:
    data = conn.send(event)
    if data:
        await stream.send_all(data)


# -- server ------------------------------------------------------------------------


def _page(title: str, body: str) -> bytes:
    return (
        "<!doctype html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head>\n<body>\n{body}\n</body></html>\n"
    ).encode()


def _builtin_page(stream: trio.abc.Stream) -> bytes:
    rows = ""
    if isinstance(stream, utcp.Connection):
        info = stream.info()
        rows = "".join(
            f"<tr><td>{html.escape(key)}</td><td>{html.escape(str(info.get(key)))}</td></tr>"
            for key in ("state", "srtt", "rto", "cwnd", "bytes_received", "bytes_acked")
            if key in info
        )
        rows = f"<p>You are {html.escape(peer_name(stream))}.</p>\n<table>{rows}</table>"
    return _page(
        "utcp",
        "<h1>Hello from utcp</h1>\n"
        "<p>This page came over HTTP/1.1 (h11) over TCP (RFC 9293) over UDP datagrams.</p>\n"
        + rows,
    )


class _Reply:
    def __init__(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "text/html; charset=utf-8",
        *,
        path: Path | None = None,
        size: int | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.path = path
        self.size = len(body) if size is None else size
        self.extra = extra or []


def _error(status: int, reason: str, extra: list[tuple[str, str]] | None = None) -> _Reply:
    return _Reply(status, _page(f"{status} {reason}", f"<h1>{status} {reason}</h1>"), extra=extra)


def _listing(directory: Path, target: str) -> bytes:
    items = sorted(directory.iterdir(), key=lambda p: (not p.is_dir(), p.name))
    base = target if target.endswith("/") else target + "/"
    links = "".join(
        f'<li><a href="{html.escape(urllib.parse.quote(base + p.name))}{"/" if p.is_dir() else ""}">'
        f"{html.escape(p.name)}{'/' if p.is_dir() else ''}</a></li>\n"
        for p in items
        if not p.name.startswith(".")
    )
    return _page(
        f"Index of {target}", f"<h1>Index of {html.escape(target)}</h1>\n<ul>\n{links}</ul>"
    )


def _resolve_target(root: Path | None, method: str, target: str, stream: trio.abc.Stream) -> _Reply:
    if method not in ("GET", "HEAD"):
        return _error(405, "Method Not Allowed", [("Allow", "GET, HEAD")])
    path_text = urllib.parse.unquote(target.split("?", 1)[0].split("#", 1)[0])
    if not path_text.startswith("/") or "\0" in path_text:
        return _error(400, "Bad Request")
    if root is None:
        if path_text in ("/", "/index.html"):
            return _Reply(200, _builtin_page(stream))
        return _error(404, "Not Found")
    base = root.resolve()
    candidate = (base / path_text.lstrip("/")).resolve()
    if candidate != base and base not in candidate.parents:
        return _error(404, "Not Found")
    if candidate.is_dir():
        index = candidate / "index.html"
        if not index.is_file():
            return _Reply(200, _listing(candidate, path_text))
        candidate = index
    if not candidate.is_file():
        return _error(404, "Not Found")
    content_type = mimetypes.guess_type(candidate.name)[0] or "application/octet-stream"
    if content_type.startswith("text/"):
        content_type += "; charset=utf-8"
    return _Reply(200, content_type=content_type, path=candidate, size=candidate.stat().st_size)


async def handle_http(stream: trio.abc.Stream, root: Path | None) -> None:
    """Serve HTTP/1.1 requests on ``stream`` until the client closes or idles out."""
    h11 = _h11()
    conn = h11.Connection(h11.SERVER)
    peer = peer_name(stream) if isinstance(stream, utcp.Connection) else "peer"
    while True:
        try:
            with trio.move_on_after(IDLE_TIMEOUT) as idle:
                request = await _next_event(conn, stream)
            if idle.cancelled_caught or not isinstance(request, h11.Request):
                break
            while not isinstance(await _next_event(conn, stream), h11.EndOfMessage):
                pass  # request bodies are ignored
            method = request.method.decode("ascii", "replace")
            target = request.target.decode("ascii", "replace")
            reply = _resolve_target(root, method, target, stream)
            headers = [
                ("Server", SERVER_NAME),
                ("Date", email.utils.formatdate(usegmt=True)),
                ("Content-Type", reply.content_type),
                ("Content-Length", str(reply.size)),
                *reply.extra,
            ]
            response = h11.Response(
                status_code=reply.status, headers=headers, reason=HTTPStatus(reply.status).phrase
            )
            await _send(conn, stream, response)
            if method != "HEAD":
                if reply.path is not None:
                    async with await trio.open_file(reply.path, "rb") as f:
                        while chunk := await f.read(CHUNK):
                            await _send(conn, stream, h11.Data(data=chunk))
                elif reply.body:
                    await _send(conn, stream, h11.Data(data=reply.body))
            await _send(conn, stream, h11.EndOfMessage())
            version = request.http_version.decode("ascii", "replace")
            print(
                f'{peer} "{method} {target} HTTP/{version}" {reply.status} {reply.size}', flush=True
            )
        except h11.RemoteProtocolError as exc:
            print(f"{peer}: bad request: {exc}", flush=True)
            if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                status = exc.error_status_hint
                reply = _error(status, "Bad Request")
                try:
                    await _send(
                        conn,
                        stream,
                        h11.Response(
                            status_code=status,
                            reason=HTTPStatus(status).phrase,
                            headers=[
                                ("Content-Length", str(reply.size)),
                                ("Connection", "close"),
                            ],
                        ),
                    )
                    await _send(conn, stream, h11.Data(data=reply.body))
                    await _send(conn, stream, h11.EndOfMessage())
                except (h11.LocalProtocolError, *_NETWORK_ERRORS):
                    pass
            break
        except _NETWORK_ERRORS as exc:
            print(f"{peer}: {exc}", flush=True)
            break
        if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
            break
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            break
    await stream.aclose()


async def serve_http(
    address: tuple[str, int],
    root: str | None,
    *,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Serve HTTP at ``address`` until cancelled; prints ``http server on HOST:PORT`` first."""
    _h11()
    directory = Path(root) if root is not None else None
    host, port = address
    async with trio.open_nursery() as nursery:
        handler = functools.partial(handle_http, root=directory)
        listeners: list[utcp.Listener] = await nursery.start(
            functools.partial(utcp.serve, handler, port, host=host, **options)
        )
        what = f"files from {directory}" if directory is not None else "the built-in page"
        bound = announce("http server", listeners, f"serving {what}")
        task_status.started(bound)


# -- client ------------------------------------------------------------------------


async def http_get(
    address: tuple[str, int],
    path: str = "/",
    *,
    method: str = "GET",
    output: str | None = None,
    vport: int | None = None,
    **options: Any,
) -> int:
    """Send one request; print status line, headers, blank line, body. 0 if status < 400."""
    h11 = _h11()
    try:
        return await _http_get(h11, address, path, method, output, vport, options)
    except h11.ProtocolError as exc:
        raise AppError(f"error: bad HTTP from the server: {exc}") from None


async def _http_get(
    h11: Any,
    address: tuple[str, int],
    path: str,
    method: str,
    output: str | None,
    vport: int | None,
    options: dict[str, Any],
) -> int:
    conn = h11.Connection(h11.CLIENT)
    async with utcp.open_stream(address[0], address[1], vport=vport, **options) as stream:
        request = h11.Request(
            method=method,
            target=path,
            headers=[
                ("Host", format_address(address)),
                ("User-Agent", SERVER_NAME),
                ("Accept", "*/*"),
                ("Connection", "close"),
            ],
        )
        await _send(conn, stream, request)
        await _send(conn, stream, h11.EndOfMessage())
        while True:
            event = await _next_event(conn, stream)
            if isinstance(event, h11.Response):
                break
            if not isinstance(event, h11.InformationalResponse):
                raise AppError(f"error: unexpected reply from the server: {event!r}")
        version = event.http_version.decode()
        print(f"HTTP/{version} {event.status_code} {event.reason.decode('latin-1')}")
        for name, value in event.headers:
            print(f"{name.decode('latin-1')}: {value.decode('latin-1')}")
        print(flush=True)
        sink = open(output, "wb") if output is not None else None  # noqa: SIM115
        try:
            while True:
                event_body = await _next_event(conn, stream)
                if isinstance(event_body, h11.Data):
                    if sink is not None:
                        sink.write(event_body.data)
                    else:
                        sys.stdout.buffer.write(event_body.data)
                elif isinstance(event_body, h11.EndOfMessage | h11.ConnectionClosed):
                    break
        finally:
            if sink is not None:
                sink.close()
            sys.stdout.flush()
    return 0 if event.status_code < 400 else 1


# -- command line ------------------------------------------------------------------


def _server_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "address",
        type=listen_address,
        metavar="HOST:PORT",
        help="UDP address to listen on (port 0: any free port, printed on the first line)",
    )
    parser.add_argument(
        "--root", metavar="DIR", help="serve the files under DIR (default: a built-in page)"
    )
    add_endpoint_options(parser)


def _run_server(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    options = endpoint_options(args, parser)
    check_resolvable(parser, args.address[0])
    if args.root is not None and not os.path.isdir(args.root):
        parser.error(f"--root {args.root!r} is not a directory")
    call = functools.partial(serve_http, args.address, args.root, **options)
    return run(parser.prog, call, interrupted=0, farewell="bye")


def _client_args(parser: argparse.ArgumentParser) -> None:
    add_remote_arguments(parser, help="the server's UDP address")
    parser.add_argument(
        "path", nargs="?", default="/", metavar="PATH", help="the path to fetch (default /)"
    )
    parser.add_argument(
        "-X", "--method", default="GET", help="request method (default GET; try HEAD)"
    )
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="write the body to FILE instead of standard output"
    )
    add_endpoint_options(parser)


def _run_client(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    options = endpoint_options(args, parser)
    check_resolvable(parser, args.address[0])
    path = args.path if args.path.startswith("/") else "/" + args.path
    if any(c.isspace() or not c.isprintable() for c in path):
        parser.error(f"bad path {args.path!r}")
    method = args.method.upper()
    if not method.isalpha():
        parser.error(f"bad method {args.method!r}")
    call = functools.partial(
        http_get, args.address, urllib.parse.quote(path, safe="/?&=%:@!$'()*+,;~-._"),
        method=method, output=args.output, vport=args.vport, **options,
    )  # fmt: skip
    return run(parser.prog, call)


SERVER = App(
    "http-server",
    "HTTP/1.1 server (h11): files from a directory or a built-in page",
    _server_args,
    _run_server,
    usage="%(prog)s HOST:PORT [--root DIR] [options]",
)
"""``utcp http-server HOST:PORT [--root DIR]``."""

CLIENT = App(
    "http-get",
    "HTTP/1.1 client (h11): prints status line, headers and body",
    _client_args,
    _run_client,
    usage="%(prog)s HOST:PORT [PATH] [-X METHOD] [-o FILE] [options]",
)
"""``utcp http-get HOST:PORT [PATH]``: exit 0 for a status below 400, else 1."""
