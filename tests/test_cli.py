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

from isolate import cli
from conftest import PYTHON, busybox_rootfs, require

REPO = Path(__file__).resolve().parent.parent
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
    r = isolate_run("--bind", f"{tmp_path}:/mnt", "--", "sh", "-c",
                    "cat /mnt/hello; echo x > /mnt/new && echo WROTE")
    assert r.returncode != 0 or "WROTE" not in r.stdout
    assert r.stdout.startswith("from host\n"), r.stderr
    assert not (tmp_path / "new").exists()


def test_bind_rw_writes_reach_host(tmp_path: Path) -> None:
    r = isolate_run("--bind-rw", f"{tmp_path}:/mnt", "--", "sh", "-c", "echo hi > /mnt/out")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out").read_text() == "hi\n"


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
    ["--env", "NOEQUALS", "--", "true"],
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
