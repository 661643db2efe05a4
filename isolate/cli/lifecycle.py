"""``isolate wait``, ``stop``, ``start``, ``restart`` and ``logs``: the life of
named containers after ``run``, as docker's verbs of the same names.

Loaded only for these subcommands.  wait and logs read records, exit files
and logs (isolate.named.exits, isolate.named.logs) without the spawn path;
stop, start and restart import isolate.named.containers, which loads it.
Each verb takes its names in turn: one that fails prints an error, the rest
go on, and the exit status is then 125.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from isolate.cli.output import error
from isolate.errors import ConfigError, IsolateError
from isolate.named.state import ContainerState, StateDir

#: main.EXIT_RUNTIME_ERROR (isolate itself failed), which main, importing
#: this module, cannot be asked for without an import circle.
EXIT_FAILED = 125


def each_name(names: list[str], act: Callable[[str], str | None]) -> int:
    """Run `act` on every name; print what it returns; 125 if any failed."""
    failed = False
    for name in names:
        try:
            shown = act(name)
        except IsolateError as exc:
            error(exc)
            failed = True
            continue
        if shown is not None:
            print(shown, flush=True)
    return EXIT_FAILED if failed else 0


def cmd_wait(args: argparse.Namespace) -> int:
    """``isolate wait NAME...``: block until each stops; print its exit status."""
    from isolate.named import exits
    states = StateDir(args.root)

    def wait(name: str) -> str:
        record = exits.wait(states, name)
        if record.exit_status is None:
            raise IsolateError(_unknown_exit(record))
        return str(record.exit_status)
    return each_name(args.names, wait)


def _unknown_exit(record: ContainerState) -> str:
    """Why the exit of a stopped container is not known."""
    if not record.detached:
        return (f"container {record.name!r} stopped, but its starter did not record how it "
                f"ended (was it killed?)")
    return (f"container {record.name!r} stopped, but how it ended is unknown: it has no init to "
            f"record it (--no-init) and was not killed through isolate")


def cmd_stop(args: argparse.Namespace) -> int:
    """``isolate stop [-t SECS] NAME...``: SIGTERM, SIGKILL after SECS; print each name."""
    from isolate.named import containers as named
    states = StateDir(args.root)

    def stop(name: str) -> str:
        named.stop_named(states, name, args.time)
        return name
    return each_name(args.names, stop)


def cmd_start(args: argparse.Namespace) -> int:
    """``isolate start NAME...``: start stopped containers again; print each name."""
    from isolate.named import containers as named
    states = StateDir(args.root)

    def start(name: str) -> str:
        named.start_named(states, name)
        return name
    return each_name(args.names, start)


def cmd_restart(args: argparse.Namespace) -> int:
    """``isolate restart [-t SECS] NAME...``: stop (if running), then start; print each name."""
    from isolate.named import containers as named
    states = StateDir(args.root)

    def restart(name: str) -> str:
        named.restart_named(states, name, args.time)
        return name
    return each_name(args.names, restart)


def cmd_logs(args: argparse.Namespace) -> int:
    """``isolate logs [-f] [--tail N] NAME``: the container's output, as it wrote it."""
    from isolate.named import logs
    if args.timestamps:
        # isolate.named.logs says why there are none.
        raise ConfigError("--timestamps", "a container's log holds its output as it wrote it, "
                                          "with no time per line (no process stands between the "
                                          "container and its log to note one)")
    try:
        logs.copy(StateDir(args.root), args.name, sys.stdout.buffer, tail=args.tail,
                  follow=args.follow)
    except BrokenPipeError:
        # The reader went away (`isolate logs web | head`): nothing more to do,
        # and nothing left for Python to flush at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


#: The subcommands this module runs (main.handler() dispatches here).
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "wait": cmd_wait, "stop": cmd_stop, "start": cmd_start, "restart": cmd_restart,
    "logs": cmd_logs}
