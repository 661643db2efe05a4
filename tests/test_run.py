"""isolate.run(), CompletedProcess and Container basics, in the spirit of subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import threading

import pytest

import isolate
from conftest import RUN_TIMEOUT, pids_with_cmdline, unique_sleep_arg, wait_until


def sh(script: str, **kwargs) -> isolate.CompletedProcess:
    """Run ``sh -c script`` in a default container, capturing output."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("timeout", RUN_TIMEOUT)
    return isolate.run(["sh", "-c", script], **kwargs)


def test_constants_are_subprocess_constants():
    """isolate.PIPE/DEVNULL/STDOUT are the very subprocess constants."""
    assert isolate.PIPE is subprocess.PIPE
    assert isolate.DEVNULL is subprocess.DEVNULL
    assert isolate.STDOUT is subprocess.STDOUT


def test_true_returns_completed_process():
    """A successful run reports returncode 0, its args, and no captured output."""
    r = isolate.run(["true"], timeout=RUN_TIMEOUT)
    assert r.returncode == 0
    assert list(r.args) == ["true"]
    assert r.stdout is None and r.stderr is None
    r.check_returncode()


def test_issue_example_hostname_and_uid():
    """The issue's example: hostname set, uid 0 inside, shell runs in a new pid ns."""
    r = sh("echo $$; hostname; id -u", hostname="box")
    pid, hostname, uid = r.stdout.split()
    assert r.returncode == 0
    assert int(pid) <= 2, "the workload should be PID 1 or 2 (behind the init)"
    assert (hostname, uid) == (b"box", b"0")


def test_bytes_argv():
    """argv given as bytes works like str."""
    r = isolate.run([b"echo", b"b\xc3\xa9"], capture_output=True, timeout=RUN_TIMEOUT)
    assert r.stdout == b"b\xc3\xa9\n"


def test_absolute_and_path_lookup(host_dir):
    """argv[0] with a slash is used as is; without one it is looked up on the container's PATH."""
    assert isolate.run(["/bin/true"], timeout=RUN_TIMEOUT).returncode == 0
    tool = host_dir / "only-here"
    tool.write_text("#!/bin/sh\necho found-on-path\n")
    tool.chmod(0o755)
    r = isolate.run(["only-here"], env={"PATH": "/mnt"}, capture_output=True,
                    mounts=[isolate.Bind(str(host_dir), "/mnt")], timeout=RUN_TIMEOUT)
    assert r.stdout == b"found-on-path\n"
    with pytest.raises(isolate.ExecutableNotFound):
        isolate.run(["cat"], env={"PATH": "/mnt"}, mounts=[isolate.Bind(str(host_dir), "/mnt")],
                    timeout=RUN_TIMEOUT)


@pytest.mark.parametrize("code", [1, 2, 7, 42, 127, 255])
def test_exit_codes(code: int):
    """The workload's exit status is returned unchanged (not the init's)."""
    assert sh(f"exit {code}").returncode == code


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGKILL, signal.SIGUSR1, signal.SIGHUP, signal.SIGINT]
)
def test_signal_death_is_negative(sig: signal.Signals):
    """A workload killed by signal N reports returncode -N, like subprocess."""
    r = sh(f"kill -{sig.name[3:]} $$; sleep 5")
    assert r.returncode == -sig


def test_check_raises_called_process_error():
    """check=True turns a non-zero status into isolate.CalledProcessError."""
    with pytest.raises(isolate.CalledProcessError) as info:
        isolate.run(["sh", "-c", "echo out; exit 3"], check=True, capture_output=True,
                    timeout=RUN_TIMEOUT)
    err = info.value
    assert isinstance(err, subprocess.CalledProcessError)
    assert isinstance(err, isolate.IsolateError)
    assert err.returncode == 3
    assert list(err.cmd) == ["sh", "-c", "echo out; exit 3"]
    assert err.output == b"out\n"


def test_check_passes_on_success():
    """check=True does not raise when the workload succeeds."""
    assert isolate.run(["true"], check=True, timeout=RUN_TIMEOUT).returncode == 0


def test_check_returncode_method():
    """CompletedProcess.check_returncode raises on failure."""
    r = sh("exit 9")
    with pytest.raises(subprocess.CalledProcessError):
        r.check_returncode()


def test_capture_output_separates_streams():
    """capture_output captures stdout and stderr separately as bytes."""
    r = sh("echo out; echo err >&2")
    assert (r.stdout, r.stderr) == (b"out\n", b"err\n")


def test_text_mode():
    """text=True decodes stdout/stderr and accepts str input."""
    r = isolate.run(["sh", "-c", "cat; echo é >&2"], input="héllo", text=True,
                    capture_output=True, timeout=RUN_TIMEOUT)
    assert (r.stdout, r.stderr) == ("héllo", "é\n")


def test_input_bytes():
    """input= is written to the workload's stdin."""
    r = isolate.run(["cat"], input=b"abc\x00def", capture_output=True, timeout=RUN_TIMEOUT)
    assert r.stdout == b"abc\x00def"


