"""Overlay roots: lower layers stay untouched, the upper takes every change.

Every test mounts a real overlayfs inside a container's mount namespace;
the layers are directories under /var/tmp that the tests fill themselves.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

import isolate
from conftest import (
    RUN_TIMEOUT,
    require,
    assert_no_leaks,
    busybox_rootfs,
    drop_to,
    run_in_fork,
    snapshot,
    unwrap,
)

APPLETS = ("true", "cat", "echo", "ls", "rm", "mkdir", "id", "dd", "touch", "rmdir", "stat")


@pytest.fixture
def base(host_dir: Path) -> Path:
    """A bottom layer holding a static busybox with a few applets."""
    root = busybox_rootfs(host_dir / "base")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc").mkdir()
    (root / "etc" / "motd").write_text("base\n")
    (root / "etc" / "only-base").write_text("base\n")
    return root


def layer(parent: Path, name: str, files: dict[str, str]) -> Path:
    """A layer directory `parent/name` holding `files` (path -> text)."""
    root = parent / name
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    root.mkdir(exist_ok=True)
    return root


def sh(script: str, rootfs, **kwargs) -> isolate.CompletedProcess:
    r = isolate.run(["/bin/sh", "-c", script], rootfs=rootfs, capture_output=True,
                    timeout=RUN_TIMEOUT, **kwargs)
    assert r.returncode == 0, r.stderr.decode()
    return r


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file under root, by relative path, with its content."""
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_upper_writes_do_not_touch_lowers(base: Path, host_dir: Path):
    app = layer(host_dir, "app", {"etc/app": "app\n"})
    before = (tree(base), tree(app))
    r = sh("echo hi > /etc/motd; echo new > /etc/app; cat /etc/motd /etc/app; id -u",
           isolate.Overlay(lower=[base, app]))
    assert r.stdout == b"hi\nnew\n0\n"
    assert (tree(base), tree(app)) == before


def test_deleting_a_lower_file_hides_it_inside_only(base: Path):
    r = sh("rm /etc/only-base; ls /etc", isolate.Overlay(lower=[base]))
    assert r.stdout.split() == [b"motd"]
    assert (base / "etc" / "only-base").read_text() == "base\n"


def test_lowers_stack_in_order_bottom_first(base: Path, host_dir: Path):
    middle = layer(host_dir, "middle", {"etc/motd": "middle\n", "etc/mid": "m\n"})
    top = layer(host_dir, "top", {"etc/motd": "top\n"})
    r = sh("cat /etc/motd /etc/mid /etc/only-base", isolate.Overlay(lower=[base, middle, top]))
    assert r.stdout == b"top\nm\nbase\n"
    r = sh("cat /etc/motd", isolate.Overlay(lower=[base, top, middle]))
    assert r.stdout == b"middle\n"


def test_ephemeral_upper_is_gone_after_the_run(base: Path):
    isolate.run(["true"], capture_output=True, timeout=RUN_TIMEOUT)   # warm up lazy imports
    before = snapshot()
    ov = isolate.Overlay(lower=[base])
    sh("echo x > /etc/scratch", ov)
    r = isolate.run(["/bin/cat", "/etc/scratch"], rootfs=ov, capture_output=True, timeout=RUN_TIMEOUT)
    assert r.returncode != 0 and b"No such file" in r.stderr
    assert not (base / "etc" / "scratch").exists()
    assert_no_leaks(before, snapshot())


def test_ephemeral_upper_size_limit(base: Path):
    ov = isolate.Overlay(lower=[base], size="1M")
    r = isolate.run(["/bin/dd", "if=/dev/zero", "of=/big", "bs=64k", "count=64"], rootfs=ov,
                    capture_output=True, timeout=RUN_TIMEOUT)
    assert r.returncode != 0 and b"No space left" in r.stderr


def test_persistent_upper_keeps_changes(base: Path, host_dir: Path):
    ov = isolate.Overlay(lower=[base], upper=host_dir / "upper")
    assert ov.work == str(host_dir / "upper.work")
    sh("echo kept > /etc/motd; rm /etc/only-base; mkdir /data; echo d > /data/f", ov)
    r = sh("cat /etc/motd /data/f; ls /etc", ov)   # a second container sees the first's changes
    assert r.stdout == b"kept\nd\nmotd\n"
    assert (host_dir / "upper" / "etc" / "motd").read_text() == "kept\n"
    whiteout = os.lstat(host_dir / "upper" / "etc" / "only-base")
    assert os.major(whiteout.st_rdev) == os.minor(whiteout.st_rdev) == 0
    assert (base / "etc" / "motd").read_text() == "base\n"


