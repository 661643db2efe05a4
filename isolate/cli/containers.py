"""``isolate ps``, ``isolate kill`` and ``isolate rm``: named containers, as
recorded in the state directory (``--root``).

Loaded only for these three subcommands.  isolate.named.containers, which
loads the config and the spawn path, is imported inside kill and rm only:
``isolate ps`` reads the records without it (tests/test_startup.py).
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

from isolate.cli.output import printable
from isolate.named.state import StateDir


def cmd_ps(args: argparse.Namespace) -> int:
    """``isolate ps``: one line per named container."""
    print(f"{'NAME':<20} {'PID':>8} {'STATUS':<8} {'CREATED':<19} COMMAND")
    for record in StateDir(args.root).list():
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        print(f"{printable(record.name):<20} {record.pid:>8} {record.status():<8} {created:<19} "
              f"{printable(' '.join(record.argv))}")
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    """``isolate kill NAME``."""
    from isolate.named import containers as named
    named.kill_named(StateDir(args.root), args.name, args.signal)
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    """``isolate rm NAME``."""
    from isolate.named import containers as named
    named.remove_named(StateDir(args.root), args.name, force=args.force)
    return 0


#: The subcommands this module runs (main.handler() dispatches here).
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "ps": cmd_ps, "kill": cmd_kill, "rm": cmd_rm}
