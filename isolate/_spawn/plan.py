"""The plan: a flat list of steps the C child executes after clone.

Python decides everything here, before the clone; the child only walks the
list.  Each step carries a human description so that a failure in the child
(reported as step index + errno) becomes a message such as
"mount('proc', '/proc', 'proc'): EPERM".
"""
from __future__ import annotations

import os
from typing import Any

import attrs

from isolate._native import ffi, lib


@attrs.frozen
class Step:
    """One operation of struct iso_step (see _native/plan.h for each op)."""

    op: int
    what: str
    a: str | None = None
    b: str | None = None
    c: str | None = None
    d: str | None = None
    num: int = 0
    num2: int = 0
    num3: int = 0


@attrs.define
class Plan:
    """Everything iso_spawn needs, still in Python form."""

    clone_flags: int
    die_with_parent: bool
    joiner: bool = False
    joiner_forks: bool = False
    cgroup_in_workload: int = 0    # see struct iso_plan
    steps: list[Step] = attrs.field(factory=list)
    setgroups: str | None = None
    uid_map: str | None = None
    gid_map: str | None = None
    init_fd: int = -1
    exit_fd: int = -1              # see struct iso_plan
    exec_paths: list[str] = attrs.field(factory=list)
    argv: list[bytes] = attrs.field(factory=list)
    envp: list[bytes] = attrs.field(factory=list)
    keep_fds: list[int] = attrs.field(factory=list)   # ascending, for ISO_OP_CLOSE_FDS
    seccomp_filter: bytes = b""    # struct sock_filter[], for ISO_OP_SECCOMP

    def add(self, op: int, what: str, **args: Any) -> None:
        self.steps.append(Step(op, what, **args))

    def describe(self, index: int) -> str:
        """The description of step `index` (or of a parent-side stage)."""
        if 0 <= index < len(self.steps):
            return self.steps[index].what
        return _STAGES.get(index, f"step {index}")


_STAGES = {
    lib.ISO_STEP_CLONE: "clone",
    lib.ISO_STEP_SETGROUPS: "write /proc/PID/setgroups",
    lib.ISO_STEP_UID_MAP: "write /proc/PID/uid_map",
    lib.ISO_STEP_GID_MAP: "write /proc/PID/gid_map",
    lib.ISO_STEP_SYNC: "wait for the parent",
    lib.ISO_STEP_PIPE: "allocate the child's pipes and stacks",
    lib.ISO_STEP_CGROUP: "write the child's pid to its cgroup.procs",
    lib.ISO_STEP_STOPPED: "start: a signal from inside the container stopped the process "
                          "being started, so it was killed",
    lib.ISO_STEP_TIMEOUT: "start: the process had not started when the timeout expired",
}


class NativePlan:
    """A Plan laid out as C structs; keeps every buffer alive while used."""

    def __init__(self, plan: Plan) -> None:
        self._keep: list[Any] = []
        steps = ffi.new("struct iso_step[]", len(plan.steps))
        for index, step in enumerate(plan.steps):
            _fill(steps[index], step, self._cstr)
        self.struct = ffi.new("struct iso_plan *")
        self.struct.clone_flags = plan.clone_flags
        self.struct.die_with_parent = int(plan.die_with_parent)
        self.struct.joiner = int(plan.joiner)
        self.struct.joiner_forks = int(plan.joiner_forks)
        self.struct.cgroup_in_workload = plan.cgroup_in_workload
        self.struct.steps = steps
        self.struct.nsteps = len(plan.steps)
        self.struct.setgroups = self._cstr(plan.setgroups)
        self.struct.uid_map = self._cstr(plan.uid_map)
        self.struct.gid_map = self._cstr(plan.gid_map)
        self.struct.init_fd = plan.init_fd
        self.struct.exit_fd = plan.exit_fd
        self.struct.exec_paths = self._cstr_array(plan.exec_paths)
        self.struct.argv = self._cstr_array(plan.argv)
        self.struct.envp = self._cstr_array(plan.envp)
        self.struct.keep_fds = self._new("int[]", plan.keep_fds)
        self.struct.nkeep_fds = len(plan.keep_fds)
        if plan.seccomp_filter:
            self._filter = ffi.from_buffer(plan.seccomp_filter)
            self.struct.seccomp_filter = self._filter
            self.struct.seccomp_len = len(plan.seccomp_filter) // 8   # sizeof(struct sock_filter)
        self._keep.append(steps)

    def _new(self, ctype: str, init: Any):
        buf = ffi.new(ctype, init)
        self._keep.append(buf)
        return buf

    def _cstr(self, text: str | bytes | None):
        if text is None:
            return ffi.NULL
        buf = ffi.new("char[]", os.fsencode(text))
        self._keep.append(buf)
        return buf

    def _cstr_array(self, items: list[str] | list[bytes]):
        array = ffi.new("char *[]", len(items) + 1)
        for index, item in enumerate(items):
            array[index] = self._cstr(item)
        self._keep.append(array)
        return array


def _fill(cstep: Any, step: Step, cstr: Any) -> None:
    cstep.op = step.op
    cstep.a = cstr(step.a)
    cstep.b = cstr(step.b)
    cstep.c = cstr(step.c)
    cstep.d = cstr(step.d)
    cstep.num = step.num
    cstep.num2 = step.num2
    cstep.num3 = step.num3
