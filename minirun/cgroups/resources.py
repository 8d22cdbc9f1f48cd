"""linux.resources (runtime-spec config-linux.md "Control groups") → typed objects, checked field by field.

Every member is None when the config leaves it out, so a driver writes exactly what was asked and
`update` can tell "not given" from "set to 0". Lists are None when absent and [] when given empty.
The checks here are the ones that hold whatever the cgroup version; what only the kernel can judge
(a memory limit below current usage, a cpuset outside the host's CPUs) is left to the kernel, whose
refusal the driver reports naming the same field.

Zero, as runc reads it, means "not set" for memory.limit/reservation/swap/kernel/kernelTCP,
cpu.shares/quota and blockIO weights: drivers skip those.
"""

from __future__ import annotations

from minirun.cgroups import convert
from minirun.errors import ConfigError
from minirun.spec.reader import UINT32_MAX, Field

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

    from minirun.spec.model import Device

INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
UINT16_MAX = 2**16 - 1
# cgroup files that move processes or restructure the tree: not resources, and writing them from a config
# would let it move arbitrary pids into the container's cgroup.
_UNIFIED_FORBIDDEN = ("cgroup.procs", "cgroup.threads", "cgroup.kill", "tasks")
_UNIFIED_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class Memory:
    __slots__ = ("check_before_update", "disable_oom_killer", "kernel", "kernel_tcp", "limit", "reservation",
                 "swap", "swappiness", "use_hierarchy")

    def __init__(self) -> None:
        self.limit: int | None = None  # bytes, -1 unlimited
        self.reservation: int | None = None
        self.swap: int | None = None  # memory + swap, as v1's memsw
        self.kernel: int | None = None
        self.kernel_tcp: int | None = None
        self.swappiness: int | None = None
        self.disable_oom_killer: bool | None = None
        self.use_hierarchy: bool | None = None
        self.check_before_update: bool | None = None


class Cpu:
    __slots__ = ("burst", "cpus", "idle", "mems", "period", "quota", "realtime_period", "realtime_runtime",
                 "shares")

    def __init__(self) -> None:
        self.shares: int | None = None
        self.quota: int | None = None  # microseconds per period, -1 unlimited
        self.burst: int | None = None
        self.period: int | None = None
        self.realtime_runtime: int | None = None
        self.realtime_period: int | None = None
        self.cpus: str | None = None  # kernel list syntax, e.g. "0-3,6"
        self.mems: str | None = None
        self.idle: int | None = None


class Pids:
    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        self.limit = limit  # <= 0: no limit


class WeightDevice:
    __slots__ = ("leaf_weight", "major", "minor", "weight")

    def __init__(self, major: int, minor: int, weight: int | None, leaf_weight: int | None) -> None:
        self.major, self.minor, self.weight, self.leaf_weight = major, minor, weight, leaf_weight


class ThrottleDevice:
    __slots__ = ("major", "minor", "rate")

    def __init__(self, major: int, minor: int, rate: int) -> None:
        self.major, self.minor, self.rate = major, minor, rate


class BlockIO:
    __slots__ = ("leaf_weight", "throttle_read_bps_device", "throttle_read_iops_device",
                 "throttle_write_bps_device", "throttle_write_iops_device", "weight", "weight_device")

    def __init__(self) -> None:
        self.weight: int | None = None
        self.leaf_weight: int | None = None
        self.weight_device: list[WeightDevice] | None = None
        self.throttle_read_bps_device: list[ThrottleDevice] | None = None
        self.throttle_write_bps_device: list[ThrottleDevice] | None = None
        self.throttle_read_iops_device: list[ThrottleDevice] | None = None
        self.throttle_write_iops_device: list[ThrottleDevice] | None = None

    def throttles(self) -> list[tuple[str, str, list[ThrottleDevice]]]:
        """(OCI key, v1 file suffix, entries) for every throttle list that was given."""
        out = []
        for key, suffix, entries in (
            ("throttleReadBpsDevice", "read_bps_device", self.throttle_read_bps_device),
            ("throttleWriteBpsDevice", "write_bps_device", self.throttle_write_bps_device),
            ("throttleReadIOPSDevice", "read_iops_device", self.throttle_read_iops_device),
            ("throttleWriteIOPSDevice", "write_iops_device", self.throttle_write_iops_device),
        ):
            if entries is not None:
                out.append((key, suffix, entries))
        return out


