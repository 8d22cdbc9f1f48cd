"""The cgroup v1 driver on the real kernel, without containers: processes started here are put in a
V1Manager's cgroups, limited, frozen, counted and killed. Needs root and a v1 or hybrid host.

Every test kills its processes and destroys its cgroups in `finally`, so a failure leaves nothing.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from minirun import cgroups
from minirun.cgroups import paths
from minirun.cgroups.base import read_file, read_keyed
from minirun.cgroups.resources import DeviceRule, parse_resources
from minirun.cgroups.v1 import V1Manager
from minirun.errors import ConfigError, KernelError

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or cgroups.detect_mode() != "v1",
                                reason="needs root on a cgroup v1 or hybrid host")

CGROUP_ROOT = "/sys/fs/cgroup"
_names = itertools.count()

# A child that allocates (and touches) the asked number of MiB each time it reads a line, then says "ok".
ALLOCATOR = """
import sys, time
held = []
for line in sys.stdin:
    held.append(b"x" * (int(line) << 20))
    print("ok", flush=True)
"""


def unique_path() -> str:
    return f"minirun/t{os.getpid()}-{next(_names)}"


class Child:
    """A process started for a test; `stop` kills and reaps it by pid."""

    def __init__(self, args: list[str]) -> None:
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid

    def tell(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@pytest.fixture
def spawn() -> Iterator[Callable[[list[str]], Child]]:
    children: list[Child] = []

    def start(args: list[str]) -> Child:
        child = Child(args)
        children.append(child)
        return child

    try:
        yield start
    finally:
        for child in children:
            child.stop()


@pytest.fixture
def manager() -> Iterator[Callable[[str], V1Manager]]:
    made: list[V1Manager] = []

    def make(path: str = "") -> V1Manager:
        m = V1Manager(path or unique_path())
        made.append(m)
        return m

    try:
        yield make
    finally:
        errors = []
        for m in reversed(made):
            try:
                m.destroy()
            except Exception as e:  # keep destroying the others; report after
                errors.append(e)
        for m in made:
            assert not any(os.path.exists(d) for d in m.created), f"left behind: {m.created}"
        assert not errors, errors


def minirun_dirs() -> list[str]:
    found = []
    for top, dirs, _ in os.walk(CGROUP_ROOT):
        for d in list(dirs):
            if "minirun" in d:
                found.append(os.path.join(top, d))
                dirs.remove(d)
    return found


def in_use_by_others(d: str) -> bool:
    """A `minirun` directory another container (not this test run) still uses."""
    return os.path.basename(d) == "minirun" and any(
        not name.startswith(f"t{os.getpid()}-") for name in os.listdir(d) if os.path.isdir(os.path.join(d, name)))


def read(path: str) -> str:
    return read_file(path).strip()


def proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        return next(line.split()[1] for line in f if line.startswith("State:"))


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


# --- placement ------------------------------------------------------------------------------------


def test_apply_nests_below_the_runtime_and_destroy_removes_every_directory(
        manager: Callable[..., V1Manager], spawn: Callable[[list[str]], Child]) -> None:
    sleeper = spawn(["sleep", "300"])
    m = manager()
    m.apply(sleeper.pid)
    with open(f"/proc/{sleeper.pid}/cgroup") as f:
        placed = {ctrls: path for _, ctrls, path in (line.rstrip("\n").split(":", 2) for line in f)}
    for h in paths.hierarchies():
        controllers = [c for c in h.controllers if not c.startswith("name=")]
        if h.fstype != "cgroup" or not controllers:
            continue
        own = paths.own_cgroup(controllers[0])
        cgroup = placed[",".join(h.controllers)]
        assert cgroup == own.rstrip("/") + "/" + m.path, (h, cgroup)  # below the runtime, never above
        assert os.path.isdir(m.dirs[controllers[0]])
    assert placed.get("name=systemd") == paths.own_cgroup("name=systemd")  # left alone
    # cpuset: the new directories got their parent's cpus and mems, or the kernel would have refused the pid.
    cpuset = m.dirs["cpuset"]
    assert read(f"{cpuset}/cpuset.cpus") == read(f"{os.path.dirname(os.path.dirname(cpuset))}/cpuset.cpus")
    assert read(f"{cpuset}/cpuset.mems")
    assert m.pids() == [sleeper.pid]

    m.destroy()
    assert sleeper.proc.wait(timeout=10) == -signal.SIGKILL
    assert not any(os.path.exists(d) for d in m.created)
    left = [d for d in minirun_dirs() if not in_use_by_others(d)]
    assert left == [], left
    m.destroy()  # a second destroy finds everything gone and is fine


def test_a_shared_minirun_directory_stays_until_its_last_container_goes(
        manager: Callable[..., V1Manager], spawn: Callable[[list[str]], Child]) -> None:
    a, b = manager(), manager()
    a.apply(spawn(["sleep", "300"]).pid)
    b.apply(spawn(["sleep", "300"]).pid)
    parent = os.path.dirname(a.dirs["pids"])
    assert os.path.basename(parent) == "minirun" and parent == os.path.dirname(b.dirs["pids"])
    a.destroy()
    assert os.path.isdir(parent) and os.path.isdir(b.dirs["pids"])  # b still uses it
    b.destroy()
    assert not os.path.exists(b.dirs["pids"])
    assert not os.path.exists(parent) or in_use_by_others(parent)


def test_a_cgroup_holding_processes_is_refused_and_left_alone(
        manager: Callable[..., V1Manager], spawn: Callable[[list[str]], Child]) -> None:
    first = manager()
    owner = spawn(["sleep", "300"])
    first.apply(owner.pid)
    intruder = manager(first.path)
    with pytest.raises(ConfigError) as info:
        intruder.apply(spawn(["sleep", "300"]).pid)
    assert info.value.field == "linux.cgroupsPath" and "already holds processes" in str(info.value)
    intruder.destroy()  # what create does after a failure: must not touch the first container
    assert owner.proc.poll() is None and first.pids() == [owner.pid]


def test_subcgroups_made_inside_the_container_go_with_it(
        manager: Callable[..., V1Manager], spawn: Callable[[list[str]], Child]) -> None:
    m = manager()
    m.apply(spawn(["sleep", "300"]).pid)
    nested = os.path.join(m.dirs["pids"], "inner")
    os.mkdir(nested)
    inner = spawn(["sleep", "300"])
    with open(os.path.join(nested, "cgroup.procs"), "w") as f:
        f.write(str(inner.pid))
    assert inner.pid in m.pids() and len(m.pids()) == 2  # recursive
    m.destroy()
    assert inner.proc.wait(timeout=10) == -signal.SIGKILL
    assert not os.path.exists(m.dirs["pids"])


# --- limits ---------------------------------------------------------------------------------------


def test_limits_are_written_and_read_back(manager: Callable[..., V1Manager],
                                          spawn: Callable[[list[str]], Child]) -> None:
    m = manager()
    m.apply(spawn(["sleep", "300"]).pid)
    resources = parse_resources({
        "memory": {"limit": 64 << 20, "reservation": 32 << 20, "swappiness": 0, "disableOOMKiller": False,
                   "useHierarchy": True, "kernel": 128 << 20, "kernelTCP": 16 << 20},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0", "mems": "0"},
        "pids": {"limit": 16},
        "devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 10, "minor": 200,
                                                        "access": "rw"}],
    })
    m.set(resources, extra_device_rules=[DeviceRule(True, "c", 10, 229)])
    mem, cpu, cpuset = m.dirs["memory"], m.dirs["cpu"], m.dirs["cpuset"]
    assert int(read(f"{mem}/memory.limit_in_bytes")) == 64 << 20
    assert int(read(f"{mem}/memory.soft_limit_in_bytes")) == 32 << 20
    assert read(f"{mem}/memory.swappiness") == "0"
    assert read_keyed(f"{mem}/memory.oom_control")["oom_kill_disable"] == 0
    assert read(f"{cpu}/cpu.shares") == "512"
    assert read(f"{cpu}/cpu.cfs_quota_us") == "50000"
    assert read(f"{cpu}/cpu.cfs_period_us") == "100000"
    assert read(f"{cpuset}/cpuset.cpus") == "0"
    assert read(f"{cpuset}/cpuset.mems") == "0"
    assert read(f"{m.dirs['pids']}/pids.max") == "16"
    assert sorted(read(f"{m.dirs['devices']}/devices.list").splitlines()) == sorted([
        "c 10:200 rw", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm", "c 5:2 rwm",
        "c 136:* rwm", "c 10:229 rwm"])

    # `update` goes through a rebuilt manager: the linux.devices rule is remembered, limits change.
    again = V1Manager.from_state(json.loads(json.dumps(m.to_state())))
    again.set(parse_resources({"devices": resources.raw["devices"], "pids": {"limit": 0},
                               "cpu": {"quota": -1, "period": 50000}}))
    assert "c 10:229 rwm" in read(f"{m.dirs['devices']}/devices.list").splitlines()
    assert read(f"{m.dirs['pids']}/pids.max") == "max"
    assert read(f"{cpu}/cpu.cfs_quota_us") == "-1" and read(f"{cpu}/cpu.cfs_period_us") == "50000"


def test_memory_and_swap_change_in_an_order_the_kernel_accepts(manager: Callable[..., V1Manager],
                                                                spawn: Callable[[list[str]], Child]) -> None:
    m = manager()
    m.apply(spawn(["sleep", "300"]).pid)
    mem = m.dirs["memory"]
    if not os.path.exists(f"{mem}/memory.memsw.limit_in_bytes"):
        pytest.skip("no swap accounting on this kernel")
    for limit, swap in ((64 << 20, 128 << 20), (256 << 20, 512 << 20), (32 << 20, 48 << 20), (-1, -1)):
        # Up: memory+swap must grow first; down: the limit must shrink first. Both ways must work.
        m.set(parse_resources({"memory": {"limit": limit, "swap": swap}}))
        got = int(read(f"{mem}/memory.limit_in_bytes")), int(read(f"{mem}/memory.memsw.limit_in_bytes"))
        if limit == -1:
            assert got[0] == got[1] and got[0] > 1 << 60
        else:
            assert got == (limit, swap)


def test_a_memory_limit_below_usage_fails_naming_the_field_and_file(
        manager: Callable[..., V1Manager], spawn: Callable[[list[str]], Child]) -> None:
    m = manager()
    hog = spawn([sys.executable, "-c", ALLOCATOR])
    m.apply(hog.pid)
    assert hog.tell("32") == "ok"  # 32 MiB charged to the new cgroup
    usage = int(read(f"{m.dirs['memory']}/memory.usage_in_bytes"))
    assert usage >= 32 << 20
    with pytest.raises(KernelError) as info:
        m.set(parse_resources({"memory": {"limit": 4 << 20, "swap": -1}}))
    message = str(info.value)
    assert message.startswith("linux.resources.memory.limit: write '4194304' to ")
    assert f"{m.dirs['memory']}/memory.limit_in_bytes" in message and message.endswith("device or resource busy")
    assert hog.proc.poll() is None  # refused, not OOM-killed


def test_a_cpuset_outside_the_host_fails_naming_the_field_and_file(
        manager: Callable[..., V1Manager], spawn: Callable[[list[str]], Child]) -> None:
    m = manager()
    m.apply(spawn(["sleep", "300"]).pid)
    with pytest.raises(KernelError) as info:
        m.set(parse_resources({"cpu": {"cpus": "4095"}}))
    # EINVAL for a CPU the host lacks, ERANGE when it is beyond the kernel's highest possible CPU.
    assert info.value.errno in (errno.EINVAL, errno.ERANGE)
    assert str(info.value) == (f"linux.resources.cpu.cpus: write '4095' to {m.dirs['cpuset']}/cpuset.cpus: "
                               f"{os.strerror(info.value.errno).lower()}")


def test_resources_of_unmounted_controllers_are_refused_by_name(
        manager: Callable[..., V1Manager], spawn: Callable[[list[str]], Child]) -> None:
    m = manager()
    m.apply(spawn(["sleep", "300"]).pid)
    cases = [
        ({"unified": {"memory.high": "1g"}}, "linux.resources.unified", ""),  # cgroup v2 files: never on v1
        ({"hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 21}]}, "linux.resources.hugepageLimits[0]", "hugetlb"),
        ({"network": {"classID": 1048577}}, "linux.resources.network.classID", "net_cls"),
        ({"network": {"priorities": [{"name": "lo", "priority": 1}]}}, "linux.resources.network.priorities[0]",
         "net_prio"),
        ({"rdma": {"mlx5_1": {"hcaHandles": 3}}}, "linux.resources.rdma['mlx5_1']", "rdma"),
    ]
    for raw, field, controller in cases:
        if controller in m.dirs:
            continue  # mounted on this host after all: not a refusal
        with pytest.raises(ConfigError) as info:
            m.set(parse_resources(raw))
        assert info.value.field == field


def test_oom_kills_are_counted(manager: Callable[..., V1Manager], spawn: Callable[[list[str]], Child]) -> None:
    m = manager()
    hog = spawn([sys.executable, "-c", ALLOCATOR])
    m.apply(hog.pid)
    m.set(parse_resources({"memory": {"limit": 48 << 20, "swap": 48 << 20}}))
    assert m.oom_kills() == 0
    assert hog.tell("96") == ""  # killed while allocating: end of output
    assert hog.proc.wait(timeout=10) == -signal.SIGKILL
    assert m.oom_kills() == 1


# --- freezer, pids, stats -------------------------------------------------------------------------


def test_freeze_and_thaw(manager: Callable[..., V1Manager], spawn: Callable[[list[str]], Child]) -> None:
    m = manager()
    spinner = spawn(["sh", "-c", "while :; do :; done"])
    m.apply(spinner.pid)
    usage = f"{m.dirs['cpuacct']}/cpuacct.usage"
    wait_for(lambda: int(read(usage)) > 0, "the spinner to use CPU")
    assert m.to_state()["freezer_state_file"] == f"{m.dirs['freezer']}/freezer.state"

    m.freeze()
    assert m.frozen() and read(m.to_state()["freezer_state_file"]) == "FROZEN"
    assert proc_state(spinner.pid) == "D"  # a frozen task sleeps uninterruptibly in the refrigerator
    before = int(read(usage))
    time.sleep(0.2)
    assert int(read(usage)) == before  # no CPU while frozen

    m.thaw()
    assert not m.frozen() and read(m.to_state()["freezer_state_file"]) == "THAWED"
    wait_for(lambda: int(read(usage)) > before, "the spinner to run again")
    assert proc_state(spinner.pid) in ("R", "S")


def test_destroy_kills_a_frozen_container(manager: Callable[..., V1Manager],
                                          spawn: Callable[[list[str]], Child]) -> None:
    m = manager()
    sleeper = spawn(["sleep", "300"])
    m.apply(sleeper.pid)
    m.freeze()
    m.destroy()
    assert sleeper.proc.wait(timeout=10) == -signal.SIGKILL
    assert not os.path.exists(m.dirs["freezer"])


def test_stats_match_the_files(manager: Callable[..., V1Manager], spawn: Callable[[list[str]], Child]) -> None:
    m = manager()
    hog = spawn([sys.executable, "-c", ALLOCATOR])
    m.apply(hog.pid)
    assert hog.tell("8") == "ok"
    m.set(parse_resources({"memory": {"limit": 256 << 20}, "pids": {"limit": 20},
                           "cpu": {"quota": 20000, "period": 100000}}))
    acct, mem = m.dirs["cpuacct"], m.dirs["memory"]
    usage_before = int(read(f"{acct}/cpuacct.usage"))
    stats = m.stats()
    usage_after = int(read(f"{acct}/cpuacct.usage"))
    json.dumps(stats)  # JSON-able, as `events --stats` prints it

    cpu = stats["cpu"]
    assert usage_before <= cpu["usage"]["total"] <= usage_after and cpu["usage"]["total"] > 0
    assert len(cpu["usage"]["percpu"]) == len(read(f"{acct}/cpuacct.usage_percpu").split())
    assert cpu["usage"]["kernel"] + cpu["usage"]["user"] > 0
    cpu_stat = read_keyed(f"{m.dirs['cpu']}/cpu.stat")
    assert cpu["throttling"]["periods"] <= cpu_stat["nr_periods"]
    assert cpu["throttling"]["throttledPeriods"] <= cpu_stat["nr_throttled"]

    memory = stats["memory"]
    assert memory["usage"]["limit"] == 256 << 20
    assert memory["usage"]["usage"] >= 8 << 20 and memory["usage"]["max"] >= memory["usage"]["usage"]
    assert memory["usage"]["failcnt"] == int(read(f"{mem}/memory.failcnt"))
    assert set(memory["raw"]) == set(read_keyed(f"{mem}/memory.stat"))
    assert memory["raw"]["rss"] >= 8 << 20
    if os.path.exists(f"{mem}/memory.memsw.limit_in_bytes"):
        assert memory["swap"]["limit"] == int(read(f"{mem}/memory.memsw.limit_in_bytes"))

    assert stats["pids"] == {"current": 1, "limit": 20}
    assert isinstance(stats["blkio"]["ioServiceBytesRecursive"], list)
    assert isinstance(stats["blkio"]["ioServicedRecursive"], list)


def test_state_round_trip(manager: Callable[..., V1Manager], spawn: Callable[[list[str]], Child]) -> None:
    m = manager()
    sleeper = spawn(["sleep", "300"])
    m.apply(sleeper.pid)
    saved = json.loads(json.dumps(m.to_state()))
    assert saved["mode"] == "v1" and saved["freezer_state_file"].endswith("/freezer.state")
    rebuilt = cgroups.from_state(saved)
    assert isinstance(rebuilt, V1Manager)
    assert rebuilt.pids() == [sleeper.pid] and rebuilt.dirs == m.dirs
    rebuilt.freeze()
    assert m.frozen()
    rebuilt.destroy()
    assert sleeper.proc.wait(timeout=10) == -signal.SIGKILL
    assert not any(os.path.exists(d) for d in m.created)
