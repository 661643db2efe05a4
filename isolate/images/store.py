"""ImageStore: container images imported from archives, kept as extracted
layer directories ready to stack with an Overlay.

    store = ImageStore("/var/lib/isolate")
    image = store.import_archive("busybox.tar")
    isolate.run(image.command(), rootfs=..., ...)   # through image.overlay()

Layout of a store's root directory::

    layers/sha256/<diff_id hex>/   one extracted layer, named by the sha256 of
                                   its uncompressed tar: a layer that several
                                   images share is stored once
    images/<config hex>.json       one record per image: its names, its id
                                   (config digest), its diff_ids bottom first,
                                   the whole config JSON, when it was imported
                                   and its layers' size
    tmp/import-XXXX/               one import in progress: "needs" (the diff_ids
                                   it will reference) and its layers being
                                   extracted; flocked by the importer
    tmp/trash-XXXX/                layers being deleted, flocked by the deleter
    tmp/record-XXXX.json           a record being written (under the lock)
    leases/<uuid>.json             a detached container's lease on its layers
                                   (below), kept while its state record exists
    lock                           flock(2)ed (exclusive) around every change to
                                   images/, every deletion from layers/ and
                                   every creation in tmp/ and leases/

Concurrency: any number of processes may import and remove at once.
- A layer is extracted without the lock (the slow part) into the import's
  directory in tmp/, verified, then renamed into layers/: rename(2) is
  atomic and fails when another importer got there first (ours is then
  thrown away), so a layers/ entry is always complete.
- Garbage collection (after a remove or a failed import) holds the lock and
  deletes a layer only when no record references it, no import in
  progress needs it and no container uses it (below); it renames the layer
  into tmp/ and deletes it after releasing the lock.
- An import in progress is a lease: before looking at layers/, the importer
  creates tmp/import-XXXX/ with its "needs" file and takes an flock on the
  directory, all with the lock held.  So from then on no collection deletes
  a layer it needs, whether it found it there or stored it itself, and
  the record it writes (with the lock held again) only references layers
  that are present.  (Checking under the lock and retrying instead would
  let a steady stream of removes starve an import.)
- A tmp/ entry whose flock a collection can take was left by a process
  that died: the collection moves it into its trash, deleted unlocked
  too, and its lease goes with it.

Layers in use: removing an image must not delete the layers of its
running containers.  The protocol, between a container and a collection:
- A container whose Overlay stacks store layers holds, for its whole life,
  each lower directory open (``os.open(layer, O_RDONLY | O_DIRECTORY |
  O_CLOEXEC)``) with a shared flock on it (``fcntl.flock(fd, LOCK_SH)``).
- Before a collection moves a layer out of layers/, it opens the layer
  directory the same way and tries ``flock(LOCK_EX | LOCK_NB)``.  When
  that fails (EWOULDBLOCK) the layer stays where it is, referenced by no
  record: a later collection (`ImageStore.remove`, `ImageStore.gc`)
  deletes it once no container holds it.
- A collection may move a layer between a container's open() and its
  flock(): after locking, the container checks that the layer path still
  names the directory it holds (same st_dev and st_ino); if not, the
  image was removed meanwhile and the container cannot start.

A detached container (``isolate run -d``) outlives the process that holds
those flocks, so it holds its layers with a lease instead
(isolate.named.layer_leases), as Docker keeps an image's layers until its last
container is removed:
- Before it starts, a lease file in leases/ names the container's state
  record (the "holder") and its diff_ids; the starter flocks it until the
  record is written.  Taking it (with the lock held) checks every layer is
  still there.
- A collection spares every layer a lease names while its holder file
  exists or its starter holds its flock; a lease with neither goes (the
  container's record was removed, or went with a reboot's /run).
- ``isolate rm`` drops the lease and collects the layers only it kept.
"""
from __future__ import annotations

import datetime
import errno
import os
import re
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from isolate.errors import ImageError
from isolate.images.archive import ArchiveImage, LayerBlob, check_platform, read_archive
from isolate.images.budget import DEFAULT_MAX_RATIO, DEFAULT_RATIO_FLOOR, ExpansionLimits, ImportBudget
from isolate.images.leases import WorkDir, collect_layer, drop_lease, leased, locked, scan, write_lease
from isolate.images.records import Record, Records
from isolate.images.ref import (Reference, canonical_name, is_reference, matches, names_include,
                                parse_reference)
