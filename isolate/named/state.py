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

The directory is opened once and used by descriptor (openat and friends):
someone who can rename directories on the way to it cannot make a later
read find a forged record in place of ours.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import os
import re
import resource
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, BinaryIO, Literal

import attrs

from isolate.errors import ConfigError, IsolateError

# Only for the annotations: importing them here would load the spawn path
# (attrs classes, seccomp, overlay) for `isolate ps`, which only reads records.
if TYPE_CHECKING:
    from isolate.config import Config
    from isolate.security.seccomp import Seccomp

__all__ = [
    "RUNNING", "STOPPED", "ContainerExists", "ContainerNotFound", "ContainerState",
    "StateDir", "StateError", "boot_id", "check_name", "default_root", "exec_config",
    "exec_fields", "pid_start_time", "record_config", "start_config", "start_fields",
]

RUNNING: Literal["running"] = "running"
STOPPED: Literal["stopped"] = "stopped"
Status = Literal["running", "stopped"]

#: Bumped when a record's layout changes incompatibly; load() refuses others.
FORMAT_VERSION = 1

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SUFFIX = ".json"
_LOCK = ".lock"
_LOG = ".log"
_EXIT = ".exit"


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
    it joined), hostname, rootfs, and the policy a later ``isolate exec``
    must apply just as the container did: capabilities, no_new_privs,
    rlimits and seccomp (see exec_fields() for the way back).
    """
    from isolate.overlay import Overlay
    from isolate.security.seccomp import Seccomp
    return {
        "env": dict(config.env),
        "cwd": config.cwd,
        "user": config.user,
        "group": config.group,
        "namespaces": sorted(config.created),
        "hostname": config.hostname,
        "rootfs": config.rootfs if not isinstance(config.rootfs, Overlay) else attrs.asdict(config.rootfs),
        "capabilities": sorted(config.capabilities),
        "no_new_privs": config.no_new_privs,
        # None for unlimited: RLIM_INFINITY is -1 in Python, which rlimits refuses.
        "rlimits": {name: [_limit(soft), _limit(hard)] for name, soft, hard in config.rlimits},
        "seccomp": (attrs.asdict(config.seccomp) if isinstance(config.seccomp, Seccomp)
                    else config.seccomp),
    }


def _limit(amount: int) -> int | None:
    return None if amount == resource.RLIM_INFINITY else amount


#: What exec_fields() needs in a record: without any of them an exec would
#: run with less confinement than the container, so it is refused instead.
_EXEC_FIELDS = ("env", "cwd", "user", "group", "namespaces", "capabilities",
                "no_new_privs", "rlimits", "seccomp")


def exec_fields(saved: Mapping[str, Any]) -> dict[str, Any]:
    """The isolate.Config keywords for an exec, from a record's config
    (exec_config()'s output, read back from JSON)."""
    missing = [field for field in _EXEC_FIELDS if field not in saved]
    if missing:
        raise StateError(f"container record lacks {', '.join(missing)} (written by an older "
                         f"isolate?): refusing to exec with less confinement than the container")
    fields = {field: saved[field] for field in _EXEC_FIELDS}
    fields["rlimits"] = {name: tuple(pair) for name, pair in saved["rlimits"].items()}
    if isinstance(saved["seccomp"], Mapping):
        fields["seccomp"] = _seccomp_from_json(saved["seccomp"])
    return fields


def _seccomp_from_json(saved: Mapping[str, Any]) -> Seccomp:
    """Rebuild a Seccomp profile from attrs.asdict() of it (validated again)."""
    from isolate.security.seccomp import Seccomp
    try:
        return Seccomp(**{field: _seccomp_value(value) for field, value in saved.items()})
    except TypeError as exc:
        raise StateError(f"container record: malformed seccomp profile: {exc}") from None


@functools.cache
def _seccomp_parts() -> dict[frozenset[str], type]:
    """The classes a profile is made of, each known by its set of field names."""
    from isolate.security.seccomp import Action, Arg, Errno, Rule
    return {frozenset(f.name for f in attrs.fields(cls)): cls for cls in (Action, Errno, Arg, Rule)}


def _seccomp_value(value: Any) -> Any:
    """A JSON value of a saved profile back as Action, Errno, Arg, Rule or tuple."""
    if isinstance(value, list):
        return tuple(_seccomp_value(item) for item in value)
    if isinstance(value, Mapping):
        cls = _seccomp_parts().get(frozenset(value))
        if cls is None:
            raise StateError(f"container record: unknown part of a seccomp profile: {value!r}")
        return cls(**{field: _seccomp_value(item) for field, item in value.items()})
    return value


def record_config(config: Config) -> dict[str, Any]:
    """What a record keeps of an isolate.Config: exec_config() and start_config()."""
    return {**exec_config(config), **start_config(config)}


def start_config(config: Config) -> dict[str, Any]:
    """The JSON-safe rest of an isolate.Config that starting the container
    again needs (`isolate start`, `restart`), on top of exec_config():
    how its root and mounts are made, its id maps, init, limits and paths.

    `join` and `pass_fds` name descriptors of the process that started it,
    gone by the time of a restart: kept only so that start_fields() can
    refuse such a container instead of starting it differently.
    """
    from isolate.mounts import Bind
    return {
        "rootfs_readonly": config.rootfs_readonly,
        "mounts": [{"kind": "bind", **attrs.asdict(mount)} if isinstance(mount, Bind)
                   else {"kind": "tmpfs", **attrs.asdict(mount)} for mount in config.mounts],
        "uid_map": None if config.uid_map is None else [list(r) for r in config.uid_map],
        "gid_map": None if config.gid_map is None else [list(r) for r in config.gid_map],
        "init": config.init,
        "new_session": config.new_session,
        "masked_paths": list(config.masked_paths),
        "readonly_paths": list(config.readonly_paths),
        "limits": None if config.limits is None else _limits_json(config.limits),
        "cgroup_parent": config.cgroup_parent,
        "expose_home": config.expose_home,
        "joined": sorted(ns.kind for ns in config.join),
        "pass_fds": list(config.pass_fds),
    }


def _limits_json(limits: Any) -> dict[str, Any]:
    """A CgroupLimit as JSON: io_max back to the mapping its converter takes."""
    saved = attrs.asdict(limits, recurse=False)
    saved["io_max"] = {device: dict(amounts) for device, amounts in limits.io_max}
    return saved


#: What start_fields() needs in a record besides exec_fields()'s.
_START_FIELDS = ("hostname", "rootfs", "rootfs_readonly", "mounts", "uid_map", "gid_map", "init",
                 "new_session", "masked_paths", "readonly_paths", "limits", "cgroup_parent",
                 "expose_home", "joined", "pass_fds")


def start_fields(saved: Mapping[str, Any]) -> dict[str, Any]:
    """The isolate.Config keywords that start a stopped container again just
    as it was started, from a record's config (record_config()'s output,
    read back from JSON); StateError if the record cannot say."""
    missing = [field for field in _START_FIELDS if field not in saved]
    if missing:
        raise StateError(f"container record lacks {', '.join(missing)} (written by an older "
                         f"isolate?): cannot start it again as it was")
    for field, what in (("joined", "joined namespaces"), ("pass_fds", "passed descriptors")):
        if saved[field]:
            raise StateError(f"the container was started with {what} ({saved[field]!r}) of the "
                             f"process that started it, which a restart cannot have")
    from isolate.cgroups.limits import CgroupLimit
    from isolate.mounts import Bind, Tmpfs
    from isolate.overlay import Overlay
    fields = exec_fields(saved)
    fields.update({field: saved[field] for field in _START_FIELDS
                   if field not in ("joined", "pass_fds")})
    try:
        if isinstance(saved["rootfs"], Mapping):
            fields["rootfs"] = Overlay(**saved["rootfs"])
        fields["mounts"] = [Bind(**_without(mount, "kind")) if mount["kind"] == "bind"
                            else Tmpfs(**_without(mount, "kind")) for mount in saved["mounts"]]
        if saved["limits"] is not None:
            fields["limits"] = CgroupLimit(**saved["limits"])
    except (TypeError, KeyError) as exc:
        raise StateError(f"container record: malformed rootfs, mounts or limits: {exc}") from None
    return fields


def _without(mapping: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


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
    settings a later exec or start needs (see record_config()).
    `exit_code` (the returncode: -N for signal N) and `finished` are set
    once the container is known to have ended (isolate.named.exits says
    who learns it, and how); `finished` stays None when the time is not
    known.  `created` is when the name was first given, `started` when the
    current process started if it is a restart (`isolate start`), else
    None.  `detached`: started by start_detached(), so nothing waits for
    it and its output goes to its log.  `auto_remove` (run --rm): the
    container is removed once it stops.
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
    started: float | None = attrs.field(default=None, converter=_optional_float)
    detached: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    auto_remove: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    @classmethod
    def for_process(cls, name: str, pid: int, argv: Sequence[str | bytes | os.PathLike],
                    config: Mapping[str, Any] | Config | None = None,
                    **fields: Any) -> ContainerState:
        """A record for the live process `pid`, its start time read from /proc.

        `config` is a JSON-safe mapping or an isolate.Config (reduced with
        record_config()).  Call this before the process is reaped.
        """
        from isolate.config import Config
        if isinstance(config, Config):
            config = record_config(config)
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

    @property
    def exit_status(self) -> int | None:
        """The recorded exit as a shell shows it (128+N for signal N), or None."""
        if self.exit_code is None:
            return None
        return 128 - self.exit_code if self.exit_code < 0 else self.exit_code

    @property
    def up_since(self) -> float:
        """When the current (or last) process of the container started."""
        return self.created if self.started is None else self.started

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


#: How every directory on the way to the state directory is opened: never
#: through a symlink, so what was checked is what is used.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir_at(parent: int, name: str, path: str, mode: int) -> tuple[int, bool]:
    """Open directory `name` in the directory `parent` (creating it with
    `mode` if missing); return its fd and whether it was created."""
    created = False
    try:
        os.mkdir(name, mode, dir_fd=parent)
        created = True
    except FileExistsError:
        pass
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent), created
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise StateError(f"state directory {path} is not a directory (a symlink?)") from None
        raise StateError(f"state directory {path}: {exc.strerror}") from None


def _check_ancestor(fd: int, path: str) -> None:
    """Refuse a directory above the state directory that someone else could
    change: one another non-root user owns (they may chmod it at will), or
    one group or others may write without the sticky bit (they could rename
    the state directory away and put theirs in its place)."""
    info = os.fstat(fd)
    if info.st_uid not in (0, os.geteuid()):
        raise StateError(f"state directory's ancestor {path} belongs to uid {info.st_uid}, "
                         f"neither root nor this user (uid {os.geteuid()})")
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise StateError(f"state directory's ancestor {path} is writable by group or others "
                         f"without the sticky bit (mode {stat.S_IMODE(info.st_mode):o})")


def _check_private(fd: int, path: str) -> None:
    """Refuse a state directory that is not the caller's alone."""
    info = os.fstat(fd)
    if info.st_uid != os.geteuid():
        raise StateError(f"state directory {path} belongs to uid {info.st_uid}, not to this user "
                         f"(uid {os.geteuid()})")
    if info.st_mode & 0o022:
        raise StateError(f"state directory {path} is writable by group or others "
                         f"(mode {stat.S_IMODE(info.st_mode):o})")


def _open_private_dir(path: str) -> int:
    """Open the state directory `path` (absolute) and return its fd.

    Walks from / one component at a time by descriptor, creating what is
    missing (0755, the last 0700), refusing symlinks, unsafe ancestors
    (_check_ancestor) and a last directory that is not the caller's alone.
    Everything later is done relative to the returned fd, so swapping a
    directory on the path afterwards changes nothing.
    """
    fd = os.open("/", _DIR_FLAGS)
    walked = "/"
    try:
        parts = [part for part in path.split("/") if part]
        for index, part in enumerate(parts):
            _check_ancestor(fd, walked)
            walked = os.path.join(walked, part)
            last = index == len(parts) - 1
            child, created = _open_dir_at(fd, part, walked, 0o700 if last else 0o755)
            os.close(fd)
            fd = child
            if last and created:
                os.fchmod(fd, 0o700)   # mkdir's mode went through the umask
        _check_private(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd


# Per thread: lock key -> (fd, depth).  flock excludes open file
# descriptions, so each thread opens its own; the depth makes the lock
# reentrant, so save() inside `with states.lock():` does not deadlock.
_held = threading.local()


class StateDir:
    """The runtime directory holding one ``<name>.json`` record per container,
    and a detached container's ``<name>.log`` and ``<name>.exit``.

    `root` defaults to default_root(); it is created mode 0700, and an
    existing one must be a directory of the caller's that group and others
    cannot write, below directories that only root or the caller can change
    (see _open_private_dir).  It is opened once: every record, the lock and
    the logs are reached relative to that descriptor, never through the
    path again.  Records are written mode 0600: they hold environments.
    close() releases the descriptor (so does garbage collection).
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        path = os.path.abspath(os.fsdecode(root)) if root is not None else default_root()
        # Symlinks above the directory are resolved once, here; the walk
        # below refuses any it meets (one swapped in meanwhile).
        self.root = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        self._fd = _open_private_dir(self.root)
        info = os.fstat(self._fd)
        self._key = (info.st_dev, info.st_ino)
        self._closer = weakref.finalize(self, os.close, self._fd)

    def __repr__(self) -> str:
        return f"<isolate.StateDir {self.root!r}>"

    def close(self) -> None:
        """Close the directory's descriptor; the StateDir is unusable after."""
        self._closer()

    def path(self, name: str) -> str:
        """The path of the record of `name` (validated), for messages: the
        file itself is only ever opened relative to the open directory."""
        return os.path.join(self.root, _record_file(name))

    def __contains__(self, name: str) -> bool:
        try:
            os.stat(_record_file(name), dir_fd=self._fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

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
        fd = self._open(_LOCK, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held[self._key] = (fd, 1)
            try:
                yield
            finally:
                del held[self._key]
        finally:
            os.close(fd)   # closing the last descriptor releases the flock

    def open_log(self, name: str) -> BinaryIO:
        """The log of `name` (``<name>.log``, mode 0600), opened for appending."""
        fd = self._open(check_name(name) + _LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        return os.fdopen(fd, "ab")

    def read_log(self, name: str) -> BinaryIO:
        """The log of `name`, opened for reading; FileNotFoundError if it has
        none (a container run in the foreground writes to its terminal)."""
        return os.fdopen(self._open(check_name(name) + _LOG, os.O_RDONLY | os.O_NONBLOCK), "rb")

    def new_exit_file(self, name: str) -> tuple[int, str]:
        """A new, empty exit file for the next start of `name` (see
        isolate.named.exits): its descriptor, open for writing, and its
        temporary name.  save(record, exit_file=that name) puts it in
        place; discard() deletes it if the start fails.

        A new file each start, never the old one truncated: the last
        container's line stays until the new record replaces it, and a
        start that loses the race for the name (ContainerExists) never
        touches the winner's file."""
        check_name(name)
        tmp = f".{name}.{os.urandom(8).hex()}{_EXIT}.tmp"
        return self._open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), tmp

    def discard(self, tmp: str) -> None:
        """Delete the temporary file `tmp` (from new_exit_file()), if it is there."""
        if not tmp.startswith(".") or "/" in tmp:
            raise StateError(f"{tmp!r} is not a temporary file of the state directory")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=self._fd)

    def open_exit_file(self, name: str) -> int | None:
        """A descriptor of `<name>.exit`, open for reading, or None if there
        is none.  Held across a wait, it still reads after an `rm` (or
        --rm) unlinked the file.  Written from inside the container: parse
        what it holds strictly (isolate.named.exits)."""
        try:
            return self._open(check_name(name) + _EXIT, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return None

    def load(self, name: str) -> ContainerState:
        """The record of `name`; ContainerNotFound if there is none."""
        path = self.path(name)
        try:
            fd = self._open(_record_file(name), os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            raise ContainerNotFound(name, self.root) from None
        except OSError as exc:   # ELOOP: a symlink
            raise StateError(f"{path}: cannot open container record: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            data = f.read()
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
        for entry in sorted(os.listdir(self._fd)):
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

    def save(self, state: ContainerState, exit_file: str | None = None) -> None:
        """Write `state` as the record of its name, atomically.

        Replaces a record of the same process (an update) or of a stopped
        container; raises ContainerExists if the name belongs to another
        container that is still running.  `exit_file`, a temporary name
        from new_exit_file(), becomes the container's exit file in the same
        locked step, replacing the last start's.
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
            if exit_file is not None:
                os.replace(exit_file, state.name + _EXIT, src_dir_fd=self._fd, dst_dir_fd=self._fd)
            elif current is not None and not current.same_process(state):
                # The last container's exit file says nothing of this one.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(state.name + _EXIT, dir_fd=self._fd)

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
        """Delete the record of `name`, and its log and exit file if any.

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
                os.unlink(_record_file(name), dir_fd=self._fd)
            except FileNotFoundError:
                raise ContainerNotFound(name, self.root) from None
            for suffix in (_LOG, _EXIT):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name + suffix, dir_fd=self._fd)
            os.fsync(self._fd)   # the unlink lives in the directory

    def _open(self, name: str, flags: int) -> int:
        """open(2) `name` in the state directory: never through a symlink,
        and only a regular file of the caller's (not a FIFO, which blocks)."""
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self._fd)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            os.close(fd)
            raise StateError(f"{os.path.join(self.root, name)} is not a regular file of uid "
                             f"{os.geteuid()}")
        return fd

    def _write(self, state: ContainerState) -> None:
        """Replace the record file atomically: readers see old or new, whole."""
        data = json.dumps(state.to_dict(), indent=2, sort_keys=True).encode() + b"\n"
        # Same directory, so the rename cannot cross filesystems; the
        # leading '.' keeps list() from reading the temp file.
        tmp = f".{state.name}.{os.urandom(8).hex()}.tmp"   # what secrets.token_hex(8) does
        fd = self._open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())   # the data is on disk before the name points at it
            os.replace(tmp, _record_file(state.name), src_dir_fd=self._fd, dst_dir_fd=self._fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=self._fd)
            raise
        os.fsync(self._fd)   # so is the rename


def _record_file(name: str) -> str:
    """The file name (in the state directory) of the record of `name`."""
    return check_name(name) + _SUFFIX
