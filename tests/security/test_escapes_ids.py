"""A default container's root is not the host's root (issue 10, item 2).

A read-only bind of the host's root stops writes, not reads of secrets or
connect(2) to UNIX sockets: with the container's root mapped to the host's,
file permissions let it read /etc/shadow and reach root's sockets and FIFOs
wherever they are.  A root caller's containers now run as unprivileged host
ids (isolate.security.idmaps); a rootless caller's never had more than its own.
"""
from __future__ import annotations

import json
import os
import socket
import stat
import uuid
from pathlib import Path

import pytest

import isolate
from isolate.security import idmaps

from conftest import HOST_ROOT_MAPS, PYTHON, RUN_TIMEOUT, require
from test_escapes import TRY, python_inside


def test_host_secrets_are_not_readable(caller):
    """/etc/shadow (root:shadow 0640) does not open."""
    require(os.path.exists("/etc/shadow"), "/etc/shadow on this host")
    code = TRY + 'print(json.dumps({"shadow": attempt(lambda: open("/etc/shadow").read())}))'
    assert caller(lambda: python_inside(code)) == {"shadow": "EACCES"}


def test_the_control_reads_them_as_the_hosts_root():
    """The same container mapped to the host's root does read it: the ids,
    not some mask, are what keep it out."""
    require(os.geteuid() == 0, "a root caller")
    code = TRY + 'print(json.dumps({"shadow": attempt(lambda: open("/etc/shadow").read())}))'
    assert python_inside(code, **HOST_ROOT_MAPS) == {"shadow": "ok"}


@pytest.fixture
def root_endpoints():
    """A root-owned UNIX socket (0660) and FIFO (0620) outside the hidden
    directories, as a daemon might keep them; removed afterwards."""
    place = Path(f"/var/tmp/isolate-test-{uuid.uuid4().hex[:12]}")
    place.mkdir(mode=0o755)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(place / "daemon.sock"))
        listener.listen(1)
        os.chmod(place / "daemon.sock", 0o660)
        os.mkfifo(place / "fifo", 0o620)
        yield place
    finally:
        listener.close()
        for name in ("daemon.sock", "fifo"):
            (place / name).unlink(missing_ok=True)
        place.rmdir()


ENDPOINTS = TRY + """
import socket, sys
place = sys.argv[1]
def connect():
    s = socket.socket(socket.AF_UNIX)
    s.connect(place + "/daemon.sock")
print(json.dumps({"socket": attempt(connect),
                  "fifo": attempt(lambda: os.open(place + "/fifo", os.O_WRONLY | os.O_NONBLOCK))}))
"""


def test_root_ipc_endpoints_are_unreachable(root_endpoints):
    """A root caller's container cannot connect to a root-owned socket or
    write to its FIFO, though both sit in a directory it sees."""
    require(os.geteuid() == 0, "a root caller")
    r = isolate.run([PYTHON, "-c", ENDPOINTS, str(root_endpoints)], capture_output=True,
                    text=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"socket": "EACCES", "fifo": "EACCES"}
    mapped = isolate.run([PYTHON, "-c", ENDPOINTS, str(root_endpoints)], capture_output=True,
                         text=True, timeout=RUN_TIMEOUT, **HOST_ROOT_MAPS)
    # The control: as the host's root, the socket does accept (the FIFO
    # has no reader, hence ENXIO: it was allowed to try).
    assert json.loads(mapped.stdout) == {"socket": "ok", "fifo": "ENXIO"}, mapped.stderr


def test_a_root_callers_container_has_65536_ids():
    """Package managers switch to their own users (apt: _apt, uid 42): the
    container has ids 0-65535, mapped to the range idmaps names."""
    require(os.geteuid() == 0, "a root caller")
    r = isolate.run(["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; "
                                 "setpriv --reuid 42 --regid 42 --clear-groups id -u"],
                    capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stderr
    *maps, uid = r.stdout.split("\n")[:-1]
    (_, first_uid, count), = idmaps.container_ids("uid")
    (_, first_gid, _), = idmaps.container_ids("gid")
    assert [m.split() for m in maps] == [["0", str(first_uid), str(count)],
                                         ["0", str(first_gid), str(count)]]
    assert uid == "42"


def test_files_it_makes_belong_to_its_host_ids(host_dir):
    """What the container's root writes through a bind is owned by the
    first id of its range on the host, never by the host's root."""
    require(os.geteuid() == 0, "a root caller")
    (_, first_uid, _), = idmaps.container_ids("uid")
    (_, first_gid, _), = idmaps.container_ids("gid")
    os.chown(host_dir, first_uid, first_gid)
    r = isolate.run(["sh", "-c", "echo x > /mnt/made && chmod 4755 /mnt/made"],
                    mounts=[isolate.Bind(host_dir, "/mnt", readonly=False)], timeout=RUN_TIMEOUT)
    assert r.returncode == 0
    info = (host_dir / "made").stat()
    assert (info.st_uid, info.st_gid) == (first_uid, first_gid)
    assert info.st_mode & stat.S_ISUID   # set-user-ID of an unprivileged id: no root for anyone


def test_subuid_entry_for_isolate_is_used(tmp_path):
    """/etc/subuid's range for the user "isolate" wins over the default."""
    subuid = tmp_path / "subuid"
    subuid.write_text("alice:100000:65536\nisolate:300000:10\nisolate:400000:65536\n")
    assert idmaps._subordinate_base(str(subuid)) == 400000
    assert idmaps._subordinate_base(str(tmp_path / "missing")) is None