from isolate.images.user import home_dir, resolve_user
from isolate.layers.apply import remove_tree
from isolate.overlay import MAX_LOWERS, Overlay

__all__ = ["Image", "ImageStore", "canonical_name"]


def _env(entries: Any) -> dict[str, str]:
    env = {}
    for entry in entries or ():
        key, _, value = str(entry).partition("=")
        env[key] = value
    return env


@attrs.frozen
class Image:
    """An image in an ImageStore.

    id: the config's digest ("sha256:...").
    names: its references ("busybox:latest").
    layers: the layer directories, bottom first.
    config: the image config's "config" section (Env, Cmd, Entrypoint,
        WorkingDir, User...), as the image gives it.
    diff_ids: the layers' digests, bottom first.
    created: the config's "created" time (RFC 3339, as the image gives
        it), "" when it has none that parses.
    imported: when the store got it (seconds since the epoch).
    size: the bytes its layers hold (see ImageStore.images).
    architecture, os: the platform the config names ("amd64", "linux").
    """

    id: str
    names: tuple[str, ...] = attrs.field(converter=tuple)
    layers: tuple[str, ...] = attrs.field(converter=tuple)
    config: dict[str, Any] = attrs.field(factory=dict, hash=False)
    diff_ids: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    created: str = ""
    imported: float | None = None
    size: int = 0
    architecture: str = ""
    os: str = ""

    @property
    def created_at(self) -> float | None:
        """When the image was made (seconds since the epoch): its config's
        `created`, else when it was imported, as podman falls back to the
        time it stored an image; None when neither is known."""
        return _rfc3339(self.created) if self.created else self.imported

    @property
    def env(self) -> dict[str, str]:
        """The image's environment (its Env list of "KEY=VALUE")."""
        return _env(self.config.get("Env"))

    @property
    def cwd(self) -> str:
        """The working directory (WorkingDir, default "/")."""
        return self.config.get("WorkingDir") or "/"

    @property
    def user(self) -> str:
        """The User string ("", "uid", "uid:gid", "name", "name:group")."""
        return self.config.get("User") or ""

    @property
    def entrypoint(self) -> list[str]:
        """The Entrypoint list ([] if none)."""
        return list(self.config.get("Entrypoint") or [])

    @property
    def cmd(self) -> list[str]:
        """The Cmd list ([] if none): the default arguments."""
        return list(self.config.get("Cmd") or [])

    def command(self, args: Sequence[str] | None = None) -> list[str]:
        """The command a container of this image runs, as Docker builds it:
        the Entrypoint followed by `args`, or by the image's Cmd when
        `args` is None."""
        if isinstance(args, (str, bytes)):
            raise TypeError("args must be a sequence of arguments, not a string")
        command = self.entrypoint + (self.cmd if args is None else list(args))
        if not command:
            raise ImageError(f"image {self.id}: no command (the image has no Entrypoint "
                             "nor Cmd, and none was given)")
        return command

    def overlay(self, upper: str | os.PathLike | None = None, work: str | os.PathLike | None = None,
                size: int | str | None = None) -> Overlay:
        """An Overlay with this image's layers as its lower layers (see
        Overlay for upper, work and size)."""
        if not self.layers:
            raise ImageError(f"image {self.id}: has no layers to make a root of")
        return Overlay(lower=_topmost(self.layers), upper=upper, work=work, size=size)

    def resolve_user(self, user: str | None = None) -> tuple[int, int] | None:
        """(uid, gid) for `user` (default: the image's User), names looked
        up in the image's /etc/passwd and /etc/group; None when it is empty.
        A numeric user missing from /etc/passwd gets gid 0, as Docker does."""
        return resolve_user(self.user if user is None else user, self.layers, self.id)

    def home(self, uid: int) -> str:
        """The home directory the image's /etc/passwd gives `uid`, or "/"."""
        return home_dir(uid, self.layers, self.id)


