"""What the container can see: namespaces, hostname, mounts, network, /proc, files."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

import isolate
from conftest import (
    PYTHON,
    RUN_TIMEOUT,
    give_to_container_root,
    host_mountinfo,
    host_ns,
    marker,
    require,
)

ALL_NAMESPACES = ("user", "mount", "pid", "uts", "ipc", "net", "cgroup", "time")
# isolate namespace name -> /proc/PID/ns/ link name
NS_LINK = {"user": "user", "mount": "mnt", "pid": "pid", "uts": "uts", "ipc": "ipc",
           "net": "net", "cgroup": "cgroup", "time": "time"}


def sh(script: str, **kwargs) -> isolate.CompletedProcess:
    """Run ``sh -c script`` in a container; return the completed, checked result."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("timeout", RUN_TIMEOUT)
    r = isolate.run(["sh", "-c", script], **kwargs)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r


def lines(r: isolate.CompletedProcess) -> list[str]:
    """The captured stdout as a list of lines."""
    return r.stdout.decode().splitlines()


def container_ns_links() -> dict[str, str]:
    """readlink of /proc/self/ns/* for every namespace, as seen inside a default container."""
    names = " ".join(NS_LINK.values())
    r = sh(f"for n in {names}; do readlink /proc/self/ns/$n; done")
    return dict(zip(ALL_NAMESPACES, lines(r)))


# --- namespaces ------------------------------------------------------------

def test_default_creates_every_namespace():
    """By default the workload is in a new namespace of every kind."""
    inside = container_ns_links()
    for name in ALL_NAMESPACES:
        assert inside[name] != host_ns(NS_LINK[name]), f"{name} namespace is shared with host"


@pytest.mark.parametrize("shared", ["uts", "ipc", "net", "cgroup", "time", "pid", "user"])
def test_omitted_namespace_is_shared(shared: str):
    """Leaving a name out of namespaces= shares that namespace with the host only."""
    chosen = [n for n in ALL_NAMESPACES if n != shared]
    link = NS_LINK[shared]
    r = sh(f"readlink /proc/self/ns/{link}; readlink /proc/self/ns/uts", namespaces=chosen)
    got, uts = lines(r)
    assert got == host_ns(link)
    if shared != "uts":
        assert uts != host_ns("uts"), "other namespaces must still be new"


def test_pid_namespace_workload_is_low_pid():
    """The workload lives in a new PID namespace (its pid is 1 or 2, behind the init)."""
    pid = int(sh("echo $$").stdout)
    assert pid in (1, 2)


def test_proc_shows_only_container_processes():
    """/proc inside lists only the container's own few processes."""
    r = sh("for p in /proc/[0-9]*; do echo ${p#/proc/}; done")
    pids = [int(p) for p in lines(r)]
    assert 1 in pids
    assert len(pids) <= 4, f"host processes visible in /proc: {pids}"
    assert max(pids) < 10


