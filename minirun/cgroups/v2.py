"""The cgroup v2 driver (unified hosts): one directory in the single hierarchy, usually /sys/fs/cgroup.

Placement follows cgroups.paths: a relative path goes below minirun's own cgroup, an absolute one
below the hierarchy's root. `apply` creates what is missing from that starting point down and enables
the resource controllers on the way (a controller's files appear in a cgroup only once its parent lists
the controller in cgroup.subtree_control), then moves the process in. Everything follows
Documentation/admin-guide/cgroup-v2.rst:

- "No internal process" rule: only the root cgroup may both hold processes and pass controllers on to
  its children. A non-root ancestor with processes in it cannot enable anything for us; apply says so,
  naming it, rather than leaving the container without limits.
- There is no devices controller: device access is an eBPF program attached to the cgroup (ebpf.py).
- Freezing is cgroup.freeze (core, no controller needed), done once cgroup.events says "frozen 1".
- cgroup.kill (5.14+) kills everything in the subtree at once, forks racing with it included.

Some OCI fields have no v2 counterpart (memory.swappiness, memory.disableOOMKiller, kernel memory,
blockIO leaf weights, network classID/priorities): like runc, a warning names the field and it is
ignored. Real-time CPU limits are refused: ignoring a limit would run the container with less
isolation than asked.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time

from minirun.cgroups import UNIFIED_ROOT, convert, ebpf, paths
from minirun.cgroups.base import Manager, int_or_zero, is_zombie, read_file, read_keyed, read_text, write_file
from minirun.errors import ConfigError, KernelError, MinirunError
from minirun.log import logger

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

    from minirun.cgroups.resources import DeviceRule, Resources

FIELD = paths.FIELD  # linux.cgroupsPath
UINT64_MAX = 2**64 - 1  # runc's stats value for "max" (no limit)
# io.max keys for the OCI throttle lists.
_IO_MAX_KEYS = {"throttleReadBpsDevice": "rbps", "throttleWriteBpsDevice": "wbps",
                "throttleReadIOPSDevice": "riops", "throttleWriteIOPSDevice": "wiops"}


class V2Manager(Manager):
    mode = "v2"
    # Enabled on the way down wherever the parent offers them, so that any limit can be set later
    # (`update` included) without touching the ancestors again.
    CONTROLLERS: tuple[str, ...] = ("cpu", "cpuset", "io", "memory", "pids", "hugetlb", "rdma")
    FREEZE_TIMEOUT = 5.0  # seconds for cgroup.events to report the requested frozen state
    KILL_TIMEOUT = 10.0  # seconds for killed processes to leave the cgroup

    def __init__(self, path: str, mount_point: str = UNIFIED_ROOT, mount_root: str | None = None,
                 proc_cgroup: str = "/proc/self/cgroup") -> None:
        """`path` is linux.cgroupsPath (or the default minirun/<id>). `mount_point` is where the unified
        hierarchy is mounted and `mount_root` the cgroup shown there (from mountinfo when None: not "/"
        inside some containers); `proc_cgroup` tells minirun's own cgroup. Tests point all three at a
        fake tree."""
        self.path = path
        self.mount_point = mount_point.rstrip("/") or "/"
        if mount_root is None:
            mount_root = next((h.root for h in paths.hierarchies()
                               if h.fstype == "cgroup2" and h.mount_point.rstrip("/") == self.mount_point), "/")
        hierarchy = paths.Hierarchy(self.mount_point, mount_root, "cgroup2", ())
        base = self._delegating_base(hierarchy, paths.own_cgroup("", proc_cgroup), mount_root)
        cgroup = paths.resolve(path, "v2", proc_cgroup=proc_cgroup, base=base)
        self.dir = hierarchy.directory(cgroup)  # the container's cgroup directory
        # Where placement starts: the base when the container goes below it (relative paths), else the
        # hierarchy's root. Nothing above it is created or changed.
        self.top = hierarchy.directory(base) if paths.relative_to(cgroup, base) else hierarchy.directory(mount_root)
        self.created: list[str] = []  # directories apply() made, parents before children
        self.extra_rules: list[DeviceRule] = []  # allow rules for linux.devices, kept for `update`
        # Whether apply() took the cgroup: until then destroy() must not kill what is in it.
        self.applied = False

    # --- placement ---------------------------------------------------------------------------------

    def _delegating_base(self, hierarchy: paths.Hierarchy, own: str, mount_root: str) -> str:
        """Where relative paths go: the nearest cgroup from `own` up that may enable controllers for a
        child, i.e. the root or one holding no processes itself (see paths' docstring)."""
        cgroup = own
        while True:
            d = hierarchy.directory(cgroup)
            if self._is_root(d) or not _own_procs(d) or cgroup.rstrip("/") in ("", mount_root.rstrip("/")):
                return cgroup
            cgroup = os.path.dirname(cgroup.rstrip("/")) or "/"

    def leaves(self) -> list[str]:
        return [self.dir]

    def apply(self, pid: int) -> None:
        # A container needs a cgroup of its own: joining one with processes in it would make `delete`
        # kill them too.
        others = _procs(self.dir)
        if others:
            raise ConfigError(FIELD, f"cgroup {self.dir} already holds processes {others[:5]}; a container "
                              "needs a cgroup of its own")
        names = os.path.relpath(self.dir, self.top).split("/")
        # Another container's destroy may remove the shared `minirun` directory between our steps:
        # start again from the top when a parent vanishes.
        for _ in range(10):
            current = self.top
            try:
                for name in names:
                    self._enable_controllers(current)
                    current = os.path.join(current, name)
                    self._make_dir(current)
                break
            except FileNotFoundError:
                continue
        else:
            raise KernelError(f"{FIELD}: mkdir {self.dir}", errno.ENOENT)
        self.applied = True
        write_file(os.path.join(self.dir, "cgroup.procs"), str(pid), FIELD)

    def _make_dir(self, d: str) -> None:
        try:
            os.mkdir(d, 0o755)
        except FileExistsError:
            return
        except FileNotFoundError:
            raise
        except OSError as e:
            raise KernelError(f"{FIELD}: mkdir {d}", e.errno or errno.EIO) from None
        if d not in self.created:
            self.created.append(d)

    def _is_root(self, d: str) -> bool:
        # The root cgroup has no cgroup.type (the file is not created on the root). A cgroup namespace's
        # root is not the real root and has one: the no-internal-process rule holds for it.
        return not os.path.exists(os.path.join(d, "cgroup.type"))

    def _enable_controllers(self, d: str) -> None:
        """Enable in `d`'s cgroup.subtree_control each wanted controller it offers and has not enabled."""
        available = read_file(os.path.join(d, "cgroup.controllers")).split()
        enabled = read_file(os.path.join(d, "cgroup.subtree_control")).split()
        missing = [c for c in self.CONTROLLERS if c in available and c not in enabled]
        if not missing:
            return
        target = os.path.join(d, "cgroup.subtree_control")
        value = " ".join(f"+{c}" for c in missing)
        if not self._is_root(d):
            holders = _own_procs(d)
            if holders:
                raise _internal_process_error(d, target, value, holders)
        try:
            write_file(target, value, FIELD)
        except KernelError as e:
            if e.errno == errno.EBUSY:
                raise _internal_process_error(d, target, value, _own_procs(d)) from None
            if e.errno == errno.ENOENT and not os.path.isdir(d):
                raise FileNotFoundError(d) from None  # removed meanwhile: apply() starts again
            raise

    # --- limits ------------------------------------------------------------------------------------

    def _file(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def _write(self, name: str, value: object, field: str) -> None:
        path = self._file(name)
        if not os.path.exists(path):
            controller = name.partition(".")[0]
            raise KernelError(f"{field}: {path} does not exist (is the {controller} controller enabled for "
                              f"{self.dir}? see {os.path.dirname(self.dir)}/cgroup.subtree_control)", errno.ENOENT)
        write_file(path, str(value), field)

    def set(self, resources: Resources, extra_device_rules: list[DeviceRule] | None = None) -> None:
        """Write every limit in `resources`. `extra_device_rules` allow linux.devices' nodes; when None,
        those remembered from the last call (saved in state.json) are used, so `update` keeps them.
        `unified` goes last, so that its raw values override the typed ones."""
        if extra_device_rules is not None:
            self.extra_rules = list(extra_device_rules)
        self._set_memory(resources)
        self._set_cpu(resources)
        if resources.pids is not None:
            self._write("pids.max", convert.pids_max(resources.pids.limit), resources.field("pids", "limit"))
        self._set_io(resources)
        self._set_hugetlb(resources)
        self._set_rdma(resources)
        if resources.network is not None and (resources.network.class_id is not None
                                              or resources.network.priorities):
            logger.warning(f"{resources.field('network')}: cgroup v2 has no net_cls or net_prio controller; "
                           "ignored")
        self._set_devices(resources)
        self._set_unified(resources)

    def _set_memory(self, r: Resources) -> None:
        m = r.memory
        if m is None:
            return
        limit = m.limit or None  # 0 is "not set"
        if limit is not None and limit > 0 and m.check_before_update:
            # v2 accepts a memory.max below the current usage and reclaims (or OOM-kills) to get under
            # it; checkBeforeUpdate asks to refuse that instead.
            usage_file = self._file("memory.current")
            current = int_or_zero(usage_file)
            if current > limit:
                raise ConfigError(r.field("memory", "limit"), f"{limit} is below the current usage {current} "
                                  f"in {usage_file}; memory.max left unchanged (checkBeforeUpdate is set)")
        swap_file = self._file("memory.swap.max")
        swap_value: str | None = None
        if m.swap:
            # `update` of the swap alone: the limit it is relative to is the current one.
            effective_limit = limit if limit is not None else _read_limit(self._file("memory.max"))
            try:
                swap_value = convert.swap_to_v2(m.swap, effective_limit)
            except ValueError as e:
                raise ConfigError(r.field("memory", "swap"), str(e)) from None
            if not os.path.exists(swap_file):
                if m.swap != -1:
                    raise ConfigError(r.field("memory", "swap"), f"this kernel does not account swap (no "
                                      f"{swap_file}: boot with swapaccount=1, or CONFIG_MEMCG_SWAP)")
                swap_value = None
        elif limit == -1 and os.path.exists(swap_file):
            swap_value = "max"  # an unlimited memory with swap not given: swap is unlimited too (runc's rule)
        if swap_value is not None:
            self._write("memory.swap.max", swap_value, r.field("memory", "swap"))
        if limit is not None:
            self._write("memory.max", _limit(limit), r.field("memory", "limit"))
        if m.reservation:
            self._write("memory.low", _limit(m.reservation), r.field("memory", "reservation"))
        if m.swappiness is not None:
            logger.warning(f"{r.field('memory', 'swappiness')}: cgroup v2 has no per-cgroup swappiness; ignored")
        if m.disable_oom_killer:
            logger.warning(f"{r.field('memory', 'disableOOMKiller')}: cgroup v2 cannot disable the OOM killer; "
                           "ignored")
        if m.kernel:
            logger.warning(f"{r.field('memory', 'kernel')}: cgroup v2 has no separate kernel memory limit "
                           "(memory.max counts it); ignored")
        if m.kernel_tcp:
            logger.warning(f"{r.field('memory', 'kernelTCP')}: cgroup v2 has no separate TCP buffer limit "
                           "(memory.max counts it); ignored")

    def _set_cpu(self, r: Resources) -> None:
        c = r.cpu
        if c is None:
            return
        if c.realtime_runtime or c.realtime_period:
            field = r.field("cpu", "realtimeRuntime" if c.realtime_runtime else "realtimePeriod")
            raise ConfigError(field, "cgroup v2 has no real-time group scheduling (cpu.rt_* are v1 files)")
        if c.shares:
            self._write("cpu.weight", convert.shares_to_weight(c.shares), r.field("cpu", "shares"))
        writes: list[tuple[str, str, str]] = []
        if c.quota or c.period:
            field = r.field("cpu", "quota" if c.quota else "period")
            writes.append(("cpu.max", convert.cpu_max(c.quota or None, c.period or None), field))
        if c.burst is not None:
            burst = ("cpu.max.burst", str(c.burst), r.field("cpu", "burst"))
            if not os.path.exists(self._file("cpu.max.burst")):
                raise ConfigError(burst[2], f"this kernel has no {self._file('cpu.max.burst')} (5.14+)")
            writes.insert(0, burst)  # burst <= quota at every step: _write_in_order tries both orders
        self._write_in_order(writes)
        if c.idle is not None:
            self._write("cpu.idle", c.idle, r.field("cpu", "idle"))
        if c.cpus:  # "" is "not set": an empty cpuset is the parent's anyway
            self._write("cpuset.cpus", c.cpus, r.field("cpu", "cpus"))
        if c.mems:
            self._write("cpuset.mems", c.mems, r.field("cpu", "mems"))

    def _write_in_order(self, writes: list[tuple[str, str, str]]) -> None:
        """Files the kernel checks against each other (cpu.max.burst <= the cpu.max quota): when the
        given order is refused (EINVAL), the reverse one is tried, since one of them is valid from
        wherever the current values are."""
        try:
            for name, value, field in writes:
                self._write(name, value, field)
        except KernelError as first:
            if first.errno != errno.EINVAL or len(writes) < 2:
                raise
            try:
                for name, value, field in reversed(writes):
                    self._write(name, value, field)
            except KernelError:
                raise first from None

    def _set_io(self, r: Resources) -> None:
        b = r.block_io
        if b is None:
            return
        if b.weight:
            self._write_weight(b.weight, "", r.field("blockIO", "weight"))
        if b.leaf_weight:
            logger.warning(f"{r.field('blockIO', 'leafWeight')}: cgroup v2 has no leaf weights; ignored")
        for i, wd in enumerate(b.weight_device or []):
            field = r.field("blockIO", f"weightDevice[{i}]")
            if wd.weight:
                self._write_weight(wd.weight, f"{wd.major}:{wd.minor} ", field)
            if wd.leaf_weight:
                logger.warning(f"{field}.leafWeight: cgroup v2 has no leaf weights; ignored")
        # io.max takes one line per device with any of its four limits; 0 is "no limit" (as in v1).
        lines: dict[tuple[int, int], list[str]] = {}
        fields: dict[tuple[int, int], list[str]] = {}
        for key, _, entries in b.throttles():
            for i, t in enumerate(entries):
                dev = (t.major, t.minor)
                lines.setdefault(dev, []).append(f"{_IO_MAX_KEYS[key]}={t.rate or 'max'}")
                fields.setdefault(dev, []).append(r.field("blockIO", f"{key}[{i}]"))
        for (major, minor), limits in lines.items():
            self._write("io.max", f"{major}:{minor} {' '.join(limits)}", " and ".join(fields[(major, minor)]))

    def _write_weight(self, weight: int, device: str, field: str) -> None:
        """A blkio weight [10, 1000]: as is to BFQ's io.bfq.weight (range 1-1000) where the scheduler is
        BFQ, and converted to io.weight (range 1-10000, the io.cost controller's) where that exists."""
        bfq, cost = self._file("io.bfq.weight"), self._file("io.weight")
        if not os.path.exists(bfq) and not os.path.exists(cost):
            raise KernelError(f"{field}: neither {bfq} nor {cost} exists (is the io controller enabled, with the "
                              "bfq scheduler or io.cost?)", errno.ENOENT)
        if os.path.exists(bfq):
            write_file(bfq, f"{device}{weight}", field)
        if os.path.exists(cost):
            converted = convert.blkio_weight_to_io_weight(weight)
            write_file(cost, f"{device or 'default '}{converted}", field)

    def _set_hugetlb(self, r: Resources) -> None:
        for i, hp in enumerate(r.hugepage_limits or []):
            field = r.field(f"hugepageLimits[{i}]")
            limit = self._file(f"hugetlb.{hp.file_part}.max")
            if not os.path.exists(limit):
                raise ConfigError(f"{field}.pageSize", f"this host has no {hp.page_size} huge pages in "
                                  f"{self.dir} (no {os.path.basename(limit)}; is the hugetlb controller enabled?)")
            write_file(limit, str(hp.limit), field)
            # Where the kernel also accounts reservations, limit those too: the spec prefers them.
            rsvd = self._file(f"hugetlb.{hp.file_part}.rsvd.max")
            if os.path.exists(rsvd):
                write_file(rsvd, str(hp.limit), field)

    def _set_rdma(self, r: Resources) -> None:
        for device, lim in (r.rdma or {}).items():
            parts = [device]
            if lim.hca_handles is not None:
                parts.append(f"hca_handle={lim.hca_handles}")
            if lim.hca_objects is not None:
                parts.append(f"hca_object={lim.hca_objects}")
            self._write("rdma.max", " ".join(parts), r.field(f"rdma[{device!r}]"))

    def _set_devices(self, r: Resources) -> None:
        """linux.resources.devices, then the default devices and linux.devices, as one eBPF program.

        Without a devices list nothing is attached (as v1 leaves such a cgroup with what it inherits):
        access is then what the ancestors' programs allow. `update` without devices keeps the program.
        """
        if r.devices is None:
            return
        field = r.field("devices")
        try:
            ebpf.install(self.dir, ebpf.with_defaults(r.devices, self.extra_rules), field)
        except ValueError as e:
            raise ConfigError(field, str(e)) from None

    def _set_unified(self, r: Resources) -> None:
        for key, value in (r.unified or {}).items():
            field = r.field(f"unified[{key!r}]")
            # resources.py checked the name; the guard is repeated where the path is made.
            if not key or "/" in key or key.startswith("."):
                raise ConfigError(field, "a key names one file of the container's cgroup")
            path = self._file(key)
            if not os.path.exists(path):
                controller = key.partition(".")[0]
                raise KernelError(f"{field}: {path} does not exist (no such cgroup file, or the {controller} "
                                  f"controller is not enabled for {self.dir})", errno.ENOENT)
            write_file(path, value, field)

    # --- freezer -----------------------------------------------------------------------------------

    def freezer_state_file(self) -> str:
        return self._file("cgroup.freeze")

    def _wait_frozen(self, want: bool, verb: str) -> None:
        events = self._file("cgroup.events")
        deadline = time.monotonic() + self.FREEZE_TIMEOUT
        delay = 0.001
        while read_keyed(events).get("frozen", 0) != int(want):
            if time.monotonic() > deadline:
                raise KernelError(f"{verb}: {events} did not report frozen {int(want)} within "
                                  f"{self.FREEZE_TIMEOUT:g} s", errno.EBUSY)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def freeze(self) -> None:
        write_file(self.freezer_state_file(), "1", "pause")
        try:
            self._wait_frozen(True, "pause")
        except KernelError:
            # Leave it as it was rather than half-frozen, then report.
            with contextlib.suppress(KernelError, OSError):
                write_file(self.freezer_state_file(), "0", "pause")
            raise

    def thaw(self) -> None:
        write_file(self.freezer_state_file(), "0", "resume")
        try:
            self._wait_frozen(False, "resume")
        except KernelError as e:
            raise KernelError(f"{e.operation} (is an ancestor cgroup frozen?)", e.errno) from None

    def frozen(self) -> bool:
        """Whether the container was paused: its own cgroup.freeze, what freezer_state_file shows."""
        try:
            return read_file(self.freezer_state_file()).strip() == "1"
        except FileNotFoundError:
            return False

    # --- processes and stats -----------------------------------------------------------------------

    def pids(self) -> list[int]:
        return _procs(self.dir)

    def stats(self) -> dict[str, Any]:
        if not os.path.isdir(self.dir):
            raise KernelError(f"stats: {self.dir}", errno.ENOENT)
        return {
            "cpu": self._cpu_stats(),
            "memory": self._memory_stats(),
            "pids": self._pids_stats(),
            "blkio": self._io_stats(),
            "hugetlb": self._hugetlb_stats(),
        }

    def _cpu_stats(self) -> dict[str, Any]:
        stat = _keyed(self._file("cpu.stat"))  # microseconds; runc's shape is nanoseconds
        usage = {"total": stat.get("usage_usec", 0) * 1000, "percpu": [], "percpu_kernel": [], "percpu_user": [],
                 "kernel": stat.get("system_usec", 0) * 1000, "user": stat.get("user_usec", 0) * 1000}
        throttling = {"periods": stat.get("nr_periods", 0), "throttledPeriods": stat.get("nr_throttled", 0),
                      "throttledTime": stat.get("throttled_usec", 0) * 1000}
        return {"usage": usage, "throttling": throttling}

    def _memory_stats(self) -> dict[str, Any]:
        usage = int_or_zero(self._file("memory.current"))
        limit = _stat_limit(self._file("memory.max"))
        memory = {"usage": usage, "max": int_or_zero(self._file("memory.peak")),
                  "failcnt": _keyed(self._file("memory.events")).get("max", 0), "limit": limit}
        # v1's swap figures (which runc's shape keeps) are memory plus swap; v2 counts swap alone.
        swap_limit = _stat_limit(self._file("memory.swap.max"))
        swap = {"usage": usage + int_or_zero(self._file("memory.swap.current")),
                "max": int_or_zero(self._file("memory.swap.peak")),
                "failcnt": _keyed(self._file("memory.swap.events")).get("max", 0),
                "limit": swap_limit if UINT64_MAX in (swap_limit, limit) else swap_limit + limit}
        none = {"usage": 0, "max": 0, "failcnt": 0, "limit": 0}  # v2 has no separate kernel memory counters
        raw = _keyed(self._file("memory.stat"))
        return {"cache": raw.get("file", 0), "usage": memory, "swap": swap, "kernel": dict(none),
                "kernelTCP": dict(none), "raw": raw}

    def _pids_stats(self) -> dict[str, int]:
        limit = read_text(self._file("pids.max"))
        return {"current": int_or_zero(self._file("pids.current")), "limit": int(limit) if limit.isdigit() else 0}

    def _io_stats(self) -> dict[str, Any]:
        """io.stat lines ("8:0 rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N") → runc's blkio lists."""
        service_bytes: list[dict[str, Any]] = []
        serviced: list[dict[str, Any]] = []
        for line in read_text(self._file("io.stat")).splitlines():
            device, *pairs = line.split()
            major, _, minor = device.partition(":")
            if not (major.isdigit() and minor.isdigit()):
                continue
            values = dict(p.split("=", 1) for p in pairs if "=" in p)
            for out, key, op in ((service_bytes, "rbytes", "Read"), (service_bytes, "wbytes", "Write"),
                                 (serviced, "rios", "Read"), (serviced, "wios", "Write")):
                if values.get(key, "").isdigit():
                    out.append({"major": int(major), "minor": int(minor), "op": op, "value": int(values[key])})
        return {"ioServiceBytesRecursive": service_bytes, "ioServicedRecursive": serviced}

    def _hugetlb_stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            names = sorted(os.listdir(self.dir))
        except FileNotFoundError:
            return out
        for name in names:
            if name.startswith("hugetlb.") and name.endswith(".current") and ".rsvd." not in name:
                size = name[len("hugetlb."):-len(".current")]
                out[size] = {"usage": int_or_zero(self._file(name)), "max": 0,
                             "failcnt": _keyed(self._file(f"hugetlb.{size}.events")).get("max", 0)}
        return out

    def oom_kills(self) -> int:
        return _keyed(self._file("memory.events")).get("oom_kill", 0)

    # --- teardown ----------------------------------------------------------------------------------

    def destroy(self) -> None:
        if self.applied and os.path.isdir(self.dir):
            self._kill_all()
            # Cgroups the container made below its own (a nested runtime, systemd) go with it.
            for below, _, _ in os.walk(self.dir, topdown=False):
                if below != self.dir:
                    self._rmdir(below, must=True)
        for d in self._removal_order():
            self._rmdir(d, must=d == self.dir)

    def _kill_all(self) -> None:
        # A frozen process cannot even die: thaw first (the kernel's own freeze, not the wait, matters).
        with contextlib.suppress(FileNotFoundError, KernelError):
            write_file(self.freezer_state_file(), "0", "delete cgroup")
        kill_file = self._file("cgroup.kill")
        has_kill = os.path.exists(kill_file)
        deadline = time.monotonic() + self.KILL_TIMEOUT
        while True:
            alive = [pid for pid in self.pids() if not is_zombie(pid)]
            if not alive:
                return
            if time.monotonic() > deadline:
                raise KernelError(f"delete cgroup {self.dir}: processes {alive[:5]} survive SIGKILL", errno.EBUSY)
            if has_kill:
                with contextlib.suppress(FileNotFoundError, KernelError):
                    write_file(kill_file, "1", "delete cgroup")
            else:
                for pid in alive:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)

    def _removal_order(self) -> list[str]:
        """Leaf first: what apply() created, and the `minirun*` directories between placement and leaf
        (another container may have created the shared `minirun`; the last one out removes it)."""
        candidates = set(self.created)
        parent = os.path.dirname(self.dir)
        while parent.startswith(self.top.rstrip("/") + "/"):
            if os.path.basename(parent).startswith("minirun"):
                candidates.add(parent)
            parent = os.path.dirname(parent)
        return sorted(candidates, key=lambda d: (-d.count("/"), d))

    # --- state -------------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "path": self.path,
            "dir": self.dir,
            "top": self.top,
            "mount_point": self.mount_point,
            "created": list(self.created),
            "applied": self.applied,
            "freezer_state_file": self.freezer_state_file(),
            "extra_device_rules": [rule.to_json() for rule in self.extra_rules],
        }

    @classmethod
    def from_state(cls, saved: dict[str, Any]) -> V2Manager:
        from minirun.cgroups.resources import parse_resources

        try:
            manager = cls.__new__(cls)
            manager.path = str(saved["path"])
            manager.dir = str(saved["dir"])
            manager.top = str(saved["top"])
            manager.mount_point = str(saved.get("mount_point", UNIFIED_ROOT))
            manager.created = [str(d) for d in saved.get("created", [])]
            rules = parse_resources({"devices": saved.get("extra_device_rules", [])}).devices
            manager.extra_rules = rules or []
            manager.applied = bool(saved.get("applied", True))
        except (KeyError, TypeError, AttributeError, ConfigError) as e:
            raise MinirunError(f"state.json: cgroup: malformed v2 cgroup state ({e})") from None
        for d in [manager.dir, manager.top, *manager.created]:
            if not os.path.isabs(d) or "/../" in d + "/":
                raise MinirunError(f"state.json: cgroup: {d!r} is not an absolute cgroup directory")
        if not manager.dir.startswith(manager.top.rstrip("/") + "/"):
            raise MinirunError(f"state.json: cgroup: {manager.dir!r} is not below {manager.top!r}")
        return manager