class HugepageLimit:
    __slots__ = ("file_part", "limit", "page_size")

    def __init__(self, page_size: str, limit: int) -> None:
        self.page_size = page_size  # as written in the config, e.g. "2MB"
        self.file_part = convert.hugepage_file_part(page_size)  # as the kernel names it in hugetlb.<part>.*
        self.limit = limit


class InterfacePriority:
    __slots__ = ("name", "priority")

    def __init__(self, name: str, priority: int) -> None:
        self.name, self.priority = name, priority


class Network:
    __slots__ = ("class_id", "priorities")

    def __init__(self) -> None:
        self.class_id: int | None = None
        self.priorities: list[InterfacePriority] | None = None


class RdmaLimit:
    __slots__ = ("hca_handles", "hca_objects")

    def __init__(self, hca_handles: int | None, hca_objects: int | None) -> None:
        self.hca_handles, self.hca_objects = hca_handles, hca_objects


class DeviceRule:
    """One entry of the device allow-list; major/minor None is the wildcard `*`."""

    __slots__ = ("access", "allow", "major", "minor", "type")

    def __init__(self, allow: bool, type: str = "a", major: int | None = None, minor: int | None = None,
                 access: str = "rwm") -> None:
        self.allow, self.type, self.major, self.minor, self.access = allow, type, major, minor, access

    def line(self) -> str:
        """The v1 devices.allow/devices.deny syntax: "c 1:3 rwm", "c 136:* rwm", "a *:* rwm"."""
        major = "*" if self.major is None else str(self.major)
        minor = "*" if self.minor is None else str(self.minor)
        return f"{self.type} {major}:{minor} {self.access}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"allow": self.allow, "type": self.type, "access": self.access}
        if self.major is not None:
            out["major"] = self.major
        if self.minor is not None:
            out["minor"] = self.minor
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DeviceRule) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.line()) ^ self.allow

    def __repr__(self) -> str:
        return f"DeviceRule({'allow' if self.allow else 'deny'} {self.line()})"


# The devices every container gets whatever linux.resources.devices says, because minirun creates
# them in /dev (runtime-spec "Default Devices" plus /dev/ptmx and the devpts nodes), as runc allows them.
DEFAULT_DEVICE_RULES = [
    DeviceRule(True, "c", 1, 3),  # /dev/null
    DeviceRule(True, "c", 1, 5),  # /dev/zero
    DeviceRule(True, "c", 1, 7),  # /dev/full
    DeviceRule(True, "c", 1, 8),  # /dev/random
    DeviceRule(True, "c", 1, 9),  # /dev/urandom
    DeviceRule(True, "c", 5, 0),  # /dev/tty
    DeviceRule(True, "c", 5, 2),  # /dev/ptmx
    DeviceRule(True, "c", 136, None),  # /dev/pts/*
]


def device_rules_for(devices: list[Device]) -> list[DeviceRule]:
    """Allow rules for linux.devices entries (the nodes minirun creates in the container's /dev).

    "u" is an unbuffered character device; fifos ("p") are not governed by the device controller.
    """
    rules = []
    for d in devices:
        if d.type in ("c", "u", "b"):
            rules.append(DeviceRule(True, "b" if d.type == "b" else "c", d.major, d.minor, "rwm"))
    return rules