def _topmost(layers: Sequence[str]) -> list[str]:
    """`layers` (bottom first) with only the topmost occurrence of each:
    overlayfs refuses a layer twice, and the upper copy shows every entry
    of the lower one, so the view is the same."""
    kept = list(dict.fromkeys(reversed(layers)))
    kept.reverse()
    return kept


class _Progress:
    """Reports bytes done out of a total, only ever increasing, ending at
    the total."""

    def __init__(self, callback: Callable[[int, int], None] | None, total: int) -> None:
        self._callback = callback
        self.total = total
        self.done = 0
        self._reported = -1

    def add(self, count: int) -> None:
        self.done = min(self.total, self.done + count)
        if self._callback is not None and self.done > self._reported:
            self._reported = self.done
            self._callback(self.done, self.total)

    def finish(self) -> None:
        self.done = self.total
        if self._callback is not None and self._reported != self.total:
            self._reported = self.total
            self._callback(self.total, self.total)


class ImageStore:
    """Images imported from archives, stored under `root` (created if
    missing); see the module's docstring for the layout.

    max_ratio, ratio_floor, max_import_size: how far an import's layers
    may expand (isolate.images.budget): each layer's uncompressed tar, and
    all of an import's together, to at most `max_ratio` (default 100)
    times their stored size or `ratio_floor` (default "256M") bytes,
    whichever is more, and to `max_import_size` bytes in all (default:
    no such limit), kept as `limits`.  ImageError past them; ConfigError
    for a bad value, and ImageError for a root that cannot be made, both
    before anything is written.
    """

    def __init__(self, root: str | os.PathLike, *, max_ratio: float = DEFAULT_MAX_RATIO,
                 ratio_floor: int | str = DEFAULT_RATIO_FLOOR,
                 max_import_size: int | str | None = None) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.limits = ExpansionLimits(max_ratio, ratio_floor, max_import_size)
        self._layers = os.path.join(self.root, "layers", "sha256")
        self._tmp = os.path.join(self.root, "tmp")
        self._leases = os.path.join(self.root, "leases")
        self._lock = os.path.join(self.root, "lock")
        self._records = Records(os.path.join(self.root, "images"), self._tmp)
        try:
            _private_dir(os.path.dirname(self._layers))
            for path in (self._layers, self._records.directory):
                os.makedirs(path, mode=0o755, exist_ok=True)
            for path in (self._tmp, self._leases):
                _private_dir(path)
        except OSError as exc:
            raise ImageError(f"ImageStore root {self.root}: cannot make {exc.filename}: "
                             f"{exc.strerror}") from None

    def __repr__(self) -> str:
        return f"ImageStore({self.root!r})"

    # --- public API -----------------------------------------------------------

    def import_archive(self, path: str | os.PathLike, name: str | None = None, *,
                       progress: Callable[[int, int], None] | None = None) -> Image:
        """Import an image from a docker-archive, an oci-archive or an OCI
        layout directory, and return it.

        name: which image of the archive ("busybox:latest"); default: its
            first.
        progress(done, total): called as the archive's layer bytes are
            read (layers already in the store count as done at once),
            with increasing `done`, last with done == total.

        Importing an image that is already stored extracts nothing.  On any
        failure (ImageError for a bad archive or digest, or an image this
        host cannot run, LayerError for a layer that cannot be applied,
        OSError) the store is left as it was.
        """
        image = _choose(read_archive(path), name, os.fspath(path))
        check_platform(image)
        layers = len(set(image.diff_ids))
        if layers > MAX_LOWERS:
            raise ImageError(f"{image.source}: image {image.config_digest} has {layers} layers; "
                             f"overlayfs stacks at most {MAX_LOWERS}")
        return self._import(image, progress)

    def images(self) -> list[Image]:
        """Every stored image, by id.  An image's `size` is what its layer
        directories hold as docker counts it: the apparent size of every
        file and symlink (directories count nothing, hard links once), each
        distinct layer counted in full in every image that uses it."""
        return [self._image(record) for record in self._records.all()]

    def get(self, reference: str) -> Image:
        """The image `reference` names, found as podman finds a local
        image, in this order:

        1. an id ("sha256:<64 hex>" or the 64 hex digits alone): only that;
        2. a name, its tag "latest" unless it gives one or a digest
           (isolate.images.ref.matches): with a registry
           ("example.com/app:1") that name only; a short name ("deb:test",
           "busybox") as ``localhost/deb:test`` or as Docker Hub's
           ``docker.io/library/busybox:latest``;
        3. a unique id prefix ("3f2a9c", "sha256:3f2a"), as docker images
           shows ids;
        4. a short name as the last component(s) of any stored name:
           "tool:2" finds "quay.io/org/tool:2".

        The first step that finds anything decides.  Raises ImageError if
        none does, or if a step finds several images: podman would take the
        first, isolate names them all and picks none.
        """
        return self._image(_find(self._records.all(), reference, self.root))

    def remove(self, image: Image | str) -> None:
        """Remove an image (or the image a reference names, as get() finds
        it), then every layer no remaining image uses (and no container:
        see the module's docstring)."""
        if isinstance(image, str):
            image = self.get(image)
        with locked(self._lock):
            if not self._records.remove(image.id):
                raise ImageError(f"{self.root}: no image {image.id}")
            trash = self._collect()
        trash.drop()

    def lease(self, holder: str, diff_ids: Sequence[str]) -> tuple[str, int]:
        """Keep the layers `diff_ids`, whatever happens to their images,
        while the file `holder` (a detached container's state record)
        exists, until end_lease().  Returns the lease's path and a
        descriptor that keeps it before `holder` exists: close it once
        `holder` is written.  ImageError if a layer is gone already."""
        with locked(self._lock):
            for diff_id in diff_ids:
                if not os.path.isdir(self._layer_path(diff_id)):
                    raise ImageError(f"{self.root}: layer {diff_id} is gone (its image was removed)")
            return write_lease(self._leases, holder, diff_ids)

    def end_lease(self, path: str) -> None:
        """Drop the lease `path` (from lease()), then delete the layers
        that only it kept."""
        with locked(self._lock):
            trash = self._collect(drop_lease(path))
        trash.drop()

    def gc(self) -> None:
        """Delete the layers no image (and no container) uses and what
        processes that died left in tmp/ (remove() and failed imports do
        this by themselves)."""
        with locked(self._lock):
            trash = self._collect()
        trash.drop()

    # --- importing ---------------------------------------------------------------

    def _import(self, image: ArchiveImage, progress: Callable[[int, int], None] | None) -> Image:
        meter = _Progress(progress, sum(blob.size for blob in image.layers))
        budget = ImportBudget(self.limits, image.source, image.layers)
        with locked(self._lock):
            lease = WorkDir.create(self._tmp, "import-")
            try:
                lease.write_needs(image.diff_ids)
            except BaseException:
                lease.drop()
                raise
        added: list[str] = []
        try:
            for blob in image.layers:
                self._store_layer(blob, lease.path, meter, budget, added)
            # Measured once here, where the lease keeps the layers, so that
            # listing images walks no layer.
            size = _disk_size(self._layer_path(d) for d in image.diff_ids)
            with locked(self._lock):
                for diff_id in image.diff_ids:
                    if not os.path.isdir(self._layer_path(diff_id)):
                        # The lease forbids this: someone deleted it by hand.
                        raise ImageError(f"{self._layer_path(diff_id)}: layer {diff_id} vanished "
                                         f"while {image.source} was being imported")
                record = self._save(image, size)
        except BaseException:
            self._discard(added, lease.path)
            raise
        finally:
            lease.drop()
        meter.finish()
        return self._image(record)

    def _store_layer(self, blob: LayerBlob, work: str, meter: _Progress, budget: ImportBudget,
                     added: list[str]) -> None:
        """Extract `blob` into layers/ unless it is there already."""
        target = self._layer_path(blob.diff_id)
        if os.path.isdir(target):
            meter.add(blob.size)
            return
        dest = os.path.join(work, blob.diff_id.removeprefix("sha256:"))
        os.mkdir(dest)
        try:
            os.chmod(dest, 0o755)       # the layer's root (not the umask's)
            blob.extract(dest, on_read=meter.add, on_expand=budget.counter(blob))
            try:
                os.rename(dest, target)
            except OSError as exc:
                # Another importer stored the same layer first: keep theirs
                # (equal by digest), ours goes with the import's directory.
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            else:
                added.append(blob.diff_id)
        finally:
            if os.path.lexists(dest):
                remove_tree(dest)

    def _save(self, image: ArchiveImage, size: int) -> Record:
        """Write the image's record (lock held), and take its names from
        any other image: a name is one image's, as a tag is.  An image
        imported again keeps its first import time."""
        old = self._records.get(image.config_digest)
        names = list(image.names) + [n for n in (old or {}).get("names", []) if n not in image.names]
        record = {"id": image.config_digest, "names": names,
                  "diff_ids": list(image.diff_ids), "config": image.config, "size": size,
                  "imported": old["imported"] if old else time.time()}
        if record != old:
            self._records.write(record)
        for other in self._records.all():
            if other["id"] != record["id"]:
                kept = [n for n in other["names"] if not _names_one_of(n, names)]
                if kept != other["names"]:
                    self._records.write(dict(other, names=kept))
        return record

    def _discard(self, diff_ids: list[str], own: str) -> None:
        """Undo a failed import (whose lease is `own`): delete the layers
        it stored that no record and no other import in progress needs."""
        if not diff_ids:
            return
        with locked(self._lock):
            trash = self._collect(diff_ids, own)
        trash.drop()

    # --- garbage collection ---------------------------------------------------------

    def _collect(self, diff_ids: Iterable[str] | None = None, own: str | None = None) -> WorkDir:
        """With the lock held: move the layers `diff_ids` (default: every
        stored one) that no record references, no import in progress but
        `own` needs, no lease keeps and no container holds into a new trash directory,
        with what dead processes left in tmp/; returns the trash, for the
        caller to drop() once unlocked."""
        trash = WorkDir.create(self._tmp, "trash-")
        try:
            used = (scan(self._tmp, trash.path, exclude={trash.path, own})
                    | self._records.used_layers() | leased(self._leases))
            if diff_ids is None:
                diff_ids = ["sha256:" + entry for entry in os.listdir(self._layers)]
            for diff_id in diff_ids:
                if diff_id not in used:
                    collect_layer(self._layer_path(diff_id), trash.path)
        except BaseException:
            trash.drop()
            raise
        return trash

    # --- records ----------------------------------------------------------------------

    def _image(self, record: Record) -> Image:
        layers = [self._layer_path(d) for d in record["diff_ids"]]
        config = record["config"]
        created = config.get("created")
        size = record.get("size")
        return Image(id=record["id"], names=record["names"], layers=layers,
                     config=config.get("config") or {}, diff_ids=record["diff_ids"],
                     created=created if isinstance(created, str) and _rfc3339(created) is not None else "",
                     imported=record["imported"],
                     # A record written before isolate measured layers has no size.
                     size=_disk_size(layers) if size is None else size,
                     architecture=config.get("architecture") or "", os=config.get("os") or "")

    def _layer_path(self, diff_id: str) -> str:
        return os.path.join(self._layers, diff_id.removeprefix("sha256:"))


