"""ImageStore.get: short names, tags, digests and id prefixes, looked up as
podman looks up a local image but never picking one of several; and what an
Image knows of itself for listings (created, imported, size, platform).

Every archive is built by tests/image_builder.py under pytest's tmp_path and
imported into a real store there.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from image_builder import (Layer, build_docker_archive, file, hardlink, host_architecture, image_config,
                           layer_tar, sha256, symlink, write_tar)
from isolate.errors import ImageError
from isolate.images.ref import Reference, canonical_name, parse_reference
from isolate.images.store import Image, ImageStore


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "store")


def stored(store: ImageStore, tmp_path: Path, *names: str, cmd: str = "sh") -> str:
    """Import an image holding `names` (its Cmd makes it distinct); its id."""
    path = tmp_path / f"{len(os.listdir(tmp_path))}.tar"
    build_docker_archive(path, [[file("etc/motd", "hi\n")]], {"Cmd": [cmd]}, list(names))
    return store.import_archive(path).id


def ambiguous(store: ImageStore, reference: str) -> str:
    """The message of the ImageError get(reference) raises for ambiguity."""
    with pytest.raises(ImageError, match="ambiguous") as caught:
        store.get(reference)
    return str(caught.value)


# --- short names ------------------------------------------------------------------------


def test_a_short_name_finds_the_localhost_image(store: ImageStore, tmp_path: Path) -> None:
    """podman import and podman build name images localhost/NAME."""
    image_id = stored(store, tmp_path, "localhost/deb:test")
    for reference in ("deb:test", "localhost/deb:test"):
        assert store.get(reference).id == image_id, reference
    for unknown in ("deb", "deb:latest", "docker.io/library/deb:test", "other.example/deb:test"):
        with pytest.raises(ImageError, match="no image"):
            store.get(unknown)


def test_a_short_name_finds_the_docker_hub_image(store: ImageStore, tmp_path: Path) -> None:
    """docker save writes "busybox:latest": Docker Hub's library/busybox."""
    image_id = stored(store, tmp_path, "busybox:latest")
    other = stored(store, tmp_path, "docker.io/someone/app:1", cmd="app")
    for reference in ("busybox", "busybox:latest", "library/busybox", "docker.io/busybox",
                      "docker.io/library/busybox:latest", "index.docker.io/library/busybox"):
        assert store.get(reference).id == image_id, reference
    assert store.get("someone/app:1").id == other
    with pytest.raises(ImageError, match="no image"):
        store.get("busybox:1")


def test_the_tag_defaults_to_latest(store: ImageStore, tmp_path: Path) -> None:
    latest = stored(store, tmp_path, "localhost/app:latest", cmd="latest")
    two = stored(store, tmp_path, "localhost/app:2", cmd="two")
    assert [store.get(reference).id for reference in ("app", "app:latest", "app:2")] == [latest, latest, two]


def test_localhost_and_docker_hub_names_alike_are_ambiguous(store: ImageStore, tmp_path: Path) -> None:
    """podman would take localhost/deb:test; isolate names both, picks none."""
    local = stored(store, tmp_path, "localhost/deb:test", cmd="local")
    hub = stored(store, tmp_path, "deb:test", cmd="hub")
    message = ambiguous(store, "deb:test")
    assert f"{local[:19]} (localhost/deb:test)" in message
    assert f"{hub[:19]} (docker.io/library/deb:test)" in message
    assert store.get("localhost/deb:test").id == local
    assert store.get("docker.io/library/deb:test").id == hub


def test_a_short_name_ends_any_stored_name_as_a_last_resort(store: ImageStore, tmp_path: Path) -> None:
    """As podman's repo-tag search: "tool:2" finds quay.io/org/tool:2 when
    neither localhost/tool:2 nor docker.io/library/tool:2 is stored."""
    quay = stored(store, tmp_path, "quay.io/org/tool:2", cmd="quay")
    for reference in ("tool:2", "org/tool:2"):
        assert store.get(reference).id == quay, reference
    for unknown in ("tool", "ol:2", "rg/tool:2", "example.com/tool:2", "quay.io/tool:2"):
        with pytest.raises(ImageError, match="no image"):
            store.get(unknown)
    other = stored(store, tmp_path, "example.com/team/tool:2", cmd="example")
    message = ambiguous(store, "tool:2")
    assert "quay.io/org/tool:2" in message and "example.com/team/tool:2" in message
    assert store.get("team/tool:2").id == other
    # What the short name means first wins over the last resort, as in podman.
    hub = stored(store, tmp_path, "tool:2", cmd="hub")
    assert store.get("tool:2").id == hub


def test_one_image_under_two_matching_names_is_no_ambiguity(store: ImageStore, tmp_path: Path) -> None:
    image_id = stored(store, tmp_path, "busybox:latest", "docker.io/library/busybox:latest",
                      "localhost/busybox:latest")
    assert store.get("busybox").id == image_id


# --- digests and ids ---------------------------------------------------------------------


def test_a_digest_is_the_image_id_or_a_stored_names(store: ImageStore, tmp_path: Path) -> None:
    image_id = stored(store, tmp_path, "localhost/app:1")
    named = "sha256:" + "ab" * 32
    digested = stored(store, tmp_path, f"quay.io/org/app@{named}", cmd="digested")
    for reference in (f"app@{image_id}", f"localhost/app@{image_id}", f"app:9@{image_id}"):
        assert store.get(reference).id == image_id, reference
    assert store.get(f"quay.io/org/app@{named}").id == digested
    assert store.get(f"app@{named}").id == digested
    for unknown in (f"other@{image_id}", "app@sha256:" + "0" * 64):
        with pytest.raises(ImageError, match="no image"):
            store.get(unknown)


def test_ids_and_id_prefixes(store: ImageStore, tmp_path: Path) -> None:
    image_id = stored(store, tmp_path, "localhost/app:1")
    hexdigits = image_id.removeprefix("sha256:")
    for reference in (image_id, hexdigits, hexdigits[:12], "sha256:" + hexdigits[:12], hexdigits[:3]):
        assert store.get(reference).id == image_id, reference
    for unknown in ("sha256:" + "0" * 64, "0" * 64, "sha256:app", "sha256:"):
        with pytest.raises(ImageError, match="no image"):
            store.get(unknown)


def test_a_name_comes_before_an_id_prefix(store: ImageStore, tmp_path: Path) -> None:
    """As in podman: "3fa2c1" is first a name (docker.io/library/3fa2c1),
    then an id prefix."""
    target = stored(store, tmp_path, "localhost/target:1", cmd="target")
    prefix = target.removeprefix("sha256:")[:6]
    named = stored(store, tmp_path, f"{prefix}:latest", cmd="named")
    assert store.get(prefix).id == named
    assert store.get(target.removeprefix("sha256:")[:12]).id == target


def test_an_ambiguous_id_prefix_lists_the_ids(store: ImageStore, tmp_path: Path) -> None:
    ids: dict[str, str] = {}
    for number in range(17):     # of 17 ids, two share their first hex digit
        image_id = stored(store, tmp_path, cmd=str(number))
        first = image_id.removeprefix("sha256:")[0]
        if first in ids:
            break
        ids[first] = image_id
    message = ambiguous(store, first)
    assert ids[first] in message and image_id in message


# --- what an image knows of itself ----------------------------------------------------------


def dated_archive(path: Path, created: str | None, name: str, layers: list[Layer]) -> str:
    """A docker-archive whose config says `created` (None: no such field),
    holding `layers` (their own compression ignored: stored plain); its id."""
    tars = [layer_tar(layer.entries) for layer in layers]
    config = image_config({"Cmd": ["sh"]}, [sha256(tar) for tar in tars])
    if created is not None:
        config["created"] = created
    data = json.dumps(config).encode()
    files = {f"layer{number}.tar": tar for number, tar in enumerate(tars)}
    manifest = [{"Config": "config.json", "RepoTags": [name], "Layers": list(files)}]
    write_tar(path, {"config.json": data, **files, "manifest.json": json.dumps(manifest).encode()})
    return sha256(data)


#: 5_000_000 + 1_234 bytes of files, a hard link to one (counted once) and a
#: symlink whose target is 4 bytes long.
LAYERS = [Layer([file("data", b"d" * 5_000_000)]),
          Layer([file("etc/more", b"m" * 1_234), hardlink("etc/more2", "etc/more"),
                 symlink("etc/link", "data")])]
SIZE = 5_000_000 + 1_234 + 4


def test_created_comes_from_the_config(store: ImageStore, tmp_path: Path) -> None:
    created = "2024-05-01T14:00:00.123456789+02:00"
    dated_archive(tmp_path / "dated.tar", created, "localhost/dated:1", LAYERS)
    image = store.import_archive(tmp_path / "dated.tar")
    assert image.created == created
    assert image.created_at == pytest.approx(1714564800.123456789)
    assert (image.architecture, image.os) == (host_architecture(), "linux")


@pytest.mark.parametrize("created", [None, "yesterday", "2024-13-01T00:00:00Z", 1714564800])
def test_without_a_valid_created_the_import_time_counts(store: ImageStore, tmp_path: Path,
                                                         created: object) -> None:
    dated_archive(tmp_path / "undated.tar", created, "localhost/undated:1", LAYERS)  # type: ignore[arg-type]
    before = time.time()
    image = store.import_archive(tmp_path / "undated.tar")
    assert image.created == ""
    assert before <= image.created_at == image.imported <= time.time()


def test_importing_again_keeps_the_first_import_time(store: ImageStore, tmp_path: Path) -> None:
    dated_archive(tmp_path / "image.tar", None, "localhost/app:1", LAYERS)
    first = store.import_archive(tmp_path / "image.tar")
    again = store.import_archive(tmp_path / "image.tar")
    assert again.imported == first.imported and store.get("app:1") == first


def test_size_counts_files_once_and_shared_layers_in_each_image(store: ImageStore, tmp_path: Path) -> None:
    dated_archive(tmp_path / "one.tar", None, "localhost/one:1", LAYERS)
    dated_archive(tmp_path / "two.tar", None, "localhost/two:1", LAYERS[:1] + [Layer([file("x", b"12")])])
    one = store.import_archive(tmp_path / "one.tar")
    two = store.import_archive(tmp_path / "two.tar")
    # The shared layer counts in both, as docker counts it.
    assert {image.id: image.size for image in store.images()} == {one.id: SIZE, two.id: 5_000_000 + 2}


def test_a_record_from_before_sizes_and_import_times(store: ImageStore, tmp_path: Path) -> None:
    """A record without "size" and "imported" (an older isolate wrote it):
    the layers are measured, the record's mtime is the import time."""
    image_id = dated_archive(tmp_path / "image.tar", None, "localhost/app:1", LAYERS)
    store.import_archive(tmp_path / "image.tar")
    path = Path(store.root, "images", image_id.removeprefix("sha256:") + ".json")
    record = json.loads(path.read_text())
    del record["size"], record["imported"]
    path.write_text(json.dumps(record))
    os.utime(path, (1_600_000_000, 1_600_000_000))
    image = store.get("app:1")
    assert (image.size, image.imported) == (SIZE, 1_600_000_000)


@pytest.mark.parametrize("field, value", [("size", -1), ("size", 1.5), ("size", True), ("imported", "now")])
def test_a_malformed_record_field_is_refused(store: ImageStore, tmp_path: Path, field: str,
                                             value: object) -> None:
    image_id = stored(store, tmp_path, "localhost/app:1")
    path = Path(store.root, "images", image_id.removeprefix("sha256:") + ".json")
    path.write_text(json.dumps(dict(json.loads(path.read_text()), **{field: value})))
    with pytest.raises(ImageError, match="malformed image record"):
        store.get("app:1")


def test_an_image_made_by_hand_knows_no_time() -> None:
    assert Image(id="sha256:" + "0" * 64, names=(), layers=()).created_at is None


# --- references ------------------------------------------------------------------------------


@pytest.mark.parametrize("text, reference, familiar", [
    ("busybox", Reference("docker.io", "library/busybox", "latest", "", "busybox"), "busybox"),
    ("deb:test", Reference("docker.io", "library/deb", "test", "", "deb"), "deb"),
    ("org/app:1", Reference("docker.io", "org/app", "1", "", "org/app"), "org/app"),
    ("library/busybox", Reference("docker.io", "library/busybox", "latest", "", "library/busybox"),
     "busybox"),
    ("docker.io/busybox", Reference("docker.io", "library/busybox", "latest", ""), "busybox"),
    ("localhost/deb:test", Reference("localhost", "deb", "test", ""), "localhost/deb"),
    ("quay.io:5000/a/b@sha256:" + "1" * 64,
     Reference("quay.io:5000", "a/b", "", "sha256:" + "1" * 64), "quay.io:5000/a/b"),
])
def test_parse_reference(text: str, reference: Reference, familiar: str) -> None:
    assert parse_reference(text) == reference
    assert reference.familiar == familiar
    assert str(reference) == canonical_name(text)
