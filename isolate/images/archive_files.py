"""The files of an image archive, by name: the members of a tar
(`TarFiles`) or the files of an OCI image layout directory
(`LayoutFiles`).

Both give a JSON document's bytes, bounded (`MAX_DOCUMENT`), and a layer's
stored bytes as a stream to open later (a layer outlives the reading of
its archive).  Names come from the archive itself: a name is only ever
looked up inside the archive, and in a layout directory no symlink is
followed and only regular files are read.
"""
from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
import tarfile
from collections.abc import Callable, Iterator
from typing import BinaryIO, ContextManager

from isolate.errors import ImageError

#: JSON documents are read into memory: refuse absurd ones (real
#: manifests and configs are kilobytes).
MAX_DOCUMENT = 16 << 20

#: Tar links followed at most when looking a member up.
_MAX_LINKS = 16

# A directory on the way to a layout's file: never through a symlink.
_STEP_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
# The file itself: never a symlink, and never waiting (a fifo, a device).
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

Opener = Callable[[], ContextManager[BinaryIO]]


def tar_mode(path: str) -> str:
    """tarfile's mode for the tar at `path`, by its magic bytes."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return "r:gz"
    if magic.startswith(b"BZh"):
        return "r:bz2"
    if magic.startswith(b"\xfd7zXZ\x00"):
        return "r:xz"
    return "r:"


def normalize(name: str) -> str:
    """A member name without "./", "//" or a leading "/"; ".." cannot
    climb above the top."""
    return posixpath.normpath("/" + name).lstrip("/")


def _too_big(where: str) -> ImageError:
    return ImageError(f"{where}: more than {MAX_DOCUMENT} bytes is too big for a JSON document")


class TarFiles:
    """The members of an archive tar, looked up by name."""

    def __init__(self, path: str, tar: tarfile.TarFile) -> None:
        self.path = path
        self._tar = tar
        self._mode = tar_mode(path)
        try:
            # Later members win, as when a tar is extracted.
            self._members = {normalize(m.name): m for m in tar.getmembers()}
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ImageError(f"{path}: corrupt tar archive ({exc})") from exc

    def describe(self, name: str) -> str:
        return f"{self.path}:{name}"

    def exists(self, name: str) -> bool:
        return name in self._members

    def _member(self, name: str) -> tarfile.TarInfo:
        """The regular file `name` is, following symlinks and hard links
        (docker save links a layer shared by two images)."""
        wanted = name
        for _ in range(_MAX_LINKS):
            member = self._members.get(name)
            if member is None:
                raise ImageError(f"{self.describe(wanted)}: missing from the archive")
            if member.isfile():
                return member
            if member.issym():
                name = normalize(posixpath.join(posixpath.dirname(name), member.linkname))
            elif member.islnk():
                name = normalize(member.linkname)
            else:
                raise ImageError(f"{self.describe(wanted)}: not a regular file")
        raise ImageError(f"{self.describe(wanted)}: too many levels of links")

    def size(self, name: str) -> int:
        return self._member(name).size

    def read(self, name: str) -> bytes:
        """A JSON document's bytes."""
        member = self._member(name)
        if member.size > MAX_DOCUMENT:
            raise _too_big(self.describe(name))
        try:
            return self._tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ImageError(f"{self.describe(name)}: cannot read ({exc})") from exc

    def opener(self, name: str) -> Opener:
        member, path, mode = self._member(name), self.path, self._mode

        # Each opening reopens the archive: a LayerBlob outlives read_archive,
        # and a member is reached by seeking to its data, not by extracting.
        @contextlib.contextmanager
        def open_member() -> Iterator[BinaryIO]:
            with tarfile.open(path, mode) as tar, tar.extractfile(member) as f:
                yield f
        return open_member


class LayoutFiles:
    """The files of an OCI image layout directory.  The layout is the
    caller's choice, a symlink to it included; within it no symlink is
    followed: an archive's names must not reach outside it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def describe(self, name: str) -> str:
        return os.path.join(self.path, name)

    def _open(self, name: str) -> int:
        """A descriptor of the regular file `name` (a "/"-separated
        relative name without "..") in the layout."""
        *dirs, base = name.split("/")
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in dirs:
                step = os.open(part, _STEP_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = step
            file_fd = os.open(base, _FILE_FLAGS, dir_fd=fd)
        except OSError as exc:
            raise self._error(name, exc) from None
        finally:
            os.close(fd)
        if not stat.S_ISREG(os.fstat(file_fd).st_mode):
            os.close(file_fd)
            raise ImageError(f"{self.describe(name)}: not a regular file")
        return file_fd

    def _error(self, name: str, exc: OSError) -> ImageError:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return ImageError(f"{self.describe(name)}: not a regular file within the layout "
                              "(symlinks are not followed)")
        if exc.errno == errno.ENOENT:
            return ImageError(f"{self.describe(name)}: missing from the layout")
        return ImageError(f"{self.describe(name)}: {exc.strerror}")

    def size(self, name: str) -> int:
        fd = self._open(name)
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def read(self, name: str) -> bytes:
        """A JSON document's bytes."""
        try:
            with open(self._open(name), "rb") as f:
                data = f.read(MAX_DOCUMENT + 1)
        except OSError as exc:
            raise ImageError(f"{self.describe(name)}: {exc.strerror}") from exc
        if len(data) > MAX_DOCUMENT:
            raise _too_big(self.describe(name))
        return data

    def opener(self, name: str) -> Opener:
        self.size(name)     # fail now, not at extraction, when it is missing
        return lambda: open(self._open(name), "rb")


Files = TarFiles | LayoutFiles
