"""What a running container changed in its overlay root, when its upper
layer is a tmpfs (``run --image``): written out as an upper directory of
its own, for a commit.

That tmpfs lives only in the container's mount namespace, and overlayfs
keeps it mounted nowhere a path reaches.  What can be read is the merged
view, the container's root (/proc/PID/root), and the lower layers, store
directories on the host.  The changes are their difference, found as
docker's naive differ finds them, by comparing each entry's metadata:

* a non-directory changed if its type, mode, owner, size, modification
  time, change time (ctime) or symlink target differs from the lower
  layers' view.  The ctime catches what the others miss: overlayfs shows
  a lower file's own inode until the file is first written, then the
  copy in the upper, made at that moment;
* a directory is written when its mode, owner or modification time
  differ, or anything below it changed (as overlayfs copies parents up);
* an entry the lower layers have and the merged view has not becomes a
  whiteout (a 0/0 character device, as overlayfs writes one).

Mount points are no part of the root: /proc, /dev, /tmp and the
container's own mounts (read from its mountinfo), and anything on another
filesystem, are skipped on both sides.  The lower layers' view is built as
overlayfs builds it: the topmost layer holding a name decides what it is,
a whiteout hides it, an opaque directory hides what the layers below hold.

Owners are kept as the host sees them (root only: a caller without
privilege owns everything it writes, as in the container's layers), so the
directory reads as a real upper would; Overlay.diff() writes it as a layer.
Hard links become separate files.
"""
from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence

from isolate.errors import LayerError
from isolate.layers.format import MAX_DEPTH, OPAQUE_XATTR, is_whiteout, layer_xattr
from isolate.named import inside
from isolate.named.copy import copy_data

__all__ = ["write_upper"]

_READ_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: How mountinfo escapes a space, tab, newline or backslash in a path.
_ESCAPE = re.compile(rb"\\([0-7]{3})")


def write_upper(pinned: inside.Pinned, lowers: Sequence[str], upper: str) -> None:
    """Write what the running container `pinned` changed in its root, an
    overlay of `lowers` (bottom first), into the empty directory `upper`."""
    mount_points = _mount_points(pinned)
    merged = inside.open_in(pinned.root, "/", os.O_RDONLY | os.O_DIRECTORY)
    layers = [os.open(lower, _READ_DIR) for lower in reversed(lowers)]
    target = os.open(upper, _READ_DIR)
    try:
        differ = _Differ(mount_points, os.fstat(merged).st_dev)
        differ.directory(merged, layers, target, "/", 0)
    finally:
        for fd in (merged, target, *layers):
            os.close(fd)


def _mount_points(pinned: inside.Pinned) -> set[str]:
    """The container's mount points but its root, as paths inside it."""
    with open(pinned.open("mountinfo"), "rb") as f:
        lines = f.read().splitlines()
    points = set()
    for line in lines:
        point = os.fsdecode(_ESCAPE.sub(lambda m: bytes([int(m[1], 8)]), line.split()[4]))
        if point != "/":
            points.add(point)
    return points


def _same(merged: os.stat_result, lower: os.stat_result) -> bool:
    """Whether a non-directory's metadata is unchanged (see the module's docstring)."""
    return ((merged.st_mode, merged.st_uid, merged.st_gid, merged.st_size, merged.st_rdev,
             merged.st_mtime_ns, merged.st_ctime_ns)
            == (lower.st_mode, lower.st_uid, lower.st_gid, lower.st_size, lower.st_rdev,
                lower.st_mtime_ns, lower.st_ctime_ns))


