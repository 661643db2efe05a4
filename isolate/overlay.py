"""Overlay: a container root made of read-only lower layers and one
writable upper layer (overlayfs).

The overlay is mounted by the container's setup process inside the
container's own mount namespace, so the host never sees it and nothing
needs unmounting when the container ends.  The upper layer is either a
tmpfs that disappears with the container (the default) or a directory the
caller keeps.

Overlay is always mounted with ``userxattr``: its metadata (opaque
directories) lives in ``user.overlay.*`` extended attributes, which works
both for root and inside a user namespace (kernel >= 5.11), so the same
layer directories serve every caller.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence

import attrs

from . import units
from .errors import ConfigError

#: overlayfs stacks at most this many lower layers (OVL_MAX_STACK).
MAX_LOWERS = 500

#: mount(2) passes its options in one page, NUL included.
MAX_OPTIONS = 4095

#: Characters overlayfs treats as separators in its options.
_SPECIAL = (",", ":", "\\", "\n")

_WORK_LEFTOVERS = {"work", "index"}


def _directory(field: str, value: str | os.PathLike) -> str:
    path = os.path.abspath(os.fsdecode(value))
    if any(c in path for c in _SPECIAL):
        raise ConfigError(field, f"{path!r}: overlayfs cannot take a path containing ',', ':' or '\\'")
    return path


def _lowers(value: Iterable[str | os.PathLike]) -> tuple[str, ...]:
    if isinstance(value, (str, bytes, os.PathLike)):
        value = [value]
    lowers = tuple(_directory(f"Overlay.lower[{i}]", v) for i, v in enumerate(value))
    if not lowers:
        raise ConfigError("Overlay.lower", "at least one lower directory is needed")
    if len(lowers) > MAX_LOWERS:
        raise ConfigError("Overlay.lower", f"{len(lowers)} layers; overlayfs stacks at most {MAX_LOWERS}")
    for index, path in enumerate(lowers):
        if not os.path.isdir(path):
            what = "does not exist" if not os.path.lexists(path) else "is not a directory"
            raise ConfigError(f"Overlay.lower[{index}]", f"{path} {what}")
    _check_nesting(lowers)
    return lowers


def _optional_dir(field: str):
    def convert(value: str | os.PathLike | None) -> str | None:
        return None if value is None else _directory(field, value)
    return convert


def _size(value: int | str | None) -> int | None:
    return None if value is None else units.parse_size(value, "Overlay.size")


@attrs.frozen
class Overlay:
    """An overlayfs root: `lower` layers, bottom first (as an image lists
    them), under a writable upper layer.

    lower: directories, the first at the bottom; each must exist.
    upper: a directory for the changes, kept after the container (created
        if missing); None: a tmpfs that is thrown away with the container.
    work: overlayfs's work directory, on the same filesystem as `upper`
        and empty (or holding only what overlayfs left there); defaults to
        "work" next to `upper` ("<upper>.work" if upper is itself "work").
    size: with no upper, the tmpfs's size limit ("512M", bytes; None: the
        kernel's default, half of RAM).
    """

    lower: tuple[str, ...] = attrs.field(converter=_lowers)
    upper: str | None = attrs.field(default=None, converter=_optional_dir("Overlay.upper"))
    work: str | None = attrs.field(default=None, converter=_optional_dir("Overlay.work"))
    size: int | None = attrs.field(default=None, converter=_size)

    def __attrs_post_init__(self) -> None:
        if self.upper is None:
            if self.work is not None:
                raise ConfigError("Overlay.work", "only used with a persistent upper")
            return
        if self.size is not None:
            raise ConfigError("Overlay.size", "only used with an ephemeral (tmpfs) upper")
        if self.work is None:
            work = os.path.join(os.path.dirname(self.upper), "work")
            object.__setattr__(self, "work", work if work != self.upper else self.upper + ".work")
        _check_upper(self.upper, self.work, self.lower)

    @property
    def ephemeral(self) -> bool:
        """Whether the upper layer is a tmpfs thrown away with the container."""
        return self.upper is None

    def options(self, upper: str, work: str) -> str:
        """The overlay mount options, with the given upper and work paths."""
        # overlayfs lists the top layer first.
        lowers = ":".join(reversed(self.lower))
        options = f"lowerdir={lowers},upperdir={upper},workdir={work},userxattr"
        if len(options) > MAX_OPTIONS:
            raise ConfigError("Overlay.lower", f"{len(self.lower)} layers need {len(options)} bytes "
                              f"of mount options; the kernel takes at most {MAX_OPTIONS} "
                              "(shorter layer paths fit more layers)")
        return options

    def check_user_namespace(self) -> None:
        """Raise if the kernel will refuse these layers in a user namespace.

        There every mount inherited from the host is locked to what covers
        it, and overlayfs (which takes a private clone of each layer)
        refuses a layer with mounts beneath it: they would uncover what
        those mounts hide.  "/" is such a layer on every host."""
        for index, lower in enumerate(self.lower):
            beneath = mounts_beneath(lower)
            if beneath:
                raise ConfigError(f"Overlay.lower[{index}]", f"{lower} has mounts beneath it "
                                  f"({', '.join(beneath[:3])}{', ...' if len(beneath) > 3 else ''}); "
                                  "in a user namespace the kernel refuses it as a layer: use a "
                                  "directory without mounts beneath, or (as root) namespaces without 'user'")

    def prepare(self) -> None:
        """Create a persistent upper and its work directory if missing."""
        if self.upper is None:
            return
        os.makedirs(self.upper, mode=0o755, exist_ok=True)
        os.makedirs(self.work, mode=0o700, exist_ok=True)
        _check_same_filesystem(self.upper, self.work)

    def diff(self, out: str | os.PathLike | None = None) -> bytes | None:
        """The changes in the persistent upper layer, as an OCI layer tar
        (uncompressed; overlay whiteouts become ``.wh.`` entries).

        Written to the file `out` if given, else returned as bytes."""
        from . import layer_write
        if self.upper is None:
            raise ConfigError("Overlay.upper", "an ephemeral upper is gone with its container; "
                              "give upper= to keep the changes")
        if out is not None:
            with open(out, "wb") as f:
                layer_write.write_layer(self.upper, f)
            return None
        import io
        buf = io.BytesIO()
        layer_write.write_layer(self.upper, buf)
        return buf.getvalue()


def _check_upper(upper: str, work: str, lowers: Sequence[str]) -> None:
    """What can be checked before the directories exist."""
    if upper == work or _inside(work, upper) or _inside(upper, work):
        raise ConfigError("Overlay.work", f"{work} and the upper {upper} must be separate directories")
    for field, path in (("Overlay.upper", upper), ("Overlay.work", work)):
        if os.path.lexists(path) and not os.path.isdir(path):
            raise ConfigError(field, f"{path} is not a directory")
        parent = os.path.dirname(path)
        if not os.path.lexists(path) and not os.path.isdir(parent):
            raise ConfigError(field, f"{path}: its parent {parent} does not exist")
    if os.path.isdir(upper) and os.path.isdir(work):
        _check_same_filesystem(upper, work)
    if os.path.isdir(work):
        extra = sorted(set(os.listdir(work)) - _WORK_LEFTOVERS)
        if extra:
            raise ConfigError("Overlay.work", f"{work} is not empty (holds {', '.join(extra[:3])})")
    for lower in lowers:
        if upper == lower:
            raise ConfigError("Overlay.upper", f"{upper} is also a lower layer")


def _check_nesting(lowers: Sequence[str]) -> None:
    """overlayfs refuses (ELOOP) a layer inside another on one filesystem."""
    for i, outer in enumerate(lowers):
        for j, inner in enumerate(lowers):
            if i != j and (outer == inner or _inside(inner, outer)) and \
                    os.stat(outer).st_dev == os.stat(inner).st_dev:
                raise ConfigError(f"Overlay.lower[{j}]", f"{inner} lies inside the layer {outer} "
                                  "on the same filesystem; overlayfs refuses overlapping layers")


def mounts_beneath(path: str) -> list[str]:
    """Mount points strictly beneath `path` in this mount namespace."""
    with open("/proc/self/mountinfo", "rb") as f:
        points = [_unescape(line.split()[4]) for line in f]
    prefix = path.rstrip("/") + "/"
    return [p for p in points if p.startswith(prefix)]


def _unescape(field: bytes) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    return os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field))


def _check_same_filesystem(upper: str, work: str) -> None:
    if os.stat(upper).st_dev != os.stat(work).st_dev:
        raise ConfigError("Overlay.work", f"{work} is not on the same filesystem as the upper {upper}")


def _inside(path: str, parent: str) -> bool:
    return path.startswith(parent.rstrip("/") + "/")
