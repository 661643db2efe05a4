"""Reading image archives: which images an archive holds, their configs,
and their layers as streams verified while they are extracted.

Three formats are read:

- docker-archive (``docker save``, ``podman save --format docker-archive``):
  a tar holding ``manifest.json``, each image's config JSON and its layer
  tars (plain or compressed);
- oci-archive: a tar of an OCI image layout;
- an OCI image layout directory (``oci-layout``, ``index.json``,
  ``blobs/sha256/...``).

A tar holding both (``docker save`` since Docker 25 writes an OCI layout
next to its manifest.json) is always read as OCI, which digests every blob;
its manifest.json then only contributes its RepoTags as names.

Nothing is written to disk here except through `LayerBlob.extract`.  The
JSON documents (indexes, manifests, configs) are read into memory and their
digests checked by `read_archive`; a layer is checked while it streams
through isolate.layer_apply into a directory: the sha256 of its bytes as stored
against its descriptor's digest (OCI only: a docker-archive records none)
and the sha256 of its uncompressed tar against the config's
``rootfs.diff_ids`` entry, which is what identifies a layer in both formats.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import posixpath
import re
import shutil
import tarfile
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, ContextManager

import attrs

from . import layer_apply, layer_format
from .errors import ImageError, LayerError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
#: What a docker-archive's layers are (it records no media type): a tar,
#: perhaps compressed; isolate.layer_apply tells which by its magic bytes.
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
LAYER_TYPES = frozenset({
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    DOCKER_LAYER,
})

#: Annotations naming an image in an index, best first (the first present
#: is its name): containerd (and so docker save) puts the full reference in
#: its own, and only the tag in the OCI one.
NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HEX_NAME = re.compile(r"(?:.*/)?([0-9a-f]{64})(?:\.json)?")

#: JSON documents are read into memory: refuse absurd ones (real
#: manifests and configs are kilobytes).
_MAX_DOCUMENT = 16 << 20

#: Nested indexes followed at most (real images nest one deep).
_MAX_NESTING = 4

#: Tar links followed at most when looking a member up.
_MAX_LINKS = 16

_CHUNK = 1 << 20

_MACHINES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
             "armv7l": "arm", "armv6l": "arm", "i386": "386", "i686": "386"}


def host_architecture() -> str:
    """This machine's architecture as OCI platforms spell it ("amd64")."""
    machine = platform.machine()
    return _MACHINES.get(machine, machine)


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
    opener: Callable[[], ContextManager[BinaryIO]] = attrs.field(repr=False, eq=False)

    def open(self) -> ContextManager[BinaryIO]:
        """The stored bytes, as they are in the archive."""
        return self.opener()

    def extract(self, dest: str, *, on_read: Callable[[int], None] | None = None) -> None:
        """Apply this layer to the existing empty directory `dest`,
        verifying its digest and diff_id as it streams.

        on_read(n) is called as each n stored bytes are read.  Raises
        ImageError on a digest mismatch (also when that is why the tar is
        unreadable), LayerError when the layer cannot be applied; either
        way `dest` is left empty.
        """
        with self.open() as raw:
            stored = _HashingReader(raw, on_read)
            try:
                plain = _HashingReader(layer_apply.open_compressed(_buffered(stored)))
                layer_apply.extract(_buffered(plain), dest, name=self.location)
                # The digests cover every stored byte: a decompressor may
                # stop short of the blob's end, an extractor of the tar's.
                _drain(plain)
                _drain(stored)
            except LayerError:
                # A corrupt blob shows up as an unreadable tar; when the
                # digest says so, that is the error to report.
                self._check_stored(_drained(stored))
                raise
        try:
            self._check_stored(stored)
            _check_digest(self.location, "diff_id", self.diff_id, plain.hexdigest())
        except ImageError:
            _empty(dest)
            raise

    def _check_stored(self, stored: _HashingReader | None) -> None:
        if stored is None or self.digest is None:
            return
        _check_digest(self.location, "digest", self.digest, stored.hexdigest())


@attrs.frozen
class ArchiveImage:
    """One image found in an archive.

    names: its references ("busybox:latest"), maybe none.
    config: the whole image config JSON (architecture, config, rootfs...).
    config_digest: sha256 of the config's bytes: the image's id.
    layers: bottom first.
    source: the archive's path.
    """

    names: tuple[str, ...]
    config: dict[str, Any] = attrs.field(hash=False)
    config_digest: str
    layers: tuple[LayerBlob, ...]
    source: str

    @property
    def diff_ids(self) -> tuple[str, ...]:
        """The layers' diff_ids, bottom first."""
        return tuple(layer.diff_id for layer in self.layers)


