"""The sandbox must hold, images and overlays (issue 10, items 7, 10, 11):
setuid files a container plants in a persistent upper, layers pulled from
under a detached container, archive bombs (sparse members, compression
ratios), device nodes in rootless imports, and a store path that cannot be.

Each case that depends on the caller runs as root and as the unprivileged
user, always in a forked child (a container started in this process would
hold its layers' flocks for the whole session).
"""
from __future__ import annotations

import os
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest

import isolate
from conftest import RUN_TIMEOUT, busybox_rootfs, drop_to, run_in_fork, unwrap
from image_builder import (Layer, build_docker_archive, busybox_config, busybox_layers, device, file,
                           sparse, symlink)
from isolate.cli import main as cli
from isolate.named import containers
from isolate.errors import ImageError
from isolate.named.state import StateDir

NOBODY = 65534
SPARSE_SIZE = 512 << 20

Caller = Callable[[Callable[[], Any]], Any]


@pytest.fixture(params=["root", "rootless"])
def as_caller(request) -> Caller:
    """Call a function in a forked child, as root or as the rootless user."""
    isolate.run(["true"])   # load the native module before forking
    ids = request.getfixturevalue("rootless") if request.param == "rootless" else None
    return lambda fn: unwrap(run_in_fork(fn, setup=None if ids is None else drop_to(*ids), timeout=120))


@pytest.fixture
def home(host_dir: Path, as_caller: Caller) -> Path:
    """A directory of the caller's own, in host_dir."""
    path = host_dir / "home"
    path.mkdir()
    os.chown(path, *as_caller(lambda: (os.getuid(), os.getgid())))
    return path


def as_nobody(fn: Callable[[], Any]) -> Any:
    """`fn`'s outcome in a child running as the host user nobody."""
    return run_in_fork(fn, setup=drop_to(NOBODY, NOBODY))


def archive(host_dir: Path, layers: list, name: str = "app:1") -> Path:
    path = host_dir / f"{name.replace(':', '-')}.tar"
    build_docker_archive(path, layers, busybox_config(), [name])
    os.chmod(path, 0o644)
    return path


# --- item 7: setuid files planted in a persistent upper ----------------------------------


def test_setuid_file_planted_in_a_new_upper_is_out_of_other_users_reach(host_dir: Path, home: Path,
                                                                       as_caller: Caller):
    """Container root copies a shell and makes it setuid in the upper: the
    upper (and its work directory) that isolate made are 0700, so another
    host user can neither see nor run it (for a root caller it would run
    with euid 0)."""
    base = busybox_rootfs(host_dir)
    upper = home / "upper"

    def plant() -> list[int]:
        ov = isolate.Overlay(lower=[base], upper=upper)
        return [isolate.run(["/bin/busybox", *argv], rootfs=ov, timeout=RUN_TIMEOUT).returncode
                for argv in (["cp", "/bin/busybox", "/evil"], ["chmod", "4755", "/evil"])]

    assert as_caller(plant) == [0, 0]
    assert os.stat(upper / "evil").st_mode & 0o7777 == 0o4755
    outcome = as_nobody(lambda: subprocess.run(["id", "-u"], executable=upper / "evil", capture_output=True))
    assert not outcome["ok"] and outcome["exc"]["type"] == "PermissionError", outcome
    assert (os.stat(upper).st_mode & 0o777, os.stat(f"{upper}.work").st_mode & 0o777) == (0o700, 0o700)


def test_an_existing_upper_keeps_its_mode(host_dir: Path, home: Path, as_caller: Caller):
    base = busybox_rootfs(host_dir)
    upper = home / "upper"
    upper.mkdir(mode=0o755)
    os.chown(upper, *as_caller(lambda: (os.getuid(), os.getgid())))

    def run() -> int:
        ov = isolate.Overlay(lower=[base], upper=upper)
        return isolate.run(["/bin/sh", "-c", "echo x > /f"], rootfs=ov, timeout=RUN_TIMEOUT).returncode

    assert as_caller(run) == 0
    assert os.stat(upper).st_mode & 0o777 == 0o755


# --- item 10: a detached container holds its layers until rm ------------------------------


