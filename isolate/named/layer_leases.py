"""Detached containers' leases on the image store layers they stack.

A running Container holds its lower layers with flocks (isolate.layers.in_use),
which go with the process that started it; `isolate run -d` exits at once.
So a detached container leases its layers in their store (ImageStore.lease,
protocol in isolate.images.store) for as long as its state record exists, and
`isolate rm` ends the lease.  isolate.named.containers calls the two functions here:

    with layer_leases.leasing(states.path(name), config.rootfs) as leases:
        ... start the container ...
        record.config[layer_leases.RECORD_KEY] = leases
        states.save(record)
    ...
    layer_leases.release(record.config)     # at rm
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from isolate.images.store import ImageStore, store_layer
from isolate.overlay import Overlay

#: The key under which isolate.named.containers keeps a container's leases in its state record.
RECORD_KEY = "layer_leases"


@contextlib.contextmanager
def leasing(holder: str, rootfs: Any) -> Iterator[list[str]]:
    """Lease every store layer of the root `rootfs` (an Overlay; anything
    else has none) for as long as the file `holder` (the container's state
    record) exists; yields the leases' paths, for release() at removal.

    Write `holder` inside the block: until the block ends the leases hold
    without it.  If the block raises, they are dropped."""
    held: list[tuple[ImageStore, str, int]] = []
    try:
        for store, diff_ids in _stores(rootfs).items():
            path, fd = store.lease(holder, diff_ids)
            held.append((store, path, fd))
        yield [path for _, path, _ in held]
    except BaseException:
        for store, path, fd in held:
            os.close(fd)
            store.end_lease(path)
        held.clear()
        raise
    finally:
        for _, _, fd in held:
            os.close(fd)


def release(saved: dict[str, Any]) -> None:
    """End the leases that a removed container's saved config lists under
    RECORD_KEY (from leasing()), and delete the layers only they kept; a
    lease already gone is skipped."""
    for path in saved.get(RECORD_KEY, []):
        root = os.path.dirname(os.path.dirname(path))
        if os.path.exists(path):
            ImageStore(root).end_lease(path)


def _stores(rootfs: Any) -> dict[ImageStore, list[str]]:
    """The store layers among `rootfs`'s lower layers, by store."""
    found: dict[str, list[str]] = {}
    if isinstance(rootfs, Overlay):
        for lower in rootfs.lower:
            layer = store_layer(lower)
            if layer is not None:
                found.setdefault(layer[0], []).append(layer[1])
    return {ImageStore(root): diff_ids for root, diff_ids in found.items()}
