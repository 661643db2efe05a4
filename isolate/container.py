"""Container and run(): the objects most users hold.

    with isolate.Container(["sleep", "60"]) as c:
        c.process.terminate()
        c.wait(timeout=5)

    r = isolate.run(["hostname"], capture_output=True, hostname="box")
"""
from __future__ import annotations

import functools
import os
import select
import subprocess
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from isolate.layers import in_use
from isolate._spawn.compile import prepare, uses_init
from isolate._spawn.executor import spawn
from isolate._spawn.stdio import PIPE, open_stdio
from isolate.cgroups.stats import Stats
from isolate.config import Config, make_config, with_config_keywords
from isolate.overlay import Overlay
from isolate.errors import (CalledProcessError, CgroupError, ConfigError, IsolateError, NamespaceError,
                     SpawnTimeout, TimeoutExpired)
from isolate.cgroups.limits import CgroupLimit
from isolate.namespace import Namespace
from isolate.process import Process

if TYPE_CHECKING:
    from typing_extensions import Unpack   # typing.Unpack from Python 3.11

    from isolate.config import Options


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

    `exit_fd`, a descriptor (>= 3) of a file open for writing, is where the
    container's init writes how the workload ended ("exit N" or "signal N",
    one line at offset 0) for a reader who outlives the caller, such as
    `isolate ps` of a detached container; it needs the init.  Only the init
    keeps it: the workload never sees it.
    """

    @with_config_keywords
    def __init__(self, args: Sequence[str | bytes | os.PathLike], *, config: Config | None = None,
                 stdin: Any = None, stdout: Any = None, stderr: Any = None,
                 exit_fd: int | None = None, **kwargs: Unpack[Options]) -> None:
        self.argv = _argv(args)
        self.args = list(args)
        self.config = make_config(config, kwargs)
        self._exit_fd = _exit_fd(exit_fd, self.config)
        self._stdio_choice = (stdin, stdout, stderr)
        self.process: Process | None = None
        self._execs: list[Process] = []
        self.cgroup = None                  # CgroupV1/CgroupV2 with limits=
        self._joined_cgroups: tuple[str, ...] = ()   # an exec's: its container's cgroup dirs
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
    def pty(self):
        """The master of the workload's terminal (an isolate.terminal.Pty), with tty=True."""
        return self._running().pty

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def start(self, timeout: float | None = None) -> Process:
        """Create the container and exec the command; returns its Process.

        Raises SpawnTimeout (after killing it) if the command has not been
        exec'd within `timeout` seconds."""
        if self.process is not None:
            raise RuntimeError("this container was already started")
        if self.config.tty and any(choice is not None for choice in self._stdio_choice):
            raise ConfigError("tty", "a terminal is the workload's stdin, stdout and stderr: "
                                     "leave them unset and use Container.pty")
        stdio = open_stdio(*self._stdio_choice)
        ours, theirs = _tty_channel(self.config.tty)
        try:
            plan = prepare(self.config, self.argv, stdio.child,   # raises before anything exists
                           theirs.fileno() if theirs is not None else -1, self._exit_fd)
            if isinstance(self.config.rootfs, Overlay):
                self._layer_locks = in_use.hold(self.config.rootfs.lower)
            self.cgroup = self._make_cgroup()
            spawned = self._spawn(plan, timeout)
        except BaseException:
            stdio.close_all()
            _close_sockets(ours, theirs)
            self._remove_cgroup()
            in_use.release(self._layer_locks)
            raise
        stdio.close_child_ends()
        self.process = Process(self.args, spawned, stdio.parent, uses_init(self.config))
        if ours is not None:
            self._receive_pty(ours, theirs)
        return self.process

    def _receive_pty(self, ours, theirs) -> None:
        """Take the terminal the workload sent before it exec'd; without
        one, the container is ended and cleaned up before raising."""
        from isolate import terminal

        theirs.close()
        try:
            self.process.pty = terminal.receive(ours)
        except BaseException:
            self.close()
            raise
        finally:
            ours.close()

    def _make_cgroup(self):
        if self.config.limits is None:
            return None
        from isolate.cgroups import interface   # here: the cgroup backends load only for limits=
        return interface.create(self.config.limits, self.config.cgroup_parent)

    def _spawn(self, plan, timeout: float | None):
        if self.cgroup is not None:
            paths = self.cgroup.procs_paths()
        else:
            paths = [os.path.join(d, "cgroup.procs") for d in self._joined_cgroups]
        fds: list[int] = []
        try:
            for path in paths:
                fds.append(_open_procs(path))
            return spawn(*plan, fds, timeout)
        finally:
            for fd in fds:
                os.close(fd)

    def _remove_cgroup(self) -> None:
        if self.cgroup is not None:
            self._final = (self.cgroup.oom_killed(),
                           attrs.evolve(self.cgroup.stats(), limits=self.config.limits))
            self.cgroup.remove()
            self.cgroup = None

    # --- the cgroup (limits=) -------------------------------------------------

    def stats(self) -> Stats:
        """A snapshot of the container's cgroup: memory, CPU, pids, I/O, and
        the limits they count against (the last one once it has ended)."""
        if self._final is not None:
            return self._final[1]
        return attrs.evolve(self._cgroup().stats(), limits=self.config.limits)

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
        limits.check_host()
        self._cgroup().apply(limits)

    def freeze(self) -> None:
        """Stop every process of the container until thaw()."""
        self._cgroup().freeze()

    def thaw(self) -> None:
        self._cgroup().thaw()

    def _cgroup(self):
        if self.cgroup is None:
            raise CgroupError(0, "this container has no cgroup: start it with limits= "
                                 "(isolate.CgroupLimit() with no limit set gives a cgroup "
                                 "that only measures)")
        return self.cgroup

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the workload to end and return its returncode."""
        return self._running().wait(timeout)

    def communicate(self, input: bytes | None = None, timeout: float | None = None
                    ) -> tuple[bytes | None, bytes | None]:
        """Like Popen.communicate()."""
        return self._running().communicate(input, timeout)

    @functools.partial(with_config_keywords, open_ended=True)
    def exec(self, args: Sequence[str | bytes | os.PathLike], *, wait: bool = True,
             **kwargs: Any) -> CompletedProcess | Process:
        """Run another command inside this running container (keywords:
        run()'s and Config's fields, as help() lists them).

        It joins every namespace of the container, created or joined, and
        its cgroup, with the container's env, cwd, user, group and policy
        (capabilities, no_new_privs, rlimits, seccomp) unless `kwargs` says
        otherwise.
        With wait=True, `kwargs` are those of run() and the result is a
        CompletedProcess; with wait=False it is the started Process, which
        the caller waits for."""
        process = self._running()
        if process.poll() is not None:
            raise IsolateError(f"cannot exec into {self!r}: it has exited")
        cgroup_dirs = self.cgroup.directories() if self.cgroup is not None else ()
        started = exec_in(process.pid, self.config, args, pidfd=process.pidfd,
                          cgroups=cgroup_dirs, wait=wait, **kwargs)
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
        in_use.release(self._layer_locks)
        self.process.close()

    def _running(self) -> Process:
        if self.process is None:
            raise RuntimeError("the container has not been started")
        return self.process


_RUN_ONLY = ("input", "capture_output", "timeout", "check", "text")


def _cgroup_frozen(dirs: list[str]) -> bool:
    """interface.frozen(), imported here: the cgroup backends load only when used."""
    from isolate.cgroups.interface import frozen
    return frozen(dirs)


@functools.partial(with_config_keywords, open_ended=True)
def exec_in(pid: int, base: Config, args: Sequence[str | bytes | os.PathLike], *,
            pidfd: int | None = None, cgroups: Sequence[str] = (), wait: bool = True,
            **kwargs: Any) -> CompletedProcess | Process:
    """Run `args` in the namespaces that `base` created for the container
    whose PID 1 is `pid` (see Container.exec, which is this for a Container).

    The process is placed in the cgroup directories `cgroups` before it
    runs.  `pidfd`, a pidfd of `pid` opened before the caller checked that
    `pid` is the container's, makes sure a recycled pid is never joined."""
    stdio = {k: kwargs.pop(k) for k in ("stdin", "stdout", "stderr") if k in kwargs}
    run_only = {k: kwargs.pop(k) for k in _RUN_ONLY if k in kwargs}
    if not wait and run_only:
        raise ConfigError("exec", f"{', '.join(run_only)} only apply with wait=True")
    kinds = base.created | {ns.kind for ns in base.join}
    if cgroups and _cgroup_frozen(list(cgroups)):
        # Its process would freeze before it could exec (docker exec refuses
        # a paused container too).
        raise IsolateError(f"cannot exec into container {pid}: it is frozen; thaw() it first")
    own_pidfd = pidfd is None
    if own_pidfd:
        pidfd = _pidfd_of(pid)
    try:
        joined = _open_namespaces(pid, kinds)
        try:
            _check_alive(pidfd, pid)   # after the opens: they were of this very process
            config = _exec_config(base, joined, kwargs)
            if wait:
                capture = run_only.pop("capture_output", False)
                stdio = _run_stdio(run_only.get("input"), capture, **stdio)
            container = Container(args, config=config, **stdio)
            container._joined_cgroups = tuple(cgroups)
            if wait:
                return _run(container, **run_only)
            return container.start()
        finally:
            for ns in joined:
                ns.close()
    finally:
        if own_pidfd:
            os.close(pidfd)


