"""How far an import may expand: an archive's layers are compressed, and a
small blob can decompress into a tar that fills the disk (gzip reaches
about 1000:1, zstd far more).  A layer's holes are kept as holes
(isolate.layers.apply), so what an import writes is bounded by the bytes of
its uncompressed tars; those are counted as they stream, and the import
stops with an ImageError, leaving nothing, once they pass

- per layer: `max_ratio` times the layer's stored (compressed) size, or
  `ratio_floor` bytes if that is more: real layers expand 2 to 10 times,
  and a small layer holding a big file of zeros still fits the floor;
- per import: the same rule over the sum of its layers' stored sizes,
  so an image of many small bombs is stopped too; and at most
  `max_import_size` bytes when it is set (default: no such limit).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from isolate._util import units
from isolate.errors import ConfigError, ImageError
from isolate.images.layer_blob import LayerBlob

#: Default cap: a layer's tar may be this many times its stored size...
DEFAULT_MAX_RATIO = 100
#: ...or this many bytes, whichever is more.
DEFAULT_RATIO_FLOOR = 256 << 20


def _ratio(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 1:
        raise ConfigError("ImageStore.max_ratio", f"expected a number >= 1, got {value!r}")
    return float(value)


def _floor(value: int | str) -> int:
    return units.parse_size(value, "ImageStore.ratio_floor")


def _optional_size(value: int | str | None) -> int | None:
    return None if value is None else units.parse_size(value, "ImageStore.max_import_size")


@attrs.frozen
class ExpansionLimits:
    """The limits above, as given to ImageStore."""

    max_ratio: float = attrs.field(default=DEFAULT_MAX_RATIO, converter=_ratio)
    ratio_floor: int = attrs.field(default=DEFAULT_RATIO_FLOOR, converter=_floor)
    max_import_size: int | None = attrs.field(default=None, converter=_optional_size)

    def allowance(self, stored: int) -> int:
        """The uncompressed bytes that `stored` bytes may become."""
        return max(self.ratio_floor, int(self.max_ratio * stored))

    def describe(self) -> str:
        return f"max_ratio={self.max_ratio:g}, ratio_floor={self.ratio_floor}"


class ImportBudget:
    """The uncompressed bytes one import may still extract."""

    def __init__(self, limits: ExpansionLimits, source: str, layers: Sequence[LayerBlob]) -> None:
        self._limits = limits
        self._source = source
        self._stored = sum(blob.size for blob in layers)
        by_ratio = limits.allowance(self._stored)
        self._allowed = by_ratio if limits.max_import_size is None else min(by_ratio, limits.max_import_size)
        self._used = 0

    def counter(self, blob: LayerBlob) -> Callable[[int], None]:
        """A callback for each `n` uncompressed bytes of `blob` read; it
        raises ImageError once the layer or the import is over its limit."""
        allowed = self._limits.allowance(blob.size)
        used = 0

        def count(n: int) -> None:
            nonlocal used
            used += n
            self._used += n
            if used > allowed:
                raise ImageError(f"{blob.location}: layer {blob.diff_id} expands to more than "
                                 f"{allowed} bytes from {blob.size} stored; refused "
                                 f"(ImageStore {self._limits.describe()})")
            if self._used > self._allowed:
                raise ImageError(f"{self._source}: the image's layers expand to more than "
                                 f"{self._allowed} bytes from {self._stored} stored; refused at "
                                 f"layer {blob.diff_id} (ImageStore {self._limits.describe()}, "
                                 f"max_import_size={self._limits.max_import_size})")
        return count
