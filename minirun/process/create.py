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

from minirun import cgroups, hooks
from minirun.cgroups.base import Manager
from minirun.cgroups.resources import Resources, device_rules_for
from minirun.linux import userns
from minirun.process import init
from minirun.process.sync import Channel
from minirun.spec.model import Config
from minirun.state import State, Status, Store, now_rfc3339, process_start_time

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

    from minirun.spec.seccomp import Seccomp


class CreateOptions:
    __slots__ = ("console_fd", "console_socket", "no_pivot", "pid_file", "preserve_fds")

    def __init__(self, pid_file: str = "", no_pivot: bool = False, console_socket: str = "",
                 preserve_fds: int = 0, console_fd: int = -1) -> None:
        self.pid_file = pid_file
        self.no_pivot = no_pivot
        self.console_socket = console_socket  # with process.terminal: where the pty master goes
        self.preserve_fds = preserve_fds
        self.console_fd = console_fd  # or a socket fd of the caller's (foreground run), left open


def create(store: Store, container_id: str, config: Config, opts: CreateOptions) -> State:
    from minirun.linux import lsm

    lsm.check_host(config.extras)  # a host check: before anything exists that would need undoing
    console_fd = opts.console_fd
    if config.process.terminal and opts.console_socket:
        from minirun.linux.tty import connect_console_socket

        console_fd = connect_console_socket(opts.console_socket)  # before anything exists to undo
    try:
        return _create(store, container_id, config, opts, console_fd)
    finally:
        if console_fd >= 0 and console_fd != opts.console_fd:
            os.close(console_fd)  # the init has its own copy


def _create(store: Store, container_id: str, config: Config, opts: CreateOptions, console_fd: int) -> State:
    state_dir = store.claim(container_id)
    stage1_pid = init_pid = 0
    chan: Channel | None = None
    manager: Manager | None = None
    bind_trees: dict[int, int] = {}
    try:
        fifo_path = os.path.join(state_dir, "exec.fifo")
        old_umask = os.umask(0)
        try:
            os.mkfifo(fifo_path, 0o622)  # the init opens it for writing after switching user
        finally:
            os.umask(old_umask)
        fifo_fd = os.open(fifo_path, os.O_PATH | os.O_CLOEXEC)
        if os.environ.get("NOTIFY_SOCKET"):
            from minirun import notify

            notify.prepare(config, state_dir)  # sd_notify is relayed through the state directory
        bind_trees = userns.prepare_bind_trees(config)  # on the host: see linux/userns.py
        # Orphans of the first child come back to us, so a failed create can reap its init.
        prctl.set_child_subreaper(True)
        chan, child_chan = Channel.pair()
        stage1_pid = os.fork()
        if stage1_pid == 0:
            chan.close()
            init.stage1(child_chan, init.Plan(config, fifo_fd, opts.no_pivot, bind_trees,
                                                   console_fd=console_fd, preserve_fds=opts.preserve_fds))
        child_chan.close()
        os.close(fifo_fd)
        if config.extras.affinity_initial:  # the spec's "before the transition to the container's cgroup"
            from minirun.linux import sched

            sched.set_affinity(config.extras.affinity_initial, "process.execCPUAffinity.initial", stage1_pid)
        _close_all(bind_trees)

        if userns.needs_new(config.linux):
            chan.expect("userns")
            userns.write_maps(stage1_pid, config.linux)
            chan.send("mapped")
        init_pid = int(chan.expect("init")["pid"])
        if config.extras.net_devices:  # the init's network namespace exists; it waits for our "go"
            from minirun.linux import netdevices

            netdevices.move_in(init_pid, config.extras.net_devices, state_dir)
        os.waitpid(stage1_pid, 0)
        stage1_pid = 0
        chan.send("go")
        # Into the cgroup while the init makes its first mounts: the move waits for an RCU grace period,
        # and the init needs to be there only from its cgroup namespace on (init._enter_cgroup).
        manager = cgroups.manager_for(container_id, config.linux.cgroups_path)
        manager.apply(init_pid)
        manager.set(config.linux.resources or Resources(), extra_device_rules=device_rules_for(config.linux.devices))
        chan.send("cgroup")
        state = State(
            id=container_id, bundle=config.bundle, rootfs=config.root_path, pid=init_pid,
            pid_start=process_start_time(init_pid) or 0, created=now_rfc3339(), owner=_owner(),
            annotations=config.annotations, config=config.raw, cgroup=manager.to_state(),
        )
        chan.expect("hooks")  # the init's mounts are made; it waits before pivot_root
        hook_state = hooks.hook_state(state.oci(Status.CREATING), Status.CREATING, init_pid)
        hooks.run_hooks(config.hooks, ("prestart", "createRuntime"), hook_state)
        chan.send("go", state=hook_state)
        if config.linux.seccomp is not None and config.linux.seccomp.uses_notify():
            _pass_seccomp_fd(chan, config.linux.seccomp, {**state.oci(Status.CREATING), "pid": init_pid})
        chan.expect("created")

        store.save(state)
        if opts.pid_file:
            write_pid_file(opts.pid_file, init_pid)
        return state
    except BaseException:
        if config.extras.net_devices:  # while the namespace lives: virtual devices die with it
            from minirun.linux import netdevices

            with contextlib.suppress(Exception):
                netdevices.move_back(config.extras.net_devices, state_dir)
        _undo(stage1_pid, init_pid)
        if manager is not None:
            with contextlib.suppress(Exception):
                manager.destroy()
        store.remove(container_id)
        raise
    finally:
        _close_all(bind_trees)
        if chan is not None:
            chan.close()


def _close_all(fds: dict[int, int]) -> None:
    for fd in fds.values():
        os.close(fd)
    fds.clear()


def _pass_seccomp_fd(chan: Channel, sc: Seccomp, state: dict[str, Any]) -> None:
    """The init sends its notify fd right after loading the filter; listenerPath is a host path, out
    of the init's reach after pivot_root, so the runtime connects to it and sends the fd on."""
    from minirun.errors import MinirunError
    from minirun.linux import seccomp

    _, fds = chan.expect_fds("seccomp")
    try:
        if len(fds) != 1:
            raise MinirunError(f"container init: expected one seccomp notify fd, got {len(fds)}")
        seccomp.send_to_listener(sc, fds[0], int(state["pid"]), state)
    finally:
        for fd in fds:
            os.close(fd)  # the listener has its own copy now


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
