"""This process's mount table, from /proc/self/mountinfo."""
from __future__ import annotations

import os
import re
from typing import NamedTuple


class Mount(NamedTuple):
    """One line of mountinfo: where it is mounted, its filesystem type,
    and its superblock options (for cgroup v1, its controllers)."""

    point: str
    fstype: str
    super_options: str


def mounts() -> list[Mount]:
    """Every mount of this process's mount namespace, in mountinfo order.

    Read on every spawn of an Overlay root in a user namespace: the file is
    decoded once, and only fields holding an escape go through the regex."""
    with open("/proc/self/mountinfo", "rb") as f:
        text = os.fsdecode(f.read())
    return [_parse(line.split()) for line in text.splitlines()]


def _parse(fields: list[str]) -> Mount:
    # After the optional fields, "-" then fstype, source, super options.
    tail = fields[fields.index("-") + 1:]
    return Mount(_unescape(fields[4]), tail[0], tail[2])


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash (all ASCII) as \ooo.
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field) if "\\" in field else field


_ESCAPE = re.compile(r"\\([0-7]{3})")
