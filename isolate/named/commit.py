"""A named container's changes as a new image (``isolate commit``), as
``docker commit`` makes one: the image it was started from, one layer more
holding what the container changed in its root, and its settings (Env,
Cmd, WorkingDir, User) as the new image's defaults.

Only a container whose root is an Overlay of store layers has changes to
commit (``run --image``).  Where they are read from:

* a persistent upper (an Overlay with upper=, from Python): that
  directory, running or stopped (Overlay.diff());
* the tmpfs upper of ``run --image``: it exists only inside the running
  container, so the changes are read from its root (isolate.named.changes);
  a stopped container's went with it.

A running container with a cgroup is paused meanwhile, as docker does by
default, so the layer is one moment of it; one without is read as it runs.

The image enters the store through ImageStore.import_archive, the one way
images are added: an OCI layout is written in a temporary directory with
the new layer as its only real blob.  The layers the image shares with its
base are already in the store, so the import extracts none of them; their
blobs in the layout are empty stand-ins, which the store never reads (and
which would fail its digest check if it did, should a layer have vanished
meanwhile).
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from typing import Any

from isolate.cgroups import interface
from isolate.errors import ImageError, LayerError
from isolate.images.archive import host_architecture
from isolate.images.ref import parse_reference
from isolate.images.store import Image, ImageStore
from isolate.named import changes, inside, rootfs
from isolate.named.cgroup import cgroup_directories
from isolate.named.state import RUNNING, ContainerState, StateDir, StateError
from isolate.overlay import Overlay

__all__ = ["commit", "local_name"]

_LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
_CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
_MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
#: The index annotation whose value names the image in full (as docker save writes it).
_NAME_ANNOTATION = "io.containerd.image.name"
_CHUNK = 1 << 20


def commit(states: StateDir, name: str, store: ImageStore, reference: str, *,
           pause: bool = True) -> Image:
    """Make the image `reference` (local_name() says how a short one is
    written in full) of the container `name`'s changes, in `store`, the
    store its image's layers are in; return it.  `pause`: freeze a running
    container with a cgroup while its changes are read."""
    record = states.load(name)
    overlay = rootfs.overlay_of(record)
    if overlay is None:
        raise StateError(f"container {name!r} has no overlay root (it was not started from an "
                         f"image, as with --image): it has no changes to commit")
    stored = rootfs.stored_layers(overlay)
    if stored is None or os.path.realpath(stored[0]) != os.path.realpath(store.root):
        raise ImageError(f"container {name!r} stacks layers that are not in the image store "
                         f"{store.root}: commit into the store its image came from (--store)")
    full_name = local_name(reference)
    config = _image_config(record, rootfs.image_of(record))
    with tempfile.TemporaryDirectory(prefix="isolate-commit-") as work:
        layer = os.path.join(work, "layer.tar")
        with _paused(record, pause):
            _write_layer(states, record, overlay, work, layer)
        layout = os.path.join(work, "layout")
        _write_layout(layout, config, stored[1], layer, full_name)
        return store.import_archive(layout)


def local_name(reference: str) -> str:
    """The name a committed image gets, in full: a short name is a local
    image's, ``localhost/NAME:TAG`` (as podman names what it commits); a
    name with a registry stays as it is.  No digest: the image has none yet."""
    parsed = parse_reference(reference)
    if parsed.digest:
        raise ImageError(f"{reference!r}: name the image with a tag, not a digest")
    if parsed.short:
        return f"localhost/{parsed.short}:{parsed.tag}"
    return str(parsed)


@contextlib.contextmanager
def _paused(record: ContainerState, pause: bool) -> Iterator[None]:
    """Freeze the running container's cgroup for the block, unless it has
    none, is not running, or is paused already (it stays so)."""
    directories = cgroup_directories(record)
    if not (pause and directories and record.status() == RUNNING
            and not interface.frozen(directories)):
        yield
        return
    cgroup = interface.from_directories(directories)
    cgroup.freeze()
    try:
        yield
    finally:
        cgroup.thaw()


def _write_layer(states: StateDir, record: ContainerState, overlay: Mapping[str, Any],
                 work: str, layer: str) -> None:
    """Write the container's changes as an uncompressed layer tar at `layer`."""
    if overlay.get("upper") is not None:
        Overlay(**overlay).diff(layer)
        return
    if record.status() != RUNNING:
        raise StateError(f"container {record.name!r} has stopped, and its changes were in a "
                         f"tmpfs that went with it: commit a running container (or give an "
                         f"Overlay a persistent upper= to keep them)")
    upper = os.path.join(work, "upper")
    os.mkdir(upper, 0o700)
    lowers = list(overlay["lower"])
    with inside.opened_root(states, record.name) as pinned:
        try:
            changes.write_upper(pinned, lowers, upper)
        except OSError as exc:   # a container not paused may change what is being read
            where = f"{exc.filename}: " if isinstance(exc.filename, str) else ""
            raise LayerError(f"container {record.name!r}: reading its changes: {where}"
                             f"{exc.strerror}") from None
    Overlay(lower=lowers, upper=upper).diff(layer)


