"""File transfer with an end-to-end SHA-256 check (``utcp send``, ``utcp recv``).

Protocol, over one connection:

1. the sender sends a header, one line of JSON:
   ``{"name": "photo.jpg", "size": 1048576, "sha256": "9f86d0..."}``;
2. then exactly ``size`` bytes of file data, then half-closes (FIN);
3. the receiver hashes what arrives, checks the size and the SHA-256, and
   answers one line, ``OK <sha256>`` or ``FAIL <reason>``, then closes.

The receiver writes into a temporary file in the output directory and
renames it only after the check passes, never overwriting: ``photo.jpg``
becomes ``photo.jpg.1``, ``photo.jpg.2``... if the name exists.  Names are
reduced to a plain file name (no directories).  Both sides show a progress
bar with rate and ETA on standard error (``--quiet`` turns it off) and exit
with status 1 when the transfer fails.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import trio

import utcp

from . import (
    App,
    AppError,
    LineReader,
    add_endpoint_options,
    add_remote_arguments,
    announce,
    check_resolvable,
    describe,
    endpoint_options,
    listen_address,
    peer_name,
    run,
)

__all__ = ["RECEIVER", "SENDER", "Progress", "receive_files", "receive_one", "send_file"]

CHUNK = 65536
MAX_HEADER = 8192
#: Received data is written to disk in pieces of about this size.
WRITE_BUFFER = 256 * 1024
#: How long a finished connection may take to deliver its last bytes and FIN.
CLOSE_WAIT = 10.0

_NETWORK_ERRORS = (OSError, trio.BrokenResourceError, trio.ClosedResourceError)


# -- progress bar ----------------------------------------------------------------


def human_bytes(n: float) -> str:
    """``1.5 MiB`` and friends."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """A one-line progress bar with rate and ETA.

    On a terminal it redraws in place ten times a second; otherwise (a pipe,
    a log) it prints a line at most once a second.  The final line reports
    the total time and average rate.
    """

    WIDTH = 24

    def __init__(
        self, label: str, total: int, *, stream: TextIO | None = None, enabled: bool = True
    ) -> None:
        self.label = label
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()
        self.interval = 0.1 if self.tty else 1.0
        self.start = time.monotonic()
        self.last = self.start
        self.done = 0

    def line(self, final: bool = False) -> str:
        """The text of the bar as it stands."""
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        fraction = self.done / self.total if self.total else 1.0
        filled = int(fraction * self.WIDTH)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        text = (
            f"{self.label} {fraction * 100:3.0f}% [{bar}] "
            f"{human_bytes(self.done)}/{human_bytes(self.total)} {human_bytes(rate)}/s"
        )
        if final:
            return f"{text} in {elapsed:.2f} s"
        eta = _clock((self.total - self.done) / rate) if rate > 0 else "-:--"
        return f"{text} ETA {eta}"

    def update(self, done: int) -> None:
        """Record progress; redraw if it is time to."""
        self.done = done
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._write(self.line())

    def finish(self) -> None:
        """Draw the final line."""
        if self.enabled:
            self._write(self.line(final=True), final=True)

    def _write(self, text: str, final: bool = False) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()


# -- sender ------------------------------------------------------------------------


def _hash_file(path: str) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


async def send_file(
    address: tuple[str, int],
    path: str,
    *,
    name: str | None = None,
    quiet: bool = False,
    vport: int | None = None,
    **options: Any,
) -> int:
    """Send ``path`` to the receiver at ``address``; 0 if it verified the file.

    Raises :class:`~utcp.apps.AppError` when the receiver answers ``FAIL``
    and the usual network errors when the connection fails.
    """
    if not os.path.isfile(path):
        raise AppError(f"error: {path}: not a regular file")
    size, digest = await trio.to_thread.run_sync(_hash_file, path)
    name = name if name is not None else os.path.basename(path)
    header = json.dumps({"name": name, "size": size, "sha256": digest})
    async with utcp.open_stream(address[0], address[1], vport=vport, **options) as conn:
        started = time.monotonic()
        progress = Progress(f"send {name}", size, enabled=not quiet)
        try:
            await conn.send_all(header.encode() + b"\n")
            sent = 0
            async with await trio.open_file(path, "rb") as f:
                while sent < size:
                    chunk = await f.read(min(CHUNK, size - sent))
                    if not chunk:
                        break
                    await conn.send_all(chunk)
                    sent += len(chunk)
                    progress.update(sent)
            if sent != size:
                raise AppError(f"error: {path} shrank while being sent ({sent} of {size} bytes)")
            await conn.send_eof()
        except trio.BrokenResourceError:
            # The receiver may have refused early (then reset): show its verdict if it came.
            try:
                early = await LineReader(conn, MAX_HEADER).readline()
            except trio.BrokenResourceError:
                early = b""
            if early.startswith(b"FAIL"):
                reason = early[4:].decode("utf-8", "replace").strip() or "failed"
                raise AppError(f"FAIL {name}: receiver says: {reason}") from None
            raise
        reply = await LineReader(conn, MAX_HEADER).readline()
        elapsed = time.monotonic() - started
        progress.finish()
    text = reply.decode("utf-8", "replace").strip()
    if text == f"OK {digest}":
        rate = human_bytes(size / max(elapsed, 1e-9))
        print(
            f"OK {name}: {size} bytes in {elapsed:.2f} s ({rate}/s), SHA-256 verified", flush=True
        )
        return 0
    if text.startswith("FAIL"):
        raise AppError(f"FAIL {name}: receiver says: {text[4:].strip() or 'failed'}")
    raise AppError(f"FAIL {name}: unexpected reply {text or '(connection closed)'!r}")


# -- receiver ----------------------------------------------------------------------


def safe_name(name: object) -> str | None:
    """``name`` if it is a plain, printable file name, else None."""
    if not isinstance(name, str) or not name or len(name.encode()) > 255:
        return None
    if name in (".", "..") or "/" in name or "\\" in name or not name.isprintable():
        return None
    return name


def _parse_header(line: bytes) -> tuple[str, int, str]:
    if not line.endswith(b"\n"):
        raise ValueError("header missing or too long")
    try:
        header = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("header is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    name = safe_name(header.get("name"))
    size = header.get("size")
    digest = header.get("sha256")
    if name is None:
        raise ValueError(f"bad file name {header.get('name')!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"bad size {size!r}")
    if (
        not isinstance(digest, str)
        or len(digest) != 64
        or any(c not in "0123456789abcdef" for c in digest)
    ):
        raise ValueError("bad sha256 (want 64 lowercase hex digits)")
    return name, size, digest


def _claim(directory: Path, name: str) -> Path:
    """Create an empty file for ``name`` (or ``name.1``...) that did not exist."""
    for i in range(10000):
        candidate = directory / (name if i == 0 else f"{name}.{i}")
        try:
            fd = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise OSError(f"too many files named {name!r} in {directory}")


async def _finish(conn: trio.abc.HalfCloseableStream, reply: str) -> None:
    """Send the verdict, half-close, let the sender finish, then close."""
    await conn.send_all(reply.encode() + b"\n")
    await conn.send_eof()
    with trio.move_on_after(CLOSE_WAIT):
        while await conn.receive_some(CHUNK):
            pass  # a failed transfer may still be arriving: drain it
    await conn.aclose()


async def receive_one(
    conn: trio.abc.HalfCloseableStream,
    directory: Path,
    *,
    quiet: bool = False,
) -> bool:
    """Receive one file on ``conn`` into ``directory``; True if it was verified and saved."""
    peer = peer_name(conn) if isinstance(conn, utcp.Connection) else "peer"
    reader = LineReader(conn, MAX_HEADER)
    tmp: Path | None = None
    try:
        try:
            name, size, digest = _parse_header(await reader.readline())
        except ValueError as exc:
            print(f"FAIL from {peer}: {exc}", flush=True)
            await _finish(conn, f"FAIL {exc}")
            return False
        tmp = directory / f".{name}.{secrets.token_hex(4)}.part"
        hasher = hashlib.sha256()
        got = 0
        progress = Progress(f"recv {name}", size, enabled=not quiet)
        data: bytes | bytearray = bytes(reader.buffer)
        reader.buffer.clear()
        problem: str | None = None
        async with await trio.open_file(tmp, "xb") as f:
            buffered = bytearray()
            while True:
                if data:
                    got += len(data)
                    if got > size:
                        problem = f"more data than the announced {size} bytes"
                        break
                    hasher.update(data)
                    buffered += data
                    progress.update(got)
                    if len(buffered) >= WRITE_BUFFER:
                        await f.write(buffered)
                        buffered = bytearray()
                data = await conn.receive_some(CHUNK)
                if not data:
                    break
            if problem is None and buffered:
                await f.write(buffered)
        progress.finish()
        if problem is None and got < size:
            problem = f"short transfer: {got} of {size} bytes"
        if problem is None and hasher.hexdigest() != digest:
            problem = f"SHA-256 mismatch: got {hasher.hexdigest()}"
        if problem is not None:
            print(f"FAIL {name} from {peer}: {problem}", flush=True)
            await _finish(conn, f"FAIL {problem}")
            return False
        final = await trio.to_thread.run_sync(_claim, directory, name)
        os.replace(tmp, final)
        tmp = None
        print(f"OK {name} from {peer}: {size} bytes -> {final}, SHA-256 verified", flush=True)
        await _finish(conn, f"OK {digest}")
        return True
    except _NETWORK_ERRORS as exc:
        if isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError):
            print(f"FAIL from {peer}: cannot save: {describe(exc)}", flush=True)
            with trio.move_on_after(CLOSE_WAIT):
                await _finish(conn, "FAIL receiver cannot save the file")
        else:
            print(f"FAIL from {peer}: {describe(exc)}", flush=True)
        return False
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


async def receive_files(
    address: tuple[str, int],
    directory: str,
    *,
    once: bool = False,
    quiet: bool = False,
    task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> int:
    """Receive files into ``directory`` until cancelled, or one file with ``once``.

    Prints ``file receiver on HOST:PORT`` first.  With ``once``, returns 0
    if the file was verified and saved, else 1.
    """
    out = Path(directory)
    outcome: list[bool] = []
    async with trio.open_nursery() as nursery:

        async def handler(conn: utcp.Connection) -> None:
            ok = await receive_one(conn, out, quiet=quiet)
            if once and not outcome:
                outcome.append(ok)
                with trio.move_on_after(CLOSE_WAIT):
                    await conn.wait_closed()  # let the verdict reach the sender
                nursery.cancel_scope.cancel()

        host, port = address
        listeners: list[utcp.Listener] = await nursery.start(
            functools.partial(utcp.serve, handler, port, host=host, **options)
        )
        bound = announce("file receiver", listeners, f"saving to {out}")
        task_status.started(bound)
    return 0 if all(outcome) else 1


# -- command line ------------------------------------------------------------------


def _sender_args(parser: argparse.ArgumentParser) -> None:
    add_remote_arguments(parser, help="the receiver's UDP address")
    parser.add_argument("file", metavar="FILE", help="the file to send")
    parser.add_argument("--name", help="name to save the file as (default: FILE's base name)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_endpoint_options(parser)


def _run_sender(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    options = endpoint_options(args, parser)
    check_resolvable(parser, args.address[0])
    if args.name is not None and safe_name(args.name) is None:
        parser.error(f"--name must be a plain file name, got {args.name!r}")
    call = functools.partial(
        send_file,
        args.address,
        args.file,
        name=args.name,
        quiet=args.quiet,
        vport=args.vport,
        **options,
    )
    return run(parser.prog, call)


def _receiver_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "address",
        type=listen_address,
        metavar="HOST:PORT",
        help="UDP address to listen on (port 0: any free port, printed on the first line)",
    )
    parser.add_argument(
        "-o", "--out", default=".", metavar="DIR", help="directory to save into (default: .)"
    )
    parser.add_argument(
        "--once", action="store_true", help="exit after one file: 0 if it was verified, else 1"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_endpoint_options(parser)


def _run_receiver(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    options = endpoint_options(args, parser)
    check_resolvable(parser, args.address[0])
    if not os.path.isdir(args.out):
        parser.error(f"--out {args.out!r} is not a directory")
    call = functools.partial(
        receive_files, args.address, args.out, once=args.once, quiet=args.quiet, **options
    )
    return run(parser.prog, call, interrupted=0, farewell="bye")


SENDER = App(
    "send",
    "send a file; the receiver checks its SHA-256",
    _sender_args,
    _run_sender,
    usage="%(prog)s HOST:PORT FILE [--name NAME] [--quiet] [options]",
)
"""``utcp send HOST:PORT FILE``: exit 0 once the receiver verified the file."""

RECEIVER = App(
    "recv",
    "receive files into a directory, SHA-256 verified",
    _receiver_args,
    _run_receiver,
    usage="%(prog)s HOST:PORT [--out DIR] [--once] [--quiet] [options]",
)
"""``utcp recv HOST:PORT --out DIR``: save verified files; ``--once`` for one."""