def test_rmi_keeps_the_layers_of_a_detached_container_until_rm(host_dir: Path, home: Path,
                                                               as_caller: Caller):
    """`run -d --image`, then `rmi` and `gc` while it runs: its root stays
    whole (exec still reads it); `rm` then deletes the layers."""
    path = archive(host_dir, busybox_layers() + [[symlink("bin/sleep", "busybox"), file("app/data", "v1\n")]])
    store_dir, state = home / "store", home / "state"

    def main(*args: str) -> int:
        return cli.main(["--root", str(state), "--store", str(store_dir), *args])

    # Started in a child of its own, which exits: no flock of it remains.
    assert as_caller(lambda: main("run", "-d", "--name", "web", "--image", str(path), "--",
                                  "sleep", "1000")) == 0
    try:
        def remove_image_then_read() -> tuple[list[bool], bytes]:
            store = isolate.ImageStore(store_dir)
            layers = store.get("app:1").layers
            assert main("rmi", "app:1") == 0
            store.gc()
            r = containers.exec_named(StateDir(state), "web", ["cat", "/app/data"], capture_output=True,
                                 timeout=RUN_TIMEOUT)
            return [os.path.isdir(layer) for layer in layers], r.stdout

        kept, data = as_caller(remove_image_then_read)
        assert kept == [True, True] and data == b"v1\n"
        assert isolate.ImageStore(store_dir).images() == []
    finally:
        as_caller(lambda: main("rm", "-f", "web"))
    assert os.listdir(store_dir / "layers" / "sha256") == []
    assert os.listdir(store_dir / "leases") == []


def test_a_failed_detached_start_leaves_no_lease(host_dir: Path, home: Path, as_caller: Caller):
    path = archive(host_dir, busybox_layers())
    store_dir, state = home / "store", home / "state"
    code = as_caller(lambda: cli.main(["--root", str(state), "--store", str(store_dir), "run", "-d",
                                       "--name", "x", "--image", str(path), "--", "/no/such"]))
    assert code != 0
    assert os.listdir(store_dir / "leases") == []


@pytest.fixture
def stored(host_dir: Path) -> tuple[isolate.ImageStore, isolate.Image]:
    store = isolate.ImageStore(host_dir / "store")
    return store, store.import_archive(archive(host_dir, [[file("a", "a")], [file("b", "b")]]))


def leased_and_removed(host_dir: Path, store: isolate.ImageStore, image: isolate.Image
                       ) -> tuple[Path, str]:
    """Lease `image`'s layers for a holder file that exists, then remove the
    image: only the lease keeps its layers.  Returns the holder and the lease."""
    holder = host_dir / "web.json"
    holder.write_text("{}")
    path, fd = store.lease(str(holder), image.diff_ids)
    os.close(fd)
    store.remove(image)
    return holder, path


def test_a_lease_keeps_layers_while_its_holder_exists(host_dir: Path, stored):
    store, image = stored
    holder, path = leased_and_removed(host_dir, store, image)
    store.gc()
    assert all(os.path.isdir(layer) for layer in image.layers)
    holder.unlink()     # its container was removed by hand, or its /run went with a reboot
    store.gc()
    assert os.listdir(Path(store.root, "layers", "sha256")) == []
    assert not os.path.exists(path)


def test_a_lease_being_set_up_holds_without_its_holder(host_dir: Path, stored):
    """Between lease() and the state record being written, the starter's
    flock keeps the lease; once the starter is gone (it crashed), it goes."""
    store, image = stored
    path, fd = store.lease(str(host_dir / "not-yet.json"), image.diff_ids)
    try:
        store.remove(image)
        assert all(os.path.isdir(layer) for layer in image.layers)
    finally:
        os.close(fd)
    store.gc()
    assert os.listdir(Path(store.root, "layers", "sha256")) == [] and not os.path.exists(path)


def test_end_lease_deletes_the_layers_only_it_kept(host_dir: Path, stored):
    store, image = stored
    _, path = leased_and_removed(host_dir, store, image)
    store.end_lease(path)
    assert os.listdir(Path(store.root, "layers", "sha256")) == []
    assert os.listdir(Path(store.root, "leases")) == []


def test_a_lease_on_a_removed_image_is_refused(host_dir: Path, stored):
    store, image = stored
    store.remove(image)
    with pytest.raises(ImageError, match=f"layer {image.diff_ids[0]} is gone"):
        store.lease(str(host_dir / "web.json"), image.diff_ids)
    assert os.listdir(Path(store.root, "leases")) == []


# --- item 10: archive bombs -----------------------------------------------------------


