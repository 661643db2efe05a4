"""Copying files and directories between the host and a running named
container (``isolate cp``), as ``docker cp`` does.

Paths inside the container are resolved in its root (isolate.named.inside:
openat2 with RESOLVE_IN_ROOT from /proc/PID/root), so neither ``..`` nor a
symlink the container made can lead a copy to the host's files.  Below the
named path everything is reached by descriptor, one name at a time, never
through a symlink: a symlink found there is copied as a symlink.

What docker cp does with the destination, done here too:

* SRC a file: DST an existing directory gets DST/NAME; an existing file
  is replaced; a new name is created (its directory must exist).
* SRC a directory: copied as DST when DST does not exist, else into it as
  DST/NAME; SRC ending in ``/.`` copies what the directory holds instead.
* DST ending in ``/`` must be an existing directory.
* A symlink named as SRC is copied as a symlink unless `follow_link` (-L),
  which follows it, inside the container for a container's path.

Ownership, as docker's: what lands in the container belongs to the
container's root (its id maps' host ids for uid and gid 0; the container's
user when 0 is unmapped), what lands on the host to the caller.  Modes and
modification times are kept, but setuid and setgid bits never reach the
host: the files come from the container, whose root may have made any
program setuid, and the caller (perhaps root) would own them.  Device nodes
are refused either way, sockets skipped (a tar cannot hold them either).
"""
from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from collections.abc import Callable, Iterator

from isolate._spawn import syscalls
from isolate.errors import IsolateError
from isolate.layers.format import MAX_DEPTH
from isolate.named import inside
from isolate.named.state import StateDir

__all__ = ["CopyError", "copy_data", "copy_from", "copy_into"]

#: Symlinks followed at most for one SRC with follow_link (Linux's own limit).
_MAX_LINKS = 40
_READ_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_CHUNK = 1 << 20


class CopyError(IsolateError):
    """A copy between the host and a container failed; says which path and why."""


#: Opens a directory of one side by its path (a container's: inside its root).
DirOpener = Callable[[str], int]


def copy_from(states: StateDir, name: str, src: str, dst: str, *,
              follow_link: bool = False) -> None:
    """Copy `src`, a path in the running container `name`, to the host path `dst`."""
    with inside.opened_root(states, name) as pinned:
        def open_dir(path: str) -> int:
            return inside.open_in(pinned.root, path, _READ_DIR)
        _copy(_Side(f"{name}:", open_dir, inside.container_path(src), src),
              _Side("", _open_host_dir, os.path.abspath(dst), dst), follow_link, owner=None)


def copy_into(states: StateDir, name: str, src: str, dst: str, *,
              follow_link: bool = False) -> None:
    """Copy the host path `src` to `dst`, a path in the running container `name`."""
    with inside.opened_root(states, name) as pinned:
        def open_dir(path: str) -> int:
            return inside.open_in(pinned.root, path, _READ_DIR)
        _copy(_Side("", _open_host_dir, os.path.abspath(src), src),
              _Side(f"{name}:", open_dir, inside.container_path(dst), dst), follow_link,
              owner=_root_owner(pinned))


class _Side:
    """One end of a copy: how its directories are opened, `path` made
    absolute (a container's normalised inside it), `given` as the user
    wrote it (a trailing "/" or "/." means something) and `label` ("web:"
    or "") to name its paths in errors."""

    def __init__(self, label: str, open_dir: DirOpener, path: str, given: str) -> None:
        self.label = label
        self.open_dir = open_dir
        self.path = path
        self.given = given

    def show(self, path: str) -> str:
        return self.label + path


def _open_host_dir(path: str) -> int:
    return os.open(path, _READ_DIR)


def _root_owner(pinned: inside.Pinned) -> tuple[int, int]:
    """The host uid and gid that files copied into the container get: its
    root's, else its user's (a container may map only its user)."""
    uids, gids = pinned.id_map("uid"), pinned.id_map("gid")
    saved = pinned.record.config
    uid = inside.host_id(uids, 0)
    gid = inside.host_id(gids, 0)
    if uid is None:
        uid = inside.host_id(uids, saved.get("user", 0))
    if gid is None:
        gid = inside.host_id(gids, saved.get("group", 0))
    if uid is None or gid is None:
        raise CopyError("the container maps neither root nor its user to a host id: "
                        "files copied into it would have no owner it knows")
    return uid, gid


def _copy(src: _Side, dst: _Side, follow_link: bool, owner: tuple[int, int] | None) -> None:
    try:
        with _source(src, follow_link) as (src_dir, src_name, src_parent):
            with _destination(dst, src_name) as (dst_dir, dst_name, dst_parent):
                writer = _Writer(src, dst, owner)
                if src_name and dst_name:
                    writer.entry(src_dir, src_name, src_parent, dst_dir, dst_name, dst_parent, 0)
                elif dst_name:   # what SRC holds, into a new directory
                    writer.directory(src_dir, src_parent, dst_dir, dst_name, dst_parent, 0)
                else:            # what SRC holds, into an existing directory
                    writer.contents(src_dir, src_parent, dst_dir, dst_parent, 0)
    except CopyError:
        raise
    except OSError as exc:
        where = exc.filename if isinstance(exc.filename, str) else None
        raise CopyError(f"copy {src.show(src.given)} to {dst.show(dst.given)}: "
                        f"{where + ': ' if where else ''}{exc.strerror}") from None