def _find(records: list[Record], reference: str, where: str) -> Record:
    """The record `reference` names (see ImageStore.get); ImageError, saying
    `where`, when none or several do."""
    hexdigits = reference.removeprefix("sha256:")
    is_hex = re.fullmatch(r"[0-9a-f]+", hexdigits) is not None
    # An id in full, or anything "sha256:", is an id: never a name, as podman has it.
    by_id = reference.startswith("sha256:") or (is_hex and len(hexdigits) == 64)
    if by_id and len(hexdigits) == 64:
        for record in records:
            if record["id"] == "sha256:" + hexdigits:
                return record
        raise ImageError(f"{where}: no image {reference!r}")
    wanted = None if by_id or not is_reference(reference) else parse_reference(reference)
    # Each step gives what of a record matches: names in full, or its id.
    steps: list[Callable[[Record], list[str]]] = []
    if wanted is not None:
        steps.append(lambda record: _matching_names(record, wanted, loose=False))
    if is_hex:
        steps.append(lambda record: [record["id"]] if record["id"].startswith("sha256:" + hexdigits)
                     else [])
    if wanted is not None and wanted.short:
        steps.append(lambda record: _matching_names(record, wanted, loose=True))
    for step in steps:
        found = [(record, shown) for record in records for shown in [step(record)] if shown]
        if len(found) == 1:
            return found[0][0]
        if found:
            listed = "; ".join(record["id"] if shown == [record["id"]]
                               else f"{record['id'][:19]} ({', '.join(shown)})" for record, shown in found)
            raise ImageError(f"{where}: {reference!r} is ambiguous: it matches {listed}; "
                             "give its full name or its id")
    raise ImageError(f"{where}: no image {reference!r}")


