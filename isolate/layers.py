"""Image layers: apply a layer tar to a directory, and make one from an
overlayfs upper directory.

A layer is a tar "changeset" (OCI image-spec, layer.md): its entries add or
replace files, and two kinds of *whiteout* entries delete what the layers
below hold:

- ``DIR/.wh.NAME`` deletes ``DIR/NAME``;
- ``DIR/.wh..wh..opq`` makes ``DIR`` opaque: nothing of the lower layers'
  ``DIR`` shows through, only what this layer puts there.

isolate keeps each applied layer as a directory that becomes an overlayfs
lower layer, so whiteouts are stored the way overlayfs itself writes them
(isolate always mounts overlays with ``userxattr``, hence ``user.*``):

- a whiteout is a character device 0/0 at ``NAME`` (Linux >= 5.8 lets any
  user create that one device, so this works rootless too);
- an opaque directory carries the xattr ``user.overlay.opaque = "y"``.

`extract` turns the tar convention into the overlay one, `write_layer` turns
an overlay upper directory, where the kernel records a container's changes
in that same overlay form, back into a layer tar.

A layer tar is untrusted: `extract` resolves every path from a descriptor of
the destination, one component at a time, never following a symlink, so no
entry reaches outside the destination whatever symlinks earlier entries
planted; and a layer cannot forge overlay metadata through PAX xattrs.
"""
from __future__ import annotations

import errno
import gzip
import io
import os
import shutil
import stat
import tarfile
from decimal import Decimal
from typing import BinaryIO, cast

from .errors import LayerError

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "user.overlay.opaque"

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_PAX_XATTR = "SCHILY.xattr."
_OVERLAY_XATTRS = ("user.overlay.", "trusted.overlay.")
_NS = 1_000_000_000

# A step of a path walk: a handle on a directory, never on what a symlink
# points to (O_NOFOLLOW on the last component of a one-component path).
_STEP_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def open_compressed(fileobj: BinaryIO) -> BinaryIO:
    """A readable stream of the uncompressed tar in `fileobj`: gzip, zstd or
    plain, told apart by their magic bytes."""
    buffered = fileobj
    if not hasattr(fileobj, "peek"):
        buffered = cast(BinaryIO, io.BufferedReader(cast(io.RawIOBase, fileobj)))
    # peek, not read: the bytes stay in the stream the decompressor reads.
    magic = cast(io.BufferedReader, buffered).peek(4)[:4]
    if magic.startswith(_GZIP_MAGIC):
        return cast(BinaryIO, gzip.GzipFile(fileobj=buffered, mode="rb"))
    if magic == _ZSTD_MAGIC:
        import zstandard  # only zstd layers need it

        # read_across_frames: a layer may be several concatenated frames.
        reader = zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True)
        return cast(BinaryIO, reader)
    return buffered


def extract(stream: BinaryIO, dest: str, *, name: str = "layer") -> None:
    """Apply the uncompressed layer tar `stream` to the empty directory `dest`.

    The stream is read once, in order, to its end, so the caller can hash
    what is read.  On any error raise LayerError naming the layer `name` and
    the entry, after removing everything written under `dest`.
    """
    root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # Undoing a failure removes everything in dest: it must hold nothing else.
        if os.listdir(root_fd):
            raise LayerError(f"layer {name}: destination {dest!r} is not empty")
        applier = _Applier(root_fd, name)
        try:
            applier.run(stream)
        except BaseException as exc:
            applier.undo()
            if isinstance(exc, Exception) and not isinstance(exc, LayerError):
                raise applier.error(str(exc)) from exc
            raise
    finally:
        os.close(root_fd)


