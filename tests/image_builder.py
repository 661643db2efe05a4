"""Build container image archives for tests, without a network.

Layers are lists of tar entries made by `file`, `directory`, `symlink`,
`hardlink`, `whiteout`, `opaque` (or `raw` for anything else), optionally
wrapped in `Layer(entries, compression)`; a config is the image config's
"config" section (Env, Cmd, Entrypoint, WorkingDir, User).

    layers = busybox_layers() + [[file("app/hello.txt", b"hi\\n")]]
    build_docker_archive(tmp_path / "img.tar", layers, {"Cmd": ["sh"]})
    build_oci_archive(tmp_path / "img.oci.tar", layers, compression="zstd")
    build_oci_layout(tmp_path / "layout", layers, ref_name="app:1")

Every builder returns a `Built` with the digests it wrote, so tests can
compare; `corrupt=` writes one digest wrong on purpose.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Iterable, Sequence
from typing import Any, Union

import zstandard

from isolate.images.archive import host_architecture

#: Fixed mtime for every entry, so a layer's bytes depend on its entries only.
MTIME = 1_700_000_000

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = {"none": "application/vnd.oci.image.layer.v1.tar",
             "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
             "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

#: What `corrupt=` may spoil: the layer blob's descriptor digest (OCI), the
#: config's diff_id, the config's digest (OCI descriptor; docker: the
#: config file's name), or a byte of the stored layer blob itself.
CORRUPTIONS = ("blob_digest", "diff_id", "config_digest", "blob_data")

BUSYBOX_APPLETS = ("sh", "ls", "cat", "echo", "id", "env", "pwd")
PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "daemon:x:1:1:daemon:/usr/sbin:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n")
GROUP = "root:x:0:\ndaemon:x:1:\nnogroup:x:65534:\n"


# --- tar entries --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Entry:
    """One tar entry: its header and, for a regular file, its content."""

    info: tarfile.TarInfo
    data: bytes = b""


def _info(path: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.mtime = MTIME
    return info


def file(path: str, content: bytes | str = b"", mode: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
    data = content.encode() if isinstance(content, str) else content
    info = _info(path, tarfile.REGTYPE, mode, uid, gid)
    info.size = len(data)
    return Entry(info, data)


def directory(path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(_info(path.rstrip("/"), tarfile.DIRTYPE, mode, uid, gid))


def symlink(path: str, target: str) -> Entry:
    info = _info(path, tarfile.SYMTYPE, 0o777)
    info.linkname = target
    return Entry(info)


def hardlink(path: str, target: str) -> Entry:
    info = _info(path, tarfile.LNKTYPE, 0o644)
    info.linkname = target
    return Entry(info)


def whiteout(path: str) -> Entry:
    """Deletes `path` of the layers below (an empty ``.wh.NAME`` file)."""
    parent, _, name = path.rstrip("/").rpartition("/")
    return file(f"{parent}/.wh.{name}" if parent else f".wh.{name}", mode=0)


def opaque(path: str) -> Entry:
    """Hides what the layers below hold in directory `path`."""
    return file(f"{path.rstrip('/')}/.wh..wh..opq", mode=0)


def sparse(path: str, extents: Sequence[tuple[int, bytes]], size: int, version: str = "1.0") -> Entry:
    """A sparse regular file of `size` bytes holding only `extents`
    ((offset, data) pairs), in the PAX sparse format 0.1 (map in a PAX
    record) or 1.0 (map in the data area), as GNU tar writes them."""
    data = b"".join(chunk for _, chunk in extents)
    numbers = [n for offset, chunk in extents for n in (offset, len(chunk))]
    if version == "0.1":
        entry = file(path, data)
        entry.info.pax_headers = {"GNU.sparse.size": str(size), "GNU.sparse.numblocks": str(len(extents)),
                                  "GNU.sparse.map": ",".join(map(str, numbers))}
        return entry
    sparse_map = "".join(f"{n}\n" for n in [len(extents)] + numbers).encode()
    sparse_map += b"\0" * (-len(sparse_map) % tarfile.BLOCKSIZE)
    entry = file(f"GNUSparseFile.0/{path}", sparse_map + data)
    entry.info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                              "GNU.sparse.name": path, "GNU.sparse.realsize": str(size)}
    return entry


def device(path: str, major: int, minor: int, kind: bytes = tarfile.CHRTYPE) -> Entry:
    """A character (or block) device node, as debootstrap's /dev holds."""
    info = _info(path, kind, 0o666)
    info.devmajor, info.devminor = major, minor
    return Entry(info)


