"""Applying a layer tar to a directory, whiteouts stored in overlay form
(see `format`).

A layer tar is untrusted: `extract` resolves every path from a descriptor of
the destination, one component at a time, never following a symlink, so no
entry reaches outside the destination whatever symlinks earlier entries
planted; a layer cannot forge overlay metadata through PAX xattrs; the
work an entry costs is bounded by its depth, which is capped, so a small
tar cannot keep an extraction busy for long; and a sparse file's holes stay
holes, so what is written is bounded by the tar's size.

A caller that cannot make device nodes (rootless) skips them with a
warning, as rootless podman does: a base image made by debootstrap has
/dev/full and the like, and the container gets a /dev of its own anyway.
"""
from __future__ import annotations

import errno
import gzip
import io
import os
import shutil
import stat
import tarfile
import warnings
from collections.abc import Callable
from decimal import Decimal
from typing import BinaryIO, TypeVar, cast

from isolate.errors import LayerError
from isolate.layers.format import (MAX_DEPTH, MAX_NAME_BYTES, OPAQUE_MARKER, OPAQUE_XATTR, PAX_XATTR,
                           WHITEOUT_PREFIX, is_whiteout, layer_xattr)

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_NS = 1_000_000_000
# Longer entry names are cut short in messages: a refused one may be huge.
_SHOWN_CHARS = 200
# A warning names this many skipped device nodes, then counts the rest.
_SHOWN_DEVICES = 5
_COPY_CHUNK = 1 << 20

# A step of a path walk: a handle on a directory, never on what a symlink
# points to (O_NOFOLLOW on the last component of a one-component path).
_STEP_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# The uid_map of the initial user namespace: every id maps to itself.
_IDENTITY_MAP = ["0", "0", "4294967295"]

_T = TypeVar("_T")


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


def _privileged() -> bool:
    """Whether this process may give files any owner, make device nodes and
    set security.capability: root of the initial user namespace.  Root of
    another one may not (chown to an id it does not map fails with EINVAL).

    The initial namespace is told by its uid_map, every id to itself; its
    /proc/PID/ns/user link cannot be compared with PID 1's, which in a pid
    namespace is not the host's init."""
    if os.geteuid() != 0:
        return False
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() == _IDENTITY_MAP
    except OSError:
        # No /proc: assume the initial namespace, as root mostly is.  Wrong,
        # the first chown fails loudly, where the other guess would drop
        # every owner silently.
        return True


class _Dir:
    """A directory this extraction made: the mode and mtime it gets once
    all entries are in, and the directories made in it, by name."""

    __slots__ = ("mode", "mtime_ns", "subdirs")

    def __init__(self, mode: int, mtime_ns: int | None = None) -> None:
        self.mode = mode
        self.mtime_ns = mtime_ns
        self.subdirs: dict[str, _Dir] = {}

    def finish(self, parent: int, base: str) -> None:
        """Give the directory `base` in `parent` its mode and mtime."""
        os.chmod(base, self.mode, dir_fd=parent, follow_symlinks=False)
        if self.mtime_ns is not None:
            os.utime(base, ns=(self.mtime_ns, self.mtime_ns), dir_fd=parent, follow_symlinks=False)


