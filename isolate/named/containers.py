"""Named containers that outlive the process that started them.

The CLI's `run --name/-d`, `exec`, `ps`, `kill`, `stop`, `start`,
`restart` and `rm` (and, later, an OCI runtime) are built on these
functions.  What is kept about a container is its state record
(isolate.named.state): the pid and start time of its PID 1, and the
settings an exec or a restart needs.  Every function checks the record
against the kernel before acting on it, so a stale record (the container
ended, its pid was reused) is reported, never acted upon.  How a
container's exit is learned and recorded is isolate.named.exits's part.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from isolate._spawn import syscalls
from isolate._spawn.compile import uses_init
from isolate.cgroups import interface
from isolate.named import exits, layer_leases
from isolate._spawn.stdio import DEVNULL
from isolate.config import Config
from isolate.container import CompletedProcess, Container, exec_in
from isolate.named.cgroup import cgroup_directories, thaw
from isolate.named.state import (RUNNING, ContainerNotFound, ContainerState, StateDir, StateError,
                                 exec_fields, start_fields)

#: How long stop() waits after SIGTERM before it sends SIGKILL (docker's default).
STOP_TIMEOUT = 10.0
#: How long kill and stop wait for PID 1 to be gone after SIGKILL, to record
#: the exit: the kernel ends it at once unless a process of the container is
#: stuck in an uninterruptible sleep.
KILL_GRACE = 10.0


def new_name() -> str:
    """A fresh name for a container started without one."""
    return "c-" + uuid.uuid4().hex[:12]


def start_detached(states: StateDir, name: str, args: Sequence[str], config: Config, *,
                   auto_remove: bool = False) -> ContainerState:
    """Start a container that keeps running after this process exits.

    Its stdin is /dev/null and its output goes to `<state dir>/<name>.log`;
    with an init, how it ends goes to `<name>.exit` (isolate.named.exits).
    With `auto_remove` (run --rm), a small process of its own removes the
    container (record, log, cgroup, layer leases) once it stops.
    """
    record = _start(states, name, args, config, auto_remove=auto_remove)
    if auto_remove:
        _start_remover(states, record)
    return record


def _start(states: StateDir, name: str, args: Sequence[str], config: Config, *,
           auto_remove: bool, created: float | None = None) -> ContainerState:
    """Start `args` detached under `name` and save its record; `created`:
    the first start's time, for a restart."""
    _check_free(states, name)
    # A new exit file each start (StateDir.new_exit_file says why); only an
    # init writes one.
    exit_fd, exit_file = states.new_exit_file(name) if uses_init(config) else (None, None)
    try:
        # Its image's layers stay until `rm`, whatever `rmi` does meanwhile.
        with layer_leases.leasing(states.path(name), config.rootfs) as leases:
            with states.open_log(name) as log:
                # It must survive us: no parent-death signal.
                detached = attrs.evolve(config, die_with_parent=False)
                container = Container(args, config=detached, stdin=DEVNULL, stdout=log, stderr=log,
                                      exit_fd=exit_fd)
                # Before it starts, so that it cannot have finished before it started.
                now = time.time()
                process = container.start()
            try:
                times = {"created": now} if created is None else {"created": created, "started": now}
                record = ContainerState.for_process(name, process.pid, container.args,
                                                    container.config, detached=True,
                                                    auto_remove=auto_remove, **times)
                if container.cgroup is not None:
                    # It outlives us, limits and all, until `rm` removes it.
                    record.config["cgroups"] = container.cgroup.directories()
                record.config[layer_leases.RECORD_KEY] = leases
                states.save(record, exit_file=exit_file)
            except BaseException:
                # Not recorded (another container took the name meanwhile):
                # nothing could reach it again, so it must not run on.
                container.close()
                raise
    except BaseException:
        if exit_file is not None:
            states.discard(exit_file)
        raise
    finally:
        if exit_fd is not None:
            os.close(exit_fd)
    return record


