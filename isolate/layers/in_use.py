"""Layers in use: a running container holds each lower layer directory of
its Overlay with a shared flock(2); the image store deletes a layer only
once it can take an exclusive one (isolate/images/store.py, "Layers in use").

Changing an overlay's lower layers while it is mounted is undefined
behaviour, so `isolate rmi` must not pull a layer from under a container.
A lock on the directory itself, not on a path, survives the store moving
the directory around.
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable

from isolate.errors import ConfigError

_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def hold(directories: Iterable[str]) -> list[int]:
    """Take a shared lock on each directory; returns the fds that hold them."""
    fds: list[int] = []
    try:
        for path in directories:
            fd = os.open(path, _FLAGS)
            fds.append(fd)
            fcntl.flock(fd, fcntl.LOCK_SH)
            _check_still_there(path, fd)
    except BaseException:
        release(fds)
        raise
    return fds


def _check_still_there(path: str, fd: int) -> None:
    """The store may have moved the layer away between our open and flock."""
    held = os.fstat(fd)
    try:
        now = os.stat(path)
    except FileNotFoundError:
        now = None
    if now is None or (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
        raise ConfigError("rootfs", f"the layer {path} was removed as the container started")


def release(fds: list[int]) -> None:
    """Drop the locks `hold` took (closing the fds drops them)."""
    while fds:
        os.close(fds.pop())


def lock_unused(path: str) -> int | None:
    """An fd holding the directory `path` (not followed if a symlink)
    exclusively, or None while a container uses it."""
    fd = os.open(path, _FLAGS | os.O_NOFOLLOW)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd
