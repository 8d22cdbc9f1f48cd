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
    state = create(store, container_id, config, opts)
    _start_or_delete(store, container_id)
    status = wait_forwarding(state.pid)
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
        status = _reap(pid)
        if status is not None:
            return status
        info = signal.sigwaitinfo(waited)
        if info.si_signo != signal.SIGCHLD:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, info.si_signo)


def _reap(pid: int) -> int | None:
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
