"""``isolate ps``, ``isolate kill`` and ``isolate rm``: named containers, as
recorded in the state directory (``--root``).

Loaded only for these three subcommands.  isolate.named.containers, which
loads the config and the spawn path, is imported inside kill and rm only:
``isolate ps`` reads the records (and, with -a, the exit files of stopped
containers, isolate.named.exits; for a running container with a cgroup,
its freezer's state, isolate.named.cgroup) without it
(tests/test_startup.py, tests/cli/test_cli_paused.py).
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

from isolate.cli.output import printable
from isolate.named.state import RUNNING, ContainerState, StateDir

#: Wide enough for "Exited (255) Less than a second ago".
_STATUS_WIDTH = 35


def cmd_ps(args: argparse.Namespace) -> int:
    """``isolate ps [-a]``: one line per running named container; with -a,
    the stopped ones too."""
    states = StateDir(args.root)
    now = time.time()
    print(f"{'NAME':<20} {'PID':>8} {'STATUS':<{_STATUS_WIDTH}} {'CREATED':<19} COMMAND")
    for record in states.list():
        running = record.status() == RUNNING
        if not running and not args.all:
            continue
        if not running:
            from isolate.named import exits
            record = exits.settle(states, record)
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        status = status_text(record, running, running and _paused(record), now)
        print(f"{printable(record.name):<20} {record.pid:>8} {status:<{_STATUS_WIDTH}} "
              f"{created:<19} {printable(' '.join(record.argv))}")
    return 0


def _paused(record: ContainerState) -> bool:
    """Whether the running container of `record` is paused.  Only one with a
    cgroup can be: the cgroup code is loaded for those alone."""
    if not record.config.get("cgroups"):
        return False
    from isolate.named.cgroup import is_paused
    return is_paused(record)


def status_text(record: ContainerState, running: bool, paused: bool, now: float) -> str:
    """docker's STATUS: "Up 3 minutes", "Up 3 minutes (Paused)", "Exited (3)
    2 minutes ago", or "Exited (137)" / "Exited" when the time or the code
    is not known (isolate.named.exits says when)."""
    if running:
        return f"Up {duration(now - record.up_since)}{' (Paused)' if paused else ''}"
    text = "Exited" if record.exit_status is None else f"Exited ({record.exit_status})"
    if record.finished is not None:
        text += f" {duration(now - record.finished)} ago"
    return text


def duration(seconds: float) -> str:
    """A length of time as docker words it: "Less than a second", "5 seconds",
    "About a minute", "3 hours", "2 weeks"..."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return "Less than a second"
    if seconds < 60:
        return _count(int(seconds), "second")
    minutes = round(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return _count(minutes, "minute")
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return _count(hours, "hour")
    if hours < 24 * 7 * 2:
        return _count(hours // 24, "day")
    if hours < 24 * 30 * 2:
        return _count(hours // (24 * 7), "week")
    if hours < 24 * 365 * 2:
        return _count(hours // (24 * 30), "month")
    return _count(hours // (24 * 365), "year")


def _count(number: int, unit: str) -> str:
    return f"{number} {unit}{'' if number == 1 else 's'}"


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
