"""The ``utcp`` / ``python -m utcp`` command line.

Subcommands live in :data:`COMMANDS`; each is a :class:`Command` with a
function that adds its arguments to its sub-parser and a function that runs
it.  New subcommands register themselves with the :func:`command`
decorator::

    def _echo_args(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--listen", type=listen_address, required=True)

    @command("echo-server", "run a TCP-over-UDP echo server", _echo_args)
    def _echo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
        ...

``chaos`` is implemented here; the applications (``echo-server``, ``echo``,
``chat-server``, ``chat``, ``recv``, ``send``, ``http-server``,
``http-get``) live in :mod:`utcp.apps`, shared with ``examples/``, and are
registered from their :class:`utcp.apps.App` descriptions.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from .apps import (
    App,
    _argtype,
    _seconds,
    chat,
    echo,
    filexfer,
    http,
    listen_address,
    parse_hostport,
    remote_address,
)
from .apps import (
    _number as _float,
)
from .chaos import ChaosRelay
from .netem import Impairment

__all__ = [
    "COMMANDS",
    "Command",
    "build_parser",
    "command",
    "forward_address",
    "listen_address",
    "main",
    "parse_hostport",
]

PROG = "utcp"

Runner = Callable[[argparse.Namespace, argparse.ArgumentParser], int]


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, one-line help, argument setup and runner.

    ``run(args, parser)`` gets the parsed arguments and its own sub-parser
    (for ``parser.error``) and returns the exit status.
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Runner
    usage: str | None = None


COMMANDS: dict[str, Command] = {}


def command(
    name: str,
    help: str,
    configure: Callable[[argparse.ArgumentParser], None],
    *,
    usage: str | None = None,
) -> Callable[[Runner], Runner]:
    """Decorator registering ``run`` as the subcommand ``name``.

    ``usage`` replaces argparse's generated usage line (useful when the
    command has many options, so that errors stay short).
    """

    def register(run: Runner) -> Runner:
        if name in COMMANDS:
            raise ValueError(f"subcommand {name!r} is already registered")
        COMMANDS[name] = Command(name, help, configure, run, usage)
        return run

    return register


# -- argument types ------------------------------------------------------


forward_address = remote_address
"""argparse type for a destination ``HOST:PORT``."""


def _prob(text: str) -> float:
    value = _float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {text!r}")
    return value


_SUFFIXES = {"k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9}


def _amount(text: str) -> float:
    scale = 1
    if text and text[-1] in _SUFFIXES:
        text, scale = text[:-1], _SUFFIXES[text[-1]]
    value = _float(text) * scale
    if value <= 0:
        raise ValueError(f"must be > 0, got {text!r}")
    return value


def _bytes(text: str) -> int:
    value = _amount(text)
    if value != int(value):
        raise ValueError(f"must be a whole number of bytes, got {text!r}")
    return int(value)


def _burst(text: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    if len(parts) != 4:
        raise ValueError(f"expected four probabilities PGB,PBG,LG,LB, got {text!r}")
    a, b, c, d = (_prob(p.strip()) for p in parts)
    return (a, b, c, d)


def _blackout(text: str) -> tuple[float, float]:
    start, sep, duration = text.partition(":")
    if not sep:
        raise ValueError(f"expected START:DURATION, got {text!r}")
    s, d = _seconds(start), _seconds(duration)
    if d <= 0:
        raise ValueError(f"blackout duration must be > 0, got {duration!r}")
    return (s, d)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise ValueError(f"must be >= 1, got {text!r}")
    return value


# -- chaos -----------------------------------------------------------------


@dataclass(frozen=True)
class _ImpairmentOption:
    flag: str
    field: str
    convert: Callable[[str], Any]
    metavar: str
    help: str
    append: bool = False


_IMPAIRMENT_OPTIONS = (
    _ImpairmentOption("loss", "loss", _prob, "P", "iid loss probability"),
    _ImpairmentOption(
        "burst-loss",
        "burst_loss",
        _burst,
        "PGB,PBG,LG,LB",
        "Gilbert-Elliott burst loss: P(good->bad), P(bad->good), loss in good, loss in bad",
    ),
    _ImpairmentOption("dup", "duplicate", _prob, "P", "duplication probability"),
    _ImpairmentOption("reorder", "reorder", _prob, "P", "probability a datagram is held back"),
    _ImpairmentOption(
        "reorder-delay", "reorder_delay", _seconds, "S", "how long reordered datagrams are held"
    ),
    _ImpairmentOption("delay", "delay", _seconds, "S", "one-way delay (e.g. 0.05 or 50ms)"),
    _ImpairmentOption("jitter", "jitter", _seconds, "S", "uniform +- jitter added to the delay"),
    _ImpairmentOption("corrupt", "corrupt", _prob, "P", "probability of flipping 1-3 bits"),
    _ImpairmentOption("rate", "rate", _amount, "BYTES_PER_S", "bottleneck rate (k/M/G suffixes)"),
    _ImpairmentOption("queue", "queue_limit", _bytes, "BYTES", "bottleneck queue size for --rate"),
    _ImpairmentOption(
        "blackout",
        "blackouts",
        _blackout,
        "START:DURATION",
        "drop everything during this window (seconds from start; repeatable)",
        append=True,
    ),
)


def _chaos_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen", type=listen_address, required=True, metavar="HOST:PORT",
        help="UDP address to listen on for clients ([v6]:PORT for IPv6)",
    )  # fmt: skip
    parser.add_argument(
        "--forward", type=forward_address, required=True, metavar="HOST:PORT",
        help="UDP address of the server to relay to",
    )  # fmt: skip
    parser.add_argument(
        "--seed",
        type=_argtype(_int, "seed"),
        default=0,
        metavar="N",
        help="random seed (default 0)",
    )
    parser.add_argument(
        "--max-clients", type=_argtype(_positive_int, "count"), default=1024, metavar="N",
        help="clients tracked at once; the least recently active is evicted (default 1024)",
    )  # fmt: skip
    parser.add_argument(
        "--stats-interval", type=_argtype(_seconds, "seconds"), default=0.0, metavar="S",
        help="print stats every S seconds (default: only when stopping)",
    )  # fmt: skip
    parser.add_argument(
        "--duration", type=_argtype(_seconds, "seconds"), default=None, metavar="S",
        help="stop after S seconds (default: run until Ctrl-C)",
    )  # fmt: skip

    both = parser.add_argument_group("impairments (both directions)")
    c2s = parser.add_argument_group("client-to-server overrides")
    s2c = parser.add_argument_group("server-to-client overrides")
    for opt in _IMPAIRMENT_OPTIONS:
        kind = _argtype(opt.convert, opt.metavar.lower())
        action = "append" if opt.append else "store"
        both.add_argument(
            f"--{opt.flag}", dest=f"both_{opt.field}", type=kind, action=action,
            default=None, metavar=opt.metavar, help=opt.help,
        )  # fmt: skip
        for group, prefix in ((c2s, "c2s"), (s2c, "s2c")):
            group.add_argument(
                f"--{prefix}-{opt.flag}", dest=f"{prefix}_{opt.field}", type=kind, action=action,
                default=None, metavar=opt.metavar, help=f"--{opt.flag} for {prefix} only",
            )  # fmt: skip


def _impairment(args: argparse.Namespace, direction: str) -> Impairment:
    kwargs: dict[str, Any] = {}
    for opt in _IMPAIRMENT_OPTIONS:
        value = getattr(args, f"{direction}_{opt.field}")
        if value is None:
            value = getattr(args, f"both_{opt.field}")
        if value is not None:
            kwargs[opt.field] = value
    return Impairment(**kwargs)


def _print(text: str) -> None:
    print(f"{PROG} chaos: {text}", file=sys.stderr, flush=True)


def _format(addr: tuple[str, int]) -> str:
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _chaos_async(relay: ChaosRelay, args: argparse.Namespace) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.run)
        _print(f"relaying {_format(relay.address)} -> {_format(args.forward)} (seed {args.seed})")
        if args.stats_interval > 0:

            async def report() -> None:
                while True:
                    await trio.sleep(args.stats_interval)
                    _print(relay.stats.summary())

            nursery.start_soon(report)
        if args.duration is not None:
            await trio.sleep(args.duration)
            nursery.cancel_scope.cancel()


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


@command(
    "chaos",
    "UDP relay that impairs traffic (loss, delay, reordering, ...)",
    _chaos_args,
    usage=f"{PROG} chaos --listen HOST:PORT --forward HOST:PORT [options]",
)
def _chaos(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    try:
        relay = ChaosRelay(
            args.listen,
            args.forward,
            c2s=_impairment(args, "c2s"),
            s2c=_impairment(args, "s2c"),
            seed=args.seed,
            max_clients=args.max_clients,
        )
    except ValueError as exc:
        parser.error(str(exc))
    failure: BaseException | None = None
    interrupted = False
    try:
        trio.run(_chaos_async, relay, args)
    except* KeyboardInterrupt:
        interrupted = True
    except* OSError as group:
        failure = _first_leaf(group)
    if failure is not None:
        message = failure.strerror if isinstance(failure, OSError) else None
        _print(f"error: {message or failure}")
        return 1
    if interrupted:
        _print("interrupted")
    _print(f"final stats: {relay.stats.summary()}")
    return 0


# -- applications (utcp.apps) -----------------------------------------------

APPS: tuple[App, ...] = (
    echo.SERVER,
    echo.CLIENT,
    chat.SERVER,
    chat.CLIENT,
    filexfer.RECEIVER,
    filexfer.SENDER,
    http.SERVER,
    http.CLIENT,
)
"""The applications registered as subcommands, in ``--help`` order."""

for _app in APPS:
    command(_app.name, _app.help, _app.configure, usage=_app.usage)(_app.run)


# -- entry point -------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per registered command."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Real TCP (RFC 9293) over UDP datagrams, in pure Python on Trio."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, usage=cmd.usage)
        cmd.configure(p)
        p.set_defaults(_run=cmd.run, _parser=p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    run: Runner = args._run
    sub: argparse.ArgumentParser = args._parser
    return run(args, sub)


if __name__ == "__main__":
    sys.exit(main())
