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
                                   (config digest), its diff_ids bottom first
                                   and the whole config JSON
    tmp/import-XXXX/               one import in progress: "needs" (the diff_ids
                                   it will reference) and its layers being
                                   extracted; flocked by the importer
    tmp/trash-XXXX/                layers being deleted, flocked by the deleter
    tmp/record-XXXX.json           a record being written (under the lock)
    lock                           flock(2)ed (exclusive) around every change to
                                   images/, every deletion from layers/ and
                                   every creation in tmp/

Concurrency: any number of processes may import and remove at once.
- A layer is extracted without the lock (the slow part) into the import's
  directory in tmp/, verified, then renamed into layers/: rename(2) is
  atomic and fails when another importer got there first (ours is then
  thrown away), so a layers/ entry is always complete.
- Garbage collection (after a remove or a failed import) holds the lock and
  deletes a layer only when no record references it and no import in
  progress needs it; it renames the layer into tmp/ and deletes it after
  releasing the lock.
- An import in progress is a lease: before looking at layers/, the importer
  creates tmp/import-XXXX/ with its "needs" file and takes an flock on the
  directory, all with the lock held.  So from then on no collection deletes
  a layer it needs, whether it found it there or stored it itself, and
  the record it writes (with the lock held again) only references layers
  that are present.  (Checking under the lock and retrying instead would
  let a steady stream of removes starve an import.)
- A tmp/ entry whose flock a collection can take was left by a process
  that died: the collection deletes it, and its lease with it.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs

from .errors import ImageError
from .image_archive import ArchiveImage, LayerBlob, read_archive, remove_tree
from .overlay import Overlay

#: /etc/passwd and /etc/group are read whole; refuse absurd ones.
_MAX_ETC_FILE = 16 << 20

#: The file in an import's tmp/ directory listing the layers it needs.
_NEEDS = "needs"

_ID = re.compile(r"sha256:[0-9a-f]{64}")
_WHITEOUT_XATTR = "user.overlay.whiteout"
_OPAQUE_XATTR = "user.overlay.opaque"


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
    """

    id: str
    names: tuple[str, ...] = attrs.field(converter=tuple)
    layers: tuple[str, ...] = attrs.field(converter=tuple)
    config: dict[str, Any] = attrs.field(factory=dict, hash=False)
    diff_ids: tuple[str, ...] = attrs.field(default=(), converter=tuple)

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
        return Overlay(lower=self.layers, upper=upper, work=work, size=size)

    def resolve_user(self) -> tuple[int, int] | None:
        """(uid, gid) for the image's User, names looked up in the image's
        /etc/passwd and /etc/group; None when User is empty.  A numeric
        user missing from /etc/passwd gets gid 0, as Docker does."""
        if not self.user:
            return None
        user, has_group, group = self.user.partition(":")
        passwd = self._table("passwd")
        if user.isdigit():
            uid = _id(user, self)
            gid = next((int(row[3]) for row in passwd if row[2] == user), 0)
        else:
            row = next((row for row in passwd if row[0] == user), None)
            if row is None:
                raise ImageError(f"image {self.id}: user {user!r} is not in its /etc/passwd")
            uid, gid = int(row[2]), int(row[3])
        if has_group:
            if group.isdigit():
                gid = _id(group, self)
            else:
                row = next((row for row in self._table("group") if row[0] == group), None)
                if row is None:
                    raise ImageError(f"image {self.id}: group {group!r} is not in its /etc/group")
                gid = int(row[2])
        return uid, gid

    def _table(self, name: str) -> list[list[str]]:
        """The rows of /etc/passwd or /etc/group (their numeric fields
        checked), as the image's merged layers show the file."""
        path = _merged_file(self.layers, ("etc", name))
        if path is None:
            return []
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with open(fd, "rb") as f:
                text = f.read(_MAX_ETC_FILE).decode("utf-8", "replace")
        except OSError as exc:
            raise ImageError(f"image {self.id}: cannot read {path}: {exc.strerror}") from exc
        numeric = (2, 3) if name == "passwd" else (2,)
        rows = []
        for line in text.splitlines():
            row = line.split(":")
            if len(row) > max(numeric) and all(row[i].isdigit() for i in numeric):
                rows.append(row)
        return rows


