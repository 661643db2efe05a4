"""``isolate pause`` and ``isolate unpause``: the cgroup freezer on named
containers (isolate.named.freezer).  Each name in turn, as the lifecycle
verbs take them: one that fails prints an error, the rest go on, and the
exit status is then 125; each one done is printed."""
from __future__ import annotations

import argparse
from typing import Callable

# How the lifecycle verbs (stop, start...) go through their names.
from isolate.cli.lifecycle import each_name
from isolate.named.state import StateDir


def cmd_pause(args: argparse.Namespace) -> int:
    """``isolate pause NAME...``: freeze every process of each container."""
    from isolate.named.freezer import pause_named
    states = StateDir(args.root)

    def pause(name: str) -> str:
        pause_named(states, name)
        return name
    return each_name(args.names, pause)


def cmd_unpause(args: argparse.Namespace) -> int:
    """``isolate unpause NAME...``: thaw each paused container."""
    from isolate.named.freezer import unpause_named
    states = StateDir(args.root)

    def unpause(name: str) -> str:
        unpause_named(states, name)
        return name
    return each_name(args.names, unpause)


#: The subcommands this module runs (main.handler() dispatches here).
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"pause": cmd_pause,
                                                            "unpause": cmd_unpause}