class _Applier:
    """The state of one extraction: the destination, the entry at hand, and
    the directories whose mode and mtime are set once all entries are in."""

    def __init__(self, root_fd: int, name: str) -> None:
        self.root_fd = root_fd
        self.name = name
        self.entry: str | None = None
        self.privileged = _privileged()
        # Directory modes wait for the end (as tar does): a read-only or
        # unsearchable directory would stop a rootless caller filling it.
        # Mtimes wait too: creating children changes them.  This tree holds
        # every directory below dest (dest starts empty, so each is one made
        # here): a walk keeps its place in it at no cost, and removing a
        # directory drops its subtree in one step.
        self.top: dict[str, _Dir] = {}
        self.root_opaque = False
        self.skipped_devices: list[str] = []

    def error(self, message: str) -> LayerError:
        where = ""
        if self.entry is not None:
            shown = self.entry if len(self.entry) <= _SHOWN_CHARS else self.entry[:_SHOWN_CHARS] + "..."
            where = f"entry {shown!r}: "
        return LayerError(f"layer {self.name}: {where}{message}")

    def run(self, stream: BinaryIO) -> None:
        with tarfile.open(fileobj=stream, mode="r|", encoding="utf-8") as tar:
            for member in tar:
                self.entry = member.name
                self.apply(tar, member)
        self.finish_dirs()
        self.entry = None  # what follows is no entry's doing
        self.warn_skipped()
        # Read the end-of-archive padding too, so a digest of the stream
        # covers the whole blob.
        while stream.read(1 << 16):
            pass

    def warn_skipped(self) -> None:
        if not self.skipped_devices:
            return
        shown = ", ".join(self.skipped_devices[:_SHOWN_DEVICES])
        more = len(self.skipped_devices) - _SHOWN_DEVICES
        warnings.warn(f"layer {self.name}: skipped {len(self.skipped_devices)} device node(s), "
                      f"which cannot be created without CAP_MKNOD (rootless): {shown}"
                      + (f" and {more} more" if more > 0 else ""))

    def undo(self) -> None:
        for child in os.listdir(self.root_fd):
            _remove(self.root_fd, child)
        if self.root_opaque:
            os.removexattr(self.root_fd, OPAQUE_XATTR)

    def components(self, path: str, what: str) -> list[str]:
        """`path`'s components below the layer root ("./a//b/" -> a, b)."""
        if "\0" in path:
            raise self.error(f"{what} {path!r} contains a NUL byte")
        if len(path.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise self.error(f"{what} is longer than {MAX_NAME_BYTES} bytes")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise self.error(f"{what} {path!r} escapes the layer root")
        if len(parts) > MAX_DEPTH:
            raise self.error(f"{what} has more than {MAX_DEPTH} components")
        return parts

    def apply(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = self.components(member.name, "name")
        if not parts:
            if not member.isdir():
                raise self.error("only a directory can be the layer root")
            return  # dest's own mode and owner are the caller's business
        self.check_dir_names(parts if member.isdir() else parts[:-1])
        base = parts[-1]
        if base == OPAQUE_MARKER:
            self.make_opaque(parts[:-1])
        elif base.startswith(WHITEOUT_PREFIX):
            self.whiteout(parts[:-1], base[len(WHITEOUT_PREFIX):])
        elif (member.ischr() or member.isblk()) and not self.privileged:
            self.skipped_devices.append(member.name)
        else:
            self.check_kind(member)
            parent, subdirs = self.walk(parts[:-1], create=True)
            try:
                self.create(tar, member, parent, subdirs, base)
            finally:
                os.close(parent)

    def check_dir_names(self, dir_parts: list[str]) -> None:
        """Refuse directories named like whiteouts: written back as a layer,
        one would read as a whiteout."""
        for depth, part in enumerate(dir_parts):
            if part.startswith(WHITEOUT_PREFIX):
                shown = "/".join(dir_parts[: depth + 1])
                raise self.error(f"directory {shown!r} is named like a whiteout ({WHITEOUT_PREFIX}NAME)")

    def check_kind(self, member: tarfile.TarInfo) -> None:
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()
                or member.isfifo() or member.ischr() or member.isblk()):
            raise self.error(f"unsupported entry type {member.type!r}")

    def walk(self, parts: list[str], *, create: bool) -> tuple[int, dict[str, _Dir]]:
        """An O_PATH descriptor of the directory `parts` below dest, reached
        without following symlinks, and the directories made in it; missing
        directories made if `create`."""
        fd, subdirs = os.open(".", _STEP_FLAGS, dir_fd=self.root_fd), self.top
        try:
            for depth in range(len(parts)):
                step, subdirs = self.step(fd, subdirs, parts, depth, create)
                os.close(fd)
                fd = step
        except BaseException:
            os.close(fd)
            raise
        return fd, subdirs

    def step(self, fd: int, subdirs: dict[str, _Dir], parts: list[str], depth: int,
             create: bool) -> tuple[int, dict[str, _Dir]]:
        """From `fd`, the directory parts[:depth] (`subdirs` made in it), to
        parts[depth]: its descriptor and the directories made in it."""
        part = parts[depth]
        try:
            next_fd = os.open(part, _STEP_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno != errno.ENOENT or not create:
                raise self.step_error(fd, parts, depth, exc) from None
            os.mkdir(part, 0o700, dir_fd=fd)
            subdirs[part] = _Dir(0o755)  # tar's mode for implied parents
            next_fd = os.open(part, _STEP_FLAGS, dir_fd=fd)
        return next_fd, subdirs[part].subdirs

    def step_error(self, fd: int, parts: list[str], depth: int, exc: OSError) -> Exception:
        """What a failed step raises.  The path shown is joined only here:
        joining it at every step would cost each step the depth."""
        shown = "/".join(parts[: depth + 1])
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            st = os.stat(parts[depth], dir_fd=fd, follow_symlinks=False)
            kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
            return self.error(f"parent {shown!r} is {kind}")
        if exc.errno == errno.ENOENT:
            return self.error(f"parent {shown!r} does not exist")
        return exc

    def clear(self, parent: int, subdirs: dict[str, _Dir], base: str, keep_dir: bool = False) -> bool:
        """Remove whatever is at `base` in `parent` (later entries win); with
        `keep_dir` leave a directory there.  True if a directory was kept."""
        st = _lstat(parent, base)
        if st is None:
            return False
        if keep_dir and stat.S_ISDIR(st.st_mode):
            return True
        _remove(parent, base)
        subdirs.pop(base, None)
        return False

    def create(self, tar: tarfile.TarFile, member: tarfile.TarInfo, parent: int,
               subdirs: dict[str, _Dir], base: str) -> None:
        # A directory made where this layer whited the name out replaces the
        # lower layers' directory: nothing of theirs may show through it.
        replaces_whiteout = member.isdir() and _replaces_whiteout(parent, base)
        kept_dir = self.clear(parent, subdirs, base, keep_dir=member.isdir())
        if member.isreg():
            self.write_file(tar, member, parent, base)
        elif member.isdir():
            self.make_dir(member, parent, subdirs, base, kept_dir)
            if replaces_whiteout:
                _set_opaque(parent, base)
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
            if member.sparse is None:
                shutil.copyfileobj(source, out)
            else:
                self.copy_sparse(source, out, member)
            out.flush()
            # chown before xattrs (it drops security.capability) and before
            # chmod (it drops setuid bits); user.* xattrs need a writable mode.
            if self.privileged:
                os.fchown(fd, member.uid, member.gid)
            self.set_xattrs(fd, member)
            os.fchmod(fd, self.mode(member))
            ns = _mtime_ns(member)
            os.utime(fd, ns=(ns, ns))

    def copy_sparse(self, source: BinaryIO, out: BinaryIO, member: tarfile.TarInfo) -> None:
        """Write a sparse member's data extents only, its holes as holes:
        reading it whole would write every zero a few tar bytes describe.
        The buffered `source` cannot seek on a stream: its raw file can
        (forward, over the holes it would otherwise fill with zeros)."""
        logical = source.raw    # type: ignore[attr-defined]
        end = 0
        for offset, size in member.sparse or ():
            if offset < end or size < 0 or offset + size > member.size:
                raise self.error(f"sparse map extent ({offset}, {size}) overlaps another or "
                                 f"lies beyond the file's {member.size} bytes")
            logical.seek(offset)
            out.seek(offset)
            self.copy_exactly(logical, out, size)
            end = offset + size
        out.truncate(member.size)

    def copy_exactly(self, source: BinaryIO, out: BinaryIO, size: int) -> None:
        while size:
            data = source.read(min(size, _COPY_CHUNK))
            if not data:
                raise self.error("the tar ends inside a sparse file's data")
            out.write(data)
            size -= len(data)

    def make_dir(self, member: tarfile.TarInfo, parent: int, subdirs: dict[str, _Dir], base: str,
                 exists: bool) -> None:
        mode, mtime_ns = self.mode(member), _mtime_ns(member)
        if exists:
            kept = subdirs[base]
            kept.mode, kept.mtime_ns = mode, mtime_ns
        else:
            os.mkdir(base, 0o700, dir_fd=parent)
            subdirs[base] = _Dir(mode, mtime_ns)
        fd = os.open(base, _DIR_FLAGS, dir_fd=parent)
        try:
            if self.privileged:
                os.fchown(fd, member.uid, member.gid)
            self.set_xattrs(fd, member)
        finally:
            os.close(fd)

    def hardlink(self, member: tarfile.TarInfo, parent: int, base: str) -> None:
        target = self.components(member.linkname, "hardlink target")
        if not target:
            raise self.error("hardlink target is the layer root")
        source, _ = self.walk(target[:-1], create=False)
        try:
            st = _lstat(source, target[-1])
            if st is None:
                raise self.error(f"hardlink target {member.linkname!r} does not exist")
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
            xattr = key.removeprefix(PAX_XATTR)
            if xattr != key and layer_xattr(xattr, privileged=self.privileged):
                # tarfile decodes PAX values with surrogateescape: undo it.
                os.setxattr(fd, xattr, value.encode("utf-8", "surrogateescape"))

    def whiteout(self, dir_parts: list[str], target: str) -> None:
        if target in ("", ".", ".."):
            raise self.error("malformed whiteout")
        parent, _ = self.walk(dir_parts, create=True)
        try:
            # A whiteout hides what the layers below hold (OCI: never an entry
            # of its own layer, which stays); dest holds only this layer.
            if _lstat(parent, target) is None:
                os.mknod(target, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)
        finally:
            os.close(parent)

    def make_opaque(self, dir_parts: list[str]) -> None:
        path_fd, _ = self.walk(dir_parts, create=True)
        try:
            _set_opaque(path_fd, ".")
        finally:
            os.close(path_fd)
        self.root_opaque = self.root_opaque or not dir_parts

    def finish_dirs(self) -> None:
        """Give the directories made their modes and mtimes, in one walk down
        their tree, each after all below it: its mode may forbid walking in."""
        path: list[str] = []
        try:
            _walk_deepest_first(self.root_fd, list(self.top.items()),
                                lambda _, made: list(made.subdirs.items()),
                                lambda parent, base, made: made.finish(parent, base), path)
        except Exception:
            self.entry = "/".join(path) or None
            raise


def _mtime_ns(member: tarfile.TarInfo) -> int:
    # tarfile gives PAX mtimes as floats, too coarse for nanoseconds.
    text = member.pax_headers.get("mtime")
    if text is not None:
        return int(Decimal(text) * _NS)
    return int(member.mtime) * _NS


def _replaces_whiteout(parent: int, base: str) -> bool:
    st = _lstat(parent, base)
    return st is not None and is_whiteout(st)


def _lstat(parent: int, base: str) -> os.stat_result | None:
    """What is at `base` in `parent` (a symlink not followed), or None."""
    try:
        return os.stat(base, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _set_opaque(parent: int, base: str) -> None:
    """Mark the directory `base` opaque (xattrs need a real open, not O_PATH)."""
    fd = os.open(base, _DIR_FLAGS, dir_fd=parent)
    try:
        os.setxattr(fd, OPAQUE_XATTR, b"y")
    finally:
        os.close(fd)


def remove_tree(path: str) -> None:
    """Remove `path`, a directory with all it holds (or anything else),
    without following symlinks, however deep the tree, getting through
    directories without write or search permission.  Raises
    FileNotFoundError when `path` does not exist."""
    parent, base = os.path.split(os.path.abspath(path))
    parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _remove(parent_fd, base)
    finally:
        os.close(parent_fd)


def _remove(parent: int, base: str) -> None:
    """Remove `base` in directory `parent`, a directory with all it holds,
    without following symlinks, however deep the tree."""
    if not stat.S_ISDIR(os.stat(base, dir_fd=parent, follow_symlinks=False).st_mode):
        os.unlink(base, dir_fd=parent)
        return
    _unlock(parent, base)
    _walk_deepest_first(parent, [(base, None)], _remove_all_but_subdirs,
                        lambda dir_fd, name, _: os.rmdir(name, dir_fd=dir_fd), [])


def _remove_all_but_subdirs(dir_fd: int, _: None) -> list[tuple[str, None]]:
    """Unlink what the directory `dir_fd` holds but its subdirectories, and
    list those, unlocked."""
    with os.scandir(dir_fd) as listing:
        entries = list(listing)  # all read before any is removed
    subdirs: list[tuple[str, None]] = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _unlock(dir_fd, entry.name)
            subdirs.append((entry.name, None))
        else:
            os.unlink(entry.name, dir_fd=dir_fd)
    return subdirs


def _unlock(parent: int, base: str) -> None:
    # A directory may be read-only or unsearchable; we made it, so we may chmod.
    os.chmod(base, 0o700, dir_fd=parent, follow_symlinks=False)


def _walk_deepest_first(fd: int, top: list[tuple[str, _T]],
                        below: Callable[[int, _T], list[tuple[str, _T]]],
                        leave: Callable[[int, str, _T], None], path: list[str]) -> None:
    """Visit the directories `top`, (name, item) pairs in directory `fd`,
    and those below them, each after all below it: in a directory,
    `below(its descriptor, item)` lists the directories to visit there;
    after them, `leave(its parent's descriptor, name, item)` finishes it.

    No recursion, and a descriptor or two open whatever the depth.  `path`
    follows the walk, the names from `fd` down to the directory at hand,
    for the caller to tell where an error happened."""
    cursor = _Cursor(fd)
    try:
        pending = [top]  # per level, the directories still to visit there
        while pending:
            if pending[-1]:
                name, item = pending[-1][-1]
                path.append(name)
                cursor.down(name)
                pending.append(below(cursor.fd, item))
                continue
            pending.pop()
            if pending:
                cursor.up()
                name, item = pending[-1].pop()
                leave(cursor.fd, name, item)
                path.pop()
    finally:
        cursor.close()


class _Cursor:
    """A descriptor going down a directory tree and back up, the only one
    held whatever the depth.  Going up opens ".." and checks it is the
    directory it came from, so the walk cannot leave the tree."""

    def __init__(self, fd: int) -> None:
        self.fd = os.dup(fd)
        self.here = _identity(self.fd)
        self.above: list[tuple[int, int]] = []

    def down(self, name: str) -> None:
        fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        self.above.append(self.here)
        self.here = _identity(fd)
        os.close(self.fd)
        self.fd = fd

    def up(self) -> None:
        fd = os.open("..", _DIR_FLAGS, dir_fd=self.fd)
        expected = self.above.pop()
        if _identity(fd) != expected:
            os.close(fd)
            raise OSError(errno.ESTALE, "a directory moved while it was walked")
        os.close(self.fd)
        self.fd, self.here = fd, expected

    def close(self) -> None:
        os.close(self.fd)


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino
