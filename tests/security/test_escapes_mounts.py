"""Escapes through the container's mounts (issue 10, "The sandbox must
hold"): a /proc mounted through a symlink so its masks miss, device nodes
made or found in a writable or host mount, and the host's sockets, FIFOs
and homes seen through the bound host root.

Attacks run as root and as the unprivileged user (rootless) where both
apply, through the `caller` fixture of test_escapes.
"""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import uuid
from pathlib import Path
from typing import Iterable

import pytest

import isolate
from conftest import RUN_TIMEOUT, busybox_rootfs, require
from test_escapes import TRY, python_inside

BUSYBOX = "/bin/busybox"


def busybox(root: Path | isolate.Overlay, script: str, **config) -> str:
    """Run a busybox shell script in `root`; its output, or "refused: STEP"."""
    try:
        r = isolate.run([BUSYBOX, "sh", "-c", script], rootfs=root, capture_output=True,
                        text=True, timeout=RUN_TIMEOUT, **config)
    except isolate.SpawnError as exc:
        return f"refused: {exc.step}"
    return r.stdout


# --- CVE-2019-19921, CVE-2023-28642: /proc mounted through a symlink --------

def test_proc_through_a_symlink_is_refused(caller, host_dir):
    """A rootfs whose /proc is `tmp/link` and `tmp/link -> /p`: proc would be
    mounted at /p, and the fresh /tmp would hide the link, so every mask
    and read-only step would find nothing.  The spawn is refused instead;
    core_pattern is never written, /proc/keys and timer_list never read."""
    root = busybox_rootfs(host_dir)
    (root / "proc").rmdir()
    (root / "proc").symlink_to("tmp/link")
    (root / "tmp" / "link").symlink_to("/p")
    (root / "p").mkdir()
    os.chmod(host_dir, 0o755)
    before = Path("/proc/sys/kernel/core_pattern").read_bytes()
    # Writing back its own value changes nothing if this ever succeeds.
    script = ("v=$(busybox cat /p/sys/kernel/core_pattern) && echo \"$v\" > /p/sys/kernel/core_pattern "
              "&& echo core_pattern-written; busybox wc -c /p/keys /p/timer_list 2>/dev/null")
    out = caller(lambda: busybox(root, script))
    assert out == "refused: mount('proc', '/proc', 'proc'), on the directory itself", out
    assert Path("/proc/sys/kernel/core_pattern").read_bytes() == before


def test_vanished_mask_target_is_an_error(caller, host_dir):
    """A masked or read-only path the root lacks at spawn time fails the
    spawn, naming the step; it is not skipped."""
    root = busybox_rootfs(host_dir)
    os.chmod(host_dir, 0o755)
    masked = caller(lambda: busybox(root, "echo ran", masked_paths=["/etc/secret"]))
    readonly = caller(lambda: busybox(root, "echo ran", readonly_paths=["/etc/config"]))
    assert masked == "refused: mask '/etc/secret'", masked
    assert readonly == "refused: bind '/etc/config' read-only", readonly


def test_proc_masks_left_out_where_no_proc_is_mounted(caller, host_dir):
    """The control: a rootfs sharing the host's pid namespace gets no /proc,
    so the /proc masks are not in its plan and the spawn works."""
    root = busybox_rootfs(host_dir)
    os.chmod(host_dir, 0o755)
    shared = isolate.ALL_NAMESPACES - {"pid"}
    assert caller(lambda: busybox(root, "echo ran", namespaces=shared)) == "ran\n"


# --- device nodes: CAP_MKNOD without a user namespace, nodes on the host -----

LOOP0 = (7, 0)

#: In each directory, make a block device 7:0, open it read-only (dd with
#: count=0 reads nothing), and report the outcome; never write to it.
MKNOD = """
for d in {dirs}; do
  n=$d/isolate-blk-$$
  if busybox mknod $n b 7 0 2>/dev/null; then
    busybox dd if=$n of=/dev/null bs=1 count=0 2>/dev/null && echo "$d opened" || echo "$d refused"
    busybox rm -f $n
  else
    echo "$d no-mknod"
  fi
done
"""


def loop0_opens() -> bool:
    """Whether the host has a loop device 7:0 that opens (the control)."""
    try:
        os.close(os.open("/dev/loop0", os.O_RDONLY))
    except OSError:
        return False
    return os.major(os.stat("/dev/loop0").st_rdev) == 7


def test_mknod_without_user_namespace_opens_nothing(host_dir):
    """As root with the host's user namespace (the CLI's --share user) the
    container keeps CAP_MKNOD: a block device made in /dev, /dev/shm, /tmp,
    a hidden host directory, a Tmpfs, a writable Bind, a writable rootfs
    or an Overlay root never opens, since every writable mount is nodev."""
    require(os.geteuid() == 0, "mknod without a user namespace needs root")
    require(loop0_opens(), "no loop device 7:0 on this host")
    shared_user = isolate.ALL_NAMESPACES - {"user"}
    (host_dir / "rw").mkdir()
    mounts = [isolate.Tmpfs("/mnt"), isolate.Bind(host_dir / "rw", "/var/tmp", readonly=False)]
    script = MKNOD.format(dirs="/dev /dev/shm /tmp /run /mnt /var/tmp")
    outcomes = isolate.run([BUSYBOX, "sh", "-c", script], namespaces=shared_user, mounts=mounts,
                           capture_output=True, text=True, timeout=RUN_TIMEOUT).stdout.split("\n")
    root = busybox_rootfs(host_dir)
    for rootfs, readonly in ((root, False), (isolate.Overlay(lower=[root]), None)):
        outcomes += busybox(rootfs, MKNOD.format(dirs="''"), namespaces=shared_user,
                            rootfs_readonly=readonly).split("\n")
    opened = [line for line in outcomes if line.endswith(" opened")]
    assert not opened, outcomes
    assert sum(line.endswith(" refused") for line in outcomes) == 8, outcomes


def test_device_node_on_the_host_does_not_open(host_dir):
    """A block device node the host has outside /dev (here made by the test
    in a host directory; a rootfs may ship one too) does not open from a
    root caller's container: the host root bind and the rootfs are nodev."""
    require(os.geteuid() == 0, "making a device node on the host needs root")
    require(loop0_opens(), "no loop device 7:0 on this host")
    root = busybox_rootfs(host_dir)
    for node in (host_dir / "blk", root / "blk"):
        os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(*LOOP0))
    code = TRY + f"""
print(json.dumps(attempt(lambda: os.close(os.open({str(host_dir / 'blk')!r}, os.O_RDONLY)))))
"""
    default_root = python_inside(code)
    in_rootfs = busybox(root, "busybox dd if=/blk of=/dev/null bs=1 count=0 2>&1 && echo opened")
    assert default_root == "EACCES", default_root
    assert "opened" not in in_rootfs and "Permission denied" in in_rootfs, in_rootfs


# --- the host's IPC endpoints and the caller's secrets ----------------------

@pytest.fixture
def run_endpoints() -> Iterable[dict[str, str]]:
    """A listening UNIX socket and a FIFO (with a reader) under the host's
    /run, both open to everyone, as the system D-Bus socket is."""
    base = f"/run/isolate-test-{uuid.uuid4().hex[:12]}"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(f"{base}.sock")
    listener.listen()
    os.mkfifo(f"{base}.fifo")
    reader = os.open(f"{base}.fifo", os.O_RDONLY | os.O_NONBLOCK)
    for path in (f"{base}.sock", f"{base}.fifo"):
        os.chmod(path, 0o666)
    try:
        yield {"socket": f"{base}.sock", "fifo": f"{base}.fifo"}
    finally:
        listener.close()
        os.close(reader)
        for path in (f"{base}.sock", f"{base}.fifo"):
            os.unlink(path)


def test_host_socket_and_fifo_under_run_unreachable(caller, run_endpoints):
    """A read-only bind does not stop connect(2) or opening a FIFO for
    writing: the default container's /run is an empty tmpfs instead."""
    code = TRY + f"""
import socket
def connect():
    socket.socket(socket.AF_UNIX).connect({run_endpoints['socket']!r})
print(json.dumps({{"socket": attempt(connect),
                  "fifo": attempt(lambda: os.open({run_endpoints['fifo']!r}, os.O_WRONLY | os.O_NONBLOCK)),
                  "run": os.listdir("/run"), "var_run": os.listdir("/var/run")}}))
"""
    result = caller(lambda: python_inside(code))
    assert result == {"socket": "ENOENT", "fifo": "ENOENT", "run": [], "var_run": []}, result


KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\n"


@pytest.fixture
def home_secret(request, caller) -> Iterable[Path]:
    """A private key in the `caller`'s ~/.ssh, made for the test (with the
    home and ~/.ssh when missing: the rootless user has none) and removed after."""
    rootless = request.node.callspec.params["caller"] == "rootless"
    uid, gid = request.getfixturevalue("rootless") if rootless else (0, 0)
    home = Path(pwd.getpwuid(uid).pw_dir)
    made = [d for d in (home, home / ".ssh") if not d.exists()]
    for d in made:
        d.mkdir(mode=0o700)
        os.chown(d, uid, gid)
    secret = home / ".ssh" / f"isolate-test-{uuid.uuid4().hex[:12]}"
    secret.write_text(KEY)
    os.chown(secret, uid, gid)
    secret.chmod(0o600)
    try:
        yield secret
    finally:
        secret.unlink()
        if made:
            shutil.rmtree(made[0])


def read_home(key: Path) -> str:
    """Inside: read the key, try to write beside it, list /home and /root."""
    return TRY + f"""
key = {str(key)!r}
def write():
    with open(key + ".new", "w"):
        pass
def read():
    with open(key) as f:
        return f.read()
def listing(path):
    try:
        return os.listdir(path)
    except OSError as e:
        return errno.errorcode[e.errno]
print(json.dumps({{"key": read() if os.path.exists(key) else attempt(read), "write": attempt(write),
                  "home": listing("/home"), "root": listing("/root")}}))
"""


def test_homes_hidden(caller, home_secret):
    """The caller's ~/.ssh is not there, nor is any home under /home or /root."""
    result = caller(lambda: python_inside(read_home(home_secret)))
    assert result["key"] == "ENOENT" and result["home"] == result["root"] == [], result


def test_expose_home_shows_it_read_only(caller, home_secret):
    """expose_home=True binds the caller's home read-only at its path; the
    other homes stay hidden."""
    result = caller(lambda: python_inside(read_home(home_secret), expose_home=True))
    if "/root/" in str(home_secret):
        # A root caller's container runs as unprivileged ids (isolate.security.idmaps):
        # root's 0700 home is there, and as closed to it as to any other user.
        assert (result["key"], result["write"]) == ("EACCES", "EACCES"), result
    else:
        assert (result["key"], result["write"]) == (KEY, "EROFS"), result
    home = str(home_secret.parent.parent)
    assert all(result[d] == [] for d in ("home", "root") if not home.startswith(f"/{d}")), result


def test_bind_under_hidden_dirs(caller, host_dir):
    """A Bind under /run or /home (hidden directories) works: the empty
    tmpfs comes before the caller's mounts, which it can hold."""
    (host_dir / "file").write_text("bound\n")
    os.chmod(host_dir, 0o755)
    mounts = [isolate.Bind(host_dir / "file", "/run/isolate-test/file"),
              isolate.Bind(host_dir, "/home/someone")]
    r = caller(lambda: isolate.run(["cat", "/run/isolate-test/file", "/home/someone/file"],
                                   mounts=mounts, capture_output=True, text=True, timeout=RUN_TIMEOUT))
    assert (r.returncode, r.stdout) == (0, "bound\nbound\n"), r.stderr
