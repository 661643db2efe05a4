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
through isolate.layers.apply into a directory: the sha256 of its bytes as stored
against its descriptor's digest (OCI only: a docker-archive records none)
and the sha256 of its uncompressed tar against the config's
``rootfs.diff_ids`` entry, which is what identifies a layer in both formats.

An archive is untrusted, and small ones can describe a lot: each document
is read and parsed once however often the archive refers to it, an archive
lists at most `MAX_IMAGES` images and its documents hold at most
`MAX_JSON_BYTES` in all.
"""
from __future__ import annotations

import os
import platform
import re
import tarfile
from typing import Any

import attrs

from isolate.images import manifests
from isolate.images.archive_files import Files, LayoutFiles, TarFiles, normalize, tar_mode
from isolate.errors import ImageError
from isolate.images.manifests import check_size, descriptor, field, required
from isolate.images.ref import is_reference
from isolate.images.layer_blob import DOCKER_LAYER, LayerBlob

__all__ = ["ArchiveImage", "LayerBlob", "check_platform", "host_architecture", "read_archive"]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"

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

#: The most images an archive may list (real ones list a few).
MAX_IMAGES = 256
#: The most bytes of JSON documents read from one archive, each counted once.
MAX_JSON_BYTES = 64 << 20

_HEX_NAME = re.compile(r"(?:.*/)?([0-9a-f]{64})(?:\.json)?")

#: Nested indexes followed at most (real images nest one deep).
_MAX_NESTING = 4

_MACHINES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
             "armv7l": "arm", "armv6l": "arm", "i386": "386", "i686": "386"}


def host_architecture() -> str:
    """This machine's architecture as OCI platforms spell it ("amd64")."""
    machine = platform.machine()
    return _MACHINES.get(machine, machine)


