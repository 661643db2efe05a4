"""The output of a detached container: ``<state dir>/<name>.log``.

The container's stdout and stderr are that file itself (opened for
appending by start_detached), so nothing stands between the workload and
its log: no process copies it, and none can stamp its lines with the time
they were written.  A log therefore has no timestamps, and ``isolate logs
--timestamps`` says so rather than invent them (the time a line is read is
not the time it was written).

Reading follows the file as it grows, bounded by the container's life: a
pidfd of its PID 1 says when it has stopped, after which what is left is
copied and the follow ends.
"""
from __future__ import annotations

import os
from typing import BinaryIO

from isolate.named.exits import wait_for_exit
from isolate.named.state import RUNNING, ContainerState, StateDir, StateError

__all__ = ["copy"]

#: How much is read at once, backwards for --tail and forwards to copy.
_BLOCK = 1 << 16
#: How often a follow looks at the file for more (the pidfd wakes it at the end).
FOLLOW_INTERVAL = 0.1


def copy(states: StateDir, name: str, out: BinaryIO, *, tail: int | None = None,
         follow: bool = False) -> None:
    """Write the log of the container `name` to `out`, as it is (bytes).

    `tail`: only its last `tail` lines (a last line without a newline
    counts).  `follow`: go on copying what the container writes until it
    stops.  StateError if it has no log (run in the foreground, its output
    went to a terminal); ContainerNotFound if there is no such container.
    """
    record = states.load(name)
    try:
        log = states.read_log(name)
    except FileNotFoundError:
        raise StateError(f"container {name!r} has no log: it ran in the foreground, and its "
                         f"output went where its starter's did") from None
    with log:
        if tail is not None:
            log.seek(_tail_start(log, tail))
        if not follow:
            _drain(log, out)
            return
        pidfd = _pidfd_if_running(record)
        try:
            while pidfd is not None:
                _drain(log, out)
                if wait_for_exit(pidfd, FOLLOW_INTERVAL):
                    break
            _drain(log, out)   # what it wrote last, before it stopped
        finally:
            if pidfd is not None:
                os.close(pidfd)


def _pidfd_if_running(record: ContainerState) -> int | None:
    """A pidfd of the container's PID 1, or None if it is not running: the
    status is checked after the open, so the pidfd is of that very process."""
    try:
        pidfd = os.pidfd_open(record.pid)
    except ProcessLookupError:
        return None
    if record.status() != RUNNING:
        os.close(pidfd)
        return None
    return pidfd


def _drain(log: BinaryIO, out: BinaryIO) -> None:
    """Copy what `log` holds from its position on, and flush it."""
    while True:
        data = log.read(_BLOCK)
        if not data:
            break
        out.write(data)
    out.flush()


def _tail_start(log: BinaryIO, lines: int) -> int:
    """The offset in `log` where its last `lines` lines begin."""
    end = log.seek(0, os.SEEK_END)
    if lines <= 0:
        return end
    position = end
    if end:
        log.seek(end - 1)
        if log.read(1) == b"\n":
            position = end - 1   # the last line's own end starts no line
    while position > 0:
        start = max(0, position - _BLOCK)
        log.seek(start)
        block = log.read(position - start)
        at = len(block)
        while (at := block.rfind(b"\n", 0, at)) >= 0:
            lines -= 1
            if lines == 0:
                return start + at + 1
        position = start
    return 0