class Resources:
    """linux.resources, parsed. `raw` is the JSON it came from (kept for `update`); `prefix` is where it
    sits in the config, so that drivers name fields the way the user wrote them."""

    __slots__ = ("block_io", "cpu", "devices", "hugepage_limits", "memory", "network", "pids", "prefix", "raw",
                 "rdma", "unified")

    def __init__(self, raw: dict[str, Any] | None = None, prefix: str = "linux.resources") -> None:
        self.raw: dict[str, Any] = raw if raw is not None else {}
        self.prefix = prefix
        self.memory: Memory | None = None
        self.cpu: Cpu | None = None
        self.pids: Pids | None = None
        self.block_io: BlockIO | None = None
        self.hugepage_limits: list[HugepageLimit] | None = None
        self.network: Network | None = None
        self.rdma: dict[str, RdmaLimit] | None = None
        self.unified: dict[str, str] | None = None
        self.devices: list[DeviceRule] | None = None

    def field(self, *parts: str) -> str:
        """The dotted config name of a member: field("memory", "limit") → linux.resources.memory.limit."""
        return ".".join((self.prefix, *parts))


def parse_resources(raw: Any, field_prefix: str = "linux.resources") -> Resources:
    top = Field(raw, field_prefix)
    res = Resources(top.obj(), field_prefix)
    section = top.get("memory")
    if section is not None:
        res.memory = _memory(section)
    section = top.get("cpu")
    if section is not None:
        res.cpu = _cpu(section)
    section = top.get("pids")
    if section is not None:
        section.obj()
        res.pids = Pids(section.need("limit").integer(-INT64_MAX - 1, INT64_MAX))
    section = top.get("blockIO")
    if section is not None:
        res.block_io = _block_io(section)
    section = top.get("hugepageLimits")
    if section is not None:
        res.hugepage_limits = _hugepages(section)
    section = top.get("network")
    if section is not None:
        res.network = _network(section)
    section = top.get("rdma")
    if section is not None:
        res.rdma = _rdma(section)
    section = top.get("unified")
    if section is not None:
        res.unified = _unified(section)
    section = top.get("devices")
    if section is not None:
        res.devices = [_device_rule(d) for d in section.items()]
    return res