@contextlib.contextmanager
def _source(side: _Side, follow_link: bool) -> Iterator[tuple[int, str, str]]:
    """The open directory holding SRC, SRC's name in it and the directory's
    path.  When what a directory holds is copied ("/", "DIR/."), the
    directory is SRC itself and the name is ""."""
    path = side.path
    if side.given.endswith("/.") or side.given == "." or path == "/":
        fd = _opened(side, path)
        try:
            yield fd, "", path
        finally:
            os.close(fd)
        return
    for _ in range(_MAX_LINKS):
        parent_path, name = posixpath.split(path)
        parent = _opened(side, parent_path)
        try:
            try:
                info = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                raise CopyError(f"{side.show(side.given)}: no such file or directory") from None
            if follow_link and stat.S_ISLNK(info.st_mode):
                # Looked up again from the top (inside the container: in its
                # root), as the kernel resolves a link relative to its directory.
                path = posixpath.join(parent_path, os.readlink(name, dir_fd=parent))
                continue
            yield parent, name, parent_path
            return
        finally:
            os.close(parent)
    raise CopyError(f"{side.show(side.given)}: too many levels of symbolic links")


def _opened(side: _Side, path: str) -> int:
    """A directory of `side` by path; CopyError naming it if there is none."""
    try:
        return side.open_dir(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise CopyError(f"{side.show(path)}: no such directory") from None
        raise


@contextlib.contextmanager
def _destination(side: _Side, src_name: str) -> Iterator[tuple[int, str, str]]:
    """The open directory to write into, the name to write there ("": what
    SRC holds goes straight into it) and the directory's path, by docker's
    rules (see the module's docstring)."""
    into_dir = side.given.endswith("/")
    try:
        fd = side.open_dir(side.path)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise
        if into_dir:
            raise CopyError(f"{side.show(side.given)}: no such directory (a destination "
                            f"ending in '/' must be an existing directory)") from None
        fd = None   # a new name, or an existing file to replace
    if fd is not None:
        try:
            yield fd, src_name, side.path   # an existing directory: SRC goes into it
        finally:
            os.close(fd)
        return
    parent_path, name = posixpath.split(side.path)
    parent = _opened(side, parent_path)
    try:
        yield parent, name, parent_path
    finally:
        os.close(parent)


class _Writer:
    """Copies entries from descriptors of one side to descriptors of the
    other, never following a symlink below the named paths: each name is
    looked up in a directory opened without following one, and each new
    entry is opened with O_NOFOLLOW (or O_EXCL) before it is changed, so a
    container swapping in a symlink meanwhile makes the copy fail, never
    act on the symlink's target."""

    def __init__(self, src: _Side, dst: _Side, owner: tuple[int, int] | None) -> None:
        self.src = src
        self.dst = dst
        # The host ids of the container's root when copying into it; None
        # when copying out (the files are the caller's).
        self.owner = owner

    @contextlib.contextmanager
    def owned(self) -> Iterator[None]:
        """Make the block's changes to the container as its root: with the
        filesystem ids of `owner` when the caller is the host's root and
        they differ.  A filesystem the container mounted in its user
        namespace (its /tmp) refuses (EOVERFLOW) to create anything for an
        id the namespace does not map, as the host's root is not; and what
        the container's root may not do there, neither does the copy."""
        if self.owner is None or os.geteuid() != 0 or self.owner == (0, 0):
            yield
            return
        uid = syscalls.setfsuid(self.owner[0])
        try:
            gid = syscalls.setfsgid(self.owner[1])
            try:
                yield
            finally:
                syscalls.setfsgid(gid)
        finally:
            syscalls.setfsuid(uid)

    def contents(self, source: int, src_path: str, target: int, dst_path: str,
                 depth: int) -> None:
        """Copy every entry of the open directory `source` into `target`."""
        if depth >= MAX_DEPTH:
            raise CopyError(f"{self.src.show(src_path)}: deeper than {MAX_DEPTH} directories")
        for name in sorted(os.listdir(source)):
            self.entry(source, name, src_path, target, name, dst_path, depth)

    def entry(self, src_dir: int, src_name: str, src_parent: str, dst_dir: int, dst_name: str,
              dst_parent: str, depth: int) -> None:
        """Copy `src_name` of `src_dir` as `dst_name` of `dst_dir` (the
        parents' paths only name things in errors)."""
        src_path = posixpath.join(src_parent, src_name)
        dst_path = posixpath.join(dst_parent, dst_name)
        info = os.stat(src_name, dir_fd=src_dir, follow_symlinks=False)
        kind = stat.S_IFMT(info.st_mode)
        if kind == stat.S_IFDIR:
            source = os.open(src_name, _READ_DIR | os.O_NOFOLLOW, dir_fd=src_dir)
            try:
                self.directory(source, src_path, dst_dir, dst_name, dst_parent, depth + 1)
            finally:
                os.close(source)
        elif kind == stat.S_IFREG:
            self.regular(src_dir, src_name, src_path, dst_dir, dst_name, dst_path)
        elif kind == stat.S_IFLNK:
            link = os.readlink(src_name, dir_fd=src_dir)
            with self.owned():
                self.replace(dst_dir, dst_name, dst_path)
                os.symlink(link, dst_name, dir_fd=dst_dir)
                if self.owner is not None:
                    os.chown(dst_name, *self.owner, dir_fd=dst_dir, follow_symlinks=False)
                os.utime(dst_name, ns=(info.st_atime_ns, info.st_mtime_ns), dir_fd=dst_dir,
                         follow_symlinks=False)
        elif kind == stat.S_IFIFO:
            with self.owned():
                self.replace(dst_dir, dst_name, dst_path)
                os.mkfifo(dst_name, 0o600, dir_fd=dst_dir)
                # Opening a FIFO to read without O_NONBLOCK would wait for a writer.
                fifo = os.open(dst_name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW
                               | os.O_CLOEXEC, dir_fd=dst_dir)
                try:
                    self.finish(fifo, info)
                finally:
                    os.close(fifo)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            raise CopyError(f"{self.src.show(src_path)}: a device node, which isolate cp "
                            f"does not copy")
        # A socket is a live endpoint, not data: there is nothing to copy.

    def directory(self, source: int, src_path: str, dst_dir: int, dst_name: str,
                  dst_parent: str, depth: int) -> None:
        """Copy the open directory `source` as `dst_name` of `dst_dir`,
        merging into a directory already there (as cp -r and docker cp do)."""
        dst_path = posixpath.join(dst_parent, dst_name)
        with self.owned():
            with contextlib.suppress(FileExistsError):
                os.mkdir(dst_name, 0o700, dir_fd=dst_dir)
            try:
                target = os.open(dst_name, _READ_DIR | os.O_NOFOLLOW, dir_fd=dst_dir)
            except OSError as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise CopyError(f"{self.dst.show(dst_path)}: cannot replace a "
                                    f"non-directory with the directory "
                                    f"{self.src.show(src_path)}") from None
                raise
        try:
            self.contents(source, src_path, target, dst_path, depth)
            # Last: the copies inside changed its modification time.
            with self.owned():
                self.finish(target, os.fstat(source))
        finally:
            os.close(target)

    def regular(self, src_dir: int, src_name: str, src_path: str, dst_dir: int,
                dst_name: str, dst_path: str) -> None:
        # O_NONBLOCK: should the name be a FIFO by now, open must not wait.
        source = os.open(src_name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=src_dir)
        try:
            info = os.fstat(source)
            if not stat.S_ISREG(info.st_mode):
                raise CopyError(f"{self.src.show(src_path)}: changed while being copied")
            with self.owned():
                self.replace(dst_dir, dst_name, dst_path)
                target = os.open(dst_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, 0o600, dir_fd=dst_dir)
            try:
                copy_data(source, target, info.st_size)
                with self.owned():
                    self.finish(target, info)
            finally:
                os.close(target)
        finally:
            os.close(source)

    def replace(self, dst_dir: int, dst_name: str, dst_path: str) -> None:
        """Make room for a non-directory at `dst_name`: an existing file or
        symlink goes (docker cp overwrites), a directory is an error."""
        try:
            info = os.stat(dst_name, dir_fd=dst_dir, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            raise CopyError(f"{self.dst.show(dst_path)}: cannot replace a directory with a "
                            f"non-directory")
        os.unlink(dst_name, dir_fd=dst_dir)

    def finish(self, fd: int, info: os.stat_result) -> None:
        """Owner, mode and times of the copy open as `fd`, from the source's `info`."""
        if self.owner is not None:
            os.fchown(fd, *self.owner)
        # After the chown, which clears setuid and setgid bits.
        mode = stat.S_IMODE(info.st_mode)
        if self.owner is None:   # landing on the host: see the module's docstring
            mode &= ~(stat.S_ISUID | stat.S_ISGID)
        os.fchmod(fd, mode)
        os.utime(fd, ns=(info.st_atime_ns, info.st_mtime_ns))


def copy_data(source: int, target: int, size: int) -> None:
    """Copy `size` bytes at most from the descriptor `source` to `target`:
    a file that grows while it is copied (a container may append forever)
    is copied as it was when opened."""
    left = size
    while left > 0:
        chunk = os.read(source, min(_CHUNK, left))
        if not chunk:
            return
        view = memoryview(chunk)
        while view:
            view = view[os.write(target, view):]
        left -= len(chunk)
