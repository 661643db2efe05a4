"""Persistent state of named containers: one JSON record per container.

The CLI (``isolate run --name web -d``, ``exec``, ``ps``, ``kill``, ``rm``)
and the OCI runtime outlive the process that started a container, so what
they need to find it again is kept on disk, in a runtime directory::

    states = StateDir()                      # /run/isolate for root
    states.save(ContainerState.for_process("web", c.pid, c.args, c.config))
    states.load("web").status()              # "running" or "stopped"

A record is never trusted on its own: a pid is only a number, and the kernel
hands it out again once the container is gone.  A record says "running" only
while /proc/PID exists, is not a zombie, and started at the recorded time
(field 22 of /proc/PID/stat) in the same boot.  Anything else is "stopped".

Writes are atomic (temp file in the same directory, fsync, rename), so a
reader sees the old record or the new one, never half of one.  Operations
that read, decide and write hold an exclusive flock on ``<root>/.lock``.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import attrs

from .config import Config
from .errors import ConfigError, IsolateError
from .overlay import Overlay

__all__ = [
    "RUNNING", "STOPPED", "ContainerExists", "ContainerNotFound", "ContainerState",
    "StateDir", "StateError", "boot_id", "check_name", "default_root", "exec_config",
    "pid_start_time",
]

RUNNING: Literal["running"] = "running"
STOPPED: Literal["stopped"] = "stopped"
Status = Literal["running", "stopped"]

#: Bumped when a record's layout changes incompatibly; load() refuses others.
FORMAT_VERSION = 1

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SUFFIX = ".json"
_LOCK = ".lock"


class StateError(IsolateError):
    """The state directory or a container's record cannot be used."""


class ContainerExists(StateError):
    """A running container already holds this name."""

    def __init__(self, name: str, pid: int) -> None:
        super().__init__(f"container name {name!r} is in use by a running container (pid {pid}); "
                         f"stop and remove it first")
        self.name = name


class ContainerNotFound(StateError, LookupError):
    """No container of this name has a record."""

    def __init__(self, name: str, root: str) -> None:
        super().__init__(f"no container named {name!r} (in {root})")
        self.name = name


# --- names and processes ---------------------------------------------------

def check_name(name: str) -> str:
    """Return `name` if it is a valid container name, else raise ConfigError.

    Names become file names, so the rule (as Docker's) keeps out '/', a
    leading '.' (hidden and temporary files live there) and anything odd.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError("name", f"expected 1 to 128 characters of [A-Za-z0-9_.-], "
                                  f"starting with a letter or digit, got {name!r}")
    return name


@functools.lru_cache(maxsize=None)
def boot_id() -> str:
    """This boot's random id; pids and start times only mean something within one boot."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:  # no such file in some sandboxes: then only pid and start time count
        return ""


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of `pid`, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may contain spaces and parentheses: the fixed fields
    # start after its last ')'.  They are field 3 (state) onwards, so field
    # 22 (starttime) is index 19.
    fields = data[data.rindex(b")") + 2:].split()
    return fields[0].decode(), int(fields[19])


def pid_start_time(pid: int) -> int:
    """When `pid` started, in clock ticks after boot (/proc/PID/stat field 22).

    With the pid this identifies a process for the whole boot.  Read it
    before the process is reaped: until then its pid cannot be reused.
    Raises ProcessLookupError when there is no such process.
    """
    found = _proc_stat(pid)
    if found is None:
        raise ProcessLookupError(errno.ESRCH, f"no process with pid {pid}")
    return found[1]


def _process_status(pid: int, start_time: int) -> Status:
    try:
        found = _proc_stat(pid)
    except PermissionError:
        # hidepid=1 hides only other users' processes, and a container we
        # recorded runs as us (or we are root): so this pid was reused.
        return STOPPED
    if found is None:
        return STOPPED
    state, started = found
    # Z: a zombie has exited, its pid merely not reaped yet.  X/x: dead.
    if started != start_time or state in ("Z", "X", "x"):
        return STOPPED
    return RUNNING


# --- the record ------------------------------------------------------------

def exec_config(config: Config) -> dict[str, Any]:
    """The JSON-safe part of an isolate.Config that exec needs later.

    env, cwd, user, group, the namespaces the container created (not those
    it joined), hostname, rootfs and capabilities: what a later
    ``isolate exec`` runs with.
    """
    return {
        "env": dict(config.env),
        "cwd": config.cwd,
        "user": config.user,
        "group": config.group,
        "namespaces": sorted(config.created),
        "hostname": config.hostname,
        "rootfs": config.rootfs if not isinstance(config.rootfs, Overlay) else attrs.asdict(config.rootfs),
        "capabilities": sorted(config.capabilities),
    }


def _positive(field: str, minimum: int) -> Callable[[Any, Any, Any], None]:
    def check(_instance: Any, _attribute: Any, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(field, f"expected an integer >= {minimum}, got {value!r}")
    return check


def _argv(value: Sequence[str | bytes | os.PathLike]) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)):
        raise ConfigError("argv", f"expected a sequence of arguments, got {value!r}")
    # fsdecode keeps undecodable bytes as surrogates, which JSON round-trips.
    return tuple(os.fsdecode(arg) for arg in value)


