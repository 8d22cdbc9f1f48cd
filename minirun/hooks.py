"""Running OCI hooks: each is spawned with exactly its args and env, the container's state JSON on
stdin, its output captured, and killed with its process group when its timeout passes.

Used both by the runtime (prestart, createRuntime, poststart, poststop) and by the container's init
(createContainer before pivot_root, startContainer after `start`), so everything here is imported
before pivot_root and needs nothing from the host filesystem afterwards.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import time

from minirun.errors import MinirunError

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

    from minirun.spec.hooks import Hook, Hooks

OUTPUT_LIMIT = 65536  # bytes of each stream kept (the tail): enough for the last line of an error
# Python ignores these; an ignored disposition survives exec, so a hook would inherit it.
_PYTHON_IGNORED = (signal.SIGPIPE, signal.SIGXFSZ)


class HookFailed(MinirunError):
    """A hook that exited non-zero, was killed, timed out or could not be executed."""


def run_hooks(hooks: Hooks | None, names: tuple[str, ...], state: dict[str, Any], umask: int | None = None) -> None:
    """Run the hooks of each list in `names`, in order; the first failure raises HookFailed."""
    if hooks is None:
        return
    data = json.dumps(state).encode()
    for name in names:
        for hook in hooks.of(name):
            run_hook(hook, data, umask)


def run_hooks_warning(hooks: Hooks | None, name: str, state: dict[str, Any]) -> None:
    """poststart and poststop: a failure is a warning and the remaining hooks still run."""
    if hooks is None:
        return
    from minirun.log import logger

    data = json.dumps(state).encode()
    for hook in hooks.of(name):
        try:
            run_hook(hook, data)
        except HookFailed as e:
            logger.warning(str(e))


def run_hook(hook: Hook, stdin: bytes, umask: int | None = None) -> tuple[bytes, bytes]:
    """Run one hook to its end; its (stdout, stderr). Raises HookFailed naming the hook."""
    where = f"{hook.field} ({hook.path})"
    pid, fds = _spawn(hook, where, umask)
    try:
        out, err, timed_out = _communicate(pid, fds, stdin, hook.timeout)
    except BaseException:
        _kill_group(pid)
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(fds[1])
        os.close(fds[2])
    if timed_out:
        _kill_group(pid)
    _, wstatus = os.waitpid(pid, 0)
    if timed_out:
        seconds = f"{hook.timeout} second" + ("" if hook.timeout == 1 else "s")
        raise HookFailed(f"{where}: timed out after {seconds} (killed){_last_line(err)}")
    code = os.waitstatus_to_exitcode(wstatus)
    if code > 0:
        raise HookFailed(f"{where}: exited with status {code}{_last_line(err)}")
    if code < 0:
        raise HookFailed(f"{where}: killed by {signal.Signals(-code).name}{_last_line(err)}")
    return out, err


def _spawn(hook: Hook, where: str, umask: int | None) -> tuple[int, list[int]]:
    """Start the hook in its own process group (a timeout kills what it started too)."""
    stdin_r, stdin_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    env = {key: value for key, _, value in (e.partition("=") for e in hook.env)}
    old_umask = os.umask(umask) if umask is not None else None
    try:
        pid = os.posix_spawn(
            hook.path, hook.args, env,
            file_actions=[(os.POSIX_SPAWN_DUP2, stdin_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1),
                          (os.POSIX_SPAWN_DUP2, err_w, 2)],
            setpgroup=0, setsigmask=(), setsigdef=_PYTHON_IGNORED,
        )
    except OSError as e:
        for fd in (stdin_r, stdin_w, out_r, out_w, err_r, err_w):
            os.close(fd)
        raise HookFailed(f"{where}: cannot execute: {os.strerror(e.errno or errno.EIO).lower()}") from None
    finally:
        if old_umask is not None:
            os.umask(old_umask)
    for fd in (stdin_r, out_w, err_w):
        os.close(fd)
    return pid, [stdin_w, out_r, err_r]


def _communicate(pid: int, fds: list[int], stdin: bytes, timeout: int | None) -> tuple[bytes, bytes, bool]:
    """Feed stdin, collect stdout and stderr until the hook exits; True when the timeout passed first.

    The hook's exit is watched through a pidfd, not only the end of its output: a daemon it left
    behind may hold the pipes open for ever. Closes stdin_w (fds[0]) once all is written.
    """
    stdin_w, out_r, err_r = fds
    pidfd = os.pidfd_open(pid)
    deadline = None if timeout is None else time.monotonic() + timeout
    chunks: dict[int, bytearray] = {out_r: bytearray(), err_r: bytearray()}
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    for fd in (out_r, err_r):
        os.set_blocking(fd, False)
        poller.register(fd, select.POLLIN)
    pending = memoryview(stdin)
    os.set_blocking(stdin_w, False)
    poller.register(stdin_w, select.POLLOUT)
    exited = False
    try:
        while not exited:
            wait_ms = None
            if deadline is not None:
                wait_ms = int((deadline - time.monotonic()) * 1000)
                if wait_ms <= 0:
                    return bytes(chunks[out_r]), bytes(chunks[err_r]), True
            for fd, ev in poller.poll(wait_ms):
                if fd == pidfd:
                    exited = True
                elif fd == stdin_w:
                    pending = _feed(stdin_w, pending, ev)
                    if not pending:
                        poller.unregister(stdin_w)
                        os.close(stdin_w)  # the hook reads end of file
                        stdin_w = -1
                elif not _drain(fd, chunks[fd]):
                    poller.unregister(fd)
        for fd in (out_r, err_r):  # whatever it wrote just before exiting
            _drain(fd, chunks[fd])
    finally:
        os.close(pidfd)
        if stdin_w != -1:
            os.close(stdin_w)
    return bytes(chunks[out_r]), bytes(chunks[err_r]), False


def _feed(fd: int, pending: memoryview, events: int) -> memoryview:
    if events & (select.POLLERR | select.POLLHUP):
        return pending[:0]  # the hook closed its stdin without reading it all: that is its business
    try:
        return pending[os.write(fd, pending):]
    except BlockingIOError:
        return pending
    except BrokenPipeError:
        return pending[:0]


def _drain(fd: int, into: bytearray) -> bool:
    """Read what is there; False at end of file."""
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return True
        if not data:
            return False
        into += data
        del into[:-OUTPUT_LIMIT]


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        # startContainer hooks run as the container's user; the group may hold a setuid child.
        os.kill(pid, signal.SIGKILL)


def _last_line(err: bytes) -> str:
    lines = err.decode(errors="replace").strip().splitlines()
    return f": {lines[-1].strip()}" if lines else ""


def hook_state(oci_state: dict[str, Any], status: str, pid: int) -> dict[str, Any]:
    """The state a hook reads on stdin: what `minirun state` prints, with the status of the moment.

    The pid is given even while `creating`: prestart hooks need it to find the namespaces.
    """
    return {**oci_state, "status": status, "pid": pid}