@pytest.mark.parametrize("version", ["0.1", "1.0"])
def test_sparse_member_of_512_mib_stays_sparse_in_the_store(host_dir: Path, home: Path,
                                                           as_caller: Caller, version: str):
    """A ~20 KB archive whose layer holds a 512 MiB sparse file: the import
    is quick and writes its few data bytes, not 512 MiB of zeros."""
    layer = Layer([sparse("big", [(0, b"head"), (SPARSE_SIZE - 4, b"tail")], SPARSE_SIZE, version)],
                  "gzip")
    path = archive(host_dir, [layer])
    assert os.path.getsize(path) < 20_000

    def import_it() -> tuple[float, str]:
        started = time.monotonic()
        image = isolate.ImageStore(home / "store").import_archive(path)
        return time.monotonic() - started, image.layers[0]

    took, layer_dir = as_caller(import_it)
    st = os.stat(Path(layer_dir, "big"))
    assert st.st_size == SPARSE_SIZE and st.st_blocks * 512 <= 1 << 20
    assert took < 5
    with open(Path(layer_dir, "big"), "rb") as f:
        assert f.read(4) == b"head"
        f.seek(SPARSE_SIZE - 4)
        assert f.read() == b"tail"


def test_layer_over_its_expansion_ratio_is_refused(host_dir: Path, home: Path, as_caller: Caller):
    """64 MiB of zeros gzip to ~64 KB (1000:1): past 100 times its stored
    size (and a 1 MiB floor) it stops, naming the layer and the numbers,
    and nothing stays in the store."""
    path = archive(host_dir, busybox_layers() + [Layer([file("zeros", bytes(64 << 20))], "gzip")])

    def import_it() -> str:
        store = isolate.ImageStore(home / "store", ratio_floor="1M")
        with pytest.raises(ImageError) as raised:
            store.import_archive(path)
        return str(raised.value)

    message = as_caller(import_it)
    assert " expands to more than " in message and "stored; refused (ImageStore max_ratio=100, " \
           "ratio_floor=1048576)" in message, message
    assert os.listdir(home / "store" / "layers" / "sha256") == []
    assert os.listdir(home / "store" / "tmp") == []


def test_import_over_its_total_budget_is_refused(host_dir: Path, stored):
    path = archive(host_dir, [Layer([file("z1", bytes(2 << 20))], "gzip"),
                              Layer([file("z2", bytes(2 << 20))], "gzip")], "zeros:1")
    store = isolate.ImageStore(host_dir / "store", max_import_size="3M")
    before = sorted(os.listdir(Path(store.root, "layers", "sha256")))
    with pytest.raises(ImageError, match=r"the image's layers expand to more than 3145728 bytes .*"
                                         r"max_import_size=3145728\)"):
        store.import_archive(path)
    assert sorted(os.listdir(Path(store.root, "layers", "sha256"))) == before


def test_expansion_limits_have_defaults_and_are_checked(tmp_path: Path):
    limits = isolate.ImageStore(tmp_path / "store").limits
    assert (limits.max_ratio, limits.ratio_floor, limits.max_import_size) == (100, 256 << 20, None)
    for field, value in (("max_ratio", 0.5), ("max_ratio", "x"), ("ratio_floor", "lots"),
                         ("max_import_size", -1)):
        with pytest.raises(isolate.ConfigError, match=f"^ImageStore.{field}: "):
            isolate.ImageStore(tmp_path / "other", **{field: value})
    assert not (tmp_path / "other").exists()


# --- item 10: device nodes, rootless ------------------------------------------------------


def test_image_with_device_nodes_imports_rootless_without_them(host_dir: Path, home: Path,
                                                               as_caller: Caller):
    """A debootstrap-made image has /dev/full and the like: root makes
    them; a rootless caller skips them with a warning naming them (as
    rootless podman does), and the rest of the image is imported."""
    path = archive(host_dir, busybox_layers() + [[device("dev/full", 1, 7), device("dev/null", 1, 3),
                                                  file("etc/motd", "hi\n")]])

    def import_it() -> tuple[list[str], list[str], bool]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image = isolate.ImageStore(home / "store").import_archive(path)
        top = image.layers[-1]
        return [str(w.message) for w in caught], sorted(os.listdir(Path(top, "dev"))), \
            Path(top, "etc/motd").read_text() == "hi\n"

    caught, devices, has_motd = as_caller(import_it)
    assert has_motd
    if as_caller(os.getuid) == 0:
        assert (caught, devices) == ([], ["full", "null"])
    else:
        assert devices == [] and len(caught) == 1
        assert caught[0].endswith("skipped 2 device node(s), which cannot be created without "
                                  "CAP_MKNOD (rootless): dev/full, dev/null")


# --- item 11: a store that cannot be ---------------------------------------------------------


@pytest.mark.parametrize("where", ["/proc/nope", "a-file"])
def test_store_that_cannot_be_made_is_an_image_error(tmp_path: Path, where: str):
    root = where if where.startswith("/") else tmp_path / where
    if not where.startswith("/"):
        root.write_text("")
    with pytest.raises(ImageError, match=f"^ImageStore root {root}: cannot make {root}"):
        isolate.ImageStore(root)