def raw(info: tarfile.TarInfo, data: bytes = b"") -> Entry:
    """Any entry, written exactly as given (no parent directories added):
    for malicious layers ("../escape")."""
    return Entry(info, data)


@dataclasses.dataclass(frozen=True)
class Layer:
    """A layer's entries and how its blob is compressed ("none", "gzip",
    "zstd"); a plain list of entries takes the builder's `compression`."""

    entries: Sequence[Entry]
    compression: str | None = None


LayerSpec = Union[Layer, Sequence[Entry]]


def layer_tar(entries: Iterable[Entry], *, add_parents: bool = True) -> bytes:
    """An uncompressed layer tar; missing parent directories are added
    before their first child (as real layers have them)."""
    out = io.BytesIO()
    seen: set[str] = set()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            name = entry.info.name
            if add_parents and not name.startswith(("/", "../")):
                parts = name.split("/")[:-1]
                for i in range(len(parts)):
                    parent = "/".join(parts[: i + 1])
                    if parent and parent not in seen:
                        seen.add(parent)
                        tar.addfile(directory(parent).info)
            seen.add(name)
            tar.addfile(entry.info, io.BytesIO(entry.data) if entry.info.isreg() else None)
    return out.getvalue()


def compress(data: bytes, compression: str) -> bytes:
    if compression == "none":
        return data
    if compression == "gzip":
        return gzip.compress(data, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    raise ValueError(f"unknown compression {compression!r}")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _wrong(digest: str) -> str:
    return sha256(b"corrupt " + digest.encode())


# --- images -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """Another image for an archive that holds several (`more=`)."""

    layers: Sequence[LayerSpec]
    config: dict[str, Any] | None = None
    names: Sequence[str] = ()


@dataclasses.dataclass
class Built:
    """What a builder wrote for one image: its id, its layers' diff_ids and
    stored blobs' digests and sizes (bottom first), as the archive has them
    (so a corrupted one is the wrong value), and the other images (more=)."""

    path: str
    config_digest: str
    diff_ids: list[str]
    blob_digests: list[str]
    blob_sizes: list[int]
    names: list[str]
    others: list["Built"] = dataclasses.field(default_factory=list)

    @property
    def id(self) -> str:
        return self.config_digest


@dataclasses.dataclass
class _Blobs:
    """One image's documents and blobs, before they are laid out."""

    config: bytes
    config_digest: str          # as the archive states it
    layers: list[bytes]         # as stored
    layer_digests: list[str]    # as the archive states them
    layer_types: list[str]
    diff_ids: list[str]
    names: list[str]




def image_config(config: dict[str, Any] | None, diff_ids: list[str],
                 architecture: str | None = None) -> dict[str, Any]:
    """A whole image config around its "config" section (for this host's
    architecture unless told another)."""
    return {
        "architecture": architecture or host_architecture(),
        "os": "linux",
        "config": dict(config or {}),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"layer {i}"} for i in range(len(diff_ids))],
    }


