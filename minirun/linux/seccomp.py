"""Build a seccomp filter from `linux.seccomp` with libseccomp, load it, and hand a notify fd on.

compile() runs in the init while the host's libraries are still in view; load() runs just before the
exec (see process/init.py for exactly where, and why it depends on noNewPrivileges). The filter also
binds what the init itself does between load() and the exec: the Python interpreter finishing up,
then an exec of the sealed trampoline through its fd (execveat, or execve of /proc/self/fd/N) and the
trampoline's execve of the container's program. A profile must allow those, as runc's do (an
allow-list profile lists execve and execveat); minirun does as little as it can after loading.

libseccomp's default of setting no_new_privs on load is turned off: process.noNewPrivileges decides
that, and without it loading needs CAP_SYS_ADMIN, which the init still holds at that point.
"""

from __future__ import annotations

import errno

from minirun.errors import KernelError
from minirun.linux import syscalls
from minirun.spec.seccomp import EPERM

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

    from minirun.spec.seccomp import ArgRule, Seccomp

# runtime-spec flag → libseccomp filter attribute that makes libseccomp pass the flag to seccomp(2).
_FLAG_ATTRS = {
    "SECCOMP_FILTER_FLAG_TSYNC": "SCMP_FLTATR_CTL_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG": "SCMP_FLTATR_CTL_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": "SCMP_FLTATR_CTL_SSB",
}


class Filter:
    """A compiled, not yet loaded filter (a libseccomp context, never released: we exec or exit)."""

    __slots__ = ("ctx", "notify")

    def __init__(self, ctx: Any, notify: bool) -> None:
        self.ctx, self.notify = ctx, notify


def syscall_known(name: str) -> bool:
    lib = syscalls.shim().lib
    return int(lib.seccomp_syscall_resolve_name(name.encode())) != int(lib.__NR_SCMP_ERROR)


def arch_combines_with_native(arch: str) -> bool:
    """Whether libseccomp can put `arch` in one filter with the native architecture: it refuses
    (EDOM) one of the other byte order, whose programs cannot run on this host anyway."""
    lib = syscalls.shim().lib
    ctx = lib.seccomp_init(lib.SCMP_ACT_ALLOW)
    try:
        return int(lib.seccomp_arch_add(ctx, getattr(lib, arch))) != -errno.EDOM
    finally:
        lib.seccomp_release(ctx)


def action_value(action: str, errno_ret: int | None) -> int:
    lib = syscalls.shim().lib
    data = EPERM if errno_ret is None else errno_ret
    if action == "SCMP_ACT_ERRNO":
        return int(lib.mr_scmp_act_errno(data))
    if action == "SCMP_ACT_TRACE":
        return int(lib.mr_scmp_act_trace(data))
    return int(getattr(lib, action))


def _check(rc: int, operation: str) -> None:
    if rc < 0:
        raise KernelError(operation, -rc)


def compile_filter(sc: Seccomp) -> Filter:
    shim = syscalls.shim()
    ffi, lib = shim.ffi, shim.lib
    default = action_value(sc.default_action, sc.default_errno_ret)
    ctx = lib.seccomp_init(default)
    if ctx == ffi.NULL:
        raise KernelError("linux.seccomp.defaultAction: seccomp_init", errno.EINVAL)
    _check(lib.seccomp_attr_set(ctx, lib.SCMP_FLTATR_CTL_NNP, 0), "linux.seccomp: seccomp_attr_set NNP")
    # The kernel's own errno on load (EACCES, EINVAL) rather than libseccomp's blanket ECANCELED.
    _check(lib.seccomp_attr_set(ctx, lib.SCMP_FLTATR_API_SYSRAWRC, 1), "linux.seccomp: seccomp_attr_set SYSRAWRC")
    for i, flag in enumerate(sc.flags):
        _check(lib.seccomp_attr_set(ctx, getattr(lib, _FLAG_ATTRS[flag]), 1), f"linux.seccomp.flags[{i}]: {flag}")
    for i, arch in enumerate(sc.architectures):
        rc = lib.seccomp_arch_add(ctx, getattr(lib, arch))
        if rc != -errno.EEXIST:  # the native architecture is in every filter from the start
            _check(rc, f"linux.seccomp.architectures[{i}]: add {arch}")
    for rule in sc.syscalls:
        action = action_value(rule.action, rule.errno_ret)
        if action == default:
            continue  # changes nothing, and libseccomp refuses it (EACCES)
        for name in rule.names:
            nr = lib.seccomp_syscall_resolve_name(name.encode())
            for conds in _condition_sets(rule.args):
                arr = ffi.new("struct scmp_arg_cmp[]", max(len(conds), 1))
                for j, a in enumerate(conds):
                    arr[j].arg, arr[j].op = a.index, getattr(lib, a.op)
                    arr[j].datum_a, arr[j].datum_b = a.value, a.value_two
                rc = lib.seccomp_rule_add_array(ctx, action, nr, len(conds), arr)
                _check(rc, f"{rule.where}: add the rule for `{name}`")
    return Filter(ctx, sc.uses_notify())


def _condition_sets(args: list[ArgRule]) -> list[list[ArgRule]]:
    """The conditions of one rule as libseccomp rules: all together (every one must hold), unless an
    argument index repeats, which one libseccomp rule cannot express; then one rule per condition,
    any of which matches (runc's reading of such profiles, which existing profiles rely on)."""
    indexes = [a.index for a in args]
    if len(set(indexes)) == len(indexes):
        return [args]
    return [[a] for a in args]


def load(flt: Filter) -> int:
    """Load the filter into this process; the notify fd when it has SCMP_ACT_NOTIFY rules, else -1."""
    lib = syscalls.shim().lib
    _check(lib.seccomp_load(flt.ctx), "load the seccomp filter (linux.seccomp)")
    if not flt.notify:
        return -1
    fd = int(lib.seccomp_notify_fd(flt.ctx))
    _check(fd, "linux.seccomp: get the seccomp notify fd")
    return fd


def send_to_listener(sc: Seccomp, fd: int, pid: int, state: dict[str, Any]) -> None:
    """Send the container process state (config-linux.md, "seccomp listener") with the notify fd as
    SCM_RIGHTS to the unix socket at listenerPath, a host path, connected from the runtime."""
    import json
    import socket

    from minirun import OCI_VERSION

    message = {"ociVersion": OCI_VERSION, "fds": ["seccompFd"], "pid": pid, "metadata": sc.listener_metadata,
               "state": state}
    data = json.dumps(message).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as s:
            s.connect(sc.listener_path)
            sent = socket.send_fds(s, [data], [fd])
            if sent < len(data):
                s.sendall(data[sent:])
    except OSError as e:
        raise KernelError(f"linux.seccomp.listenerPath: send the notify fd to `{sc.listener_path}`",
                          e.errno or errno.EIO) from None
