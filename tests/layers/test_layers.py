"""Layers: applying OCI layer tars to directories, and writing overlay upper
directories back as layer tars, on real files and a real overlayfs.

Tars are built in memory with tarfile; every directory a test writes lives
under pytest's tmp_path.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import struct
import subprocess
import tarfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import pytest
import zstandard

import image_builder
from conftest import CLONE_NEWUSER, drop_to, libc_unshare, open_fds, require, run_in_fork, unwrap
from isolate.layers import apply as layer_apply
from isolate.layers import format as layer_format
from isolate.layers import write
from isolate.errors import LayerError

MTIME = 1_600_000_000
CLONE_NEWNS = 0x00020000

Entry = tuple[tarfile.TarInfo, bytes]


# --- building tars ------------------------------------------------------------

def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", *, mode: int = 0o644,
          uid: int = 0, gid: int = 0, mtime: int = MTIME, linkname: str = "",
          dev: tuple[int, int] = (0, 0), pax: dict[str, str] | None = None) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, mtime
    info.linkname = linkname
    info.devmajor, info.devminor = dev
    info.pax_headers = dict(pax or {})
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def file(name: str, data: bytes = b"", **kw: Any) -> Entry:
    return entry(name, tarfile.REGTYPE, data, **kw)


def directory(name: str, **kw: Any) -> Entry:
    kw.setdefault("mode", 0o755)
    return entry(name, tarfile.DIRTYPE, **kw)


def symlink(name: str, target: str, **kw: Any) -> Entry:
    return entry(name, tarfile.SYMTYPE, linkname=target, mode=0o777, **kw)


def hardlink(name: str, target: str, **kw: Any) -> Entry:
    return entry(name, tarfile.LNKTYPE, linkname=target, **kw)


def xattrs(values: dict[str, bytes]) -> dict[str, str]:
    """PAX records for xattrs, as tarfile wants them (str, surrogateescape)."""
    return {"SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape") for k, v in values.items()}


def make_tar(*entries: Entry) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def sparse_file(name: str, extents: list[tuple[int, bytes]], size: int, version: str) -> Entry:
    made = image_builder.sparse(name, extents, size, version)
    return made.info, made.data


def gz(data: bytes) -> bytes:
    return gzip.compress(data)


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def apply(data: bytes, dest: Path | str, name: str = "sha256:test") -> None:
    layer_apply.extract(layer_apply.open_compressed(io.BytesIO(data)), str(dest), name=name)


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        return list(tar)


def layer_of(upper: Path) -> bytes:
    out = io.BytesIO()
    write.write_layer(str(upper), out)
    return out.getvalue()


# --- describing trees ----------------------------------------------------------

def describe(path: str) -> dict[str, Any]:
    """What a layer must preserve about one file, read without following it."""
    st = os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    whiteout = kind == stat.S_IFCHR and st.st_rdev == 0
    info: dict[str, Any] = {
        "mode": stat.filemode(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
        # A whiteout's time is when it was made, whichever layer said so.
        "mtime": None if whiteout else int(st.st_mtime),
    }
    if kind == stat.S_IFREG:
        with open(path, "rb") as f:
            info["sha256"] = hashlib.sha256(f.read()).hexdigest()
        info["size"], info["nlink"] = st.st_size, st.st_nlink
    if kind in (stat.S_IFREG, stat.S_IFDIR):
        info["xattrs"] = {n: os.getxattr(path, n) for n in sorted(os.listxattr(path))
                          if n.startswith("user.")}
    if kind == stat.S_IFLNK:
        info["target"] = os.readlink(path)
    if kind in (stat.S_IFCHR, stat.S_IFBLK):
        info["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
    return info


def listing(root: Path | str) -> dict[str, dict[str, Any]]:
    """Every entry below `root` (not root itself) by relative path."""
    result = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            result[os.path.relpath(path, root)] = describe(path)
    return result


def is_whiteout(path: Path) -> bool:
    st = os.lstat(path)
    return st.st_mode == stat.S_IFCHR and st.st_rdev == 0  # mode 0000 too


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    path = tmp_path / "dest"
    path.mkdir()
    return path


def rootless_setup(ids: tuple[int, int], dest: Path) -> Callable[[], None]:
    """Become the unprivileged user with dest as cwd: tmp_path's parents
    are mode 700, so that user reaches dest only as "."."""
    drop = drop_to(*ids)

    def setup() -> None:
        os.chdir(dest)
        drop()
    return setup


# --- extract: kinds, modes, times, owners -------------------------------------

def test_files_dirs_symlinks_hardlinks_fifos(dest: Path):
    """Each kind is created as the tar says; names lose "./" and "/";
    implied parents get 0755; the root entry leaves dest alone."""
    os.chmod(dest, 0o711)
    data = make_tar(
        directory("./", mode=0o700),
        directory("etc", mode=0o750, mtime=MTIME + 1),
        file("etc/passwd", b"root:x:0:0\n", mode=0o640, mtime=MTIME + 2),
        file("./usr/bin/tool", b"#!/bin/sh\n", mode=0o755),
        file("/top", b"top", mode=0o600,
             pax={"mtime": "1600000003.123456789"}),
        symlink("etc/abs", "/etc/passwd", mtime=MTIME + 4),
        symlink("rel", "../../somewhere/else"),
        hardlink("etc/passwd.hard", "./etc/passwd"),
        entry("run/fifo", tarfile.FIFOTYPE, mode=0o620, mtime=MTIME + 5),
    )
    apply(data, dest)

    assert sorted(listing(dest)) == ["etc", "etc/abs", "etc/passwd", "etc/passwd.hard", "rel",
                                     "run", "run/fifo", "top", "usr", "usr/bin", "usr/bin/tool"]
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o711
    modes = {p: stat.S_IMODE(os.lstat(dest / p).st_mode)
             for p in ("etc", "etc/passwd", "usr", "usr/bin", "usr/bin/tool", "top", "run/fifo")}
    assert modes == {"etc": 0o750, "etc/passwd": 0o640, "usr": 0o755, "usr/bin": 0o755,
                     "usr/bin/tool": 0o755, "top": 0o600, "run/fifo": 0o620}
    assert (dest / "etc/passwd").read_bytes() == b"root:x:0:0\n"
    assert (dest / "usr/bin/tool").read_bytes() == b"#!/bin/sh\n"
    assert os.readlink(dest / "etc/abs") == "/etc/passwd"
    assert os.readlink(dest / "rel") == "../../somewhere/else"
    passwd, hard = os.stat(dest / "etc/passwd"), os.stat(dest / "etc/passwd.hard")
    assert (passwd.st_ino, passwd.st_nlink) == (hard.st_ino, 2)
    assert stat.S_ISFIFO(os.lstat(dest / "run/fifo").st_mode)
    mtimes = {p: os.lstat(dest / p).st_mtime_ns for p in ("etc", "etc/passwd", "top", "etc/abs", "run/fifo")}
    assert mtimes == {"etc": (MTIME + 1) * 10**9, "etc/passwd": (MTIME + 2) * 10**9,
                      "top": 1600000003_123456789, "etc/abs": (MTIME + 4) * 10**9,
                      "run/fifo": (MTIME + 5) * 10**9}


def test_owners_setuid_devices_and_capabilities_as_root(dest: Path):
    """As root: owners from the tar (lchown for symlinks), setuid bits,
    device nodes, and security.capability."""
    require(os.geteuid() == 0, "needs root")
    caps = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)  # v2, effective, cap_net_raw
    data = make_tar(
        directory("home", uid=1234, gid=5678, mode=0o2775),
        file("home/su", b"x", mode=0o4755, uid=1234, gid=5678),
        symlink("home/link", "/nowhere", uid=1235, gid=5679),
        entry("home/fifo", tarfile.FIFOTYPE, uid=1236, gid=5680),
        entry("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
        entry("dev/loop0", tarfile.BLKTYPE, mode=0o660, dev=(7, 0), gid=6),
        file("bin/ping", b"elf", mode=0o755, pax=xattrs({"security.capability": caps})),
    )
    apply(data, dest)

    owners = {p: (os.lstat(dest / p).st_uid, os.lstat(dest / p).st_gid)
              for p in ("home", "home/su", "home/link", "home/fifo", "dev/loop0")}
    assert owners == {"home": (1234, 5678), "home/su": (1234, 5678), "home/link": (1235, 5679),
                      "home/fifo": (1236, 5680), "dev/loop0": (0, 6)}
    assert os.stat(dest / "home").st_mode == stat.S_IFDIR | 0o2775
    assert os.stat(dest / "home/su").st_mode == stat.S_IFREG | 0o4755
    null, loop = os.lstat(dest / "dev/null"), os.lstat(dest / "dev/loop0")
    assert (null.st_mode, os.major(null.st_rdev), os.minor(null.st_rdev)) == (stat.S_IFCHR | 0o666, 1, 3)
    assert (loop.st_mode, os.major(loop.st_rdev), os.minor(loop.st_rdev)) == (stat.S_IFBLK | 0o660, 7, 0)
    assert os.getxattr(dest / "bin/ping", "security.capability") == caps


def test_later_entries_replace_earlier(dest: Path):
    """Later entries win: a file over a directory tree, a directory over a
    file, a symlink over a file, a file over a symlink (not through it), a
    directory entry for an existing directory updates its mode only."""
    data = make_tar(
        file("x", b"file"), directory("x"), file("x/f", b"in x"),
        directory("y"), file("y/f"), directory("y/sub"), file("y", b"now a file"),
        file("z", b"file"), symlink("z", "/etc/hostname"),
        symlink("s", "/"), file("s", b"replaced the symlink"),
        directory("m", mode=0o700), file("m/keep", b"kept"), directory("m", mode=0o751),
    )
    apply(data, dest)

    assert sorted(listing(dest)) == ["m", "m/keep", "s", "x", "x/f", "y", "z"]
    assert (dest / "x/f").read_bytes() == b"in x"
    assert (dest / "y").read_bytes() == b"now a file"
    assert os.readlink(dest / "z") == "/etc/hostname"
    assert not (dest / "s").is_symlink() and (dest / "s").read_bytes() == b"replaced the symlink"
    assert stat.S_IMODE(os.stat(dest / "m").st_mode) == 0o751
    assert (dest / "m/keep").read_bytes() == b"kept"


def test_compressions_give_identical_trees(tmp_path: Path):
    """gzip, zstd (one frame or several) and plain tars are told apart by
    their magic and give the same tree, whatever the stream object."""
    data = make_tar(directory("d", mode=0o750), file("d/f", os.urandom(100_000)),
                    symlink("l", "d/f"), file(".wh.gone"))
    split = len(data) // 3
    variants = {"plain": data, "gzip": gz(data), "zstd": zst(data),
                "zstd-frames": zst(data[:split]) + zst(data[split:])}
    trees = {}
    for kind, blob in variants.items():
        target = tmp_path / kind
        target.mkdir()
        apply(blob, target)
        trees[kind] = listing(target)
    (tmp_path / "blob").write_bytes(variants["zstd"])
    with open(tmp_path / "blob", "rb") as f:  # a real file: has peek already
        target = tmp_path / "from-file"
        target.mkdir()
        layer_apply.extract(layer_apply.open_compressed(f), str(target))
        trees["from-file"] = listing(target)
    assert sorted(trees["plain"]) == ["d", "d/f", "gone", "l"]
    assert all(tree == trees["plain"] for tree in trees.values())


def test_stream_read_sequentially_to_its_end(dest: Path):
    """The whole blob passes through read() in order (the caller can hash
    it), end-of-archive padding included; nothing seeks."""
    data = make_tar(file("a", b"a" * 5000), file("b", b"b"))

    class Hashing(io.RawIOBase):
        def __init__(self) -> None:
            self.inner, self.hash = io.BytesIO(data), hashlib.sha256()

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            chunk = self.inner.read(len(buffer))
            self.hash.update(chunk)
            buffer[: len(chunk)] = chunk
            return len(chunk)

    source = Hashing()
    layer_apply.extract(layer_apply.open_compressed(source), str(dest))  # type: ignore[arg-type]
    assert source.hash.hexdigest() == hashlib.sha256(data).hexdigest()
    assert sorted(os.listdir(dest)) == ["a", "b"]


# --- extract: whiteouts and overlay metadata ------------------------------------

def test_whiteouts_become_overlay_whiteouts(dest: Path):
    """.wh.NAME -> char device 0/0 at NAME; .wh..wh..opq -> user.overlay.opaque
    = y on its directory.  Whiteouts hide the layers below only: an entry of
    the same layer stays (OCI image-spec), and a directory made over this
    layer's whiteout is opaque (the lower one must not show through)."""
    data = make_tar(
        directory("a"), file("a/kept", b"kept"), directory("a/tree"), file("a/tree/f"),
        file("a/.wh.kept"), file("a/.wh.tree"), file("a/.wh.gone"), file(".wh.never-existed"),
        directory("e", mode=0o750), file("e/.wh..wh..opq"),
        file("missing/.wh..wh..opq"),
        file(".wh.redone"), directory("redone"), file("redone/new"),
    )
    apply(data, dest)

    assert sorted(listing(dest)) == ["a", "a/gone", "a/kept", "a/tree", "a/tree/f", "e", "missing",
                                     "never-existed", "redone", "redone/new"]
    assert all(is_whiteout(dest / p) for p in ("a/gone", "never-existed"))
    assert (dest / "a" / "kept").read_bytes() == b"kept" and (dest / "a" / "tree" / "f").is_file()
    for opaque in ("e", "missing", "redone"):
        assert os.listxattr(dest / opaque) == ["user.overlay.opaque"]
        assert os.getxattr(dest / opaque, "user.overlay.opaque") == b"y"
    assert os.listxattr(dest / "a") == []
    assert stat.S_IMODE(os.stat(dest / "e").st_mode) == 0o750
    assert stat.S_IMODE(os.stat(dest / "missing").st_mode) == 0o755


