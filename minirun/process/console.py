"""Foreground terminal: minirun holds the pty master and joins it to its own stdin and stdout.

While the container runs, a terminal on our stdin is in raw mode, so that keys (Ctrl-C included) reach
the container's line discipline untouched; its mode is restored on every way out (the finally below:
the container exits or is killed, or an error). Signals are handled as in foreground.wait_forwarding —
every catchable one goes to the container's process — except SIGWINCH, which copies our terminal's
size to the pty (the kernel then signals the container's foreground process group itself).

Signals are waited for in the same select() as the fds: handlers that do nothing plus
signal.set_wakeup_fd, whose pipe carries each signal's number.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import termios
import tty as stdlib_tty

from minirun.linux import tty
from minirun.process.foreground import FORWARDED, reap

_CHUNK = 65536
_DRAIN_IDLE = 0.2  # after the process exits: how long to wait for output still in the pty


def wait_with_terminal(pid: int, master: int) -> int:
    """Proxy stdin → master → stdout until `pid` exits; its exit status (128+N for signal N).
    Closes `master`. The caller has blocked FORWARDED and SIGCHLD; they are blocked again on return."""
    waited = FORWARDED | {signal.SIGCHLD}
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    handlers: dict[signal.Signals, object] = {}
    old_wakeup = -1
    saved = termios.tcgetattr(0) if os.isatty(0) else None
    try:
        os.set_blocking(master, False)  # ours alone; stdin and stdout are shared with our parent: untouched
        if saved is not None:
            _copy_size(master)
            stdlib_tty.setraw(0, termios.TCSANOW)
        for signum in waited:
            handlers[signum] = signal.signal(signum, _ignore)
        old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, waited)
        return _loop(pid, master, wake_r, saved is not None)
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, waited)
        signal.set_wakeup_fd(old_wakeup)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        if saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(0, termios.TCSADRAIN, saved)
        for fd in (wake_r, wake_w, master):
            os.close(fd)


def _ignore(signum: int, frame: object) -> None:
    """The number arrives through the wakeup pipe; the handler only keeps the default action away."""


def _loop(pid: int, master: int, wake_r: int, stdin_is_tty: bool) -> int:
    to_master = bytearray()
    stdin_open, master_open = True, True
    while True:
        status = reap(pid)
        if status is not None:
            if master_open:
                _drain(master)
            return status
        readers = [wake_r] + ([master] if master_open else []) + ([0] if stdin_open and not to_master else [])
        writers = [master] if to_master and master_open else []
        readable, writable, _ = select.select(readers, writers, [])
        if wake_r in readable:
            for signum in os.read(wake_r, 1024):
                if signum == signal.SIGWINCH and stdin_is_tty:
                    _copy_size(master)
                elif signum != signal.SIGCHLD:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signum)
        if master in readable:
            master_open = _pump(master)
        if 0 in readable:
            try:
                data = os.read(0, _CHUNK)
            except OSError:
                data = b""
            if data:
                to_master += data
            else:
                stdin_open = False
        if master in writable:
            try:
                del to_master[:os.write(master, to_master)]
            except BlockingIOError:
                pass
            except OSError:
                to_master.clear()
                master_open = False


def _pump(master: int) -> bool:
    """Copy what the container wrote to our stdout; False once every slave fd is closed."""
    try:
        data = os.read(master, _CHUNK)
    except BlockingIOError:
        return True
    except OSError as e:
        if e.errno == errno.EIO:  # the last slave fd is gone
            return False
        raise
    if not data:
        return False
    _write_all(1, data)
    return True


def _drain(master: int) -> None:
    """Output still in the pty when the process exited (the tty layer delivers it asynchronously)."""
    while select.select([master], [], [], _DRAIN_IDLE)[0]:
        if not _pump(master):
            return


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except OSError:
            return  # nobody reads our stdout any more; the container keeps running regardless


def _copy_size(master: int) -> None:
    with contextlib.suppress(OSError):
        tty.set_size(master, *tty.get_size(0))
