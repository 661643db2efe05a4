"""ImageStore: importing docker-archive, oci-archive and OCI layout images.

Every archive is built by tests/image_builder.py under pytest's tmp_path,
imported into a store there, and checked on disk: real files, real
digests, real concurrent processes.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import stat
import tarfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import attrs
import pytest

from image_builder import (
    ImageSpec,
    Layer,
    build,
    build_docker_archive,
    build_oci_archive,
    OCI_INDEX,
    build_oci_layout,
    busybox_config,
    busybox_layers,
    directory,
    file,
    hardlink,
    host_architecture,
    image_config,
    layer_tar,
    opaque,
    raw,
    sha256,
    symlink,
    whiteout,
    write_tar,
)
from isolate.errors import ImageError, LayerError
from isolate.images.archive import read_archive
from isolate.images.store import Image, ImageStore, canonical_name

FORMATS = ("docker-archive", "oci-archive", "oci-layout")

#: Incompressible, so a compressed layer is still several read chunks long.
BIG = os.urandom(3 << 20)

CONFIG = {
    "Env": ["PATH=/usr/bin:/bin", "GREETING=hello=world", "EMPTY="],
    "Entrypoint": ["/bin/tool", "--flag"],
    "Cmd": ["default", "args"],
    "WorkingDir": "/app",
    "User": "app:staff",
}


def base_layer(compression: str | None = None) -> Layer:
    return Layer([
        file("etc/motd", "base\n"),
        file("etc/secret", "s3cret", mode=0o600, uid=1000, gid=1000),
        file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n"),
        file("etc/group", "root:x:0:\nstaff:x:50:app\napp:x:1000:\n"),
        file("bin/tool", b"\x7fELF tool", mode=0o755),
        symlink("bin/alias", "tool"),
        hardlink("bin/tool2", "bin/tool"),
        directory("var/empty", mode=0o700),
        file("opt/old/a", "a"),
    ], compression)


def top_layer(compression: str | None = None, tag: str = "top") -> Layer:
    return Layer([
        file("etc/motd", f"{tag}\n"),
        whiteout("etc/secret"),
        opaque("opt/old"),
        file("opt/old/b", "b"),
        file("app/big", BIG),
        file("app/tag", tag),
    ], compression)


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "store")


def layer_path(store: ImageStore, diff_id: str) -> Path:
    return Path(store.root, "layers", "sha256", diff_id.removeprefix("sha256:"))


def listing(store: ImageStore) -> dict[str, Any]:
    """Everything in the store but the lock file: paths with their inode,
    mtime and (for small files) content.  The store's own directories
    (whose mtimes change as work comes and goes) are listed by name only."""
    found: dict[str, Any] = {}
    root = Path(store.root)
    own = {root / "lock", root / "tmp", root / "images", root / "layers", root / "layers/sha256"}
    for path in sorted(root.rglob("*")):
        if path in own:
            continue
        st = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(st.st_mode) and st.st_size < 4096 else None
        found[str(path.relative_to(root))] = (st.st_ino, st.st_mtime_ns, content)
    return found


def is_whiteout(path: Path) -> bool:
    st = path.lstat()
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def fork_all(count: int, work: Callable[[int], Any], timeout: float = 120.0) -> list[Any]:
    """Run work(i) in `count` forked processes at once (released together);
    return their results (or raise the first failure)."""
    go_r, go_w = os.pipe()
    children = []
    for number in range(count):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(r)
                os.close(go_w)
                os.read(go_r, 1)
                try:
                    outcome = {"ok": True, "value": work(number)}
                except BaseException as exc:  # noqa: BLE001 - reported to the parent
                    outcome = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                os.write(w, json.dumps(outcome).encode())
            except BaseException:  # noqa: BLE001
                code = 70
            finally:
                os._exit(code)
        os.close(w)
        children.append((pid, r))
    os.close(go_r)
    os.write(go_w, b"x" * count)
    os.close(go_w)
    results = []
    deadline = time.monotonic() + timeout
    for pid, r in children:
        chunks = []
        while True:
            ready, _, _ = select.select([r], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                for other, _ in children:
                    os.kill(other, 9)
                pytest.fail("a forked importer hung")
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(r)
        os.waitpid(pid, 0)
        results.append(json.loads(b"".join(chunks)) if chunks else {"ok": False, "error": "died"})
    for outcome in results:
        if not outcome["ok"]:
            pytest.fail(f"a forked process failed: {outcome['error']}")
    return [outcome["value"] for outcome in results]


# --- formats and compressions --------------------------------------------------------


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd", "mixed"])
@pytest.mark.parametrize("kind", FORMATS)
def test_import_gives_the_layers(tmp_path: Path, store: ImageStore, kind: str, compression: str) -> None:
    if compression == "mixed":
        layers = [base_layer("gzip"), top_layer("zstd")]
    else:
        layers = [base_layer(compression), top_layer(compression)]
    built = build(kind, tmp_path / "image", layers, CONFIG, "example.com/app:1")
    image = store.import_archive(tmp_path / "image")

    assert image.id == built.id
    assert image.names == ("example.com/app:1",)
    assert image.diff_ids == tuple(built.diff_ids)
    assert image.layers == tuple(str(layer_path(store, d)) for d in built.diff_ids)
    base, top = (Path(p) for p in image.layers)
    assert (base / "etc/motd").read_text() == "base\n"
    secret = (base / "etc/secret").stat()
    assert (stat.S_IMODE(secret.st_mode), secret.st_uid, secret.st_gid) == (0o600, 1000, 1000)
    assert os.readlink(base / "bin/alias") == "tool"
    assert (base / "bin/tool2").stat().st_ino == (base / "bin/tool").stat().st_ino
    assert stat.S_IMODE((base / "var/empty").stat().st_mode) == 0o700
    assert (top / "etc/motd").read_text() == "top\n"
    assert is_whiteout(top / "etc/secret")
    assert os.getxattr(top / "opt/old", "user.overlay.opaque") == b"y"
    assert sorted(os.listdir(top / "opt/old")) == ["b"]
    assert (top / "app/big").read_bytes() == BIG
    assert os.listdir(Path(store.root, "tmp")) == []


def test_gzip_outer_oci_archive_and_docker_media_types(tmp_path: Path, store: ImageStore) -> None:
    built = build_oci_archive(tmp_path / "image.tar.gz", [base_layer(), top_layer()], CONFIG,
                              docker_types=True, outer_compression="gzip")
    image = store.import_archive(tmp_path / "image.tar.gz")
    assert image.id == built.id
    assert (Path(image.layers[1]) / "app/tag").read_text() == "top"


def test_nested_index_picks_this_host(tmp_path: Path, store: ImageStore) -> None:
    # The other platform's manifest blob is absent: reading it would fail.
    built = build_oci_layout(tmp_path / "layout", [base_layer()], CONFIG, nested=True)
    image = store.import_archive(tmp_path / "layout")
    assert (image.id, image.names) == (built.id, ("busybox:latest",))


def test_docker_save_with_an_oci_layout(tmp_path: Path, store: ImageStore) -> None:
    """Docker 25+ writes both: read as OCI, named by RepoTags too."""
    built = build_docker_archive(tmp_path / "image.tar", [base_layer(), top_layer("gzip")], CONFIG,
                                 ["busybox:latest"], with_oci=True)
    image = store.import_archive(tmp_path / "image.tar")
    assert image.id == built.id
    assert set(image.names) == {"docker.io/library/busybox:latest", "busybox:latest"}
    assert store.get("busybox").id == built.id


def test_docker_archive_with_a_symlinked_shared_layer(tmp_path: Path, store: ImageStore) -> None:
    built = build_docker_archive(tmp_path / "two.tar", [base_layer()], CONFIG, ["one:1"],
                                 more=[ImageSpec([base_layer(), top_layer()], {"Cmd": ["x"]}, ["two:1"])],
                                 link_shared=True)
    with tarfile.open(tmp_path / "two.tar") as tar:
        assert any(member.issym() for member in tar.getmembers())
    two = store.import_archive(tmp_path / "two.tar", name="two:1")
    assert two.id == built.others[0].id
    assert (Path(two.layers[0]) / "etc/motd").read_text() == "base\n"


def test_archive_with_several_images(tmp_path: Path, store: ImageStore) -> None:
    built = build_oci_archive(tmp_path / "multi.tar", [base_layer()], {"Cmd": ["one"]}, "one:1",
                              more=[ImageSpec([base_layer(), top_layer()], {"Cmd": ["two"]}, ["two:1"])])
    assert [image.names for image in read_archive(tmp_path / "multi.tar")] == [("one:1",), ("two:1",)]
    assert store.import_archive(tmp_path / "multi.tar").id == built.id          # the first
    two = store.import_archive(tmp_path / "multi.tar", name="two:1")
    assert (two.id, two.cmd) == (built.others[0].id, ["two"])
    with pytest.raises(ImageError, match="three:1"):
        store.import_archive(tmp_path / "multi.tar", name="three:1")


def test_busybox_image(tmp_path: Path, store: ImageStore) -> None:
    build_docker_archive(tmp_path / "busybox.tar", busybox_layers(), busybox_config(User="nobody"))
    image = store.get(store.import_archive(tmp_path / "busybox.tar").id)
    root = Path(image.layers[0])
    assert os.access(root / "bin/busybox", os.X_OK)
    applets = ("sh", "ls", "cat", "echo", "id", "env", "pwd")
    assert {os.readlink(root / "bin" / applet) for applet in applets} == {"busybox"}
    assert all((root / d).is_dir() for d in ("proc", "dev", "tmp", "sys", "etc"))
    assert image.resolve_user() == (65534, 65534)
    assert image.command() == ["sh"]
    assert image.env["PATH"].endswith("/bin")


# --- the image's config ----------------------------------------------------------------


def test_image_properties(tmp_path: Path, store: ImageStore) -> None:
    build_oci_layout(tmp_path / "layout", [base_layer()], CONFIG)
    image = store.import_archive(tmp_path / "layout")
    assert image.env == {"PATH": "/usr/bin:/bin", "GREETING": "hello=world", "EMPTY": ""}
    assert (image.cwd, image.user) == ("/app", "app:staff")
    assert (image.entrypoint, image.cmd) == (["/bin/tool", "--flag"], ["default", "args"])
    assert image.config["WorkingDir"] == "/app"


def test_properties_default(tmp_path: Path, store: ImageStore) -> None:
    build_oci_layout(tmp_path / "layout", [base_layer()], {})
    image = store.import_archive(tmp_path / "layout")
    assert (image.env, image.cwd, image.user, image.entrypoint, image.cmd) == ({}, "/", "", [], [])
    assert image.resolve_user() is None


def test_command_follows_docker() -> None:
    image = Image(id="sha256:" + "0" * 64, names=(), layers=(), config=dict(CONFIG))
    assert image.command() == ["/bin/tool", "--flag", "default", "args"]
    assert image.command(["x", "y"]) == ["/bin/tool", "--flag", "x", "y"]
    assert image.command([]) == ["/bin/tool", "--flag"]
    cmd_only = attrs.evolve(image, config={"Cmd": ["sh", "-c", "true"]})
    assert cmd_only.command() == ["sh", "-c", "true"]
    assert cmd_only.command(["ls"]) == ["ls"]
    empty = attrs.evolve(image, config={})
    assert empty.command(["ls"]) == ["ls"]
    with pytest.raises(ImageError, match="no command"):
        empty.command()
    with pytest.raises(ImageError, match="no command"):
        empty.command([])


def test_overlay(tmp_path: Path, store: ImageStore) -> None:
    build_oci_layout(tmp_path / "layout", [base_layer(), top_layer()], CONFIG)
    image = store.import_archive(tmp_path / "layout")
    overlay = image.overlay()
    assert overlay.lower == image.layers and overlay.ephemeral
    kept = image.overlay(upper=tmp_path / "upper")
    assert kept.upper == str(tmp_path / "upper")
    build_docker_archive(tmp_path / "empty.tar", [], {"Cmd": ["x"]}, ["empty:1"])
    with pytest.raises(ImageError, match="no layers"):
        store.import_archive(tmp_path / "empty.tar").overlay()


def test_resolve_user(tmp_path: Path, store: ImageStore) -> None:
    override = Layer([file("etc/passwd", "root:x:0:0::/root:/bin/sh\napp:x:1001:1001::/app:/bin/sh\n"
                                         "# comment\nbroken:line\n")])
    build_oci_layout(tmp_path / "layout", [base_layer(), override], CONFIG)
    image = store.import_archive(tmp_path / "layout")

    def resolve(user: str) -> tuple[int, int] | None:
        return attrs.evolve(image, config={"User": user}).resolve_user()

    assert resolve("") is None
    assert resolve("0") == (0, 0)
    assert resolve("app") == (1001, 1001)            # the topmost layer's passwd
    assert resolve("1001") == (1001, 1001)
    assert resolve("4242") == (4242, 0)              # not in passwd: gid 0
    assert resolve("app:staff") == (1001, 50)        # group from the base layer
    assert resolve("app:7") == (1001, 7)
    assert resolve("12:34") == (12, 34)
    assert resolve("root:app") == (0, 1000)
    with pytest.raises(ImageError, match="'ghost'"):
        resolve("ghost")
    with pytest.raises(ImageError, match="'nogroup'"):
        resolve("app:nogroup")


def test_resolve_user_sees_whiteouts(tmp_path: Path, store: ImageStore) -> None:
    gone = Layer([whiteout("etc/group")])
    hidden = Layer([opaque("etc"), file("etc/hostname", "box\n")])
    build_oci_layout(tmp_path / "a", [base_layer(), gone], {"User": "app:staff"})
    build_oci_layout(tmp_path / "b", [base_layer(), hidden], {"User": "app"})
    with pytest.raises(ImageError, match="'staff'"):
        store.import_archive(tmp_path / "a").resolve_user()
    with pytest.raises(ImageError, match="'app'"):
        store.import_archive(tmp_path / "b").resolve_user()


# --- sharing, idempotence, concurrency ----------------------------------------------------


def test_shared_base_layer_is_stored_once(tmp_path: Path, store: ImageStore) -> None:
    one = build_docker_archive(tmp_path / "one.tar", [base_layer(), top_layer(tag="one")], CONFIG, ["one:1"])
    two = build_oci_archive(tmp_path / "two.tar", [base_layer("gzip"), top_layer(tag="two")], CONFIG, "two:1")
    first = store.import_archive(tmp_path / "one.tar")
    second = store.import_archive(tmp_path / "two.tar")
    assert one.diff_ids[0] == two.diff_ids[0]
    assert first.layers[0] == second.layers[0]
    assert sorted(os.listdir(Path(store.root, "layers/sha256"))) == sorted(
        d.removeprefix("sha256:") for d in {*one.diff_ids, *two.diff_ids})
    assert len(os.listdir(Path(store.root, "layers/sha256"))) == 3
    assert {image.id for image in store.images()} == {one.id, two.id}


def test_import_is_idempotent(tmp_path: Path, store: ImageStore) -> None:
    built = build_oci_archive(tmp_path / "image.tar", [base_layer(), top_layer("gzip")], CONFIG)
    first = store.import_archive(tmp_path / "image.tar")
    before = listing(store)
    calls: list[tuple[int, int]] = []
    again = store.import_archive(tmp_path / "image.tar", progress=lambda *a: calls.append(a))
    assert again == first
    assert listing(store) == before          # no layer extracted, no record rewritten
    assert calls[-1] == (sum(built.blob_sizes), sum(built.blob_sizes))
    # Also through a fresh store object (records are read back from disk).
    assert ImageStore(store.root).get(first.id) == first


def test_concurrent_imports_of_one_archive(tmp_path: Path, store: ImageStore) -> None:
    build_oci_archive(tmp_path / "image.tar", [base_layer(), top_layer("zstd")], CONFIG)

    def work(_: int) -> str:
        return ImageStore(store.root).import_archive(tmp_path / "image.tar").id

    ids = fork_all(4, work)
    assert len(set(ids)) == 1
    assert len(os.listdir(Path(store.root, "layers/sha256"))) == 2
    assert len(os.listdir(Path(store.root, "images"))) == 1
    assert os.listdir(Path(store.root, "tmp")) == []
    image = store.get(ids[0])
    assert (Path(image.layers[1]) / "app/big").read_bytes() == BIG


def test_concurrent_imports_and_removes(tmp_path: Path, store: ImageStore) -> None:
    """Each process imports and removes its own image in a loop; the images
    share their base layer, which each remove may find unreferenced while
    the other is importing: every import must still end with its layers."""
    for tag in ("zero", "one", "two"):
        build_oci_layout(tmp_path / tag, [base_layer(), Layer([file("tag", tag)])], {"Cmd": [tag]},
                         f"{tag}:1")

    def work(number: int) -> int:
        tag = ("zero", "one", "two")[number]
        own = ImageStore(store.root)
        for _ in range(25):
            image = own.import_archive(tmp_path / tag)
            assert (Path(image.layers[0]) / "etc/motd").read_text() == "base\n"
            assert (Path(image.layers[1]) / "tag").read_text() == tag
            own.remove(image)
        return 0

    fork_all(3, work)
    assert os.listdir(Path(store.root, "layers/sha256")) == []
    assert os.listdir(Path(store.root, "images")) == []
    assert os.listdir(Path(store.root, "tmp")) == []


def test_remove_spares_the_layers_of_an_import_in_progress(tmp_path: Path, store: ImageStore) -> None:
    """An import that found the base layer in the store is paused (in its
    progress callback) while the only image referencing that layer is
    removed: the removal must leave the layer to the import."""
    build_oci_layout(tmp_path / "one", [base_layer(), top_layer(tag="one")], CONFIG, "one:1")
    build_oci_layout(tmp_path / "two", [base_layer(), top_layer(tag="two")], CONFIG, "two:1")
    one = store.import_archive(tmp_path / "one")
    base_inode = os.stat(one.layers[0]).st_ino
    paused, resume = threading.Event(), threading.Event()
    result: list[Any] = []

    def progress(done: int, total: int) -> None:
        if not paused.is_set():
            paused.set()
            resume.wait(30)

    def importer() -> None:
        try:
            result.append(ImageStore(store.root).import_archive(tmp_path / "two", progress=progress))
        except BaseException as exc:  # noqa: BLE001 - checked below
            result.append(exc)

    thread = threading.Thread(target=importer)
    thread.start()
    try:
        assert paused.wait(30)
        store.remove(one)
        assert os.stat(one.layers[0]).st_ino == base_inode
        assert not Path(one.layers[1]).exists()
    finally:
        resume.set()
        thread.join(30)
    two = result[0]
    assert isinstance(two, Image), two
    assert two.layers[0] == one.layers[0] and os.stat(two.layers[0]).st_ino == base_inode
    assert os.listdir(Path(store.root, "tmp")) == []


def test_progress(tmp_path: Path, store: ImageStore) -> None:
    built = build_oci_archive(tmp_path / "image.tar", [base_layer(), top_layer("gzip")], CONFIG)
    calls: list[tuple[int, int]] = []
    store.import_archive(tmp_path / "image.tar", progress=lambda done, total: calls.append((done, total)))
    total = sum(built.blob_sizes)
    assert len(calls) > 2
    assert all(t == total for _, t in calls)
    done = [d for d, _ in calls]
    assert done == sorted(set(done)) and done[0] > 0
    assert calls[-1] == (total, total)


# --- removing ------------------------------------------------------------------------------


def test_remove_collects_unreferenced_layers(tmp_path: Path, store: ImageStore) -> None:
    one = build_oci_layout(tmp_path / "one", [base_layer(), top_layer(tag="one")], CONFIG, "one:1")
    two = build_oci_layout(tmp_path / "two", [base_layer(), top_layer(tag="two")], CONFIG, "two:1")
    first = store.import_archive(tmp_path / "one")
    store.import_archive(tmp_path / "two")
    store.remove(first)
    assert [image.id for image in store.images()] == [two.id]
    assert sorted(os.listdir(Path(store.root, "layers/sha256"))) == sorted(
        d.removeprefix("sha256:") for d in two.diff_ids)
    assert Path(first.layers[0]).is_dir() and not Path(first.layers[1]).exists()
    with pytest.raises(ImageError, match="one:1"):
        store.get("one:1")
    with pytest.raises(ImageError, match=one.id):
        store.remove(first)
    store.remove("two:1")
    assert store.images() == []
    assert os.listdir(Path(store.root, "layers/sha256")) == []
    assert os.listdir(Path(store.root, "tmp")) == []


def test_gc_cleans_what_dead_importers_left(tmp_path: Path, store: ImageStore) -> None:
    build_oci_layout(tmp_path / "one", [base_layer()], CONFIG)
    image = store.import_archive(tmp_path / "one")
    Path(store.root, "tmp", "layer-dead").mkdir()
    Path(store.root, "tmp", "layer-dead", "layer").mkdir()
    Path(store.root, "tmp", "record-dead.json").write_text("{")
    Path(store.root, "layers/sha256", "f" * 64).mkdir()
    store.gc()
    assert os.listdir(Path(store.root, "tmp")) == []
    assert os.listdir(Path(store.root, "layers/sha256")) == [image.diff_ids[0].removeprefix("sha256:")]


# --- lookups -----------------------------------------------------------------------------------


def test_get_by_name_id_and_prefix(tmp_path: Path, store: ImageStore) -> None:
    built = build_docker_archive(tmp_path / "image.tar", [base_layer()], CONFIG, ["busybox:latest", "bb:1"])
    image = store.import_archive(tmp_path / "image.tar")
    hexdigest = built.id.removeprefix("sha256:")
    for reference in ("busybox:latest", "busybox", "docker.io/library/busybox:latest", "bb:1",
                      built.id, hexdigest, hexdigest[:12], "sha256:" + hexdigest[:5]):
        assert store.get(reference) == image, reference
    for unknown in ("bb", "bb:2", "nothing", "sha256:" + "0" * 64, "zz", ""):
        with pytest.raises(ImageError, match="no image"):
            store.get(unknown)


def test_get_ambiguous_prefix(tmp_path: Path, store: ImageStore) -> None:
    by_first: dict[str, str] = {}
    for number in range(100):
        built = build_oci_layout(tmp_path / f"i{number}", [base_layer()], {"Env": [f"N={number}"]}, None)
        first = built.id.removeprefix("sha256:")[0]
        if first in by_first:
            break
        by_first[first] = built.id
    store.import_archive(tmp_path / f"i{number}")
    store.import_archive(tmp_path / f"i{list(by_first).index(first)}")
    with pytest.raises(ImageError, match="ambiguous"):
        store.get(first)
    assert store.get(built.id.removeprefix("sha256:")[:40]).id == built.id


def test_a_name_moves_to_the_newest_image(tmp_path: Path, store: ImageStore) -> None:
    build_oci_layout(tmp_path / "old", [base_layer()], {"Cmd": ["old"]}, "app:latest")
    build_oci_layout(tmp_path / "new", [base_layer()], {"Cmd": ["new"]}, "app:latest")
    old = store.import_archive(tmp_path / "old")
    new = store.import_archive(tmp_path / "new")
    assert store.get("app").id == new.id
    assert store.get(old.id).names == ()


# --- bad archives leave the store as it was -------------------------------------------------


CORRUPTIONS = [
    ("oci-archive", "blob_digest"), ("oci-layout", "blob_digest"),
    ("oci-archive", "diff_id"), ("oci-layout", "diff_id"), ("docker-archive", "diff_id"),
    ("oci-archive", "config_digest"), ("docker-archive", "config_digest"),
    ("oci-archive", "blob_data"), ("docker-archive", "blob_data"),
]


@pytest.mark.parametrize("kind,corrupt", CORRUPTIONS)
def test_corrupt_archive_changes_nothing(tmp_path: Path, store: ImageStore, kind: str, corrupt: str) -> None:
    build_oci_layout(tmp_path / "other", [top_layer(tag="other")], {"Cmd": ["x"]}, "other:1")
    store.import_archive(tmp_path / "other")
    before = listing(store)
    # The corrupt layer is the top one: the base layer is extracted first.
    compression = "gzip" if kind == "oci-archive" else "none"
    built = build(kind, tmp_path / "bad", [base_layer(), top_layer()], CONFIG,
                  compression=compression, corrupt=corrupt)
    with pytest.raises(ImageError) as caught:
        store.import_archive(tmp_path / "bad")
    expected = {"blob_digest": built.blob_digests[-1], "diff_id": built.diff_ids[-1],
                "config_digest": built.id,
                "blob_data": built.blob_digests[-1] if kind != "docker-archive" else built.diff_ids[-1]}
    assert expected[corrupt] in str(caught.value)
    assert str(tmp_path / "bad") in str(caught.value)
    assert listing(store) == before


def test_malicious_layer_changes_nothing(tmp_path: Path, store: ImageStore) -> None:
    build_oci_layout(tmp_path / "other", [base_layer()], {"Cmd": ["x"]}, "other:1")
    store.import_archive(tmp_path / "other")
    before = listing(store)
    escape = tarfile.TarInfo("../escape")
    escape.size = 5
    evil = [base_layer(), top_layer(), Layer([file("ok", "ok"), raw(escape, b"owned")])]
    build_oci_archive(tmp_path / "evil.tar", evil, CONFIG, "evil:1")
    with pytest.raises(LayerError, match="escape"):
        store.import_archive(tmp_path / "evil.tar")
    assert listing(store) == before
    assert [p for p in tmp_path.rglob("escape")] == []


def test_malformed_archives(tmp_path: Path, store: ImageStore) -> None:
    (tmp_path / "junk").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ImageError, match=str(tmp_path / "junk")):
        store.import_archive(tmp_path / "junk")
    with pytest.raises(ImageError, match="no such file"):
        store.import_archive(tmp_path / "missing.tar")
    with tarfile.open(tmp_path / "empty.tar", "w"):
        pass
    with pytest.raises(ImageError, match="manifest.json"):
        store.import_archive(tmp_path / "empty.tar")

    built = build_oci_layout(tmp_path / "layout", [base_layer()], CONFIG)
    blob = tmp_path / "layout/blobs/sha256" / built.blob_digests[0].removeprefix("sha256:")
    blob.unlink()
    with pytest.raises(ImageError, match=str(blob)):
        store.import_archive(tmp_path / "layout")
    index = json.loads((tmp_path / "layout/index.json").read_text())
    index["manifests"][0]["digest"] = "sha256:../../etc"
    (tmp_path / "layout/index.json").write_text(json.dumps(index))
    with pytest.raises(ImageError, match="not a sha256 digest"):
        store.import_archive(tmp_path / "layout")
    (tmp_path / "layout/oci-layout").unlink()
    with pytest.raises(ImageError, match="oci-layout"):
        store.import_archive(tmp_path / "layout")
    assert store.images() == []
    assert os.listdir(Path(store.root, "tmp")) == []


def test_layers_are_reachable_by_the_store_owner_only(tmp_path: Path, store: ImageStore) -> None:
    """A layer extracted by root keeps setuid-root files: other users must not
    reach them through the store (a container still runs them: tests/images/test_image_run.py)."""
    build_docker_archive(tmp_path / "one.tar", [base_layer(), top_layer(tag="one")], CONFIG, ["one:1"])
    store.import_archive(tmp_path / "one.tar")
    for sub in ("layers", "tmp"):
        assert stat.S_IMODE(os.stat(os.path.join(store.root, sub)).st_mode) == 0o700


# --- review fixes: resource limits ------------------------------------------------------------


def docker_tar(path: Path, entries: list[dict[str, Any]], configs: dict[str, bytes],
               layer: bytes, compression: str = "none") -> None:
    """A hand-made docker-archive: manifest.json `entries`, the config files
    `configs` and one layer "l.tar" holding `layer`."""
    write_tar(path, {"manifest.json": json.dumps(entries).encode(), **configs, "l.tar": layer},
              compression)


def small_layer() -> tuple[bytes, str]:
    data = layer_tar([file("a", "a")])
    return data, sha256(data)


def config_bytes(diff_ids: list[str], **section: Any) -> bytes:
    return json.dumps(image_config(section, diff_ids)).encode()


def test_repeated_archive_entries_are_read_once(tmp_path: Path) -> None:
    layer, diff_id = small_layer()
    config = config_bytes([diff_id], Env=["X=" + "x" * (1 << 20)])
    entry = {"Config": "c.json", "Layers": ["l.tar"], "RepoTags": None}
    docker_tar(tmp_path / "many.tar", [entry] * 200, {"c.json": config}, layer)
    images = read_archive(tmp_path / "many.tar")
    assert len(images) == 200
    assert all(image.config is images[0].config for image in images)


def test_too_many_archive_entries(tmp_path: Path) -> None:
    layer, diff_id = small_layer()
    entry = {"Config": "c.json", "Layers": ["l.tar"]}
    docker_tar(tmp_path / "many.tar", [entry] * 1000, {"c.json": config_bytes([diff_id])}, layer,
               compression="gzip")
    with pytest.raises(ImageError, match="1000"):
        read_archive(tmp_path / "many.tar")
    build_oci_layout(tmp_path / "layout", [base_layer()], CONFIG)
    index = json.loads((tmp_path / "layout/index.json").read_text())
    index["manifests"] *= 300
    (tmp_path / "layout/index.json").write_text(json.dumps(index))
    with pytest.raises(ImageError, match="300"):
        read_archive(tmp_path / "layout")


def test_json_read_per_archive_is_capped(tmp_path: Path) -> None:
    layer, diff_id = small_layer()
    configs = {f"c{n}.json": config_bytes([diff_id], Env=[f"{n}=" + "x" * (14 << 20)]) for n in range(5)}
    entries = [{"Config": name, "Layers": ["l.tar"]} for name in configs]
    docker_tar(tmp_path / "big.tar", entries, configs, layer, compression="gzip")
    with pytest.raises(ImageError, match="JSON"):
        read_archive(tmp_path / "big.tar")


# --- review fixes: OCI layout directories ------------------------------------------------------


def layer_blob(built: Any, layout: Path, number: int = 0) -> Path:
    return layout / "blobs/sha256" / built.blob_digests[number].removeprefix("sha256:")


def test_layout_symlink_to_a_device_is_refused(tmp_path: Path, store: ImageStore) -> None:
    built = build_oci_layout(tmp_path / "layout", [base_layer()], CONFIG)
    (tmp_path / "layout/oci-layout").unlink()
    (tmp_path / "layout/oci-layout").symlink_to("/dev/zero")
    with pytest.raises(ImageError, match="oci-layout"):
        read_archive(tmp_path / "layout")
    build_oci_layout(tmp_path / "other", [base_layer()], CONFIG)
    blob = layer_blob(built, tmp_path / "other")
    blob.unlink()
    blob.symlink_to("/dev/zero")
    with pytest.raises(ImageError, match=str(blob)):
        store.import_archive(tmp_path / "other")
    assert store.images() == []


def test_layout_symlink_out_of_the_layout_is_refused(tmp_path: Path, store: ImageStore) -> None:
    built = build_oci_layout(tmp_path / "layout", [base_layer()], CONFIG)
    secret = tmp_path / "secret"
    secret.write_bytes(b"z" * 12345)
    blob = layer_blob(built, tmp_path / "layout")
    blob.unlink()
    blob.symlink_to(secret)
    with pytest.raises(ImageError, match=str(blob)) as caught:
        store.import_archive(tmp_path / "layout")
    assert "12345" not in str(caught.value)
    # A symlinked directory on the way is refused too.
    build_oci_layout(tmp_path / "other", [base_layer()], CONFIG)
    os.rename(tmp_path / "other/blobs", tmp_path / "blobs")
    (tmp_path / "other/blobs").symlink_to(tmp_path / "blobs")
    with pytest.raises(ImageError, match="blobs"):
        store.import_archive(tmp_path / "other")


def test_layout_fifo_blob_is_refused(tmp_path: Path, store: ImageStore) -> None:
    built = build_oci_layout(tmp_path / "layout", [base_layer()], CONFIG)
    blob = layer_blob(built, tmp_path / "layout")
    blob.unlink()
    os.mkfifo(blob)
    with pytest.raises(ImageError, match="regular file"):
        store.import_archive(tmp_path / "layout")


def test_layer_longer_than_its_descriptor(tmp_path: Path) -> None:
    built = build_oci_layout(tmp_path / "layout", [base_layer()], CONFIG)
    (image,) = read_archive(tmp_path / "layout")
    with open(layer_blob(built, tmp_path / "layout"), "ab") as f:
        f.write(b"\0" * 4096)           # grows after it was measured
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ImageError, match="more than"):
        image.layers[0].extract(str(dest))
    assert os.listdir(dest) == []


# --- review fixes: layers in use, repeated layers ------------------------------------------------


def test_gc_spares_a_layer_a_container_holds(tmp_path: Path, store: ImageStore) -> None:
    build_oci_layout(tmp_path / "layout", [base_layer(), top_layer()], CONFIG)
    image = store.import_archive(tmp_path / "layout")
    held = os.open(image.layers[1], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(held, fcntl.LOCK_SH)
        store.remove(image)
        assert Path(image.layers[1], "app/tag").read_text() == "top"
        assert not Path(image.layers[0]).exists()
    finally:
        os.close(held)
    store.gc()
    assert os.listdir(Path(store.root, "layers/sha256")) == []
    assert os.listdir(Path(store.root, "tmp")) == []


def test_repeated_layer_runs(tmp_path: Path, store: ImageStore) -> None:
    empty = Layer([directory("app")])
    built = build_oci_layout(tmp_path / "layout", [empty, base_layer(), empty, top_layer()], CONFIG)
    image = store.import_archive(tmp_path / "layout")
    assert image.diff_ids == tuple(built.diff_ids) and image.layers[0] == image.layers[2]
    assert image.overlay().lower == image.layers[1:]


def test_too_many_layers(tmp_path: Path, store: ImageStore) -> None:
    layers = [Layer([file(f"f{n}", str(n))]) for n in range(501)]
    build_docker_archive(tmp_path / "tall.tar", layers, CONFIG)
    with pytest.raises(ImageError, match="501 layers"):
        store.import_archive(tmp_path / "tall.tar")
    assert os.listdir(Path(store.root, "layers/sha256")) == []


# --- review fixes: malformed documents -----------------------------------------------------------


def edit_index(layout: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    index = json.loads((layout / "index.json").read_text())
    change(index)
    (layout / "index.json").write_text(json.dumps(index))


def add_blob(layout: Path, doc: Any) -> dict[str, Any]:
    data = json.dumps(doc).encode()
    digest = sha256(data)
    (layout / "blobs/sha256" / digest.removeprefix("sha256:")).write_bytes(data)
    return {"mediaType": OCI_INDEX, "digest": digest, "size": len(data)}


@pytest.mark.parametrize("change", [
    lambda index: index["manifests"][0].update(annotations=["x"]),
])
def test_malformed_index_fields(tmp_path: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    build_oci_layout(tmp_path / "layout", [base_layer()], CONFIG)
    edit_index(tmp_path / "layout", change)
    with pytest.raises(ImageError, match="index.json"):
        read_archive(tmp_path / "layout")


def test_deeply_nested_json(tmp_path: Path) -> None:
    build_oci_layout(tmp_path / "layout", [base_layer()], CONFIG)
    (tmp_path / "layout/index.json").write_text("[" * 100_000)
    with pytest.raises(ImageError, match="index.json"):
        read_archive(tmp_path / "layout")


def test_malformed_manifest_media_type(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    build_oci_layout(layout, [base_layer()], CONFIG)
    manifest_desc = json.loads((layout / "index.json").read_text())["manifests"][0]
    blob = layout / "blobs/sha256" / manifest_desc["digest"].removeprefix("sha256:")
    manifest = {**json.loads(blob.read_text()), "mediaType": ["x"]}
    desc = {key: value for key, value in add_blob(layout, manifest).items() if key != "mediaType"}
    edit_index(layout, lambda index: index.update(manifests=[desc]))
    with pytest.raises(ImageError, match="mediaType"):
        read_archive(layout)


def test_malformed_platform(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    build_oci_layout(layout, [base_layer()], CONFIG)
    manifest = json.loads((layout / "index.json").read_text())["manifests"][0]
    nested = add_blob(layout, {"schemaVersion": 2, "manifests": [
        {**manifest, "platform": "linux"}, {**manifest, "platform": "linux"}]})
    edit_index(layout, lambda index: index.update(manifests=[nested]))
    with pytest.raises(ImageError, match="platform"):
        read_archive(layout)


@pytest.mark.parametrize("field,value", [
    ("Cmd", "sh -c id"), ("Entrypoint", "sh"), ("Env", "A=1"), ("Env", [1]),
    ("WorkingDir", 5), ("User", 1000),
])
def test_config_fields_are_checked(tmp_path: Path, field: str, value: Any) -> None:
    build_oci_layout(tmp_path / "layout", [base_layer()], {**CONFIG, field: value})
    with pytest.raises(ImageError, match=field) as caught:
        read_archive(tmp_path / "layout")
    assert "blobs/sha256" in str(caught.value)


def test_user_digits_are_ascii(tmp_path: Path, store: ImageStore) -> None:
    build_oci_layout(tmp_path / "layout", [base_layer()], {"User": "\u00b2"})
    image = store.import_archive(tmp_path / "layout")
    with pytest.raises(ImageError, match="\u00b2"):
        image.resolve_user()
    with pytest.raises(ImageError, match="group '\u00b2'"):
        attrs.evolve(image, config={"User": "1000:\u00b2"}).resolve_user()


@pytest.mark.parametrize("kind", FORMATS)
def test_other_architecture_is_refused(tmp_path: Path, store: ImageStore, kind: str) -> None:
    other = "s390x" if host_architecture() != "s390x" else "amd64"
    build(kind, tmp_path / "image", [base_layer()], CONFIG, architecture=other)
    with pytest.raises(ImageError, match=f"linux/{other}.*linux/{host_architecture()}"):
        store.import_archive(tmp_path / "image")
    assert store.images() == [] and os.listdir(Path(store.root, "layers/sha256")) == []


# --- review fixes: names ----------------------------------------------------------------------------


def test_canonical_name() -> None:
    assert canonical_name("busybox") == "docker.io/library/busybox:latest"
    assert canonical_name("docker.io/busybox") == canonical_name("busybox")
    assert canonical_name("index.docker.io/library/busybox:1") == "docker.io/library/busybox:1"
    assert canonical_name("localhost:5000/app") == "localhost:5000/app:latest"
    assert canonical_name("example.com/a/b:v1.2") == "example.com/a/b:v1.2"
    digest = "sha256:" + "a" * 64
    assert canonical_name("app@" + digest) == "docker.io/library/app@" + digest
    for invalid in ("", ":", "foo:bar:baz", "a\x1b[31m", "a\nb", "UPPER", "a:b@c", "/a", "a//b", "a:"):
        with pytest.raises(ImageError, match="reference"):
            canonical_name(invalid)


def test_names_with_control_characters_are_dropped(tmp_path: Path, store: ImageStore) -> None:
    build_docker_archive(tmp_path / "image.tar", [base_layer()], CONFIG, ["evil\x1b[2J:1", "good:1"])
    assert read_archive(tmp_path / "image.tar")[0].names == ("good:1",)
    assert store.import_archive(tmp_path / "image.tar").names == ("good:1",)


# --- review fixes: cleanup ---------------------------------------------------------------------------


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_failed_collection_leaks_nothing(tmp_path: Path, store: ImageStore,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    build_oci_layout(tmp_path / "layout", [base_layer()], CONFIG)
    image = store.import_archive(tmp_path / "layout")
    real_rename = os.rename

    def failing(source: Any, *args: Any, **kwargs: Any) -> None:
        if "layers" in os.fspath(source):
            raise OSError(errno.EIO, "injected")
        real_rename(source, *args, **kwargs)

    before = open_fds()
    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(OSError, match="injected"):
        store.remove(image)
    monkeypatch.undo()
    assert open_fds() == before
    assert os.listdir(Path(store.root, "tmp")) == []
    store.gc()
    assert os.listdir(Path(store.root, "layers/sha256")) == []


def test_dead_imports_are_deleted_unlocked(tmp_path: Path, store: ImageStore,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    dead = Path(store.root, "tmp", "import-dead")
    (dead / "layer/deep").mkdir(parents=True)
    (dead / "needs").write_text("[]")
    locked_when: list[bool] = []
    real_rmdir = os.rmdir

    def watching(*args: Any, **kwargs: Any) -> None:
        fd = os.open(Path(store.root, "lock"), os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked_when.append(False)
        except BlockingIOError:
            locked_when.append(True)
        finally:
            os.close(fd)
        real_rmdir(*args, **kwargs)

    monkeypatch.setattr(os, "rmdir", watching)
    store.gc()
    assert locked_when and not any(locked_when)
    assert os.listdir(Path(store.root, "tmp")) == []
