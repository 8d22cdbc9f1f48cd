"""NOTIFY_SOCKET: sd_notify from the container reaches the socket minirun was given, as with runc."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Runtime


@pytest.fixture
def listener() -> Iterator[tuple[socket.socket, str]]:
    """The host's NOTIFY_SOCKET: a datagram socket in a private temp dir (what systemd would hold)."""
    top = Path(tempfile.mkdtemp(prefix="minirun-test-notify-"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(top / "notify.sock"))
    sock.settimeout(10)
    try:
        yield sock, str(top / "notify.sock")
    finally:
        sock.close()
        (top / "notify.sock").unlink()
        top.rmdir()


def test_ready_is_relayed_with_the_container_pid_and_start_waits_for_it(
        runtime: Runtime, listener: tuple[socket.socket, str], host_unchanged: None) -> None:
    sock, path = listener
    env = {**os.environ, "NOTIFY_SOCKET": path}
    config = runtime.shell_config("echo $NOTIFY_SOCKET > /dev/shm/env; sleep 0.3; "
                                  "/usr/bin/probe notify STATUS=warming; /usr/bin/probe notify READY=1; "
                                  "exec /usr/bin/probe hold 60")
    bundle = runtime.bundle(config)
    created = runtime.detached("create", "--bundle", str(bundle), "notified", env=env)
    assert created.returncode == 0, created.stderr
    pid = int(runtime.state("notified")["pid"])
    started = runtime.detached("start", "notified", env=env)
    assert started.returncode == 0, started.stderr
    # `start` returned only after READY=1 was relayed: both messages are already queued.
    sock.settimeout(0)
    first, second = sock.recv(4096).decode().splitlines(), sock.recv(4096).decode().splitlines()
    assert first == ["STATUS=warming", f"MAINPID={pid}"] and second == ["READY=1", f"MAINPID={pid}"]
    assert Path(f"/proc/{pid}/root/dev/shm/env").read_text().strip() == "/run/notify/notify.sock"
    assert runtime.cmd("delete", "--force", "notified").returncode == 0


def test_start_returns_when_the_container_exits_without_ready(
        runtime: Runtime, listener: tuple[socket.socket, str], host_unchanged: None) -> None:
    _, path = listener
    env = {**os.environ, "NOTIFY_SOCKET": path}
    bundle = runtime.bundle(runtime.shell_config("sleep 0.2"))
    assert runtime.detached("create", "--bundle", str(bundle), "silent", env=env).returncode == 0
    assert runtime.detached("start", "silent", env=env).returncode == 0
    runtime.wait_status("silent", "stopped")
    assert runtime.cmd("delete", "silent").returncode == 0


def test_without_notify_socket_nothing_is_set_up(runtime: Runtime, host_unchanged: None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    facts = runtime.run(runtime.config)
    assert facts.returncode == 0
    assert not any(e.startswith("NOTIFY_SOCKET=") for e in facts.json()["env"])
    assert runtime.cmd("list", "-q", env=env).stdout == ""
