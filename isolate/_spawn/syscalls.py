"""One thin, checked Python function per system call.

Each function calls the kernel through the cffi extension and turns a
failure into OSError carrying errno, strerror and the path involved. The
spawn executor does not use these (its child side is C); they serve code
that acts on the calling process itself, and the tests.
"""
from __future__ import annotations

import errno
import os
import signal
from collections.abc import Callable

from isolate._native import ffi, lib

CLONE_NEWNS = lib.CLONE_NEWNS
CLONE_NEWCGROUP = lib.CLONE_NEWCGROUP
CLONE_NEWUTS = lib.CLONE_NEWUTS
CLONE_NEWIPC = lib.CLONE_NEWIPC
CLONE_NEWUSER = lib.CLONE_NEWUSER
CLONE_NEWPID = lib.CLONE_NEWPID
CLONE_NEWNET = lib.CLONE_NEWNET
CLONE_NEWTIME = lib.CLONE_NEWTIME

MS_RDONLY = lib.MS_RDONLY
MS_NOSUID = lib.MS_NOSUID
MS_NODEV = lib.MS_NODEV
MS_NOEXEC = lib.MS_NOEXEC
MS_REMOUNT = lib.MS_REMOUNT
MS_BIND = lib.MS_BIND
MS_REC = lib.MS_REC
MS_PRIVATE = lib.MS_PRIVATE
MS_SLAVE = lib.MS_SLAVE
MNT_DETACH = lib.MNT_DETACH

MOUNT_ATTR_RDONLY = lib.MOUNT_ATTR_RDONLY
MOUNT_ATTR_NOSUID = lib.MOUNT_ATTR_NOSUID
MOUNT_ATTR_NODEV = lib.MOUNT_ATTR_NODEV
MOUNT_ATTR_NOEXEC = lib.MOUNT_ATTR_NOEXEC

RESOLVE_NO_MAGICLINKS = lib.RESOLVE_NO_MAGICLINKS
RESOLVE_NO_SYMLINKS = lib.RESOLVE_NO_SYMLINKS
RESOLVE_IN_ROOT = lib.RESOLVE_IN_ROOT


def _check(rc: int, call: str, path: str | None = None, path2: str | None = None) -> None:
    if rc < 0:
        err = ffi.errno
        raise OSError(err, f"{call}: {os.strerror(err)}", path, None, path2)


def _c(text: str | bytes | None):
    if text is None:
        return ffi.NULL
    return os.fsencode(text)


def unshare(flags: int) -> None:
    """Move the calling thread into new namespaces (CLONE_NEW* flags)."""
    _check(lib.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace that `fd` refers to."""
    _check(lib.setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None = None,
          flags: int = 0, data: str | None = None) -> None:
    """mount(2)."""
    _check(lib.mount(_c(source), _c(target), _c(fstype), flags, _c(data)),
           "mount", target, source)


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    _check(lib.umount2(_c(target), flags), "umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2)."""
    _check(lib.iso_pivot_root(_c(new_root), _c(put_old)), "pivot_root", new_root, put_old)


def mount_setattr(path: str, attr_set: int, attr_clr: int = 0, recursive: bool = False) -> None:
    """mount_setattr(2) on `path` (and every mount below it if recursive)."""
    flags = lib.AT_RECURSIVE if recursive else 0
    _check(lib.iso_mount_setattr(lib.AT_FDCWD, _c(path), flags, attr_set, attr_clr),
           "mount_setattr", path)


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = 0) -> int:
    """openat2(2): open `path` relative to `dirfd` under the RESOLVE_* rules
    `resolve` (RESOLVE_IN_ROOT: as if `dirfd` were "/", so neither ".." nor
    a symlink leads out of it); returns a close-on-exec descriptor.

    EAGAIN means a rename elsewhere raced the lookup (RESOLVE_IN_ROOT
    refuses to guess): the caller may try again."""
    fd = lib.iso_openat2(dirfd, _c(path), flags | os.O_CLOEXEC, mode, resolve)
    _check(fd, "openat2", path)
    return fd


def setfsuid(uid: int) -> int:
    """setfsuid(2): the calling thread's filesystem uid (the owner of what it
    creates, the uid permissions are checked against); returns the previous
    one.  The kernel reports no error, so the result is checked by asking
    again: OSError(EPERM) if it was refused."""
    return _set_fs_id(lib.setfsuid, uid, "setfsuid")


def setfsgid(gid: int) -> int:
    """setfsgid(2), as setfsuid() for the filesystem gid."""
    return _set_fs_id(lib.setfsgid, gid, "setfsgid")


def _set_fs_id(call: Callable[[int], int], wanted: int, name: str) -> int:
    """Set a filesystem id with `call` (setfsuid or setfsgid); the previous one."""
    previous = call(wanted)
    # An id of -1 changes nothing and returns the current one.
    if call(0xFFFFFFFF) != wanted:
        raise OSError(errno.EPERM, f"{name}({wanted}): {os.strerror(errno.EPERM)}")
    return previous


def sethostname(name: str) -> None:
    """sethostname(2) in the caller's UTS namespace."""
    raw = name.encode()
    _check(lib.sethostname(raw, len(raw)), "sethostname")


def pidfd_open(pid: int) -> int:
    """A close-on-exec pidfd for `pid`."""
    return os.pidfd_open(pid)


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    """Signal the process a pidfd refers to (immune to pid reuse)."""
    signal.pidfd_send_signal(pidfd, sig)
