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

import io
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import attrs

from isolate._util import mountinfo, units
from isolate.errors import ConfigError
from isolate._util.paths import within

if TYPE_CHECKING:   # diff() imports it: it pulls in tarfile, which running a container never needs
    from isolate.layers import write

#: overlayfs stacks at most this many lower layers (OVL_MAX_STACK).
MAX_LOWERS = 500

#: mount(2) passes its options in one page, NUL included.
MAX_OPTIONS = 4095

#: The kernel that takes lower layers one at a time ("lowerdir+"), beyond
#: what one page of mount(2) options holds.
LAYER_BY_LAYER_KERNEL = (6, 8)

#: The longest string value fsconfig(2) accepts (it copies at most 256
#: bytes, NUL included).
MAX_FSCONFIG_VALUE = 255

#: Characters overlayfs treats as separators in its options.
_SPECIAL = (",", ":", "\\", "\n")

_WORK_LEFTOVERS = {"work", "index"}


def _directory(field: str, value: str | os.PathLike) -> str:
    path = os.path.abspath(os.fsdecode(value))
    if any(c in path for c in _SPECIAL):
        raise ConfigError(field, f"{path!r}: overlayfs cannot take a path containing ',', ':', "
                          "'\\' or a newline")
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


def _optional_dir(field: str) -> Callable[[str | os.PathLike | None], str | None]:
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
        0700 if missing, see `prepare`); None: a tmpfs that is thrown away
        with the container.
    work: overlayfs's work directory, on the same filesystem as `upper`
        and empty (or holding only what overlayfs left there); defaults to
        "<upper>.work", so that two uppers side by side never share one.
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
            object.__setattr__(self, "work", self.upper + ".work")
        _check_upper(self.upper, self.work, self.lower)

    @property
    def ephemeral(self) -> bool:
        """Whether the upper layer is a tmpfs thrown away with the container."""
        return self.upper is None

    def options(self, upper: str, work: str) -> str | None:
        """The mount(2) options with the given upper and work paths, or
        None when they exceed the page mount(2) takes: the layers must then
        go one at a time (see `check_layer_by_layer`)."""
        # overlayfs lists the top layer first.
        lowers = ":".join(reversed(self.lower))
        options = f"lowerdir={lowers},upperdir={upper},workdir={work},userxattr"
        return options if len(os.fsencode(options)) <= MAX_OPTIONS else None

    def check_layer_by_layer(self, upper: str, work: str) -> None:
        """Raise unless this kernel can take the layers one at a time
        (fsconfig "lowerdir+", Linux 6.8), each path within the 255 bytes
        fsconfig takes for a value."""
        release = os.uname().release
        if _kernel_version(release) < LAYER_BY_LAYER_KERNEL:
            raise ConfigError("Overlay.lower", f"{len(self.lower)} layers need more than the {MAX_OPTIONS} "
                              f"bytes of mount options Linux {release} takes (6.8 takes any number "
                              "up to 500; shorter layer paths fit more layers)")
        named = [(f"Overlay.lower[{i}]", path) for i, path in enumerate(self.lower)]
        for field, path in named + [("Overlay.upper", upper), ("Overlay.work", work)]:
            if len(os.fsencode(path)) > MAX_FSCONFIG_VALUE:
                raise ConfigError(field, f"{path[:60]}...: with this many layers every path must fit "
                                  f"in {MAX_FSCONFIG_VALUE} bytes")

    def check_user_namespace(self) -> None:
        """Raise if the kernel will refuse these layers in a user namespace.

        There every mount inherited from the host is locked to what covers
        it, and overlayfs (which takes a private clone of each layer)
        refuses a layer with mounts beneath it: they would uncover what
        those mounts hide.  "/" is such a layer on every host."""
        layers = [(f"Overlay.lower[{i}]", lower) for i, lower in enumerate(self.lower)]
        if self.upper is not None:
            layers += [("Overlay.upper", self.upper), ("Overlay.work", self.work)]
        points = [mount.point for mount in mountinfo.mounts()]
        for field, path in layers:
            beneath = mounts_beneath(path, points)
            if beneath:
                raise ConfigError(field, f"{path} has mounts beneath it "
                                  f"({', '.join(beneath[:3])}{', ...' if len(beneath) > 3 else ''}); "
                                  "in a user namespace the kernel refuses it as a layer: use a "
                                  "directory without mounts beneath, or (as root) namespaces without 'user'")

    def prepare(self) -> None:
        """Create a persistent upper and its work directory if missing,
        both 0700; an existing one keeps its mode.

        The container's root may make setuid files in the upper (setuid
        root, for a root caller): no other host user may reach them.  The
        upper is also the container's "/", whose mode it shows: a workload
        running as another user needs an upper the caller made searchable
        (0755) inside a directory only the caller can enter."""
        if self.upper is None:
            return
        for path in (self.upper, self.work):
            if not os.path.isdir(path):
                os.mkdir(path, 0o700)   # its parent was checked when the Overlay was made
                os.chmod(path, 0o700)   # whatever the umask is
        _check_same_filesystem(self.upper, self.work)

    def diff(self, out: str | os.PathLike | None = None, *,
             uid_map: write.IdMap | None = None,
             gid_map: write.IdMap | None = None) -> bytes | None:
        """The changes in the persistent upper layer, as an OCI layer tar
        (uncompressed; overlay whiteouts become ``.wh.`` entries).

        Written to the file `out` if given, else returned as bytes. Owners
        are written as the container saw them: through `uid_map`/`gid_map`
        (the container's id maps), by default those isolate gives a
        rootless caller's container (its own ids are root inside); for
        root, ids as they are."""
        if self.upper is None:
            raise ConfigError("Overlay.upper", "an ephemeral upper is gone with its container; "
                              "give upper= to keep the changes")
        from isolate.layers import write
        if os.geteuid() != 0:
            uid_map = uid_map if uid_map is not None else [(0, os.geteuid(), 1)]
            gid_map = gid_map if gid_map is not None else [(0, os.getegid(), 1)]
        if out is not None:
            with open(out, "wb") as f:
                write.write_layer(self.upper, f, uid_map=uid_map, gid_map=gid_map)
            return None
        buf = io.BytesIO()
        write.write_layer(self.upper, buf, uid_map=uid_map, gid_map=gid_map)
        return buf.getvalue()


