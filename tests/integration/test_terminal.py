"""Terminals (process.terminal, --console-socket, run/exec in the foreground) and --preserve-fds."""

from __future__ import annotations

import copy
import fcntl
import json
import os
import pty
import select
import signal
import socket
import struct
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minirun.linux.syscalls import const
from tests.conftest import MINIRUN, Runtime, alive, poll


def cid(name: str) -> str:
    """A container id of this test run: ids name cgroups, which runs in other state roots share."""
    return f"minirun-{name}-{os.getpid()}"


BOX = cid("box")


def terminal_config(runtime: Runtime, args: list[str], size: tuple[int, int] | None = None) -> dict[str, Any]:
    config = copy.deepcopy(runtime.config)
    config["process"]["args"] = args
    config["process"]["terminal"] = True
    if size is not None:
        config["process"]["consoleSize"] = {"height": size[0], "width": size[1]}
    return config


def read_until(fd: int, want: bytes, timeout: float = 10) -> bytes:
    """What `fd` (a pty master) yields until `want` appears in it; fails on timeout."""
    out = b""
    end = time.monotonic() + timeout
    while want not in out:
        left = end - time.monotonic()
        assert left > 0, f"waited for {want!r}, got {out!r}"
        if select.select([fd], [], [], left)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the other side is gone
                break
            if not chunk:
                break
            out += chunk
    assert want in out, f"waited for {want!r}, got {out!r}"
    return out


def lines(output: bytes) -> list[str]:
    return [line.strip() for line in output.decode(errors="replace").replace("\r", "").splitlines()]


