"""Layers in use: a running container holds each lower layer directory of
its Overlay with a shared flock(2); the image store deletes a layer only
once it can take an exclusive one (isolate/images.py, "Layers in use").

Changing an overlay's lower layers while it is mounted is undefined
behaviour, so `isolate rmi` must not pull a layer from under a container.
A lock on the directory itself, not on a path, survives the store moving
the directory around.
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable

_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def hold(directories: Iterable[str]) -> list[int]:
    """Take a shared lock on each directory; returns the fds that hold them."""
    fds: list[int] = []
    try:
        for path in directories:
            fd = os.open(path, _FLAGS)
            fds.append(fd)
            fcntl.flock(fd, fcntl.LOCK_SH)
    except BaseException:
        release(fds)
        raise
    return fds


def release(fds: list[int]) -> None:
    """Drop the locks `hold` took (closing the fds drops them)."""
    while fds:
        os.close(fds.pop())


def lock_unused(path: str) -> int | None:
    """An fd holding `path` exclusively, or None while a container uses it."""
    fd = os.open(path, _FLAGS)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd
