"""Running containers on imported images: config applied, round trips, CLI.

The images are built by the tests (tests/image_builder.py) around the
host's static busybox; nothing comes from a network.
"""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import isolate
from conftest import RUN_TIMEOUT, drop_to, run_in_fork, unwrap
from image_builder import (busybox_config, busybox_layers, build_docker_archive, build_oci_layout,
                           directory, file, raw, symlink, whiteout)

APP_CONFIG = busybox_config(Env=["PATH=/bin", "GREETING=hello"], WorkingDir="/app", User="daemon",
                            Entrypoint=["/bin/sh", "-c"], Cmd=['echo "$GREETING"; pwd; id -u; id -g'])


def app_layers() -> list:
    return busybox_layers() + [[directory("app", 0o777), file("app/data", "v1\n"),
                                file("etc/motd", "image\n")]]


@pytest.fixture
def store(host_dir: Path) -> isolate.ImageStore:
    return isolate.ImageStore(host_dir / "store")


@pytest.fixture
def image(store: isolate.ImageStore, host_dir: Path) -> isolate.Image:
    build_docker_archive(host_dir / "app.tar", app_layers(), APP_CONFIG, ["app:1"])
    return store.import_archive(host_dir / "app.tar")


def run(argv, **kwargs) -> isolate.CompletedProcess:
    return isolate.run(argv, capture_output=True, timeout=RUN_TIMEOUT, **kwargs)


def test_image_config_is_applied(image: isolate.Image):
    """Entrypoint + Cmd, Env, WorkingDir and User (a name from the image's /etc/passwd)."""
    r = run(image.command(), rootfs=image)
    assert (r.returncode, r.stdout) == (0, b"hello\n/app\n1\n1\n"), r.stderr


def test_arguments_replace_cmd_and_explicit_fields_win(image: isolate.Image):
    r = run(image.command(['echo "$GREETING $EXTRA"; pwd; id -u; id -g']), rootfs=image,
            env={"EXTRA": "there"}, cwd="/etc", user=0)
    assert (r.returncode, r.stdout) == (0, b"hello there\n/etc\n0\n0\n"), r.stderr
    r = run(image.command(["id -u; id -g"]), rootfs=image, group=65534)
    assert r.stdout == b"1\n65534\n"


@pytest.mark.parametrize("user, expected", [
    (None, b"1 1 /usr/sbin"),         # the image's User, daemon
    (0, b"0 0 /root"),
    (65534, b"65534 65534 /nonexistent"),   # its group and home from /etc/passwd
    (4242, b"4242 0 /"),              # not in /etc/passwd: group 0, HOME=/ (as Docker)
])
def test_user_group_and_home_follow_the_images_passwd(image: isolate.Image, user, expected):
    r = run(image.command(['echo $(id -u) $(id -g) "$HOME"']), rootfs=image, user=user)
    assert (r.returncode, r.stdout) == (0, expected + b"\n"), r.stderr
    r = run(image.command(['echo "$HOME"']), rootfs=image, user=user, env={"HOME": "/x"})
    assert r.stdout == b"/x\n"


def test_container_writes_do_not_reach_the_store(image: isolate.Image):
    r = run(image.command(["echo changed > /app/data; rm /etc/motd; cat /app/data"]), rootfs=image)
    assert r.stdout == b"changed\n"
    assert (Path(image.layers[-1]) / "app" / "data").read_text() == "v1\n"
    assert (Path(image.layers[-1]) / "etc" / "motd").read_text() == "image\n"
    r = run(image.command(["cat /app/data /etc/motd"]), rootfs=image)
    assert r.stdout == b"v1\nimage\n"


def test_whiteouts_of_an_upper_layer_hide_lower_files(store: isolate.ImageStore, host_dir: Path):
    layers = app_layers() + [[whiteout("etc/motd"), symlink("app/link", "data")]]
    build_oci_layout(host_dir / "layout", layers, APP_CONFIG, "app:2")
    image = store.import_archive(host_dir / "layout")
    r = run(image.command(["ls /etc; cat /app/link"]), rootfs=image)
    assert r.stdout == b"group\npasswd\nv1\n", r.stderr


def test_round_trip_import_run_diff_import(image: isolate.Image, store: isolate.ImageStore,
                                           host_dir: Path):
    """import -> run (persistent upper) -> diff -> import as a new image: the
    new image shows exactly what the container left."""
    ov = image.overlay(upper=host_dir / "upper")
    changes = "rm /etc/motd; echo v2 > /app/data; mkdir -p /app/new; echo n > /app/new/f"
    assert run(image.command([changes]), rootfs=ov).returncode == 0
    listing = image.command(["ls -R /app /etc; cat /app/data /app/new/f"])
    expected = run(listing, rootfs=ov)
    diff_entries = _entries(ov.diff())
    assert {".wh.motd", "data", "f"} <= {os.path.basename(info.name) for info, _ in diff_entries}
    build_oci_layout(host_dir / "next", app_layers() + [[raw(i, d) for i, d in diff_entries]],
                     APP_CONFIG, "app:next")
    again = store.import_archive(host_dir / "next")
    assert again.layers[:-1] == image.layers     # the shared layers are stored once
    got = run(listing, rootfs=again)
    assert (got.returncode, got.stdout) == (0, expected.stdout)