def test_forged_overlay_xattrs_are_not_applied(dest: Path):
    """PAX xattrs in the overlay namespaces (user. and trusted.) are dropped,
    as are other namespaces; other user.* xattrs are applied, binary ones too."""
    forged = xattrs({"user.overlay.opaque": b"y", "trusted.overlay.opaque": b"y",
                     "user.overlay.redirect": b"/etc", "trusted.overlay.origin": b"\0\1",
                     "user.overlay.metacopy": b"", "trusted.other": b"t",
                     "user.keep": b"\xff\x00binary"})
    apply(make_tar(directory("d", pax=forged), file("d/f", b"data", pax=forged)), dest)
    for path in (dest / "d", dest / "d/f"):
        assert os.listxattr(path) == ["user.keep"]
        assert os.getxattr(path, "user.keep") == b"\xff\x00binary"


def test_one_rule_for_the_xattrs_a_layer_carries():
    """user.* but overlay's own; security.capability only privileged."""
    names = ["user.keep", "user.overlay.opaque", "trusted.overlay.redirect", "trusted.other",
             "security.capability", "security.selinux"]
    assert [n for n in names if layer_format.layer_xattr(n, privileged=False)] == ["user.keep"]
    assert [n for n in names if layer_format.layer_xattr(n, privileged=True)] == [
        "user.keep", "security.capability"]