@pytest.fixture
def console_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A listener like conmon's or containerd's: it accepts one connection and takes the fd it carries."""
    path = str(tmp_path / "console.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    server.settimeout(30)
    try:
        yield path, server
    finally:
        server.close()


def receive_pty(server: socket.socket) -> tuple[int, str]:
    conn, _ = server.accept()
    with conn:
        msg, fds, _, _ = socket.recv_fds(conn, 4096, 4)
    assert len(fds) == 1, fds
    return fds[0], msg.decode()


def assert_pty_master(fd: int, name: str) -> None:
    assert os.isatty(fd)
    # TIOCGPTN answers only on a master; the number is the one the message names.
    number = struct.unpack("I", fcntl.ioctl(fd, const("TIOCGPTN"), bytes(4)))[0]
    assert name == f"/dev/pts/{number}"


def host_devpts_dev() -> int:
    return os.stat("/dev/pts").st_dev


def test_create_start_sends_a_pty_of_the_container_devpts(runtime: Runtime, host_unchanged: None,
                                                        console_socket: tuple[str, socket.socket]) -> None:
    path, server = console_socket
    bundle = runtime.bundle(terminal_config(runtime, ["/bin/sh"], size=(33, 101)))
    created = runtime.detached("create", "--bundle", str(bundle), "--console-socket", path, cid("tty"))
    assert created.returncode == 0, created.stderr
    master, name = receive_pty(server)
    try:
        assert_pty_master(master, name)
        pid = int(runtime.state(cid("tty"))["pid"])
        # The init's stdio is the slave, from the container's own devpts instance, not the host's.
        stdin = os.stat(f"/proc/{pid}/fd/0")
        assert os.readlink(f"/proc/{pid}/fd/0") == name and stdin.st_dev != host_devpts_dev()
        assert runtime.cmd("start", cid("tty")).returncode == 0
        os.write(master, b"tty; stty size; echo h''i\n")
        out = lines(read_until(master, b"hi\r\n"))
        assert name in out and "33 101" in out and "hi" in out
        os.write(master, b"exit 5\n")
        runtime.wait_status(cid("tty"), "stopped")
    finally:
        os.close(master)
        runtime.cmd("delete", "--force", cid("tty"))


@pytest.fixture
def box(runtime: Runtime) -> Iterator[int]:
    """A running container without a terminal; the pid of its init."""
    config = runtime.shell_config("exec /usr/bin/probe hold 600")
    result = runtime.detached("run", "-d", "--bundle", str(runtime.bundle(config)), BOX)
    assert result.returncode == 0, result.stderr
    yield int(runtime.state(BOX)["pid"])
    runtime.cmd("delete", "--force", BOX)


def test_exec_detached_sends_a_pty(runtime: Runtime, box: int, console_socket: tuple[str, socket.socket]) -> None:
    path, server = console_socket
    result = runtime.detached("exec", "-t", "-d", "--console-socket", path, "--pid-file",
                              str(Path(path).parent / "pid"), BOX, "/bin/sh")
    assert result.returncode == 0, result.stderr
    master, name = receive_pty(server)
    try:
        assert_pty_master(master, name)
        pid = int((Path(path).parent / "pid").read_text())
        assert os.stat(f"/proc/{pid}/fd/1").st_dev == os.stat(f"/proc/{box}/root/dev/pts").st_dev
        os.write(master, b"tty; echo h''i; exit\n")
        out = lines(read_until(master, b"hi\r\n"))
        assert name in out and "hi" in out
        poll(lambda: not alive(pid), "the exec'd shell to exit")
    finally:
        os.close(master)


# A shell line that prints "resized to SIZE" once `stty size` says SIZE (read_until times out otherwise).
WAIT_FOR_SIZE = b'while [ "$(stty size)" != "%s" ]; do sleep 0.05; done; echo "resized to $(stty size)"'


class Session:
    """minirun in the foreground on a pseudo-terminal made by the test, as an interactive user has it."""

    def __init__(self, argv: list[str], size: tuple[int, int] = (24, 80)) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
        self.before = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen(argv, stdin=self.slave, stdout=self.slave, stderr=self.slave,
                                     start_new_session=True)

    def mode(self) -> list[Any]:
        return termios.tcgetattr(self.slave)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def read_until(self, want: bytes) -> list[str]:
        return lines(read_until(self.master, want))

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.proc.send_signal(signal.SIGWINCH)

    def wait(self) -> int:
        return self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def sessions() -> Iterator[list[Session]]:
    made: list[Session] = []
    yield made
    for s in made:
        s.close()


def test_foreground_run_with_a_terminal(runtime: Runtime, host_unchanged: None, sessions: list[Session]) -> None:
    bundle = runtime.bundle(terminal_config(runtime, ["/bin/sh"]))
    s = Session([str(MINIRUN), "--root", str(runtime.root), "run", "--bundle", str(bundle), cid("fg")],
                size=(20, 70))
    sessions.append(s)
    s.write(b"tty; stty size; echo rea''dy\n")
    out = s.read_until(b"ready\r\n")
    assert "20 70" in out and any(line.startswith("/dev/pts/") for line in out)
    assert s.mode() != s.before and not s.mode()[3] & termios.ICANON  # raw while the container runs
    s.resize(40, 90)
    s.write(WAIT_FOR_SIZE % b"40 90" + b"; exit 7\n")  # minirun handles the signal asynchronously
    s.read_until(b"resized to 40 90")
    assert s.wait() == 7
    assert s.mode() == s.before


def test_foreground_terminal_is_restored_when_the_container_is_killed(
        runtime: Runtime, host_unchanged: None, sessions: list[Session]) -> None:
    bundle = runtime.bundle(terminal_config(runtime, ["/bin/sh"]))
    s = Session([str(MINIRUN), "--root", str(runtime.root), "run", "--bundle", str(bundle), cid("kill")])
    sessions.append(s)
    s.write(b"echo rea''dy\n")
    s.read_until(b"ready\r\n")
    assert s.mode() != s.before
    os.kill(int(runtime.state(cid("kill"))["pid"]), signal.SIGKILL)
    assert s.wait() == 128 + signal.SIGKILL
    assert s.mode() == s.before


def test_foreground_terminal_forwards_sigterm_and_is_restored(
        runtime: Runtime, host_unchanged: None, sessions: list[Session]) -> None:
    script = "trap 'exit 42' TERM; echo ready; while :; do sleep 0.05; done"
    bundle = runtime.bundle(terminal_config(runtime, ["/bin/sh", "-c", script]))
    s = Session([str(MINIRUN), "--root", str(runtime.root), "run", "--bundle", str(bundle), cid("term")])
    sessions.append(s)
    s.read_until(b"ready")
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait() == 42
    assert s.mode() == s.before


def test_foreground_exec_with_a_terminal(runtime: Runtime, box: int, sessions: list[Session]) -> None:
    s = Session([str(MINIRUN), "--root", str(runtime.root), "exec", "-t", BOX, "/bin/sh"], size=(30, 60))
    sessions.append(s)
    s.write(b"tty; stty size; echo rea''dy\n")
    out = s.read_until(b"ready\r\n")
    assert "30 60" in out and any(line.startswith("/dev/pts/") for line in out)
    assert s.mode() != s.before
    s.resize(35, 95)
    s.write(WAIT_FOR_SIZE % b"35 95" + b"; exit 3\n")
    s.read_until(b"resized to 35 95")
    assert s.wait() == 3
    assert s.mode() == s.before
    assert runtime.status(BOX) == "running"


def test_foreground_terminal_without_a_tty_on_stdin(runtime: Runtime, host_unchanged: None) -> None:
    # stdin and stdout are pipes: no raw mode, and the process still has a terminal, minirun relaying it.
    result = runtime.run(terminal_config(runtime, ["/bin/sh", "-c", "tty; exit 4"]), cid=cid("pipe"))
    assert result.returncode == 4, result.stderr
    assert result.stdout.startswith("/dev/pts/"), result


def test_preserve_fds_on_run(runtime: Runtime, host_unchanged: None) -> None:
    config = copy.deepcopy(runtime.config)
    config["process"]["args"] = ["/usr/bin/probe", "facts"]
    bundle = runtime.bundle(config)
    proc = runtime.with_pipe_as_fd3("run", "--preserve-fds", "1", "--bundle", str(bundle), cid("fds"))
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert sorted(facts["fds"]) == ["0", "1", "2", "3"] and facts["fds"]["3"].startswith("pipe:")
    assert "LISTEN_FDS=1" in facts["env"] and "LISTEN_PID=1" in facts["env"]


def test_without_preserve_fds_no_fd_passes(runtime: Runtime, host_unchanged: None) -> None:
    config = copy.deepcopy(runtime.config)
    config["process"]["args"] = ["/usr/bin/probe", "facts"]
    bundle = runtime.bundle(config)
    r, w = os.pipe()
    try:
        proc = subprocess.run([str(MINIRUN), "--root", str(runtime.root), "run", "--bundle", str(bundle),
                               cid("nofds")], capture_output=True, text=True, timeout=30,
                              close_fds=False, preexec_fn=lambda: os.dup2(r, 3))
    finally:
        os.close(r)
        os.close(w)
    facts = json.loads(proc.stdout)
    assert sorted(facts["fds"]) == ["0", "1", "2"] and not any(e.startswith("LISTEN_") for e in facts["env"])


def test_terminal_and_console_socket_mismatches_are_refused(
        runtime: Runtime, host_unchanged: None, console_socket: tuple[str, socket.socket], box: int) -> None:
    path, _ = console_socket
    plain = runtime.bundle(runtime.shell_config("true"))
    tty = runtime.bundle(terminal_config(runtime, ["/bin/sh"]))
    cases = [
        (("create", "--bundle", str(plain), "--console-socket", path, cid("a")), "--console-socket"),
        (("create", "--bundle", str(tty), cid("b")), "process.terminal"),
        (("run", "-d", "--bundle", str(tty), cid("c")), "process.terminal"),
        (("run", "--bundle", str(tty), "--console-socket", path, cid("d")), "--console-socket"),
        (("create", "--bundle", str(tty), "--console-socket", path + ".missing", cid("e")), ".missing"),
        (("exec", "-d", "-t", BOX, "sh"), "--console-socket"),
        (("exec", "-d", "--console-socket", path, BOX, "sh"), "--console-socket"),
        (("create", "--bundle", str(plain), "--preserve-fds", "-1", cid("f")), "--preserve-fds"),
    ]
    for args, words in cases:
        result = runtime.detached(*args)
        assert result.returncode != 0 and words in result.stderr, (args, result)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    runtime.cmd("delete", "--force", BOX)
    assert not any(runtime.root.iterdir())


def test_console_size_must_be_well_formed(runtime: Runtime, host_unchanged: None) -> None:
    config = terminal_config(runtime, ["/bin/sh"])
    config["process"]["consoleSize"] = {"height": -1, "width": 80}
    result = runtime.run(config, cid=cid("size"))
    assert result.returncode != 0 and "process.consoleSize.height" in result.stderr


def only_fd_3(fd: int) -> None:
    os.dup2(fd, 3)
    os.closerange(4, 65536)


def test_preserve_fds_beyond_what_was_passed_leaks_nothing_of_minirun(runtime: Runtime,
                                                                      host_unchanged: None) -> None:
    # Only fd 3 is passed; minirun's own fds that land on 4..9 (its channel, the exec fifo, /proc/self/fd
    # of the host...) must not follow.
    config = copy.deepcopy(runtime.config)
    config["process"]["args"] = ["/usr/bin/probe", "facts"]
    bundle = runtime.bundle(config)
    r, w = os.pipe()
    try:
        proc = subprocess.run([str(MINIRUN), "--root", str(runtime.root), "run", "--preserve-fds", "7",
                               "--bundle", str(bundle), cid("gap")], capture_output=True, text=True,
                              timeout=30, close_fds=False, preexec_fn=lambda: only_fd_3(r))
    finally:
        os.close(r)
        os.close(w)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert sorted(facts["fds"]) == ["0", "1", "2", "3"], facts["fds"]
    assert "LISTEN_FDS=7" in facts["env"]
