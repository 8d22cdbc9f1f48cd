"""Pseudo-terminals for the container's process, and handing the master to whoever asked for it.

The pty comes from the container's own devpts instance (`/dev/pts/ptmx` as the container sees it), so
the process's `tty` names one of the container's /dev/pts entries and the host's devpts is never
touched. The master goes out over a unix socket with SCM_RIGHTS, the message bytes being the pty's
name, which is what conmon and containerd's shim expect on a --console-socket; for a foreground
`run`/`exec -t` the socket is one end of a socketpair held by minirun itself.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import termios

from minirun.errors import MinirunError, kernel_error
from minirun.linux.syscalls import const

PTMX = "/dev/pts/ptmx"
_WINSIZE = "HHHH"  # struct winsize: rows, columns, x pixels, y pixels


def connect_console_socket(path: str) -> int:
    """A connected fd to the --console-socket listener (a host path: only the runtime opens it)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        raise MinirunError(f"--console-socket `{path}`: {(e.strerror or str(e)).lower()}") from None
    return sock.detach()


def open_pty() -> tuple[int, int, str]:
    """(master, slave, name) of a new pty of the devpts mounted at /dev/pts."""
    try:
        master = os.open(PTMX, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise kernel_error(f"open {PTMX} (the container's devpts, for process.terminal)", e) from None
    try:
        fcntl.ioctl(master, const("TIOCSPTLCK"), struct.pack("i", 0))  # unlockpt
        number = struct.unpack("I", fcntl.ioctl(master, const("TIOCGPTN"), bytes(4)))[0]
        name = f"/dev/pts/{number}"
        try:
            # By the master's own devpts rather than by path: the path could name another instance.
            slave = fcntl.ioctl(master, const("TIOCGPTPEER"), os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError:  # kernels before 4.13
            slave = os.open(name, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        os.close(master)
        raise kernel_error(f"set up a pty on {PTMX}", e) from None
    return master, slave, name


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack(_WINSIZE, rows, cols, 0, 0))


def get_size(fd: int) -> tuple[int, int]:
    rows, cols, _, _ = struct.unpack(_WINSIZE, fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8)))
    return rows, cols


def setup_terminal(console_fd: int, size: tuple[int, int] | None, uid: int) -> None:
    """Make a pty the calling process's controlling terminal and stdio; send its master on console_fd.

    Called by the container's init after pivot_root and by exec's entering process after its chroot,
    both still privileged. The slave is handed to `uid` so that a process that switches user can
    still reopen /dev/tty, as its stdio fds already work."""
    master, slave, name = open_pty()
    # Above the stdio fds even if minirun was started with some closed: dup2 below must not hit them.
    master, slave = _above_stdio(master), _above_stdio(slave)
    try:
        if size is not None:
            set_size(master, *size)
        os.fchown(slave, uid, -1)
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for std in (0, 1, 2):
            os.dup2(slave, std)
        sock = socket.socket(fileno=console_fd)
        try:
            socket.send_fds(sock, [name.encode()], [master])
        finally:
            sock.close()
    except OSError as e:
        raise kernel_error("set up process.terminal", e) from None
    finally:
        os.close(master)
        os.close(slave)


def _above_stdio(fd: int) -> int:
    if fd > 2:
        return fd
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(fd)
    return new


def receive_master(sock_fd: int) -> int:
    """The pty master sent by setup_terminal on the other end of our socketpair."""
    sock = socket.socket(fileno=sock_fd)
    try:
        _, fds, _, _ = socket.recv_fds(sock, 4096, 1, socket.MSG_CMSG_CLOEXEC)
    finally:
        sock.close()
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise MinirunError("process.terminal: the container did not send its terminal")
    return fds[0]