def _pidfd_of(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except OSError as exc:
        raise IsolateError(f"cannot exec into container {pid}: {exc.strerror}") from None


def _check_alive(pidfd: int, pid: int) -> None:
    """A pidfd polls readable once its process has exited."""
    if select.select([pidfd], [], [], 0)[0]:
        raise IsolateError(f"cannot exec into container {pid}: it has exited")


def _exit_fd(fd: int | None, config: Config) -> int:
    """Container's `exit_fd` checked: -1 for none."""
    if fd is None:
        return -1
    if isinstance(fd, bool) or not isinstance(fd, int) or fd < 3:
        raise ConfigError("exit_fd", f"expected a descriptor >= 3, got {fd!r}")
    if not uses_init(config):
        raise ConfigError("exit_fd", "only the container's init writes it: needs init=True "
                                     "and a 'pid' namespace")
    return fd


def _tty_channel(tty: bool):
    """(ours, the child's) sockets for the pty's master, or (None, None)."""
    if not tty:
        return None, None
    from isolate import terminal
    return terminal.channel()


def _close_sockets(*sockets) -> None:
    for sock in sockets:
        if sock is not None:
            sock.close()


def _open_procs(path: str) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CgroupError(exc.errno, f"open {path}: {exc.strerror}") from None


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


#: What an exec'd process takes from its container unless told otherwise:
#: its place (env, cwd, ids) and all of its policy.
_INHERITED = ("env", "cwd", "user", "group", "capabilities", "no_new_privs", "rlimits", "seccomp",
              "new_session", "die_with_parent")


def _exec_config(base: Config, joined: list[Namespace], overrides: dict) -> Config:
    """The container's process settings and policy, joining its namespaces,
    creating none; `overrides` are the caller's explicit changes."""
    inherited = {name: getattr(base, name) for name in _INHERITED}
    return make_config(None, {**inherited, **overrides, "namespaces": (), "join": tuple(joined)})


@with_config_keywords
def run(args: Sequence[str | bytes | os.PathLike], *, input: bytes | str | None = None,
        capture_output: bool = False, timeout: float | None = None, check: bool = False,
        text: bool = False, stdin: Any = None, stdout: Any = None, stderr: Any = None,
        config: Config | None = None, **kwargs: Unpack[Options]) -> CompletedProcess:
    """Run a command in a new container and wait for it, like subprocess.run().

    The other keywords are Config's fields (help(isolate.Config) lists them;
    docs/api.md says more), or give a whole `config`.  Raises ConfigError
    naming the field for a bad value, before anything is created."""
    stdio = _run_stdio(input, capture_output, stdin, stdout, stderr)
    container = Container(args, config=config, **stdio, **kwargs)
    return _run(container, input, timeout, check, text)


def _run_stdio(input: bytes | str | None, capture_output: bool, stdin: Any = None,
               stdout: Any = None, stderr: Any = None) -> dict[str, Any]:
    """The stdio choices of run(), given its input and capture_output."""
    if capture_output:
        if stdout is not None or stderr is not None:
            raise ValueError("capture_output cannot be combined with stdout or stderr")
        stdout = stderr = PIPE
    if input is not None:
        if stdin is not None:
            raise ValueError("input and stdin cannot both be given")
        stdin = PIPE
    return {"stdin": stdin, "stdout": stdout, "stderr": stderr}


def _run(container: Container, input: bytes | str | None = None, timeout: float | None = None,
         check: bool = False, text: bool = False) -> CompletedProcess:
    """Start `container`, feed it `input`, wait at most `timeout` seconds in
    all (starting included), and collect its result."""
    if isinstance(input, str):
        input = input.encode()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        container.start(timeout)
    except SpawnTimeout:
        raise TimeoutExpired(container.args, timeout) from None
    with container:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            out, err = container.communicate(input, left)
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