def merge_raw(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`update`'s rule on JSON: members of `new` replace those of `old`; objects merge member by member
    (unified and rdma key by key); arrays are replaced whole; null or absent members leave `old` alone."""
    out = dict(old)
    for key, value in new.items():
        if value is None:
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_raw(out[key], value)
        else:
            out[key] = value
    return out


def merge(old: Resources, new: Resources) -> Resources:
    """The resources after `update`: `new`'s fields on top of `old`'s, checked again as a whole (a new
    memory.limit must still fit under the old memory.swap)."""
    return parse_resources(merge_raw(old.raw, new.raw), old.prefix)


# --- sections -------------------------------------------------------------------------------------


def _limit(f: Field) -> int:
    """A byte limit: -1 (unlimited) or a non-negative int64."""
    value = f.integer(-1, INT64_MAX)
    return value


def _memory(f: Field) -> Memory:
    f.obj()
    m = Memory()
    for attr, key in (("limit", "limit"), ("reservation", "reservation"), ("swap", "swap"), ("kernel", "kernel"),
                      ("kernel_tcp", "kernelTCP")):
        child = f.get(key)
        if child is not None:
            setattr(m, attr, _limit(child))
    m.swappiness = f.opt_int("swappiness", 0, 100)
    for attr, key in (("disable_oom_killer", "disableOOMKiller"), ("use_hierarchy", "useHierarchy"),
                      ("check_before_update", "checkBeforeUpdate")):
        child = f.get(key)
        if child is not None:
            setattr(m, attr, child.boolean())
    if m.swap and m.swap > 0 and m.limit and m.limit > 0 and m.swap < m.limit:
        raise ConfigError(f"{f.path}.swap", f"{m.swap} is below memory.limit {m.limit} "
                          "(memory.swap counts memory plus swap, so it must be at least the limit)")
    if m.swap and m.swap > 0 and m.limit == -1:
        raise ConfigError(f"{f.path}.swap", "a limited memory.swap needs a limited memory.limit, not -1")
    return m


def _cpu(f: Field) -> Cpu:
    f.obj()
    c = Cpu()
    c.shares = f.opt_int("shares", 0, UINT64_MAX)
    if c.shares and not convert.MIN_SHARES <= c.shares <= convert.MAX_SHARES:
        raise ConfigError(f"{f.path}.shares", f"{c.shares} is out of range [{convert.MIN_SHARES}, "
                          f"{convert.MAX_SHARES}] (0 for not set)")
    c.quota = f.opt_int("quota", -1, INT64_MAX)
    # The scheduler's bounds (kernel/sched/core.c): a CFS quota and period are at least 1 ms, a period at most 1 s.
    if c.quota is not None and 0 < c.quota < 1000:
        raise ConfigError(f"{f.path}.quota", f"{c.quota} is below the kernel's minimum of 1000 microseconds")
    c.period = f.opt_int("period", 0, UINT64_MAX)
    if c.period and not 1000 <= c.period <= 1000000:
        raise ConfigError(f"{f.path}.period", f"{c.period} is out of the kernel's range [1000, 1000000] microseconds")
    c.burst = f.opt_int("burst", 0, UINT64_MAX)
    if c.burst and c.quota is not None and c.quota > 0 and c.burst > c.quota:
        raise ConfigError(f"{f.path}.burst", f"{c.burst} is larger than cpu.quota {c.quota}")
    c.realtime_runtime = f.opt_int("realtimeRuntime", -1, INT64_MAX)
    c.realtime_period = f.opt_int("realtimePeriod", 0, UINT64_MAX)
    if (c.realtime_runtime is not None and c.realtime_runtime > 0 and c.realtime_period
            and c.realtime_runtime > c.realtime_period):
        raise ConfigError(f"{f.path}.realtimeRuntime",
                          f"{c.realtime_runtime} is larger than cpu.realtimePeriod {c.realtime_period}")
    for attr, key in (("cpus", "cpus"), ("mems", "mems")):
        child = f.get(key)
        if child is not None:
            text = child.string()
            try:
                convert.parse_cpu_list(text)
            except ValueError as e:
                raise child.fail(str(e)) from None
            setattr(c, attr, text)
    c.idle = f.opt_int("idle", 0, 1)
    return c


def _major_minor(f: Field) -> tuple[int, int]:
    return f.need("major").integer(0, UINT32_MAX), f.need("minor").integer(0, UINT32_MAX)


def _blkio_weight(f: Field, key: str) -> int | None:
    value = f.opt_int(key, 0, UINT16_MAX)
    if value and not convert.MIN_BLKIO_WEIGHT <= value <= convert.MAX_BLKIO_WEIGHT:
        raise ConfigError(f"{f.path}.{key}", f"{value} is out of range [{convert.MIN_BLKIO_WEIGHT}, "
                          f"{convert.MAX_BLKIO_WEIGHT}] (0 for not set)")
    return value


def _block_io(f: Field) -> BlockIO:
    f.obj()
    b = BlockIO()
    b.weight = _blkio_weight(f, "weight")
    b.leaf_weight = _blkio_weight(f, "leafWeight")
    child = f.get("weightDevice")
    if child is not None:
        b.weight_device = []
        for entry in child.items():
            entry.obj()
            major, minor = _major_minor(entry)
            weight, leaf = _blkio_weight(entry, "weight"), _blkio_weight(entry, "leafWeight")
            if weight is None and leaf is None:
                raise entry.fail("needs weight or leafWeight")
            b.weight_device.append(WeightDevice(major, minor, weight, leaf))
    for key, attr in (("throttleReadBpsDevice", "throttle_read_bps_device"),
                      ("throttleWriteBpsDevice", "throttle_write_bps_device"),
                      ("throttleReadIOPSDevice", "throttle_read_iops_device"),
                      ("throttleWriteIOPSDevice", "throttle_write_iops_device")):
        child = f.get(key)
        if child is not None:
            entries = []
            for entry in child.items():
                entry.obj()
                major, minor = _major_minor(entry)
                entries.append(ThrottleDevice(major, minor, entry.need("rate").integer(0, UINT64_MAX)))
            setattr(b, attr, entries)
    return b


def _hugepages(f: Field) -> list[HugepageLimit]:
    out = []
    seen: dict[str, str] = {}
    for entry in f.items():
        entry.obj()
        size_field = entry.need("pageSize")
        size = size_field.string()
        limit = entry.need("limit").integer(0, UINT64_MAX)
        try:
            hp = HugepageLimit(size, limit)
        except ValueError as e:
            raise size_field.fail(str(e)) from None
        if hp.file_part in seen:
            raise size_field.fail(f"{size!r} is given twice (also at {seen[hp.file_part]})")
        seen[hp.file_part] = size_field.path
        out.append(hp)
    return out


def _network(f: Field) -> Network:
    f.obj()
    n = Network()
    n.class_id = f.opt_int("classID", 0, UINT32_MAX)
    child = f.get("priorities")
    if child is not None:
        n.priorities = []
        for entry in child.items():
            entry.obj()
            name_field = entry.need("name")
            name = name_field.string()
            # An interface name (IFNAMSIZ 16 with the NUL); whitespace would split net_prio.ifpriomap's line.
            if not name or len(name) > 15 or any(ch.isspace() or ch == "/" for ch in name):
                raise name_field.fail(f"{name!r} is not an interface name")
            n.priorities.append(InterfacePriority(name, entry.need("priority").integer(0, UINT32_MAX)))
    return n


def _rdma(f: Field) -> dict[str, RdmaLimit]:
    out = {}
    for device, value in f.obj().items():
        entry = Field(value, f"{f.path}[{device!r}]")
        entry.obj()
        if not device or any(ch.isspace() for ch in device):
            raise entry.fail("is not a device name")
        handles, objects = entry.opt_int("hcaHandles", 0, UINT32_MAX), entry.opt_int("hcaObjects", 0, UINT32_MAX)
        if handles is None and objects is None:
            raise entry.fail("needs hcaHandles or hcaObjects")
        out[device] = RdmaLimit(handles, objects)
    return out


def _unified(f: Field) -> dict[str, str]:
    out = {}
    for key, value in f.obj().items():
        entry = Field(value, f"{f.path}[{key!r}]")
        problem = _unified_key_problem(key)
        if problem:
            raise entry.fail(problem)
        out[key] = entry.string()
    return out


def _unified_key_problem(key: str) -> str:
    """Why `key` cannot name a file of the container's cgroup directory, or "" when it can."""
    if not key:
        return "an empty key names no cgroup file"
    if "/" in key or ".." in key:
        return "a key names one file of the container's cgroup; `/` and `..` would leave it"
    if any(ch not in _UNIFIED_CHARS for ch in key):
        return "a key is a cgroup file name: letters, digits, `_`, `-` and `.` only"
    controller, dot, name = key.partition(".")
    if not dot or not controller or not name or name.endswith("."):
        return "a key must look like <controller>.<name>, e.g. memory.high"
    if key in _UNIFIED_FORBIDDEN:
        return f"{key} moves processes, it is not a resource"
    return ""


def _device_rule(f: Field) -> DeviceRule:
    f.obj()
    allow = f.need("allow").boolean()
    kind = f.opt_str("type", "a") or "a"
    if kind not in ("a", "c", "b"):
        raise ConfigError(f"{f.path}.type", f"{kind!r} is not a, c or b")
    major, minor = _wildcard(f, "major"), _wildcard(f, "minor")
    access = f.opt_str("access", "rwm") or "rwm"
    if any(ch not in "rwm" for ch in access) or len(set(access)) != len(access):
        raise ConfigError(f"{f.path}.access", f"{access!r} is not a combination of r, w and m")
    # Normalise the order so that rules compare equal to what the kernel lists back ("rwm", "rw", "m").
    access = "".join(ch for ch in "rwm" if ch in access)
    return DeviceRule(allow, kind, major, minor, access)


def _wildcard(f: Field, key: str) -> int | None:
    """major/minor: absent, null or -1 (what runc writes for `*`) mean every number."""
    value = f.opt_int(key, -1, UINT32_MAX)
    return None if value is None or value == -1 else value