def _id(text: str, image: Image) -> int:
    value = int(text)
    if value >= 2**32 - 1:
        raise ImageError(f"image {image.id}: id {value} in User {image.user!r} is out of range")
    return value


def _merged_file(layers: Sequence[str], parts: tuple[str, ...]) -> str | None:
    """Where the file `parts` is in the overlay of `layers` (bottom
    first): in the topmost layer that has it, unless a layer above hides
    it with a whiteout, an opaque directory or a non-directory on its way."""
    for layer in reversed(layers):
        path = layer
        for depth, part in enumerate(parts):
            path = os.path.join(path, part)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                break                       # not in this layer: look below
            last = depth == len(parts) - 1
            if _is_whiteout(path, st) or (not last and not stat.S_ISDIR(st.st_mode)):
                return None
            if last:
                return path if stat.S_ISREG(st.st_mode) else None
            if _xattr(path, _OPAQUE_XATTR) == b"y":
                # Nothing below shows through this directory; what it
                # holds itself still counts.
                child = os.path.join(path, *parts[depth + 1:])
                return child if os.path.isfile(child) and not os.path.islink(child) else None
    return None


def _is_whiteout(path: str, st: os.stat_result) -> bool:
    """An overlay whiteout: a 0/0 character device, or (kernel 6.7+) an
    empty file carrying the whiteout xattr."""
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return True
    return stat.S_ISREG(st.st_mode) and st.st_size == 0 and _xattr(path, _WHITEOUT_XATTR) is not None


def _xattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


