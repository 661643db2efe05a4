"""Writing an overlayfs upper directory, where the kernel records a
container's changes in overlay form, as a layer tar (see `format`
for the two forms)."""
from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Callable, Sequence
from typing import BinaryIO

from isolate.errors import LayerError
from isolate.layers.format import (MAX_DEPTH, OPAQUE_MARKER, OVERLAY_XATTR_PREFIXES, PAX_XATTR, WHITEOUT_PREFIX,
                           is_whiteout, layer_xattr)

_NS = 1_000_000_000
_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC

# Tar types of the special files a layer carries as they are.
_SPECIAL_TYPES = {stat.S_IFCHR: tarfile.CHRTYPE, stat.S_IFBLK: tarfile.BLKTYPE,
                  stat.S_IFIFO: tarfile.FIFOTYPE}


#: (inside, outside, count) ranges, as in /proc/PID/uid_map.
IdMap = Sequence[tuple[int, int, int]]

#: What an id no range maps shows as inside a user namespace.
OVERFLOW_ID = 65534


def write_layer(upper: str, out: BinaryIO, *, uid_map: IdMap | None = None,
                gid_map: IdMap | None = None) -> None:
    """Write the overlayfs upper directory `upper` to `out` as an
    uncompressed PAX layer tar; the same tree always gives the same bytes.

    Owners are written as the container saw them when its id maps are
    given (a rootless container's root owns files as the caller's uid on
    the host, and as 0 in the layer); ids no range maps become 65534.
    Raise LayerError if the upper holds what a layer cannot represent."""
    fd = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,
                          encoding="utf-8") as tar:
            _LayerWriter(tar, _mapper(uid_map), _mapper(gid_map)).directory(fd, "")
    finally:
        os.close(fd)


class _LayerWriter:
    """Walks an upper directory, entries sorted, parents before children."""

    def __init__(self, tar: tarfile.TarFile, uid: Callable[[int], int],
                 gid: Callable[[int], int]) -> None:
        self.tar = tar
        self.uid, self.gid = uid, gid
        self.first_names: dict[tuple[int, int], str] = {}  # inode -> first name

    def add(self, info: tarfile.TarInfo, data: BinaryIO | None = None) -> None:
        """Append an entry, its owner as seen inside the container."""
        info.uid, info.gid = self.uid(info.uid), self.gid(info.gid)
        self.tar.addfile(info, data)

    def directory(self, dir_fd: int, prefix: str) -> None:
        for base in sorted(os.listdir(dir_fd)):
            st = os.stat(base, dir_fd=dir_fd, follow_symlinks=False)
            self.entry(dir_fd, prefix, base, st)

    def entry(self, dir_fd: int, prefix: str, base: str, st: os.stat_result) -> None:
        kind, path = stat.S_IFMT(st.st_mode), prefix + base
        if is_whiteout(st):
            self.whiteout(prefix, base, st)
            return
        if kind == stat.S_IFSOCK:
            return  # a tar cannot hold a socket, and it means nothing in an image
        if base.startswith(WHITEOUT_PREFIX):
            raise LayerError(f"upper {path!r} is named like a whiteout ({WHITEOUT_PREFIX}NAME), "
                             "which a layer cannot represent")
        if kind == stat.S_IFDIR:
            self.subdirectory(dir_fd, base, path, st)
        elif kind == stat.S_IFREG:
            self.regular(dir_fd, base, path, st)
        elif kind == stat.S_IFLNK:
            info = _tar_info(path, st, tarfile.SYMTYPE)
            info.linkname = os.readlink(base, dir_fd=dir_fd)
            self.add(info)
        else:
            info = _tar_info(path, st, _SPECIAL_TYPES[kind])
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self.add(info)

    def whiteout(self, prefix: str, base: str, st: os.stat_result) -> None:
        """An overlay whiteout: in a layer, an empty file ".wh.NAME"."""
        marker = WHITEOUT_PREFIX + base
        if marker == OPAQUE_MARKER:
            raise LayerError(f"upper {prefix + base!r} is a whiteout a layer cannot represent "
                             f"({OPAQUE_MARKER} makes a directory opaque)")
        self.add(_marker(prefix + marker, st))

    def subdirectory(self, dir_fd: int, base: str, path: str, st: os.stat_result) -> None:
        if path.count("/") + 1 >= MAX_DEPTH:
            # What extract would refuse; it also bounds this walk's recursion.
            raise LayerError(f"upper {path[:200]!r}...: deeper than {MAX_DEPTH} components, "
                             "which a layer cannot hold")
        fd = os.open(base, _DIR_FLAGS, dir_fd=dir_fd)
        try:
            xattrs = _read_xattrs(fd, path)
            info = _tar_info(path, st, tarfile.DIRTYPE)
            info.pax_headers = _pax_xattrs(xattrs)
            self.add(info)
            if any(xattrs.get(prefix + "opaque") == b"y" for prefix in OVERLAY_XATTR_PREFIXES):
                self.add(_marker(f"{path}/{OPAQUE_MARKER}", st))
            self.directory(fd, path + "/")
        finally:
            os.close(fd)

    def regular(self, dir_fd: int, base: str, path: str, st: os.stat_result) -> None:
        inode = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and inode in self.first_names:
            info = _tar_info(path, st, tarfile.LNKTYPE)
            info.linkname = self.first_names[inode]
            self.add(info)
            return
        if st.st_nlink > 1:
            self.first_names[inode] = path
        fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        with open(fd, "rb") as f:
            st = os.fstat(fd)  # the size of what is read, should it have changed
            info = _tar_info(path, st, tarfile.REGTYPE)
            info.size = st.st_size
            info.pax_headers = _pax_xattrs(_read_xattrs(fd, path))
            self.add(info, f)


def _mapper(ranges: IdMap | None) -> Callable[[int], int]:
    """Host id -> container id through `ranges` (None: unchanged)."""
    if ranges is None:
        return lambda host: host
    def inside(host: int) -> int:
        for first, outside, count in ranges:
            if outside <= host < outside + count:
                return first + host - outside
        return OVERFLOW_ID
    return inside


def _tar_info(path: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid, info.gid = st.st_uid, st.st_gid
    info.uname = info.gname = ""  # ids only: names belong to the host
    # Whole seconds, the tar header's unit: no PAX record for every entry.
    info.mtime = st.st_mtime_ns // _NS
    return info


def _marker(path: str, st: os.stat_result) -> tarfile.TarInfo:
    """An empty whiteout file; OCI gives its other fields no meaning."""
    info = _tar_info(path, st, tarfile.REGTYPE)
    info.mode = 0
    return info


def _read_xattrs(fd: int, path: str) -> dict[str, bytes]:
    xattrs = {name: os.getxattr(fd, name) for name in os.listxattr(fd)}
    # These make the upper file depend on a lower one; a layer cannot say so.
    for prefix in OVERLAY_XATTR_PREFIXES:
        for what in ("metacopy", "redirect"):
            if prefix + what in xattrs:
                raise LayerError(f"upper {path!r} has overlay {what} metadata, which a layer "
                                 "cannot represent (mount without metacopy/redirect_dir)")
    return xattrs


def _pax_xattrs(xattrs: dict[str, bytes]) -> dict[str, str]:
    """The xattrs a layer carries, as SCHILY.xattr PAX records (sorted, so
    the output is deterministic)."""
    return {PAX_XATTR + name: value.decode("utf-8", "surrogateescape")
            for name, value in sorted(xattrs.items())
            if layer_xattr(name, privileged=True)}  # the applier decides on capabilities