def exec_named(states: StateDir, name: str, args: Sequence[str],
               extra_env: dict[str, str] | None = None, **kwargs: Any) -> CompletedProcess:
    """Run `args` in the running container `name` (see Container.exec), with
    `extra_env` on top of the container's environment.

    The process gets exactly the container's policy (capabilities,
    no_new_privs, rlimits, seccomp) and joins its cgroup; `kwargs` (Config
    keywords such as seccomp=None) weaken it only where the caller says so.
    """
    with _pinned(states, name) as (record, pidfd):
        fields = exec_fields(record.config)
        fields["env"] = {**fields["env"], **(extra_env or {})}
        return exec_in(record.pid, Config(**fields), args, pidfd=pidfd,
                       cgroups=cgroup_directories(record), **kwargs)


def kill_named(states: StateDir, name: str, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to the PID 1 of the running container `name`; a paused
    container is thawed after it (_signal says why).

    After SIGKILL, which leaves its init no time to record the exit, waits
    (at most KILL_GRACE seconds) for PID 1 to be gone and records -9 itself.
    """
    with _pinned(states, name) as (record, pidfd):
        try:
            _signal(record, pidfd, sig)
        except ProcessLookupError:   # it exited since _pinned looked
            raise StateError(f"container {name!r} is not running") from None
        gone = sig == signal.SIGKILL and exits.wait_for_exit(pidfd, KILL_GRACE)
    if gone:
        exits.settle(states, record, sent=signal.SIGKILL)


def stop_named(states: StateDir, name: str, timeout: float = STOP_TIMEOUT) -> ContainerState:
    """Stop the container `name`: SIGTERM to its PID 1 (the init passes it
    on to the workload), SIGKILL if it still runs `timeout` seconds later;
    a paused container is thawed after each (_signal says why).  Returns
    its record, exit recorded.  A container already stopped is left as it
    is."""
    record = states.load(name)
    try:
        pidfd = syscalls.pidfd_open(record.pid)
    except ProcessLookupError:
        return exits.settle(states, record)
    try:
        if record.status() != RUNNING:   # checked after the open: see _pinned
            return exits.settle(states, record)
        _signal(record, pidfd, signal.SIGTERM)
        if exits.wait_for_exit(pidfd, timeout):
            return exits.settle(states, record)
        _signal(record, pidfd, signal.SIGKILL)
        if not exits.wait_for_exit(pidfd, KILL_GRACE):
            raise StateError(f"container {name!r} (pid {record.pid}) is still there {KILL_GRACE:g} s "
                             f"after SIGKILL")
    except ProcessLookupError:   # it exited before a signal reached it
        return exits.settle(states, record)
    finally:
        os.close(pidfd)
    return exits.settle(states, record, sent=signal.SIGKILL)


def _signal(record: ContainerState, pidfd: int, sig: int) -> None:
    """Send `sig` to the container's PID 1 through `pidfd`, then thaw the
    container if it is paused, as docker kills and stops a paused one (for
    any signal: isolate has no STOPSIGNAL, the case in which docker thaws
    after every signal).  The signal goes first, so that no process of the
    container runs again before it is pending."""
    syscalls.pidfd_send_signal(pidfd, sig)
    thaw(record)


def start_named(states: StateDir, name: str, auto_remove: bool | None = None) -> ContainerState:
    """Start the stopped container `name` again, detached: the same argv and
    settings (isolate.named.state.start_fields()), a new process, the same name and
    creation time; its log goes on.  `auto_remove` None keeps the record's.
    StateError if it is running."""
    record = states.load(name)
    if record.status() == RUNNING:
        raise StateError(f"container {name!r} is already running (pid {record.pid})")
    config = Config(**start_fields(record.config))
    # The last run's cgroup (kept for rm), checked before anything starts.
    old_cgroup = cgroup_directories(record)
    remove = record.auto_remove if auto_remove is None else auto_remove
    started = _start(states, name, record.argv, config, auto_remove=remove, created=record.created)
    # The new run has a cgroup and layer leases of its own.
    _remove_cgroup(old_cgroup)
    layer_leases.release(record.config)
    if remove:
        _start_remover(states, started)
    return started


def restart_named(states: StateDir, name: str, timeout: float = STOP_TIMEOUT) -> ContainerState:
    """stop_named() then start_named(): a container started with --rm is
    started again, not removed, and keeps --rm."""
    record = states.load(name)
    if record.auto_remove:
        # Its remover must not take it away between the stop and the start.
        states.update(name, lambda current: attrs.evolve(current, auto_remove=False)
                      if current.same_process(record) else current)
    stop_named(states, name, timeout)
    return start_named(states, name, auto_remove=record.auto_remove)


@contextlib.contextmanager
def _pinned(states: StateDir, name: str) -> Iterator[tuple[ContainerState, int]]:
    """The record of the running container `name` and a pidfd of its PID 1,
    opened before the record is checked against the kernel: the pidfd then
    names the recorded process, never a later one with the same pid."""
    record = running(states, name)
    try:
        pidfd = syscalls.pidfd_open(record.pid)
    except ProcessLookupError:
        raise StateError(f"container {name!r} is not running") from None
    try:
        if record.status() != RUNNING:
            raise StateError(f"container {name!r} is not running")
        yield record, pidfd
    finally:
        os.close(pidfd)


def remove_named(states: StateDir, name: str, force: bool = False) -> None:
    """Forget the container `name` (killing it first if `force`)."""
    record = states.load(name)
    if force and record.status() == RUNNING:
        kill_named(states, name)
    directories = cgroup_directories(record)
    states.remove(name, force=force)
    _remove_cgroup(directories)
    layer_leases.release(record.config)


def remove_if_stopped(states: StateDir, name: str, pid: int, start_time: int) -> bool:
    """Remove the container `name` if its record is still that of the
    process (`pid`, `start_time`), still asks for removal (run --rm) and
    the process has stopped; whether it did.  The remover's last act."""
    with states.lock():
        try:
            record = states.load(name)
        except ContainerNotFound:
            return False
        if ((record.pid, record.start_time) != (pid, start_time) or not record.auto_remove
                or record.status() == RUNNING):
            return False
        remove_named(states, name)
    return True


#: What the remover runs: isolate.named.remover, found where this isolate is.
_REMOVER = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from isolate.named.remover import main; main(sys.argv[2:])")
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: How long the remover's first process may take to start its second and exit.
_REMOVER_START = 30.0


def _start_remover(states: StateDir, record: ContainerState) -> None:
    """Start the remover of a --rm container (isolate.named.remover): a
    process of its own that waits on a pidfd of PID 1, so it needs no
    signal and never acts on a reused pid.  The pidfd is opened here, while
    PID 1 is still our unreaped child (so its pid names no other process),
    and handed down; the remover's first process starts the one that waits,
    in a new session, and exits at once, so nothing of it stays our child."""
    pidfd = syscalls.pidfd_open(record.pid)
    try:
        subprocess.run([sys.executable, "-c", _REMOVER, _PACKAGE_PARENT, states.root, record.name,
                        str(record.pid), str(record.start_time), str(pidfd)],
                       pass_fds=(pidfd,), start_new_session=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                       timeout=_REMOVER_START)
    except (OSError, subprocess.SubprocessError) as exc:
        raise StateError(f"container {record.name!r} runs, but its remover (--rm) did not start: "
                         f"{exc}; `isolate rm` it once it stops") from None
    finally:
        os.close(pidfd)


def running(states: StateDir, name: str) -> ContainerState:
    """The record of `name`, which must be running."""
    record = states.load(name)
    if record.status() != RUNNING:
        raise StateError(f"container {name!r} is not running")
    return record


def _check_free(states: StateDir, name: str) -> None:
    if name in states and states.load(name).status() == RUNNING:
        raise StateError(f"a container named {name!r} is already running")


def _remove_cgroup(directories: list[str]) -> None:
    """Kill what is left in a detached container's cgroup and remove it.

    Through the backend's remove(), whose kill() never signals a reused pid:
    cgroup.kill on v2, else each pid pinned by a pidfd (cgroup_files.kill_listed).
    """
    if directories:
        interface.from_directories(directories).remove()
