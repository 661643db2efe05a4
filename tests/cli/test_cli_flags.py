"""Docker's flags on ``isolate run`` and ``isolate exec`` (isolate/cli/options.py):
-e, --env-file, -v, --mount, --tmpfs DST:OPTIONS, --bind SRC:DST:ro, -w,
-u, --init/--no-init, --read-only and --entrypoint, each seen working in a
real container, and every bad value refused before anything is created,
the error naming the flag and the value.

Every test runs the real CLI (``python -m isolate``) in a subprocess.
"""
from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Optional

import pytest

from conftest import REPO, busybox_rootfs, give_to_container_root, pids_with_cmdline, \
    require, unique_sleep_arg

TIMEOUT = 60

#: The passwd and group of the busybox rootfs the -u tests run in.
ROOTFS_PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
                 "app:x:1000:1000:app:/home/app:/bin/sh\n"
                 "nobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n")
ROOTFS_GROUP = "root:x:0:\napp:x:1000:\nstaff:x:50:\nnogroup:x:65534:\n"


def cli_env(extra: Optional[dict[str, str]] = None, unset: tuple[str, ...] = ()) -> dict[str, str]:
    """This environment with the repository first on PYTHONPATH, `extra`
    added and the names in `unset` removed."""
    env = {key: value for key, value in os.environ.items() if key not in unset}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def isolate(*args: str, env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
    """``python -m isolate ARGS...``, its output captured as text."""
    return subprocess.run([sys.executable, "-m", "isolate", *args], capture_output=True,
                          text=True, env=env or cli_env(), cwd=REPO, timeout=TIMEOUT)


def run(*args: str, env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
    """``python -m isolate run ARGS...``."""
    return isolate("run", *args, env=env)


def error_line(r: subprocess.CompletedProcess) -> str:
    """The error a refused command line printed: exit status 125, nothing
    on stdout, no traceback, and one line that says why (after argparse's
    usage, for a value it could not parse)."""
    assert r.returncode == 125, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == "" and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith(("isolate: ", "usage: isolate")), r.stderr
    if lines[0].startswith("isolate: "):
        assert len(lines) == 1, r.stderr
    return lines[-1]


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    """A busybox root directory with an /etc/passwd and an /etc/group."""
    root = busybox_rootfs(tmp_path)
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text(ROOTFS_PASSWD)
    (root / "etc" / "group").write_text(ROOTFS_GROUP)
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image store holding busybox:latest, Entrypoint ["echo", "ep"] and
    Cmd ["echo", "cmd"] (its /etc/passwd: root, daemon, nobody)."""
    require(shutil.which("busybox") is not None, "busybox is not installed")
    from image_builder import build_docker_archive, busybox_config, busybox_layers
    directory = tmp_path_factory.mktemp("flags-store")
    archive = directory / "busybox.tar"
    build_docker_archive(archive, busybox_layers(),
                         busybox_config(Entrypoint=["echo", "ep"], Cmd=["echo", "cmd"]))
    r = isolate("--store", str(directory / "store"), "import", str(archive))
    assert r.returncode == 0, r.stderr
    return directory / "store"


def on_image(store: Path, *args: str) -> subprocess.CompletedProcess:
    """``isolate run --image busybox ARGS...`` on `store`."""
    return isolate("--store", str(store), "run", "--image", "busybox", *args)


# ------------------------------------------------------- the environment ----

def test_e_sets_a_variable_or_passes_on_the_callers() -> None:
    """-e KEY=VALUE sets it; -e KEY passes on the caller's KEY, and nothing
    when the caller has none, as docker does."""
    env = cli_env({"HOME": "/home/flags-test"}, unset=("ISOLATE_FLAGS_UNSET",))
    r = run("-e", "A=1", "-e", "HOME", "-e", "ISOLATE_FLAGS_UNSET", "-e", "EMPTY=", "--",
            "env", "-0", env=env)
    assert r.returncode == 0, r.stderr
    inside = dict(line.split("=", 1) for line in r.stdout.split("\0") if line)
    assert {key: inside.get(key) for key in ("A", "HOME", "EMPTY")} == {
        "A": "1", "HOME": "/home/flags-test", "EMPTY": ""}
    assert "ISOLATE_FLAGS_UNSET" not in inside


def test_env_file_in_dockers_format(tmp_path: Path) -> None:
    """Comments and blank lines skipped, values as written (quotes, inner
    '=', trailing blanks kept), KEY alone from the caller or left out,
    CRLF endings; a later file wins over an earlier one and -e over both."""
    first = tmp_path / "first.env"
    first.write_bytes(b"# a comment\n"
                      b"   # an indented comment\n"
                      b"\n"
                      b"SPACED=a value  \n"
                      b'QUOTED="kept"\n'
                      b"  INDENTED=yes\n"
                      b"EQUALS=a=b\n"
                      b"PASSED\n"
                      b"ISOLATE_FLAGS_UNSET\n"
                      b"CRLF=x\r\n"
                      b"LATER=first\n"
                      b"CLI=file")
    second = tmp_path / "second.env"
    second.write_text("LATER=second\n")
    env = cli_env({"PASSED": "from the caller"}, unset=("ISOLATE_FLAGS_UNSET",))
    r = run("--env-file", str(first), "--env-file", str(second), "-e", "CLI=cli", "--",
            "env", "-0", env=env)
    assert r.returncode == 0, r.stderr
    inside = dict(line.split("=", 1) for line in r.stdout.split("\0") if line)
    del inside["PATH"]
    assert inside == {"SPACED": "a value  ", "QUOTED": '"kept"', "INDENTED": "yes",
                      "EQUALS": "a=b", "PASSED": "from the caller", "CRLF": "x",
                      "LATER": "second", "CLI": "cli"}


@pytest.mark.parametrize("content, number, problem", [
    (b"OK=1\n=secret\n", 2, "no variable name"),
    (b"# comment\nBAD KEY=secret\n", 2, "'BAD KEY' contains a blank"),
    (b"A=1\n\nB=secret\xff\n", 3, "not UTF-8"),
    (b"A=secret\0more\n", 1, "NUL"),
])
def test_env_file_bad_line_names_file_and_line(tmp_path: Path, content: bytes, number: int,
                                               problem: str) -> None:
    """The error names the file and the line, and never shows the value."""
    path = tmp_path / "bad.env"
    path.write_bytes(content)
    line = error_line(run("--env-file", str(path), "--", "true"))
    assert line.startswith("isolate: --env-file: ") and f"{path}, line {number}" in line, line
    assert problem in line and "secret" not in line, line


def test_env_file_that_cannot_be_read() -> None:
    line = error_line(run("--env-file", "/nonexistent/isolate.env", "--", "true"))
    assert "--env-file" in line and "/nonexistent/isolate.env" in line, line


# --------------------------------------------------------------- mounts ----

def test_volume_rw_and_ro_by_writing(host_dir: Path) -> None:
    """-v SRC:DST is read-write (docker's default), :ro read-only, :rw too."""
    give_to_container_root(host_dir)
    r = run("-v", f"{host_dir}:/tmp/rw", "--volume", f"{host_dir}:/tmp/ro:ro",
            "-v", f"{host_dir}:/tmp/rw2:rw", "--", "sh", "-c",
            "echo a > /tmp/rw/written; echo b > /tmp/rw2/also; echo c > /tmp/ro/refused; "
            "echo end")
    assert r.stdout == "end\n" and "Read-only file system" in r.stderr, r.stderr
    assert (host_dir / "written").read_text() == "a\n"
    assert (host_dir / "also").read_text() == "b\n"
    assert not (host_dir / "refused").exists()


def test_mount_bind_and_tmpfs(host_dir: Path) -> None:
    """--mount with docker's keys and aliases: bind (readonly or not) and
    tmpfs with a size and a mode."""
    give_to_container_root(host_dir)
    r = run("--mount", f"type=bind,source={host_dir},target=/tmp/ro,readonly",
            "--mount", f"type=bind,src={host_dir},dst=/tmp/rw,ro=false",
            "--mount", "type=tmpfs,destination=/tmp/t,tmpfs-size=2m,tmpfs-mode=1770",
            "--", "sh", "-c",
            "grep -E ' /tmp/(ro|rw|t) ' /proc/mounts; echo a > /tmp/rw/written; "
            "echo b > /tmp/ro/refused; echo c > /tmp/t/file && cat /tmp/t/file")
    mounts = {line.split()[1]: line.split()[3].split(",") for line in r.stdout.splitlines()[:3]}
    assert "ro" in mounts["/tmp/ro"] and "rw" in mounts["/tmp/rw"], r.stdout
    assert {"size=2048k", "mode=1770"} <= set(mounts["/tmp/t"]), r.stdout
    assert r.stdout.splitlines()[3:] == ["c"], (r.stdout, r.stderr)
    assert (host_dir / "written").read_text() == "a\n"
    assert not (host_dir / "refused").exists()


def test_tmpfs_options_give_size_and_mode_not_a_directory(rootfs: Path) -> None:
    """--tmpfs /x:size=1m is a 1 MiB tmpfs at /x (it used to be a directory
    named "/x:size=1m")."""
    r = run("--rootfs", str(rootfs), "--rw-rootfs", "--tmpfs", "/x:size=1m",
            "--tmpfs", "/y:mode=700,size=64k", "--", "/bin/busybox", "grep", "-E",
            " /(x|y) ", "/proc/mounts")
    assert r.returncode == 0, r.stderr
    mounts = {line.split()[1]: line.split()[3].split(",") for line in r.stdout.splitlines()}
    assert "size=1024k" in mounts["/x"] and {"size=64k", "mode=700"} <= set(mounts["/y"]), r.stdout
    assert sorted(p.name for p in rootfs.iterdir() if p.name[0] in "xy") == ["x", "y"]
    r = run("--tmpfs", "/tmp/x:size=1m", "--", "df", "-k", "/tmp/x")
    assert r.returncode == 0 and r.stdout.splitlines()[1].split()[1] == "1024", r.stdout


def test_bind_options_are_read_not_mounted_as_a_path(host_dir: Path) -> None:
    """--bind SRC:DST:ro binds at DST (it used to bind at "DST:ro");
    --bind-rw SRC:DST:rw likewise; SRC alone still binds at SRC."""
    give_to_container_root(host_dir)
    r = run("--bind", f"{host_dir}:/tmp/ro:ro", "--bind-rw", f"{host_dir}:/tmp/rw:rw",
            "--bind", str(host_dir), "--", "sh", "-c",
            f"ls -d /tmp/ro:ro /tmp/rw:rw 2>/dev/null; grep -E ' (/tmp/ro|/tmp/rw|{host_dir}) ' "
            f"/proc/mounts | cut -d' ' -f2,4 | cut -d, -f1; echo a > /tmp/rw/written")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.splitlines()) == sorted([f"{host_dir} ro", "/tmp/ro ro", "/tmp/rw rw"])
    assert (host_dir / "written").read_text() == "a\n"


# -------------------------------------------------- process: cwd, user, init ----

def test_workdir() -> None:
    for flag in ("-w", "--workdir", "--cwd"):
        r = run(flag, "/usr", "--", "pwd")
        assert (r.returncode, r.stdout) == (0, "/usr\n"), (flag, r.stderr)


@pytest.mark.parametrize("user, ids", [
    ("app", "1000 1000"), ("app:staff", "1000 50"), ("app:0", "1000 0"),
    ("1000:1000", "1000 1000"), ("1000", "1000 1000"), ("4242", "4242 0"),
    ("nobody", "65534 65534"), ("nobody:app", "65534 1000"),
])
def test_user_in_a_rootfs(rootfs: Path, user: str, ids: str) -> None:
    """-u names (and a lone uid's group) come from the rootfs's own
    /etc/passwd and /etc/group; a uid it does not list gets group 0."""
    r = run("--rootfs", str(rootfs), "-u", user, "--", "/bin/sh", "-c",
            "/bin/busybox id -u; /bin/busybox id -g")
    assert (r.returncode, " ".join(r.stdout.split())) == (0, ids), r.stderr


def test_user_in_an_image(store: Path) -> None:
    """With --image, -u looks in the image's files; HOME follows the user."""
    r = on_image(store, "-u", "nobody", "--entrypoint", "sh", "--", "-c", 'id; echo "$HOME"')
    assert r.stdout == "uid=65534(nobody) gid=65534(nogroup)\n/nonexistent\n", r.stderr
    r = on_image(store, "--user", "1000:1000", "--entrypoint", "id")
    assert r.stdout == "uid=1000 gid=1000\n", r.stderr
    r = on_image(store, "-u", "nobody:daemon", "--entrypoint", "id")
    assert r.stdout == "uid=65534(nobody) gid=1(daemon)\n", r.stderr


def test_user_on_the_hosts_root() -> None:
    """The default root is the host's /: its /etc/passwd names the user."""
    nobody = pwd.getpwnam("nobody")
    r = run("-u", "nobody", "--", "sh", "-c", "id -u; id -g")
    assert r.stdout.split() == [str(nobody.pw_uid), str(nobody.pw_gid)], r.stderr


@pytest.mark.parametrize("flags, pid_1", [
    ((), False), (("--init",), False), (("--no-init",), True),
    (("--no-init", "--init"), False), (("--init", "--no-init"), True),
])
def test_init_and_no_init(flags: tuple[str, ...], pid_1: bool) -> None:
    """The workload is PID 1 only without the init; the last flag wins."""
    r = run(*flags, "--", "sh", "-c", "echo $$")
    assert r.returncode == 0, r.stderr
    assert (r.stdout == "1\n") == pid_1, r.stdout


# ------------------------------------------------------ root and entrypoint ----

def test_read_only_with_a_rootfs_and_an_image(rootfs: Path, store: Path) -> None:
    """--read-only: nothing is written to the root (a rootfs directory's is
    read-only anyway, an image's is not unless asked); /tmp stays writable."""
    r = run("--rootfs", str(rootfs), "--read-only", "--", "/bin/busybox", "touch", "/new")
    assert r.returncode != 0 and not (rootfs / "new").exists()
    script = "echo x > /etc/new && echo wrote; echo y > /tmp/new && echo tmp"
    r = on_image(store, "--entrypoint", "sh", "--", "-c", script)
    assert r.stdout == "wrote\ntmp\n", r.stderr
    r = on_image(store, "--read-only", "--entrypoint", "sh", "--", "-c", script)
    assert r.stdout == "tmp\n" and "Read-only file system" in r.stderr, r.stderr


@pytest.mark.parametrize("args, output", [
    ((), "ep echo cmd"),                                   # Entrypoint + Cmd
    (("--", "x"), "ep x"),                                 # arguments replace Cmd
    (("--entrypoint", "echo"), ""),                        # Cmd is dropped with it
    (("--entrypoint", "echo", "--", "a", "b"), "a b"),
    (("--entrypoint", "/bin/busybox", "--", "echo", "c"), "c"),
    (("--entrypoint", ""), "cmd"),                         # '' keeps only Cmd
    (("--entrypoint", "", "--", "echo", "d"), "d"),
])
def test_entrypoint_with_an_image(store: Path, args: tuple[str, ...], output: str) -> None:
    r = on_image(store, *args)
    assert (r.returncode, r.stdout) == (0, output + "\n"), r.stderr


# --------------------------------------------------------------------- exec ----

@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A detached container "flags" of the host's root: (its --root, name)."""
    state = tmp_path / "state"
    r = isolate("--root", str(state), "run", "--name", "flags", "-d", "--", "sleep",
                unique_sleep_arg())
    assert r.returncode == 0, r.stderr
    try:
        yield state, "flags"
    finally:
        isolate("--root", str(state), "rm", "-f", "flags")


def test_exec_env_workdir_and_user(running: tuple[Path, str], tmp_path: Path) -> None:
    state, name = running
    env_file = tmp_path / "exec.env"
    env_file.write_text("# from a file\nFROM_FILE=f\nOVER=file\n")
    env = cli_env({"PASSED": "p"}, unset=("ISOLATE_FLAGS_UNSET",))
    r = isolate("--root", str(state), "exec", name, "-e", "PASSED", "-e", "ISOLATE_FLAGS_UNSET",
                "--env-file", str(env_file), "-e", "OVER=cli", "-w", "/etc", "-u", "nobody",
                "--", "sh", "-c", 'echo "$PASSED $FROM_FILE $OVER ${ISOLATE_FLAGS_UNSET-unset}"; '
                "pwd; id -un", env=env)
    assert r.stdout.splitlines() == ["p f cli unset", "/etc", "nobody"], r.stderr
    r = isolate("--root", str(state), "exec", name, "--user", "nobody:daemon", "--workdir", "/usr",
                "--", "sh", "-c", "pwd; id -u; id -g")
    ids = [str(pwd.getpwnam("nobody").pw_uid), str(grp.getgrnam("daemon").gr_gid)]
    assert r.stdout.split() == ["/usr", *ids], r.stderr


@pytest.mark.parametrize("args, flag, value", [
    (("-u", "isolate-no-such-user"), "-u/--user", "isolate-no-such-user"),
    (("-u", "nobody:"), "-u/--user", "nobody:"),
    (("-u", "nobody", "--uid", "1"), "-u/--user", "nobody"),
    (("-e", "=x"), "-e/--env", "=x"),
    (("--env-file", "/nonexistent/x.env"), "--env-file", "/nonexistent/x.env"),
    (("-w", "relative"), "-w/--workdir/--cwd", "relative"),
])
def test_exec_bad_values(running: tuple[Path, str], args: tuple[str, ...], flag: str,
                         value: str) -> None:
    state, name = running
    line = error_line(isolate("--root", str(state), "exec", name, *args, "--", "true"))
    assert flag in line and value in line, line


# ---------------------------------------------------------------- bad values ----

#: (flag as the error names it, value) for each value refused, and why.
BAD = [
    ("-e/--env", "=x"),                                            # no name
    ("--env-file", "/nonexistent/isolate-flags.env"),
    ("-v/--volume", "/data"),                                      # docker: an anonymous volume
    ("-v/--volume", "data:/data"),                                 # docker: a named volume
    ("-v/--volume", "./data:/data"),
    ("-v/--volume", "/var/tmp:/data:z"),                           # SELinux label
    ("-v/--volume", "/var/tmp:/data:rshared"),                     # propagation
    ("-v/--volume", "/var/tmp:/data:ro,rw"),
    ("-v/--volume", "/var/tmp:/data:ro,"),
    ("-v/--volume", "/var/tmp:/data:ro:x"),
    ("-v/--volume", "/var/tmp:"),
    ("-v/--volume", "/nonexistent/isolate-flags:/data"),           # no such source
    ("-v/--volume", "/var/tmp:data"),                              # relative target
    ("-v/--volume", "/var/tmp:/"),
    ("--mount", "type=volume,src=data,dst=/data"),
    ("--mount", "src=/var/tmp,dst=/data"),                         # docker's default type: volume
    ("--mount", "type=nfs,dst=/data"),
    ("--mount", "type=bind,src=/var/tmp"),                         # no target
    ("--mount", "type=bind,dst=/data"),                            # no source
    ("--mount", "type=bind,source=var/tmp,target=/data"),
    ("--mount", "type=bind,src=/var/tmp,dst=/data,bind-propagation=shared"),
    ("--mount", "type=bind,src=/var/tmp,dst=/data,readonly=maybe"),
    ("--mount", "type=bind,src=/var/tmp,dst=/data,tmpfs-size=1m"),
    ("--mount", "type=bind,src=/var/tmp,dst=/data,oops"),
    ("--mount", "type=tmpfs,src=/var/tmp,dst=/data"),
    ("--mount", "type=tmpfs,dst=/data,tmpfs-size=lots"),
    ("--mount", "type=tmpfs,dst=/data,tmpfs-mode=999"),
    ("--mount", "type=tmpfs,dst=/data,readonly"),
    ("--mount", 'type=bind,"src=/var/tmp'),                        # an unclosed quote
    ("--tmpfs", "/data:size=lots"),
    ("--tmpfs", "/data:size=0"),
    ("--tmpfs", "/data:mode=9"),
    ("--tmpfs", "/data:noexec"),
    ("--tmpfs", "/data:size"),
    ("--tmpfs", ":size=1m"),
    ("--tmpfs", "data"),                                           # relative target
    ("--bind", "/var/tmp:/data:rw"),                               # says --bind-rw
    ("--bind", "/var/tmp:/data:bogus"),
    ("--bind", "/var/tmp:/data:ro:x"),
    ("--bind-rw", "/var/tmp:/data:ro"),
    ("-w/--workdir/--cwd", "relative"),
    ("-u/--user", ""),
    ("-u/--user", ":0"),
    ("-u/--user", "a:b:c"),
    ("-u/--user", "isolate-no-such-user"),
    ("-u/--user", "nobody:isolate-no-such-group"),
    ("-u/--user", "99999999999"),
    ("--entrypoint", "sh"),                                        # no --image
]


@pytest.mark.parametrize("flag, value", BAD)
def test_bad_value_names_flag_and_value_and_creates_nothing(tmp_path: Path, flag: str,
                                                            value: str) -> None:
    """Exit 125 and one error naming the flag and the value, for a detached
    named container that would otherwise start: no record, no process."""
    state, token = tmp_path / "state", unique_sleep_arg()
    option = flag.split("/")[0]
    r = isolate("--root", str(state), "run", "--name", "flags-bad", "-d", option, value,
                "--", "sleep", token)
    line = error_line(r)
    assert flag in line and value in line, line
    assert not state.exists() or not os.listdir(state), os.listdir(state)
    assert pids_with_cmdline(token) == []


def test_conflicting_flags_are_refused(tmp_path: Path) -> None:
    line = error_line(run("--read-only", "--rw-rootfs", "--", "true"))
    assert "--read-only" in line and "--rw-rootfs" in line, line
    line = error_line(run("-u", "nobody", "--gid", "1", "--", "true"))
    assert "-u/--user" in line and "--uid/--gid" in line, line


def test_bad_user_in_an_image_names_flag_and_value(store: Path) -> None:
    line = error_line(on_image(store, "-u", "isolate-no-such-user"))
    assert "-u/--user" in line and "isolate-no-such-user" in line, line


# ----------------------------------------------------- parsing, no container ----

def test_mount_flags_parse_into_ordered_specs() -> None:
    """What each mount flag reads, in command-line order; --mount reads CSV
    as docker does (a quoted field may hold a comma)."""
    from isolate.cli import main as cli
    args = cli.parse_args(["run", "-v", "/h:/c:ro", "--tmpfs", "/t:size=1m,mode=1777",
                           "--mount", 'type=bind,"src=/a,b",dst=/d,ro=false',
                           "--mount", "type=tmpfs,target=/u", "--bind-rw", "/e:/f:rw",
                           "--", "x"])
    assert args.mounts == [("bind", "/h", "/c"), ("tmpfs", "", "/t"), ("bind-rw", "/a,b", "/d"),
                           ("tmpfs", "", "/u"), ("bind-rw", "/e", "/f")]
    assert [(m.size, m.mode) for m in args.mounts if m.kind == "tmpfs"] == [
        (1 << 20, 0o1777), (None, None)]
    assert [m.flag for m in args.mounts] == ["-v/--volume", "--tmpfs", "--mount", "--mount",
                                             "--bind-rw"]
