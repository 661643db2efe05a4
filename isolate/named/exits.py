"""How a named container ended, learned after the process that started it is gone.

A detached container (``isolate run -d``) outlives its starter, so nobody
waits for its PID 1 the way Process.wait() does.  What each way of ending
records in its state record (`exit_code`: the returncode, -N for signal N;
`finished`: when):

* The workload exits, or dies of a signal its init forwarded (``isolate
  kill -s TERM``, ``isolate stop`` within its timeout): the init (pid1.c)
  writes one line, "exit N" or "signal N", to ``<state dir>/<name>.exit``,
  which the starter created and handed to it alone (Container(exit_fd=)).
  `finished` is the file's modification time.
* SIGKILL of PID 1 (``isolate kill``, ``stop`` past its timeout): the init
  dies before it can write.  The killer knows what it sent and records -9
  (exit status 137) with the time it saw PID 1 gone.
* SIGKILL of PID 1 by anyone else: the exit file stays empty, and an init
  always writes before it exits unless SIGKILL stops it, so -9 again, with
  `finished` unknown (None).
* A container run in the foreground (``run --name`` without -d): its
  starter records the returncode it waited for; wait() gives it a moment.
* No init (``--no-init``), not killed through isolate: unknown (None).

Why the init writes it rather than a watcher process per container (as
podman's conmon does): the init already waits for the workload and holds
its wait status, so the record costs one small file and no process; a
watcher would cost a process (about 10 MB as Python) for every container's
whole life.

The line is never trusted: root in the container may hold CAP_SYS_PTRACE in
its user namespace, ptrace the init and write anything there.  So it is
parsed strictly (parse()), and used for display only (ps, wait, inspect).
Whether a container runs is always the kernel's answer
(ContainerState.status()), and an exit is recorded only once the kernel
says the recorded process is gone.

Only the standard library and isolate.named.state are imported: ``isolate
ps`` and ``isolate wait`` use this module without the spawn path.
"""
from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import time

import attrs

from isolate.named.state import RUNNING, ContainerNotFound, ContainerState, StateDir

__all__ = ["parse", "settle", "wait", "wait_for_exit"]

#: The one line pid1 writes; nothing else is accepted.
_LINE = re.compile(rb"(exit|signal) (0|[1-9][0-9]{0,2})\n")
#: Linux's signal numbers (SIGRTMAX is 64).
_SIGNALS = range(1, 65)
#: How much of an exit file is read: a valid line is shorter.
_READ = 64

#: How long wait() gives the starter of a foreground container to record
#: its exit, once PID 1 is gone (it does so as soon as it has reaped it).
STARTER_GRACE = 5.0
_STARTER_POLL = 0.02


def parse(line: bytes) -> int | None:
    """The returncode an exit file's `line` says ("exit 3" -> 3, "signal 9"
    -> -9), or None for anything that is not exactly such a line."""
    match = _LINE.fullmatch(line)
    if match is None:
        return None
    number = int(match[2])
    if match[1] == b"exit":
        return number if number <= 255 else None
    return -number if number in _SIGNALS else None


def settle(states: StateDir, record: ContainerState, sent: int | None = None,
           exit_fd: int | None = None) -> ContainerState:
    """`record` with its exit code and finish time, once its process has
    stopped and they can be known (see the module's docstring), saved in
    its record; otherwise `record` as it is.

    `sent`: the signal the caller sent PID 1 and saw it die of (SIGKILL
    leaves no line).  `exit_fd`: the exit file, opened before the container
    was waited for (StateDir.open_exit_file()), read instead of the one now
    in the directory, which an `rm` may have taken away meanwhile.
    """
    if record.exit_code is not None or record.status() == RUNNING:
        return record
    code, finished = _learned(states, record, sent, exit_fd)
    if code is None:
        return record
    settled = attrs.evolve(record, exit_code=code, finished=finished)

    def keep(current: ContainerState) -> ContainerState:
        # Only the same process's record, and only once: a restart (a new
        # process) or an exit recorded meanwhile stays as it is.
        if current.same_process(record) and current.exit_code is None:
            return settled
        return current

    with contextlib.suppress(ContainerNotFound):   # removed meanwhile: nothing to save into
        current = states.update(record.name, keep)
        if current.same_process(record):
            return current
    return settled


def _learned(states: StateDir, record: ContainerState, sent: int | None,
             exit_fd: int | None) -> tuple[int | None, float | None]:
    """(returncode, finish time) of the stopped `record`, each None if unknown."""
    found = _read(exit_fd) if exit_fd is not None else _read_named(states, record.name)
    if found is not None:
        code = parse(found[0])
        if code is not None:
            return code, found[1]
    if sent == signal.SIGKILL:
        return -signal.SIGKILL, time.time()
    if found is not None and not found[0]:
        return -signal.SIGKILL, None
    return None, None


def _read_named(states: StateDir, name: str) -> tuple[bytes, float] | None:
    fd = states.open_exit_file(name)
    if fd is None:
        return None
    try:
        return _read(fd)
    finally:
        os.close(fd)


def _read(fd: int) -> tuple[bytes, float]:
    """The start of an exit file and its modification time."""
    return os.pread(fd, _READ, 0), os.fstat(fd).st_mtime


def wait(states: StateDir, name: str) -> ContainerState:
    """Block until the container `name` has stopped; return its record,
    settled (its exit_code None if it cannot be known).

    No time limit but the container's own: it polls a pidfd of PID 1, and
    only a foreground container's starter gets a short grace to record the
    exit it waited for.  ContainerNotFound if there is no such container.
    """
    record = states.load(name)
    exit_fd = states.open_exit_file(name)
    try:
        _wait_for_process(record)
        settled = settle(states, record, exit_fd=exit_fd)
    finally:
        if exit_fd is not None:
            os.close(exit_fd)
    if settled.exit_code is None and not record.detached:
        settled = _recorded_by_starter(states, settled)
    return settled


def _wait_for_process(record: ContainerState) -> None:
    """Return once the process `record` names has exited."""
    try:
        pidfd = os.pidfd_open(record.pid)
    except ProcessLookupError:
        return
    try:
        # Checked after the open: the pidfd is then of this very process,
        # never of a later one that got its pid.
        if record.status() == RUNNING:
            wait_for_exit(pidfd, None)
    finally:
        os.close(pidfd)


def wait_for_exit(pidfd: int, timeout: float | None) -> bool:
    """Whether the process of `pidfd` exits within `timeout` seconds (None:
    however long it takes); a pidfd polls readable once it has."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000))))


def _recorded_by_starter(states: StateDir, record: ContainerState) -> ContainerState:
    """The exit a foreground container's starter records right after it
    reaps PID 1, which may not have happened when the pidfd woke us."""
    deadline = time.monotonic() + STARTER_GRACE
    while time.monotonic() < deadline:
        try:
            current = states.load(record.name)
        except ContainerNotFound:   # removed (run --rm): its code went with it
            return record
        if not current.same_process(record) or current.exit_code is not None:
            return current if current.same_process(record) else record
        time.sleep(_STARTER_POLL)
    return record