def canonical_name(reference: str) -> str:
    """`reference` in full, as Docker understands it: "busybox" is
    "docker.io/library/busybox:latest"."""
    name, at, digest = reference.partition("@")
    if ":" not in name.rpartition("/")[2] and not at:
        name += ":latest"
    domain, slash, rest = name.partition("/")
    if not slash or not ("." in domain or ":" in domain or domain == "localhost"):
        name = "docker.io/" + (name if slash else "library/" + name)
    return name + at + digest


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
    missing); see the module's docstring for the layout."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self._layers = os.path.join(self.root, "layers", "sha256")
        self._images = os.path.join(self.root, "images")
        self._tmp = os.path.join(self.root, "tmp")
        self._lock = os.path.join(self.root, "lock")
        _private_dir(os.path.dirname(self._layers))
        for path in (self._layers, self._images):
            os.makedirs(path, mode=0o755, exist_ok=True)
        _private_dir(self._tmp)

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
        failure (ImageError for a bad archive or digest, LayerError for a
        layer that cannot be applied, OSError) the store is left as it was.
        """
        return self._import(_choose(read_archive(path), name, os.fspath(path)), progress)

    def images(self) -> list[Image]:
        """Every stored image, by id."""
        return [self._image(record) for record in self._records()]

    def get(self, reference: str) -> Image:
        """The image with this name ("busybox", "busybox:latest"), id
        ("sha256:...") or unique id prefix (with or without "sha256:").
        Raises ImageError if there is none, or the prefix is ambiguous."""
        images = self.images()
        for image in images:
            if image.id == reference:
                return image
        wanted = canonical_name(reference) if reference else None
        for image in images:
            if any(canonical_name(name) == wanted for name in image.names):
                return image
        prefix = reference.removeprefix("sha256:")
        found = [image for image in images if re.fullmatch(r"[0-9a-f]+", prefix)
                 and image.id.removeprefix("sha256:").startswith(prefix)]
        if len(found) == 1:
            return found[0]
        if found:
            raise ImageError(f"{self.root}: {reference!r} is ambiguous: it matches "
                             f"{', '.join(image.id for image in found)}")
        raise ImageError(f"{self.root}: no image {reference!r}")

    def remove(self, image: Image | str) -> None:
        """Remove an image (or the image a reference names, as get() finds
        it), then every layer no remaining image uses."""
        if isinstance(image, str):
            image = self.get(image)
        with self._locked():
            try:
                os.unlink(self._record_path(image.id))
            except FileNotFoundError:
                raise ImageError(f"{self.root}: no image {image.id}") from None
            trash = self._collect()
        _drop(*trash)

    def gc(self) -> None:
        """Delete the layers no image uses and what processes that died
        left in tmp/ (remove() and failed imports do this by themselves)."""
        with self._locked():
            trash = self._collect()
        _drop(*trash)

    # --- importing ---------------------------------------------------------------

    def _import(self, image: ArchiveImage, progress: Callable[[int, int], None] | None) -> Image:
        meter = _Progress(progress, sum(blob.size for blob in image.layers))
        with self._locked():
            work, fd = self._holder("import-")
            try:
                with open(os.path.join(work, _NEEDS), "w") as f:
                    json.dump(list(image.diff_ids), f)
            except BaseException:
                _drop(work, fd)
                raise
        added: list[str] = []
        try:
            for blob in image.layers:
                self._store_layer(blob, work, meter, added)
            with self._locked():
                for diff_id in image.diff_ids:
                    if not os.path.isdir(self._layer_path(diff_id)):
                        # The lease forbids this: someone deleted it by hand.
                        raise ImageError(f"{self._layer_path(diff_id)}: layer {diff_id} vanished "
                                         f"while {image.source} was being imported")
                record = self._save(image)
        except BaseException:
            self._discard(added, work)
            raise
        finally:
            _drop(work, fd)
        meter.finish()
        return self._image(record)

    def _store_layer(self, blob: LayerBlob, work: str, meter: _Progress, added: list[str]) -> None:
        """Extract `blob` into layers/ unless it is there already."""
        target = self._layer_path(blob.diff_id)
        if os.path.isdir(target):
            meter.add(blob.size)
            return
        dest = os.path.join(work, blob.diff_id.removeprefix("sha256:"))
        os.mkdir(dest)
        try:
            os.chmod(dest, 0o755)       # the layer's root (not the umask's)
            blob.extract(dest, on_read=meter.add)
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

    def _save(self, image: ArchiveImage) -> dict[str, Any]:
        """Write the image's record (lock held), and take its names from
        any other image: a name is one image's, as a tag is."""
        path = self._record_path(image.config_digest)
        old = self._read_record(path)
        names = list(image.names) + [n for n in (old or {}).get("names", []) if n not in image.names]
        record = {"id": image.config_digest, "names": names,
                  "diff_ids": list(image.diff_ids), "config": image.config}
        if record != old:
            self._write_record(record)
        taken = {canonical_name(name) for name in names}
        for other in self._records():
            if other["id"] != record["id"] and any(canonical_name(n) in taken for n in other["names"]):
                self._write_record(dict(other, names=[n for n in other["names"]
                                                      if canonical_name(n) not in taken]))
        return record

    def _discard(self, diff_ids: list[str], own: str) -> None:
        """Undo a failed import (whose lease is `own`): delete the layers
        it stored that no record and no other import in progress needs."""
        if not diff_ids:
            return
        with self._locked():
            used = self._used() | self._scan_tmp(exclude=own)
            holder = self._holder("trash-")
            for diff_id in diff_ids:
                if diff_id not in used:
                    _move_away(self._layer_path(diff_id), holder[0])
        _drop(*holder)

    # --- garbage collection ---------------------------------------------------------

    def _collect(self) -> tuple[str, int]:
        """With the lock held: move the layers that no record references
        and no import in progress needs into a new trash directory (and
        delete what dead processes left in tmp/); returns the trash
        directory as _holder() does, for the caller to _drop() unlocked."""
        used = self._scan_tmp() | self._used()
        holder = self._holder("trash-")
        for entry in os.listdir(self._layers):
            if "sha256:" + entry not in used:
                _move_away(os.path.join(self._layers, entry), holder[0])
        return holder

    def _scan_tmp(self, exclude: str | None = None) -> set[str]:
        """With the lock held: the diff_ids that imports in progress
        (other than `exclude`) need; deletes the tmp/ entries of processes
        that died."""
        needed: set[str] = set()
        for entry in os.scandir(self._tmp):
            if entry.path == exclude:
                continue
            if not entry.is_dir(follow_symlinks=False):
                # Records are written with the lock held, which we hold: a
                # file here is what a writer that died left.
                os.unlink(entry.path)
                continue
            # Owners delete their directories without the lock: one may
            # vanish under us, or be locked until it is gone.
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:     # its owner is alive
                os.close(fd)
                needed.update(_needs(entry.path))
                continue
            _drop(entry.path, fd)
        return needed

    def _used(self) -> set[str]:
        return {diff_id for record in self._records() for diff_id in record["diff_ids"]}

    # --- records --------------------------------------------------------------------

    def _records(self) -> list[dict[str, Any]]:
        records = []
        for entry in sorted(os.listdir(self._images)):
            if entry.endswith(".json"):
                record = self._read_record(os.path.join(self._images, entry))
                if record is not None:      # removed meanwhile
                    records.append(record)
        return records

    def _read_record(self, path: str) -> dict[str, Any] | None:
        try:
            with open(path, "rb") as f:
                record = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ImageError(f"{path}: unreadable image record ({exc})") from exc
        if not (isinstance(record, dict) and isinstance(record.get("id"), str)
                and _ID.fullmatch(record["id"])
                and os.path.basename(path) == record["id"].removeprefix("sha256:") + ".json"
                and isinstance(record.get("names"), list)
                and all(isinstance(n, str) for n in record["names"])
                and isinstance(record.get("diff_ids"), list)
                and all(isinstance(d, str) and _ID.fullmatch(d) for d in record["diff_ids"])
                and isinstance(record.get("config"), dict)):
            raise ImageError(f"{path}: malformed image record")
        return record

    def _write_record(self, record: dict[str, Any]) -> None:
        """Replace a record atomically: readers see the old or the new."""
        fd, tmp = tempfile.mkstemp(prefix="record-", suffix=".json", dir=self._tmp)
        try:
            with open(fd, "w") as f:
                json.dump(record, f, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self._record_path(record["id"]))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _image(self, record: dict[str, Any]) -> Image:
        return Image(id=record["id"], names=record["names"],
                     layers=[self._layer_path(d) for d in record["diff_ids"]],
                     config=record["config"].get("config") or {},
                     diff_ids=record["diff_ids"])

    def _record_path(self, image_id: str) -> str:
        return os.path.join(self._images, image_id.removeprefix("sha256:") + ".json")

    def _layer_path(self, diff_id: str) -> str:
        return os.path.join(self._layers, diff_id.removeprefix("sha256:"))

    # --- locking and work directories ---------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """The store's exclusive lock (not reentrant)."""
        fd = os.open(self._lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _holder(self, prefix: str) -> tuple[str, int]:
        """A new directory in tmp/, flocked through the returned fd (made
        with the lock held, so no collection sees it unowned)."""
        path = tempfile.mkdtemp(prefix=prefix, dir=self._tmp)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except BaseException:
            os.rmdir(path)
            raise
        fcntl.flock(fd, fcntl.LOCK_EX)
        return path, fd



def _private_dir(path: str) -> None:
    """Create `path` reachable by its owner only.  Layers extracted by root
    keep their setuid-root files and device nodes: no other user may reach
    them (overlayfs opens lower layers with the mounter's credentials, so
    containers still can)."""
    if not os.path.isdir(path):
        os.makedirs(path, exist_ok=True)
        os.chmod(path, 0o700)


def _needs(holder: str) -> list[str]:
    """The diff_ids a live import's lease lists (none for a trash dir)."""
    try:
        with open(os.path.join(holder, _NEEDS)) as f:
            return json.load(f)
    except FileNotFoundError:
        return []


def _move_away(path: str, holder: str) -> None:
    """Move `path` into `holder` (to delete it later) unless it is gone."""
    with contextlib.suppress(FileNotFoundError):
        os.rename(path, os.path.join(holder, os.path.basename(path)))


def _drop(path: str, fd: int) -> None:
    """Delete a tmp/ directory (unless its owner just did), then release
    its flock."""
    try:
        remove_tree(path)
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def _choose(images: list[ArchiveImage], name: str | None, path: str) -> ArchiveImage:
    if not images:
        raise ImageError(f"{path}: holds no image")
    if name is None:
        return images[0]
    wanted = canonical_name(name)
    for image in images:
        if any(canonical_name(n) == wanted for n in image.names):
            return image
    offered = [n for image in images for n in image.names]
    raise ImageError(f"{path}: no image named {name!r} (it holds {', '.join(offered) or 'unnamed images'})")