def test_env_is_clean_by_default(monkeypatch: pytest.MonkeyPatch):
    """The host environment does not leak in; PATH is set."""
    monkeypatch.setenv("ISOLATE_TEST_SECRET", "leak")
    r = sh('echo "${ISOLATE_TEST_SECRET-unset}"; echo "$PATH"')
    secret, path = r.stdout.decode().splitlines()
    assert secret == "unset"
    assert "/usr/bin" in path.split(":")


def test_env_given_and_path_added():
    """env= is the whole environment, with PATH added when missing."""
    r = isolate.run(["sh", "-c", 'echo "$A"; echo "$PATH"; echo "${HOME-unset}"'],
                    env={"A": "b c"}, capture_output=True, timeout=RUN_TIMEOUT)
    a, path, home = r.stdout.decode().splitlines()
    assert (a, home) == ("b c", "unset")
    assert "/bin" in path.split(":")


def test_cwd():
    """cwd= sets the working directory inside the container."""
    assert sh("pwd", cwd="/usr").stdout == b"/usr\n"
    assert sh("pwd").stdout == b"/\n"


def test_user_and_group():
    """user=/group= set the ids inside the container."""
    r = sh("id -u; id -g", user=1000, group=1001)
    assert r.stdout.split() == [b"1000", b"1001"]


def test_config_object():
    """run() accepts a prebuilt Config instead of keywords."""
    cfg = isolate.Config(hostname="from-config")
    r = isolate.run(["hostname"], config=cfg, capture_output=True, timeout=RUN_TIMEOUT)
    assert r.stdout == b"from-config\n"


def test_timeout_raises_timeout_expired():
    """timeout= raises isolate.TimeoutExpired, a subprocess.TimeoutExpired."""
    args = ["sleep", unique_sleep_arg()]
    with pytest.raises(isolate.TimeoutExpired) as info:
        isolate.run(args, timeout=0.5)
    assert isinstance(info.value, subprocess.TimeoutExpired)
    assert list(info.value.cmd) == args
    assert info.value.timeout == 0.5


def _watch_for(token: str, count: int, seen: threading.Event, stop: threading.Event):
    """Set ``seen`` once at least ``count`` host processes mention ``token``."""
    while not stop.is_set():
        if len(pids_with_cmdline(token)) >= count:
            seen.set()
            return
        stop.wait(0.02)


def test_timeout_kills_whole_container():
    """On timeout every process in the container dies, not just the workload."""
    token = unique_sleep_arg()
    seen, stop = threading.Event(), threading.Event()
    watcher = threading.Thread(target=_watch_for, args=(token, 3, seen, stop))
    watcher.start()
    try:
        with pytest.raises(isolate.TimeoutExpired):
            sh(f"sleep {token} & sleep {token} & (sleep {token} &); wait",
               capture_output=False, timeout=3)
    finally:
        stop.set()
        watcher.join()
    assert seen.is_set(), "the container's background sleeps never showed up"
    assert wait_until(lambda: not pids_with_cmdline(token)), pids_with_cmdline(token)


def test_container_process_basics():
    """Container exposes pid, pidfd, poll/wait/returncode of the workload."""
    with isolate.Container(["sh", "-c", "read x; exit 5"], stdin=isolate.PIPE) as c:
        proc = c.process
        assert c.pid > 0 and proc.pid > 0
        assert isinstance(proc.pidfd, int) and proc.pidfd >= 0
        assert proc.poll() is None and proc.returncode is None
        proc.stdin.write(b"go\n")
        proc.stdin.close()
        assert c.wait(timeout=RUN_TIMEOUT) == 5
        assert proc.returncode == 5 and proc.poll() == 5


def test_container_wait_timeout_does_not_kill():
    """Container.wait(timeout) raises TimeoutExpired but leaves it running."""
    with isolate.Container(["sleep", unique_sleep_arg()]) as c:
        with pytest.raises(subprocess.TimeoutExpired):
            c.wait(timeout=0.2)
        assert c.process.poll() is None
        c.process.kill()
        assert c.wait(timeout=RUN_TIMEOUT) == -signal.SIGKILL


def test_container_exit_kills_running_workload():
    """Leaving the with-block SIGKILLs a still-running container and reaps it."""
    token = unique_sleep_arg()
    with isolate.Container(["sleep", token]) as c:
        assert wait_until(lambda: pids_with_cmdline(token))
        pid = c.pid
    assert wait_until(lambda: not pids_with_cmdline(token)), "workload survived close()"
    assert c.process.returncode is not None
    with pytest.raises(ProcessLookupError):  # reaped, not left a zombie
        os.kill(pid, 0)


def test_container_start_close_explicit():
    """start()/close() work without the with-statement."""
    c = isolate.Container(["sh", "-c", "exit 4"])
    c.start()
    try:
        assert c.wait(timeout=RUN_TIMEOUT) == 4
    finally:
        c.close()