def _blobs(layers: Sequence[LayerSpec], config: dict[str, Any] | None, names: Sequence[str],
           compression: str, corrupt: str | None, corrupt_layer: int,
           docker_types: bool = False, architecture: str | None = None) -> _Blobs:
    if corrupt is not None and corrupt not in CORRUPTIONS:
        raise ValueError(f"corrupt must be one of {CORRUPTIONS}")
    specs = [spec if isinstance(spec, Layer) else Layer(spec) for spec in layers]
    plain = [layer_tar(spec.entries) for spec in specs]
    kinds = [spec.compression or compression for spec in specs]
    stored = [compress(data, kind) for data, kind in zip(plain, kinds)]
    diff_ids = [sha256(data) for data in plain]
    digests = [sha256(data) for data in stored]
    types = [DOCKER_LAYER_GZIP if docker_types else OCI_LAYER[kind] for kind in kinds]
    if corrupt == "diff_id":
        diff_ids[corrupt_layer] = _wrong(diff_ids[corrupt_layer])
    if corrupt == "blob_digest":
        digests[corrupt_layer] = _wrong(digests[corrupt_layer])
    if corrupt == "blob_data":
        data = bytearray(stored[corrupt_layer])
        data[len(data) // 2] ^= 0xFF
        stored[corrupt_layer] = bytes(data)
    config_bytes = json.dumps(image_config(config, diff_ids, architecture), sort_keys=True).encode()
    config_digest = sha256(config_bytes)
    if corrupt == "config_digest":
        config_digest = _wrong(config_digest)
    return _Blobs(config_bytes, config_digest, stored, digests, types, diff_ids, list(names))


def _built(path: str, blobs: _Blobs, others: list[Built] | None = None) -> Built:
    return Built(path, blobs.config_digest, blobs.diff_ids, blobs.layer_digests,
                 [len(data) for data in blobs.layers], blobs.names, others or [])


def _hex(digest: str) -> str:
    return digest.split(":", 1)[1]


def _json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True).encode()


def _oci_files(images: list[_Blobs], *, nested: bool = False, docker_types: bool = False,
               docker_names: bool = False) -> dict[str, bytes]:
    """The files of an OCI image layout holding `images`."""
    files: dict[str, bytes] = {"oci-layout": _json({"imageLayoutVersion": "1.0.0"})}
    entries = []
    for blobs in images:
        for digest, data in zip(blobs.layer_digests, blobs.layers):
            files[f"blobs/sha256/{_hex(digest)}"] = data
        files[f"blobs/sha256/{_hex(blobs.config_digest)}"] = blobs.config
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST if docker_types else OCI_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG if docker_types else OCI_CONFIG,
                       "digest": blobs.config_digest, "size": len(blobs.config)},
            "layers": [{"mediaType": kind, "digest": digest, "size": len(data)}
                       for kind, digest, data in zip(blobs.layer_types, blobs.layer_digests, blobs.layers)],
        }
        manifest_bytes = _json(manifest)
        descriptor: dict[str, Any] = {"mediaType": manifest["mediaType"], "digest": sha256(manifest_bytes),
                                      "size": len(manifest_bytes)}
        files[f"blobs/sha256/{_hex(descriptor['digest'])}"] = manifest_bytes
        if nested:
            # A multi-platform index: this host's manifest, another
            # architecture's (whose blob is absent: it must not be read) and
            # a build attestation, as docker buildx adds.
            other = "s390x" if host_architecture() != "s390x" else "amd64"
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
                {**descriptor, "digest": sha256(b"elsewhere"),
                 "platform": {"os": "linux", "architecture": other}},
                {**descriptor, "platform": {"os": "linux", "architecture": host_architecture()}},
                {**descriptor, "digest": sha256(b"attestation"),
                 "platform": {"os": "unknown", "architecture": "unknown"},
                 "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
            ]}
            index_bytes = _json(index)
            descriptor = {"mediaType": OCI_INDEX, "digest": sha256(index_bytes), "size": len(index_bytes)}
            files[f"blobs/sha256/{_hex(descriptor['digest'])}"] = index_bytes
        for name in blobs.names or [None]:
            entry = dict(descriptor)
            if name is not None and docker_names:
                # What docker save writes: the full name in containerd's
                # annotation, only the tag in the OCI one.
                full = name if "/" in name else "docker.io/library/" + name
                entry["annotations"] = {"io.containerd.image.name": full,
                                        "org.opencontainers.image.ref.name": name.rpartition(":")[2]}
            elif name is not None:
                entry["annotations"] = {"org.opencontainers.image.ref.name": name}
            entries.append(entry)
    files["index.json"] = _json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    return files