def read_archive(path: str | os.PathLike) -> list[ArchiveImage]:
    """The images in a docker-archive, oci-archive or OCI layout directory,
    in the archive's order.  Raises ImageError, naming the path, when
    anything is missing or malformed or a document's digest is wrong."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return _read_oci(_DirSource(path), {})
    try:
        tar = tarfile.open(path, _tar_mode(path))
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ImageError(f"{path}: not a tar archive ({exc})") from exc
    with tar:
        source = _TarSource(path, tar)
        if source.exists("index.json"):
            tags = _docker_tags(source) if source.exists("manifest.json") else {}
            return _read_oci(source, tags)
        if source.exists("manifest.json"):
            return _read_docker(source)
    raise ImageError(f"{path}: neither an OCI image layout (no index.json) "
                     "nor a docker archive (no manifest.json)")


# --- where the files are: a tar or a directory --------------------------------


def _tar_mode(path: str) -> str:
    """tarfile's mode for the outer tar, by its magic bytes."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x1f\x8b"):
        return "r:gz"
    if magic.startswith(b"BZh"):
        return "r:bz2"
    if magic.startswith(b"\xfd7zXZ\x00"):
        return "r:xz"
    return "r:"


def _normalize(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")


class _TarSource:
    """The members of an archive tar, looked up by name."""

    def __init__(self, path: str, tar: tarfile.TarFile) -> None:
        self.path = path
        self._tar = tar
        self._mode = _tar_mode(path)
        try:
            # Later members win, as when a tar is extracted.
            self._members = {_normalize(m.name): m for m in tar.getmembers()}
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
                name = _normalize(posixpath.join(posixpath.dirname(name), member.linkname))
            elif member.islnk():
                name = _normalize(member.linkname)
            else:
                raise ImageError(f"{self.describe(wanted)}: not a regular file")
        raise ImageError(f"{self.describe(wanted)}: too many levels of links")

    def size(self, name: str) -> int:
        return self._member(name).size

    def read(self, name: str) -> bytes:
        member = self._member(name)
        if member.size > _MAX_DOCUMENT:
            raise ImageError(f"{self.describe(name)}: {member.size} bytes is too big for a JSON document")
        try:
            return self._tar.extractfile(member).read()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise ImageError(f"{self.describe(name)}: cannot read ({exc})") from exc

    def opener(self, name: str) -> Callable[[], ContextManager[BinaryIO]]:
        member, path, mode = self._member(name), self.path, self._mode

        # Each opening reopens the archive: a LayerBlob outlives read_archive,
        # and a member is reached by seeking to its data, not by extracting.
        @contextlib.contextmanager
        def open_member() -> Iterator[BinaryIO]:
            with tarfile.open(path, mode) as tar, tar.extractfile(member) as f:
                yield f
        return open_member


class _DirSource:
    """The files of an OCI image layout directory."""

    def __init__(self, path: str) -> None:
        self.path = path

    def describe(self, name: str) -> str:
        return os.path.join(self.path, name)

    def exists(self, name: str) -> bool:
        return os.path.isfile(self.describe(name))

    def size(self, name: str) -> int:
        try:
            return os.stat(self.describe(name)).st_size
        except OSError as exc:
            raise ImageError(f"{self.describe(name)}: {exc.strerror}") from exc

    def read(self, name: str) -> bytes:
        if self.size(name) > _MAX_DOCUMENT:
            raise ImageError(f"{self.describe(name)}: too big for a JSON document")
        try:
            with open(self.describe(name), "rb") as f:
                return f.read()
        except OSError as exc:
            raise ImageError(f"{self.describe(name)}: {exc.strerror}") from exc

    def opener(self, name: str) -> Callable[[], ContextManager[BinaryIO]]:
        path = self.describe(name)
        self.size(name)     # fail now, not at extraction, when it is missing
        return lambda: open(path, "rb")


_Source = _TarSource | _DirSource


# --- JSON documents and descriptors ---------------------------------------------


def _parse(data: bytes, where: str, kind: type = dict) -> Any:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ImageError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(doc, kind):
        raise ImageError(f"{where}: expected a JSON {'object' if kind is dict else 'array'}")
    return doc


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _check_digest(where: str, what: str, expected: str, seen: str) -> None:
    if seen != expected:
        raise ImageError(f"{where}: {what} mismatch: expected {expected}, got {seen}")


def _digest(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        raise ImageError(f"{where}: {value!r} is not a sha256 digest ('sha256:' and 64 hex digits)")
    return value


def _descriptor(value: Any, where: str) -> dict[str, Any]:
    """A content descriptor, checked enough to locate its blob safely."""
    if not isinstance(value, dict):
        raise ImageError(f"{where}: a descriptor must be a JSON object")
    _digest(value.get("digest"), where)
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ImageError(f"{where}: descriptor {value['digest']} has no valid size")
    media_type = value.get("mediaType")
    if media_type is not None and not isinstance(media_type, str):
        raise ImageError(f"{where}: descriptor {value['digest']} has an invalid mediaType")
    return value


def _blob_name(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    return f"blobs/{algorithm}/{hexdigest}"


def _blob(source: _Source, desc: dict[str, Any]) -> bytes:
    """A document blob's bytes, checked against its descriptor."""
    name = _blob_name(desc["digest"])
    data = source.read(name)
    if len(data) != desc["size"]:
        raise ImageError(f"{source.describe(name)}: size mismatch: descriptor says "
                         f"{desc['size']}, blob has {len(data)}")
    _check_digest(source.describe(name), "digest", desc["digest"], _sha256(data))
    return data


def _config(data: bytes, where: str, count: int) -> dict[str, Any]:
    """An image config, whose diff_ids must name `count` layers."""
    config = _parse(data, where)
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise ImageError(f"{where}: the config's rootfs must be {{'type': 'layers', ...}}")
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list):
        raise ImageError(f"{where}: the config has no rootfs.diff_ids list")
    for diff_id in diff_ids:
        _digest(diff_id, f"{where}: rootfs.diff_ids")
    if len(diff_ids) != count:
        raise ImageError(f"{where}: the config lists {len(diff_ids)} diff_ids "
                         f"for {count} layers")
    section = config.get("config")
    if section is not None and not isinstance(section, dict):
        raise ImageError(f"{where}: the config's 'config' must be a JSON object")
    return config


def _unique(names: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


# --- OCI layouts ------------------------------------------------------------------


def _read_oci(source: _Source, tags: dict[str, list[str]]) -> list[ArchiveImage]:
    layout = _parse(source.read("oci-layout"), source.describe("oci-layout"))
    if not isinstance(layout.get("imageLayoutVersion"), str):
        raise ImageError(f"{source.describe('oci-layout')}: no imageLayoutVersion")
    where = source.describe("index.json")
    index = _parse(source.read("index.json"), where)
    entries = index.get("manifests")
    if not isinstance(entries, list):
        raise ImageError(f"{where}: no 'manifests' list")
    images = []
    for number, entry in enumerate(entries):
        desc = _descriptor(entry, f"{where}: manifests[{number}]")
        annotations = desc.get("annotations") or {}
        names = [value for key in NAME_ANNOTATIONS
                 if isinstance(value := annotations.get(key), str)][:1]
        manifest = _manifest(source, desc, 0)
        image = _oci_image(source, manifest, desc["digest"], names)
        images.append(attrs.evolve(image, names=_unique(
            list(image.names) + tags.get(image.config_digest, []))))
    return images


def _manifest(source: _Source, desc: dict[str, Any], depth: int) -> dict[str, Any]:
    """The image manifest `desc` leads to, choosing this host's platform
    in an index."""
    where = source.describe(_blob_name(desc["digest"]))
    doc = _parse(_blob(source, desc), where)
    media_type = desc.get("mediaType") or doc.get("mediaType")
    if media_type is None:
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if media_type in MANIFEST_TYPES:
        return doc
    if media_type not in INDEX_TYPES:
        raise ImageError(f"{where}: unsupported manifest media type {media_type!r}")
    if depth >= _MAX_NESTING:
        raise ImageError(f"{where}: indexes nested more than {_MAX_NESTING} deep")
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise ImageError(f"{where}: no 'manifests' list")
    descs = [_descriptor(e, f"{where}: manifests[{i}]") for i, e in enumerate(entries)]
    return _manifest(source, _platform(descs, where), depth + 1)


def _platform(descs: list[dict[str, Any]], where: str) -> dict[str, Any]:
    """The manifest for linux on this architecture; the only one if there
    is only one (build attestations, which docker adds, do not count)."""
    images = [d for d in descs
              if (d.get("annotations") or {}).get("vnd.docker.reference.type") != "attestation-manifest"]
    if len(images) == 1:
        return images[0]
    arch = host_architecture()
    for desc in images:
        found = desc.get("platform") or {}
        if found.get("os") == "linux" and found.get("architecture") == arch:
            return desc
    offered = sorted({f"{(d.get('platform') or {}).get('os')}/{(d.get('platform') or {}).get('architecture')}"
                      for d in images})
    raise ImageError(f"{where}: no manifest for linux/{arch} (offers {', '.join(offered) or 'none'})")


def _oci_image(source: _Source, manifest: dict[str, Any], digest: str,
               names: list[str]) -> ArchiveImage:
    where = source.describe(_blob_name(digest))
    config_desc = _descriptor(manifest.get("config"), f"{where}: config")
    layer_descs = manifest.get("layers")
    if not isinstance(layer_descs, list):
        raise ImageError(f"{where}: the manifest has no 'layers' list")
    config_name = _blob_name(config_desc["digest"])
    config = _config(_blob(source, config_desc), source.describe(config_name), len(layer_descs))
    blobs = []
    for number, (entry, diff_id) in enumerate(zip(layer_descs, config["rootfs"]["diff_ids"])):
        desc = _descriptor(entry, f"{where}: layers[{number}]")
        media_type = desc.get("mediaType")
        if media_type not in LAYER_TYPES:
            raise ImageError(f"{where}: layers[{number}]: unsupported layer media type {media_type!r}")
        name = _blob_name(desc["digest"])
        if source.size(name) != desc["size"]:
            raise ImageError(f"{source.describe(name)}: size mismatch: descriptor says "
                             f"{desc['size']}, blob has {source.size(name)}")
        blobs.append(LayerBlob(desc["digest"], desc["size"], media_type, diff_id,
                               source.describe(name), source.opener(name)))
    return ArchiveImage(_unique(names), config, config_desc["digest"], tuple(blobs), source.path)


# --- docker-archive -----------------------------------------------------------------


def _docker_entries(source: _TarSource) -> list[dict[str, Any]]:
    where = source.describe("manifest.json")
    entries = _parse(source.read("manifest.json"), where, list)
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise ImageError(f"{where}: [{number}] has no 'Config' file name")
        if not isinstance(entry.get("Layers"), list) or \
                not all(isinstance(layer, str) for layer in entry["Layers"]):
            raise ImageError(f"{where}: [{number}] has no 'Layers' list of file names")
        tags = entry.get("RepoTags") or []
        if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
            raise ImageError(f"{where}: [{number}] has an invalid 'RepoTags'")
    return entries


def _docker_config(source: _TarSource, name: str) -> tuple[bytes, str]:
    """A docker-archive config's bytes and digest.  Docker names the file
    after its digest ("<hex>.json", or "blobs/sha256/<hex>"): when it does,
    the name must match the content."""
    data = source.read(_normalize(name))
    digest = _sha256(data)
    named = _HEX_NAME.fullmatch(_normalize(name))
    if named:
        _check_digest(source.describe(name), "config digest", "sha256:" + named.group(1), digest)
    return data, digest


def _docker_tags(source: _TarSource) -> dict[str, list[str]]:
    """manifest.json's RepoTags by config digest."""
    tags: dict[str, list[str]] = {}
    for entry in _docker_entries(source):
        _, digest = _docker_config(source, entry["Config"])
        tags.setdefault(digest, []).extend(entry.get("RepoTags") or [])
    return tags


def _read_docker(source: _TarSource) -> list[ArchiveImage]:
    images = []
    for entry in _docker_entries(source):
        data, digest = _docker_config(source, entry["Config"])
        config = _config(data, source.describe(entry["Config"]), len(entry["Layers"]))
        blobs = []
        for name, diff_id in zip(entry["Layers"], config["rootfs"]["diff_ids"]):
            name = _normalize(name)
            blobs.append(LayerBlob(None, source.size(name), DOCKER_LAYER, diff_id,
                                   source.describe(name), source.opener(name)))
        images.append(ArchiveImage(_unique(entry.get("RepoTags") or []), config, digest,
                                   tuple(blobs), source.path))
    return images


# --- verified streaming ---------------------------------------------------------------


class _HashingReader(io.RawIOBase):
    """Passes a stream through, hashing (sha256) and counting its bytes."""

    def __init__(self, raw: BinaryIO, on_read: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self._raw = raw
        self._hash = hashlib.sha256()
        self._on_read = on_read
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        if n:
            self._hash.update(data)
            self.size += n
            if self._on_read is not None:
                self._on_read(n)
        return n

    def hexdigest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


def _buffered(raw: _HashingReader | BinaryIO) -> BinaryIO:
    if isinstance(raw, io.RawIOBase):
        return io.BufferedReader(raw, _CHUNK)
    return raw


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
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            remove_tree(entry.path)
        else:
            os.unlink(entry.path)
    with contextlib.suppress(OSError):
        os.removexattr(path, layer_format.OPAQUE_XATTR)


def remove_tree(path: str) -> None:
    """shutil.rmtree that also gets through directories without write or
    search permission (a layer may hold some, and only root ignores them)."""
    if os.geteuid() != 0:
        os.chmod(path, 0o700)
        for top, dirs, _ in os.walk(path):
            for name in dirs:
                child = os.path.join(top, name)
                # os.walk lists symlinks to directories too: never follow one.
                if not os.path.islink(child):
                    with contextlib.suppress(OSError):
                        os.chmod(child, 0o700)
    shutil.rmtree(path)
