"""The smaller Linux features of config.json: sysctls, time offsets, personality, scheduling, I/O
priority, CPU affinity, memory policy, network devices and LSM labels.

Parsed and checked here, before anything is created; each error names its field. Only names are
checked here (no kernel constant is needed to parse a config): linux/sched.py maps them to numbers.
"""

from __future__ import annotations

from minirun.errors import ConfigError
from minirun.spec.reader import Field

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from minirun.spec.model import Namespace

# Sysctls that a namespace isolates, and which namespace: anything else would change the host.
SYSCTL_IPC_KEYS = frozenset({
    "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax",
    "kernel.shmmni", "kernel.shm_rmid_forced",
})
SYSCTL_UTS_KEYS = frozenset({"kernel.hostname", "kernel.domainname"})
SYSCTL_PREFIXES = {"net.": "network", "fs.mqueue.": "ipc"}
NAMESPACED_SYSCTLS = (*sorted(SYSCTL_IPC_KEYS | SYSCTL_UTS_KEYS), *(p + "*" for p in SYSCTL_PREFIXES))

TIME_OFFSET_CLOCKS = ("monotonic", "boottime")
PERSONALITY_DOMAINS = ("LINUX", "LINUX32")
PERSONALITY_FLAGS: tuple[str, ...] = ()  # the spec defines none yet
SCHEDULER_POLICIES = ("SCHED_OTHER", "SCHED_BATCH", "SCHED_IDLE", "SCHED_FIFO", "SCHED_RR", "SCHED_DEADLINE")
SCHEDULER_FLAGS = ("SCHED_FLAG_RESET_ON_FORK", "SCHED_FLAG_RECLAIM", "SCHED_FLAG_DL_OVERRUN",
                   "SCHED_FLAG_KEEP_POLICY", "SCHED_FLAG_KEEP_PARAMS", "SCHED_FLAG_UTIL_CLAMP_MIN",
                   "SCHED_FLAG_UTIL_CLAMP_MAX")
IOPRIO_CLASSES = ("IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE")
# MPOL_WEIGHTED_INTERLEAVE is in the spec but not in this build's kernel headers: refused by name.
MEMORY_POLICY_MODES = ("MPOL_DEFAULT", "MPOL_PREFERRED", "MPOL_BIND", "MPOL_INTERLEAVE", "MPOL_LOCAL",
                       "MPOL_PREFERRED_MANY")
MEMORY_POLICY_FLAGS = ("MPOL_F_NUMA_BALANCING", "MPOL_F_RELATIVE_NODES", "MPOL_F_STATIC_NODES")
# Modes whose node list must be empty, and those that need at least one node.
_MPOL_NO_NODES = ("MPOL_DEFAULT", "MPOL_LOCAL")
_MPOL_NEED_NODES = ("MPOL_BIND", "MPOL_INTERLEAVE", "MPOL_PREFERRED_MANY")
MAX_CPU = 8191  # cpu and node lists beyond this are surely typos, and would cost large masks
MAX_NODE = 1023
IFNAMSIZ = 16
INT32_MIN, INT32_MAX, UINT64_MAX = -(2**31), 2**31 - 1, 2**64 - 1
NSEC_PER_SEC = 1_000_000_000


class Sysctl:
    __slots__ = ("key", "parts", "value")

    def __init__(self, key: str, parts: list[str], value: str) -> None:
        self.key = key  # as written in config.json, for error messages
        self.parts = parts  # path components below /proc/sys
        self.value = value


class Scheduler:
    __slots__ = ("deadline", "flags", "nice", "period", "policy", "priority", "runtime")

    def __init__(self, policy: str, nice: int = 0, priority: int = 0, flags: list[str] | None = None,
                 runtime: int = 0, deadline: int = 0, period: int = 0) -> None:
        self.policy, self.nice, self.priority = policy, nice, priority
        self.flags = flags or []
        self.runtime, self.deadline, self.period = runtime, deadline, period