def _json_safe(field: str) -> Callable[[Any], dict[str, Any]]:
    def convert(value: Mapping[str, Any] | None) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(field, f"expected a mapping, got {value!r}")
        try:
            # A round trip both proves the value can be saved and copies it,
            # so a caller's later change to its dict cannot alter the record.
            return json.loads(json.dumps(dict(value), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ConfigError(field, f"must be JSON-serializable: {exc}") from None
    return convert


def _optional_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _optional_int(_instance: Any, _attribute: Any, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError("exit_code", f"expected an integer or None, got {value!r}")


@attrs.frozen
class ContainerState:
    """What is kept about one named container.

    `pid` is the host pid of the container's PID 1 and `start_time` its
    start time (clock ticks after boot) in the boot `boot_id`: together they
    name that process and no later one.  `config` holds the JSON-safe
    settings a later exec needs (see exec_config()).  `exit_code` and
    `finished` are set once whoever waited for the container saw it end.
    """

    name: str = attrs.field(converter=check_name)
    pid: int = attrs.field(validator=_positive("pid", 1))
    start_time: int = attrs.field(validator=_positive("start_time", 0))
    argv: tuple[str, ...] = attrs.field(converter=_argv)
    config: dict[str, Any] = attrs.field(factory=dict, converter=_json_safe("config"), hash=False)
    created: float = attrs.field(factory=time.time, converter=float)
    boot_id: str = attrs.field(factory=boot_id)
    exit_code: int | None = attrs.field(default=None, validator=_optional_int)
    finished: float | None = attrs.field(default=None, converter=_optional_float)

    @classmethod
    def for_process(cls, name: str, pid: int, argv: Sequence[str | bytes | os.PathLike],
                    config: Mapping[str, Any] | Config | None = None,
                    **fields: Any) -> ContainerState:
        """A record for the live process `pid`, its start time read from /proc.

        `config` is a JSON-safe mapping or an isolate.Config (reduced with
        exec_config()).  Call this before the process is reaped.
        """
        if isinstance(config, Config):
            config = exec_config(config)
        return cls(name=name, pid=pid, start_time=pid_start_time(pid), argv=argv,
                   config=config, **fields)

    def status(self) -> Status:
        """"running" only while this very process lives; otherwise "stopped".

        Checked against the kernel on every call: a dead pid, a pid reused by
        another process (different start time), a zombie, another boot or a
        recorded exit code all mean "stopped".
        """
        if self.exit_code is not None:
            return STOPPED
        if self.boot_id and boot_id() and self.boot_id != boot_id():
            return STOPPED
        return _process_status(self.pid, self.start_time)

    def same_process(self, other: ContainerState) -> bool:
        """Whether both records describe the same process."""
        return (self.pid, self.start_time, self.boot_id) == (other.pid, other.start_time, other.boot_id)

    def stopped(self, exit_code: int | None) -> ContainerState:
        """A copy recording that the container ended now with `exit_code`."""
        return attrs.evolve(self, exit_code=exit_code, finished=time.time())

    def to_dict(self) -> dict[str, Any]:
        """The record as saved: plain JSON types, with a format version."""
        record = attrs.asdict(self, recurse=False)
        record["argv"] = list(self.argv)
        return {"version": FORMAT_VERSION, **record}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> ContainerState:
        """Rebuild a record from to_dict()'s output (validated like any other)."""
        if record.get("version") != FORMAT_VERSION:
            raise StateError(f"unsupported state format version {record.get('version')!r} "
                             f"(this isolate reads version {FORMAT_VERSION})")
        fields = {f.name: record[f.name] for f in attrs.fields(cls) if f.name in record}
        return cls(**fields)


# --- the directory ---------------------------------------------------------

def default_root() -> str:
    """Where records live by default.

    /run/isolate for root; otherwise $XDG_RUNTIME_DIR/isolate, or
    /tmp/isolate-UID where that is unset.  All are cleared at boot (tmpfs)
    on the usual systems, as runtime state should be.
    """
    uid = os.geteuid()
    if uid == 0:
        return "/run/isolate"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "isolate")
    return f"/tmp/isolate-{uid}"


def _ensure_private_dir(path: str) -> os.stat_result:
    """Create `path` mode 0700 if missing; refuse one others could tamper with."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700)   # mkdir's mode went through the umask
    except FileExistsError:
        pass
    # lstat, not stat: in a shared /tmp another user could plant a symlink
    # or a directory of their own under our name to read or forge records.
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise StateError(f"state directory {path} is not a directory (a symlink?)")
    if info.st_uid != os.geteuid():
        raise StateError(f"state directory {path} belongs to uid {info.st_uid}, not to this user "
                         f"(uid {os.geteuid()})")
    if info.st_mode & 0o022:
        raise StateError(f"state directory {path} is writable by group or others "
                         f"(mode {stat.S_IMODE(info.st_mode):o})")
    return info


# Per thread: lock key -> (fd, depth).  flock excludes open file
# descriptions, so each thread opens its own; the depth makes the lock
# reentrant, so save() inside `with states.lock():` does not deadlock.
_held = threading.local()


class StateDir:
    """The runtime directory holding one ``<name>.json`` record per container.

    `root` defaults to default_root(); it is created mode 0700, and an
    existing one must be a directory of the caller's that group and others
    cannot write.  Records are written mode 0600: they hold environments.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = os.path.abspath(os.fsdecode(root)) if root is not None else default_root()
        info = _ensure_private_dir(self.root)
        self._key = (info.st_dev, info.st_ino)

    def __repr__(self) -> str:
        return f"<isolate.StateDir {self.root!r}>"

    def path(self, name: str) -> str:
        """The file holding the record of `name` (validated)."""
        return os.path.join(self.root, check_name(name) + _SUFFIX)

    def __contains__(self, name: str) -> bool:
        return os.path.exists(self.path(name))

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the directory's exclusive lock (other threads and processes wait).

        Reentrant within a thread.  Wrap a read-decide-write sequence of your
        own in it; save(), update() and remove() take it themselves.
        """
        held = _held.__dict__.setdefault("locks", {})
        if self._key in held:
            fd, depth = held[self._key]
            held[self._key] = (fd, depth + 1)
            try:
                yield
            finally:
                held[self._key] = (fd, depth)
            return
        fd = os.open(os.path.join(self.root, _LOCK),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held[self._key] = (fd, 1)
            try:
                yield
            finally:
                del held[self._key]
        finally:
            os.close(fd)   # closing the last descriptor releases the flock

    def load(self, name: str) -> ContainerState:
        """The record of `name`; ContainerNotFound if there is none."""
        path = self.path(name)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise ContainerNotFound(name, self.root) from None
        try:
            state = ContainerState.from_dict(json.loads(data))
        except (ValueError, TypeError, KeyError, AttributeError, StateError) as exc:
            # ConfigError is a ValueError: a field of the file failed validation.
            raise StateError(f"{path}: unreadable container record: {exc}") from None
        if state.name != name:
            raise StateError(f"{path}: holds the record of {state.name!r}, not {name!r}")
        return state

    def list(self) -> list[ContainerState]:
        """Every record, sorted by name (stale ones included: ask status())."""
        states = []
        for entry in sorted(os.listdir(self.root)):
            name = entry[:-len(_SUFFIX)]
            # Temp files start with '.', so no name matches them; other
            # entries (a netns/ directory, say) are not ours to read.
            if not entry.endswith(_SUFFIX) or not _NAME.fullmatch(name):
                continue
            try:
                states.append(self.load(name))
            except ContainerNotFound:   # removed since listdir()
                continue
        return states

    def save(self, state: ContainerState) -> None:
        """Write `state` as the record of its name, atomically.

        Replaces a record of the same process (an update) or of a stopped
        container; raises ContainerExists if the name belongs to another
        container that is still running.
        """
        with self.lock():
            try:
                current = self.load(state.name)
            except ContainerNotFound:
                current = None
            if (current is not None and not current.same_process(state)
                    and current.status() == RUNNING):
                raise ContainerExists(state.name, current.pid)
            self._write(state)

    def update(self, name: str, change: Callable[[ContainerState], ContainerState]) -> ContainerState:
        """Replace the record of `name` by ``change(record)``, under the lock; return it.

        E.g. ``states.update("web", lambda s: s.stopped(exit_code=0))``.
        """
        with self.lock():
            new = change(self.load(name))
            if not isinstance(new, ContainerState) or new.name != name:
                raise StateError(f"update of {name!r} must return a ContainerState named {name!r}, "
                                 f"got {new!r}")
            self._write(new)
            return new

    def remove(self, name: str, *, force: bool = False) -> None:
        """Delete the record of `name`.

        Refuses (StateError) while the container runs, since the record is
        the only way back to it, unless `force`; `force` also removes a
        record that cannot be read.  ContainerNotFound if there is none.
        """
        with self.lock():
            if not force:
                state = self.load(name)
                if state.status() == RUNNING:
                    raise StateError(f"container {name!r} is running (pid {state.pid}); "
                                     f"kill it first or remove with force=True")
            try:
                os.unlink(self.path(name))
            except FileNotFoundError:
                raise ContainerNotFound(name, self.root) from None
            self._sync_dir()

    def _write(self, state: ContainerState) -> None:
        """Replace the record file atomically: readers see old or new, whole."""
        data = json.dumps(state.to_dict(), indent=2, sort_keys=True).encode() + b"\n"
        # Same directory, so the rename cannot cross filesystems; mkstemp
        # makes it 0600, and its leading '.' keeps list() from reading it.
        fd, tmp = tempfile.mkstemp(prefix=f".{state.name}.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())   # the data is on disk before the name points at it
            os.replace(tmp, self.path(state.name))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self._sync_dir()

    def _sync_dir(self) -> None:
        """Make a rename or unlink durable (it lives in the directory)."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
