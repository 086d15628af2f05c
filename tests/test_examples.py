"""The example programs (examples/*.py), run as real subprocesses and talked to.

Every scenario here is written against a *launcher*, a function from a
program name (``"chat-server"``, ``"send"``...) to its command line, so that
tests/test_cli.py runs the same scenarios against ``python -m utcp``.
Servers are started on port 0 and print their bound address on their first
line, which the tests parse.  Every wait is bounded by ``trio.fail_after``;
subprocesses are killed on teardown.  Keepalive uses short times given on
the command line, so nothing waits for a protocol timer longer than about a
second.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

import utcp
from utcp.apps import LineReader, parse_hostport
from utcp.chaos import ChaosRelay, open_relay
from utcp.netem import Impairment

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
#: Bound for anything that takes well under a second on loopback, plus
#: interpreter start-up on a loaded machine.
DEADLINE = 20.0

Launcher = Callable[[str], list[str]]

SCRIPTS = {
    "echo-server": "echo_server.py",
    "echo": "echo_client.py",
    "chat-server": "chat_server.py",
    "chat": "chat_client.py",
    "recv": "file_recv.py",
    "send": "file_send.py",
    "http-server": "http_server.py",
    "http-get": "http_client.py",
}


def example(name: str) -> list[str]:
    """The command line of the example program playing ``name``."""
    return [sys.executable, str(EXAMPLES / SCRIPTS[name])]


# -- subprocess plumbing ----------------------------------------------------------


class Program:
    """A running subprocess with line-oriented access to its stdin and stdout."""

    def __init__(self, name: str, process: trio.Process, stderr_path: Path) -> None:
        self.name = name
        self.process = process
        assert process.stdout is not None
        self._reader = LineReader(process.stdout)
        self._stderr_path = stderr_path
        self.lines: list[str] = []

    async def readline(self, timeout: float = DEADLINE) -> str:
        """The next line of stdout, without its newline; ``""`` at EOF."""
        with trio.fail_after(timeout):
            raw = await self._reader.readline()
        line = raw.decode("utf-8", "replace").rstrip("\n")
        if raw:
            self.lines.append(line)
        return line if raw else ""

    async def expect(self, text: str, timeout: float = DEADLINE) -> str:
        """Read stdout until a line contains ``text``; return that line."""
        try:
            with trio.fail_after(timeout):
                while True:
                    raw = await self._reader.readline()
                    if not raw:
                        raise AssertionError(f"{self.name}: EOF while waiting for {text!r}")
                    line = raw.decode("utf-8", "replace").rstrip("\n")
                    self.lines.append(line)
                    if text in line:
                        return line
        except trio.TooSlowError:
            raise AssertionError(
                f"{self.name}: no line with {text!r} within {timeout} s; "
                f"stdout so far: {self.lines!r}; stderr: {self.stderr()!r}"
            ) from None

    async def write(self, text: str) -> None:
        """Send ``text`` to the program's stdin."""
        assert self.process.stdin is not None
        await self.process.stdin.send_all(text.encode())

    async def close_stdin(self) -> None:
        """End of input for the program."""
        assert self.process.stdin is not None
        await self.process.stdin.aclose()

    def interrupt(self) -> None:
        """Ctrl-C."""
        self.process.send_signal(signal.SIGINT)

    async def wait(self, timeout: float = DEADLINE) -> int:
        """Wait for the exit status."""
        with trio.fail_after(timeout):
            return await self.process.wait()

    async def rest(self, timeout: float = DEADLINE) -> list[str]:
        """Read stdout to EOF; return the new lines."""
        lines = []
        while line := await self.readline(timeout):
            lines.append(line)
        return lines

    def stderr(self) -> str:
        """What the program wrote on stderr so far."""
        return self._stderr_path.read_text(errors="replace")


@asynccontextmanager
async def running(
    argv: list[str], tmp_path: Path, name: str = "", *, merge_stderr: bool = False
) -> AsyncIterator[Program]:
    """Start ``argv`` with piped stdin/stdout (stderr to a file); kill it on exit.

    With ``merge_stderr``, stderr goes to the stdout pipe instead.
    """
    name = name or Path(argv[1] if argv[1] != "-m" else argv[3]).name
    stderr_path = tmp_path / f"{name}-{os.urandom(4).hex()}.stderr"
    with open(stderr_path, "wb") as stderr:
        process = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else stderr,
            env=ENV,
            cwd=ROOT,
        )
    try:
        yield Program(name, process, stderr_path)
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            with trio.move_on_after(5):
                await process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    await trio.aclose_forcefully(stream)


