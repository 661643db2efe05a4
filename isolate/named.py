"""Named containers that outlive the process that started them.

The CLI's `run --name/-d`, `exec`, `ps`, `kill` and `rm` (and, later, an OCI
runtime) are built on these functions.  What is kept about a container is
its state record (isolate.state): the pid and start time of its PID 1, and
the settings an exec needs.  Every function checks the record against the
kernel before acting on it, so a stale record (the container ended, its pid
was reused) is reported, never acted upon.
"""
from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Sequence
from typing import Any

import attrs

from . import _sys, cgroups, layer_leases
from ._stdio import DEVNULL
from .config import Config
from .container import CompletedProcess, Container, exec_in
from .errors import IsolateError
from .state import RUNNING, ContainerState, StateDir, StateError


def new_name() -> str:
    """A fresh name for a container started without one."""
    return "c-" + uuid.uuid4().hex[:12]


def start_detached(states: StateDir, name: str, args: Sequence[str], config: Config) -> ContainerState:
    """Start a container that keeps running after this process exits.

    Its stdin is /dev/null and its output goes to `<state dir>/<name>.log`.
    """
    _check_free(states, name)
    log_path = log_file(states, name)
    # Its image's layers stay until `rm`, whatever `rmi` does meanwhile.
    with layer_leases.leasing(states.path(name), config.rootfs) as leases:
        with open(log_path, "ab") as log:
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


def log_file(states: StateDir, name: str) -> str:
    """Where a detached container's stdout and stderr go."""
    return states.path(name)[: -len(".json")] + ".log"


def exec_named(states: StateDir, name: str, args: Sequence[str],
               extra_env: dict[str, str] | None = None, **kwargs: Any) -> CompletedProcess:
    """Run `args` in the running container `name` (see Container.exec), with
    `extra_env` on top of the container's environment."""
    record = running(states, name)
    fields = _config_fields(record.config)
    fields["env"] = {**fields["env"], **(extra_env or {})}
    return exec_in(record.pid, Config(**fields), args, **kwargs)


def kill_named(states: StateDir, name: str, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to the PID 1 of the running container `name`."""
    record = running(states, name)
    pidfd = _sys.pidfd_open(record.pid)
    try:
        # The pidfd pins the process; check it is still the recorded one.
        if record.status() != RUNNING:
            raise StateError(f"container {name!r} is not running")
        _sys.pidfd_send_signal(pidfd, sig)
    finally:
        os.close(pidfd)


def remove_named(states: StateDir, name: str, force: bool = False) -> None:
    """Forget the container `name` (killing it first if `force`)."""
    record = states.load(name)
    if force and record.status() == RUNNING:
        kill_named(states, name)
    states.remove(name, force=force)
    cgroups.remove_directories(record.config.get("cgroups", []))
    layer_leases.release(record.config)
    try:
        os.unlink(log_file(states, name))
    except FileNotFoundError:
        pass


def running(states: StateDir, name: str) -> ContainerState:
    """The record of `name`, which must be running."""
    record = states.load(name)
    if record.status() != RUNNING:
        raise StateError(f"container {name!r} is not running")
    return record


def _check_free(states: StateDir, name: str) -> None:
    if name in states and states.load(name).status() == RUNNING:
        raise StateError(f"a container named {name!r} is already running")


_EXEC_FIELDS = ("env", "cwd", "user", "group", "namespaces", "capabilities")


def _config_fields(saved: dict[str, Any]) -> dict[str, Any]:
    """The Config keywords of a saved record that exec needs."""
    missing = [field for field in _EXEC_FIELDS if field not in saved]
    if missing:
        raise IsolateError(f"container record lacks {', '.join(missing)}")
    return {field: saved[field] for field in _EXEC_FIELDS}
