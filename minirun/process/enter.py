"""`exec`: run one more process in a running container, top to bottom.

The parent (this `minirun exec`) opens what it needs while the host is still in view: the init's
namespace files, its root directory, the sealed exec trampoline. It forks a first child that joins
the namespaces; joining a pid (or time) namespace only affects children, so that child forks the
process that really enters, and exits. The parent moves that process into the container's cgroup
before letting it go on. The entering process
is non-dumpable from the start (nothing in the container may ptrace it or open its /proc files while
it still holds host fds), chroots into the init's root through the fd opened earlier — so its root is
the container's whatever way the container was set up (pivot_root or --no-pivot) — takes the
process's limits, user and capabilities, marks every fd above the preserved ones close-on-exec, and
execs through the trampoline.

Errors before exec travel back over the channel like create's; a missing executable exits 127 and a
non-executable one 126 with runc's wording, and the container is untouched either way.
"""

from __future__ import annotations

import contextlib
import os
import signal

import prctl

from minirun import container
from minirun.errors import WrongState, kernel_error
from minirun.linux import (
    execute,
    identity,
    namespaces,
    rlimits,
    rootfs,
    sched,
    seccomp,
    syscalls,
    tty,
)
from minirun.process.create import write_pid_file
from minirun.process.foreground import FORWARDED, wait_forwarding
from minirun.process.sync import Channel
from minirun.spec.model import Process
from minirun.state import Status, Store

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import NoReturn

    from minirun.linux.seccomp import Filter
    from minirun.spec.extras import Extras
    from minirun.spec.model import Config
    from minirun.state import State


class ExecOptions:
    __slots__ = ("console_socket", "detach", "ignore_paused", "pid_file", "preserve_fds")

    def __init__(self, detach: bool = False, pid_file: str = "", preserve_fds: int = 0,
                 ignore_paused: bool = False, console_socket: str = "") -> None:
        self.detach, self.pid_file = detach, pid_file
        self.preserve_fds, self.ignore_paused = preserve_fds, ignore_paused
        self.console_socket = console_socket


def exec_in(store: Store, container_id: str, process: Process, opts: ExecOptions) -> int:
    from minirun.spec.load import parse_config

    state, status = container.load(store, container_id)
    # The container's own settings bind its exec'd processes too: seccomp, scheduling, personality.
    config = parse_config(state.config, state.bundle)
    seccomp_filter = None
    if config.linux.seccomp is not None:
        if config.linux.seccomp.uses_notify():
            raise WrongState(f"cannot exec in container `{container_id}`: its seccomp filter uses "
                             "SCMP_ACT_NOTIFY, which exec does not support yet")
        seccomp_filter = seccomp.compile_filter(config.linux.seccomp)
    if (config.extras.apparmor_profile or config.extras.selinux_label) and _lsm_enabled():
        raise WrongState(f"cannot exec in container `{container_id}`: AppArmor/SELinux labels for exec are "
                         "not supported yet")
    if status == Status.PAUSED and not opts.ignore_paused:
        raise WrongState(f"cannot exec in container `{container_id}`: it is paused (resume it, or use "
                         "--ignore-paused)")
    if status not in (Status.RUNNING, Status.PAUSED):
        raise WrongState(f"cannot exec in container `{container_id}`: it is {status}")
    console_fd = ours = -1
    if process.terminal:
        # The entering process makes the pty inside the container and sends the master on console_fd:
        # to the --console-socket, or (foreground) to us over a socketpair.
        if opts.console_socket:
            from minirun.linux.tty import connect_console_socket

            console_fd = connect_console_socket(opts.console_socket)
        else:
            import socket

            ours, console_fd = (s.detach() for s in socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM))
    try:
        return _exec(store, container_id, process, opts, state, status, config, seccomp_filter, console_fd, ours)
    finally:
        if ours >= 0:
            os.close(ours)


def _exec(store: Store, container_id: str, process: Process, opts: ExecOptions, state: State, status: str,
          config: Config, seccomp_filter: Filter | None, console_fd: int, ours: int) -> int:
    joined = _open_namespaces(state.pid)
    fds = [fd for _, fd in joined]
    if console_fd >= 0:
        fds.insert(0, console_fd)  # closed with the others once the child has its copy
    try:
        root_fd = os.open(f"/proc/{state.pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise kernel_error(f"open the root of container `{container_id}` (/proc/{state.pid}/root)", e) from None
    fds.append(root_fd)
    fds.append(execute.sealed_trampoline())
    if not opts.detach:
        # Blocked before forking so that none is lost; the entering process unblocks them.
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED | {signal.SIGCHLD})
    prctl.set_child_subreaper(True)  # the entering process is our grandchild: its exit must reach us
    chan, child_chan = Channel.pair()
    stage1_pid = pid = 0
    try:
        stage1_pid = os.fork()
        if stage1_pid == 0:
            chan.close()
            _stage1(child_chan, joined, root_fd, fds[-1], Entry(process, config.extras, seccomp_filter,
                                                                 opts.preserve_fds, console_fd))
        child_chan.close()
        for fd in fds:
            os.close(fd)
        pid = int(chan.expect("pid")["pid"])
        os.waitpid(stage1_pid, 0)
        stage1_pid = 0
        # The entering process joins the cgroup before it does anything else; in a frozen cgroup
        # (--ignore-paused) it stops right there until `resume`.
        manager = container.cgroup_of(state)
        if manager is not None:
            manager.join(pid)
        chan.send("go")
        if not (opts.detach and status == Status.PAUSED):
            chan.expect_eof()  # the channel closes on exec; an error before it is raised here
    except BaseException:
        for p in (pid, stage1_pid):
            if p:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(p, 0)
        raise
    finally:
        chan.close()
    if opts.pid_file:
        write_pid_file(opts.pid_file, pid)
    if opts.detach:
        return 0
    if ours >= 0:
        from minirun.linux.tty import receive_master
        from minirun.process.console import wait_with_terminal

        master = receive_master(os.dup(ours))
        return wait_with_terminal(pid, master)
    return wait_forwarding(pid)