async def run_once(
    argv: list[str], stdin: bytes = b"", timeout: float = DEADLINE
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` to completion (killed after ``timeout``)."""
    with trio.fail_after(timeout):
        return await trio.run_process(
            argv, stdin=stdin, capture_stdout=True, capture_stderr=True, check=False, env=ENV,
            cwd=ROOT,
        )  # fmt: skip


_ADDRESS = re.compile(r" on (\[[^\]]+\]:\d+|[^\s\[\]:,]+:\d+)")


def address_in(line: str) -> tuple[str, int]:
    """The ``HOST:PORT`` after `` on `` in a server's first line."""
    match = _ADDRESS.search(line)
    assert match, f"no address in {line!r}"
    return parse_hostport(match.group(1))


def hostport(address: tuple[str, int]) -> str:
    return f"[{address[0]}]:{address[1]}" if ":" in address[0] else f"{address[0]}:{address[1]}"


@asynccontextmanager
async def server(
    launcher: Launcher, name: str, tmp_path: Path, *args: str
) -> AsyncIterator[tuple[Program, tuple[str, int]]]:
    """Start server ``name`` on 127.0.0.1:0; yield it and its bound address."""
    async with running([*launcher(name), "127.0.0.1:0", *args], tmp_path, name) as program:
        first = await program.readline()
        assert first, f"{name} printed nothing; stderr: {program.stderr()!r}"
        yield program, address_in(first)


def one_error_line(stderr: str) -> str:
    """Check stderr holds exactly one ``error:`` line and no traceback; return it."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, stderr
    assert len(stderr.splitlines()) <= 3, stderr
    return errors[0]


# -- scenarios (shared with test_cli.py) -----------------------------------------


async def scenario_help(launcher: Launcher, names: list[str]) -> None:
    """``--help`` exits 0 and describes the endpoint options, for every program."""
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}

    async def one(name: str) -> None:
        results[name] = await run_once([*launcher(name), "--help"])

    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(one, name)
    for name, result in results.items():
        out = result.stdout.decode()
        assert result.returncode == 0, (name, result.stderr)
        assert out.startswith("usage:"), (name, out)
        assert "HOST:PORT" in out and "--keepalive" in out and "--mtu" in out, (name, out)


async def scenario_bad_arguments(launcher: Launcher) -> None:
    """Bad addresses, ports and option values exit 2 with one ``error:`` line."""
    cases = [
        (["echo-server", "127.0.0.1"], "expected HOST:PORT"),
        (["echo", "127.0.0.1:0"], "port must be in 1..65535"),
        (["chat-server", "127.0.0.1:65536"], "port must be in 0..65535"),
        (["chat", "::1:4000"], "brackets"),
        (["chat", "[nope]:4000"], "not an IPv6 address"),
        (["send", "127.0.0.1:http", "x"], "bad port"),
        (["recv", "host.invalid:4000"], "cannot resolve host"),
        (["http-get", "127.0.0.1:80", "--vport", "0"], "virtual port"),
        (["http-server", "127.0.0.1:0", "--mtu", "5"], "mtu must be"),
        (["chat", "127.0.0.1:4000", "--congestion", "bbr9"], "unknown congestion"),
        (["send", "127.0.0.1:4000", "f", "--keepalive-time", "soon"], "not a number"),
    ]
    results: list[tuple[list[str], str, subprocess.CompletedProcess[bytes]]] = []

    async def one(args: list[str], expected: str) -> None:
        results.append((args, expected, await run_once([*launcher(args[0]), *args[1:]])))

    async with trio.open_nursery() as nursery:
        for args, expected in cases:
            nursery.start_soon(one, args, expected)
    for args, expected, result in results:
        stderr = result.stderr.decode()
        assert result.returncode == 2, (args, stderr)
        assert expected in one_error_line(stderr), (args, stderr)


async def scenario_echo(launcher: Launcher, tmp_path: Path) -> None:
    """Echo server and client; the client half-closes at end of input; Ctrl-C stops the server."""
    async with server(launcher, "echo-server", tmp_path) as (srv, address):
        text = "hello over utcp\nsecond line\nno newline at the end"
        result = await run_once([*launcher("echo"), hostport(address)], stdin=text.encode())
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode() == text
        assert (await srv.expect("connected: 127.0.0.1:")).startswith("connected:")
        await srv.expect("closed: 127.0.0.1:")
        srv.interrupt()
        assert await srv.wait() == 0
        assert await srv.rest() == ["bye"]
        assert "Traceback" not in srv.stderr()


async def scenario_chat(launcher: Launcher, tmp_path: Path) -> None:
    """Three clients, nicknames, broadcast, /who, /quit, Ctrl-C, end of input."""
    keepalive = ["--keepalive-time", "0.5", "--keepalive-intvl", "0.25", "--keepalive-probes", "2"]
    async with server(launcher, "chat-server", tmp_path, *keepalive) as (srv, address):
        where = hostport(address)
        async with AsyncExitStack() as stack:

            async def client(name: str, *args: str) -> Program:
                argv = [*launcher("chat"), where, *args]
                return await stack.enter_async_context(running(argv, tmp_path, name))

            alice = await client("alice", "--nick", "alice")
            assert await alice.readline() == "* welcome alice! online: alice (commands: /who /quit)"
            bob = await client("bob")
            await bob.write("bob\n")  # no --nick: the first line typed is the nickname
            assert (
                await bob.readline() == "* welcome bob! online: alice, bob (commands: /who /quit)"
            )
            assert await alice.readline() == "* bob joined"
            # Nicknames are unique, case-insensitively; the next line is another try.
            carol = await client("carol", "--nick", "Alice")
            assert await carol.readline() == "* nickname 'Alice' is taken; send another nickname"
            await carol.write("carol\n")
            assert (await carol.readline()).startswith("* welcome carol! online: alice, bob, carol")
            assert await alice.readline() == "* carol joined"
            assert await bob.readline() == "* carol joined"

            await alice.write("hello room\n")
            assert await bob.readline() == "<alice> hello room"
            assert await carol.readline() == "<alice> hello room"
            await bob.write("/who\n")
            assert await bob.readline() == "* online: alice, bob, carol"
            await bob.write("/nope\n")
            assert (await bob.readline()).startswith("* unknown command /nope")

            await carol.write("/quit\n")
            assert await carol.readline() == "* bye"
            assert await carol.wait() == 0
            assert await alice.readline() == "* carol left"
            assert await bob.readline() == "* carol left"

            bob.interrupt()  # Ctrl-C: the client exits at once, resetting its connection
            assert await bob.wait() == 130
            assert "Traceback" not in bob.stderr()
            assert (await alice.readline()).startswith("* bob left")

            await alice.close_stdin()  # end of input: leave gracefully
            assert await alice.wait() == 0
        log = await srv.expect("alice left")
        assert log == "alice left"
        for line in ("alice joined from 127.0.0.1:", "bob joined from", "carol left"):
            assert any(line in seen for seen in srv.lines), (line, srv.lines)
        srv.interrupt()
        assert await srv.wait() == 0
        assert "Traceback" not in srv.stderr()


async def scenario_chat_vanished_client(launcher: Launcher, tmp_path: Path) -> None:
    """Clients that vanish without a word are dropped and announced as timed out.

    Each vanishing client is an in-test connection through an in-process
    relay; stopping the relay cuts it off (no FIN, no RST ever reaches the
    server), like a machine that lost power.  The first one vanishes while
    idle, so keepalive finds out; the second one before acknowledging the
    server's welcome, so the retransmission timer and the user timeout the
    server derives from the keepalive flags find out.
    """
    keepalive = ["--keepalive-time", "0.5", "--keepalive-intvl", "0.25", "--keepalive-probes", "2"]
    async with server(launcher, "chat-server", tmp_path, *keepalive) as (srv, address):
        async with running(
            [*launcher("chat"), hostport(address), "--nick", "alice"], tmp_path, "alice"
        ) as alice:
            await alice.expect("* welcome alice!")
            for nick, idle in (("ghost", True), ("spook", False)):
                async with trio.open_nursery() as nursery:
                    relay, relay_scope = await nursery.start(_relay, address, Impairment())
                    async with utcp.open_stream(*relay.address, vport=address[1]) as ghost:
                        await ghost.send_all(f"{nick}\n".encode())
                        with trio.fail_after(DEADLINE):
                            welcome = await LineReader(ghost).readline()
                        assert welcome.startswith(f"* welcome {nick}!".encode())
                        assert await alice.readline() == f"* {nick} joined"
                        if idle:
                            # This segment acknowledges the welcome: nothing is left in flight.
                            await ghost.send_all(b"brb\n")
                            assert await alice.readline() == f"<{nick}> brb"
                        relay_scope.cancel()  # the network vanishes
                        with trio.fail_after(10):
                            line = await alice.readline()
                        assert line == f"* {nick} left (timed out)"
                        ghost.abort()  # nothing would reach the server anyway
                await srv.expect(f"{nick} left (timed out)")
            await alice.write("/who\n")
            assert await alice.readline() == "* online: alice"


def make_file(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


async def scenario_file_transfer(launcher: Launcher, tmp_path: Path, *, relay: str = "") -> None:
    """Send a 1 MB file; SHA-256 checked at both ends.

    ``relay``: ``""`` sends directly; ``"in-process"`` goes through a
    :func:`utcp.chaos.open_relay` with 5% loss each way; ``"chaos"`` through a
    ``python -m utcp chaos --loss 0.05`` subprocess.
    """
    source = tmp_path / "random.bin"
    digest = make_file(source, 1_000_000)
    out = tmp_path / "out"
    out.mkdir()
    async with (
        server(launcher, "recv", tmp_path, "--out", str(out), "--once") as (rcv, address),
        AsyncExitStack() as stack,
    ):
        target, extra = address, ["--vport", str(address[1])] if relay else []
        if relay == "in-process":
            nursery = await stack.enter_async_context(trio.open_nursery())
            stack.callback(nursery.cancel_scope.cancel)
            lossy = Impairment(loss=0.05)
            chaos_relay, _ = await nursery.start(_relay, address, lossy)
            target = chaos_relay.address
        elif relay == "chaos":
            argv = [sys.executable, "-m", "utcp", "chaos", "--listen", "127.0.0.1:0",
                    "--forward", hostport(address), "--loss", "0.05", "--seed", "7"]  # fmt: skip
            chaos = await stack.enter_async_context(
                running(argv, tmp_path, "chaos", merge_stderr=True)
            )
            target = address_in((await chaos.readline()).replace("relaying", "on"))
        result = await run_once(
            [*launcher("send"), hostport(target), str(source), *extra], timeout=60
        )
        if relay == "in-process":
            stats = chaos_relay.stats
            assert stats.c2s.dropped > 0 and stats.s2c.dropped > 0, stats.summary()
        elif relay == "chaos":
            chaos.interrupt()
            assert await chaos.wait() == 0
            summary = await chaos.expect("final stats:")
            assert [int(n) > 0 for n in re.findall(r"lost=(\d+)", summary)] == [True, True]
        stderr = result.stderr.decode()
        assert result.returncode == 0, stderr
        assert result.stdout.decode().startswith("OK random.bin: 1000000 bytes in ")
        assert "send random.bin 100% [" in stderr and "/s in " in stderr, stderr
        assert await rcv.wait(30) == 0
        assert (await rcv.readline()).startswith("OK random.bin from 127.0.0.1:")
        assert "recv random.bin 100%" in rcv.stderr()
    saved = out / "random.bin"
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in out.iterdir()) == ["random.bin"]  # no temporary left


async def _relay(
    address: tuple[str, int],
    impairment: Impairment,
    *,
    task_status: trio.TaskStatus[tuple[ChaosRelay, trio.CancelScope]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a relay to ``address``; report it and the scope that stops it."""
    with trio.CancelScope() as scope:
        async with open_relay(
            ("127.0.0.1", 0), address, c2s=impairment, s2c=impairment, seed=7
        ) as relay:
            task_status.started((relay, scope))
            await trio.sleep_forever()


async def scenario_file_transfer_failures(launcher: Launcher, tmp_path: Path) -> None:
    """A corrupted transfer is refused (receiver exits 1); a FAIL makes the sender exit 1."""
    out = tmp_path / "out"
    out.mkdir()
    async with server(launcher, "recv", tmp_path, "--out", str(out), "--once", "-q") as (
        rcv,
        address,
    ):
        header = {"name": "x.bin", "size": 5, "sha256": hashlib.sha256(b"hello").hexdigest()}
        async with utcp.open_stream(*address) as conn:
            await conn.send_all(json.dumps(header).encode() + b"\njello")
            await conn.send_eof()
            reader = LineReader(conn)
            with trio.fail_after(DEADLINE):
                reply = await reader.readline()
                assert await reader.readline() == b""  # the receiver closes too
        assert reply.startswith(b"FAIL SHA-256 mismatch")
        assert await rcv.wait() == 1
        assert (await rcv.readline()).startswith("FAIL x.bin from 127.0.0.1:")
    assert list(out.iterdir()) == []  # nothing kept, no temporary left

    async def refuse(conn: utcp.Connection) -> None:
        await LineReader(conn).readline()
        await conn.send_all(b"FAIL disk full\n")

    source = tmp_path / "small.bin"
    make_file(source, 1000)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(utcp.serve, refuse, 0)
        where = hostport(listeners[0].local_address)
        result = await run_once([*launcher("send"), where, str(source), "--quiet"])
        nursery.cancel_scope.cancel()
    stderr = result.stderr.decode()
    assert result.returncode == 1
    assert "FAIL small.bin: receiver says: disk full" in stderr
    assert "100%" not in stderr  # --quiet

    missing = await run_once([*launcher("send"), "127.0.0.1:9", str(tmp_path / "nope")])
    assert missing.returncode == 1
    assert "not a regular file" in one_error_line(missing.stderr.decode())


async def scenario_http(launcher: Launcher, tmp_path: Path) -> None:
    """An HTTP/1.1 server (files and built-in page) and client over utcp."""
    root = tmp_path / "site"
    (root / "docs").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>\n")
    (root / "docs" / "notes.txt").write_text("plain text notes\n")
    async with server(launcher, "http-server", tmp_path, "--root", str(root)) as (srv, address):
        where = hostport(address)
        ok = await run_once([*launcher("http-get"), where, "/docs/notes.txt"])
        assert ok.returncode == 0, ok.stderr
        head, _, body = ok.stdout.decode().partition("\n\n")
        lines = head.splitlines()
        assert lines[0] == "HTTP/1.1 200 OK"
        headers = dict(line.split(": ", 1) for line in lines[1:])
        assert headers["content-type"] == "text/plain; charset=utf-8"
        assert headers["content-length"] == "17"
        assert body == "plain text notes\n"

        home = await run_once([*launcher("http-get"), where])
        assert home.returncode == 0 and home.stdout.decode().endswith("\n\n<h1>home</h1>\n")
        listing_dir = await run_once([*launcher("http-get"), where, "docs/"])
        assert b"notes.txt" in listing_dir.stdout

        missing = await run_once([*launcher("http-get"), where, "/../../etc/passwd"])
        assert missing.returncode == 1
        assert missing.stdout.decode().startswith("HTTP/1.1 404 Not Found\n")

        head_only = await run_once([*launcher("http-get"), where, "/", "-X", "HEAD"])
        assert head_only.returncode == 0
        assert "\ncontent-length: 14\n" in head_only.stdout.decode()
        assert head_only.stdout.decode().endswith("\n\n")  # no body

        await srv.expect('"GET /docs/notes.txt HTTP/1.1" 200 17')
        srv.interrupt()
        assert await srv.wait() == 0

    async with server(launcher, "http-server", tmp_path) as (srv, address):
        saved = tmp_path / "page.html"
        page = await run_once([*launcher("http-get"), hostport(address), "-o", str(saved)])
        assert page.returncode == 0, page.stderr
        assert page.stdout.decode().startswith("HTTP/1.1 200 OK\n")
        text = saved.read_text()
        assert "Hello from utcp" in text and "ESTABLISHED" in text


async def scenario_client_errors(launcher: Launcher) -> None:
    """A refused connection is a one-line error and exit status 1."""
    async with utcp.open_endpoint() as ep:  # answers SYNs with RST: nobody listens
        where = hostport(ep.local_address)
        results = {}

        async def one(name: str, *args: str) -> None:
            results[name] = await run_once([*launcher(name), where, *args])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, "echo")
            nursery.start_soon(one, "chat", "--nick", "x")
            nursery.start_soon(one, "http-get")
    for name, result in results.items():
        stderr = result.stderr.decode()
        assert result.returncode == 1, (name, stderr)
        assert "connection refused" in one_error_line(stderr), (name, stderr)


# -- the examples ------------------------------------------------------------------


async def test_help() -> None:
    await scenario_help(example, list(SCRIPTS))


async def test_bad_arguments() -> None:
    await scenario_bad_arguments(example)


async def test_echo_demo() -> None:
    result = await run_once([sys.executable, str(EXAMPLES / "echo_demo.py")])
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().endswith("echo demo OK\n")


async def test_echo(tmp_path: Path) -> None:
    await scenario_echo(example, tmp_path)


async def test_chat(tmp_path: Path) -> None:
    await scenario_chat(example, tmp_path)


async def test_chat_drops_vanished_client(tmp_path: Path) -> None:
    await scenario_chat_vanished_client(example, tmp_path)


async def test_file_transfer(tmp_path: Path) -> None:
    await scenario_file_transfer(example, tmp_path)


async def test_file_transfer_through_lossy_relay(tmp_path: Path) -> None:
    await scenario_file_transfer(example, tmp_path, relay="in-process")


async def test_file_transfer_failures(tmp_path: Path) -> None:
    await scenario_file_transfer_failures(example, tmp_path)


async def test_http(tmp_path: Path) -> None:
    await scenario_http(example, tmp_path)


async def test_client_errors() -> None:
    await scenario_client_errors(example)


@pytest.mark.parametrize("name", sorted(SCRIPTS.values()))
def test_examples_are_thin_wrappers(name: str) -> None:
    """Each example delegates to utcp.apps, so the CLI and the examples can't drift apart."""
    source = (EXAMPLES / name).read_text()
    assert "from utcp.apps." in source
    assert len(source.splitlines()) < 60


# -- docs/tutorial.md ----------------------------------------------------------------


def tutorial_programs(port: int) -> dict[str, str]:
    """The tutorial's Python programs by file name, with port 4000 replaced."""
    text = (ROOT / "docs" / "tutorial.md").read_text()
    programs = {}
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        name = re.match(r"# (\S+\.py)\n", block)
        assert name, block[:40]
        programs[name.group(1)] = block.replace("4000", str(port))
    assert set(programs) == {"echo_server.py", "echo_client.py", "chat_server.py"}
    return programs


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for_server(port: int) -> None:
    """Retry connecting until a server started in a subprocess answers."""
    with trio.fail_after(DEADLINE):
        while True:
            try:
                async with utcp.open_stream("127.0.0.1", port, syn_retries=0, rto_initial=0.2):
                    return
            except (ConnectionRefusedError, TimeoutError):
                await trio.sleep(0.05)


async def test_tutorial_code_runs(tmp_path: Path) -> None:
    port = free_udp_port()
    programs = tutorial_programs(port)
    for name, code in programs.items():
        (tmp_path / name).write_text(code)
    python = [sys.executable]
    async with running([*python, str(tmp_path / "echo_server.py")], tmp_path, "echo") as srv:
        await wait_for_server(port)
        result = await run_once([*python, str(tmp_path / "echo_client.py")])
        assert result.stdout == b"b'hello, utcp\\n'\n", result.stderr
        srv.interrupt()
        await srv.wait()
    async with running([*python, str(tmp_path / "chat_server.py")], tmp_path, "chat") as srv:
        await wait_for_server(port)
        async with (
            utcp.open_stream("127.0.0.1", port) as alice,
            utcp.open_stream("127.0.0.1", port) as bob,
        ):
            alice_lines, bob_lines = LineReader(alice), LineReader(bob)
            with trio.fail_after(DEADLINE):
                await alice.send_all(b"alice\n/who\n")
                assert await alice_lines.readline() == b"* online: alice\n"
                await bob.send_all(b"bob\n")
                assert await alice_lines.readline() == b"* bob joined\n"
                await bob.send_all(b"hi alice\n/who\n")
                assert await alice_lines.readline() == b"<bob> hi alice\n"
                assert await bob_lines.readline() == b"* online: alice, bob\n"
                await bob.send_all(b"/quit\n")
                assert await alice_lines.readline() == b"* bob left\n"
                assert await bob_lines.readline() == b""
        srv.interrupt()
        await srv.wait()
