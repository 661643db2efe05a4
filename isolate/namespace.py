"""Namespaces: their kinds, and Namespace objects that hold one open.

A Namespace owns a file descriptor for a namespace (from /proc/PID/ns/KIND,
a pinned file, or a freshly created namespace); two are equal when they
name the same namespace (same device and inode).  run(join=[...]) makes a
container join it instead of creating that kind.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterable, Iterator

from isolate._spawn import syscalls
from isolate.errors import ConfigError, NamespaceError

#: Every namespace kind isolate can create, by the name users give it.
KINDS: dict[str, int] = {
    "user": syscalls.CLONE_NEWUSER,
    "mount": syscalls.CLONE_NEWNS,
    "pid": syscalls.CLONE_NEWPID,
    "uts": syscalls.CLONE_NEWUTS,
    "ipc": syscalls.CLONE_NEWIPC,
    "net": syscalls.CLONE_NEWNET,
    "cgroup": syscalls.CLONE_NEWCGROUP,
    "time": syscalls.CLONE_NEWTIME,
}

#: The default: a new namespace of every kind.
ALL: frozenset[str] = frozenset(KINDS)

#: Other spellings: /proc/PID/ns names the mount namespace "mnt".
ALIASES = {"mnt": "mount"}

#: Kinds a thread of a multi-threaded process may join (setns(2)): user
#: and mount need an unshared fs and thread group, time an unshared mm, and
#: a pid namespace would only apply to the thread's future children.
THREAD_JOINABLE = frozenset({"net", "uts", "ipc", "cgroup"})

_NS_GET_USERNS = 0xB701   # _IO(0xb7, 0x1), linux/nsfs.h
_NS_GET_NSTYPE = 0xB703   # _IO(0xb7, 0x3)


def canonical(kind: str, field: str = "kind") -> str:
    """The canonical name of a namespace kind ("mnt" -> "mount")."""
    name = ALIASES.get(kind, kind) if isinstance(kind, str) else kind
    if name not in KINDS:
        raise ConfigError(field, f"unknown namespace {kind!r} (choose from {', '.join(KINDS)})")
    return name


def parse_kinds(names: Iterable[str] | str) -> frozenset[str]:
    """Validate namespace names; raises ConfigError naming a bad one."""
    if isinstance(names, str):
        raise ConfigError("namespaces", f"expected a collection of names, got the string {names!r}")
    return frozenset(canonical(name, "namespaces") for name in names)


def clone_flags(kinds: Iterable[str]) -> int:
    """The CLONE_NEW* flags for a set of namespace names."""
    flags = 0
    for name in kinds:
        flags |= KINDS[name]
    return flags


def proc_name(kind: str) -> str:
    """The file name of a kind under /proc/PID/ns."""
    return "mnt" if kind == "mount" else kind


class Namespace:
    """An open namespace of one kind.  Close it (or use `with`) when done."""

    def __init__(self, fd: int, kind: str) -> None:
        self.fd = fd
        self.kind = kind
        st = os.fstat(fd)
        self.dev, self.inode = st.st_dev, st.st_ino
        self._pins: list[str] = []

    @classmethod
    def of(cls, pid: int, kind: str) -> Namespace:
        """The namespace of `kind` that process `pid` is in."""
        kind = canonical(kind)
        return cls._open(f"/proc/{pid}/ns/{proc_name(kind)}", kind)

    @classmethod
    def current(cls, kind: str) -> Namespace:
        """The namespace of `kind` the calling thread is in."""
        kind = canonical(kind)
        return cls._open(f"/proc/thread-self/ns/{proc_name(kind)}", kind)

    @classmethod
    def from_path(cls, path: str | os.PathLike) -> Namespace:
        """A namespace file (pinned, or under /proc); its kind comes from the kernel."""
        fd = _open_fd(os.fspath(path))
        try:
            nstype = fcntl.ioctl(fd, _NS_GET_NSTYPE)
            kind = next(k for k, flag in KINDS.items() if flag == nstype)
        except (OSError, StopIteration):
            os.close(fd)
            raise NamespaceError(f"{os.fspath(path)} is not a namespace file") from None
        return cls(fd, kind)

    @classmethod
    def create(cls, kind: str, pin: str | os.PathLike | None = None) -> Namespace:
        """A new namespace of `kind` (like `ip netns add` with pin=...)."""
        kind = canonical(kind)
        if kind == "pid":
            raise ConfigError("kind", "a new pid namespace dies with its first process; "
                                      "create it with run() or Container()")
        ns = _create(kind)
        if pin is not None:
            try:
                ns.pin(pin)
            except BaseException:
                ns.close()
                raise
        return ns

    @classmethod
    def _open(cls, path: str, kind: str) -> Namespace:
        return cls(_open_fd(path), kind)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Namespace):
            return NotImplemented
        return (self.dev, self.inode) == (other.dev, other.inode)

    def __hash__(self) -> int:
        return hash((self.dev, self.inode))

    def __repr__(self) -> str:
        return f"<isolate.Namespace {self.kind}:[{self.inode}] fd={self.fd}>"

    def __enter__(self) -> Namespace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def owner(self) -> Namespace:
        """The user namespace that owns this one (for a user namespace: its parent)."""
        try:
            return Namespace(fcntl.ioctl(self.fd, _NS_GET_USERNS), "user")
        except OSError as exc:
            raise NamespaceError(exc.errno, f"owner of {self!r}: {exc.strerror}") from None

    def close(self) -> None:
        """Close the fd (pins stay: unpin() removes them)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @contextlib.contextmanager
    def entered(self) -> Iterator[Namespace]:
        """Join this namespace in the calling thread; return on exit, even on error."""
        if self.kind not in THREAD_JOINABLE:
            raise NamespaceError(f"a thread of a multi-threaded process cannot join a "
                                 f"{self.kind} namespace; use isolate.run(..., join=[ns]) "
                                 f"to run a command in it")
        nstype = KINDS[self.kind]
        with Namespace.current(self.kind) as home:
            _setns(self.fd, nstype, self)
            try:
                yield self
            finally:
                _setns(home.fd, nstype, home)

    def pin(self, path: str | os.PathLike) -> None:
        """Bind-mount the namespace at `path` so it outlives every process and fd."""
        path = os.path.abspath(os.fspath(path))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a"):
            pass
        try:
            syscalls.mount(f"/proc/self/fd/{self.fd}", path, None, syscalls.MS_BIND)
        except OSError as exc:
            os.unlink(path)
            raise NamespaceError(exc.errno, f"pin {self.kind} namespace at {path}: "
                                            f"{exc.strerror}") from None
        self._pins.append(path)

    def unpin(self) -> None:
        """Undo every pin() of this object: unmount and remove the files."""
        while self._pins:
            path = self._pins.pop()
            syscalls.umount2(path, syscalls.MNT_DETACH)
            os.unlink(path)


def _open_fd(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NamespaceError(exc.errno, f"open {path}: {exc.strerror}") from None


def _setns(fd: int, nstype: int, ns: Namespace) -> None:
    try:
        syscalls.setns(fd, nstype)
    except OSError as exc:
        raise NamespaceError(exc.errno, f"setns into {ns!r}: {exc.strerror}") from None


def _create(kind: str) -> Namespace:
    """A new namespace of `kind`, opened through a short-lived holder process."""
    from isolate._spawn import holder   # only Namespace.create needs a process

    # An unprivileged caller gets the others only inside a user namespace.
    kinds = {kind} if os.geteuid() == 0 else {kind, "user"}
    return holder.holding(clone_flags(kinds), lambda pid: Namespace.of(pid, kind))