class IoPriority:
    __slots__ = ("ioclass", "priority")

    def __init__(self, ioclass: str, priority: int) -> None:
        self.ioclass, self.priority = ioclass, priority


class MemoryPolicy:
    __slots__ = ("flags", "mode", "nodes")

    def __init__(self, mode: str, nodes: list[int], flags: list[str]) -> None:
        self.mode, self.nodes, self.flags = mode, nodes, flags


class NetDevice:
    __slots__ = ("host_name", "name")

    def __init__(self, host_name: str, name: str) -> None:
        self.host_name = host_name
        self.name = name  # inside the container


class Extras:
    __slots__ = ("affinity_final", "affinity_initial", "apparmor_profile", "io_priority", "memory_policy",
                 "mount_label", "net_devices", "personality", "scheduler", "selinux_label", "sysctl",
                 "time_offsets")

    def __init__(self) -> None:
        self.sysctl: list[Sysctl] = []
        self.time_offsets: dict[str, tuple[int, int]] = {}  # clock → (secs, nanosecs)
        self.personality = ""  # "" (unchanged), "LINUX" or "LINUX32"
        self.scheduler: Scheduler | None = None
        self.io_priority: IoPriority | None = None
        self.affinity_initial: list[int] = []  # empty: leave the affinity alone
        self.affinity_final: list[int] = []
        self.memory_policy: MemoryPolicy | None = None
        self.net_devices: list[NetDevice] = []
        self.apparmor_profile = self.selinux_label = self.mount_label = ""


def parse_extras(top: Field, namespaces: list[Namespace]) -> Extras:
    """The fields this module owns, from the whole config; `namespaces` are linux.namespaces, parsed."""
    ex = Extras()
    new_ns = {ns.type for ns in namespaces if not ns.path}
    any_ns = {ns.type for ns in namespaces}
    process, linux = top.get("process"), top.get("linux")
    if linux is not None:
        if (f := linux.get("sysctl")) is not None:
            ex.sysctl = [_sysctl(f, key, value, new_ns, any_ns) for key, value in f.obj().items()]
        if (f := linux.get("timeOffsets")) is not None:
            ex.time_offsets = _time_offsets(f, namespaces)
        if (f := linux.get("personality")) is not None:
            ex.personality = _personality(f)
        if (f := linux.get("memoryPolicy")) is not None:
            ex.memory_policy = _memory_policy(f)
        if (f := linux.get("netDevices")) is not None:
            ex.net_devices = _net_devices(f, new_ns)
        ex.mount_label = linux.opt_str("mountLabel")
    if process is not None:
        if (f := process.get("scheduler")) is not None:
            ex.scheduler = _scheduler(f)
        if (f := process.get("ioPriority")) is not None:
            ex.io_priority = _io_priority(f)
        if (f := process.get("execCPUAffinity")) is not None:
            f.obj()
            ex.affinity_initial = _id_list(f.get("initial"), MAX_CPU, "cpu")
            ex.affinity_final = _id_list(f.get("final"), MAX_CPU, "cpu")
        ex.apparmor_profile = process.opt_str("apparmorProfile")
        ex.selinux_label = process.opt_str("selinuxLabel")
    return ex


def sysctl_parts(key: str) -> list[str] | None:
    """/proc/sys path components of `key` (`net.ipv4.ip_forward` or `net/ipv4/ip_forward`); None if unsafe.

    As sysctl(8) does: a key with a slash is a path, so its dots stay (`net/ipv4/conf/eth0.100/...`).
    """
    parts = key.split("/") if "/" in key else key.split(".")
    if any(p in ("", ".", "..") or "\0" in p for p in parts):
        return None
    return parts