# --- extract: malicious layers -------------------------------------------------

def malicious_cases(tmp_path: Path, outside: Path) -> dict[str, tuple[list[Entry], str, str]]:
    """name -> (entries, the offending entry's name, expected message part)."""
    beyond_root = os.path.relpath(outside / "pwned", tmp_path.parent)  # from dest/../..
    escapes, via_link = "escapes the layer root", "parent 'l' is a symlink"
    return {
        "dotdot": ([file("../outside/pwned")], "../outside/pwned", escapes),
        "inner-dotdot": ([file("a/../../outside/pwned")], "a/../../outside/pwned", escapes),
        "symlink-to-root": ([symlink("l", "/"), file(f"l{outside}/pwned")], f"l{outside}/pwned", via_link),
        "absolute-symlink": ([symlink("l", str(outside)), file("l/pwned")], "l/pwned", via_link),
        "relative-symlink": ([symlink("l", "../.."), file(f"l/{beyond_root}")], f"l/{beyond_root}", via_link),
        "nested-symlink": ([directory("a"), symlink("a/l", "../../outside"), file("a/l/pwned")],
                           "a/l/pwned", "parent 'a/l' is a symlink"),
        "dir-through-symlink": ([symlink("l", str(outside)), directory("l/newdir")], "l/newdir", via_link),
        "fifo-through-symlink": ([symlink("l", str(outside)), entry("l/fifo", tarfile.FIFOTYPE)],
                                 "l/fifo", via_link),
        "hardlink-escapes": ([hardlink("h", "../outside/secret")], "h",
                             "hardlink target '../outside/secret' escapes the layer root"),
        "hardlink-through-symlink": ([symlink("l", str(outside)), hardlink("h", "l/secret")], "h", via_link),
        "hardlink-to-symlink": ([symlink("s", str(outside / "secret")), hardlink("h", "s")], "h",
                                "hardlink target 's' is not a regular file"),
        "hardlink-missing": ([hardlink("h", "nothing")], "h", "hardlink target 'nothing' does not exist"),
        "whiteout-through-symlink": ([symlink("l", str(outside)), file("l/.wh.secret")], "l/.wh.secret", via_link),
        "opaque-through-symlink": ([symlink("l", str(outside)), file("l/.wh..wh..opq")],
                                   "l/.wh..wh..opq", via_link),
        "file-as-parent": ([file("f"), file("f/g")], "f/g", "parent 'f' is not a directory"),
        "nul-in-name": ([file("x" * 120 + "\0/../outside/pwned")], "x" * 120 + "\0/../outside/pwned",
                        "contains a NUL byte"),
        "malformed-whiteout": ([file("a/.wh..")], "a/.wh..", "malformed whiteout"),
        "symlink-as-root": ([symlink(".", "/")], ".", "only a directory can be the layer root"),
        "unknown-type": ([entry("odd", b"Z")], "odd", "unsupported entry type"),
        # Written back as a layer, such a directory would read as a whiteout.
        "whiteout-named-parent": ([file("a/.wh.x/y")], "a/.wh.x/y",
                                  "directory 'a/.wh.x' is named like a whiteout"),
        "whiteout-named-dir": ([directory("a/.wh.d")], "a/.wh.d",
                               "directory 'a/.wh.d' is named like a whiteout"),
        "opaque-marker-dir": ([directory(".wh..wh..opq")], ".wh..wh..opq",
                              "directory '.wh..wh..opq' is named like a whiteout"),
    }