def _write_dir(directory: str | os.PathLike, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = os.path.join(directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def write_tar(path: str | os.PathLike, files: dict[str, bytes | tuple[str, str]],
               compression: str = "none") -> None:
    """A tar of `files`; a value ("symlink", target) is a symlink member."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for name, data in files.items():
            parts = name.split("/")[:-1]
            for i in range(len(parts)):
                parent = "/".join(parts[: i + 1])
                if parent not in dirs:
                    dirs.add(parent)
                    tar.addfile(directory(parent).info)
            if isinstance(data, tuple):
                tar.addfile(symlink(name, data[1]).info)
            else:
                tar.addfile(file(name, data).info, io.BytesIO(data))
    with open(path, "wb") as f:
        f.write(compress(out.getvalue(), compression))


def _all_blobs(layers: Sequence[LayerSpec], config: dict[str, Any] | None, names: Sequence[str],
               more: Sequence[ImageSpec], compression: str, corrupt: str | None, corrupt_layer: int,
               docker_types: bool = False, architecture: str | None = None) -> list[_Blobs]:
    """The blobs of the first image and of `more`; `corrupt` and
    `architecture` apply to the first only."""
    specs = [ImageSpec(layers, config, names), *more]
    return [_blobs(spec.layers, spec.config, spec.names, compression,
                   corrupt if number == 0 else None, corrupt_layer, docker_types,
                   architecture if number == 0 else None)
            for number, spec in enumerate(specs)]


def _result(path: str | os.PathLike, images: list[_Blobs]) -> Built:
    """The first image's Built, the others in its `others`."""
    built = [_built(os.fspath(path), blobs) for blobs in images]
    built[0].others = built[1:]
    return built[0]


def build_docker_archive(path: str | os.PathLike, layers: Sequence[LayerSpec],
                         config: dict[str, Any] | None = None,
                         repo_tags: Sequence[str] = ("busybox:latest",), *,
                         compression: str = "none", more: Sequence[ImageSpec] = (),
                         corrupt: str | None = None, corrupt_layer: int = -1,
                         link_shared: bool = False, with_oci: bool = False,
                         architecture: str | None = None) -> Built:
    """A `docker save` archive: manifest.json, "<config hex>.json" and
    "<layer hex>/layer.tar" per layer (shared layers written once, or with
    `link_shared` as symlinks to the first copy, as old docker did).
    `with_oci`: the Docker 25+ layout instead, an OCI layout (blobs/,
    index.json with docker's annotations) plus a manifest.json naming
    those blobs.  `corrupt` and `architecture` (default: this host's)
    apply to the first image only."""
    if corrupt == "blob_digest" and not with_oci:
        raise ValueError("a docker-archive states no layer blob digests to corrupt")
    images = _all_blobs(layers, config, repo_tags, more, compression, corrupt, corrupt_layer,
                        architecture=architecture)
    if with_oci:
        files: dict[str, Any] = _oci_files(images, docker_names=True)
    else:
        files = {}
    manifest = []
    for blobs in images:
        if with_oci:
            config_name = f"blobs/sha256/{_hex(blobs.config_digest)}"
            layer_names = [f"blobs/sha256/{_hex(d)}" for d in blobs.layer_digests]
        else:
            config_name = f"{_hex(blobs.config_digest)}.json"
            files[config_name] = blobs.config
            layer_names = []
            for diff_id, data in zip(blobs.diff_ids, blobs.layers):
                name = f"{_hex(sha256(data))}/layer.tar"
                if name in files:
                    if link_shared:
                        own = f"{_hex(sha256(blobs.config + data))}/layer.tar"
                        files[own] = ("symlink", f"../{name}")
                        name = own
                else:
                    files[name] = data
                layer_names.append(name)
        manifest.append({"Config": config_name, "RepoTags": blobs.names or None, "Layers": layer_names})
    files["manifest.json"] = _json(manifest)
    write_tar(path, files)
    return _result(path, images)


def build_oci_layout(directory_path: str | os.PathLike, layers: Sequence[LayerSpec],
                     config: dict[str, Any] | None = None, ref_name: str | None = "busybox:latest", *,
                     compression: str = "none", more: Sequence[ImageSpec] = (),
                     corrupt: str | None = None, corrupt_layer: int = -1,
                     nested: bool = False, docker_types: bool = False,
                     architecture: str | None = None) -> Built:
    """An OCI image layout directory (created if missing).  `nested`: the
    index points to a multi-platform index; `docker_types`: Docker's
    manifest, config and (gzip) layer media types; `architecture`: the
    first image's (default: this host's)."""
    images = _oci_blobs(layers, config, ref_name, more, compression, corrupt, corrupt_layer,
                        docker_types, architecture)
    os.makedirs(directory_path, exist_ok=True)
    _write_dir(directory_path, _oci_files(images, nested=nested, docker_types=docker_types))
    return _result(directory_path, images)


def build_oci_archive(path: str | os.PathLike, layers: Sequence[LayerSpec],
                      config: dict[str, Any] | None = None, ref_name: str | None = "busybox:latest", *,
                      compression: str = "none", more: Sequence[ImageSpec] = (),
                      corrupt: str | None = None, corrupt_layer: int = -1,
                      nested: bool = False, docker_types: bool = False,
                      outer_compression: str = "none", architecture: str | None = None) -> Built:
    """An oci-archive: a tar (gzip-compressed with outer_compression="gzip")
    of an OCI image layout; arguments as build_oci_layout."""
    images = _oci_blobs(layers, config, ref_name, more, compression, corrupt, corrupt_layer,
                        docker_types, architecture)
    write_tar(path, _oci_files(images, nested=nested, docker_types=docker_types), outer_compression)
    return _result(path, images)


def _oci_blobs(layers: Sequence[LayerSpec], config: dict[str, Any] | None, ref_name: str | None,
               more: Sequence[ImageSpec], compression: str, corrupt: str | None, corrupt_layer: int,
               docker_types: bool, architecture: str | None) -> list[_Blobs]:
    """The blobs of an OCI layout's images (docker media types: gzip layers)."""
    return _all_blobs(layers, config, [ref_name] if ref_name else [], more,
                      "gzip" if docker_types else compression, corrupt, corrupt_layer,
                      docker_types, architecture)


BUILDERS = {"docker-archive": build_docker_archive, "oci-archive": build_oci_archive,
            "oci-layout": build_oci_layout}


def build(kind: str, path: str | os.PathLike, layers: Sequence[LayerSpec],
          config: dict[str, Any] | None = None, name: str | None = "busybox:latest", **options: Any) -> Built:
    """build_docker_archive, build_oci_archive or build_oci_layout by name."""
    if kind == "docker-archive":
        return build_docker_archive(path, layers, config, [name] if name else [], **options)
    return BUILDERS[kind](path, layers, config, name, **options)


# --- busybox -------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _busybox() -> bytes:
    path = shutil.which("busybox")
    if path is None:
        raise FileNotFoundError("busybox is not installed (Debian: busybox-static)")
    with open(path, "rb") as f:
        return f.read()


def busybox_layers() -> list[Layer]:
    """One base layer: a static busybox at bin/busybox with symlinks for
    sh, ls, cat, echo, id, env and pwd, and proc, dev, tmp, sys, root and
    etc (passwd: root, daemon, nobody; group: root, daemon, nogroup)."""
    entries = [directory("bin"), file("bin/busybox", _busybox(), mode=0o755)]
    entries += [symlink(f"bin/{applet}", "busybox") for applet in BUSYBOX_APPLETS]
    entries += [directory("proc", 0o555), directory("dev"), directory("tmp", 0o1777),
                directory("sys", 0o555), directory("root", 0o700), directory("etc"),
                file("etc/passwd", PASSWD), file("etc/group", GROUP)]
    return [Layer(entries, "none")]


def busybox_config(**overrides: Any) -> dict[str, Any]:
    """A config section for busybox images: PATH and Cmd ["sh"]."""
    return {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"], **overrides}
