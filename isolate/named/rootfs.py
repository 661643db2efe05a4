"""What a named container's root filesystem is, as its record says: the
host's own root, a directory, or an Overlay of layers, and which stored
image those layers are.

A record keeps an Overlay root as attrs.asdict(Overlay) (isolate.named.state
exec_config): its lower layer directories, bottom first, and its upper
(None for the tmpfs upper of ``run --image``).  The image is not recorded;
it is found again as the image of the store whose layers make exactly those
lower layers, as `run --image` stacked them (Image.overlay()).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from isolate.errors import IsolateError
from isolate.images.store import Image, ImageStore, store_layer
from isolate.named.state import ContainerState

__all__ = ["image_of", "overlay_of", "stored_layers"]


def overlay_of(record: ContainerState) -> Mapping[str, Any] | None:
    """The record's Overlay root (lower, upper, work, size), or None when
    its root is the host's or a directory."""
    saved = record.config.get("rootfs")
    return saved if isinstance(saved, Mapping) else None


def stored_layers(overlay: Mapping[str, Any]) -> tuple[str, list[str]] | None:
    """(store root, diff_ids bottom first) when every lower layer of
    `overlay` is a layer of one image store, else None."""
    found = [store_layer(lower) for lower in overlay.get("lower") or ()]
    if not found or any(layer is None for layer in found):
        return None
    roots = {root for root, _ in found}
    if len(roots) != 1:
        return None
    return roots.pop(), [diff_id for _, diff_id in found]


def image_of(record: ContainerState) -> Image | None:
    """The stored image the container was started from, or None: its root
    is no overlay of store layers, or no image (left) has those layers."""
    overlay = overlay_of(record)
    layers = stored_layers(overlay) if overlay is not None else None
    if layers is None:
        return None
    lowers = tuple(overlay["lower"])
    for image in ImageStore(layers[0]).images():
        try:
            if image.overlay().lower == lowers:
                return image
        except IsolateError:   # an image whose layers are gone: not this one
            continue
    return None
