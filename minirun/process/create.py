"""The parent side of container creation: state directory, exec fifo, the two forks, the handshake.

On any failure everything made so far is undone before the error propagates: the processes are
killed and reaped, and the state directory is removed.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal

import prctl

from minirun import cgroups
from minirun.cgroups.base import Manager
from minirun.cgroups.resources import Resources, device_rules_for
from minirun.process import init
from minirun.process.sync import Channel
from minirun.spec.model import Config
from minirun.state import State, Store, now_rfc3339, process_start_time


class CreateOptions:
    __slots__ = ("no_pivot", "pid_file")

    def __init__(self, pid_file: str = "", no_pivot: bool = False) -> None:
        self.pid_file = pid_file
        self.no_pivot = no_pivot


def create(store: Store, container_id: str, config: Config, opts: CreateOptions) -> State:
    state_dir = store.claim(container_id)
    stage1_pid = init_pid = 0
    chan: Channel | None = None
    manager: Manager | None = None
    try:
        fifo_path = os.path.join(state_dir, "exec.fifo")
        old_umask = os.umask(0)
        try:
            os.mkfifo(fifo_path, 0o622)  # the init opens it for writing after switching user
        finally:
            os.umask(old_umask)
        fifo_fd = os.open(fifo_path, os.O_PATH | os.O_CLOEXEC)
        # Orphans of the first child come back to us, so a failed create can reap its init.
        prctl.set_child_subreaper(True)
        chan, child_chan = Channel.pair()
        stage1_pid = os.fork()
        if stage1_pid == 0:
            chan.close()
            init.stage1(child_chan, init.Plan(config, fifo_fd, opts.no_pivot))
        child_chan.close()
        os.close(fifo_fd)

        # Into the cgroup before the child unshares: its cgroup namespace is rooted there, and the
        # init is born inside its limits.
        manager = cgroups.manager_for(container_id, config.linux.cgroups_path)
        manager.apply(stage1_pid)
        manager.set(config.linux.resources or Resources(), extra_device_rules=device_rules_for(config.linux.devices))
        chan.send("go")
        init_pid = int(chan.expect("init")["pid"])
        os.waitpid(stage1_pid, 0)
        stage1_pid = 0
        chan.send("go")
        chan.expect("created")

        state = State(
            id=container_id, bundle=config.bundle, rootfs=config.root_path, pid=init_pid,
            pid_start=process_start_time(init_pid) or 0, created=now_rfc3339(), owner=_owner(),
            annotations=config.annotations, config=config.raw, cgroup=manager.to_state(),
        )
        store.save(state)
        if opts.pid_file:
            write_pid_file(opts.pid_file, init_pid)
        return state
    except BaseException:
        _undo(stage1_pid, init_pid)
        if manager is not None:
            with contextlib.suppress(Exception):
                manager.destroy()
        store.remove(container_id)
        raise
    finally:
        if chan is not None:
            chan.close()


def _undo(stage1_pid: int, init_pid: int) -> None:
    for pid in (init_pid, stage1_pid):
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for pid in (stage1_pid, init_pid):
        if pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def write_pid_file(path: str, pid: int) -> None:
    """Atomically, as runc does: a reader never sees an empty or partial pid file."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.replace(tmp, path)


def _owner() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