def test_read_only_overlay(base: Path):
    r = isolate.run(["/bin/touch", "/etc/x"], rootfs=isolate.Overlay(lower=[base]),
                    rootfs_readonly=True, capture_output=True, timeout=RUN_TIMEOUT)
    assert r.returncode != 0 and b"Read-only file system" in r.stderr


def test_diff_turns_whiteouts_and_opaque_dirs_into_layer_entries(base: Path, host_dir: Path):
    (base / "var" / "cache").mkdir(parents=True)
    (base / "var" / "cache" / "old").write_text("old\n")
    ov = isolate.Overlay(lower=[base], upper=host_dir / "upper")
    sh("rm /etc/only-base; rm -r /var/cache; mkdir /var/cache; echo n > /var/cache/new; "
       "echo hi > /etc/motd", ov)
    names = _tar_names(ov.diff())
    assert {"etc/.wh.only-base", "var/cache/.wh..wh..opq", "var/cache/new", "etc/motd"} <= names
    assert not any(n.endswith("only-base") and ".wh." not in n for n in names)


def test_diff_round_trip_reproduces_the_tree(base: Path, host_dir: Path):
    """Changes -> diff() -> the layer on top of the same lowers: the same view."""
    from isolate.layers import apply

    ov = isolate.Overlay(lower=[base], upper=host_dir / "upper")
    script = "rm /etc/only-base; echo hi > /etc/motd; mkdir -p /opt/a; echo z > /opt/a/z"
    sh(script, ov)
    diff = host_dir / "diff"
    diff.mkdir()
    with open(host_dir / "layer.tar", "wb") as f:
        ov.diff(f.name)
    with open(host_dir / "layer.tar", "rb") as f:
        apply.extract(f, str(diff))
    listing = "ls -R /etc /opt; cat /etc/motd /opt/a/z"
    expected = sh(listing, ov).stdout
    assert sh(listing, isolate.Overlay(lower=[base, diff])).stdout == expected


def test_lower_can_be_the_host_root_without_a_user_namespace(host_dir: Path):
    """The issue's example: the host's / as the only lower, a persistent upper."""
    ov = isolate.Overlay(lower=["/"], upper=host_dir / "upper")
    r = sh("echo hi > /etc/motd; cat /etc/motd", ov, namespaces=isolate.ALL_NAMESPACES - {"user"})
    assert r.stdout == b"hi\n"
    assert (host_dir / "upper" / "etc" / "motd").read_text() == "hi\n"
    assert Path("/etc/motd").read_bytes() != b"hi\n"


def test_host_root_lower_in_a_user_namespace_is_refused_up_front(base: Path):
    with pytest.raises(isolate.ConfigError, match=r"Overlay.lower\[0\]: / has mounts beneath it"):
        isolate.run(["true"], rootfs=isolate.Overlay(lower=["/"]))
    with pytest.raises(isolate.ConfigError, match=r"^Overlay.upper: /sys has mounts beneath it"):
        isolate.run(["true"], rootfs=isolate.Overlay(lower=[base], upper="/sys"))


def test_a_failure_after_the_overlay_is_mounted_leaves_nothing(base: Path, host_dir: Path):
    isolate.run(["true"], capture_output=True, timeout=RUN_TIMEOUT)
    before = snapshot()
    for upper in (None, host_dir / "upper"):
        with pytest.raises(isolate.ExecutableNotFound):
            isolate.run(["/no/such/program"], rootfs=isolate.Overlay(lower=[base], upper=upper))
    assert_no_leaks(before, snapshot())


