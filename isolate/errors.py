"""The exceptions isolate raises: one hierarchy under IsolateError.

Bad input raises ConfigError before anything is created; a step that fails
while the container is being built raises SpawnError naming that step.
"""
from __future__ import annotations

import _thread
import errno as _errno
import os


class IsolateError(Exception):
    """Base class of every exception isolate raises on purpose."""


class ConfigError(IsolateError, ValueError):
    """An invalid configuration value; `field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class SpawnError(IsolateError, OSError):
    """A step of building or starting the container failed.

    `step` describes the step and its arguments, e.g.
    ``"pivot_root('/tmp', '/tmp')"``; `errno` is the error number.
    """

    def __init__(self, err: int, step: str, hint: str = "") -> None:
        message = f"{step}: {os.strerror(err)} ({_errno.errorcode.get(err, err)})"
        if hint:
            message = f"{message}; {hint}"
        super().__init__(err, message)
        self.step = step

    def __str__(self) -> str:
        return self.strerror


class ExecutableNotFound(SpawnError, FileNotFoundError):
    """The command's executable does not exist in the container."""

    def __init__(self, executable: str, searched: tuple[str, ...] = ()) -> None:
        where = f" (searched {', '.join(searched)})" if len(searched) > 1 else ""
        super().__init__(_errno.ENOENT, f"exec {executable!r}{where}")
        self.filename = executable


class UserNamespaceError(SpawnError, PermissionError):
    """The host does not let this caller create a user namespace."""


class SpawnTimeout(SpawnError, TimeoutError):
    """The container's process had not started when the timeout given to
    start() expired; it was killed."""


class NamespaceError(IsolateError, OSError):
    """A namespace could not be opened, joined, created or pinned."""


class CgroupError(IsolateError, OSError):
    """A container's cgroup could not be created, limited, or used; the
    message names the cgroup file and says why."""

    def __str__(self) -> str:
        return self.strerror


class LayerError(IsolateError, ValueError):
    """A layer tar could not be applied: an entry escapes the layer root, is
    a kind of file this caller may not create, or the tar is corrupt.  The
    message names the layer and the entry; nothing of the layer is left."""


class ImageError(IsolateError, ValueError):
    """An image archive or store is malformed, its digests do not match, or
    the image asked for is not there; the message names the file and digest."""


def _subprocess_errors() -> dict[str, type]:
    """TimeoutExpired and CalledProcessError, which extend subprocess's so
    that code written for subprocess catches them.  Made on first use (PEP
    562 __getattr__ below): importing subprocess costs ~5 ms, which run()
    pays anyway but `isolate ps` and the other CLI verbs need not."""
    import subprocess

    class TimeoutExpired(IsolateError, subprocess.TimeoutExpired):
        """The container outlived its timeout and was killed."""

    class CalledProcessError(IsolateError, subprocess.CalledProcessError):
        """run(check=True) saw a non-zero return code."""

    for cls in (TimeoutExpired, CalledProcessError):
        cls.__qualname__ = cls.__name__   # pickle finds them as isolate.errors.NAME
    return {cls.__name__: cls for cls in (TimeoutExpired, CalledProcessError)}


_making = _thread.allocate_lock()   # two threads must not make two classes of one name


def __getattr__(name: str) -> type:
    if name in ("TimeoutExpired", "CalledProcessError"):
        with _making:
            if name not in globals():
                globals().update(_subprocess_errors())   # later lookups find them directly
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
