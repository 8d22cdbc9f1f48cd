"""Foreground `run` and signals: forwarding to the container, 128+N for a container killed by signal N,
the container deciding what SIGINT/SIGTERM mean, and deletion (or not, with --keep) once it exits.

The container's shell reports what it received through a host directory bind-mounted at /mnt.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MINIRUN, Runtime

WAIT_SECONDS = 20.0

# pid 1 of the container: logs every trapped signal, says it is ready, runs until /mnt/stop appears.
TRAPPING_SHELL = """
for sig in {signals}; do trap "echo $sig >> /mnt/log" "$sig"; done
echo ready > /mnt/ready
while [ ! -e /mnt/stop ]; do sleep 0.05; done
exit {status}
"""


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    """Poll `predicate` until it holds; fail (not hang) if it never does."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A host directory the container sees read-write at /mnt."""
    path = Path(tempfile.mkdtemp(prefix="minirun-test-signals-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def shell_config(runtime: Runtime, script: str, shared: Path, pid_namespace: bool = True) -> dict[str, Any]:
    cfg = copy.deepcopy(runtime.config)
    cfg["process"]["args"] = ["/bin/sh", "-c", script]
    cfg["mounts"].append({"destination": "/mnt", "type": "bind", "source": str(shared),
                          "options": ["rbind", "rw"]})
    if not pid_namespace:
        cfg["linux"]["namespaces"] = [ns for ns in cfg["linux"]["namespaces"] if ns["type"] != "pid"]
    return cfg


def read_text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


class Foreground:
    """`minirun run` in the foreground, as a child of the test that it can signal by pid."""

    def __init__(self, runtime: Runtime, config: dict[str, Any], cid: str, *extra: str) -> None:
        self.runtime = runtime
        self.cid = cid
        bundle = runtime.bundle(config)
        self.proc = subprocess.Popen(
            [str(MINIRUN), "--root", str(runtime.root), "run", "--bundle", str(bundle), *extra, cid],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stdout = self.stderr = ""

    def signal(self, sig: int) -> None:
        assert self.proc.poll() is None, "minirun run exited early"
        os.kill(self.proc.pid, sig)

    def wait(self) -> int:
        self.stdout, self.stderr = self.proc.communicate(timeout=WAIT_SECONDS)
        return self.proc.returncode

    def close(self) -> None:
        """After a failed test: stop the container, then our minirun, and reap it."""
        if self.proc.poll() is None:
            self.runtime.cmd("delete", "--force", self.cid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.communicate(timeout=WAIT_SECONDS)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@contextlib.contextmanager
def foreground(runtime: Runtime, config: dict[str, Any], cid: str, *extra: str) -> Iterator[Foreground]:
    run = Foreground(runtime, config, cid, *extra)
    try:
        yield run
    finally:
        run.close()




# --- forwarding --------------------------------------------------------------------------------------


def test_run_forwards_signals_to_the_container(runtime: Runtime, host_unchanged: None, shared_dir: Path) -> None:
    script = TRAPPING_SHELL.format(signals="TERM HUP USR1", status=7)
    log = shared_dir / "log"
    with foreground(runtime, shell_config(runtime, script, shared_dir), "minirun-test-forward") as run:
        wait_for(lambda: (shared_dir / "ready").exists(), "the container to set its traps")
        expected = ""
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1):
            run.signal(sig)
            expected += sig.name.removeprefix("SIG") + "\n"
            wait_for(lambda: read_text(log) == expected, f"the container to log {sig.name}")  # noqa: B023
        (shared_dir / "stop").touch()
        assert run.wait() == 7, run.stderr
    assert read_text(log) == "TERM\nHUP\nUSR1\n"


def test_sigint_and_sigterm_to_run_leave_a_trapping_container_running(
        runtime: Runtime, host_unchanged: None, shared_dir: Path) -> None:
    script = TRAPPING_SHELL.format(signals="INT TERM", status=0)
    log = shared_dir / "log"
    cid = "minirun-test-int-term"
    with foreground(runtime, shell_config(runtime, script, shared_dir), cid) as run:
        wait_for(lambda: (shared_dir / "ready").exists(), "the container to set its traps")
        run.signal(signal.SIGINT)
        wait_for(lambda: read_text(log) == "INT\n", "the container to log INT")
        run.signal(signal.SIGTERM)
        wait_for(lambda: read_text(log) == "INT\nTERM\n", "the container to log TERM")
        # The container chose to keep running, and so does its runtime.
        assert run.proc.poll() is None
        assert runtime.status(cid) == "running"
        (shared_dir / "stop").touch()
        assert run.wait() == 0, run.stderr
    assert run.stderr == ""


def test_container_that_lets_sigterm_kill_it_makes_run_return_143(
        runtime: Runtime, host_unchanged: None, shared_dir: Path) -> None:
    # Without a pid namespace the container's init is an ordinary process: SIGTERM's default action applies.
    cfg = shell_config(runtime, "echo ready > /mnt/ready; exec sleep 300", shared_dir, pid_namespace=False)
    with foreground(runtime, cfg, "minirun-test-term") as run:
        wait_for(lambda: (shared_dir / "ready").exists(), "the container to start")
        run.signal(signal.SIGTERM)
        assert run.wait() == 128 + signal.SIGTERM, run.stderr


# --- exit status of a killed container ---------------------------------------------------------------


@pytest.mark.parametrize("signal_arg", ["KILL", "9", "SIGKILL"])
def test_container_killed_by_a_signal_makes_run_return_128_plus_n(
        runtime: Runtime, host_unchanged: None, shared_dir: Path, signal_arg: str) -> None:
    cid = "minirun-test-killed"
    cfg = shell_config(runtime, "echo ready > /mnt/ready; sleep 300", shared_dir)
    with foreground(runtime, cfg, cid) as run:
        wait_for(lambda: (shared_dir / "ready").exists(), "the container to start")
        assert runtime.status(cid) == "running"
        killed = runtime.cmd("kill", cid, signal_arg)
        assert killed.returncode == 0, killed.stderr
        assert run.wait() == 128 + signal.SIGKILL, run.stderr
    assert runtime.cmd("state", cid).returncode != 0


# --- deletion after run ------------------------------------------------------------------------------


def test_container_is_deleted_when_run_returns(runtime: Runtime, host_unchanged: None) -> None:
    cid = "minirun-test-gone"
    cfg = copy.deepcopy(runtime.config)
    cfg["process"]["args"] = ["/bin/sh", "-c", "echo bye; exit 5"]
    result = runtime.run(cfg, cid=cid)
    assert (result.returncode, result.stdout) == (5, "bye\n"), result.stderr
    state = runtime.cmd("state", cid)
    assert state.returncode != 0
    assert "does not exist" in state.stderr
    assert not (runtime.root / cid).exists()


def test_keep_leaves_a_stopped_container_until_delete(runtime: Runtime, host_unchanged: None) -> None:
    cid = "minirun-test-kept"
    cfg = copy.deepcopy(runtime.config)
    cfg["process"]["args"] = ["/bin/sh", "-c", "exit 5"]
    result = runtime.run(cfg, "--keep", cid=cid)
    assert result.returncode == 5, result.stderr
    state = runtime.state(cid)
    assert (state["id"], state["status"], state["pid"]) == (cid, "stopped", 0)
    deleted = runtime.cmd("delete", cid)
    assert deleted.returncode == 0, deleted.stderr
    assert runtime.cmd("state", cid).returncode != 0
    assert not (runtime.root / cid).exists()
