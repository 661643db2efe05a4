"""Container and run(): the objects most users hold.

    with isolate.Container(["sleep", "60"]) as c:
        c.process.terminate()
        c.wait(timeout=5)

    r = isolate.run(["hostname"], capture_output=True, hostname="box")
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from typing import Any

from . import cgroups, layer_use
from ._compile import prepare, uses_init
from ._spawn import spawn
from ._stdio import PIPE, open_stdio
from .cgroup_stats import Stats
from .config import Config, make_config
from .overlay import Overlay
from .errors import (CalledProcessError, CgroupError, ConfigError, IsolateError, NamespaceError,
                     TimeoutExpired)
from .limits import CgroupLimit
from .namespace import Namespace
from .process import Process


class CompletedProcess(subprocess.CompletedProcess):
    """What run() returns: args, returncode, stdout, stderr; with `limits`,
    also `oom_killed` and the cgroup's final `stats` (else False and None)."""

    oom_killed: bool = False
    stats: Stats | None = None


def _argv(args: Sequence[str | bytes | os.PathLike]) -> list[bytes]:
    if isinstance(args, (str, bytes)):
        raise ConfigError("args", f"expected a sequence of arguments, got the string {args!r}")
    try:
        argv = [os.fsencode(arg) for arg in args]
    except TypeError as exc:
        raise ConfigError("args", f"arguments must be str, bytes or paths: {exc}") from None
    if not argv or not argv[0]:
        raise ConfigError("args", "the command is empty")
    if any(b"\0" in arg for arg in argv):
        raise ConfigError("args", "an argument contains a NUL byte")
    return argv


