"""An image's User ("", "uid", "uid:gid", "name", "name:group") as the
numeric ids a container runs with, names looked up in the /etc/passwd and
/etc/group its layers show; also a user given as ``run -u`` or ``exec -u``,
looked up in a root filesystem that is one directory (resolve_user_in)."""
from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence

from isolate.errors import ImageError
from isolate.layers.format import OPAQUE_XATTR, is_whiteout

#: /etc/passwd and /etc/group are read whole; refuse absurd ones.
_MAX_ETC_FILE = 16 << 20

#: A numeric id: ASCII digits only (str.isdigit accepts "²", int() not).
_NUMBER = re.compile(r"[0-9]+")

#: Ids are 32 bits, and (uid_t)-1 means "no change" to the kernel.
_MAX_ID = 2**32 - 2


def resolve_user(user: str, layers: Sequence[str], image: str) -> tuple[int, int] | None:
    """(uid, gid) for `user`, names looked up in /etc/passwd and /etc/group
    of the overlay of `layers` (bottom first); None when `user` is empty.
    A numeric user missing from /etc/passwd gets gid 0, as Docker does.
    Raises ImageError naming `image` for an unknown name."""
    return _resolve(user, layers, f"image {image}")


def resolve_user_in(user: str, root: str, where: str) -> tuple[int, int] | None:
    """As resolve_user, for the root filesystem that the directory `root`
    is (a rootfs, the host's /, a running container's /proc/PID/root);
    `where` names it in errors ("rootfs /srv/root")."""
    # One directory is an overlay of one layer: the same lookup, which
    # follows no symlink in etc/passwd or etc/group out of `root`.
    return _resolve(user, [root], where)


def _resolve(user: str, layers: Sequence[str], where: str) -> tuple[int, int] | None:
    """resolve_user's lookup; errors begin with `where`."""
    if not user:
        return None
    name, has_group, group = user.partition(":")
    passwd = _table(layers, "passwd", where)
    if _NUMBER.fullmatch(name):
        uid = _id(name, user, where)
        gid = next((int(row[3]) for row in passwd if row[2] == name), 0)
    else:
        row = next((row for row in passwd if row[0] == name), None)
        if row is None:
            raise ImageError(f"{where}: user {name!r} is not in its /etc/passwd")
        uid, gid = int(row[2]), int(row[3])
    if has_group:
        if _NUMBER.fullmatch(group):
            gid = _id(group, user, where)
        else:
            row = next((row for row in _table(layers, "group", where) if row[0] == group), None)
            if row is None:
                raise ImageError(f"{where}: group {group!r} is not in its /etc/group")
            gid = int(row[2])
    return uid, gid


def home_dir(uid: int, layers: Sequence[str], image: str) -> str:
    """The home directory /etc/passwd gives `uid`, or "/" (as Docker sets HOME)."""
    row = next((row for row in _table(layers, "passwd", f"image {image}") if int(row[2]) == uid),
               None)
    return row[5] if row is not None and len(row) > 5 and row[5].startswith("/") else "/"


def _id(text: str, user: str, where: str) -> int:
    value = int(text)
    if value > _MAX_ID:
        raise ImageError(f"{where}: id {value} in {user!r} is out of range")
    return value


def _table(layers: Sequence[str], name: str, where: str) -> list[list[str]]:
    """The rows of /etc/passwd or /etc/group (their numeric fields
    checked), as the overlay of `layers` shows the file; errors begin
    with `where`."""
    path = _merged_file(layers, ("etc", name))
    if path is None:
        return []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with open(fd, "rb") as f:
            text = f.read(_MAX_ETC_FILE).decode("utf-8", "replace")
    except OSError as exc:
        raise ImageError(f"{where}: cannot read {path}: {exc.strerror}") from exc
    numeric = (2, 3) if name == "passwd" else (2,)
    rows = []
    for line in text.splitlines():
        row = line.split(":")
        if len(row) > max(numeric) and all(_NUMBER.fullmatch(row[i]) for i in numeric):
            rows.append(row)
    return rows


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
            if is_whiteout(st) or (not last and not stat.S_ISDIR(st.st_mode)):
                return None
            if last:
                return path if stat.S_ISREG(st.st_mode) else None
            if _xattr(path, OPAQUE_XATTR) == b"y":
                # Nothing below shows through this directory; what it
                # holds itself still counts.
                child = os.path.join(path, *parts[depth + 1:])
                return child if os.path.isfile(child) and not os.path.islink(child) else None
    return None


def _xattr(path: str, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None
