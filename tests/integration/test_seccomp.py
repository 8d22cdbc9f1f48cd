"""linux.seccomp: what a filtered container observes (errnos from the probe, its exit status), and a
listener receiving the notify fd and answering the container's syscall through it."""

from __future__ import annotations

import copy
import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest

from minirun.linux.syscalls import const
from tests.conftest import Runtime

SIGSYS_STATUS = 128 + signal.SIGSYS

# A runc-style allow-list: what a shell, the probe and minirun's own last steps need. minirun's part
# (loaded before exec, or before dropping privileges without noNewPrivileges) is the fd passing and
# fifo handshake, the user and capability switch, and the exec of the trampoline (execveat) which
# then execs the program (execve). mkdir/mkdirat and getpid are left out on purpose.
ALLOW = [
    "access", "arch_prctl", "brk", "capget", "capset", "chdir", "close", "close_range", "dup", "dup2",
    "dup3", "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fchdir", "fcntl",
    "fstat", "futex", "getcwd", "getdents64", "getegid", "geteuid", "getgid", "getgroups", "getppid",
    "getrandom", "getresgid", "getresuid", "gettid", "getuid", "ioctl", "lseek", "lstat", "madvise",
    "mmap", "mprotect", "munmap", "newfstatat", "open", "openat", "openat2", "pipe", "pipe2", "poll",
    "ppoll", "prctl", "pread64", "prlimit64", "read", "readlink", "readlinkat", "readv", "recvfrom",
    "recvmsg", "rseq", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sched_getaffinity",
    "sched_yield", "sendmsg", "sendto", "set_robust_list", "set_tid_address", "setgid", "setgroups",
    "setresgid", "setresuid", "setuid", "sigaltstack", "stat", "statfs", "statx", "sysinfo", "umask",
    "uname", "wait4", "write", "writev", "clone", "clone3", "fork", "vfork", "kill", "tgkill",
]


def seccomp_config(runtime: Runtime, seccomp: dict[str, Any], *args: str,
                   no_new_privileges: bool = True) -> dict[str, Any]:
    cfg = copy.deepcopy(runtime.config)
    cfg["process"]["args"] = ["/usr/bin/probe", *args]
    cfg["process"]["noNewPrivileges"] = no_new_privileges
    cfg["linux"]["seccomp"] = seccomp
    cfg["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"})  # for probe's mkdir
    return cfg


def probe_errno(runtime: Runtime, seccomp: dict[str, Any], call: str, **kw: Any) -> int:
    result = runtime.run(seccomp_config(runtime, seccomp, "syscall-errno", call, **kw))
    assert result.returncode == 0, result.stderr
    return int(result.json()["errno"])


def errno_rule(names: list[str], err: int, **extra: Any) -> dict[str, Any]:
    return {"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": err, **extra}


def test_blocked_syscall_returns_the_configured_errno(runtime: Runtime) -> None:
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [errno_rule(["mkdir", "mkdirat"], errno.EXDEV)]}
    assert probe_errno(runtime, seccomp, "mkdir") == errno.EXDEV
    # the same container without the filter can make the directory
    assert probe_errno(runtime, {"defaultAction": "SCMP_ACT_ALLOW"}, "mkdir") == 0


def test_errno_without_errnoret_is_eperm_and_unknown_names_are_skipped(runtime: Runtime) -> None:
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["no_such_syscall_minirun", "getpid"], "action": "SCMP_ACT_ERRNO"}]}
    assert probe_errno(runtime, seccomp, "getpid") == errno.EPERM


def test_allowed_syscall_works_under_a_filter(runtime: Runtime) -> None:
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [errno_rule(["mkdir", "mkdirat"], errno.EXDEV)]}
    assert probe_errno(runtime, seccomp, "getpid") == 0


def test_allow_list_with_default_errno_still_execs_the_process(runtime: Runtime) -> None:
    seccomp = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.ENOSYS,
               "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
               "syscalls": [{"names": ALLOW, "action": "SCMP_ACT_ALLOW"}]}
    assert probe_errno(runtime, seccomp, "getpid") == errno.ENOSYS  # defaultErrnoRet
    assert probe_errno(runtime, seccomp, "mkdir") == errno.ENOSYS
    # a shell runs whole scripts under it (fork, exec, wait)
    cfg = seccomp_config(runtime, seccomp)
    cfg["process"]["args"] = ["/bin/sh", "-c", "echo hello | cat"]
    result = runtime.run(cfg)
    assert (result.returncode, result.stdout.strip()) == (0, "hello"), result.stderr
    # without defaultErrnoRet the default errno is EPERM
    del seccomp["defaultErrnoRet"]
    assert probe_errno(runtime, seccomp, "getpid") == errno.EPERM


def test_filter_is_loaded_without_no_new_privileges(runtime: Runtime) -> None:
    # Loaded while the init still has CAP_SYS_ADMIN; the container keeps only three capabilities.
    seccomp = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": errno.EXDEV,
               "syscalls": [{"names": ALLOW, "action": "SCMP_ACT_ALLOW"}]}
    assert probe_errno(runtime, seccomp, "getpid", no_new_privileges=False) == errno.EXDEV
    result = runtime.run(seccomp_config(runtime, seccomp, "facts", no_new_privileges=False))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("flag", ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                                  "SECCOMP_FILTER_FLAG_SPEC_ALLOW"])
def test_flags_are_accepted_by_the_kernel(runtime: Runtime, flag: str) -> None:
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW", "flags": [flag],
               "syscalls": [errno_rule(["getpid"], errno.EXDEV), {"names": ["mkdir"], "action": "SCMP_ACT_LOG"}]}
    assert probe_errno(runtime, seccomp, "getpid") == errno.EXDEV
    assert probe_errno(runtime, seccomp, "mkdir") == 0  # SCMP_ACT_LOG lets it through


