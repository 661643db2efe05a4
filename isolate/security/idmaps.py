"""The host ids a root caller's containers run as.

A container's root must not be the host's root: file permissions would then
let it read /etc/shadow, open root's UNIX sockets and FIFOs, and write
whatever a bind exposes.  So when root starts a container on the host's
own root filesystem without giving id maps, its ids 0-65535 map to 65536
unprivileged host ids, as Docker's userns-remap and podman's
--userns=auto do.  Which ids: the ranges given to the user "isolate" in
/etc/subuid and /etc/subgid (the first of at least 65536 ids), else
DEFAULT_BASE: in the range systemd sets aside for container ids
(524288-1879048191), where no login user lives.
"""
from __future__ import annotations

import functools

#: How many ids a container gets: all that a package manager expects.
COUNT = 65536

#: The first host id of the default range (0x60000000).
DEFAULT_BASE = 0x60000000

#: The user whose /etc/subuid and /etc/subgid ranges are used, if any.
OWNER = "isolate"

IdMap = tuple[tuple[int, int, int], ...]


@functools.cache
def container_ids(kind: str) -> IdMap:
    """((0, first host id, COUNT),) for kind "uid" or "gid"."""
    return ((0, _subordinate_base(f"/etc/sub{kind}") or DEFAULT_BASE, COUNT),)


def _subordinate_base(path: str) -> int | None:
    """The first id of OWNER's first range of at least COUNT ids in `path`."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, rest = line.partition(":")
        start, _, count = rest.partition(":")
        if name == OWNER and start.isdigit() and count.isdigit() and int(count) >= COUNT:
            return int(start)
    return None