CASES = ["dotdot", "inner-dotdot", "symlink-to-root", "absolute-symlink", "relative-symlink",
         "nested-symlink", "dir-through-symlink", "fifo-through-symlink", "hardlink-escapes",
         "hardlink-through-symlink", "hardlink-to-symlink", "hardlink-missing",
         "whiteout-through-symlink", "opaque-through-symlink", "file-as-parent", "nul-in-name",
         "malformed-whiteout", "symlink-as-root", "unknown-type", "whiteout-named-parent",
         "whiteout-named-dir", "opaque-marker-dir"]


@pytest.mark.parametrize("case", CASES)
def test_malicious_entry_rejected_and_layer_removed(tmp_path: Path, dest: Path, case: str):
    """The entry raises LayerError naming layer and entry; dest is left
    empty and nothing next to it changed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    entries, bad, message = malicious_cases(tmp_path, outside)[case]
    prefix = [directory("ok", mode=0o500), file("ok/file", b"x", mode=0o400),
              hardlink("ok/hard", "ok/file"), file(".wh.gone"), file("ok/.wh..wh..opq")]
    before = (sorted(os.listdir(tmp_path)), listing(outside), open_fds())

    with pytest.raises(LayerError) as raised:
        apply(make_tar(*prefix, *entries), dest, name="sha256:abcd")

    assert str(raised.value).startswith(f"layer sha256:abcd: entry {bad!r}: ")
    assert message in str(raised.value)
    assert os.listdir(dest) == []
    assert (sorted(os.listdir(tmp_path)), listing(outside), open_fds()) == before


def test_corrupt_streams_raise_layer_error(tmp_path: Path):
    """A truncated gzip stream, a tar cut inside a file, an empty stream."""
    data = make_tar(file("a", b"a" * 3000), file("b", b"b" * 3000))
    for i, blob in enumerate([gz(data)[:-30], data[:2000], b""]):
        target = tmp_path / str(i)
        target.mkdir()
        with pytest.raises(LayerError, match="^layer sha256:test: "):
            apply(blob, target)
        assert os.listdir(target) == []


def test_destination_must_be_empty(dest: Path):
    (dest / "mine").write_bytes(b"precious")
    with pytest.raises(LayerError, match="is not empty"):
        apply(make_tar(file("../x")), dest)
    assert os.listdir(dest) == ["mine"]


def test_error_after_the_last_entry_blames_no_entry(dest: Path):
    """A gzip CRC failure found while draining the stream after the tar's
    end (directory modes already set) names the layer, not a directory."""
    blob = bytearray(gz(make_tar(directory("d", mode=0o750), directory("d/e", mode=0o700),
                                 file("d/e/f", b"f"))))
    blob[-8] ^= 0xFF  # the CRC32 in gzip's trailer
    with pytest.raises(LayerError) as raised:
        apply(bytes(blob), dest)
    assert str(raised.value).startswith("layer sha256:test: CRC check failed")
    assert os.listdir(dest) == []


def test_directory_modes_follow_replacements(dest: Path):
    """A directory's mode and mtime come from the last entry that made it:
    what was below a removed directory goes with it, so one made again
    below a new one, as an implied parent, gets 0755."""
    data = make_tar(
        directory("w", mode=0o700), directory("w/sub", mode=0o711, mtime=MTIME + 1),
        file("w"), directory("w", mode=0o751), file("w/sub/new"),
        directory("f", mode=0o750), directory("f/sub", mode=0o711), file("f", b"file"),
        directory("k", mode=0o700), directory("k/sub", mode=0o711), directory("k", mode=0o751),
        directory("o", mode=0o750), directory("o/sub", mode=0o711), file(".wh.o"),
    )
    apply(data, dest)
    assert sorted(listing(dest)) == ["f", "k", "k/sub", "o", "o/sub", "w", "w/sub", "w/sub/new"]
    modes = {p: stat.S_IMODE(os.lstat(dest / p).st_mode)
             for p in ("w", "w/sub", "f", "k", "k/sub", "o", "o/sub")}
    assert modes == {"w": 0o751, "w/sub": 0o755, "f": 0o644, "k": 0o751, "k/sub": 0o711,
                     "o": 0o750, "o/sub": 0o711}   # a whiteout spares its own layer's entries
    assert os.lstat(dest / "w/sub").st_mtime_ns != (MTIME + 1) * 10**9


# --- extract: costs and limits ---------------------------------------------------
# Each test once took seconds to minutes on a tar of a few kilobytes; they
# assert only what the extraction gives, kept small enough to stay quick.

def test_deep_and_long_names_refused(dest: Path):
    """Names (and hardlink targets) beyond MAX_DEPTH components or
    MAX_NAME_BYTES bytes are refused, the name cut short in the message."""
    deep = "a/" * 300 + "f"  # "a/" * 2000 once took 23 s; this one pytest can still clean up
    long_name = "/".join(["x" * 250] * 17)  # 17 components, 4266 bytes
    cases = [(file(deep), deep, f"name has more than {layer_apply.MAX_DEPTH} components"),
             (file(long_name), long_name, f"name is longer than {layer_apply.MAX_NAME_BYTES} bytes"),
             (hardlink("h", "d/" * 300 + "f"), "h",
              f"hardlink target has more than {layer_apply.MAX_DEPTH} components")]
    for bad_entry, bad, message in cases:
        with pytest.raises(LayerError) as raised:
            apply(make_tar(file("ok"), bad_entry), dest)
        shown = bad if len(bad) <= 200 else bad[:200] + "..."
        assert str(raised.value) == f"layer sha256:test: entry {shown!r}: {message}"
        assert os.listdir(dest) == []


def test_deep_trees_within_the_limits(dest: Path):
    """A 200-deep tree of directory entries gets every mode and mtime; a
    name of exactly MAX_DEPTH components is applied."""
    names = ["/".join(f"d{i}" for i in range(depth + 1)) for depth in range(200)]
    entries = [directory(name, mode=0o750 if depth % 2 else 0o711, mtime=MTIME + depth)
               for depth, name in enumerate(names)]
    limit = "/".join(["e"] * (layer_apply.MAX_DEPTH - 1) + ["f"])
    apply(make_tar(*entries, file(names[-1] + "/bottom", b"deep"), file(limit, b"limit")), dest)

    assert (dest / names[-1] / "bottom").read_bytes() == b"deep"
    assert (dest / limit).read_bytes() == b"limit"
    got = [(stat.S_IMODE(os.lstat(dest / n).st_mode), os.lstat(dest / n).st_mtime_ns) for n in names]
    assert got == [(0o750 if depth % 2 else 0o711, (MTIME + depth) * 10**9) for depth in range(200)]
    assert stat.S_IMODE(os.lstat(dest / limit).st_mode) == 0o644
    assert stat.S_IMODE(os.lstat(dest / os.path.dirname(limit)).st_mode) == 0o755


def test_many_directories_and_replaced_files(dest: Path):
    """Thousands of directories, then one file replaced thousands of times,
    then directories replaced by files (each removal once rebuilt the
    record of every directory: 20k + 20k entries took 62 s)."""
    count = 2000
    dirs = [directory(f"d{i}", mode=0o750) for i in range(count)]
    files = [file("f", str(i).encode()) for i in range(count)]
    replaced = [file(f"d{i}", b"now a file") for i in range(0, count, 2)]
    apply(make_tar(*dirs, *files, *replaced), dest)

    tree = listing(dest)
    assert len(tree) == count + 1
    assert (dest / "f").read_bytes() == str(count - 1).encode()
    assert {tree[f"d{i}"]["mode"] for i in range(1, count, 2)} == {"drwxr-x---"}
    assert {tree[f"d{i}"]["mode"] for i in range(0, count, 2)} == {"-rw-r--r--"}


def test_failure_after_a_deep_tree_empties_dest(dest: Path):
    """A 250-deep tree (read-only directories in it) and then a bad entry:
    LayerError, and all of it removed."""
    names = ["/".join(["d"] * (depth + 1)) for depth in range(250)]
    entries = [directory(name, mode=0o500 if depth % 50 == 0 else 0o755)
               for depth, name in enumerate(names)]
    with pytest.raises(LayerError, match="escapes the layer root"):
        apply(make_tar(*entries, file(names[-1] + "/f"), file("../bad")), dest)
    assert os.listdir(dest) == []


def test_removal_holds_no_descriptor_per_level(tmp_path: Path):
    """Removing a tree deeper than both the recursion limit and the
    descriptor limit removes it all (it once recursed, one descriptor per
    level: RecursionError or EMFILE, and the tree left behind).  The tree
    stays shallow enough for pytest to clean up should this fail."""
    def remove_deep_tree() -> list[str]:
        import resource
        import sys
        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        for depth in range(300):
            os.mkdir("d", 0o500 if depth % 100 == 0 else 0o700, dir_fd=fd)
            below = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = below
            os.close(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
        os.close(fd)
        frames, frame = 0, sys._getframe()
        while frame is not None:
            frames, frame = frames + 1, frame.f_back
        sys.setrecursionlimit(frames + 200)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
        layer_apply._remove(fd, "d")
        os.close(fd)
        return os.listdir(tmp_path)

    assert unwrap(run_in_fork(remove_deep_tree)) == []


# --- extract: sparse files -------------------------------------------------------

@pytest.mark.parametrize("version", ["0.1", "1.0"])
def test_sparse_file_keeps_its_holes(dest: Path, version: str):
    """A 10 KB tar describing a 512 MiB file with 8 bytes of data writes
    those bytes, not 512 MiB of zeros (it did: 512 MiB in 0.2 s)."""
    size = 512 << 20
    data = make_tar(sparse_file("big", [(4096, b"head"), (size - 4, b"tail")], size, version),
                    file("after", b"next entry"))
    assert len(data) < 20_000
    started = time.monotonic()
    apply(data, dest)
    assert time.monotonic() - started < 2
    st = os.stat(dest / "big")
    assert st.st_size == size and st.st_blocks * 512 <= 1 << 20
    with open(dest / "big", "rb") as f:
        assert f.read(4100) == bytes(4096) + b"head"
        f.seek(size - 8)
        assert f.read() == bytes(4) + b"tail"
    assert (dest / "after").read_bytes() == b"next entry"


@pytest.mark.parametrize("extents,why", [
    ([(100, b"ab"), (50, b"cd")], "overlaps another"),
    ([(0, b"ab"), (1 << 20, b"cd")], "lies beyond the file's 1024 bytes"),
])
def test_sparse_map_out_of_order_or_out_of_bounds_is_refused(dest: Path, extents, why: str):
    data = make_tar(file("ok", b"ok"), sparse_file("bad", extents, 1024, "0.1"))
    with pytest.raises(LayerError, match=f"entry 'bad': sparse map extent .* {why}"):
        apply(data, dest)
    assert os.listdir(dest) == []


# --- extract: rootless -----------------------------------------------------------

def test_rootless_extract(rootless_ids: tuple[int, int], dest: Path):
    """Unprivileged: files belong to the caller, setuid/setgid bits are
    dropped, whiteouts (char 0/0) and opaque dirs still work, and a
    read-only directory is filled before it gets its mode."""
    uid, gid = rootless_ids
    os.chown(dest, uid, gid)
    data = make_tar(
        file("bin/su", b"x", mode=0o6755, uid=0, gid=0),
        directory("ro", mode=0o555), file("ro/f", b"in ro", mode=0o444),
        file(".wh.gone"), directory("o"), file("o/.wh..wh..opq"),
        file("u", b"u", pax=xattrs({"user.a": b"1"})),
    )
    unwrap(run_in_fork(lambda: apply(data, "."), setup=rootless_setup(rootless_ids, dest)))

    tree = listing(dest)
    assert sorted(tree) == ["bin", "bin/su", "gone", "o", "ro", "ro/f", "u"]
    assert {(e["uid"], e["gid"]) for e in tree.values()} == {(uid, gid)}
    assert tree["bin/su"]["mode"] == "-rwxr-xr-x"
    assert tree["ro"]["mode"] == "dr-xr-xr-x" and tree["ro/f"]["mode"] == "-r--r--r--"
    assert is_whiteout(dest / "gone")
    assert os.getxattr(dest / "o", "user.overlay.opaque") == b"y"
    assert tree["u"]["xattrs"] == {"user.a": b"1"}


def apply_warned(data: bytes, dest: Path | str, name: str = "sha256:test") -> list[str]:
    """apply(), returning the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply(data, dest, name)
    return [str(w.message) for w in caught]


