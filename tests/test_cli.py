"""``python -m utcp`` application subcommands, run as real subprocesses.

The scenarios are those of tests/test_examples.py, run against
``python -m utcp SUBCOMMAND`` instead of ``examples/*.py``: both are thin
layers over :mod:`utcp.apps`.  The lossy file transfer here goes through a
``python -m utcp chaos`` subprocess rather than an in-process relay.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from utcp import __main__ as cli
from utcp.apps import chat

from .test_examples import (
    SCRIPTS,
    run_once,
    scenario_bad_arguments,
    scenario_chat,
    scenario_chat_vanished_client,
    scenario_client_errors,
    scenario_echo,
    scenario_file_transfer,
    scenario_file_transfer_failures,
    scenario_help,
    scenario_http,
)


def utcp_cli(name: str) -> list[str]:
    """The command line of subcommand ``name``."""
    return [sys.executable, "-m", "utcp", name]


async def test_top_level_help_lists_every_subcommand() -> None:
    result = await run_once([sys.executable, "-m", "utcp", "--help"])
    assert result.returncode == 0
    out = result.stdout.decode()
    for name in ["chaos", *SCRIPTS]:
        assert f"    {name}" in out, (name, out)


async def test_help() -> None:
    await scenario_help(utcp_cli, list(SCRIPTS))


async def test_bad_arguments() -> None:
    await scenario_bad_arguments(utcp_cli)


async def test_echo(tmp_path: Path) -> None:
    await scenario_echo(utcp_cli, tmp_path)


async def test_chat(tmp_path: Path) -> None:
    await scenario_chat(utcp_cli, tmp_path)


async def test_chat_drops_vanished_client(tmp_path: Path) -> None:
    await scenario_chat_vanished_client(utcp_cli, tmp_path)


async def test_file_transfer(tmp_path: Path) -> None:
    await scenario_file_transfer(utcp_cli, tmp_path)


async def test_file_transfer_through_chaos_subprocess(tmp_path: Path) -> None:
    await scenario_file_transfer(utcp_cli, tmp_path, relay="chaos")


async def test_file_transfer_failures(tmp_path: Path) -> None:
    await scenario_file_transfer_failures(utcp_cli, tmp_path)


async def test_http(tmp_path: Path) -> None:
    await scenario_http(utcp_cli, tmp_path)


async def test_client_errors() -> None:
    await scenario_client_errors(utcp_cli)


# -- in-process checks of the option plumbing ---------------------------------------


def test_subcommands_registered_once_each() -> None:
    assert set(cli.COMMANDS) >= {"chaos", *SCRIPTS}
    assert [app.name for app in cli.APPS] == list(SCRIPTS)


def test_endpoint_flags_become_options() -> None:
    args = cli.build_parser().parse_args(
        ["send", "[::1]:4000", "f.bin", "--msl", "200ms", "--mtu", "1280", "--nodelay",
         "--rcvbuf", "64k", "--sndbuf", "1M", "--congestion", "newreno", "--syn-retries", "2",
         "--keepalive", "--keepalive-time", "5", "--keepalive-intvl", "1s",
         "--keepalive-probes", "4", "--user-timeout", "9", "--vport", "4001"]
    )  # fmt: skip
    from utcp.apps import endpoint_options

    options = endpoint_options(args, args._parser)
    assert options == {
        "msl": pytest.approx(0.2),
        "mtu": 1280,
        "nodelay": True,
        "rcvbuf": 65536,
        "sndbuf": 1 << 20,
        "congestion": "newreno",
        "syn_retries": 2,
        "keepalive": True,
        "keepalive_time": 5.0,
        "keepalive_intvl": 1.0,
        "keepalive_probes": 4,
        "user_timeout": 9.0,
    }
    assert args.address == ("::1", 4000) and args.vport == 4001
    # Nothing given: the engine's defaults apply.
    bare = cli.build_parser().parse_args(["echo", "127.0.0.1:4000"])
    assert endpoint_options(bare, bare._parser) == {}


def test_chat_server_defaults_to_short_keepalive_and_matching_user_timeout() -> None:
    from utcp.apps import endpoint_options

    args = cli.build_parser().parse_args(["chat-server", ":0"])
    options = endpoint_options(args, args._parser)
    assert options == {
        "keepalive": True,
        "keepalive_time": 10.0,
        "keepalive_intvl": 2.0,
        "keepalive_probes": 3,
    }
    assert chat.user_timeout_for(options) == 16.0
    assert args.address == ("", 0)  # empty host: all IPv4 interfaces
    off = cli.build_parser().parse_args(["chat-server", ":0", "--no-keepalive"])
    assert chat.user_timeout_for(endpoint_options(off, off._parser)) == 0.0