class _Differ:
    """Walks the merged view and the lower layers side by side, by descriptor."""

    def __init__(self, mount_points: set[str], device: int) -> None:
        self.mount_points = mount_points
        self.device = device       # the overlay's: a directory elsewhere is another mount
        self.privileged = os.geteuid() == 0

    def directory(self, merged: int, layers: list[int], target: int, path: str,
                  depth: int) -> bool:
        """Write the changes below the directory `merged` (its lower layers'
        directories `layers`, top first) into `target`; whether there were any."""
        if depth >= MAX_DEPTH:
            raise LayerError(f"{path}: deeper than {MAX_DEPTH} directories")
        lower = _lower_entries(layers)
        changed = False
        for name in sorted(os.listdir(merged)):
            child = os.path.join(path, name)
            below = lower.pop(name, None)
            if child in self.mount_points:
                continue
            info = os.stat(name, dir_fd=merged, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                if info.st_dev != self.device:
                    continue
                changed |= self.subdirectory(merged, name, info, layers, below, target, child,
                                             depth)
            elif below is None or not _same(info, below[1]) or (
                    stat.S_ISLNK(info.st_mode)
                    and os.readlink(name, dir_fd=merged) != os.readlink(name, dir_fd=below[0])):
                self.copy(merged, name, info, target)
                changed = True
        for name, (_layer, info) in lower.items():
            if not is_whiteout(info):   # gone from the merged view: deleted
                os.mknod(name, stat.S_IFCHR | 0o600, 0, dir_fd=target)
                changed = True
        return changed

    def subdirectory(self, merged: int, name: str, info: os.stat_result, layers: list[int],
                     below: tuple[int, os.stat_result] | None, target: int, path: str,
                     depth: int) -> bool:
        """A directory of the merged view, written with what changed below
        it; left out when neither it nor anything below it changed."""
        source = os.open(name, _READ_DIR, dir_fd=merged)
        beneath = _layers_below(layers, name, below)
        try:
            os.mkdir(name, 0o700, dir_fd=target)
            written = os.open(name, _READ_DIR, dir_fd=target)
            try:
                changed = self.directory(source, beneath, written, path, depth + 1)
                lower = below[1] if below is not None else None
                if (not changed and lower is not None and stat.S_ISDIR(lower.st_mode)
                        and (info.st_mode, info.st_uid, info.st_gid, info.st_mtime_ns)
                        == (lower.st_mode, lower.st_uid, lower.st_gid, lower.st_mtime_ns)):
                    os.rmdir(name, dir_fd=target)
                    return False
                self.finish(written, info)
                return True
            finally:
                os.close(written)
        finally:
            os.close(source)
            for fd in beneath:
                os.close(fd)

    def copy(self, merged: int, name: str, info: os.stat_result, target: int) -> None:
        """Write the non-directory `name` of the merged view into `target`."""
        kind = stat.S_IFMT(info.st_mode)
        if kind == stat.S_IFSOCK:
            return   # a live endpoint: no layer holds one
        if kind == stat.S_IFLNK:
            os.symlink(os.readlink(name, dir_fd=merged), name, dir_fd=target)
            if self.privileged:
                os.chown(name, info.st_uid, info.st_gid, dir_fd=target, follow_symlinks=False)
            os.utime(name, ns=(info.st_atime_ns, info.st_mtime_ns), dir_fd=target,
                     follow_symlinks=False)
            return
        if kind == stat.S_IFREG:
            # O_NONBLOCK: should the container have made it a FIFO since, open must not wait.
            source = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=merged)
            try:
                info = os.fstat(source)
                if not stat.S_ISREG(info.st_mode):
                    raise LayerError(f"{name}: changed while being read")
                copy = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600,
                               dir_fd=target)
                try:
                    copy_data(source, copy, info.st_size)
                    for attribute in os.listxattr(source):
                        if layer_xattr(attribute, privileged=self.privileged):
                            os.setxattr(copy, attribute, os.getxattr(source, attribute))
                    self.finish(copy, info)
                finally:
                    os.close(copy)
            finally:
                os.close(source)
            return
        # A FIFO or a device node: made as it is (devices by root only).
        os.mknod(name, info.st_mode, info.st_rdev, dir_fd=target)
        if self.privileged:
            os.chown(name, info.st_uid, info.st_gid, dir_fd=target, follow_symlinks=False)
        os.chmod(name, stat.S_IMODE(info.st_mode), dir_fd=target)
        os.utime(name, ns=(info.st_atime_ns, info.st_mtime_ns), dir_fd=target)

    def finish(self, fd: int, info: os.stat_result) -> None:
        """Owner, mode and times of what was written, from the merged view's `info`."""
        if self.privileged:
            os.fchown(fd, info.st_uid, info.st_gid)
        os.fchmod(fd, stat.S_IMODE(info.st_mode))   # after the chown, which clears setuid
        os.utime(fd, ns=(info.st_atime_ns, info.st_mtime_ns))


def _lower_entries(layers: list[int]) -> dict[str, tuple[int, os.stat_result]]:
    """name -> (the layer directory holding it, its stat) of the topmost of
    `layers` that has it; whiteouts included (they hide a name)."""
    found: dict[str, tuple[int, os.stat_result]] = {}
    for layer in layers:
        for name in os.listdir(layer):
            if name not in found:
                found[name] = (layer, os.stat(name, dir_fd=layer, follow_symlinks=False))
    return found


def _layers_below(layers: list[int], name: str,
                  below: tuple[int, os.stat_result] | None) -> list[int]:
    """The directories `name` of `layers` (top first) that show through in
    the merged view, opened: from the topmost holding the name, which must
    be a directory, down to the first opaque one or a non-directory."""
    if below is None or not stat.S_ISDIR(below[1].st_mode):
        return []
    opened: list[int] = []
    for layer in layers[layers.index(below[0]):]:
        try:
            info = os.stat(name, dir_fd=layer, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(info.st_mode):
            break
        fd = os.open(name, _READ_DIR, dir_fd=layer)
        opened.append(fd)
        if _opaque(fd):
            break
    return opened


def _opaque(fd: int) -> bool:
    """Whether a layer's directory hides what the layers below hold there."""
    try:
        return os.getxattr(fd, OPAQUE_XATTR) == b"y"
    except OSError:   # ENODATA: no such attribute
        return False