def test_args_rule_matches_only_the_given_argument(runtime: Runtime) -> None:
    newuser = const("CLONE_NEWUSER")
    matching = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [errno_rule(
        ["unshare"], errno.EXDEV, args=[{"index": 0, "value": newuser, "valueTwo": newuser,
                                         "op": "SCMP_CMP_MASKED_EQ"}])]}
    assert probe_errno(runtime, matching, "unshare-user") == errno.EXDEV
    other = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [errno_rule(
        ["unshare"], errno.EXDEV, args=[{"index": 0, "value": const("CLONE_NEWNET"), "op": "SCMP_CMP_EQ"}])]}
    assert probe_errno(runtime, other, "unshare-user") != errno.EXDEV
    not_equal = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [errno_rule(
        ["unshare"], errno.EXDEV, args=[{"index": 0, "value": newuser, "op": "SCMP_CMP_NE"}])]}
    assert probe_errno(runtime, not_equal, "unshare-user") != errno.EXDEV


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD"])
def test_kill_actions_kill_the_process_with_sigsys(runtime: Runtime, action: str) -> None:
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getpid"], "action": action}]}
    result = runtime.run(seccomp_config(runtime, seccomp, "syscall-errno", "getpid"))
    assert result.returncode == SIGSYS_STATUS, (result.stdout, result.stderr)
    assert result.stdout == ""


def test_trap_delivers_sigsys(runtime: Runtime) -> None:
    seccomp = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_TRAP"}]}
    result = runtime.run(seccomp_config(runtime, seccomp, "syscall-errno", "getpid"))
    assert result.returncode == SIGSYS_STATUS, (result.stdout, result.stderr)


# --- notify -------------------------------------------------------------------------------------------


class Listener:
    """A seccomp agent: receives the state and the notify fd, then answers one notification."""

    def __init__(self, path: str, answer_errno: int) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(1)
        self.sock.settimeout(30)
        self.answer_errno = answer_errno
        self.state: dict[str, Any] = {}
        self.fd_link = ""
        self.notified_nr = -1
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
            with conn:
                data = b""
                fds: list[int] = []
                while True:
                    chunk, got, _, _ = socket.recv_fds(conn, 65536, 4)
                    fds += got
                    if not chunk:
                        break
                    data += chunk
            self.state = json.loads(data)
            assert len(fds) == 1, fds
            fd = fds[0]
            try:
                self.fd_link = os.readlink(f"/proc/self/fd/{fd}")
                req = bytearray(80)  # struct seccomp_notif, zeroed as the kernel requires
                fcntl.ioctl(fd, const("SECCOMP_IOCTL_NOTIF_RECV"), req, True)
                notif_id, _pid, _flags, nr = struct.unpack_from("=QIIi", req)
                self.notified_nr = nr
                resp = struct.pack("=QqiI", notif_id, 0, -self.answer_errno, 0)  # struct seccomp_notif_resp
                fcntl.ioctl(fd, const("SECCOMP_IOCTL_NOTIF_SEND"), bytearray(resp), True)
            finally:
                os.close(fd)
        except BaseException as e:
            self.error = e

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


def test_notify_delivers_the_fd_and_state_to_the_listener(runtime: Runtime) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="minirun-test-seccomp-"))
    listener = Listener(str(tmp / "agent.sock"), errno.EXDEV)
    try:
        seccomp = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": str(tmp / "agent.sock"),
                   "listenerMetadata": "minirun-test-metadata",
                   "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]}
        cfg = seccomp_config(runtime, seccomp, "syscall-errno", "mkdir")
        result = runtime.run(cfg, cid="minirun-test-notify")
        listener.thread.join(10)
        assert listener.error is None, repr(listener.error)
        assert result.returncode == 0, result.stderr
        # the listener's answer is what the container's mkdir returned
        assert result.json()["errno"] == errno.EXDEV
        assert listener.fd_link == "anon_inode:seccomp notify"
        assert listener.notified_nr in (83, 258)  # x86_64 mkdir, mkdirat
        st = listener.state
        assert st["fds"] == ["seccompFd"]
        assert st["metadata"] == "minirun-test-metadata"
        assert st["ociVersion"]
        assert isinstance(st["pid"], int) and st["pid"] > 0
        assert st["state"]["id"] == "minirun-test-notify"
        assert st["state"]["status"] == "creating"
        assert st["state"]["pid"] == st["pid"]
        assert st["state"]["bundle"].startswith(str(runtime.bundles))
    finally:
        listener.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_unreachable_listener_fails_create_and_leaves_nothing(runtime: Runtime, host_unchanged: None) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="minirun-test-seccomp-"))
    try:
        seccomp = {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": str(tmp / "nobody.sock"),
                   "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}
        result = runtime.run(seccomp_config(runtime, seccomp, "facts"))
        assert result.returncode != 0
        assert "linux.seccomp.listenerPath" in result.stderr and "nobody.sock" in result.stderr
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize(("seccomp", "field"), [
    ({"defaultAction": "SCMP_ACT_FOO"}, "linux.seccomp.defaultAction"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}, "linux.seccomp.architectures[0]"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_FOO"]}, "linux.seccomp.flags[0]"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]},
     "linux.seccomp.listenerPath"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                                                       "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_X"}]}]},
     "linux.seccomp.syscalls[0].args[0].op"),
])
def test_refused_config_names_the_field_and_leaves_nothing(
        runtime: Runtime, host_unchanged: None, seccomp: dict[str, Any], field: str) -> None:
    result = runtime.run(seccomp_config(runtime, seccomp, "facts"))
    assert result.returncode == 1
    assert field + ":" in result.stderr, result.stderr