def _kernel_version(release: str) -> tuple[int, int]:
    match = re.match(r"(\d+)\.(\d+)", release)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _check_upper(upper: str, work: str, lowers: Sequence[str]) -> None:
    """What can be checked before the directories exist."""
    real_upper, real_work = os.path.realpath(upper), os.path.realpath(work)
    if within(real_work, real_upper) or within(real_upper, real_work):
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
    # An upper beneath a lower is allowed (the host's / as the lower, the
    # upper somewhere in it); a lower within the upper or work is not.
    for index, lower in enumerate(lowers):
        real = os.path.realpath(lower)
        for field, path in (("Overlay.upper", real_upper), ("Overlay.work", real_work)):
            if within(real, path):
                raise ConfigError(field, f"{path} holds the lower layer {lower} (lower[{index}])")


def _check_nesting(lowers: Sequence[str]) -> None:
    """overlayfs refuses (ELOOP) a layer inside another on one filesystem."""
    real = [os.path.realpath(lower) for lower in lowers]
    for i, outer in enumerate(real):
        for j, inner in enumerate(real):
            if i != j and within(inner, outer) and os.stat(outer).st_dev == os.stat(inner).st_dev:
                raise ConfigError(f"Overlay.lower[{j}]", f"{lowers[j]} lies inside the layer {lowers[i]} "
                                  "on the same filesystem; overlayfs refuses overlapping layers")


def mounts_beneath(path: str, points: Sequence[str]) -> list[str]:
    """The mount `points` strictly beneath `path` (a symlink resolved)."""
    path = os.path.realpath(path)
    return [p for p in points if p != path and within(p, path)]


def _check_same_filesystem(upper: str, work: str) -> None:
    if os.stat(upper).st_dev != os.stat(work).st_dev:
        raise ConfigError("Overlay.work", f"{work} is not on the same filesystem as the upper {upper}")