def test_proc_pid1_is_not_host_init():
    """/proc/1 inside is the container's init, not the host's."""
    host_pid1 = Path("/proc/1/cmdline").read_bytes()
    r = isolate.run(["cat", "/proc/1/cmdline"], capture_output=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 0
    assert r.stdout != host_pid1


def test_ps_sees_only_container():
    """ps inside the container sees exactly init, sh and ps itself."""
    r = sh("ps -eo pid=")
    pids = sorted(int(p) for p in r.stdout.split())
    assert pids == [1, 2, 3], f"ps sees more than init, sh and ps: {pids}"


# --- uts ---------------------------------------------------------------------

def test_hostname_set_inside_and_host_unchanged():
    """hostname= applies inside only; the host keeps its own name."""
    before = socket.gethostname()
    r = sh("hostname; cat /proc/sys/kernel/hostname; uname -n", hostname="box-1")
    assert lines(r) == ["box-1"] * 3
    assert socket.gethostname() == before


def test_default_hostname():
    """Without hostname=, the container is named "isolate"."""
    assert lines(sh("hostname")) == ["isolate"]


def test_hostname_change_inside_stays_inside():
    """A workload with CAP_SYS_ADMIN renames its own UTS namespace, not the host."""
    before = socket.gethostname()
    r = isolate.run(["sh", "-c", "hostname renamed-inside && hostname"], capture_output=True,
                    capabilities=["SYS_ADMIN"], timeout=RUN_TIMEOUT)
    assert lines(r) == ["renamed-inside"]
    assert socket.gethostname() == before


def test_default_capabilities_exclude_sys_admin():
    """By default the workload keeps Docker's set: no CAP_SYS_ADMIN, so no mount."""
    script = "grep CapEff /proc/self/status; mount -t tmpfs x /mnt 2>/dev/null && echo mounted"
    r = isolate.run(["sh", "-c", script], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    cap_eff = int(r.stdout.split()[1], 16)
    assert not cap_eff & (1 << 21), r.stdout           # CAP_SYS_ADMIN
    assert cap_eff & (1 << 0) and cap_eff & (1 << 7)   # CAP_CHOWN, CAP_SETUID kept
    assert "mounted" not in r.stdout
    everything = isolate.run(["grep", "CapEff", "/proc/self/status"], capture_output=True,
                             text=True, capabilities=["ALL"], timeout=RUN_TIMEOUT)
    assert int(everything.stdout.split()[1], 16) & (1 << 21)


# --- ipc ---------------------------------------------------------------------

def shm_ids(ipcs_output: str) -> list[str]:
    """The shmid column of `ipcs -m` output."""
    return [ln.split()[1] for ln in ipcs_output.splitlines() if ln.startswith("0x")]


def test_sysv_ipc_isolated():
    """A SysV shared memory segment created on the host is invisible inside."""
    require(shutil.which("ipcmk") and shutil.which("ipcs"), "ipcmk/ipcs (util-linux) needed")
    out = subprocess.run(["ipcmk", "-M", "4096"], capture_output=True, text=True, check=True)
    shmid = out.stdout.split()[-1]
    try:
        host = subprocess.run(["ipcs", "-m"], capture_output=True, text=True, check=True)
        assert shmid in shm_ids(host.stdout)
        r = isolate.run(["ipcs", "-m"], capture_output=True, text=True, timeout=RUN_TIMEOUT)
        assert r.returncode == 0
        assert shmid not in shm_ids(r.stdout), "host shm segment visible inside the container"
    finally:
        subprocess.run(["ipcrm", "-m", shmid], check=True)


def test_dev_shm_private():
    """/dev/shm inside is not the host's /dev/shm."""
    name = marker()
    path = Path("/dev/shm") / name
    path.write_text("host")
    try:
        r = isolate.run(["test", "-e", f"/dev/shm/{name}"], timeout=RUN_TIMEOUT)
        assert r.returncode == 1
        sh(f"echo inside > /dev/shm/{name}-in")
        assert not Path(f"/dev/shm/{name}-in").exists()
    finally:
        path.unlink()


# --- network -----------------------------------------------------------------

def test_only_loopback_interface():
    """In the new net namespace the only interface is lo (the host has more)."""
    host = Path("/proc/net/dev").read_text()
    r = sh("cat /proc/net/dev")
    inside = [ln.split(":")[0].strip() for ln in lines(r)[2:]]
    assert inside == ["lo"]
    host_ifaces = [ln.split(":")[0].strip() for ln in host.splitlines()[2:]]
    require(len(host_ifaces) > 1, "host has only lo; nothing to hide")


def test_loopback_is_up():
    """lo is up inside (ip link shows UP)."""
    require(shutil.which("ip"), "iproute2 needed")
    r = sh("ip -o link")
    links = lines(r)
    assert len(links) == 1 and ": lo:" in links[0]
    flags = links[0].split("<")[1].split(">")[0].split(",")
    assert "UP" in flags


def test_loopback_tcp_works_inside():
    """A TCP connection over 127.0.0.1 works inside the container."""
    script = (
        "import socket\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "c = socket.create_connection(s.getsockname(), timeout=5)\n"
        "a, _ = s.accept(); c.sendall(b'ping'); print(a.recv(4).decode())\n"
    )
    r = isolate.run([PYTHON, "-c", script], capture_output=True, timeout=RUN_TIMEOUT)
    assert (r.returncode, r.stdout) == (0, b"ping\n"), r.stderr


def test_host_listener_unreachable():
    """A socket listening on the host's loopback cannot be reached from inside."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    script = (
        "import socket, sys\n"
        f"try: socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
        "except OSError: sys.exit(0)\n"
        "sys.exit(1)\n"
    )
    try:
        r = isolate.run([PYTHON, "-c", script], timeout=RUN_TIMEOUT)
    finally:
        srv.close()
    assert r.returncode == 0, "connected to a host loopback listener from inside"


# --- mounts ------------------------------------------------------------------

def test_mount_made_inside_invisible_on_host(host_dir: Path):
    """Mounts made for the container show in its mount table, never in the host's."""
    size_kib = 4 * (1024 + int(marker()[-6:], 16) % 100000)  # page-aligned, unlike any other
    mounts = [isolate.Bind(str(host_dir), "/mnt"), isolate.Tmpfs("/srv", size=size_kib * 1024)]
    with isolate.Container(["sh", "-c", "echo ready; read line"], stdin=isolate.PIPE,
                           stdout=isolate.PIPE, mounts=mounts) as c:
        assert c.process.stdout.readline() == b"ready\n"
        inside = Path(f"/proc/{c.pid}/mountinfo").read_text()
        host = "\n".join(host_mountinfo())
        c.process.stdin.write(b"done\n")
        c.process.stdin.close()
        assert c.wait(timeout=RUN_TIMEOUT) == 0
    assert f" {host_dir} /mnt " in inside and f"size={size_kib}k" in inside, inside
    assert str(host_dir) not in host and f"size={size_kib}k" not in host
    assert not any(str(host_dir) in ln for ln in host_mountinfo())


def test_mount_by_workload_invisible_on_host():
    """A tmpfs the workload mounts itself (given CAP_SYS_ADMIN) stays inside."""
    tag = marker()
    script = f"mount -t tmpfs {tag} /mnt && grep -c {tag} /proc/self/mountinfo; read line"
    with isolate.Container(["sh", "-c", script], stdin=isolate.PIPE, stdout=isolate.PIPE,
                           capabilities=["SYS_ADMIN"]) as c:
        assert c.process.stdout.readline() == b"1\n", "the mount did not happen inside"
        assert not any(tag in ln for ln in host_mountinfo())
        c.process.stdin.write(b"done\n")
        c.process.stdin.close()
        assert c.wait(timeout=RUN_TIMEOUT) == 0
    assert not any(tag in ln for ln in host_mountinfo())


def test_host_mount_table_unchanged_while_running():
    """Running a container (with extra mounts) adds nothing to the host's mount table."""
    before = host_mountinfo()
    with isolate.Container(["sh", "-c", "read x"], stdin=isolate.PIPE,
                           mounts=[isolate.Tmpfs("/mnt"), isolate.Bind("/usr", "/srv")]) as c:
        assert host_mountinfo() == before
        c.process.stdin.close()
        c.wait(timeout=RUN_TIMEOUT)
    assert host_mountinfo() == before


def test_default_root_is_read_only():
    """As root inside, writing to the host's / fails and nothing appears on the host."""
    name = marker()
    r = isolate.run(["sh", "-c", f"touch /etc/{name} || touch /var/tmp/{name} || exit 9; exit 0"],
                    capture_output=True, timeout=RUN_TIMEOUT)
    assert not Path(f"/etc/{name}").exists() and not Path(f"/var/tmp/{name}").exists()
    assert r.returncode == 9
    assert b"Read-only file system" in r.stderr


def test_default_root_read_only_recursively():
    """Sub-mounts of the host root (e.g. cgroupfs) are read-only inside too."""
    group = Path("/sys/fs/cgroup/pids") / marker()
    require(group.parent.is_dir(), "cgroup v1 pids hierarchy to probe a writable sub-mount")
    try:
        r = isolate.run(["mkdir", str(group)], capture_output=True, timeout=RUN_TIMEOUT)
        assert not group.exists(), "created a host cgroup through the container's root"
        assert r.returncode != 0
    finally:
        if group.exists():
            group.rmdir()


def test_root_cannot_be_remounted_read_write():
    """Root inside cannot remount the read-only host root read-write and write to the host."""
    name = marker()
    target = Path("/var/tmp") / name
    script = f"mount -o remount,bind,rw / 2>/dev/null; mount -o remount,rw / 2>/dev/null; " \
             f"echo pwned > {target}; true"
    try:
        isolate.run(["sh", "-c", script], capture_output=True, timeout=RUN_TIMEOUT)
        assert not target.exists(), "the container wrote to the host filesystem"
    finally:
        if target.exists():
            target.unlink()


def test_tmp_writable_and_private():
    """/tmp inside is writable, empty of host files, and vanishes with the container."""
    name = marker()
    host_file = Path("/tmp") / name
    host_file.write_text("host")
    try:
        r = sh(f"test ! -e /tmp/{name} && echo data > /tmp/{name}-in && cat /tmp/{name}-in")
        assert lines(r) == ["data"]
        assert not Path(f"/tmp/{name}-in").exists()
        assert host_file.read_text() == "host"
    finally:
        host_file.unlink()


def test_tmp_not_shared_between_containers():
    """Each container gets its own /tmp."""
    name = marker()
    sh(f"echo x > /tmp/{name}")
    r = isolate.run(["test", "-e", f"/tmp/{name}"], timeout=RUN_TIMEOUT)
    assert r.returncode == 1


def test_minimal_dev():
    """/dev holds the usual minimal nodes and none of the host's disks."""
    want = ["null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx"]
    r = sh("ls -A /dev")
    names = set(lines(r))
    missing = [n for n in want if n not in names]
    assert not missing, f"missing from /dev: {missing}"
    host_disks = {n for n in os.listdir("/dev") if n.startswith(("sd", "vd", "nvme", "xvd"))}
    assert not (names & host_disks), f"host block devices visible: {names & host_disks}"


def test_dev_nodes_work():
    """/dev/null swallows writes, /dev/zero yields zeros, /dev/full refuses writes."""
    r = sh("echo x > /dev/null && head -c 4 /dev/zero | od -An -tx1 && "
           "{ head -c 1 /dev/zero > /dev/full; echo full=$?; } 2>/dev/null")
    assert lines(r)[0].split() == ["00"] * 4
    assert lines(r)[1] == "full=1"


def test_bind_readonly_by_default(host_dir: Path):
    """Bind(src, dst) shows src at dst read-only."""
    (host_dir / "f").write_text("hello\n")
    r = isolate.run(["sh", "-c", "cat /mnt/f; echo x > /mnt/g || echo ro"],
                    mounts=[isolate.Bind(str(host_dir), "/mnt")], capture_output=True,
                    timeout=RUN_TIMEOUT)
    assert r.stdout.decode().split() == ["hello", "ro"]
    assert not (host_dir / "g").exists()


def test_bind_read_write(host_dir: Path):
    """Bind(..., readonly=False) lets the container write through to the host."""
    give_to_container_root(host_dir)
    r = isolate.run(["sh", "-c", "echo written > /mnt/g"],
                    mounts=[isolate.Bind(str(host_dir), "/mnt", readonly=False)],
                    timeout=RUN_TIMEOUT)
    assert r.returncode == 0
    assert (host_dir / "g").read_text() == "written\n"


def test_tmpfs_mount():
    """Tmpfs(target) gives a writable empty tmpfs with the requested mode."""
    r = sh("stat -c %a /srv && ls -A /srv | wc -l && touch /srv/x && "
           "grep ' /srv ' /proc/self/mountinfo | grep -c tmpfs",
           mounts=[isolate.Tmpfs("/srv", mode=0o700)])
    assert lines(r) == ["700", "0", "1"]


def test_mounts_applied_in_order(host_dir: Path):
    """Mounts apply in list order: a later mount nested in an earlier one is visible."""
    (host_dir / "sub").mkdir()
    r = isolate.run(["sh", "-c", "touch /opt/sub/x && echo ok; touch /opt/y || echo ro"],
                    mounts=[isolate.Bind(str(host_dir), "/opt"),
                            isolate.Tmpfs("/opt/sub")],
                    capture_output=True, timeout=RUN_TIMEOUT)
    assert r.stdout.split() == [b"ok", b"ro"]
    assert not (host_dir / "sub" / "x").exists()


# --- a user-given rootfs -----------------------------------------------------

def make_rootfs(base: Path) -> Path:
    """A tiny rootfs: mount points plus usr-merge symlinks; /usr is bound in."""
    root = base / "rootfs"
    for d in ("proc", "dev", "tmp", "usr", "etc", "mnt"):
        (root / d).mkdir(parents=True)
    for link in ("bin", "sbin", "lib", "lib64"):
        (root / link).symlink_to(f"usr/{link}")
    (root / "etc" / "marker").write_text("from-rootfs\n")
    return root


def test_custom_rootfs(host_dir: Path):
    """rootfs=DIR makes DIR the root: its files are there, the host's are not."""
    root = make_rootfs(host_dir)
    r = isolate.run(["sh", "-c", "cat /etc/marker; test -e /work || test -e /root || echo hidden"],
                    rootfs=str(root), mounts=[isolate.Bind("/usr", "/usr")],
                    capture_output=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert lines(r) == ["from-rootfs", "hidden"]


def test_custom_rootfs_read_only_by_default(host_dir: Path):
    """A user-given rootfs is read-only unless rootfs_readonly=False."""
    root = make_rootfs(host_dir)
    common = dict(rootfs=str(root), mounts=[isolate.Bind("/usr", "/usr")], timeout=RUN_TIMEOUT)
    r = isolate.run(["sh", "-c", "echo x > /etc/new"], capture_output=True, **common)
    assert r.returncode != 0 and not (root / "etc" / "new").exists()
    r = isolate.run(["sh", "-c", "echo x > /etc/new"], rootfs_readonly=False, **common)
    assert r.returncode == 0 and (root / "etc" / "new").read_text() == "x\n"


def test_mounts_on_new_targets_in_a_read_only_rootfs(host_dir: Path):
    """Mount targets missing from a read-only rootfs are made before it turns
    read-only, nested ones after the mount they are in; the root stays
    read-only."""
    root = make_rootfs(host_dir)
    data = host_dir / "data"
    data.mkdir()
    (data / "f").write_text("bound\n")
    mounts = [isolate.Bind("/usr", "/usr"), isolate.Bind(str(data), "/new/data"),
              isolate.Bind(str(data / "f"), "/new/file"), isolate.Tmpfs("/scratch"),
              isolate.Tmpfs("/scratch/inner")]
    r = isolate.run(["sh", "-c", "cat /new/data/f /new/file; touch /scratch/inner/x && echo ok; "
                                 "touch /etc/new 2>/dev/null || echo read-only"],
                    rootfs=str(root), mounts=mounts, capture_output=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert lines(r) == ["bound", "bound", "ok", "read-only"]


def root_device() -> str:
    """major:minor of the host's root filesystem."""
    for ln in host_mountinfo():
        f = ln.split()
        if f[4] == "/":
            return f[2]
    raise AssertionError("no / in host mountinfo")


def test_old_root_detached():
    """After pivot_root the old root is detached: the host root fs is mounted only at /."""
    dev = root_device()
    r = sh("cat /proc/self/mountinfo")
    whole_root = [f[4] for f in (ln.split() for ln in lines(r)) if f[2] == dev and f[3] == "/"]
    assert whole_root == ["/"], f"host root also mounted at {whole_root}"
