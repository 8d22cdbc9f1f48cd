"""Foreground `run`: the runtime stays as the container's parent, forwards signals, returns its status."""

from __future__ import annotations

import contextlib
import os
import signal

from minirun import container
from minirun.process.create import CreateOptions, create
from minirun.spec.model import Config
from minirun.state import Store

# Every catchable signal is forwarded; SIGCHLD is ours (it tells us to reap).
FORWARDED = {s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD)}


def run(store: Store, container_id: str, config: Config, opts: CreateOptions, detach: bool, keep: bool) -> int:
    if detach:
        create(store, container_id, config, opts)
        _start_or_delete(store, container_id)
        return 0
    # Blocked before forking so that none is lost; the children unblock them before exec.
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED | {signal.SIGCHLD})
    if config.process.terminal:
        return _run_with_terminal(store, container_id, config, opts, keep)
    state = create(store, container_id, config, opts)
    _start_or_delete(store, container_id)
    status = wait_forwarding(state.pid)
    if not keep:
        container.delete(store, container_id, force=True)
    return status


def _run_with_terminal(store: Store, container_id: str, config: Config, opts: CreateOptions, keep: bool) -> int:
    """The init sends its pty master over a socketpair of ours (instead of a --console-socket)."""
    import socket

    from minirun.linux.tty import receive_master
    from minirun.process.console import wait_with_terminal

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        opts.console_fd = theirs.fileno()
        state = create(store, container_id, config, opts)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    try:
        master = receive_master(ours.detach())
    except BaseException:
        with contextlib.suppress(Exception):
            container.delete(store, container_id, force=True)
        raise
    try:
        _start_or_delete(store, container_id)
    except BaseException:
        os.close(master)
        raise
    status = wait_with_terminal(state.pid, master)
    if not keep:
        container.delete(store, container_id, force=True)
    return status


def _start_or_delete(store: Store, container_id: str) -> None:
    try:
        container.start(store, container_id)
    except BaseException:
        with contextlib.suppress(Exception):
            container.delete(store, container_id, force=True)
        raise


def wait_forwarding(pid: int) -> int:
    """Forward signals to `pid` until it exits; reap every orphan that reaches us as subreaper."""
    waited = FORWARDED | {signal.SIGCHLD}
    while True:
        status = reap(pid)
        if status is not None:
            return status
        info = signal.sigwaitinfo(waited)
        if info.si_signo != signal.SIGCHLD:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, info.si_signo)


def reap(pid: int) -> int | None:
    """Reap every exited child; the exit status of `pid` (128+N for signal N) if it was among them."""
    result = None
    while True:
        try:
            child, wstatus = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return result
        if child == 0:
            return result
        if child == pid:
            result = os.waitstatus_to_exitcode(wstatus)
            if result < 0:
                result = 128 - result