def test_rootless_import_and_run(host_dir: Path, rootless: tuple[int, int]):
    """A rootless user's own store: layers it extracted are its own, so its
    container's root may change them (in the overlay's upper)."""
    uid, gid = rootless
    build_docker_archive(host_dir / "app.tar", app_layers(), APP_CONFIG, ["app:1"])
    os.chmod(host_dir / "app.tar", 0o644)
    home = host_dir / "home"
    home.mkdir()
    os.chown(home, uid, gid)
    run(["true"])   # warm up lazy imports while root

    def body():
        image = isolate.ImageStore(home / "store").import_archive(host_dir / "app.tar")
        r = run(image.command(["echo w > /app/data; cat /app/data; id -u"]), rootfs=image, user=0, group=0)
        return r.returncode, r.stdout, r.stderr, os.stat(image.layers[-1] + "/app/data").st_uid

    code, out, err, owner = unwrap(run_in_fork(body, setup=drop_to(uid, gid), timeout=60))
    assert owner == uid
    assert (code, out) == (0, b"w\n0\n"), err


# --- command line --------------------------------------------------------------

def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "isolate", *args], capture_output=True,
                          timeout=120, **kwargs)


def test_cli_run_image_archive_default_command_and_arguments(host_dir: Path):
    build_docker_archive(host_dir / "app.tar", app_layers(), APP_CONFIG, ["app:1"])
    store = str(host_dir / "store")
    r = cli("--store", store, "run", "--image", str(host_dir / "app.tar"))
    assert (r.returncode, r.stdout) == (0, b"hello\n/app\n1\n1\n"), r.stderr
    r = cli("--store", store, "run", "--image", "app:1", "--", "echo $GREETING; exit 3")
    assert (r.returncode, r.stdout) == (3, b"hello\n"), r.stderr
    r = cli("--store", store, "images")
    assert r.returncode == 0 and b"\napp          1         " in r.stdout    # REPOSITORY, TAG
    r = cli("--store", store, "rmi", "app:1")
    assert r.returncode == 0
    assert os.listdir(Path(store) / "layers" / "sha256") == []
    r = cli("--store", store, "run", "--image", "app:1")
    assert r.returncode == 125 and b"app:1" in r.stderr


def test_cli_import_shows_a_progress_bar_on_a_terminal(host_dir: Path):
    build_docker_archive(host_dir / "app.tar", app_layers(), APP_CONFIG, ["app:1"])
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "isolate", "--store", str(host_dir / "store"),
                                 "import", str(host_dir / "app.tar")],
                                stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        out = proc.communicate(timeout=120)[0]
        shown = _read_all(master)
    finally:
        os.close(master)
    assert proc.returncode == 0 and out.startswith(b"sha256:")
    assert b"importing app.tar [" in shown and b"100.0%" in shown
    assert shown.count(b"\r") >= 2     # redrawn as it went
    # Not a terminal: no bar.
    r = cli("--store", str(host_dir / "store2"), "import", str(host_dir / "app.tar"))
    assert r.returncode == 0 and r.stderr == b""


def _read_all(fd: int) -> bytes:
    data = b""
    while select.select([fd], [], [], 0.5)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:   # EIO: the other side is closed
            break
        if not chunk:
            break
        data += chunk
    return data


def _entries(layer_tar: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(layer_tar)) as tar:
        return [(member, tar.extractfile(member).read() if member.isfile() else b"")
                for member in tar.getmembers()]


def test_the_image_path_is_kept(store: isolate.ImageStore, host_dir: Path):
    """The image's PATH beats isolate's default; an env given still wins."""
    layers = app_layers() + [[directory("opt/app/bin"), symlink("opt/app/bin/hello", "/bin/busybox")]]
    config = busybox_config(Env=["PATH=/opt/app/bin:/bin"])
    build_docker_archive(host_dir / "path.tar", layers, config, ["path:1"])
    image = store.import_archive(host_dir / "path.tar")
    r = run(["sh", "-c", 'echo "$PATH"; command -v hello'], rootfs=image)
    assert r.stdout == b"/opt/app/bin:/bin\n/opt/app/bin/hello\n", r.stderr
    r = run(["sh", "-c", 'echo "$PATH"'], rootfs=image, env={"PATH": "/bin"})
    assert r.stdout == b"/bin\n"