@pytest.mark.parametrize("kind,dev", [(tarfile.CHRTYPE, (1, 3)), (tarfile.BLKTYPE, (7, 0))])
def test_rootless_device_nodes_skipped_with_a_warning(rootless_ids: tuple[int, int], dest: Path,
                                                      kind: bytes, dev: tuple[int, int]):
    """As rootless podman does: the rest of the layer is applied, each
    device node skipped and named in one warning."""
    uid, gid = rootless_ids
    os.chown(dest, uid, gid)
    nodes = [entry(f"dev/node{i}", kind, dev=dev) for i in range(7)]
    data = make_tar(file("etc/ok", b"ok"), file(".wh.x"), *nodes, file("dev/after", b"a"))
    caught = unwrap(run_in_fork(lambda: apply_warned(data, ".", name="sha256:dev"),
                                setup=rootless_setup(rootless_ids, dest)))
    assert caught == ["layer sha256:dev: skipped 7 device node(s), which cannot be created without "
                      "CAP_MKNOD (rootless): dev/node0, dev/node1, dev/node2, dev/node3, dev/node4 "
                      "and 2 more"]
    assert sorted(listing(dest)) == ["dev", "dev/after", "etc", "etc/ok", "x"]
    assert is_whiteout(dest / "x")


def test_root_makes_device_nodes_without_a_warning(dest: Path):
    require(layer_apply._privileged(), "needs root of the initial user namespace")
    assert apply_warned(make_tar(entry("dev/full", tarfile.CHRTYPE, dev=(1, 7))), dest) == []
    assert os.lstat(dest / "dev" / "full").st_rdev == os.makedev(1, 7)