@pytest.mark.parametrize("make, field, message", [
    (lambda d: {"lower": [d / "missing"]}, r"Overlay.lower\[0\]", "does not exist"),
    (lambda d: {"lower": [d / "file"]}, r"Overlay.lower\[0\]", "is not a directory"),
    (lambda d: {"lower": []}, "Overlay.lower", "at least one"),
    (lambda d: {"lower": [d / "a:b"]}, r"Overlay.lower\[0\]", "cannot take a path containing"),
    (lambda d: {"lower": [d, d / "inner"]}, r"Overlay.lower\[1\]", "overlapping layers"),
    (lambda d: {"lower": [d / "inner"], "upper": d / "up", "work": "/dev/shm"},
     "Overlay.work", "same filesystem"),
    (lambda d: {"lower": [d / "inner"], "upper": d / "up", "work": d / "full"},
     "Overlay.work", "is not empty"),
    (lambda d: {"lower": [d / "inner"], "upper": d / "no" / "up"}, "Overlay.upper", "parent"),
    (lambda d: {"lower": [d / "inner"], "upper": d / "file"}, "Overlay.upper", "not a directory"),
    (lambda d: {"lower": [d / "inner"], "upper": d / "up", "work": d / "up" / "w"},
     "Overlay.work", "separate directories"),
    (lambda d: {"lower": [d / "inner"], "size": "lots"}, "Overlay.size", ""),
    (lambda d: {"lower": [d / "inner"], "upper": d / "up", "size": "1M"}, "Overlay.size", "ephemeral"),
    (lambda d: {"lower": [d / "inner"] * 501}, "Overlay.lower", "at most 500"),
    (lambda d: {"lower": [d / "inner", d / "link-to-inner"]}, r"Overlay.lower\[1\]", "overlapping"),
    (lambda d: {"lower": [d / "up" / "x"], "upper": d / "up"}, "Overlay.upper", "holds the lower layer"),
    (lambda d: {"lower": [d / "inner"], "upper": d / "link-to-inner"}, "Overlay.upper", "holds the lower"),
])
def test_bad_overlays_raise_naming_the_field(host_dir: Path, make, field, message):
    (host_dir / "file").write_text("")
    (host_dir / "inner").mkdir()
    (host_dir / "a:b").mkdir()
    (host_dir / "up").mkdir()
    (host_dir / "up" / "x").mkdir()
    (host_dir / "link-to-inner").symlink_to("inner")
    (host_dir / "full").mkdir()
    (host_dir / "full" / "junk").write_text("")
    with pytest.raises(isolate.ConfigError, match=f"^{field}: .*{message}"):
        isolate.Overlay(**make(host_dir))
    assert not (host_dir / "no").exists()


def long_named_layers(parent: Path, count: int, stem: str) -> list[Path]:
    """`count` layers with long names, each holding its own file and an
    'order' file the next one up replaces."""
    lowers = []
    for i in range(count):
        path = layer(parent, f"{stem}-{i:04d}", {f"etc/layer-{i}": f"{i}\n", "etc/order": f"{i}\n"})
        lowers.append(path)
    return lowers


@pytest.mark.parametrize("stem", ["layer-with-a-rather-long-name", "\u00e9" * 12])
def test_more_layers_than_one_page_of_mount_options(base: Path, host_dir: Path, stem: str):
    """Past 4095 bytes of options (counted in bytes: 12 accented letters are
    24), the layers go to the kernel one at a time (Linux >= 6.8), up to
    overlayfs's 500."""
    lowers = long_named_layers(host_dir, 499, stem)
    ov = isolate.Overlay(lower=[base, *lowers])
    assert ov.options("/u", "/w") is None
    require(_kernel() >= (6, 8), f"Linux {os.uname().release} takes no 'lowerdir+'")
    r = sh("cat /etc/layer-0 /etc/layer-498 /etc/order /etc/only-base", ov)
    assert r.stdout == b"0\n498\n498\nbase\n"
    before = (base / "etc" / "motd").read_text()
    sh("echo x > /etc/motd", ov)
    assert (base / "etc" / "motd").read_text() == before


def test_layer_by_layer_paths_must_fit_fsconfig(base: Path, host_dir: Path):
    """fsconfig(2) takes values of at most 255 bytes: a longer layer path
    among many layers is refused up front, naming it."""
    lowers = long_named_layers(host_dir, 60, "layer-with-a-rather-long-name")
    deep = host_dir / ("d" * 200) / ("e" * 60)
    deep.mkdir(parents=True)
    with pytest.raises(isolate.ConfigError, match=r"^Overlay.lower\[61\]: .*255 bytes"):
        isolate.run(["/bin/true"], rootfs=isolate.Overlay(lower=[base, *lowers, deep]))


