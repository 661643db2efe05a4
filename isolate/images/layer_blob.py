"""One layer of an archived image (`LayerBlob`), extracted as it streams
and verified on the way: its stored bytes against their size and digest,
its uncompressed tar against the config's diff_id."""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import attrs

from isolate.layers import apply
from isolate.images.archive_files import Opener
from isolate.errors import ImageError, LayerError
from isolate.images.manifests import check_digest
from isolate.layers.format import OPAQUE_XATTR

#: What a docker-archive's layers are (it records no media type): a tar,
#: perhaps compressed; isolate.layers.apply tells which by its magic bytes.
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"

_CHUNK = 1 << 20


@attrs.frozen
class LayerBlob:
    """One layer of an archived image, as the archive stores it.

    digest: sha256 of the stored (maybe compressed) bytes, from the OCI
        descriptor; None in a docker-archive, which records none.
    size: the stored bytes' length.
    media_type: the descriptor's media type (docker-archive: DOCKER_LAYER).
    diff_id: sha256 of the uncompressed tar, from the image config.
    location: "archive:member" (or the blob's path), for messages.
    opener: returns a context manager giving the stored bytes as a stream.
    """

    digest: str | None
    size: int
    media_type: str
    diff_id: str
    location: str
    opener: Opener = attrs.field(repr=False, eq=False)

    @contextlib.contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """The stored bytes, as they are in the archive; reading more than
        `size` of them raises ImageError."""
        with self.opener() as raw:
            yield io.BufferedReader(_SizedReader(raw, self.size, self.location), _CHUNK)

    def extract(self, dest: str, *, on_read: Callable[[int], None] | None = None,
                on_expand: Callable[[int], None] | None = None) -> None:
        """Apply this layer to the existing empty directory `dest`,
        verifying its digest and diff_id as it streams.

        on_read(n) is called as each n stored bytes are read, on_expand(n)
        as each n bytes of the uncompressed tar are (an ImageError it
        raises stops the extraction, as a bad digest does).  Raises
        ImageError on a digest mismatch (also when that is why the tar is
        unreadable), LayerError when the layer cannot be applied; either
        way `dest` is left empty.
        """
        with self.open() as raw:
            stored = _HashingReader(raw, on_read)
            plain = _HashingReader(apply.open_compressed(io.BufferedReader(stored, _CHUNK)),
                                   on_expand)
            try:
                apply.extract(io.BufferedReader(plain, _CHUNK), dest, name=self.location)
            except LayerError as exc:
                if isinstance(exc.__cause__, ImageError):
                    raise exc.__cause__ from None     # the stream's own error
                # A corrupt blob shows up as an unreadable tar; when the
                # digest says so, that is the error to report.
                self._check_stored(_drained(stored))
                raise
            try:
                # The digests cover every stored byte: a decompressor may
                # stop short of the blob's end, an extractor of the tar's.
                _drain(plain)
                _drain(stored)
                self._check_stored(stored)
                check_digest(self.location, "diff_id", self.diff_id, plain.hexdigest())
            except BaseException:
                _empty(dest)
                raise

    def _check_stored(self, stored: _HashingReader | None) -> None:
        if stored is None or self.digest is None:
            return
        check_digest(self.location, "digest", self.digest, stored.hexdigest())


class _SizedReader(io.RawIOBase):
    """Passes a stream of `size` bytes through; raises ImageError when it
    holds more (a blob may have grown, or be endless)."""

    def __init__(self, raw: BinaryIO, size: int, where: str) -> None:
        super().__init__()
        self._raw = raw
        self._size = size
        self._left = size
        self._where = where

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        # One byte past the end, to tell a longer stream from a full one.
        data = self._raw.read(min(len(buffer), self._left + 1))
        if len(data) > self._left:
            raise ImageError(f"{self._where}: more than the {self._size} bytes its descriptor says")
        self._left -= len(data)
        buffer[:len(data)] = data
        return len(data)


class _HashingReader(io.RawIOBase):
    """Passes a stream through, hashing (sha256) its bytes."""

    def __init__(self, raw: BinaryIO, on_read: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self._raw = raw
        self._hash = hashlib.sha256()
        self._on_read = on_read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        if n:
            self._hash.update(data)
            if self._on_read is not None:
                self._on_read(n)
        return n

    def hexdigest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def _drain(reader: io.RawIOBase) -> None:
    buffer = bytearray(_CHUNK)
    while reader.readinto(buffer):
        pass


def _drained(reader: _HashingReader) -> _HashingReader | None:
    """`reader` read to its end, or None when that fails too."""
    try:
        _drain(reader)
    except (OSError, EOFError, ValueError):
        return None
    return reader


def _empty(path: str) -> None:
    """Remove everything inside the directory `path`, and the opaque mark
    a layer may have put on it."""
    for name in os.listdir(path):
        apply.remove_tree(os.path.join(path, name))
    with contextlib.suppress(OSError):
        os.removexattr(path, OPAQUE_XATTR)