def test_root_of_the_initial_user_namespace_is_privileged():
    identity = Path("/proc/self/uid_map").read_text().split() == ["0", "0", "4294967295"]
    require(os.geteuid() == 0 and identity, "needs root of the initial user namespace")
    assert layer_apply._privileged()


def become_root_of_a_user_namespace() -> None:
    """A run_in_fork setup: root of a new user namespace that maps only
    itself (root outside too), as a container's root is."""
    libc_unshare(CLONE_NEWUSER)
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text("0 0 1")
    Path("/proc/self/gid_map").write_text("0 0 1")


def test_root_of_a_user_namespace_extracts_as_rootless(dest: Path, tmp_path: Path):
    """Root of a user namespace cannot give files ids it does not map
    (EINVAL) nor make devices: it is not privileged, and extracts as a
    rootless caller does."""
    require(os.geteuid() == 0, "needs root (to map itself into a user namespace)")
    require(run_in_fork(lambda: None, setup=become_root_of_a_user_namespace)["ok"],
            "the host forbids user namespaces")
    owned = make_tar(directory("home", uid=1234, gid=1234, mode=0o2775),
                     file("home/su", b"x", mode=0o4755, uid=1234, gid=5678),
                     symlink("home/l", "/x", uid=1234))
    devices = make_tar(entry("dev/null", tarfile.CHRTYPE, dev=(1, 3)))
    (tmp_path / "devices").mkdir()

    def extract_both() -> tuple[int, bool, list[str]]:
        apply(owned, dest)
        return os.geteuid(), layer_apply._privileged(), apply_warned(devices, tmp_path / "devices")

    euid, privileged, caught = unwrap(run_in_fork(extract_both, setup=become_root_of_a_user_namespace))
    assert (euid, privileged) == (0, False)
    assert len(caught) == 1 and "cannot be created without CAP_MKNOD (rootless): dev/null" in caught[0]
    assert os.listdir(tmp_path / "devices") == []
    tree = listing(dest)
    assert {(e["uid"], e["gid"]) for e in tree.values()} == {(0, 0)}
    assert (tree["home"]["mode"], tree["home/su"]["mode"]) == ("drwxrwxr-x", "-rwxr-xr-x")


def test_fds_are_closed(dest: Path, tmp_path: Path):
    """No descriptor outlives extract or write_layer, whether they succeed or fail."""
    other = tmp_path / "other"
    other.mkdir()
    before = open_fds()
    apply(make_tar(directory("a/b/c"), file("a/b/c/f"), hardlink("a/h", "a/b/c/f"), file("a/.wh.x")), dest)
    layer_of(dest)
    with pytest.raises(LayerError):
        apply(make_tar(directory("a/b/c"), symlink("a/b/c/l", "/"), file("a/b/c/l/etc/x")), other)
    assert open_fds() == before


# --- write_layer -------------------------------------------------------------------