# --- helpers --------------------------------------------------------------------------------------


def _internal_process_error(d: str, target: str, value: str, holders: list[int]) -> KernelError:
    return KernelError(
        f"{FIELD}: write {value!r} to {target}: cgroup {d} holds processes {holders[:5]}, and cgroup v2 lets "
        "only the root cgroup both hold processes and enable controllers for its children (the "
        "no-internal-process rule); run minirun from a cgroup without other processes, or give an "
        "absolute linux.cgroupsPath", errno.EBUSY)


def _own_procs(d: str) -> list[int]:
    """The pids directly in cgroup `d` (not its children)."""
    try:
        return [int(p) for p in read_file(os.path.join(d, "cgroup.procs")).split()]
    except FileNotFoundError:
        return []
    except OSError as e:
        if e.errno == errno.EOPNOTSUPP:  # a threaded cgroup lists no processes
            return []
        raise


def _procs(d: str) -> list[int]:
    """The pids in cgroup `d` and every cgroup below it; [] when it is gone."""
    found: set[int] = set()
    for top, _, _ in os.walk(d):
        found.update(_own_procs(top))
    return sorted(found)


def _limit(value: int) -> str:
    """A byte limit as v2 files take it: -1 is "max"."""
    return "max" if value == -1 else str(value)


def _read_limit(path: str) -> int:
    """memory.max and kin → bytes, -1 for "max"."""
    text = read_text(path)
    return -1 if text in ("", "max") else int(text)


def _stat_limit(path: str) -> int:
    """A limit for stats: "max" (or no file) is runc's UINT64_MAX."""
    text = read_text(path)
    return int(text) if text.isdigit() else UINT64_MAX


def _keyed(path: str) -> dict[str, int]:
    try:
        return read_keyed(path)
    except FileNotFoundError:
        return {}
