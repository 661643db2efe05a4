"""Named containers that outlive the process that started them.

The CLI's `run --name/-d`, `exec`, `ps`, `kill` and `rm` (and, later, an OCI
runtime) are built on these functions.  What is kept about a container is
its state record (isolate.named.state): the pid and start time of its PID 1, and
the settings an exec needs.  Every function checks the record against the
kernel before acting on it, so a stale record (the container ended, its pid
was reused) is reported, never acted upon.
"""
from __future__ import annotations

import contextlib
import os
import signal
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from isolate._spawn import syscalls
from isolate.cgroups import interface
from isolate.named import layer_leases
from isolate._spawn.stdio import DEVNULL
from isolate.config import Config
from isolate.container import CompletedProcess, Container, exec_in
from isolate.named.state import RUNNING, ContainerState, StateDir, StateError, exec_fields


def new_name() -> str:
    """A fresh name for a container started without one."""
    return "c-" + uuid.uuid4().hex[:12]


def start_detached(states: StateDir, name: str, args: Sequence[str], config: Config) -> ContainerState:
    """Start a container that keeps running after this process exits.

    Its stdin is /dev/null and its output goes to `<state dir>/<name>.log`.
    """
    _check_free(states, name)
    # Its image's layers stay until `rm`, whatever `rmi` does meanwhile.
    with layer_leases.leasing(states.path(name), config.rootfs) as leases:
        with states.open_log(name) as log:
            # It must survive us: no parent-death signal.
            detached = attrs.evolve(config, die_with_parent=False)
            container = Container(args, config=detached, stdin=DEVNULL, stdout=log, stderr=log)
            process = container.start()
        record = ContainerState.for_process(name, process.pid, container.args, container.config)
        if container.cgroup is not None:
            # It outlives us, limits and all, until `rm` removes it.
            record.config["cgroups"] = container.cgroup.directories()
        record.config[layer_leases.RECORD_KEY] = leases
        states.save(record)
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
                       cgroups=_cgroup_directories(record), **kwargs)


def kill_named(states: StateDir, name: str, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to the PID 1 of the running container `name`."""
    with _pinned(states, name) as (_record, pidfd):
        syscalls.pidfd_send_signal(pidfd, sig)


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
    directories = _cgroup_directories(record)
    states.remove(name, force=force)
    _remove_cgroup(directories)
    layer_leases.release(record.config)


def running(states: StateDir, name: str) -> ContainerState:
    """The record of `name`, which must be running."""
    record = states.load(name)
    if record.status() != RUNNING:
        raise StateError(f"container {name!r} is not running")
    return record


def _check_free(states: StateDir, name: str) -> None:
    if name in states and states.load(name).status() == RUNNING:
        raise StateError(f"a container named {name!r} is already running")


def _cgroup_directories(record: ContainerState) -> list[str]:
    """The cgroup directories of a record, checked to be isolate's own: each
    an `isolate-PID-N` directory below /sys/fs/cgroup, so a record can never
    make exec or rm act on another cgroup (the host's, a service's)."""
    directories = record.config.get("cgroups", [])
    for directory in directories:
        if not isinstance(directory, str) or not interface.is_own(directory):
            raise StateError(f"container {record.name!r}: its record names {directory!r} as its "
                             f"cgroup, which is not a cgroup isolate made")
    return list(directories)


def _remove_cgroup(directories: list[str]) -> None:
    """Kill what is left in a detached container's cgroup and remove it.

    Through the backend's remove(), whose kill() never signals a reused pid:
    cgroup.kill on v2, else each pid pinned by a pidfd (cgroup_files.kill_listed).
    """
    if directories:
        interface.from_directories(directories).remove()
