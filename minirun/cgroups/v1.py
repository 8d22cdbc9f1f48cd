"""The cgroup v1 driver (v1 and hybrid hosts): one directory per mounted controller hierarchy.

The hierarchies come from /proc/self/mountinfo; named ones (name=systemd) and the cgroup2 mount of a
hybrid host are left alone. The container's directory in each is placed by cgroups.paths.
`apply` records every directory it creates, so `destroy` removes exactly those (leaf first) plus the
`minirun` directory the default path puts them in, once nothing else uses it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time

from minirun.cgroups import convert, paths
from minirun.cgroups.base import Manager, int_or_zero, is_zombie, read_file, read_keyed, read_text, write_file
from minirun.cgroups.resources import DEFAULT_DEVICE_RULES, DeviceRule, parse_resources
from minirun.errors import ConfigError, KernelError, MinirunError
from minirun.log import logger

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

    from minirun.cgroups.resources import Resources

FIELD = paths.FIELD  # linux.cgroupsPath
# Errno 524 is the kernel-internal ENOTSUPP (include/linux/errno.h), which some cgroup files return to
# userspace; Python's errno module does not know it. Kernels 5.16-6.0 answered kmem limits with it.
_ENOTSUPP = 524
FREEZE_TIMEOUT = 5.0  # seconds for freezer.state to go from FREEZING to FROZEN
KILL_TIMEOUT = 10.0  # seconds for SIGKILLed processes to leave the cgroup
# Hierarchies in which pids() looks first; any hierarchy holds every process of the container.
_PREFERRED = ("freezer", "pids", "memory", "cpu", "devices")


class V1Manager(Manager):
    mode = "v1"

    def __init__(self, path: str) -> None:
        self.path = path  # linux.cgroupsPath as given, or the default minirun/<id>
        self.dirs: dict[str, str] = {}  # controller → the container's directory (co-mounted ones share it)
        self.tops: dict[str, str] = {}  # container directory → the existing directory placement starts from
        self.created: list[str] = []  # directories apply() made, parents before children
        self.extra_rules: list[DeviceRule] = []  # allow rules for linux.devices, kept for `update`
        # Whether apply() got as far as taking the cgroup: until then destroy() must not kill what is in
        # it (apply refuses a cgroup that already holds someone else's processes).
        self.applied = False
        for h in paths.hierarchies():
            controllers = [c for c in h.controllers if not c.startswith("name=")]
            if h.fstype != "cgroup" or not controllers:
                continue  # name=systemd and a hybrid host's cgroup2 belong to the init system
            cgroup = paths.resolve(path, "v1", controllers[0])
            own = paths.own_cgroup(controllers[0])
            leaf = h.directory(cgroup)
            below_own = paths.relative_to(cgroup, own) != ""
            self.tops[leaf] = h.directory(own) if below_own else h.directory(h.root)
            for c in controllers:
                self.dirs[c] = leaf

    # --- placement ---------------------------------------------------------------------------------

    def leaves(self) -> list[str]:
        """The container's directory in every hierarchy, once each."""
        return sorted(set(self.dirs.values()))

    def apply(self, pid: int) -> None:
        # A container needs a cgroup of its own: joining one with processes in it would make `delete`
        # kill them too.
        for leaf in self.leaves():
            others = _procs(leaf)
            if others:
                raise ConfigError(FIELD, f"cgroup {leaf} already holds processes {others[:5]}; a container "
                                  "needs a cgroup of its own")
        cpuset = self.dirs.get("cpuset")
        for leaf in self.leaves():
            self._make(leaf, self.tops[leaf], leaf == cpuset)
        self.applied = True
        for leaf in self.leaves():
            write_file(os.path.join(leaf, "cgroup.procs"), str(pid), FIELD)

    def _make(self, leaf: str, top: str, cpuset: bool) -> None:
        names = leaf[len(top):].strip("/").split("/")
        # Another container's destroy may remove the shared `minirun` directory between our mkdirs:
        # start again from the top when a parent vanishes.
        for _ in range(10):
            current = top
            try:
                for name in names:
                    current = os.path.join(current, name)
                    try:
                        os.mkdir(current, 0o755)
                    except FileExistsError:
                        pass
                    else:
                        if current not in self.created:
                            self.created.append(current)
                    if cpuset:
                        # v1 refuses tasks in a cpuset whose cpus or mems are empty, and a new cpuset
                        # starts empty: give it its parent's.
                        _inherit_cpuset(current)
                return
            except FileNotFoundError:
                continue
            except OSError as e:
                raise KernelError(f"{FIELD}: mkdir {current}", e.errno or errno.EIO) from None
        raise KernelError(f"{FIELD}: mkdir {leaf}", errno.ENOENT)

    # --- limits ------------------------------------------------------------------------------------

    def _dir(self, controller: str, field: str) -> str:
        d = self.dirs.get(controller)
        if d is None:
            raise ConfigError(field, f"needs the {controller} cgroup controller, which is not mounted on this host")
        return d

    def _file(self, controller: str, name: str, field: str) -> str:
        return os.path.join(self._dir(controller, field), name)

    def _write(self, controller: str, name: str, value: object, field: str) -> None:
        write_file(self._file(controller, name, field), str(value), field)

    def set(self, resources: Resources, extra_device_rules: list[DeviceRule] | None = None) -> None:
        """Write every limit in `resources`. `extra_device_rules` allow linux.devices' nodes; when None,
        those remembered from the last call (saved in state.json) are used, so `update` keeps them."""
        if extra_device_rules is not None:
            self.extra_rules = list(extra_device_rules)
        if resources.unified:
            raise ConfigError(resources.field("unified"), "cgroup v2 files cannot be set on this cgroup v1 host")
        self._set_memory(resources)
        self._set_cpu(resources)
        if resources.pids is not None:
            self._write("pids", "pids.max", convert.pids_max(resources.pids.limit), resources.field("pids", "limit"))
        self._set_blkio(resources)
        self._set_hugetlb(resources)
        self._set_network(resources)
        self._set_rdma(resources)
        self._set_devices(resources)

    def _set_memory(self, r: Resources) -> None:
        m = r.memory
        if m is None:
            return
        limit = m.limit or None  # 0 is "not set"
        swap = m.swap or None
        memsw = self._file("memory", "memory.memsw.limit_in_bytes", r.field("memory"))
        if limit == -1 and swap is None and os.path.exists(memsw):
            swap = -1  # an unlimited memory limit above a limited memory+swap is refused by the kernel
        if swap is not None and not os.path.exists(memsw):
            if swap != -1:
                raise ConfigError(r.field("memory", "swap"), "this kernel does not account swap (no "
                                  "memory.memsw.limit_in_bytes: boot with swapaccount=1)")
            swap = None
        writes = []
        if limit is not None:
            writes.append((self._file("memory", "memory.limit_in_bytes", r.field("memory", "limit")), str(limit),
                           r.field("memory", "limit")))
        if swap is not None:
            writes.append((memsw, str(swap), r.field("memory", "swap")))
        if len(writes) == 2 and limit is not None:
            # The kernel keeps memory.limit <= memory+swap at every step: lower the limit first when it
            # fits under the current memory+swap, else raise memory+swap first.
            current_memsw = int(read_file(memsw).strip())
            if limit == -1 or limit > current_memsw:
                writes.reverse()
        for path, value, field in writes:
            write_file(path, value, field)
        if m.reservation:
            self._write("memory", "memory.soft_limit_in_bytes", m.reservation, r.field("memory", "reservation"))
        if m.kernel:
            self._write_kmem("memory.kmem.limit_in_bytes", m.kernel, r.field("memory", "kernel"))
        if m.kernel_tcp:
            self._write_kmem("memory.kmem.tcp.limit_in_bytes", m.kernel_tcp, r.field("memory", "kernelTCP"))
        if m.swappiness is not None:
            self._write("memory", "memory.swappiness", m.swappiness, r.field("memory", "swappiness"))
        if m.disable_oom_killer is not None:
            self._write("memory", "memory.oom_control", int(m.disable_oom_killer),
                        r.field("memory", "disableOOMKiller"))
        if m.use_hierarchy is not None:
            path = self._file("memory", "memory.use_hierarchy", r.field("memory", "useHierarchy"))
            # Recent kernels only allow 1 (writing 0 is EINVAL): write only a change, so that asking for
            # what is already there never fails.
            if read_file(path).strip() != str(int(m.use_hierarchy)):
                write_file(path, str(int(m.use_hierarchy)), r.field("memory", "useHierarchy"))
        # checkBeforeUpdate needs nothing on v1: the kernel itself refuses a limit below usage (EBUSY).

    def _write_kmem(self, name: str, value: int, field: str) -> None:
        """Kernel memory limits are gone from recent kernels: accepted, and ignored where they are gone."""
        path = self._file("memory", name, field)
        if not os.path.exists(path):
            logger.debug(f"{field}: this kernel has no {name}; ignored")
            return
        try:
            write_file(path, str(value), field)
        except KernelError as e:
            if e.errno not in (errno.EOPNOTSUPP, _ENOTSUPP):
                raise
            logger.debug(f"{field}: this kernel no longer enforces {name}; ignored")

    def _set_cpu(self, r: Resources) -> None:
        c = r.cpu
        if c is None:
            return
        if c.shares:
            self._write("cpu", "cpu.shares", c.shares, r.field("cpu", "shares"))
        writes: list[tuple[str, str, str]] = []
        if c.period:
            field = r.field("cpu", "period")
            writes.append((self._file("cpu", "cpu.cfs_period_us", field), str(c.period), field))
        if c.quota:
            field = r.field("cpu", "quota")
            writes.append((self._file("cpu", "cpu.cfs_quota_us", field), str(c.quota), field))
        if c.burst is not None:
            burst = self._file("cpu", "cpu.cfs_burst_us", r.field("cpu", "burst"))
            if not os.path.exists(burst):
                raise ConfigError(r.field("cpu", "burst"), "this kernel has no cpu.cfs_burst_us")
            entry = (burst, str(c.burst), r.field("cpu", "burst"))
            # burst <= quota at every step: a burst that goes down goes first, one that goes up last.
            current = int(read_file(burst).strip())
            if c.burst < current:
                writes.insert(0, entry)
            else:
                writes.append(entry)
        _write_in_order(writes)
        rt: list[tuple[str, str, str]] = []
        if c.realtime_period:
            rt.append((self._file("cpu", "cpu.rt_period_us", r.field("cpu", "realtimePeriod")),
                       str(c.realtime_period), r.field("cpu", "realtimePeriod")))
        if c.realtime_runtime is not None:
            rt.append((self._file("cpu", "cpu.rt_runtime_us", r.field("cpu", "realtimeRuntime")),
                       str(c.realtime_runtime), r.field("cpu", "realtimeRuntime")))
        for path, _, field in rt:
            if not os.path.exists(path):
                raise ConfigError(field, "this kernel has no real-time group scheduling (no "
                                  f"{os.path.basename(path)})")
        _write_in_order(rt)
        if c.idle is not None:
            path = self._file("cpu", "cpu.idle", r.field("cpu", "idle"))
            if not os.path.exists(path):
                raise ConfigError(r.field("cpu", "idle"), "this kernel has no cpu.idle")
            write_file(path, str(c.idle), r.field("cpu", "idle"))
        if c.cpus:  # "" is "not set": an empty cpuset would refuse the container's tasks
            self._write("cpuset", "cpuset.cpus", c.cpus, r.field("cpu", "cpus"))
        if c.mems:
            self._write("cpuset", "cpuset.mems", c.mems, r.field("cpu", "mems"))

    def _set_blkio(self, r: Resources) -> None:
        b = r.block_io
        if b is None:
            return

        def weight_file(cfq: str, bfq: str, field: str) -> str:
            # CFQ's files (gone with the legacy block layer) or BFQ's, whichever the kernel has.
            for name in (cfq, bfq):
                path = self._file("blkio", name, field)
                if os.path.exists(path):
                    return path
            raise ConfigError(field, f"this kernel has neither blkio.{cfq[6:]} nor blkio.{bfq[6:]}")

        def leaf_file(name: str, field: str) -> str:
            path = self._file("blkio", name, field)
            if not os.path.exists(path):
                raise ConfigError(field, f"this kernel has no {name} (leaf weights were CFQ's)")
            return path

        if b.weight:
            field = r.field("blockIO", "weight")
            write_file(weight_file("blkio.weight", "blkio.bfq.weight", field), str(b.weight), field)
        if b.leaf_weight:
            field = r.field("blockIO", "leafWeight")
            write_file(leaf_file("blkio.leaf_weight", field), str(b.leaf_weight), field)
        for i, wd in enumerate(b.weight_device or []):
            field = r.field("blockIO", f"weightDevice[{i}]")
            if wd.weight:
                path = weight_file("blkio.weight_device", "blkio.bfq.weight_device", field)
                write_file(path, f"{wd.major}:{wd.minor} {wd.weight}", field)
            if wd.leaf_weight:
                write_file(leaf_file("blkio.leaf_weight_device", field), f"{wd.major}:{wd.minor} {wd.leaf_weight}",
                           field)
        for key, suffix, entries in b.throttles():
            for i, t in enumerate(entries):
                field = r.field("blockIO", f"{key}[{i}]")
                self._write("blkio", f"blkio.throttle.{suffix}", f"{t.major}:{t.minor} {t.rate}", field)

    def _set_hugetlb(self, r: Resources) -> None:
        for i, hp in enumerate(r.hugepage_limits or []):
            field = r.field(f"hugepageLimits[{i}]")
            limit = self._file("hugetlb", f"hugetlb.{hp.file_part}.limit_in_bytes", field)
            if not os.path.exists(limit):
                raise ConfigError(f"{field}.pageSize", f"this kernel has no {hp.page_size} huge pages "
                                  f"(no {os.path.basename(limit)})")
            write_file(limit, str(hp.limit), field)
            # Where the kernel also accounts reservations, limit those too: the spec prefers them.
            rsvd = self._file("hugetlb", f"hugetlb.{hp.file_part}.rsvd.limit_in_bytes", field)
            if os.path.exists(rsvd):
                write_file(rsvd, str(hp.limit), field)

    def _set_network(self, r: Resources) -> None:
        n = r.network
        if n is None:
            return
        if n.class_id is not None:
            self._write("net_cls", "net_cls.classid", n.class_id, r.field("network", "classID"))
        for i, p in enumerate(n.priorities or []):
            self._write("net_prio", "net_prio.ifpriomap", f"{p.name} {p.priority}",
                        r.field("network", f"priorities[{i}]"))

    def _set_rdma(self, r: Resources) -> None:
        for device, lim in (r.rdma or {}).items():
            parts = [device]
            if lim.hca_handles is not None:
                parts.append(f"hca_handle={lim.hca_handles}")
            if lim.hca_objects is not None:
                parts.append(f"hca_object={lim.hca_objects}")
            self._write("rdma", "rdma.max", " ".join(parts), r.field(f"rdma[{device!r}]"))

    def _set_devices(self, r: Resources) -> None:
        if r.devices is None and not self.extra_rules:
            return  # nothing asked: the cgroup keeps what it inherited
        d = self._dir("devices", r.field("devices"))
        program: list[tuple[DeviceRule, str]] = [(rule, r.field(f"devices[{i}]"))
                                                 for i, rule in enumerate(r.devices or [])]
        program += [(rule, f"{r.field('devices')} (default device {rule.line()})") for rule in DEFAULT_DEVICE_RULES]
        program += [(rule, f"linux.devices ({rule.line()})") for rule in self.extra_rules]
        # Rewriting an unchanged list (every `update` does) would deny everything for a moment: skip
        # it when the kernel already holds exactly the list the rules produce.
        target = emulate_device_rules([rule for rule, _ in program])
        if target is not None and not target[0]:
            try:
                current = read_device_list(os.path.join(d, "devices.list"))
            except OSError:
                current = None
            if current == target:
                logger.debug(f"{r.field('devices')}: {d} already has these device rules")
                return
        for rule, field in program:
            name = "devices.allow" if rule.allow else "devices.deny"
            write_file(os.path.join(d, name), "a" if rule.type == "a" else rule.line(), field)

    # --- freezer -----------------------------------------------------------------------------------

    def freezer_state_file(self) -> str:
        d = self.dirs.get("freezer")
        return os.path.join(d, "freezer.state") if d else ""

    def _freezer(self, verb: str) -> str:
        path = self.freezer_state_file()
        if not path:
            raise KernelError(f"{verb}: no freezer cgroup hierarchy is mounted", errno.ENOENT)
        return path

    def freeze(self) -> None:
        path = self._freezer("pause")
        deadline = time.monotonic() + FREEZE_TIMEOUT
        delay = 0.001
        while True:
            # Writing again is how v1 retries the tasks that could not be frozen the first time.
            write_file(path, "FROZEN", "pause")
            if read_file(path).strip() == "FROZEN":
                return
            if time.monotonic() > deadline:
                with contextlib.suppress(KernelError):
                    write_file(path, "THAWED", "pause")
                raise KernelError(f"pause: {path} stayed FREEZING for {FREEZE_TIMEOUT:g} s", errno.EBUSY)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def thaw(self) -> None:
        path = self._freezer("resume")
        write_file(path, "THAWED", "resume")
        deadline = time.monotonic() + FREEZE_TIMEOUT
        while read_file(path).strip() != "THAWED":
            if time.monotonic() > deadline:
                raise KernelError(f"resume: {path} did not become THAWED", errno.EBUSY)
            time.sleep(0.001)

    def frozen(self) -> bool:
        path = self.freezer_state_file()
        try:
            return bool(path) and read_file(path).strip() == "FROZEN"
        except FileNotFoundError:
            return False

    # --- processes and stats -----------------------------------------------------------------------

    def pids(self) -> list[int]:
        """Every process in the container's cgroups, subgroups included, in any hierarchy (a process
        moved out of one hierarchy is still the container's while it is in another)."""
        found: set[int] = set()
        for leaf in self.leaves():
            found.update(_procs(leaf))
        return sorted(found)

    def stats(self) -> dict[str, Any]:
        for leaf in self.leaves():
            if not os.path.isdir(leaf):
                raise KernelError(f"stats: {leaf}", errno.ENOENT)
        return {
            "cpu": self._cpu_stats(),
            "memory": self._memory_stats(),
            "pids": self._pids_stats(),
            "blkio": self._blkio_stats(),
            "hugetlb": self._hugetlb_stats(),
        }

    def _path(self, controller: str, name: str) -> str:
        d = self.dirs.get(controller)
        return os.path.join(d, name) if d else ""

    def _cpu_stats(self) -> dict[str, Any]:
        def acct(name: str) -> str:
            return self._path("cpuacct", name)

        usage: dict[str, Any] = {
            "total": int_or_zero(acct("cpuacct.usage")),
            "percpu": _ints(acct("cpuacct.usage_percpu")),
            "percpu_kernel": _ints(acct("cpuacct.usage_percpu_sys")),
            "percpu_user": _ints(acct("cpuacct.usage_percpu_user")),
        }
        if os.path.exists(acct("cpuacct.usage_sys")):
            usage["kernel"] = int_or_zero(acct("cpuacct.usage_sys"))
            usage["user"] = int_or_zero(acct("cpuacct.usage_user"))
        else:  # older kernels: only cpuacct.stat, in clock ticks
            ticks = _keyed(acct("cpuacct.stat"))
            ns_per_tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
            usage["kernel"], usage["user"] = ticks.get("system", 0) * ns_per_tick, ticks.get("user", 0) * ns_per_tick
        stat = _keyed(self._path("cpu", "cpu.stat"))
        throttling = {"periods": stat.get("nr_periods", 0), "throttledPeriods": stat.get("nr_throttled", 0),
                      "throttledTime": stat.get("throttled_time", 0)}
        return {"usage": usage, "throttling": throttling}

    def _memory_stats(self) -> dict[str, Any]:
        def entry(prefix: str) -> dict[str, int]:
            def mem(name: str) -> str:
                return self._path("memory", f"{prefix}.{name}")

            return {"usage": int_or_zero(mem("usage_in_bytes")), "max": int_or_zero(mem("max_usage_in_bytes")),
                    "failcnt": int_or_zero(mem("failcnt")), "limit": int_or_zero(mem("limit_in_bytes"))}

        raw = _keyed(self._path("memory", "memory.stat"))
        return {"cache": raw.get("cache", 0), "usage": entry("memory"), "swap": entry("memory.memsw"),
                "kernel": entry("memory.kmem"), "kernelTCP": entry("memory.kmem.tcp"), "raw": raw}

    def _pids_stats(self) -> dict[str, int]:
        limit = read_text(self._path("pids", "pids.max"))
        # runc's shape: 0 for "no limit".
        return {"current": int_or_zero(self._path("pids", "pids.current")),
                "limit": int(limit) if limit.isdigit() else 0}

    def _blkio_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, name in (("ioServiceBytesRecursive", "io_service_bytes_recursive"),
                          ("ioServicedRecursive", "io_serviced_recursive")):
            # CFQ's counters where they exist, else BFQ's, else the throttle layer's (which sees all I/O).
            entries: list[dict[str, Any]] = []
            for prefix in ("blkio.", "blkio.bfq.", "blkio.throttle."):
                path = self._path("blkio", prefix + name)
                if path and os.path.exists(path):
                    entries = _blkio_entries(path)
                    break
            out[key] = entries
        return out

    def _hugetlb_stats(self) -> dict[str, Any]:
        d = self.dirs.get("hugetlb")
        out: dict[str, Any] = {}
        if not d:
            return out
        for name in sorted(os.listdir(d)):
            if name.startswith("hugetlb.") and name.endswith(".usage_in_bytes") and ".rsvd." not in name:
                size = name[len("hugetlb."):-len(".usage_in_bytes")]
                out[size] = {"usage": int_or_zero(os.path.join(d, name)),
                             "max": int_or_zero(os.path.join(d, f"hugetlb.{size}.max_usage_in_bytes")),
                             "failcnt": int_or_zero(os.path.join(d, f"hugetlb.{size}.failcnt"))}
        return out

    def oom_kills(self) -> int:
        return _keyed(self._path("memory", "memory.oom_control")).get("oom_kill", 0)

    # --- teardown ----------------------------------------------------------------------------------

    def destroy(self) -> None:
        if not self.applied:
            for d in self._removal_order():
                self._rmdir(d, must=False)
            return
        if self.dirs.get("freezer") and os.path.isdir(self.dirs["freezer"]):
            try:
                self.thaw()  # a frozen process cannot even die
            except FileNotFoundError:
                pass  # removed meanwhile: nothing left to thaw
            except KernelError as e:
                if e.errno != errno.ENOENT:
                    raise
        deadline = time.monotonic() + KILL_TIMEOUT
        while True:
            alive = [pid for pid in self.pids() if not is_zombie(pid)]
            if not alive:
                break
            if time.monotonic() > deadline:
                raise KernelError(f"delete cgroup {self.path}: processes {alive[:5]} survive SIGKILL", errno.EBUSY)
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)
        leaves = self.leaves()
        for leaf in leaves:
            # Cgroups the container made below its own (a nested runtime, systemd) go with it.
            for below, _, _ in os.walk(leaf, topdown=False):
                if below != leaf:
                    self._rmdir(below, must=True)
        for d in self._removal_order():
            self._rmdir(d, must=d in leaves)

    def _removal_order(self) -> list[str]:
        """Leaf first: what apply() created, and the `minirun*` directories between placement and leaf
        (another container may have created the shared `minirun`; the last one out removes it)."""
        candidates = set(self.created)
        for leaf in self.leaves():
            top = self.tops.get(leaf, "")
            parent = os.path.dirname(leaf)
            while top and parent.startswith(top.rstrip("/") + "/"):
                if os.path.basename(parent).startswith("minirun"):
                    candidates.add(parent)
                parent = os.path.dirname(parent)
        return sorted(candidates, key=lambda d: (-d.count("/"), d))

    # --- state -------------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "path": self.path,
            "dirs": dict(self.dirs),
            "tops": dict(self.tops),
            "created": list(self.created),
            "applied": self.applied,
            "freezer_state_file": self.freezer_state_file(),
            "extra_device_rules": [rule.to_json() for rule in self.extra_rules],
        }

    @classmethod
    def from_state(cls, saved: dict[str, Any]) -> V1Manager:
        try:
            manager = cls.__new__(cls)
            manager.path = str(saved["path"])
            manager.dirs = {str(k): str(v) for k, v in saved["dirs"].items()}
            manager.tops = {str(k): str(v) for k, v in saved.get("tops", {}).items()}
            manager.created = [str(d) for d in saved.get("created", [])]
            rules = parse_resources({"devices": saved.get("extra_device_rules", [])}).devices
            manager.extra_rules = rules or []
            manager.applied = bool(saved.get("applied", True))
        except (KeyError, TypeError, AttributeError, ConfigError) as e:
            raise MinirunError(f"state.json: cgroup: malformed v1 cgroup state ({e})") from None
        for d in [*manager.dirs.values(), *manager.created]:
            if not os.path.isabs(d) or "/../" in d + "/":
                raise MinirunError(f"state.json: cgroup: {d!r} is not an absolute cgroup directory")
        return manager