def sysctl_namespace(parts: list[str]) -> str | None:
    """The namespace that isolates the sysctl at `parts`, or None when it is global to the host."""
    dotted = ".".join(parts)
    if dotted in SYSCTL_IPC_KEYS:
        return "ipc"
    if dotted in SYSCTL_UTS_KEYS:
        return "uts"
    for prefix, ns_type in SYSCTL_PREFIXES.items():
        if dotted.startswith(prefix) and len(parts) > prefix.count("."):
            return ns_type
    return None


def _sysctl(f: Field, key: str, value: object, new_ns: set[str], any_ns: set[str]) -> Sysctl:
    field = f'{f.path}."{key}"'
    if not isinstance(value, str) or "\0" in value:
        raise ConfigError(field, "must be a string without NUL bytes")
    parts = sysctl_parts(key)
    if parts is None:
        raise ConfigError(field, "not a valid sysctl name")
    ns_type = sysctl_namespace(parts)
    if ns_type is None:
        raise ConfigError(field, "not a namespaced sysctl")
    # A network sysctl in a joined namespace would change a namespace that is not the container's own.
    if ns_type == "network" and ns_type not in new_ns:
        raise ConfigError(field, "needs a new network namespace in linux.namespaces")
    if ns_type not in any_ns:
        raise ConfigError(field, f"needs a {ns_type} namespace in linux.namespaces")
    return Sysctl(key, parts, value)


def _time_offsets(f: Field, namespaces: list[Namespace]) -> dict[str, tuple[int, int]]:
    time_ns = next((ns for ns in namespaces if ns.type == "time"), None)
    if time_ns is None or time_ns.path:
        raise f.fail("needs a new time namespace in linux.namespaces")
    out = {}
    for clock in f.obj():
        clock_field = f.need(clock)
        if clock not in TIME_OFFSET_CLOCKS:
            raise clock_field.fail(f'unknown clock "{clock}" (known: {", ".join(TIME_OFFSET_CLOCKS)})')
        clock_field.obj()
        secs = clock_field.opt_int("secs", -(2**63), 2**63 - 1) or 0
        nanosecs = clock_field.opt_int("nanosecs", 0, NSEC_PER_SEC - 1) or 0
        out[clock] = (secs, nanosecs)
    return out


def _personality(f: Field) -> str:
    f.obj()
    domain = f.need("domain")
    if domain.string() not in PERSONALITY_DOMAINS:
        raise domain.fail(f'unknown domain "{domain.value}" (known: {", ".join(PERSONALITY_DOMAINS)})')
    if (flags := f.get("flags")) is not None:
        for item in flags.items():
            if item.string() not in PERSONALITY_FLAGS:
                raise item.fail(f'unknown personality flag "{item.value}"')
    return str(domain.value)


def _one_of(f: Field, known: tuple[str, ...], what: str) -> str:
    value = f.string()
    if value not in known:
        raise f.fail(f'unknown {what} "{value}" (known: {", ".join(known)})')
    return value


def _scheduler(f: Field) -> Scheduler:
    f.obj()
    policy = _one_of(f.need("policy"), SCHEDULER_POLICIES, "policy")
    flags = f.get("flags")
    sched = Scheduler(
        policy=policy,
        nice=f.opt_int("nice", -20, 19) or 0,
        priority=f.opt_int("priority", INT32_MIN, INT32_MAX) or 0,
        flags=[_one_of(item, SCHEDULER_FLAGS, "flag") for item in flags.items()] if flags else [],
        runtime=f.opt_int("runtime", 0, UINT64_MAX) or 0,
        deadline=f.opt_int("deadline", 0, UINT64_MAX) or 0,
        period=f.opt_int("period", 0, UINT64_MAX) or 0,
    )
    realtime = policy in ("SCHED_FIFO", "SCHED_RR")
    if realtime and not 1 <= sched.priority <= 99:
        raise ConfigError(f"{f.path}.priority", f"must be in [1, 99] for {policy}, not {sched.priority}")
    if not realtime and sched.priority != 0:
        raise ConfigError(f"{f.path}.priority", f"must be 0 for {policy}")
    if policy == "SCHED_DEADLINE":
        if sched.runtime == 0 or sched.deadline == 0:
            raise f.fail("SCHED_DEADLINE needs runtime and deadline")
        if sched.runtime > sched.deadline or (sched.period and sched.deadline > sched.period):
            raise f.fail("SCHED_DEADLINE needs runtime <= deadline <= period")
    else:
        for name in ("runtime", "deadline", "period"):
            if getattr(sched, name):
                raise ConfigError(f"{f.path}.{name}", "only applies to SCHED_DEADLINE")
    return sched


