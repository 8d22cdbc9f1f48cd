"""The child side of container creation, top to bottom.

stage1() runs in the first child: it joins or creates the namespaces (all but the cgroup one) and
forks the container's init (which is PID 1 when there is a new pid namespace: unshare(CLONE_NEWPID)
only affects children, and the runtime itself must stay outside). init() then builds the filesystem
view — the runtime moves it into its cgroup meanwhile, and it makes its cgroup namespace once there —
pivots into it, drops privileges, reports `created`, waits on the exec fifo for `start`, and execs.

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

from minirun import hooks
from minirun.errors import MinirunError, kernel_error
from minirun.linux import (
    devices,
    execute,
    identity,
    lsm,
    namespaces,
    rlimits,
    rootfs,
    sched,
    seccomp,
    syscalls,
    sysctl,
    timens,
    tty,
    userns,
)
from minirun.linux.paths import mkdir_all
from minirun.process.sync import Channel
from minirun.spec.model import Config

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import NoReturn


class Plan:
    """What the child side needs from the parent."""

    __slots__ = ("bind_trees", "config", "console_fd", "fifo_fd", "no_pivot", "preserve_fds")

    def __init__(self, config: Config, fifo_fd: int, no_pivot: bool,
                 bind_trees: dict[int, int] | None = None, console_fd: int = -1, preserve_fds: int = 0) -> None:
        self.config = config
        self.fifo_fd = fifo_fd  # O_PATH fd of the exec fifo, reopened for writing after pivot_root
        self.no_pivot = no_pivot
        # index in config.mounts -> fd of a detached bind source the runtime made (linux/userns.py)
        self.bind_trees = bind_trees or {}
        self.console_fd = console_fd  # with process.terminal: the socket the pty master is sent on
        self.preserve_fds = preserve_fds  # fds 3..3+N-1 go on to the process (--preserve-fds)


def stage1(chan: Channel, plan: Plan) -> NoReturn:
    try:
        _reset_signals()
        prctl.set_dumpable(False)  # before any setns: nothing in the container may ptrace us
        prctl.set_pdeathsig(signal.SIGKILL)  # the runtime died mid-create: do not linger
        ns = plan.config.linux.namespaces
        namespaces.join(namespaces.open_joined(ns))  # a user namespace given by path first of all
        # The cgroup namespace is made by the init once it is in its cgroup (see _enter_cgroup).
        flags = namespaces.unshare_flags(ns) & ~namespaces.flag("cgroup")
        if userns.needs_new(plan.config.linux):
            # Alone and first, so that it owns the namespaces unshared below; the runtime writes its
            # maps from outside, as only a process in the parent user namespace can.
            syscalls.unshare(namespaces.flag("user"))
            flags &= ~namespaces.flag("user")
            chan.send("userns")
            chan.expect("mapped")
        if plan.config.linux.namespace("user"):
            userns.become_root()
        syscalls.unshare(flags)
        timens.write_offsets(plan.config.extras.time_offsets)  # before any process is in the namespace
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
    config, process, extras = plan.config, plan.config.process, plan.config.extras
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
    sysctl.apply(extras.sysctl)

    # Filesystem view: all mounting happens here, before pivot_root (see linux/rootfs.py).
    null_fd = rootfs.open_host_null()
    trampoline_fd = execute.sealed_trampoline()
    seccomp_filter = seccomp.compile_filter(config.linux.seccomp) if config.linux.seccomp else None
    seccomp_at = _seccomp_load_point(seccomp_filter, process.no_new_privileges)
    proc_fds = os.open("/proc/self/fd", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    exec_attrs = lsm.open_exec_attrs(extras)  # /proc/self/attr of the host's procfs, written before exec
    root_fd = rootfs.prepare_root(config)
    cgroup_mounts_from = next((i for i, m in enumerate(config.mounts) if m.type in ("cgroup", "cgroup2")),
                              len(config.mounts))
    rootfs.mount_all(root_fd, config, plan.bind_trees, stop=cgroup_mounts_from)
    _enter_cgroup(chan, config)
    rootfs.mount_all(root_fd, config, plan.bind_trees, start=cgroup_mounts_from)
    for tree in plan.bind_trees.values():
        os.close(tree)
    devices.create_devices(root_fd, config)
    rootfs.mask_paths(root_fd, config.linux.masked_paths, null_fd)
    rootfs.readonly_paths(root_fd, config.linux.readonly_paths)
    os.close(mkdir_all(root_fd, process.cwd))
    os.close(root_fd)
    os.close(null_fd)
    # The runtime runs prestart and createRuntime hooks meanwhile (in its own namespaces); then
    # createContainer runs from here: in our namespaces, with the host's filesystem still in view.
    chan.send("hooks")
    hook_state = chan.expect("go")["state"]
    hooks.run_hooks(config.hooks, ("createContainer",), hook_state, umask=0o022)
    if plan.no_pivot or rootfs.root_cannot_pivot():
        rootfs.move_root(config.root_path)
    else:
        rootfs.pivot(config.root_path)
    rootfs.finish_root(config)
    if plan.console_fd >= 0:  # from the container's devpts, now mounted at /dev/pts
        tty.setup_terminal(plan.console_fd, process.console_size, process.user.uid)

    # Privileges: limits first (raising them needs CAP_SYS_RESOURCE), capabilities last.
    rlimits.apply(process.rlimits)
    # Inherited across exec; set while we still have CAP_SYS_NICE and CAP_SYS_ADMIN.
    sched.set_scheduler(extras.scheduler)
    sched.set_io_priority(extras.io_priority)
    sched.set_memory_policy(extras.memory_policy)
    env = execute.process_env(process, plan.preserve_fds)
    execute.keep_only_preserved_fds(plan.preserve_fds)  # no other host fd reaches the container
    if seccomp_at == "privileged":
        _load_seccomp(chan, seccomp_filter)
    identity.drop_privileges(process)
    rootfs.chdir_cwd(process.cwd)
    path = execute.find_executable(process.args[0], env)
    if seccomp_at == "created":
        _load_seccomp(chan, seccomp_filter)

    chan.send("created")
    # Blocks until `start` opens the fifo for reading; reopened through our own fd table because the
    # fifo's path is outside the new root. Written as the container user: the fifo is mode 0622.
    fifo = os.open(str(plan.fifo_fd), os.O_WRONLY | os.O_CLOEXEC, dir_fd=proc_fds)
    os.write(fifo, b"0")
    # `start` reads on until exec closes the fifo (O_CLOEXEC); what it reads is why we did not exec.
    try:
        hooks.run_hooks(config.hooks, ("startContainer",), {**hook_state, "status": "created"})
        # Last, so that no hook inherits them: each would apply to the hook's process too.
        sched.set_affinity(extras.affinity_final, "process.execCPUAffinity.final")
        sched.set_personality(extras.personality)
        lsm.write_exec_attrs(exec_attrs)
        if seccomp_at == "exec":
            _load_seccomp(chan, seccomp_filter)  # a failure reaches `start` through the fifo
    except MinirunError as e:
        os.write(fifo, str(e).encode()[:4096])
        raise
    execute.exec_container(trampoline_fd, path, process.args, env)


def _enter_cgroup(chan: Channel, config: Config) -> None:
    """Wait until the runtime has moved us into the container's cgroup, then make the cgroup namespace.

    Moving a process between cgroups waits for an RCU grace period (cgroup v1 especially: tens of
    milliseconds on an idle machine); the runtime does it while we make the mounts before the first
    cgroup mount. The namespace is rooted at the cgroup we are in when it is made, so it and every
    cgroup mount come after the move; and the process is in its cgroup long before it execs, runs a
    hook, creates a device node or forks.
    """
    chan.expect("cgroup")
    ns = config.linux.namespace("cgroup")
    if ns is not None and not ns.path:
        syscalls.unshare(namespaces.flag("cgroup"))


def _seccomp_load_point(flt: seccomp.Filter | None, no_new_privs: bool) -> str:
    """Where the filter goes on. Once loaded it binds this interpreter too, so as late as possible:
    right before exec. Two things move it earlier. Without no_new_privs loading needs CAP_SYS_ADMIN,
    so it must precede dropping capabilities ("privileged", as runc does; the profile must then allow
    the capset/setuid/setgroups calls that follow). A notify fd must reach the runtime, which waits
    only until "created" ("created"; the fifo and hooks then run under the filter)."""
    if flt is None:
        return ""
    if not no_new_privs:
        return "privileged"
    return "created" if flt.notify else "exec"


def _load_seccomp(chan: Channel, flt: seccomp.Filter | None) -> None:
    assert flt is not None
    fd = seccomp.load(flt)
    if fd >= 0:
        chan.send_fds("seccomp", [fd])
        os.close(fd)


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