# --- helpers --------------------------------------------------------------------------------------


def _write_in_order(writes: list[tuple[str, str, str]]) -> None:
    """Write related files whose values the kernel checks against each other (quota and period,
    real-time runtime and period): when it refuses the given order (EINVAL), the reverse order is
    tried, since one of the two is valid from wherever the current values are."""
    try:
        for path, value, field in writes:
            write_file(path, value, field)
    except KernelError as first:
        if first.errno != errno.EINVAL or len(writes) < 2:
            raise
        try:
            for path, value, field in reversed(writes):
                write_file(path, value, field)
        except KernelError:
            raise first from None


def _inherit_cpuset(d: str) -> None:
    parent = os.path.dirname(d)
    for name in ("cpuset.cpus", "cpuset.mems"):
        path = os.path.join(d, name)
        if not read_file(path).strip():
            write_file(path, read_file(os.path.join(parent, name)).strip(), f"{FIELD} (copy {name} from {parent})")


def _procs(d: str) -> list[int]:
    """The pids in cgroup `d` and every cgroup below it; [] when it is gone."""
    found: list[int] = []
    for top, _, _ in os.walk(d):
        try:
            text = read_file(os.path.join(top, "cgroup.procs"))
        except FileNotFoundError:
            continue
        found.extend(int(line) for line in text.split())
    return sorted(set(found))