def _open_namespaces(init_pid: int) -> list[tuple[str, int]]:
    """The init's namespaces that differ from ours, opened in the order they must be joined."""
    opened = []
    try:
        for ns_type in namespaces.JOIN_ORDER:
            name = namespaces.PROC_NAME[ns_type]
            theirs = f"/proc/{init_pid}/ns/{name}"
            try:
                if os.stat(theirs).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                    continue
                opened.append((ns_type, os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)))
            except FileNotFoundError:
                if not os.path.exists(f"/proc/self/ns/{name}"):
                    continue  # this kernel has no such namespace
                raise
    except OSError as e:
        for _, fd in opened:
            os.close(fd)
        raise kernel_error(f"open the namespaces of pid {init_pid}", e) from None
    return opened


class Entry:
    """What the entering process applies to itself."""

    __slots__ = ("console_fd", "extras", "preserve_fds", "process", "seccomp_filter")

    def __init__(self, process: Process, extras: Extras, seccomp_filter: Filter | None, preserve_fds: int,
                 console_fd: int = -1) -> None:
        self.process, self.extras, self.seccomp_filter = process, extras, seccomp_filter
        self.preserve_fds = preserve_fds
        self.console_fd = console_fd  # with process.terminal: where the pty master is sent


def _lsm_enabled() -> bool:
    from minirun.linux import lsm

    return lsm.apparmor_enabled() or lsm.selinux_enabled()


def _stage1(chan: Channel, joined: list[tuple[str, int]], root_fd: int, trampoline_fd: int,
            entry: Entry) -> NoReturn:
    try:
        prctl.set_dumpable(False)  # before any setns: nothing in the container may ptrace us
        prctl.set_pdeathsig(signal.SIGKILL)
        for ns_type, fd in joined:
            syscalls.setns(fd, namespaces.flag(ns_type), f"{ns_type} namespace of the container")
            os.close(fd)
        pid = os.fork()
        if pid == 0:
            _enter(chan, root_fd, trampoline_fd, entry)
        chan.send("pid", pid=pid)
    except BaseException as e:
        chan.report(e)
        os._exit(255)
    os._exit(0)


def _enter(chan: Channel, root_fd: int, trampoline_fd: int, entry: Entry) -> NoReturn:
    process, extras, flt, preserve_fds = entry.process, entry.extras, entry.seccomp_filter, entry.preserve_fds
    try:
        prctl.set_pdeathsig(0)
        chan.expect("go")  # in the container's cgroup now
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.fchdir(root_fd)
        os.chroot(".")
        os.close(root_fd)
        if entry.console_fd >= 0:  # the container's devpts, seen through its mount namespace and root
            tty.setup_terminal(entry.console_fd, process.console_size, process.user.uid)
        rlimits.apply(process.rlimits)
        # As in the init (process/init.py): set while CAP_SYS_NICE and CAP_SYS_ADMIN are still ours.
        sched.set_scheduler(extras.scheduler)
        sched.set_io_priority(extras.io_priority)
        sched.set_memory_policy(extras.memory_policy)
        env = execute.process_env(process, preserve_fds)
        execute.keep_only_preserved_fds(preserve_fds)  # nothing else may follow us in
        if flt is not None and not process.no_new_privileges:
            seccomp.load(flt)  # needs CAP_SYS_ADMIN without no_new_privs: before the drop, as the init does
        identity.drop_privileges(process)
        rootfs.chdir_cwd(process.cwd)  # inside the root we are chrooted to: `..` cannot climb out
        path = execute.find_executable(process.args[0], env)
        sched.set_affinity(extras.affinity_final, "process.execCPUAffinity.final")
        sched.set_personality(extras.personality)
        if flt is not None and process.no_new_privileges:
            seccomp.load(flt)  # last: from here on the filter binds this interpreter too
        execute.exec_container(trampoline_fd, path, process.args, env)
    except BaseException as e:
        chan.report(e)
    os._exit(255)
