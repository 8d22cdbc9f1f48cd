"""The child side of container creation, top to bottom.

stage1() runs in the first child: it joins or creates the namespaces and forks the container's init
(which is PID 1 when there is a new pid namespace: unshare(CLONE_NEWPID) only affects children, and
the runtime itself must stay outside). init() then builds the filesystem view, pivots into it, drops
privileges, reports `created`, waits on the exec fifo for `start`, and execs.

Everything here is imported before pivot_root: afterwards the host's site-packages are out of reach.
Any exception travels to the parent over the channel and the process exits 255 without running
Python cleanup (os._exit), so no atexit handler or buffered output of the parent runs twice.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket

import prctl

from minirun.errors import kernel_error
from minirun.linux import (
    capabilities,
    devices,
    execute,
    identity,
    namespaces,
    rlimits,
    rootfs,
    syscalls,
)
from minirun.linux.paths import mkdir_all
from minirun.process.sync import Channel
from minirun.spec.model import Config

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import NoReturn


class Plan:
    """What the child side needs from the parent."""

    __slots__ = ("config", "fifo_fd", "no_pivot")

    def __init__(self, config: Config, fifo_fd: int, no_pivot: bool) -> None:
        self.config = config
        self.fifo_fd = fifo_fd  # O_PATH fd of the exec fifo, reopened for writing after pivot_root
        self.no_pivot = no_pivot


def stage1(chan: Channel, plan: Plan) -> NoReturn:
    try:
        _reset_signals()
        prctl.set_dumpable(False)  # before any setns: nothing in the container may ptrace us
        prctl.set_pdeathsig(signal.SIGKILL)  # the runtime died mid-create: do not linger
        chan.expect("go")  # the runtime has put this process in the container's cgroup
        ns = plan.config.linux.namespaces
        namespaces.join(namespaces.open_joined(ns))
        syscalls.unshare(namespaces.unshare_flags(ns))
        pid = os.fork()
        if pid == 0:
            init(chan, plan)
        chan.send("init", pid=pid)
    except BaseException as e:
        chan.report(e)
        os._exit(255)
    os._exit(0)


def init(chan: Channel, plan: Plan) -> NoReturn:
    try:
        _init(chan, plan)
    except BaseException as e:
        chan.report(e)
    os._exit(255)


def _init(chan: Channel, plan: Plan) -> NoReturn:
    config, process = plan.config, plan.config.process
    prctl.set_pdeathsig(0)  # our parent (stage1) exits on purpose; the channel tells us if the runtime dies
    os.umask(0)  # device and directory modes exactly as configured; process.user.umask is set later
    chan.expect("go")

    if process.oom_score_adj is not None:
        with open("/proc/self/oom_score_adj", "w") as f:  # still the host's procfs here
            f.write(str(process.oom_score_adj))
    if config.linux.namespace("network") and not config.linux.namespace("network").path:  # type: ignore[union-attr]
        namespaces.bring_up_loopback()
    if config.hostname:
        _sethostname(config.hostname)
    if config.domainname:
        syscalls.setdomainname(config.domainname)

    # Filesystem view: all mounting happens here, before pivot_root (see linux/rootfs.py).
    null_fd = rootfs.open_host_null()
    trampoline_fd = execute.sealed_trampoline()
    proc_fds = os.open("/proc/self/fd", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    root_fd = rootfs.prepare_root(config)
    rootfs.mount_all(root_fd, config)
    devices.create_devices(root_fd, config)
    rootfs.mask_paths(root_fd, config.linux.masked_paths, null_fd)
    rootfs.readonly_paths(root_fd, config.linux.readonly_paths)
    os.close(mkdir_all(root_fd, process.cwd))
    os.close(root_fd)
    os.close(null_fd)
    if plan.no_pivot or rootfs.root_cannot_pivot():
        rootfs.move_root(config.root_path)
    else:
        rootfs.pivot(config.root_path)
    rootfs.finish_root(config)

    # Privileges: limits first (raising them needs CAP_SYS_RESOURCE), capabilities last.
    rlimits.apply(process.rlimits)
    env = _with_home(process.env, process.user.uid)
    syscalls.close_range_cloexec(3)  # no host fd reaches the container, whatever we inherited
    caps = process.capabilities
    if caps is not None:
        capabilities.drop_bounding(capabilities.mask(caps.bounding, "bounding"))
    identity.switch_user(process.user)
    if caps is not None:
        capabilities.apply_sets(caps)
    if process.no_new_privileges:
        prctl.set_no_new_privs(True)
    rootfs.chdir_cwd(process.cwd)
    path = execute.find_executable(process.args[0], env)

    chan.send("created")
    # Blocks until `start` opens the fifo for reading; reopened through our own fd table because the
    # fifo's path is outside the new root. Written as the container user: the fifo is mode 0622.
    fifo = os.open(str(plan.fifo_fd), os.O_WRONLY | os.O_CLOEXEC, dir_fd=proc_fds)
    os.write(fifo, b"0")
    os.close(fifo)
    execute.exec_container(trampoline_fd, path, process.args, env)


def _reset_signals() -> None:
    """Python ignores SIGPIPE and SIGXFSZ and the runtime may block signals: undo both for the container."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        with contextlib.suppress(OSError, ValueError):
            signal.signal(sig, signal.SIG_DFL)


def _sethostname(name: str) -> None:
    try:
        socket.sethostname(name)
    except OSError as e:
        raise kernel_error(f"sethostname `{name}`", e) from None


def _with_home(env: list[str], uid: int) -> list[str]:
    if any(e.startswith("HOME=") for e in env):
        return env
    return [*env, f"HOME={identity.home_of(uid)}"]