def _ints(path: str) -> list[int]:
    return [int(v) for v in read_text(path).split()]


def _keyed(path: str) -> dict[str, int]:
    if not path:
        return {}
    try:
        return read_keyed(path)
    except FileNotFoundError:
        return {}


def _blkio_entries(path: str) -> list[dict[str, Any]]:
    """ "8:0 Read 4096" lines → {major, minor, op, value}; the closing "Total N" line has no device."""
    entries = []
    for line in read_text(path).splitlines():
        fields = line.split()
        if len(fields) == 3 and ":" in fields[0]:
            major, _, minor = fields[0].partition(":")
            entries.append({"major": int(major), "minor": int(minor), "op": fields[1], "value": int(fields[2])})
    return entries


# --- the device controller's list, as the kernel keeps it -----------------------------------------


def emulate_device_rules(rules: list[DeviceRule]) -> tuple[bool, dict[tuple[str, int | None, int | None], str]] | None:
    """What devices.list will hold after writing `rules` in order: (default allow?, exceptions), or None
    when the result depends on what the cgroup held before (the rules do not start with an `a` rule).

    The kernel's model (security/device_cgroup.c): an `a` rule sets the default and drops every
    exception; any other rule adds an exception when it goes against the default (merging access
    with an exception for the same type:major:minor) and takes access away from one when it agrees.
    """
    default_allow: bool | None = None
    exceptions: dict[tuple[str, int | None, int | None], str] = {}
    for rule in rules:
        if rule.type == "a":
            default_allow, exceptions = rule.allow, {}
            continue
        if default_allow is None:
            return None
        key = (rule.type, rule.major, rule.minor)
        have = exceptions.get(key, "")
        if rule.allow != default_allow:
            exceptions[key] = "".join(ch for ch in "rwm" if ch in have or ch in rule.access)
        elif have:
            left = "".join(ch for ch in have if ch not in rule.access)
            if left:
                exceptions[key] = left
            else:
                del exceptions[key]
    if default_allow is None:
        return None
    return default_allow, exceptions


def read_device_list(path: str) -> tuple[bool, dict[tuple[str, int | None, int | None], str]]:
    """devices.list → (default allow?, exceptions). A default-allow cgroup lists only "a *:* rwm"."""
    exceptions: dict[tuple[str, int | None, int | None], str] = {}
    for line in read_file(path).splitlines():
        kind, numbers, access = line.split()
        if kind == "a":
            return True, {}
        major, _, minor = numbers.partition(":")
        key = (kind, None if major == "*" else int(major), None if minor == "*" else int(minor))
        exceptions[key] = "".join(ch for ch in "rwm" if ch in access)
    return False, exceptions
