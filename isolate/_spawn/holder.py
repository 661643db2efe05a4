"""A bare process that holds fresh namespaces just long enough to open them.

Namespace.create() needs a namespace nobody is in yet.  unshare(2) would put
the calling thread in it (and a user or mount namespace cannot be unshared
by one thread of a multi-threaded process), so a child is cloned into the
new namespaces instead, the caller opens them through /proc/PID/ns, and the
child is killed.  The child runs the executor with the smallest plan there
is: no Config, no mounts, `cat` reading a pipe that closes if we die.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import TypeVar

from isolate._native import lib
from isolate._spawn import executor, syscalls
from isolate._spawn.plan import NativePlan, Plan
from isolate.security import idmaps

T = TypeVar("T")


def holding(flags: int, use: Callable[[int], T]) -> T:
    """Clone a child into the new namespaces `flags` (CLONE_NEW* bits) asks
    for and return use(its pid) while it lives."""
    read_end, write_end = os.pipe()
    try:
        plan = _plan(flags, stdin=read_end)
        spawned = executor.spawn(plan, NativePlan(plan))
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    try:
        return use(spawned.pid)
    finally:
        os.close(write_end)
        _end(spawned)


def _plan(flags: int, stdin: int) -> Plan:
    plan = Plan(clone_flags=flags & ~syscalls.CLONE_NEWTIME, die_with_parent=True)
    if flags & syscalls.CLONE_NEWUSER:
        if os.geteuid() == 0:
            # As in a root caller's containers: never the host's root.
            uids, gids = idmaps.container_ids("uid"), idmaps.container_ids("gid")
        else:
            uids, gids = ((0, os.geteuid(), 1),), ((0, os.getegid(), 1),)
            plan.setgroups = "deny"   # user_namespaces(7): before an unprivileged gid_map
        plan.uid_map = "".join(f"{a} {b} {c}\n" for a, b, c in uids)
        plan.gid_map = "".join(f"{a} {b} {c}\n" for a, b, c in gids)
    if flags & syscalls.CLONE_NEWTIME:
        # clone(2) has no room for it: unshared, the exec below enters it.
        plan.add(lib.ISO_OP_UNSHARE, "unshare(CLONE_NEWTIME)", num=syscalls.CLONE_NEWTIME)
    if flags & syscalls.CLONE_NEWNET:
        plan.add(lib.ISO_OP_LOOPBACK_UP, "bring up the loopback interface 'lo'")
    plan.add(lib.ISO_OP_DUP2, f"dup2({stdin}, 0)", num=stdin, num2=0)
    plan.add(lib.ISO_OP_CLOSE_FDS, "close every descriptor but 0-2")
    plan.exec_paths = [shutil.which("cat") or "/bin/cat"]
    plan.argv = [b"cat"]
    plan.add(lib.ISO_OP_EXEC, "exec 'cat'")
    return plan


def _end(spawned: executor.Spawned) -> None:
    """Kill and reap the holder, then free what its spawn allocated."""
    try:
        syscalls.pidfd_send_signal(spawned.pidfd, 9)
    except ProcessLookupError:
        pass
    os.waitid(os.P_PIDFD, spawned.pidfd, os.WEXITED)
    executor.free_stacks(spawned.stacks)
    os.close(spawned.pidfd)
    if spawned.report_fd >= 0:
        os.close(spawned.report_fd)
