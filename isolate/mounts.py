"""Extra mounts a container gets on top of its root filesystem.

Each kind is a frozen attrs class that checks its arguments when it is
built, so a bad mount fails in the caller's code, not in the child.
"""
from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable

import attrs

from isolate.errors import ConfigError
from isolate._util.units import parse_size


def container_path(value: str | os.PathLike, field: str) -> str:
    """A normalized absolute path inside the container, other than "/"."""
    path = _text(value, field)
    if not path.startswith("/"):
        raise ConfigError(field, f"{path!r} must be an absolute path")
    normal = posixpath.normpath(path)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if ".." in path.split("/"):
        raise ConfigError(field, f"{path!r} must not contain '..'")
    if normal == "/":
        raise ConfigError(field, "cannot mount over the container's root '/'")
    return normal


def _text(value: str | os.PathLike, field: str) -> str:
    try:
        path = os.fsdecode(value)
    except TypeError:
        raise ConfigError(field, f"expected a path, got {type(value).__name__}") from None
    if "\0" in path:
        raise ConfigError(field, f"{path!r} contains a NUL byte")
    return path


def _host_source(value: str | os.PathLike) -> str:
    path = os.path.abspath(_text(value, "Bind.source"))
    if not os.path.exists(path):
        raise ConfigError("Bind.source", f"{path} does not exist")
    return path


def _target(field: str):
    return lambda value: container_path(value, field)


def container_paths(field: str):
    """An attrs converter: a tuple of normalized container paths (None: none)."""
    def convert(value: Iterable[str | os.PathLike] | None) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, (str, bytes)):
            raise ConfigError(field, f"expected a list of paths, got {value!r}")
        return tuple(container_path(path, field) for path in value)
    return convert


@attrs.frozen
class Bind:
    """Bind-mount host path `source` at `target` (read-only by default)."""

    source: str = attrs.field(converter=_host_source)
    target: str = attrs.field(converter=_target("Bind.target"))
    readonly: bool = attrs.field(default=True, converter=bool)

    @property
    def is_dir(self) -> bool:
        return os.path.isdir(self.source)


def _tmpfs_size(value: int | str | None) -> int | None:
    return None if value is None else parse_size(value, "Tmpfs.size")


def _mode(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0o7777:
        raise ConfigError("Tmpfs.mode", f"expected a permission mode like 0o755, got {value!r}")
    return value


@attrs.frozen
class Tmpfs:
    """A fresh, private tmpfs at `target` (`size` in bytes or "64M")."""

    target: str = attrs.field(converter=_target("Tmpfs.target"))
    size: int | None = attrs.field(default=None, converter=_tmpfs_size)
    mode: int = attrs.field(default=0o755, converter=_mode)


Mount = (Bind, Tmpfs)
