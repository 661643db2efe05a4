"""The ``isolate run`` command line, driven as a user would: ``python -m isolate``.

Every test runs the real CLI in a subprocess against the real kernel.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from isolate.cli import main as cli
from isolate.cli.images import is_image_path
from isolate.cli.output import printable
from conftest import REPO, PYTHON, busybox_rootfs, give_to_container_root, require

TIMEOUT = 60


def isolate_cmd(*args: str) -> list[str]:
    """The argv of ``python -m isolate run ARGS...``."""
    return [sys.executable, "-m", "isolate", "run", *args]


def cli_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    """This environment with the repository first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def isolate_run(*args: str, env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Run ``python -m isolate run ARGS...`` and capture its output as text."""
    return subprocess.run(isolate_cmd(*args), capture_output=True, text=True,
                          env=cli_env(env), cwd=REPO, timeout=TIMEOUT)


def assert_one_line_error(r: subprocess.CompletedProcess) -> str:
    """Check stderr is one clean ``isolate: ...`` line (no traceback); return it."""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("isolate: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


# ------------------------------------------------------------ the basics ----

def test_runs_command_and_exits_zero() -> None:
    r = isolate_run("--", "sh", "-c", "echo hello")
    assert (r.returncode, r.stdout, r.stderr) == (0, "hello\n", "")


def test_default_hostname_is_isolate() -> None:
    r = isolate_run("--", "uname", "-n")
    assert (r.returncode, r.stdout) == (0, "isolate\n"), r.stderr


def test_hostname_option() -> None:
    r = isolate_run("--hostname", "box", "--", "uname", "-n")
    assert (r.returncode, r.stdout) == (0, "box\n"), r.stderr
    assert os.uname().nodename != "box"


def test_works_without_double_dash() -> None:
    r = isolate_run("--hostname", "box", "sh", "-c", "uname -n")
    assert (r.returncode, r.stdout) == (0, "box\n"), r.stderr


def test_python_m_isolate_without_subcommand_is_usage_error() -> None:
    r = subprocess.run([sys.executable, "-m", "isolate"], capture_output=True, text=True,
                       env=cli_env(), cwd=REPO, timeout=TIMEOUT)
    assert r.returncode == cli.EXIT_RUNTIME_ERROR
    assert "usage: isolate" in r.stderr


# --------------------------------------------------------- exit statuses ----

@pytest.mark.parametrize("status", [0, 1, 7, 42, 124, 255])
def test_exit_status_propagates(status: int) -> None:
    r = isolate_run("--", "sh", "-c", f"exit {status}")
    assert r.returncode == status, r.stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGSEGV])
def test_death_by_signal_exits_128_plus_n(sig: signal.Signals) -> None:
    r = isolate_run("--", "sh", "-c", f"kill -{sig.name[3:]} $$")
    assert r.returncode == 128 + sig, r.stderr


def test_signal_death_without_init() -> None:
    # PID 1 ignores signals it has no handler for, except a real fault's.
    crash = "import ctypes; ctypes.string_at(0)"
    r = isolate_run("--no-init", "--", PYTHON, "-c", crash)
    assert r.returncode == 128 + signal.SIGSEGV, r.stderr


def test_sigterm_to_cli_reaches_workload() -> None:
    script = "trap 'exit 42' TERM; echo ready; sleep 30 & wait"
    with subprocess.Popen(isolate_cmd("--", "sh", "-c", script), stdout=subprocess.PIPE,
                          text=True, env=cli_env(), cwd=REPO) as proc:
        assert proc.stdout and proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 42


# ---------------------------------------------------------------- mounts ----

def test_bind_is_read_only(tmp_path: Path) -> None:
    (tmp_path / "hello").write_text("from host\n")
    tmp_path.chmod(0o755)   # a root caller's container does not run as the host's root
    r = isolate_run("--bind", f"{tmp_path}:/mnt", "--", "sh", "-c",
                    "cat /mnt/hello; echo x > /mnt/new && echo WROTE")
    assert r.returncode != 0 or "WROTE" not in r.stdout
    assert r.stdout.startswith("from host\n"), r.stderr
    assert not (tmp_path / "new").exists()


def test_bind_rw_writes_reach_host(tmp_path: Path) -> None:
    give_to_container_root(tmp_path)
    r = isolate_run("--bind-rw", f"{tmp_path}:/mnt", "--", "sh", "-c", "echo hi > /mnt/out")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out").read_text() == "hi\n"


def test_host_ids_write_where_the_caller_may(tmp_path: Path) -> None:
    """--host-ids: the container's root is the caller (as root: the host's
    root), so a directory only the caller may write takes the output."""
    tmp_path.chmod(0o700)
    r = isolate_run("--host-ids", "--bind-rw", f"{tmp_path}:/mnt", "--", "sh", "-c",
                    "echo hi > /mnt/out")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out").stat().st_uid == os.geteuid()
    r = isolate_run("--bind-rw", f"{tmp_path}:/mnt", "--", "sh", "-c", "echo hi > /mnt/again")
    assert (r.returncode != 0) == (os.geteuid() == 0), r.stderr   # root's containers: other ids


def test_home_shows_the_callers_home_read_only() -> None:
    home = os.path.expanduser("~")
    r = isolate_run("--home", "--", "sh", "-c", f"grep ' {home} ' /proc/self/mountinfo; "
                    f"touch {home}/x")
    # The bind (read-only) over the empty tmpfs that hides homes.
    assert any(f"{home} {home} ro," in line for line in r.stdout.splitlines()), r.stdout
    assert r.returncode != 0, r.stderr
    r = isolate_run("--", "sh", "-c", f"ls -A {home} | wc -l")
    assert r.stdout.strip() == "0", r.stderr


def test_tmpfs_is_writable_and_private() -> None:
    r = isolate_run("--tmpfs", "/mnt", "--", "sh", "-c",
                    "echo hi > /mnt/isolate-cli-f && cat /mnt/isolate-cli-f")
    assert (r.returncode, r.stdout) == (0, "hi\n"), r.stderr
    assert not Path("/mnt/isolate-cli-f").exists()


def test_root_is_read_only_by_default() -> None:
    r = isolate_run("--", "sh", "-c", "touch /isolate-cli-test 2>/dev/null && echo WROTE")
    assert "WROTE" not in r.stdout
    assert not Path("/isolate-cli-test").exists()


def test_rootfs_option(tmp_path: Path) -> None:
    root = busybox_rootfs(tmp_path)
    (root / "marker").write_text("inside\n")
    r = isolate_run("--rootfs", str(root), "--", "/bin/busybox", "cat", "/marker")
    assert (r.returncode, r.stdout) == (0, "inside\n"), r.stderr


def test_rw_rootfs_option(tmp_path: Path) -> None:
    root = busybox_rootfs(tmp_path)
    r = isolate_run("--rootfs", str(root), "--", "/bin/busybox", "touch", "/ro")
    assert r.returncode != 0 and not (root / "ro").exists()
    r = isolate_run("--rootfs", str(root), "--rw-rootfs", "--", "/bin/busybox", "touch", "/rw")
    assert r.returncode == 0, r.stderr
    assert (root / "rw").exists()


# ---------------------------------------------------- process and namespaces --

def test_env_is_clean_with_env_options() -> None:
    r = isolate_run("--env", "FOO=bar", "--env", "EMPTY=", "--", "sh", "-c",
                    'echo "$FOO|${EMPTY-unset}|${ISOLATE_CLI_T-unset}"',
                    env={"ISOLATE_CLI_T": "leaked"})
    assert (r.returncode, r.stdout) == (0, "bar||unset\n"), r.stderr


def test_inherit_env() -> None:
    r = isolate_run("--inherit-env", "--env", "FOO=bar", "--", "sh", "-c",
                    'echo "$FOO|$ISOLATE_CLI_T"', env={"ISOLATE_CLI_T": "kept"})
    assert (r.returncode, r.stdout) == (0, "bar|kept\n"), r.stderr


def test_cwd_option() -> None:
    r = isolate_run("--cwd", "/usr", "--", "pwd")
    assert (r.returncode, r.stdout) == (0, "/usr\n"), r.stderr


def test_uid_gid_options() -> None:
    r = isolate_run("--uid", "5", "--gid", "6", "--", "sh", "-c", "id -u; id -g")
    assert (r.returncode, r.stdout.split()) == (0, ["5", "6"]), r.stderr


def test_no_init_makes_workload_pid_1() -> None:
    r = isolate_run("--no-init", "--", "sh", "-c", "echo $$")
    assert (r.returncode, r.stdout) == (0, "1\n"), r.stderr


def test_with_init_workload_is_not_pid_1() -> None:
    r = isolate_run("--", "sh", "-c", "echo $$")
    assert r.returncode == 0 and r.stdout.strip() not in ("", "1"), (r.stdout, r.stderr)


@pytest.mark.parametrize("ns", ["net", "uts", "ipc"])
def test_share_keeps_host_namespace(ns: str) -> None:
    host = os.readlink(f"/proc/self/ns/{ns}")
    shared = isolate_run("--share", ns, "--", "readlink", f"/proc/self/ns/{ns}")
    assert (shared.returncode, shared.stdout) == (0, f"{host}\n"), shared.stderr
    fresh = isolate_run("--", "readlink", f"/proc/self/ns/{ns}")
    assert fresh.returncode == 0 and fresh.stdout != f"{host}\n", fresh.stderr


# ---------------------------------------------------------------- errors ----

@pytest.mark.parametrize("args", [
    ["--bogus", "--", "true"],
    ["--"],
    [],
    ["--env", "=NONAME", "--", "true"],   # --env KEY alone passes the caller's on, as docker's -e
    ["--share", "nonsense", "--", "true"],
    ["--bind", ":/mnt", "--", "true"],
    ["--uid", "abc", "--", "true"],
])
def test_bad_usage_exits_125_with_usage(args: list[str]) -> None:
    r = isolate_run(*args)
    assert r.returncode == cli.EXIT_RUNTIME_ERROR
    assert "usage: isolate run" in r.stderr and "error:" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.parametrize("args", [
    ["--cwd", "relative/dir", "--", "true"],
    ["--rootfs", "/nonexistent/isolate-cli-rootfs", "--", "true"],
    ["--bind", "/etc:relative", "--", "true"],
])
def test_config_error_exits_125_one_line(args: list[str]) -> None:
    r = isolate_run(*args)
    assert r.returncode == cli.EXIT_RUNTIME_ERROR, r.stderr
    assert_one_line_error(r)


def test_missing_executable_exits_127_naming_it() -> None:
    r = isolate_run("--", "/no/such/isolate-cli-binary")
    assert r.returncode == cli.EXIT_NOT_FOUND, r.stderr
    assert "isolate-cli-binary" in assert_one_line_error(r)


def test_missing_executable_on_path_exits_127() -> None:
    r = isolate_run("--", "isolate-cli-no-such-command")
    assert r.returncode == cli.EXIT_NOT_FOUND, r.stderr
    assert "isolate-cli-no-such-command" in assert_one_line_error(r)


# ------------------------------------------------- option parsing, no spawn --

def test_mount_options_keep_command_line_order() -> None:
    args = cli.parse_args(["run", "--bind", "/a:/b", "--tmpfs", "/t", "--bind-rw", "/c:/d",
                           "--bind", "/e", "--", "x"])
    assert args.mounts == [("bind", "/a", "/b"), ("tmpfs", "", "/t"),
                           ("bind-rw", "/c", "/d"), ("bind", "/e", "/e")]
    assert args.command == ["x"]


def test_command_keeps_its_own_options() -> None:
    args = cli.parse_args(["run", "--hostname", "h", "--", "sh", "-c", "x", "--hostname"])
    assert (args.hostname, args.command) == ("h", ["sh", "-c", "x", "--hostname"])


@pytest.mark.parametrize("returncode, status", [(0, 0), (3, 3), (-9, 137), (-15, 143)])
def test_exit_status_mapping(returncode: int, status: int) -> None:
    assert cli.exit_status(returncode) == status


# ------------------------------------------------------------- hardening ----

def test_security_options() -> None:
    """--cap-add/--cap-drop, --ulimit, --allow-new-privs and --seccomp reach the workload."""
    r = isolate_run("--cap-drop", "ALL", "--cap-add", "KILL", "--ulimit", "nofile=100:200",
                    "--allow-new-privs", "--seccomp", "unconfined", "--",
                    "sh", "-c", "grep -E 'CapBnd|NoNewPrivs|Seccomp:' /proc/self/status; ulimit -n; ulimit -Hn")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["CapBnd:", f"{1 << 5:016x}", "NoNewPrivs:", "0", "Seccomp:", "0",
                                "100", "200"]
    r = isolate_run("--", "grep", "Seccomp:", "/proc/self/status")
    assert r.stdout.split() == ["Seccomp:", "2"]


@pytest.mark.parametrize("args", [["--cap-add", "FLY"], ["--ulimit", "nofile=x"],
                                  ["--ulimit", "nofiles=1"]])
def test_bad_security_options(args: list[str]) -> None:
    r = isolate_run(*args, "--", "true")
    assert r.returncode in (2, 125)
    assert "Traceback" not in r.stderr and r.stderr.strip()


def test_resource_limit_options() -> None:
    """--memory/--memory-swap end a memory bomb (exit 137: SIGKILL);
    --pids-limit stops forks; a bad size is a one-line error (125)."""
    r = isolate_run("--memory", "32M", "--memory-swap", "32M", "--",
                    PYTHON, "-c", "x = bytearray(1 << 28)")
    assert r.returncode == 128 + signal.SIGKILL
    r = isolate_run("--pids-limit", "5", "--", "sh", "-c",
                    "for i in 1 2 3 4 5 6 7 8; do sleep 1 & done; wait")
    assert "cannot fork" in r.stderr.lower()
    r = isolate_run("--memory", "lots", "--", "true")
    assert r.returncode == 125
    assert "CgroupLimit.memory" in assert_one_line_error(r)


# ------------------------------------------ images and container-provided text ----

#: An image's Cmd built to attack the operator's terminal: set the window
#: title (OSC ... BEL), return the carriage and clear the screen.
HOSTILE = "\x1b]0;owned\x07\r\x1b[2J\x9b1m\u202e"


def isolate_in(store: Path, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``python -m isolate --store STORE --root STORE/state ARGS...`` in `cwd`."""
    return subprocess.run([sys.executable, "-m", "isolate", "--store", str(store), "--root",
                           str(store / "state"), *args], capture_output=True, text=True,
                          env=cli_env(), cwd=cwd, timeout=TIMEOUT)