def _image_config(record: ContainerState, base: Image | None) -> dict[str, Any]:
    """The new image's config: its base's, with the container's Env, Cmd
    (its argv after the base's Entrypoint), WorkingDir and User."""
    saved = record.config
    section = dict(base.config) if base is not None else {}
    argv = list(record.argv)
    entrypoint = base.entrypoint if base is not None else []
    if entrypoint and argv[:len(entrypoint)] == entrypoint:
        section["Cmd"] = argv[len(entrypoint):]
    else:   # started with a command of its own: it is the whole command now
        section.pop("Entrypoint", None)
        section["Cmd"] = argv
    section["Env"] = [f"{key}={value}" for key, value in saved.get("env", {}).items()]
    section["WorkingDir"] = saved.get("cwd", "/")
    ids = (saved.get("user", 0), saved.get("group", 0))
    # The base's User as it wrote it ("daemon", or none for root) while it
    # still says who runs.
    if ((base.resolve_user() if base is not None else None) or (0, 0)) != ids:
        section["User"] = f"{ids[0]}:{ids[1]}"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "architecture": (base.architecture if base is not None and base.architecture
                         else host_architecture()),
        "os": "linux",
        "created": now,
        "config": section,
        "rootfs": {"type": "layers", "diff_ids": []},   # filled in by _write_layout
    }


def _write_layout(layout: str, config: dict[str, Any], below: list[str], layer: str,
                  full_name: str) -> None:
    """An OCI image layout at `layout` of one image named `full_name`:
    the layers `below` (diff_ids of stored layers, bottom first, as empty
    stand-ins) under the layer tar `layer` (moved in), with `config`."""
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs)
    diff_id = _sha256_file(layer)
    os.rename(layer, os.path.join(blobs, diff_id.removeprefix("sha256:")))
    diff_ids = [*below, diff_id]
    descriptors = []
    for digest in diff_ids:
        path = os.path.join(blobs, digest.removeprefix("sha256:"))
        if not os.path.exists(path):   # a stored layer (see the module's docstring)
            open(path, "xb").close()
        descriptors.append({"mediaType": _LAYER_TYPE, "digest": digest,
                            "size": os.path.getsize(path)})
    config["rootfs"]["diff_ids"] = diff_ids
    manifest = {"schemaVersion": 2, "mediaType": _MANIFEST_TYPE,
                "config": _blob(blobs, json.dumps(config).encode(), _CONFIG_TYPE),
                "layers": descriptors}
    index = {"schemaVersion": 2, "manifests": [
        {**_blob(blobs, json.dumps(manifest).encode(), _MANIFEST_TYPE),
         "annotations": {_NAME_ANNOTATION: full_name}}]}
    with open(os.path.join(layout, "index.json"), "x") as f:
        json.dump(index, f)
    with open(os.path.join(layout, "oci-layout"), "x") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)


def _blob(blobs: str, data: bytes, media_type: str) -> dict[str, Any]:
    """Store the document `data` as a blob; its descriptor."""
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "xb") as f:
        f.write(data)
    return {"mediaType": media_type, "digest": "sha256:" + digest, "size": len(data)}


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()