def _kernel() -> tuple[int, int]:
    major, minor = os.uname().release.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def test_rootless_overlay(base: Path, host_dir: Path, rootless: tuple[int, int]):
    uid, gid = rootless
    top = layer(host_dir, "top", {"etc/motd": "top\n"})
    # A rootless user's layers are its own (as its image store extracts them):
    # host root's files would be nobody's inside, and read-only to its root.
    for layer_dir in (base, top):
        for path in [layer_dir, *layer_dir.rglob("*")]:
            os.lchown(path, uid, gid)
    upper_parent = host_dir / "rootless"
    upper_parent.mkdir()
    os.chown(upper_parent, uid, gid)
    isolate.run(["true"], rootfs=isolate.Overlay(lower=[base]), timeout=RUN_TIMEOUT)   # warm up

    def body():
        out = []
        for upper in (None, upper_parent / "upper"):
            ov = isolate.Overlay(lower=[base, top], upper=upper)
            r = isolate.run(["/bin/sh", "-c", "cat /etc/motd; echo w > /etc/motd; rm /etc/only-base; "
                             "cat /etc/motd; id -u"], rootfs=ov, capture_output=True, timeout=RUN_TIMEOUT)
            out.append((r.returncode, r.stdout.decode(), r.stderr.decode()))
        owners = {(m.name, m.uid, m.gid) for m in _members(ov.diff())}
        return out, owners

    results, owners = unwrap(run_in_fork(body, setup=drop_to(uid, gid), timeout=60))
    for code, out, err in results:
        assert (code, out) == (0, "top\nw\n0\n"), err
    # In the layer, files are owned as the container saw them: by root.
    assert owners == {("etc", 0, 0), ("etc/motd", 0, 0), ("etc/.wh.only-base", 0, 0)}
    assert (upper_parent / "upper" / "etc" / "motd").read_text() == "w\n"
    assert (upper_parent / "upper" / "etc" / "motd").stat().st_uid == uid
    assert (base / "etc" / "only-base").exists() and (top / "etc" / "motd").read_text() == "top\n"


def test_a_refused_overlay_mount_names_the_step_and_leaves_nothing(base: Path, rootless: tuple[int, int]):
    """overlayfs refuses procfs as a layer: the mount step fails, with a hint,
    for root and rootless alike, and nothing is left behind."""
    isolate.run(["true"], capture_output=True, timeout=RUN_TIMEOUT)
    before = snapshot()

    def body():
        try:
            isolate.run(["/bin/true"], rootfs=isolate.Overlay(lower=[base, "/proc/driver"]))
        except isolate.SpawnError as e:
            return str(e)
        return None

    for message in (body(), unwrap(run_in_fork(body, setup=drop_to(*rootless), timeout=60))):
        assert message is not None and message.startswith(
            "mount('overlay', '/tmp', 'overlay'): Invalid argument (EINVAL); overlayfs refused")
    assert_no_leaks(before, snapshot())


def _members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


def _tar_names(data: bytes) -> set[str]:
    return {member.name for member in _members(data)}


def test_a_running_container_holds_its_lower_layers(base: Path, host_dir: Path):
    """Shared flocks on every lower while it runs (what the image store's
    garbage collection respects); released when it ends, also on failure."""
    from isolate.layers import in_use

    top = layer(host_dir, "top", {"etc/motd": "top\n"})
    with isolate.Container(["/bin/cat"], rootfs=isolate.Overlay(lower=[base, top]),
                           stdin=isolate.PIPE) as c:
        assert in_use.lock_unused(str(base)) is None and in_use.lock_unused(str(top)) is None
        c.process.stdin.close()
        assert c.wait(timeout=RUN_TIMEOUT) == 0
    for path in (base, top):
        fd = in_use.lock_unused(str(path))
        assert fd is not None
        os.close(fd)
    with pytest.raises(isolate.ExecutableNotFound):
        isolate.run(["/no/such"], rootfs=isolate.Overlay(lower=[base]))
    fd = in_use.lock_unused(str(base))
    assert fd is not None
    os.close(fd)


def test_a_layer_moved_away_before_its_lock_is_refused(host_dir: Path):
    """The store may move a layer between a container's open() and flock():
    the container sees its path no longer names what it holds."""
    from isolate.layers import in_use

    layer_dir = layer(host_dir, "layer", {"f": "x"})
    fd = os.open(layer_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.rename(layer_dir, host_dir / "trash")
        layer_dir.mkdir()   # even a new directory at the same path is not the one held
        with pytest.raises(isolate.ConfigError, match="was removed as the container started"):
            in_use._check_still_there(str(layer_dir), fd)
    finally:
        os.close(fd)