class Container:
    """A command running in its own namespaces, root filesystem and PID 1.

    Keywords are those of isolate.Config (or pass `config=`), plus the
    stdin/stdout/stderr choices of subprocess.  The container starts on
    start() or on entering a `with` block; leaving the block kills whatever
    still runs in it and releases every resource.
    """

    def __init__(self, args: Sequence[str | bytes | os.PathLike], *, config: Config | None = None,
                 stdin: Any = None, stdout: Any = None, stderr: Any = None, **kwargs: Any) -> None:
        self.argv = _argv(args)
        self.args = list(args)
        self.config = make_config(config, kwargs)
        self._stdio_choice = (stdin, stdout, stderr)
        self.process: Process | None = None
        self._execs: list[Process] = []
        self.cgroup = None                  # CgroupV1/CgroupV2 with limits=
        self._layer_locks: list[int] = []   # shared flocks on an Overlay's lower layers
        self._final: tuple[bool, Stats] | None = None   # (oom_killed, stats) once removed

    def __enter__(self) -> Container:
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "not started" if self.process is None else repr(self.process)
        return f"<isolate.Container {self.args!r} {state}>"

    @property
    def pid(self) -> int:
        """The host pid of the container's PID 1."""
        return self._running().pid

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def start(self) -> Process:
        """Create the container and exec the command; returns its Process."""
        if self.process is not None:
            raise RuntimeError("this container was already started")
        stdio = open_stdio(*self._stdio_choice)
        try:
            plan = prepare(self.config, self.argv, stdio.child)   # raises before anything exists
            if isinstance(self.config.rootfs, Overlay):
                self._layer_locks = layer_use.hold(self.config.rootfs.lower)
            self.cgroup = self._make_cgroup()
            spawned = self._spawn(plan)
        except BaseException:
            stdio.close_all()
            self._remove_cgroup()
            layer_use.release(self._layer_locks)
            raise
        stdio.close_child_ends()
        self.process = Process(self.args, spawned, stdio.parent, uses_init(self.config))
        return self.process

    def _make_cgroup(self):
        if self.config.limits is None:
            return None
        return cgroups.create(self.config.limits, self.config.cgroup_parent)

    def _spawn(self, plan):
        if self.cgroup is None:
            return spawn(*plan)
        fds = [os.open(path, os.O_WRONLY | os.O_CLOEXEC) for path in self.cgroup.procs_paths()]
        try:
            return spawn(*plan, fds)
        finally:
            for fd in fds:
                os.close(fd)

    def _remove_cgroup(self) -> None:
        if self.cgroup is not None:
            self._final = (self.cgroup.oom_killed(), self.cgroup.stats())
            self.cgroup.remove()
            self.cgroup = None

    # --- the cgroup (limits=) -------------------------------------------------

    def stats(self) -> Stats:
        """A snapshot of the container's cgroup: memory, CPU, pids, I/O."""
        if self._final is not None:
            return self._final[1]
        return self._cgroup().stats()

    @property
    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed a process of the container."""
        if self._final is not None:
            return self._final[0]
        return self.cgroup is not None and self.cgroup.oom_killed()

    def update(self, limits: CgroupLimit) -> None:
        """Change the limits of the running container (fields left None stay)."""
        if not isinstance(limits, CgroupLimit):
            raise ConfigError("limits", f"expected an isolate.CgroupLimit, got {limits!r}")
        self._cgroup().apply(limits)

    def freeze(self) -> None:
        """Stop every process of the container until thaw()."""
        self._cgroup().freeze()

    def thaw(self) -> None:
        self._cgroup().thaw()

    def _cgroup(self):
        if self.cgroup is None:
            raise CgroupError(0, "this container has no cgroup: start it with limits=")
        return self.cgroup

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the workload to end and return its returncode."""
        return self._running().wait(timeout)

    def communicate(self, input: bytes | None = None, timeout: float | None = None
                    ) -> tuple[bytes | None, bytes | None]:
        """Like Popen.communicate()."""
        return self._running().communicate(input, timeout)

    def exec(self, args: Sequence[str | bytes | os.PathLike], *, wait: bool = True,
             **kwargs: Any) -> CompletedProcess | Process:
        """Run another command inside this running container.

        It joins every namespace of the container, created or joined, with the container's env,
        cwd, user, group and capabilities unless `kwargs` says otherwise.
        With wait=True, `kwargs` are those of run() and the result is a
        CompletedProcess; with wait=False it is the started Process, which
        the caller waits for."""
        process = self._running()
        if process.poll() is not None:
            raise IsolateError(f"cannot exec into {self!r}: it has exited")
        started = exec_in(process.pid, self.config, args, wait=wait, **kwargs)
        if not wait:
            self._execs.append(started)
            process.while_waiting = self._reap_execs
        return started

    def _reap_execs(self) -> None:
        """Reap exec'd processes that ended: they are our children, and the
        container's PID 1 cannot finish exiting while they are zombies."""
        self._execs = [p for p in self._execs if p.poll() is None]

    def kill(self) -> None:
        """SIGKILL the container: every process in its PID namespace, and
        with limits= every process in its cgroup."""
        process = self._running()
        if self.cgroup is not None:
            self.cgroup.kill()
        process.kill()

    def close(self) -> None:
        """Kill the container if it still runs, reap it, close its fds."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for process in self._execs:
            process.kill()
            process.wait()
        self._execs.clear()
        self._remove_cgroup()
        layer_use.release(self._layer_locks)
        self.process.close()

    def _running(self) -> Process:
        if self.process is None:
            raise RuntimeError("the container has not been started")
        return self.process


_RUN_ONLY = ("input", "capture_output", "timeout", "check", "text")


def exec_in(pid: int, base: Config, args: Sequence[str | bytes | os.PathLike], *,
            wait: bool = True, **kwargs: Any) -> CompletedProcess | Process:
    """Run `args` in the namespaces that `base` created for the container
    whose PID 1 is `pid` (see Container.exec, which is this for a Container)."""
    stdio = {k: kwargs.pop(k) for k in ("stdin", "stdout", "stderr") if k in kwargs}
    kinds = base.created | {ns.kind for ns in base.join}
    joined = _open_namespaces(pid, kinds)
    try:
        config = _exec_config(base, joined, kwargs, wait)
        if wait:
            return run(args, config=config, **stdio, **kwargs)
        return Container(args, config=config, **stdio).start()
    finally:
        for ns in joined:
            ns.close()


def _open_namespaces(pid: int, kinds: frozenset[str]) -> list[Namespace]:
    joined: list[Namespace] = []
    try:
        for kind in sorted(kinds):
            if kind == "time":
                # PID 1 enters its time namespace when it execs the init,
                # which may not have happened yet: its children's is the one.
                joined.append(Namespace.from_path(f"/proc/{pid}/ns/time_for_children"))
            else:
                joined.append(Namespace.of(pid, kind))
    except NamespaceError as exc:
        for ns in joined:
            ns.close()
        raise IsolateError(f"cannot exec into container {pid}: {exc}") from None
    return joined


def _exec_config(base: Config, joined: list[Namespace], kwargs: dict, wait: bool) -> Config:
    """The container's process settings, joining its namespaces, creating none."""
    inherited = {"env": base.env, "cwd": base.cwd, "user": base.user, "group": base.group,
                 "capabilities": base.capabilities, "new_session": base.new_session,
                 "die_with_parent": base.die_with_parent}
    own = {k: kwargs.pop(k) for k in list(kwargs) if k not in _RUN_ONLY}
    if not wait and any(k in kwargs for k in _RUN_ONLY):
        raise ConfigError("exec", f"{', '.join(k for k in _RUN_ONLY if k in kwargs)} "
                                  f"only apply with wait=True")
    return make_config(None, {**inherited, **own, "namespaces": (), "join": tuple(joined)})


def run(args: Sequence[str | bytes | os.PathLike], *, input: bytes | str | None = None,
        capture_output: bool = False, timeout: float | None = None, check: bool = False,
        text: bool = False, stdin: Any = None, stdout: Any = None, stderr: Any = None,
        config: Config | None = None, **kwargs: Any) -> CompletedProcess:
    """Run a command in a new container and wait for it, like subprocess.run()."""
    if capture_output:
        if stdout is not None or stderr is not None:
            raise ValueError("capture_output cannot be combined with stdout or stderr")
        stdout = stderr = PIPE
    if input is not None:
        if stdin is not None:
            raise ValueError("input and stdin cannot both be given")
        stdin = PIPE
        if isinstance(input, str):
            input = input.encode()
    container = Container(args, config=config, stdin=stdin, stdout=stdout, stderr=stderr, **kwargs)
    with container:
        try:
            out, err = container.communicate(input, timeout)
        except TimeoutExpired as exc:
            container.kill()
            container.wait()
            raise TimeoutExpired(container.args, timeout, exc.output, exc.stderr) from None
    result = CompletedProcess(container.args, container.returncode,
                              _decode(out, text), _decode(err, text))
    if container.config.limits is not None:
        result.oom_killed = container.oom_killed
        result.stats = container.stats() if container._final else None
    if check and result.returncode:
        raise CalledProcessError(result.returncode, container.args, result.stdout, result.stderr)
    return result


def _decode(data: bytes | None, text: bool) -> bytes | str | None:
    if data is None or not text:
        return data
    return data.decode(errors="replace").replace("\r\n", "\n")
