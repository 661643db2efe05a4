"""The working directories of an ImageStore, in its tmp/ (see isolate.images.store
for the protocol): an import's lease (``import-XXXX/``, whose "needs" file
lists the layers it will reference), a trash of layers being deleted
(``trash-XXXX/``), each flocked by its owner for as long as it lives, and
the store's lock around them; and, in its leases/, the leases of detached
containers, which outlive the process that made them."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import tempfile
import uuid
from collections.abc import Collection, Iterator

import attrs

from isolate.layers import in_use
from isolate.layers.apply import remove_tree

#: The file in an import's directory listing the layers it needs.
_NEEDS = "needs"

_LEASE_SUFFIX = ".json"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """The store's exclusive lock, the file `path` (not reentrant)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@attrs.frozen
class WorkDir:
    """A directory in tmp/ and the descriptor through which its owner
    flocks it."""

    path: str
    fd: int

    @classmethod
    def create(cls, tmp: str, prefix: str) -> WorkDir:
        """A new work directory in `tmp`, flocked (to be made with the
        store's lock held, so that no collection sees it unowned)."""
        path = tempfile.mkdtemp(prefix=prefix, dir=tmp)
        try:
            fd = os.open(path, _DIR_FLAGS)
        except BaseException:
            os.rmdir(path)
            raise
        fcntl.flock(fd, fcntl.LOCK_EX)
        return cls(path, fd)

    def write_needs(self, diff_ids: Collection[str]) -> None:
        """Make this directory a lease on the layers `diff_ids`."""
        with open(os.path.join(self.path, _NEEDS), "w") as f:
            json.dump(list(diff_ids), f)

    def drop(self) -> None:
        """Delete the directory (unless it is gone), then release its flock."""
        try:
            remove_tree(self.path)
        except FileNotFoundError:
            pass
        finally:
            os.close(self.fd)


def scan(tmp: str, trash: str, exclude: Collection[str]) -> set[str]:
    """With the store's lock held: the diff_ids that the live imports in
    `tmp` (but the directories `exclude`) need.  What dead processes left
    there goes: their directories into `trash`, to be deleted after the
    lock is released."""
    needed: set[str] = set()
    for entry in os.scandir(tmp):
        if entry.path in exclude:
            continue
        if not entry.is_dir(follow_symlinks=False):
            # Records are written with the lock held, which we hold: a
            # file here is what a writer that died left.
            os.unlink(entry.path)
            continue
        # Owners delete their directories without the lock: one may
        # vanish under us, or be locked until it is gone.
        try:
            fd = os.open(entry.path, _DIR_FLAGS)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:     # its owner is alive
            needed.update(_needs(entry.path))
        else:
            move_away(entry.path, trash)
        finally:
            os.close(fd)
    return needed


def collect_layer(path: str, trash: str) -> None:
    """Move the layer directory `path` into `trash` (with the store's lock
    held), unless a container holds it: a container flocks (LOCK_SH) the
    layers it stacks, and a layer whose exclusive flock cannot be had
    stays, for a later collection."""
    try:
        fd = in_use.lock_unused(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        move_away(path, trash)      # not a layer directory: nobody holds it
        return
    if fd is None:
        return                      # in use
    try:
        move_away(path, trash)
    finally:
        os.close(fd)


def move_away(path: str, trash: str) -> None:
    """Move `path` into `trash` (to delete it later) unless it is gone."""
    with contextlib.suppress(FileNotFoundError):
        os.rename(path, os.path.join(trash, os.path.basename(path)))


def _needs(holder: str) -> list[str]:
    """The diff_ids a live import's lease lists (none for a trash)."""
    try:
        with open(os.path.join(holder, _NEEDS)) as f:
            return json.load(f)
    except FileNotFoundError:
        return []


# --- leases of detached containers -----------------------------------------------

def write_lease(leases: str, holder: str, diff_ids: Collection[str]) -> tuple[str, int]:
    """With the store's lock held: a new lease in the directory `leases` on
    the layers `diff_ids`, kept while the file `holder` exists.  Returns
    its path and a descriptor flocking it, which keeps it even before
    `holder` exists: close it once `holder` is written."""
    os.makedirs(leases, mode=0o700, exist_ok=True)
    path = os.path.join(leases, uuid.uuid4().hex + _LEASE_SUFFIX)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps({"holder": holder, "diff_ids": list(diff_ids)}).encode())
    except BaseException:
        os.close(fd)
        os.unlink(path)
        raise
    return path, fd


def drop_lease(path: str) -> list[str]:
    """With the store's lock held: delete the lease `path` (unless it is
    gone); the diff_ids it held."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    try:
        lease = _read_lease(fd)
    finally:
        os.close(fd)
    os.unlink(path)
    return [] if lease is None else lease["diff_ids"]


def leased(leases: str) -> set[str]:
    """With the store's lock held: the diff_ids the leases in the directory
    `leases` hold.  A lease whose holder file is gone, and that no live
    process is still setting up, is deleted: its container was removed, or
    its state went with a reboot."""
    held: set[str] = set()
    try:
        entries = list(os.scandir(leases))
    except FileNotFoundError:
        return held
    for entry in entries:
        if not entry.name.endswith(_LEASE_SUFFIX):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:      # deleted by hand
            continue
        try:
            lease = _read_lease(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:     # its container is starting
                starting = True
            else:
                starting = False
        finally:
            os.close(fd)
        if lease is not None and (starting or os.path.lexists(lease["holder"])):
            held.update(lease["diff_ids"])
        elif not starting:
            # Its holder is gone, or (leases are written with the lock
            # held) its writer died before it was whole.
            os.unlink(entry.path)
    return held


def _read_lease(fd: int) -> dict | None:
    """The lease open at `fd`, or None if it is not one."""
    try:
        with os.fdopen(os.dup(fd), "rb") as f:
            lease = json.load(f)
        if isinstance(lease["holder"], str) and all(isinstance(d, str) for d in lease["diff_ids"]):
            return lease
    except (ValueError, KeyError, TypeError):
        pass
    return None
