"""``isolate stats``: docker stats' table of named containers, from their
cgroups (isolate.named.stats): NAME, CPU %, MEM USAGE / LIMIT, MEM %,
BLOCK I/O, PIDS.

CPU % is the CPU time used between two readings a second apart, so even
``--no-stream`` takes a second.  Without it the table is refreshed every
second until Ctrl-C: redrawn in place on a terminal, printed again below
on a pipe (one table per refresh, for a reader to split).  A container
without a cgroup shows "--", and a note on stderr says how to get one.
Memory is in binary units as docker stats shows it ("1.5MiB / 64MiB"),
block I/O in decimal ones ("4.1kB / 0B").
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Callable

from isolate.cli.images import human_size
from isolate.cli.output import print_table
from isolate.cli.output import note, printable
from isolate.errors import ConfigError
from isolate.named.state import RUNNING, ContainerNotFound, StateDir

if TYPE_CHECKING:
    from isolate.named.stats import Sample

#: Seconds between two readings.
INTERVAL = 1.0
#: Clear the screen and go home: how a terminal shows the next table in place.
_REDRAW = "\x1b[H\x1b[2J"
_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_NONE = "--"


def cmd_stats(args: argparse.Namespace) -> int:
    """``isolate stats [--no-stream] [-a] [NAME...]``."""
    from isolate.named import stats
    from isolate.named.freezer import NO_CGROUP
    states = StateDir(args.root)
    if args.names and args.all:
        raise ConfigError("--all", "lists every container; give either NAMEs or --all")
    names = args.names or [record.name for record in states.list()
                           if args.all or record.status() == RUNNING]
    before = {name: stats.sample(states, name) for name in names}
    terminal = sys.stdout.isatty()
    first = True
    while True:
        time.sleep(INTERVAL)
        rows = [("NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "BLOCK I/O", "PIDS")]
        lacking = []
        for name, previous in list(before.items()):
            try:
                current = stats.sample(states, name)
            except ContainerNotFound:
                del before[name]   # removed meanwhile: gone from the table, as in docker's
                continue
            rows.append(_row(current, stats.cpu_percent(previous, current)))
            if current.stats is None:
                lacking.append(name)
            before[name] = current
        if terminal:
            sys.stdout.write(_REDRAW)
        print_table(rows)
        sys.stdout.flush()
        # On a terminal the next redraw clears the screen: say it each time.
        if terminal or first:
            for name in lacking:
                note(f"{name}: no figures: {NO_CGROUP}")
        if args.no_stream:
            return 0
        first = False


def _row(sample: Sample, cpu: float | None) -> tuple[str, ...]:
    """A table row of a sample; "--" where there is no figure."""
    name = printable(sample.name)
    found = sample.stats
    if found is None:
        return (name, _NONE, _NONE, _NONE, _NONE, _NONE)
    memory = _NONE if sample.memory_usage is None else (
        f"{binary_size(sample.memory_usage)} / {binary_size(sample.memory_limit)}")
    percent = sample.memory_percent
    block = (_NONE if found.io_read_bytes is None else
             f"{human_size(found.io_read_bytes)} / {human_size(found.io_write_bytes or 0)}")
    return (name, _NONE if cpu is None else f"{cpu:.2f}%", memory,
            _NONE if percent is None else f"{percent:.2f}%", block,
            _NONE if found.pids_current is None else str(found.pids_current))


def binary_size(size: float) -> str:
    """`size` bytes in binary units with four significant digits, as docker
    stats writes memory ("1.672MiB", "64MiB", "0B")."""
    unit = 0
    while size >= 1024 and unit < len(_BINARY_UNITS) - 1:
        size /= 1024
        unit += 1
    return f"{size:.4g}{_BINARY_UNITS[unit]}"


#: The subcommands this module runs (main.handler() dispatches here).
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"stats": cmd_stats}