def _io_priority(f: Field) -> IoPriority:
    f.obj()
    return IoPriority(_one_of(f.need("class"), IOPRIO_CLASSES, "class"), f.opt_int("priority", 0, 7) or 0)


def _memory_policy(f: Field) -> MemoryPolicy:
    f.obj()
    mode_field = f.need("mode")
    if mode_field.string() == "MPOL_WEIGHTED_INTERLEAVE":
        raise mode_field.fail('"MPOL_WEIGHTED_INTERLEAVE" is not supported by this version of minirun')
    mode = _one_of(mode_field, MEMORY_POLICY_MODES, "mode")
    nodes = _id_list(f.get("nodes"), MAX_NODE, "node")
    flags_field = f.get("flags")
    flags = [_one_of(item, MEMORY_POLICY_FLAGS, "flag") for item in flags_field.items()] if flags_field else []
    if mode in _MPOL_NO_NODES and nodes:
        raise ConfigError(f"{f.path}.nodes", f"must be empty for {mode}")
    if mode in _MPOL_NEED_NODES and not nodes:
        raise ConfigError(f"{f.path}.nodes", f"{mode} needs at least one node")
    if "MPOL_F_STATIC_NODES" in flags and "MPOL_F_RELATIVE_NODES" in flags:
        raise ConfigError(f"{f.path}.flags", "MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES exclude each other")
    return MemoryPolicy(mode, nodes, flags)


def parse_id_list(text: str, highest: int) -> list[int] | None:
    """`0-3,7` → [0, 1, 2, 3, 7] (sorted, unique); None when malformed or above `highest`."""
    ids: set[int] = set()
    for token in text.split(","):
        lo, sep, hi = token.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            return None
        first, last = int(lo), int(hi) if sep else int(lo)
        if first > last or last > highest:
            return None
        ids.update(range(first, last + 1))
    return sorted(ids)


def _id_list(f: Field | None, highest: int, what: str) -> list[int]:
    if f is None or f.string().strip() == "":
        return []
    ids = parse_id_list(str(f.value), highest)
    if ids is None:
        raise f.fail(f'invalid {what} list "{f.value}" (expected e.g. "0-3,7", each at most {highest})')
    return ids


def valid_ifname(name: str) -> bool:
    raw = name.encode()
    return (0 < len(raw) < IFNAMSIZ and name not in (".", "..")
            and not any(c in name for c in "/:") and not any(c.isspace() for c in name))


def _net_devices(f: Field, new_ns: set[str]) -> list[NetDevice]:
    devices = []
    seen: set[str] = set()
    for host_name in f.obj():
        field = f'{f.path}."{host_name}"'
        if not valid_ifname(host_name):
            raise ConfigError(field, "not a valid interface name")
        entry = Field(f.value[host_name], field)
        entry.obj()
        name = entry.opt_str("name") or host_name
        if not valid_ifname(name):
            raise ConfigError(f"{field}.name", f'"{name}" is not a valid interface name')
        if name in seen or name == "lo":
            raise ConfigError(f"{field}.name", f'interface name "{name}" is used twice')
        seen.add(name)
        devices.append(NetDevice(host_name, name))
    if devices and "network" not in new_ns:
        raise f.fail("needs a new network namespace in linux.namespaces")
    return devices
