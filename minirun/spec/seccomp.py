"""`linux.seccomp` (config-linux.md, "Seccomp") parsed and checked before anything is created.

Every name is checked against the tables below, so an action, operator, architecture or flag that
minirun does not know is refused naming its field rather than silently dropped: a filter with a rule
missing is less isolation than the config asked for. Syscall names are the one exception: a profile
written for a newer kernel names syscalls this libseccomp does not know, and those can never be made
by a process here anyway, so they are skipped with a debug line (as runc does).
"""

from __future__ import annotations

from minirun.errors import ConfigError
from minirun.spec.reader import Field

# The sets `minirun features` reports; each value here is accepted by parse_seccomp.
SUPPORTED_ACTIONS = (
    "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP", "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY",
)
SUPPORTED_OPERATORS = (
    "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
)
SUPPORTED_ARCHES = (
    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X", "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64",
)
SUPPORTED_FLAGS = ("SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW")

# Named by the runtime-spec but needing libseccomp 2.6, newer than the 2.5 minirun is built with.
_NEEDS_NEWER_LIBSECCOMP = (
    "SCMP_ARCH_LOONGARCH64", "SCMP_ARCH_M68K", "SCMP_ARCH_SH", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
)

# Actions whose 16-bit data is configurable (the errno, or the tracer's message).
ACTIONS_WITH_ERRNO = ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE")
EPERM = 1  # the runtime-spec's default for errnoRet and defaultErrnoRet
_ERRNO_MAX = 2**16 - 1  # the kernel keeps 16 bits of SECCOMP_RET_DATA

# The init hands the notify fd to the runtime with sendmsg() after loading the filter: a notify rule
# on it would block the init before anyone could answer.
_NOT_NOTIFIABLE = ("sendmsg",)


class ArgRule:
    __slots__ = ("index", "op", "value", "value_two")

    def __init__(self, index: int, value: int, op: str, value_two: int = 0) -> None:
        self.index, self.value, self.value_two, self.op = index, value, value_two, op


class SyscallRule:
    __slots__ = ("action", "args", "errno_ret", "names", "where")

    def __init__(self, names: list[str], action: str, errno_ret: int | None = None,
                 args: list[ArgRule] | None = None, where: str = "") -> None:
        self.names = names  # only those this libseccomp knows
        self.action = action
        self.errno_ret = errno_ret  # None: EPERM for ERRNO/TRACE
        self.args = args or []
        self.where = where  # the rule's dotted field, for errors at compile time


class Seccomp:
    __slots__ = ("architectures", "default_action", "default_errno_ret", "flags", "listener_metadata",
                 "listener_path", "syscalls")

    def __init__(self, default_action: str, default_errno_ret: int | None = None,
                 architectures: list[str] | None = None, flags: list[str] | None = None,
                 listener_path: str = "", listener_metadata: str = "",
                 syscalls: list[SyscallRule] | None = None) -> None:
        self.default_action = default_action
        self.default_errno_ret = default_errno_ret
        self.architectures = architectures or []
        self.flags = flags or []
        self.listener_path = listener_path
        self.listener_metadata = listener_metadata
        self.syscalls = syscalls or []

    def uses_notify(self) -> bool:
        """Whether loading the filter yields a notify fd that goes to listener_path."""
        return any(r.action == "SCMP_ACT_NOTIFY" for r in self.syscalls)


def parse_seccomp(f: Field | None) -> Seccomp | None:
    if f is None:
        return None
    f.obj()
    default_action = _action(f.need("defaultAction"))
    if default_action == "SCMP_ACT_NOTIFY":
        # Every syscall of the init after loading would wait for a listener it has not reached yet.
        raise ConfigError(f"{f.path}.defaultAction", 'SCMP_ACT_NOTIFY cannot be the default action')
    default_errno = _errno_ret(f, "defaultErrnoRet", default_action)
    arches = f.get("architectures")
    flags = f.get("flags")
    rules = f.get("syscalls")
    seccomp = Seccomp(
        default_action=default_action,
        default_errno_ret=default_errno,
        architectures=_arches(arches),
        flags=[_named(x, SUPPORTED_FLAGS, "flag") for x in (flags.items() if flags else [])],
        listener_path=f.opt_str("listenerPath"),
        listener_metadata=f.opt_str("listenerMetadata"),
        syscalls=[_syscall(r) for r in (rules.items() if rules else [])],
    )
    if seccomp.uses_notify() and not seccomp.listener_path:
        raise ConfigError(f"{f.path}.listenerPath", "required when a rule's action is SCMP_ACT_NOTIFY")
    return seccomp


def _named(f: Field, known: tuple[str, ...], what: str) -> str:
    name = f.string()
    if name in _NEEDS_NEWER_LIBSECCOMP:
        raise f.fail(f'{what} "{name}" is not supported by the libseccomp minirun is built with')
    if name not in known:
        raise f.fail(f'unknown {what} "{name}"')
    return name


def _arches(f: Field | None) -> list[str]:
    from minirun.linux.seccomp import arch_combines_with_native
    from minirun.log import logger

    names = [_named(a, SUPPORTED_ARCHES, "architecture") for a in (f.items() if f else [])]
    usable = [a for a in names if arch_combines_with_native(a)]
    if f is not None and len(usable) < len(names):
        # Profiles list every architecture they were written for; only this host's family can run here.
        logger.debug(f"{f.path}: skipping {', '.join(a for a in names if a not in usable)}: "
                     "not combinable with this host's architecture")
    return usable


def _action(f: Field) -> str:
    return _named(f, SUPPORTED_ACTIONS, "action")


def _errno_ret(f: Field, key: str, action: str) -> int | None:
    child = f.get(key)
    if child is None:
        return None
    value = child.integer(0, _ERRNO_MAX)
    if action not in ACTIONS_WITH_ERRNO:
        raise child.fail(f"only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {action}")
    return value


def _syscall(r: Field) -> SyscallRule:
    from minirun.linux.seccomp import syscall_known
    from minirun.log import logger

    r.obj()
    names_field = r.need("names")
    names = names_field.strings()
    if not names:
        raise names_field.fail("must name at least one syscall")
    action = _action(r.need("action"))
    if action == "SCMP_ACT_NOTIFY":
        for i, name in enumerate(names):
            if name in _NOT_NOTIFIABLE:
                raise ConfigError(f"{names_field.path}[{i}]",
                                  f'"{name}" cannot be SCMP_ACT_NOTIFY: minirun needs it to pass the notify fd')
    errno_ret = _errno_ret(r, "errnoRet", action)
    args = r.get("args")
    known = []
    for name in names:
        if syscall_known(name):
            known.append(name)
        else:
            logger.debug(f'{r.path}: skipping syscall "{name}": unknown to libseccomp')
    return SyscallRule(names=known, action=action, errno_ret=errno_ret,
                       args=[_arg(a) for a in (args.items() if args else [])], where=r.path)


def _arg(a: Field) -> ArgRule:
    a.obj()
    index = a.need("index").integer(0, 5)
    value = a.need("value").integer(0, 2**64 - 1)
    value_two = a.get("valueTwo")
    op = _named(a.need("op"), SUPPORTED_OPERATORS, "operator")
    return ArgRule(index=index, value=value, op=op, value_two=value_two.integer(0, 2**64 - 1) if value_two else 0)

