"""The remover of a detached container started with ``--rm``.

Nothing else is there when a detached container stops (its init records
how it ended, isolate.named.exits, but cannot reach the state directory,
its cgroup or the image store).  So ``run -d --rm`` (containers.start_detached
with auto_remove) starts this small program, which waits for the container's
PID 1 to exit and then removes its record, log, exit file, cgroup and layer
leases: the one process isolate keeps per container, and only for those
that asked for it.  It loads only the state records while it waits (a
Python interpreter, about 10 MB); the removal imports the rest.

    python -c ... ROOT NAME PID START_TIME PIDFD

PIDFD is a pidfd of the PID 1 whose record says PID and START_TIME,
inherited from the starter, which opened it while it knew the process to
be the container's: a later process given the same pid is never waited
for.  The record must still be that process's, and still ask for removal,
when it is removed (containers.remove_if_stopped): a restart in between
keeps it.  A failure is not reported (there is nobody to tell): the
container then stays until ``isolate rm``.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from isolate.named.exits import wait_for_exit


def main(argv: Sequence[str]) -> None:
    """Detach, wait for the container to stop, remove it."""
    root, name, pid, start_time, pidfd = argv
    # The starter waits for this first process; the second, which waits for
    # the container, is then nobody's child but the reaper's.
    if os.fork():
        os._exit(0)
    wait_for_exit(int(pidfd), None)
    os.close(int(pidfd))
    from isolate.named.containers import remove_if_stopped
    from isolate.named.state import StateDir
    remove_if_stopped(StateDir(root), name, int(pid), int(start_time))
