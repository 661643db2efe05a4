"""``isolate inspect`` and ``isolate top``: what a named container is and
what runs in it (isolate.named.inspect, isolate.named.processes).

Loaded only for these subcommands.  What they print comes from records and
from inside containers, so it reaches the terminal escaped: JSON with
every character that is not printable written as \\uXXXX, table cells
through printable().
"""
from __future__ import annotations

import argparse
from typing import Callable

# The image commands' docker-style JSON and table layout, shared by every listing.
from isolate.cli.images import print_inspected
from isolate.cli.output import print_table
from isolate.cli.output import printable
from isolate.errors import IsolateError
from isolate.named.state import StateDir


def cmd_inspect(args: argparse.Namespace) -> int:
    """``isolate inspect NAME...``: a JSON array of the containers found, as
    docker inspect prints it; then an error for each name that names none,
    the last raised (exit status 125)."""
    from isolate.named.inspect import inspect
    states = StateDir(args.root)
    return print_inspected(args.names, lambda name: inspect(states, name), IsolateError)


def cmd_top(args: argparse.Namespace) -> int:
    """``isolate top NAME``: the container's processes, one line each."""
    from isolate.named.processes import processes
    rows = [("PID", "HOST PID", "PPID", "USER", "TIME", "COMMAND")]
    for process in processes(StateDir(args.root), args.name):
        rows.append((str(process.pid), str(process.host_pid), str(process.ppid),
                     printable(process.user), cpu_time(process.cpu_seconds),
                     printable(process.command)))
    print_table(rows)
    return 0


def cpu_time(seconds: float) -> str:
    """CPU time as ps shows it: "00:01:05", days counted in the hours."""
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


#: The subcommands this module runs (main.handler() dispatches here).
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"inspect": cmd_inspect,
                                                            "top": cmd_top}
