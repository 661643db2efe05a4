"""The JSON documents of an image archive (indexes, manifests, configs),
parsed and checked field by field: whatever an archive holds, reading it
raises ImageError naming the file, never another exception."""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from isolate.errors import ImageError

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

_KINDS = {dict: "a JSON object", list: "a JSON array", str: "a string", int: "an integer"}

#: The fields of a config's "config" section that isolate uses, by type.
_STRING_LISTS = ("Env", "Cmd", "Entrypoint")
_STRINGS = ("WorkingDir", "User")


def parse(data: bytes, where: str, kind: type = dict) -> Any:
    """The JSON document `data`, which must be a `kind` (dict or list)."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:     # RecursionError: "[[[[..."
        raise ImageError(f"{where}: not valid JSON ({type(exc).__name__})") from None
    if not isinstance(doc, kind):
        raise ImageError(f"{where}: expected {_KINDS[kind]}")
    return doc


def field(doc: dict[str, Any], key: str, kind: type, where: str) -> Any:
    """doc[key] if it is a `kind`; None if it is missing or null."""
    value = doc.get(key)
    if value is None:
        return None
    # JSON true is no integer, whatever Python thinks.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ImageError(f"{where}: {key!r} must be {_KINDS[kind]}")
    return value


def required(doc: dict[str, Any], key: str, kind: type, where: str) -> Any:
    """doc[key], which must be a `kind`."""
    value = field(doc, key, kind, where)
    if value is None:
        raise ImageError(f"{where}: no {key!r} ({_KINDS[kind]})")
    return value


def strings(doc: dict[str, Any], key: str, where: str) -> list[str] | None:
    """doc[key] if it is a list of strings; None if missing or null."""
    value = field(doc, key, list, where)
    if value is not None and not all(isinstance(item, str) for item in value):
        raise ImageError(f"{where}: {key!r} must be a JSON array of strings")
    return value


def sha256(data: bytes) -> str:
    """The digest of `data` as OCI writes it ("sha256:<hex>")."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(where: str, what: str, expected: str, seen: str) -> None:
    if seen != expected:
        raise ImageError(f"{where}: {what} mismatch: expected {expected}, got {seen}")


def check_size(where: str, expected: int, seen: int) -> None:
    if seen != expected:
        raise ImageError(f"{where}: size mismatch: descriptor says {expected}, blob has {seen}")


def digest(value: Any, where: str) -> str:
    if not isinstance(value, str) or not DIGEST.fullmatch(value):
        raise ImageError(f"{where}: {value!r} is not a sha256 digest ('sha256:' and 64 hex digits)")
    return value


def descriptor(value: Any, where: str) -> dict[str, Any]:
    """A content descriptor, checked enough to locate its blob safely."""
    if not isinstance(value, dict):
        raise ImageError(f"{where}: a descriptor must be a JSON object")
    digest(value.get("digest"), where)
    where = f"{where}: descriptor {value['digest']}"
    size = required(value, "size", int, where)
    if size < 0:
        raise ImageError(f"{where}: negative size")
    field(value, "mediaType", str, where)
    field(value, "annotations", dict, where)
    field(value, "platform", dict, where)
    return value


def annotation(desc: dict[str, Any], key: str) -> str | None:
    """A descriptor's (checked) annotation `key`, if it is a string."""
    value = (desc.get("annotations") or {}).get(key)
    return value if isinstance(value, str) else None


def config(doc: dict[str, Any], where: str) -> dict[str, Any]:
    """Check the image config `doc` and return it."""
    rootfs = required(doc, "rootfs", dict, where)
    if rootfs.get("type") != "layers":
        raise ImageError(f"{where}: the config's rootfs must be {{'type': 'layers', ...}}")
    for diff_id in required(rootfs, "diff_ids", list, f"{where}: rootfs"):
        digest(diff_id, f"{where}: rootfs.diff_ids")
    for key in ("os", "architecture"):
        field(doc, key, str, where)
    section = field(doc, "config", dict, where) or {}
    for key in _STRING_LISTS:
        strings(section, key, f"{where}: config")
    for key in _STRINGS:
        field(section, key, str, f"{where}: config")
    return doc


def diff_ids(config_doc: dict[str, Any], where: str, count: int) -> list[str]:
    """A checked config's diff_ids, which must name `count` layers."""
    found = config_doc["rootfs"]["diff_ids"]
    if len(found) != count:
        raise ImageError(f"{where}: the config lists {len(found)} diff_ids for {count} layers")
    return found
