"""Call the C executor and turn its result into fds or an exception."""
from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Any

import attrs

from isolate._native import ffi, lib
from isolate._spawn.plan import NativePlan, Plan
from isolate.errors import ExecutableNotFound, SpawnError, SpawnTimeout, UserNamespaceError


@attrs.frozen
class Spawned:
    """A running container: its init's pid, a pidfd, the report pipe, and
    the stacks its setup ran on (freed by free_stacks once it is reaped)."""

    pid: int
    pidfd: int
    report_fd: int
    stacks: Any


def free_stacks(stacks: Any) -> None:
    """Release a spawn's stacks; only once its process has been reaped."""
    if stacks is not None and stacks != ffi.NULL:
        lib.iso_free_stacks(stacks)


def spawn(plan: Plan, native: NativePlan, cgroup_fds: Sequence[int] = (),
          timeout: float | None = None) -> Spawned:
    """Clone and run `plan` (laid out as `native`), placing the child in the
    cgroups whose open cgroup.procs files are `cgroup_fds` before it runs
    anything; returns once the workload has been exec'd.  Raises
    SpawnTimeout if that takes longer than `timeout` seconds."""
    result = ffi.new("struct iso_result *")
    fds = ffi.new("int[]", list(cgroup_fds)) if cgroup_fds else ffi.NULL
    timeout_ms = -1 if timeout is None else max(0, min(int(timeout * 1000), 2**31 - 1))
    if lib.iso_spawn(native.struct, fds, len(cgroup_fds), timeout_ms, result) < 0:
        if result.step == lib.ISO_STEP_TIMEOUT:
            raise SpawnTimeout(result.err, plan.describe(result.step))
        raise _error(plan, result.step, result.err)
    return Spawned(result.pid, result.pidfd, result.report_fd, result.stacks)


def _error(plan: Plan, step: int, err: int) -> SpawnError:
    what = plan.describe(step)
    if 0 <= step < len(plan.steps) and plan.steps[step].op == lib.ISO_OP_EXEC and err == errno.ENOENT:
        return ExecutableNotFound(os.fsdecode(plan.argv[0]), tuple(plan.exec_paths))
    hint = _userns_hint(plan, step, err)
    if hint:
        return UserNamespaceError(err, what, hint)
    return SpawnError(err, what, _overlay_hint(plan, step))


def _overlay_hint(plan: Plan, step: int) -> str:
    if not 0 <= step < len(plan.steps):
        return ""
    failed = plan.steps[step]
    if failed.op != lib.ISO_OP_OVERLAY and failed.c != "overlay":
        return ""
    return ("overlayfs refused the layers (dmesg | grep overlayfs says why): a layer on a "
            "filesystem it cannot stack (proc, sysfs, ...), or Linux < 5.11 in a user namespace")


def _userns_hint(plan: Plan, step: int, err: int) -> str:
    """Why the host refused a user namespace, and how to allow it, if it did."""
    if plan.uid_map is None or os.geteuid() == 0 or err not in (errno.EPERM, errno.EACCES, errno.ENOSPC, errno.EUSERS):
        return ""
    knobs = [
        ("/proc/sys/kernel/unprivileged_userns_clone", "0",
         "unprivileged user namespaces are disabled: sysctl -w kernel.unprivileged_userns_clone=1"),
        ("/proc/sys/user/max_user_namespaces", "0",
         "user.max_user_namespaces is 0: sysctl -w user.max_user_namespaces=15000"),
        ("/proc/sys/kernel/apparmor_restrict_unprivileged_userns", "1",
         "AppArmor restricts unprivileged user namespaces (Ubuntu 23.10+): "
         "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or give the "
         "Python interpreter an AppArmor profile with the 'userns,' rule"),
    ]
    for path, bad, hint in knobs:
        if _read(path) == bad:
            return hint
    if step == lib.ISO_STEP_CLONE and err in (errno.ENOSPC, errno.EUSERS):
        return "the limit of user namespaces was reached (user.max_user_namespaces)"
    return ""


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None