@pytest.fixture
def image_store(tmp_path: Path) -> Path:
    """A store holding busybox:latest, whose Cmd is a hostile `sleep`."""
    require(shutil.which("busybox") is not None, "busybox is not installed")
    from image_builder import build_docker_archive, busybox_config, busybox_layers
    archive = tmp_path / "busybox.tar"
    cmd = ["sh", "-c", f"echo stored image; exec sleep 1000 #{HOSTILE}"]
    build_docker_archive(archive, busybox_layers(), busybox_config(Cmd=cmd))
    store = tmp_path / "store"
    r = isolate_in(store, "import", str(archive))
    assert r.returncode == 0, r.stderr
    yield store
    for name in ("web", "detached"):
        isolate_in(store, "rm", "-f", name)


def assert_no_controls(text: str) -> None:
    """No C0 (but newline), DEL, C1 or bidi control in `text`."""
    bad = [c for c in text if (not c.isprintable() and c != "\n")]
    assert not bad, f"control characters reached the terminal: {bad!r} in {text!r}"


def test_a_file_in_the_current_directory_never_shadows_a_stored_image(image_store, tmp_path):
    """--image busybox runs the stored image although ./busybox exists (as
    another user may leave in a shared directory), quietly; ./busybox and
    x.tar are paths, said on stderr."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "busybox").write_text("planted by someone else")
    r = isolate_in(image_store, "run", "--image", "busybox", "--", "echo", "ran", cwd=shared)
    assert (r.returncode, r.stdout, r.stderr) == (0, "ran\n", "")
    r = isolate_in(image_store, "run", "--image", "./busybox", "--", "echo", "ran", cwd=shared)
    assert r.returncode == 125 and "using image archive ./busybox" in r.stderr, r
    os.rename(tmp_path / "busybox.tar", shared / "busybox.tar")
    r = isolate_in(image_store, "run", "--image", "busybox.tar", "--", "echo", "ran", cwd=shared)
    assert r.returncode == 0 and r.stdout == "ran\n", r.stderr
    assert "using image archive busybox.tar" in r.stderr


def test_a_missing_stored_image_points_at_the_file_of_that_name(image_store, tmp_path):
    """A name not in the store is an error that says how to use the file of that name."""
    (tmp_path / "alpine").write_text("")
    r = isolate_in(image_store, "run", "--image", "alpine", "--", "true", cwd=tmp_path)
    assert r.returncode == 125
    assert "no image 'alpine'" in r.stderr and "./alpine" in assert_one_line_error(r)


@pytest.mark.parametrize("value, path", [
    ("busybox", False), ("busybox:1.36", False), ("ghcr.io/org/app:1", False),
    ("docker.io/library/busybox", False), ("./busybox", True), ("../x", True), ("/x", True),
    ("x.tar", True), ("x.tar.gz", True), ("x.tgz", True), ("x.tar.zst", True), (".", True),
])
def test_which_image_arguments_are_paths(value: str, path: bool) -> None:
    assert is_image_path(value) is path


def test_ps_escapes_an_image_command(image_store):
    """`isolate ps` shows an image's hostile Cmd with its control characters
    escaped (\\x1b...), nothing raw."""
    r = isolate_in(image_store, "run", "--image", "busybox", "--name", "web", "-d")
    assert r.returncode == 0, r.stderr
    r = isolate_in(image_store, "ps")
    assert r.returncode == 0, r.stderr
    assert_no_controls(r.stdout)
    assert "#\\x1b]0;owned\\x07\\x0d\\x1b[2J\\x9b1m\\u202e" in r.stdout


def test_errors_quoting_container_data_are_escaped(tmp_path, image_store):
    """A command that does not exist, named by the image (127), and the
    images listing: escaped on the operator's terminal."""
    r = isolate_in(image_store, "run", "--image", "busybox", "--", f"/bin/nope{HOSTILE}")
    assert r.returncode == 127
    assert_no_controls(r.stderr)
    assert "nope\\x1b]0;owned" in assert_one_line_error(r)
    r = isolate_in(image_store, "images")
    assert r.returncode == 0 and "busybox" in r.stdout
    assert_no_controls(r.stdout)


@pytest.mark.parametrize("text, shown", [
    ("plain é 日本", "plain é 日本"), ("\x1b[2J", "\\x1b[2J"), ("a\rb\nc\td", "a\\x0db\\x0ac\\x09d"),
    ("\x7f\x85\x9b", "\\x7f\\x85\\x9b"), ("\u202eevil", "\\u202eevil"), ("bad\udcffbyte", "bad\\xffbyte"),
])
def test_printable_escapes_controls_and_keeps_unicode(text: str, shown: str) -> None:
    assert printable(text) == shown
