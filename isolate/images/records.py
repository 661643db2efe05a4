"""The records of an ImageStore's images: ``images/<config hex>.json``,
one per image, holding its id (config digest), its names, its diff_ids
bottom first, the whole config JSON, when it was imported ("imported",
seconds since the epoch) and the bytes its layers hold ("size").  A record
is replaced atomically: readers see the old one or the new one.

Records written before isolate kept "imported" and "size" lack them: a
record read gets the file's mtime as its "imported", and the store measures
the size of one that has none."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any

from isolate.errors import ImageError
from isolate.images.manifests import DIGEST

Record = dict[str, Any]


class Records:
    """The records in `directory`, written through files in `tmp`."""

    def __init__(self, directory: str, tmp: str) -> None:
        self.directory = directory
        self._tmp = tmp

    def path(self, image_id: str) -> str:
        return os.path.join(self.directory, image_id.removeprefix("sha256:") + ".json")

    def all(self) -> list[Record]:
        """Every record, by id."""
        records = []
        for entry in sorted(os.listdir(self.directory)):
            if entry.endswith(".json"):
                record = self._read(os.path.join(self.directory, entry))
                if record is not None:      # removed meanwhile
                    records.append(record)
        return records

    def get(self, image_id: str) -> Record | None:
        """The record of `image_id`, None if there is none."""
        return self._read(self.path(image_id))

    def used_layers(self) -> set[str]:
        """The diff_ids that some record references."""
        return {diff_id for record in self.all() for diff_id in record["diff_ids"]}

    def write(self, record: Record) -> None:
        """Replace (or create) the record of record["id"]."""
        fd, tmp = tempfile.mkstemp(prefix="record-", suffix=".json", dir=self._tmp)
        try:
            with open(fd, "w") as f:
                json.dump(record, f, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.path(record["id"]))
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def remove(self, image_id: str) -> bool:
        """Delete the record of `image_id`; False if there was none."""
        try:
            os.unlink(self.path(image_id))
        except FileNotFoundError:
            return False
        return True

    def _read(self, path: str) -> Record | None:
        try:
            with open(path, "rb") as f:
                record = json.load(f)
                mtime = os.fstat(f.fileno()).st_mtime
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as exc:
            raise ImageError(f"{path}: unreadable image record ({exc})") from exc
        if not (isinstance(record, dict) and isinstance(record.get("id"), str)
                and DIGEST.fullmatch(record["id"])
                and os.path.basename(path) == record["id"].removeprefix("sha256:") + ".json"
                and isinstance(record.get("names"), list)
                and all(isinstance(n, str) for n in record["names"])
                and isinstance(record.get("diff_ids"), list)
                and all(isinstance(d, str) and DIGEST.fullmatch(d) for d in record["diff_ids"])
                and isinstance(record.get("config"), dict)
                and _number(record.get("imported", 0), (int, float))
                and _number(record.get("size", 0), int)):
            raise ImageError(f"{path}: malformed image record")
        record.setdefault("imported", mtime)
        return record


def _number(value: Any, kind: type | tuple[type, ...]) -> bool:
    """Whether `value` is a `kind` at least 0 (JSON true is no number,
    whatever Python thinks)."""
    return isinstance(value, kind) and not isinstance(value, bool) and value >= 0