class _Applier:
    """The state of one extraction: the destination, the entry at hand, and
    the directories whose mode and mtime are set once all entries are in."""

    def __init__(self, root_fd: int, name: str) -> None:
        self.root_fd = root_fd
        self.name = name
        self.entry: str | None = None
        self.privileged = os.geteuid() == 0
        # Directory modes wait for the end (as tar does): a read-only or
        # unsearchable directory would stop a rootless caller filling it.
        # Mtimes wait too: creating children changes them.
        self.dirs: dict[tuple[str, ...], tuple[int, int | None]] = {}
        self.root_opaque = False

    def error(self, message: str) -> LayerError:
        where = f"entry {self.entry!r}: " if self.entry is not None else ""
        return LayerError(f"layer {self.name}: {where}{message}")

    def run(self, stream: BinaryIO) -> None:
        with tarfile.open(fileobj=stream, mode="r|", encoding="utf-8") as tar:
            for member in tar:
                self.entry = member.name
                self.apply(tar, member)
        self.entry = None
        self.finish_dirs()
        # Read the end-of-archive padding too, so a digest of the stream
        # covers the whole blob.
        while stream.read(1 << 16):
            pass

    def undo(self) -> None:
        for child in os.listdir(self.root_fd):
            _remove(self.root_fd, child)
        if self.root_opaque:
            os.removexattr(self.root_fd, OPAQUE_XATTR)

    def components(self, path: str, what: str) -> list[str]:
        """`path`'s components below the layer root ("./a//b/" -> a, b)."""
        if "\0" in path:
            raise self.error(f"{what} {path!r} contains a NUL byte")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self.error(f"{what} {path!r} escapes the layer root")
        return parts

    def apply(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = self.components(member.name, "name")
        if not parts:
            if not member.isdir():
                raise self.error("only a directory can be the layer root")
            return  # dest's own mode and owner are the caller's business
        base = parts[-1]
        if base == OPAQUE_MARKER:
            self.make_opaque(parts[:-1])
        elif base.startswith(WHITEOUT_PREFIX):
            self.whiteout(parts[:-1], base[len(WHITEOUT_PREFIX):])
        else:
            self.check_kind(member)
            parent = self.walk(parts[:-1], create=True)
            try:
                self.create(tar, member, parent, parts)
            finally:
                os.close(parent)

    def check_kind(self, member: tarfile.TarInfo) -> None:
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()
                or member.isfifo() or member.ischr() or member.isblk()):
            raise self.error(f"unsupported entry type {member.type!r}")
        if (member.ischr() or member.isblk()) and not self.privileged:
            raise self.error(f"device node {member.name!r} cannot be created "
                             "without CAP_MKNOD (rootless)")

    def walk(self, parts: list[str], *, create: bool) -> int:
        """An O_PATH descriptor of the directory `parts` below dest, reached
        without following symlinks; missing directories made if `create`."""
        fd = os.open(".", _STEP_FLAGS, dir_fd=self.root_fd)
        try:
            for i in range(len(parts)):
                step = self.step(fd, parts[: i + 1], create)
                os.close(fd)
                fd = step
        except BaseException:
            os.close(fd)
            raise
        return fd

    def step(self, fd: int, path: list[str], create: bool) -> int:
        part, shown = path[-1], "/".join(path)
        try:
            return os.open(part, _STEP_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
                raise self.error(f"parent {shown!r} is {kind}") from None
            if exc.errno != errno.ENOENT:
                raise
            if not create:
                raise self.error(f"parent {shown!r} does not exist") from None
        os.mkdir(part, 0o700, dir_fd=fd)
        self.dirs[tuple(path)] = (0o755, None)  # tar's mode for implied parents
        return os.open(part, _STEP_FLAGS, dir_fd=fd)

    def clear(self, parent: int, path: list[str], keep_dir: bool = False) -> bool:
        """Remove whatever is at `path` (later entries win); with
        `keep_dir` leave a directory there.  True if a directory was kept."""
        try:
            st = os.stat(path[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if keep_dir and stat.S_ISDIR(st.st_mode):
            return True
        _remove(parent, path[-1])
        key = tuple(path)
        self.dirs = {p: v for p, v in self.dirs.items() if p[: len(key)] != key}
        return False

    def create(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parent: int,
               parts: list[str]) -> None:
        base = parts[-1]
        kept_dir = self.clear(parent, parts, keep_dir=member.isdir())
        if member.isreg():
            self.write_file(tar, member, parent, base)
        elif member.isdir():
            self.make_dir(member, parent, parts, kept_dir)
        elif member.islnk():
            self.hardlink(member, parent, base)
        else:
            if member.issym():
                target = self.checked_text(member.linkname, "symlink target")
                os.symlink(target, base, dir_fd=parent)  # verbatim: nothing here follows it
            elif member.isfifo():
                os.mkfifo(base, 0o600, dir_fd=parent)
            else:
                kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
                device = os.makedev(member.devmajor, member.devminor)
                os.mknod(base, kind | 0o600, device, dir_fd=parent)
            self.set_attributes(member, parent, base)

    def checked_text(self, text: str, what: str) -> str:
        if "\0" in text:
            raise self.error(f"{what} {text!r} contains a NUL byte")
        return text

    def mode(self, member: tarfile.TarInfo) -> int:
        # Unprivileged, setuid/setgid bits would be the caller's own: drop them.
        return member.mode & (0o7777 if self.privileged else 0o1777)

    def write_file(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parent: int,
                   base: str) -> None:
        fd = os.open(base, _NEW_FILE_FLAGS, 0o600, dir_fd=parent)
        with open(fd, "wb") as out:
            source = tar.extractfile(member)
            assert source is not None  # a regular file always has content
            shutil.copyfileobj(source, out)
            out.flush()
            # chown before xattrs (it drops security.capability) and before
            # chmod (it drops setuid bits); user.* xattrs need a writable mode.
            if self.privileged:
                os.fchown(fd, member.uid, member.gid)
            self.set_xattrs(fd, member)
            os.fchmod(fd, self.mode(member))
            ns = _mtime_ns(member)
            os.utime(fd, ns=(ns, ns))

    def make_dir(self, member: tarfile.TarInfo, parent: int, parts: list[str],
                 exists: bool) -> None:
        if not exists:
            os.mkdir(parts[-1], 0o700, dir_fd=parent)
        fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=parent)
        try:
            if self.privileged:
                os.fchown(fd, member.uid, member.gid)
            self.set_xattrs(fd, member)
        finally:
            os.close(fd)
        self.dirs[tuple(parts)] = (self.mode(member), _mtime_ns(member))

    def hardlink(self, member: tarfile.TarInfo, parent: int, base: str) -> None:
        target = self.components(member.linkname, "hardlink target")
        if not target:
            raise self.error("hardlink target is the layer root")
        source = self.walk(target[:-1], create=False)
        try:
            try:
                st = os.stat(target[-1], dir_fd=source, follow_symlinks=False)
            except FileNotFoundError:
                raise self.error(f"hardlink target {member.linkname!r} does not exist") from None
            if not stat.S_ISREG(st.st_mode):
                raise self.error(f"hardlink target {member.linkname!r} is not a regular file")
            os.link(target[-1], base, src_dir_fd=source, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(source)

    def set_attributes(self, member: tarfile.TarInfo, parent: int, base: str) -> None:
        """Owner, mode and mtime of a symlink, fifo or device just made."""
        if self.privileged:
            os.chown(base, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
        if not member.issym():  # a symlink's mode means nothing on Linux
            os.chmod(base, self.mode(member), dir_fd=parent, follow_symlinks=False)
        ns = _mtime_ns(member)
        os.utime(base, ns=(ns, ns), dir_fd=parent, follow_symlinks=False)

    def set_xattrs(self, fd: int, member: tarfile.TarInfo) -> None:
        """The entry's PAX xattrs that a layer may set (files and directories
        only: Linux refuses user.* xattrs on symlinks and special files)."""
        for key, value in sorted(member.pax_headers.items()):
            if key.startswith(_PAX_XATTR) and self.wanted_xattr(key[len(_PAX_XATTR):]):
                # tarfile decodes PAX values with surrogateescape: undo it.
                os.setxattr(fd, key[len(_PAX_XATTR):], value.encode("utf-8", "surrogateescape"))

    def wanted_xattr(self, xattr: str) -> bool:
        # Overlay metadata (opaque, redirect, metacopy...) would let a layer
        # change how the overlay reads it: only whiteout entries set it.
        if xattr.startswith(_OVERLAY_XATTRS):
            return False
        return xattr.startswith("user.") or (self.privileged and xattr == "security.capability")

    def whiteout(self, dir_parts: list[str], target: str) -> None:
        if target in ("", ".", ".."):
            raise self.error("malformed whiteout")
        parent = self.walk(dir_parts, create=True)
        try:
            self.clear(parent, dir_parts + [target])
            os.mknod(target, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)
        finally:
            os.close(parent)

    def make_opaque(self, dir_parts: list[str]) -> None:
        path_fd = self.walk(dir_parts, create=True)
        try:
            fd = os.open(".", _DIR_FLAGS, dir_fd=path_fd)  # xattrs need a real open
        finally:
            os.close(path_fd)
        try:
            os.setxattr(fd, OPAQUE_XATTR, b"y")
        finally:
            os.close(fd)
        self.root_opaque = self.root_opaque or not dir_parts

    def finish_dirs(self) -> None:
        # Deepest first: a directory's mode may forbid walking into it.
        for path, (mode, ns) in sorted(self.dirs.items(), key=lambda kv: -len(kv[0])):
            self.entry = "/".join(path)
            parent = self.walk(list(path[:-1]), create=False)
            try:
                os.chmod(path[-1], mode, dir_fd=parent, follow_symlinks=False)
                if ns is not None:
                    os.utime(path[-1], ns=(ns, ns), dir_fd=parent, follow_symlinks=False)
            finally:
                os.close(parent)


def _mtime_ns(member: tarfile.TarInfo) -> int:
    # tarfile gives PAX mtimes as floats, too coarse for nanoseconds.
    text = member.pax_headers.get("mtime")
    if text is not None:
        return int(Decimal(text) * _NS)
    return int(member.mtime) * _NS


def _remove(parent: int, base: str) -> None:
    """Remove `base` in directory `parent`, a directory with all it holds,
    without following symlinks."""
    st = os.stat(base, dir_fd=parent, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(base, dir_fd=parent)
        return
    # A directory may be read-only or unsearchable; we made it, so we may chmod.
    os.chmod(base, 0o700, dir_fd=parent, follow_symlinks=False)
    fd = os.open(base, _DIR_FLAGS, dir_fd=parent)
    try:
        for child in os.listdir(fd):
            _remove(fd, child)
    finally:
        os.close(fd)
    os.rmdir(base, dir_fd=parent)


def write_layer(upper: str, out: BinaryIO) -> None:
    """Write the overlayfs upper directory `upper` to `out` as an
    uncompressed PAX layer tar; the same tree always gives the same bytes."""
    fd = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT,
                          encoding="utf-8") as tar:
            _LayerWriter(tar).directory(fd, "")
    finally:
        os.close(fd)


# Tar types of the special files a layer carries as they are.
_SPECIAL_TYPES = {stat.S_IFCHR: tarfile.CHRTYPE, stat.S_IFBLK: tarfile.BLKTYPE,
                  stat.S_IFIFO: tarfile.FIFOTYPE}


class _LayerWriter:
    """Walks an upper directory, entries sorted, parents before children."""

    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.first_names: dict[tuple[int, int], str] = {}  # inode -> first name

    def directory(self, dir_fd: int, prefix: str) -> None:
        for base in sorted(os.listdir(dir_fd)):
            st = os.stat(base, dir_fd=dir_fd, follow_symlinks=False)
            self.entry(dir_fd, prefix, base, st)

    def entry(self, dir_fd: int, prefix: str, base: str, st: os.stat_result) -> None:
        kind, path = stat.S_IFMT(st.st_mode), prefix + base
        if kind == stat.S_IFDIR:
            self.subdirectory(dir_fd, base, path, st)
        elif kind == stat.S_IFREG:
            self.regular(dir_fd, base, path, st)
        elif kind == stat.S_IFLNK:
            info = _tar_info(path, st, tarfile.SYMTYPE)
            info.linkname = os.readlink(base, dir_fd=dir_fd)
            self.tar.addfile(info)
        elif kind == stat.S_IFCHR and st.st_rdev == 0:
            # An overlay whiteout: in a layer, an empty file ".wh.NAME".
            self.tar.addfile(_marker(prefix + WHITEOUT_PREFIX + base, st))
        elif kind in _SPECIAL_TYPES:
            info = _tar_info(path, st, _SPECIAL_TYPES[kind])
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self.tar.addfile(info)
        # Sockets: a tar cannot hold them, and they mean nothing in an image.

    def subdirectory(self, dir_fd: int, base: str, path: str, st: os.stat_result) -> None:
        fd = os.open(base, _DIR_FLAGS, dir_fd=dir_fd)
        try:
            xattrs = _read_xattrs(fd, path)
            info = _tar_info(path, st, tarfile.DIRTYPE)
            info.pax_headers = _pax_xattrs(xattrs)
            self.tar.addfile(info)
            if b"y" in (xattrs.get("user.overlay.opaque"), xattrs.get("trusted.overlay.opaque")):
                self.tar.addfile(_marker(f"{path}/{OPAQUE_MARKER}", st))
            self.directory(fd, path + "/")
        finally:
            os.close(fd)

    def regular(self, dir_fd: int, base: str, path: str, st: os.stat_result) -> None:
        inode = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and inode in self.first_names:
            info = _tar_info(path, st, tarfile.LNKTYPE)
            info.linkname = self.first_names[inode]
            self.tar.addfile(info)
            return
        if st.st_nlink > 1:
            self.first_names[inode] = path
        fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        with open(fd, "rb") as f:
            st = os.fstat(fd)  # the size of what is read, should it have changed
            info = _tar_info(path, st, tarfile.REGTYPE)
            info.size = st.st_size
            info.pax_headers = _pax_xattrs(_read_xattrs(fd, path))
            self.tar.addfile(info, f)


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
    for prefix in _OVERLAY_XATTRS:
        for what in ("metacopy", "redirect"):
            if prefix + what in xattrs:
                raise LayerError(f"upper {path!r} has overlay {what} metadata, which a layer "
                                 "cannot represent (mount without metacopy/redirect_dir)")
    return xattrs


def _pax_xattrs(xattrs: dict[str, bytes]) -> dict[str, str]:
    """The xattrs a layer carries, as SCHILY.xattr PAX records (sorted, so
    the output is deterministic); overlay's own metadata stays behind."""
    return {_PAX_XATTR + name: value.decode("utf-8", "surrogateescape")
            for name, value in sorted(xattrs.items())
            if (name.startswith("user.") or name == "security.capability")
            and not name.startswith(_OVERLAY_XATTRS)}