def _matching_names(record: Record, wanted: Reference, *, loose: bool) -> list[str]:
    """The names of `record` that `wanted` may mean (isolate.images.ref.matches),
    in full: what an ambiguity error offers to type instead."""
    found = []
    for name in record["names"]:
        # A record's names were checked when it was imported; a record
        # edited by hand may hold others, which name nothing.
        if is_reference(name):
            stored = parse_reference(name)
            if matches(wanted, stored, record["id"], loose=loose):
                found.append(str(stored))
    return list(dict.fromkeys(found))


def _disk_size(layers: Iterable[str]) -> int:
    """The bytes the layer directories `layers` hold, as docker measures a
    layer: the apparent size of each file and symlink, a hard-linked file
    once, directories nothing; a directory listed twice counts once."""
    total = 0
    seen: set[tuple[int, int]] = set()
    pending = list(dict.fromkeys(layers))
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            # Unreadable to its owner (a layer's mode-000 directory,
            # rootless) or removed meanwhile: what it holds goes uncounted
            # rather than fail a listing.
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                pending.append(entry.path)
            elif (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?"
                      r"(?:([Zz])|([+-])(\d\d):(\d\d))", re.ASCII)


def _rfc3339(text: str) -> float | None:
    """Seconds since the epoch for an RFC 3339 time ("2024-05-01T12:00:00.123456789Z",
    as image configs write it); None for anything else."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    offset = datetime.timedelta(0)
    if match.group(9):
        offset = datetime.timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
        offset = -offset if match.group(9) == "-" else offset
    try:
        when = datetime.datetime(year, month, day, hour, minute, second,
                                 tzinfo=datetime.timezone(offset))
    except ValueError:     # month 13, Feb 30, an offset of a day or more
        return None
    # Go writes nanoseconds, datetime keeps microseconds: the fraction goes apart.
    return when.timestamp() + float("0." + (match.group(7) or "0"))


def store_layer(path: str) -> tuple[str, str] | None:
    """(store root, diff_id) when `path` is a layer directory of an
    ImageStore (``ROOT/layers/sha256/HEX``), else None."""
    layers, name = os.path.split(os.path.abspath(path))
    if (os.path.basename(layers) != "sha256" or os.path.basename(os.path.dirname(layers)) != "layers"
            or not re.fullmatch(r"[0-9a-f]{64}", name)):
        return None
    root = os.path.dirname(os.path.dirname(layers))
    if not os.path.isdir(os.path.join(root, "images")):
        return None
    return root, "sha256:" + name


def _private_dir(path: str) -> None:
    """Create `path` reachable by its owner only.  Layers extracted by root
    keep their setuid-root files and device nodes: no other user may reach
    them (overlayfs opens lower layers with the mounter's credentials, so
    containers still can)."""
    if not os.path.isdir(path):
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o700)


def _names_one_of(name: str, names: list[str]) -> bool:
    """Whether `name` is one of `names` once both are written in full."""
    return is_reference(name) and names_include(names, canonical_name(name))


def _choose(images: list[ArchiveImage], name: str | None, path: str) -> ArchiveImage:
    if not images:
        raise ImageError(f"{path}: holds no image")
    if name is None:
        return images[0]
    wanted = canonical_name(name)
    for image in images:
        if names_include(image.names, wanted):
            return image
    offered = [n for image in images for n in image.names]
    raise ImageError(f"{path}: no image named {name!r} (it holds {', '.join(offered) or 'unnamed images'})")