@attrs.frozen
class ArchiveImage:
    """One image found in an archive.

    names: its references ("busybox:latest"), maybe none.
    config: the whole image config JSON (architecture, config, rootfs...),
        checked; images of an archive sharing a config share this dict.
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
        return _Archive(LayoutFiles(path)).read_oci({})
    try:
        tar = tarfile.open(path, tar_mode(path))
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ImageError(f"{path}: not a tar archive ({exc})") from exc
    with tar:
        archive = _Archive(TarFiles(path, tar))
        if archive.files.exists("index.json"):
            tags = archive.docker_tags() if archive.files.exists("manifest.json") else {}
            return archive.read_oci(tags)
        if archive.files.exists("manifest.json"):
            return archive.read_docker()
    raise ImageError(f"{path}: neither an OCI image layout (no index.json) "
                     "nor a docker archive (no manifest.json)")


def check_platform(image: ArchiveImage) -> None:
    """Raise ImageError unless `image` is made for this host: linux on its
    architecture (anything else fails to run with ENOEXEC)."""
    found = f"{image.config.get('os')}/{image.config.get('architecture')}"
    host = f"linux/{host_architecture()}"
    if found != host:
        raise ImageError(f"{image.source}: image {image.config_digest} is for {found!r}, "
                         f"this host is {host}")


@attrs.frozen
class _Document:
    """A JSON document read from an archive: parsed, and its bytes' digest
    and length."""

    doc: Any
    digest: str
    size: int


class _Archive:
    """One archive being read: each document is read from its files once,
    within the archive's budget, and each image built once."""

    def __init__(self, files: Files) -> None:
        self.files = files
        self._documents: dict[str, _Document] = {}
        self._configs: set[str] = set()
        self._images: dict[Any, ArchiveImage] = {}
        self._json_bytes = 0

    # --- documents ---------------------------------------------------------------

    def document(self, name: str, kind: type = dict) -> _Document:
        """The JSON document `name`, which must be a `kind`."""
        found = self._documents.get(name)
        if found is None:
            data = self.files.read(name)
            self._json_bytes += len(data)
            if self._json_bytes > MAX_JSON_BYTES:
                raise ImageError(f"{self.files.path}: more than {MAX_JSON_BYTES >> 20} MB "
                                 "of JSON documents")
            found = _Document(manifests.parse(data, self.files.describe(name), kind),
                              manifests.sha256(data), len(data))
            self._documents[name] = found
        return found

    def blob(self, desc: dict[str, Any]) -> dict[str, Any]:
        """A document blob, checked against its descriptor."""
        name = _blob_name(desc["digest"])
        found = self.document(name)
        check_size(self.files.describe(name), desc["size"], found.size)
        manifests.check_digest(self.files.describe(name), "digest", desc["digest"], found.digest)
        return found.doc

    def config(self, name: str, count: int) -> tuple[dict[str, Any], list[str]]:
        """The image config `name` (checked once) and its diff_ids, which
        must name `count` layers."""
        where = self.files.describe(name)
        doc = self.document(name).doc
        if name not in self._configs:
            manifests.config(doc, where)
            self._configs.add(name)
        return doc, manifests.diff_ids(doc, where, count)

    def entries(self, name: str, doc: dict[str, Any] | list[Any]) -> list[Any]:
        """The list of images `doc` (the document `name`) holds."""
        entries = doc if isinstance(doc, list) else required(doc, "manifests", list,
                                                               self.files.describe(name))
        if len(entries) > MAX_IMAGES:
            raise ImageError(f"{self.files.describe(name)}: lists {len(entries)} images; "
                             f"an archive may hold at most {MAX_IMAGES}")
        return entries

    # --- OCI layouts ---------------------------------------------------------------

    def read_oci(self, tags: dict[str, list[str]]) -> list[ArchiveImage]:
        layout = self.document("oci-layout").doc
        required(layout, "imageLayoutVersion", str, self.files.describe("oci-layout"))
        where = self.files.describe("index.json")
        images = []
        for number, entry in enumerate(self.entries("index.json", self.document("index.json").doc)):
            desc = descriptor(entry, f"{where}: manifests[{number}]")
            names = [value for key in NAME_ANNOTATIONS
                     if (value := manifests.annotation(desc, key)) is not None][:1]
            image = self.oci_image(desc)
            images.append(attrs.evolve(image, names=_names(
                names + tags.get(image.config_digest, []))))
        return images

    def oci_image(self, desc: dict[str, Any]) -> ArchiveImage:
        """The image an index entry leads to (unnamed)."""
        key = ("oci", desc["digest"], desc["size"], desc.get("mediaType"))
        if key not in self._images:
            digest = desc["digest"]
            self._images[key] = self.oci_manifest_image(self.manifest(desc, 0), digest)
        return self._images[key]

    def manifest(self, desc: dict[str, Any], depth: int) -> dict[str, Any]:
        """The image manifest `desc` leads to, choosing this host's platform
        in an index."""
        where = self.files.describe(_blob_name(desc["digest"]))
        doc = self.blob(desc)
        media_type = desc.get("mediaType") or field(doc, "mediaType", str, where)
        if media_type is None:
            media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
        if media_type in MANIFEST_TYPES:
            return doc
        if media_type not in INDEX_TYPES:
            raise ImageError(f"{where}: unsupported manifest media type {media_type!r}")
        if depth >= _MAX_NESTING:
            raise ImageError(f"{where}: indexes nested more than {_MAX_NESTING} deep")
        entries = required(doc, "manifests", list, where)
        descs = [descriptor(e, f"{where}: manifests[{i}]") for i, e in enumerate(entries)]
        return self.manifest(_platform(descs, where), depth + 1)

    def oci_manifest_image(self, manifest: dict[str, Any], digest: str) -> ArchiveImage:
        where = self.files.describe(_blob_name(digest))
        config_desc = descriptor(manifest.get("config"), f"{where}: config")
        layer_descs = required(manifest, "layers", list, where)
        self.blob(config_desc)
        config, diff_ids = self.config(_blob_name(config_desc["digest"]), len(layer_descs))
        blobs = []
        for number, (entry, diff_id) in enumerate(zip(layer_descs, diff_ids)):
            desc = descriptor(entry, f"{where}: layers[{number}]")
            media_type = desc.get("mediaType")
            if media_type not in LAYER_TYPES:
                raise ImageError(f"{where}: layers[{number}]: unsupported layer media type "
                                 f"{media_type!r}")
            name = _blob_name(desc["digest"])
            check_size(self.files.describe(name), desc["size"], self.files.size(name))
            blobs.append(LayerBlob(desc["digest"], desc["size"], media_type, diff_id,
                                   self.files.describe(name), self.files.opener(name)))
        return ArchiveImage((), config, config_desc["digest"], tuple(blobs), self.files.path)

    # --- docker-archive ---------------------------------------------------------------

    def docker_entries(self) -> list[dict[str, Any]]:
        where = self.files.describe("manifest.json")
        entries = self.entries("manifest.json", self.document("manifest.json", list).doc)
        for number, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ImageError(f"{where}: [{number}] must be a JSON object")
            required(entry, "Config", str, f"{where}: [{number}]")
            if manifests.strings(entry, "Layers", f"{where}: [{number}]") is None:
                raise ImageError(f"{where}: [{number}] has no 'Layers' list of file names")
            manifests.strings(entry, "RepoTags", f"{where}: [{number}]")
        return entries

    def docker_config(self, name: str) -> str:
        """A docker-archive config's digest.  Docker names the file after
        its digest ("<hex>.json", or "blobs/sha256/<hex>"): when it does,
        the name must match the content."""
        found = self.document(normalize(name))
        named = _HEX_NAME.fullmatch(normalize(name))
        if named:
            manifests.check_digest(self.files.describe(name), "config digest",
                                    "sha256:" + named.group(1), found.digest)
        return found.digest

    def docker_tags(self) -> dict[str, list[str]]:
        """manifest.json's RepoTags by config digest."""
        tags: dict[str, list[str]] = {}
        for entry in self.docker_entries():
            tags.setdefault(self.docker_config(entry["Config"]), []).extend(entry.get("RepoTags") or [])
        return tags

    def read_docker(self) -> list[ArchiveImage]:
        images = []
        for entry in self.docker_entries():
            image = self.docker_image(entry["Config"], tuple(entry["Layers"]))
            images.append(attrs.evolve(image, names=_names(entry.get("RepoTags") or [])))
        return images

    def docker_image(self, config_name: str, layers: tuple[str, ...]) -> ArchiveImage:
        """The image of a manifest.json entry (unnamed)."""
        key = ("docker", config_name, layers)
        if key not in self._images:
            digest = self.docker_config(config_name)
            config, diff_ids = self.config(normalize(config_name), len(layers))
            blobs = []
            for name, diff_id in zip(layers, diff_ids):
                name = normalize(name)
                blobs.append(LayerBlob(None, self.files.size(name), DOCKER_LAYER, diff_id,
                                       self.files.describe(name), self.files.opener(name)))
            self._images[key] = ArchiveImage((), config, digest, tuple(blobs), self.files.path)
        return self._images[key]


def _blob_name(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    return f"blobs/{algorithm}/{hexdigest}"


def _names(candidates: list[str]) -> tuple[str, ...]:
    """An archive's names for an image, each once; text that is no image
    reference (a control character in it, say) is no name."""
    return tuple(dict.fromkeys(name for name in candidates if is_reference(name)))


def _platform(descs: list[dict[str, Any]], where: str) -> dict[str, Any]:
    """The manifest for linux on this architecture; the only one if there
    is only one (build attestations, which docker adds, do not count)."""
    images = [d for d in descs
              if manifests.annotation(d, "vnd.docker.reference.type") != "attestation-manifest"]
    if len(images) == 1:
        return images[0]
    arch = host_architecture()
    offered = []
    for number, desc in enumerate(images):
        found = desc.get("platform") or {}
        os_name = field(found, "os", str, f"{where}: manifests[{number}].platform")
        architecture = field(found, "architecture", str, f"{where}: manifests[{number}].platform")
        if (os_name, architecture) == ("linux", arch):
            return desc
        offered.append(f"{os_name}/{architecture}")
    raise ImageError(f"{where}: no manifest for linux/{arch} "
                     f"(offers {', '.join(sorted(set(offered))) or 'none'})")
