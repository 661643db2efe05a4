"""This process's mount table, from /proc/self/mountinfo."""
from __future__ import annotations

import os
import re

import attrs


@attrs.frozen
class Mount:
    """One line of mountinfo: where it is mounted, its filesystem type,
    and its superblock options (for cgroup v1, its controllers)."""

    point: str
    fstype: str
    super_options: str


def mounts() -> list[Mount]:
    """Every mount of this process's mount namespace, in mountinfo order."""
    with open("/proc/self/mountinfo", "rb") as f:
        return [_parse(line.split()) for line in f]


def _parse(fields: list[bytes]) -> Mount:
    # After the optional fields, "-" then fstype, source, super options.
    tail = fields[fields.index(b"-") + 1:]
    return Mount(_unescape(fields[4]), os.fsdecode(tail[0]), os.fsdecode(tail[2]))


def _unescape(field: bytes) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    return os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field))
