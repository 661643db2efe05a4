"""Archives written by a real tool: `podman save` in its three formats.

podman builds the image offline (`podman import` of a busybox root tarball)
in a storage directory of the test's own; CI installs podman.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import isolate
from conftest import RUN_TIMEOUT, require

FORMATS = {"docker-archive": "image.tar", "oci-archive": "image.oci.tar", "oci-dir": "image.oci"}


@pytest.fixture(scope="module")
def podman_saved(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """One busybox image, saved by podman in every format."""
    podman = shutil.which("podman")
    require(podman is not None, "podman is not installed (apt-get install podman)")
    busybox = shutil.which("busybox")
    require(busybox is not None, "busybox is not installed (apt-get install busybox-static)")
    work = tmp_path_factory.mktemp("podman")
    root = work / "root"
    (root / "bin").mkdir(parents=True)
    shutil.copy2(busybox, root / "bin" / "busybox")
    for applet in ("sh", "cat", "pwd"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc").mkdir()
    (root / "etc" / "motd").write_text("podman\n")
    with tarfile.open(work / "rootfs.tar", "w") as tar:
        tar.add(root, arcname=".")
    # podman wants a runroot path of at most 50 characters.
    run = tempfile.mkdtemp(prefix="isolate-test-podman-", dir="/tmp")
    base = [podman, "--root", str(work / "storage"), "--runroot", run, "--tmpdir", run,
            "--storage-driver", "vfs"]
    try:
        yield _save(base, work)
    finally:
        shutil.rmtree(run, ignore_errors=True)


def _save(base: list[str], work: Path) -> dict[str, Path]:
    _podman(base + ["import", "--change", "ENV GREETING=hi", "--change", "WORKDIR /etc",
                    "--change", 'CMD ["/bin/sh", "-c", "echo $GREETING; pwd; cat motd"]',
                    str(work / "rootfs.tar"), "localhost/bb:1"])
    saved = {fmt: work / name for fmt, name in FORMATS.items()}
    for fmt, path in saved.items():
        _podman(base + ["save", "--format", fmt, "-o", str(path), "localhost/bb:1"])
    return saved


def _podman(argv: list[str]) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{' '.join(argv[4:6])}: {r.stderr}"


@pytest.mark.parametrize("fmt", FORMATS)
def test_podman_save_formats_import_and_run(podman_saved: dict[str, Path], host_dir: Path, fmt: str):
    store = isolate.ImageStore(host_dir / "store")
    image = store.import_archive(podman_saved[fmt])
    assert image.names == ("localhost/bb:1",)
    assert store.get("bb:1") == image      # podman's short name for it
    assert image.created and image.created_at <= image.imported   # podman import dates it
    assert (image.env["GREETING"], image.cwd) == ("hi", "/etc")
    r = isolate.run(image.command(), rootfs=image, capture_output=True, timeout=RUN_TIMEOUT)
    assert (r.returncode, r.stdout) == (0, b"hi\n/etc\npodman\n"), r.stderr


def test_one_image_in_three_formats_is_stored_once(podman_saved: dict[str, Path], host_dir: Path):
    """docker-archive (plain layer) and OCI (gzip layer): one diff_id, one copy."""
    store = isolate.ImageStore(host_dir / "store")
    ids = {store.import_archive(podman_saved[fmt]).id for fmt in FORMATS}
    assert len(ids) == 1
    assert len(os.listdir(host_dir / "store" / "layers" / "sha256")) == 1