def make_upper(upper: Path) -> None:
    """An upper directory as overlayfs leaves it (with userxattr)."""
    upper.mkdir()
    os.setxattr(upper, "user.overlay.impure", b"y")
    (upper / "a.txt").write_bytes(b"alpha")
    os.chmod(upper / "a.txt", 0o640)
    os.setxattr(upper / "a.txt", "user.keep", b"kept")
    os.setxattr(upper / "a.txt", "user.overlay.origin", b"\0\1\2")
    os.link(upper / "a.txt", upper / "b-hard")
    (upper / "dir").mkdir()
    os.setxattr(upper / "dir", "user.overlay.opaque", b"y")
    (upper / "dir/new").write_bytes(b"new")
    os.mknod(upper / "gone", stat.S_IFCHR, os.makedev(0, 0))
    os.symlink("/abs/target", upper / "link")
    os.mkfifo(upper / "fifo", 0o600)
    (upper / "sub").mkdir()
    os.mknod(upper / "sub/gone2", stat.S_IFCHR, os.makedev(0, 0))
    (upper / "tdir").mkdir()
    os.setxattr(upper / "tdir", "trusted.overlay.opaque", b"y")
    os.mknod(upper / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    for path, mode in [("dir", 0o755), ("dir/new", 0o644), ("fifo", 0o600), ("null", 0o666),
                       ("sub", 0o755), ("tdir", 0o755)]:
        os.chmod(upper / path, mode)  # whatever the umask


def test_write_layer_converts_overlay_form(tmp_path: Path):
    require(os.geteuid() == 0, "needs root (device node, trusted.* xattr)")
    upper = tmp_path / "upper"
    make_upper(upper)
    data = layer_of(upper)

    got = [(m.name, m.type, m.linkname, m.size, m.mode, m.uname, m.gname) for m in members(data)]
    assert got == [
        ("a.txt", tarfile.REGTYPE, "", 5, 0o640, "", ""),
        ("b-hard", tarfile.LNKTYPE, "a.txt", 0, 0o640, "", ""),
        ("dir", tarfile.DIRTYPE, "", 0, 0o755, "", ""),
        ("dir/.wh..wh..opq", tarfile.REGTYPE, "", 0, 0, "", ""),
        ("dir/new", tarfile.REGTYPE, "", 3, 0o644, "", ""),
        ("fifo", tarfile.FIFOTYPE, "", 0, 0o600, "", ""),
        (".wh.gone", tarfile.REGTYPE, "", 0, 0, "", ""),
        ("link", tarfile.SYMTYPE, "/abs/target", 0, 0o777, "", ""),
        ("null", tarfile.CHRTYPE, "", 0, 0o666, "", ""),
        ("sub", tarfile.DIRTYPE, "", 0, 0o755, "", ""),
        ("sub/.wh.gone2", tarfile.REGTYPE, "", 0, 0, "", ""),
        ("tdir", tarfile.DIRTYPE, "", 0, 0o755, "", ""),
        ("tdir/.wh..wh..opq", tarfile.REGTYPE, "", 0, 0, "", ""),
    ]
    by_name = {m.name: m for m in members(data)}
    assert by_name["a.txt"].pax_headers == {"SCHILY.xattr.user.keep": "kept"}
    assert by_name["dir"].pax_headers == {}
    assert (by_name["null"].devmajor, by_name["null"].devminor) == (1, 3)
    assert by_name["a.txt"].mtime == int(os.stat(upper / "a.txt").st_mtime)
    assert layer_of(upper) == data  # deterministic


def test_write_layer_refuses_redirects(tmp_path: Path):
    """A redirect (or metacopy) upper cannot be told in a layer."""
    upper = tmp_path / "upper"
    (upper / "moved").mkdir(parents=True)
    os.setxattr(upper / "moved", "user.overlay.redirect", b"/orig")
    with pytest.raises(LayerError, match="'moved' has overlay redirect metadata"):
        layer_of(upper)


def test_write_layer_refuses_names_read_as_whiteouts(tmp_path: Path):
    """A real file, directory or symlink named .wh.NAME would be a whiteout
    in the layer, and a whiteout of .wh..opq an opaque marker: refused.  A
    whiteout of another .wh. name is a whiteout again once applied."""
    makers: dict[str, Callable[[Path], Any]] = {
        ".wh.file": lambda p: p.write_bytes(b"x"), "sub/.wh.dir": Path.mkdir,
        ".wh.link": lambda p: p.symlink_to("target"),
        ".wh..opq": lambda p: os.mknod(p, stat.S_IFCHR, os.makedev(0, 0)),
    }
    for number, (name, make) in enumerate(makers.items()):
        upper = tmp_path / f"upper{number}"
        (upper / "sub").mkdir(parents=True)
        (upper / "ok").write_bytes(b"ok")
        make(upper / name)
        with pytest.raises(LayerError, match=f"^upper {name!r} is "):
            layer_of(upper)

    upper, dest = tmp_path / "whiteouts", tmp_path / "dest"
    upper.mkdir()
    dest.mkdir()
    os.mknod(upper / ".wh.x", stat.S_IFCHR, os.makedev(0, 0))
    layer = layer_of(upper)
    assert [m.name for m in members(layer)] == [".wh..wh.x"]
    apply(layer, dest)
    assert os.listdir(dest) == [".wh.x"] and is_whiteout(dest / ".wh.x")


def test_round_trip(tmp_path: Path):
    """extract -> write_layer -> extract gives the same tree, and writing it
    again gives the same bytes."""
    require(os.geteuid() == 0, "needs root (owners, devices)")
    original = make_tar(
        directory("etc", mode=0o755, mtime=MTIME + 10), file("etc/passwd", b"root", mode=0o644),
        file("etc/shadow", b"secret", mode=0o640, gid=42, pax=xattrs({"user.note": b"\x00\xff"})),
        hardlink("etc/shadow-", "etc/shadow"),
        directory("home/user", uid=1000, gid=1000, mode=0o700, mtime=MTIME + 20),
        file("home/user/.profile", b"export A=1", uid=1000, gid=1000),
        file("usr/bin/su", b"su", mode=0o4755),
        symlink("bin", "usr/bin"), symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
        entry("dev/null", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
        entry("run/fifo", tarfile.FIFOTYPE, mode=0o644),
        file("var/.wh.cache"), directory("opt", mode=0o711), file("opt/.wh..wh..opq"),
        file("opt/tool", b"tool", mode=0o755, mtime=MTIME + 30),
        file("x" * 150 + "/long name é", b"pax path"),
    )
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    apply(original, first)
    layer = layer_of(first)
    apply(layer, second)

    assert listing(second) == listing(first)
    assert sorted(listing(first)) == [
        "bin", "dev", "dev/null", "etc", "etc/localtime", "etc/passwd", "etc/shadow", "etc/shadow-",
        "home", "home/user", "home/user/.profile", "opt", "opt/tool", "run", "run/fifo", "usr",
        "usr/bin", "usr/bin/su", "var", "var/cache", "x" * 150, "x" * 150 + "/long name é"]
    assert is_whiteout(first / "var/cache") and os.getxattr(first / "opt", "user.overlay.opaque") == b"y"
    assert layer_of(second) == layer


# --- a real overlay ------------------------------------------------------------------

def in_mount_namespace(fn: Callable[[], Any]) -> Any:
    """Run fn in a forked child with a private mount namespace: whatever it
    mounts disappears with it."""
    def setup() -> None:
        libc_unshare(CLONE_NEWNS)
        subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    return unwrap(run_in_fork(fn, setup=setup))


def mount_overlay(target: Path, lower: str, upper: Path | None = None, work: Path | None = None) -> None:
    options = f"lowerdir={lower},userxattr"
    if upper is not None:
        options += f",upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(target)],
                   check=True, capture_output=True)


def test_overlay_upper_round_trip(tmp_path: Path):
    """Changes made in a real overlay mount, written as a layer with
    write_layer and stacked over the lower layer again, show the same tree."""
    require(os.geteuid() == 0, "mounting overlayfs needs root")
    lower_layer = make_tar(
        directory("etc"), file("etc/keep", b"keep\n"), file("etc/gone", b"gone"),
        file("del", b"deleted"), directory("d"), file("d/old", b"old"), directory("d/sub"),
        file("d/sub/old2", b"old2"), symlink("link", "/etc/keep"), file("h1", b"linked"),
        hardlink("h2", "h1"), entry("fifo", tarfile.FIFOTYPE), entry("null", tarfile.CHRTYPE, dev=(1, 3)),
        file("x", b"x", pax=xattrs({"user.tag": b"t"})),
    )
    for name in ("lower", "upper", "work", "merged", "x1", "x2", "stacked"):
        (tmp_path / name).mkdir()
    lower, upper, merged = tmp_path / "lower", tmp_path / "upper", tmp_path / "merged"
    apply(lower_layer, lower)

    def change() -> dict[str, Any]:
        mount_overlay(merged, str(lower), upper, tmp_path / "work")
        subprocess.run(["sh", "-c", "rm del etc/gone && rm -r d && mkdir d && echo new > d/new"
                        " && echo added > added && echo more >> etc/keep"], cwd=merged, check=True)
        return listing(merged)
    seen = in_mount_namespace(change)

    # What the kernel left in the upper directory (userxattr): whiteouts are
    # char 0/0 devices; the recreated d is opaque through user.overlay.opaque
    # only, while copied-up etc carries origin and impure marks.
    assert is_whiteout(upper / "del") and is_whiteout(upper / "etc/gone")
    assert os.listxattr(upper / "d") == ["user.overlay.opaque"]
    assert os.getxattr(upper / "d", "user.overlay.opaque") == b"y"
    assert sorted(os.listxattr(upper / "etc")) == ["user.overlay.impure", "user.overlay.origin"]
    diff = layer_of(upper)
    assert [m.name for m in members(diff)] == [
        "added", "d", "d/.wh..wh..opq", "d/new", ".wh.del", "etc", "etc/.wh.gone", "etc/keep"]
    assert all(not k.startswith("SCHILY.xattr.user.overlay") for m in members(diff) for k in m.pax_headers)

    x1, x2, stacked = tmp_path / "x1", tmp_path / "x2", tmp_path / "stacked"
    apply(lower_layer, x1)
    apply(diff, x2)

    def view() -> dict[str, Any]:
        mount_overlay(stacked, f"{x2}:{x1}")
        return listing(stacked)
    rebuilt = in_mount_namespace(view)

    assert sorted(seen) == ["added", "d", "d/new", "etc", "etc/keep", "fifo", "h1", "h2",
                            "link", "null", "x"]
    assert seen["etc/keep"]["sha256"] == hashlib.sha256(b"keep\nmore\n").hexdigest()
    assert rebuilt == seen



def test_write_layer_refuses_an_upper_deeper_than_a_layer_may_be(tmp_path: Path):
    """A container may nest directories without bound; its diff stops at what
    extract would accept, with a LayerError (not a RecursionError)."""
    upper = tmp_path / "upper"
    os.makedirs(upper / "/".join(["d"] * (layer_format.MAX_DEPTH + 4)))
    with pytest.raises(LayerError, match=f"deeper than {layer_format.MAX_DEPTH} components"):
        write.write_layer(str(upper), io.BytesIO())
    os.makedirs(tmp_path / "ok" / "/".join(["d"] * (layer_format.MAX_DEPTH - 2)))
    out = io.BytesIO()
    write.write_layer(str(tmp_path / "ok"), out)
    dest = tmp_path / "dest"
    dest.mkdir()
    layer_apply.extract(io.BytesIO(out.getvalue()), str(dest))
    assert (dest / "/".join(["d"] * (layer_format.MAX_DEPTH - 2))).is_dir()


def test_write_layer_maps_owners_back_into_the_container(tmp_path: Path):
    """Host ids -> the ids the container saw, through its maps; unmapped ids
    become the overflow id 65534, as inside a user namespace."""
    upper = tmp_path / "upper"
    upper.mkdir()
    for name, owner in (("mine", 1000), ("other", 1005), ("stranger", 7)):
        (upper / name).write_text(name)
        os.chown(upper / name, owner, owner)
    out = io.BytesIO()
    write.write_layer(str(upper), out, uid_map=[(0, 1000, 1), (1, 100000, 65536)],
                            gid_map=[(0, 1000, 10)])
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        owners = {m.name: (m.uid, m.gid) for m in tar.getmembers()}
    assert owners == {"mine": (0, 0), "other": (65534, 5), "stranger": (65534, 65534)}
