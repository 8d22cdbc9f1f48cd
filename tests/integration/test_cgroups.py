"""linux.resources enforced through real cgroups, and the verbs that read and change them.

The same file runs on this host (cgroup v1 controllers, hybrid layout) and inside the pure cgroup v2 VM
(tests/integration/test_v2_vm.py lists it in VM_TEST_FILES). What the kernel enforces is observed from
inside the container (the probe's hog, forkbomb, affinity, spin) or from its process on the host; the
cgroup files are found from /proc/PID/cgroup and the host's mounts, not from anything minirun saved.
Every container is deleted by the test, and its cgroup directories must be gone afterwards.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MINIRUN, Runtime, alive, poll

V2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
MiB = 1 << 20


def cgroup_mounts() -> dict[str, Path]:
    """v1: controller → mount point; v2: "" → the unified mount point."""
    found: dict[str, Path] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, point = fields[sep + 1], Path(fields[4])
            if fstype == "cgroup2" and V2 and "" not in found:
                found[""] = point
            elif fstype == "cgroup" and not V2:
                for opt in fields[sep + 3].split(","):
                    found.setdefault(opt, point)
    return found


def cgroup_dirs(pid: int) -> dict[str, Path]:
    """The cgroup directories of `pid`, as the kernel reports them: controller (or "" on v2) → dir."""
    mounts = cgroup_mounts()
    dirs: dict[str, Path] = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            hier, controllers, path = line.rstrip("\n").split(":", 2)
            for name in ([""] if hier == "0" else controllers.split(",")):
                # name=systemd and the like hold no resources: minirun leaves those to their owner.
                if name in mounts and (name == "") == V2 and not name.startswith("name="):
                    dirs[name] = mounts[name] / path.lstrip("/")
    return dirs


class Container:
    """A detached container of a test, with its init pid and cgroup directories."""

    def __init__(self, rt: Runtime, cid: str, pid: int) -> None:
        self.rt, self.id, self.pid = rt, cid, pid
        self.dirs = cgroup_dirs(pid)

    def file(self, v1: str, v2: str) -> Path:
        """A cgroup file by its v1 name ("memory/memory.limit_in_bytes") or its v2 name ("memory.max")."""
        if V2:
            return self.dirs[""] / v2
        controller, name = v1.split("/")
        return self.dirs[controller] / name

    def read(self, v1: str, v2: str) -> str:
        return self.file(v1, v2).read_text().strip()

    def cmd(self, *args: str) -> Any:
        result = self.rt.cmd(*args, self.id)
        assert result.returncode == 0, result.stderr
        return result

    def stats(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.cmd("events", "--stats").stdout)
        assert (doc["type"], doc["id"]) == ("stats", self.id)
        return dict(doc["data"])

    def cpu_ticks(self) -> int:
        """utime + stime of the init, in clock ticks: its progress."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])


@pytest.fixture
def start(runtime: Runtime) -> Iterator[Any]:
    """start(config, cid) runs a detached container; at teardown each is deleted and its cgroups must go."""
    made: list[Container] = []

    def _start(config: dict[str, Any], cid: str) -> Container:
        bundle = runtime.bundle(config)
        pid_file = bundle / "pid"
        result = runtime.detached("run", "-d", "--bundle", str(bundle), "--pid-file", str(pid_file), cid)
        assert result.returncode == 0, result.stderr
        box = Container(runtime, cid, int(pid_file.read_text()))
        assert box.dirs and all(d not in cgroup_mounts().values() for d in box.dirs.values()), box.dirs
        made.append(box)
        return box

    yield _start
    for box in made:
        runtime.cmd("delete", "--force", box.id)
        left = [str(d) for d in box.dirs.values() if d.exists()]
        assert left == [], f"delete left cgroups behind: {left}"


def with_args(rt: Runtime, *args: str, resources: dict[str, Any] | None = None) -> dict[str, Any]:
    config = copy.deepcopy(rt.config)
    config["process"]["args"] = list(args)
    if resources is not None:
        config["linux"]["resources"] = resources
    return config


def no_swap(limit: int) -> dict[str, Any]:
    """A memory limit with swap (memory + swap, as OCI counts it) equal to it, where the host accounts swap."""
    memory: dict[str, Any] = {"limit": limit}
    if V2 or os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"):
        memory["swap"] = limit
    return memory


# --- enforcement ------------------------------------------------------------------------------------


def test_a_memory_hog_is_oom_killed_at_its_limit_and_run_returns_137(runtime: Runtime) -> None:
    config = with_args(runtime, "/usr/bin/probe", "hog", "256", resources={"memory": no_swap(32 * MiB)})
    result = runtime.run(config)
    assert result.returncode == 137, (result.stdout, result.stderr)
    assert result.stdout == ""  # the hog never got to report
    # The same program without the limit allocates it all.
    assert runtime.probe("hog", "256") == {"ok": True, "mb": 256}


def test_an_oom_killed_container_is_stopped_and_events_reports_the_oom(runtime: Runtime, start: Any) -> None:
    # The hog is a child: the shell survives its death, so the oom event comes from a running container.
    script = "until [ -e /dev/shm/go ]; do sleep 0.05; done; /usr/bin/probe hog 256; exec /usr/bin/probe hold 60"
    box = start(with_args(runtime, "/bin/sh", "-c", script, resources={"memory": no_swap(32 * MiB)}), "oomer")
    events = subprocess.Popen([str(MINIRUN), "--root", str(runtime.root), "events", "--interval", "100ms", box.id],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert events.stdout is not None
        assert json.loads(events.stdout.readline())["type"] == "stats"  # streaming has begun
        Path(f"/proc/{box.pid}/root/dev/shm/go").touch()
        seen = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = events.stdout.readline()
            seen.append(json.loads(line)["type"])
            if seen[-1] == "oom":
                break
        assert seen[-1] == "oom", seen
        assert "oom_kill 1" in box.read("memory/memory.oom_control", "memory.events").splitlines()
    finally:
        events.kill()
        events.wait()

    # An init killed by the OOM killer: the container shows as stopped.
    script = "until [ -e /dev/shm/go ]; do sleep 0.05; done; exec /usr/bin/probe hog 256"
    killer = start(with_args(runtime, "/bin/sh", "-c", script, resources={"memory": no_swap(32 * MiB)}), "oomed")
    Path(f"/proc/{killer.pid}/root/dev/shm/go").touch()
    runtime.wait_status(killer.id, "stopped")


def test_a_fork_bomb_stops_at_the_pids_limit(runtime: Runtime) -> None:
    answer = runtime.probe("forkbomb", "200", config=with_args(runtime, "x", resources={"pids": {"limit": 10}}))
    assert answer == {"forked": 9, "errno": "EAGAIN"}  # the probe itself is the tenth
    # Zero or negative means no limit.
    for unlimited in (0, -1):
        config = with_args(runtime, "x", resources={"pids": {"limit": unlimited}})
        assert runtime.probe("forkbomb", "50", config=config) == {"forked": 50, "errno": None}


def test_cpu_quota_throttles_and_stats_show_it(runtime: Runtime, start: Any) -> None:
    resources = {"cpu": {"quota": 10_000, "period": 100_000}}  # a tenth of one CPU
    answer = runtime.probe("spin", "1", config=with_args(runtime, "x", resources=resources))
    # Unthrottled it gets ~1000 ms of CPU in one second; a tenth of a CPU gets ~100 ms.
    assert answer["cpu_ms"] < 400, answer

    box = start(with_args(runtime, "/usr/bin/probe", "spin", "30", resources=resources), "spinner")
    poll(lambda: box.stats()["cpu"]["throttling"].get("throttledPeriods", 0) >= 3, "throttled periods", 100, 0.1)
    throttling = box.stats()["cpu"]["throttling"]
    assert throttling["periods"] >= throttling["throttledPeriods"] >= 3 and throttling["throttledTime"] > 0


@pytest.mark.skipif(os.cpu_count() is None or os.cpu_count() < 2, reason="needs two CPUs to pin to one")  # type: ignore[operator]
def test_cpuset_pins_the_process(runtime: Runtime) -> None:
    for cpus, want in (("0", [0]), ("1", [1]), ("0-1", [0, 1])):
        config = with_args(runtime, "x", resources={"cpu": {"cpus": cpus, "mems": "0"}})
        assert runtime.probe("affinity", config=config) == {"cpus": want}


def test_a_denied_device_cannot_be_opened_or_made(runtime: Runtime) -> None:
    config = copy.deepcopy(runtime.config)
    # /dev/kmsg (c 1:11) from the host, and CAP_MKNOD: only the device cgroup stands in the way.
    # Opened write-only: reading /dev/kmsg may also need CAP_SYSLOG, writing needs nothing but the device.
    config["mounts"].append({"destination": "/dev/kmsg", "type": "bind", "source": "/dev/kmsg",
                             "options": ["bind"]})
    config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["dev"]})
    for key in ("bounding", "effective", "permitted"):
        config["process"]["capabilities"][key].append("CAP_MKNOD")
    assert runtime.probe("open", "/dev/kmsg", "w", config=config)["errno"] == errno.EPERM
    assert runtime.probe("mknod", "/tmp/kmsg", "c", "1", "11", config=config)["errno"] == errno.EPERM
    assert runtime.probe("open", "/dev/null", "w", config=config)["ok"] is True  # a default device

    # Allowed by a rule, the same device opens (for writing only: the rule grants "w").
    config["linux"]["resources"]["devices"].append({"allow": True, "type": "c", "major": 1, "minor": 11,
                                                    "access": "w"})
    assert runtime.probe("open", "/dev/kmsg", "w", config=config)["ok"] is True
    assert runtime.probe("mknod", "/tmp/kmsg", "c", "1", "11", config=config)["errno"] == errno.EPERM


# --- pause, resume, update, events, ps, kill --all ----------------------------------------------------


def test_pause_stops_progress_and_resume_restores_it(runtime: Runtime, start: Any) -> None:
    box = start(with_args(runtime, "/usr/bin/probe", "spin", "60"), "pausable")
    box.cmd("pause")
    assert runtime.status(box.id) == "paused"
    assert box.read("freezer/freezer.state", "cgroup.freeze") in ("FROZEN", "1")
    before = box.cpu_ticks()
    time.sleep(0.5)
    assert box.cpu_ticks() == before
    assert runtime.cmd("pause", box.id).returncode != 0  # already paused

    box.cmd("resume")
    assert runtime.status(box.id) == "running"
    poll(lambda: box.cpu_ticks() > before, "the resumed container to use CPU again", 200, 0.01)
    assert runtime.cmd("resume", box.id).returncode != 0  # not paused


def test_delete_force_of_a_paused_container_leaves_nothing(runtime: Runtime, start: Any) -> None:
    box = start(with_args(runtime, "/usr/bin/probe", "hold", "60"), "frozen")
    box.cmd("pause")
    box.cmd("delete", "--force")
    assert not alive(box.pid)
    assert [d for d in box.dirs.values() if d.exists()] == []


def test_update_changes_each_limit_live(runtime: Runtime, start: Any) -> None:
    box = start(with_args(runtime, "/usr/bin/probe", "hold", "60",
                          resources={"memory": {"limit": 256 * MiB}, "pids": {"limit": 100}}), "updatable")
    box.cmd("update", "--memory", "100M", "--memory-reservation", "50M", "--pids-limit", "42",
            "--cpu-quota", "20000", "--cpu-period", "50000", "--cpu-shares", "512", "--cpuset-cpus", "0",
            "--cpuset-mems", "0")
    assert box.read("memory/memory.limit_in_bytes", "memory.max") == str(100 * MiB)
    assert box.read("memory/memory.soft_limit_in_bytes", "memory.low") == str(50 * MiB)
    assert box.read("pids/pids.max", "pids.max") == "42"
    if V2:
        assert box.read("", "cpu.max") == "20000 50000"
        assert box.read("", "cpu.weight") == "59"  # 512 shares, converted as runc and crun do
    else:
        assert (box.read("cpu/cpu.cfs_quota_us", ""), box.read("cpu/cpu.cfs_period_us", "")) == ("20000", "50000")
        assert box.read("cpu/cpu.shares", "") == "512"
    assert box.read("cpuset/cpuset.cpus", "cpuset.cpus") == "0"
    with open(f"/proc/{box.pid}/status") as f:
        assert "Cpus_allowed_list:\t0\n" in f.read()  # the running process moved

    stats = box.stats()
    assert stats["memory"]["usage"]["limit"] == 100 * MiB and stats["pids"]["limit"] == 42

    # --resources takes the OCI LinuxResources JSON, from a file or stdin.
    result = runtime.cmd("update", "--resources", "-", box.id, input=json.dumps({"pids": {"limit": 7}}))
    assert result.returncode == 0, result.stderr
    assert box.read("pids/pids.max", "pids.max") == "7"
    assert box.read("memory/memory.limit_in_bytes", "memory.max") == str(100 * MiB)  # untouched


def test_a_lowered_pids_limit_binds_the_running_container(runtime: Runtime, start: Any) -> None:
    script = ("until [ -e /dev/shm/go ]; do sleep 0.05; done; /usr/bin/probe forkbomb 100 > /dev/shm/out; "
              "exec /usr/bin/probe hold 60")
    box = start(with_args(runtime, "/bin/sh", "-c", script), "forker")
    box.cmd("update", "--pids-limit", "5")
    Path(f"/proc/{box.pid}/root/dev/shm/go").touch()
    out = Path(f"/proc/{box.pid}/root/dev/shm/out")
    poll(lambda: out.exists() and out.read_text().endswith("\n"), "the fork bomb's report", 500, 0.02)
    assert json.loads(out.read_text()) == {"forked": 3, "errno": "EAGAIN"}  # the shell and the probe count


def test_update_refusals_name_the_resource_and_file(runtime: Runtime, start: Any) -> None:
    # 40 MiB in a tmpfs file stay charged to the container's memory cgroup.
    script = "dd if=/dev/zero of=/dev/shm/fill bs=1M count=40 2>/dev/null; exec /usr/bin/probe hold 60"
    box = start(with_args(runtime, "/bin/sh", "-c", script, resources={"memory": no_swap(256 * MiB)}), "refuser")
    poll(lambda: int(box.stats()["memory"]["usage"]["usage"]) > 40 * MiB, "the tmpfs file's memory", 200, 0.05)
    cpus = os.cpu_count() or 1
    # v1's kernel refuses a limit it cannot reclaim down to; v2's reclaims or OOM-kills instead, so there
    # the OCI memory.checkBeforeUpdate asks minirun to refuse it (and name the usage file).
    lower = json.dumps({"memory": {"limit": MiB, "swap": MiB, "checkBeforeUpdate": True}})
    for flags, field, file in ((("--resources", "-"), "memory.limit", ("memory.limit_in_bytes", "memory.current")),
                               (("--cpuset-cpus", str(cpus + 7)), "cpu.cpus", ("cpuset.cpus", "cpuset.cpus"))):
        result = runtime.cmd("update", *flags, box.id, input=lower)
        assert result.returncode != 0
        message = result.stderr.strip()
        assert len(message.splitlines()) == 1 and f"linux.resources.{field}" in message, message
        assert (file[1] if V2 else file[0]) in message, message
    assert runtime.status(box.id) == "running"
    assert box.read("memory/memory.limit_in_bytes", "memory.max") == str(256 * MiB)


def test_events_stats_match_the_cgroup_files(runtime: Runtime, start: Any) -> None:
    box = start(with_args(runtime, "/usr/bin/probe", "hold", "60",
                          resources={"memory": {"limit": 64 * MiB}, "pids": {"limit": 33}}), "counted")
    stats = box.stats()
    assert stats["pids"] == {"current": int(box.read("pids/pids.current", "pids.current")), "limit": 33}
    memory = stats["memory"]["usage"]
    assert memory["limit"] == 64 * MiB
    usage_now = int(box.read("memory/memory.usage_in_bytes", "memory.current"))
    assert abs(memory["usage"] - usage_now) < MiB  # the probe is asleep: usage barely moves
    cpu_total = stats["cpu"]["usage"]["total"]
    if V2:
        usage_usec = int(dict(line.split() for line in box.read("", "cpu.stat").splitlines())["usage_usec"])
        assert abs(cpu_total - usage_usec * 1000) < 10_000_000
    else:
        assert abs(cpu_total - int(box.read("cpuacct/cpuacct.usage", ""))) < 10_000_000
    assert "blkio" in stats


def test_ps_lists_exactly_the_container_processes(runtime: Runtime, start: Any) -> None:
    script = "/usr/bin/probe hold 60 & /usr/bin/probe hold 60 & wait"
    box = start(with_args(runtime, "/bin/sh", "-c", script), "busy")
    procs = Path(box.dirs["" if V2 else "pids"]) / "cgroup.procs"
    poll(lambda: len(procs.read_text().split()) == 3, "three processes in the cgroup", 500, 0.01)
    listed = json.loads(box.cmd("ps", "--format", "json").stdout)
    assert sorted(listed) == sorted(int(p) for p in procs.read_text().split())
    assert box.pid in listed

    result = runtime.cmd("ps", box.id, "--", "-o", "pid,comm")
    assert result.returncode == 0, result.stderr
    table = result.stdout.splitlines()
    assert table[0].split() == ["PID", "COMMAND"]
    assert sorted((int(line.split()[0]), line.split()[1]) for line in table[1:]) == sorted(
        [(box.pid, "sh")] + [(p, "probe") for p in listed if p != box.pid])


def test_kill_all_reaches_a_process_that_left_the_init_tree(runtime: Runtime, start: Any) -> None:
    # Without a pid namespace an orphan is reparented outside the container: only the cgroup still holds it.
    config = with_args(runtime, "/bin/sh", "-c", "(/usr/bin/probe hold 60 &); exec /usr/bin/probe hold 60")
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "pid"]
    box = start(config, "escaper")
    procs = Path(box.dirs["" if V2 else "pids"]) / "cgroup.procs"
    poll(lambda: len(procs.read_text().split()) == 2, "two processes in the cgroup", 500, 0.01)
    escaped = next(int(p) for p in procs.read_text().split() if int(p) != box.pid)
    with open(f"/proc/{escaped}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) != box.pid  # not the init's child
    assert runtime.cmd("kill", "--all", box.id, "KILL").returncode == 0
    poll(lambda: not alive(escaped) and not alive(box.pid), "every process to die", 500, 0.01)
    runtime.wait_status(box.id, "stopped")


# --- placement ----------------------------------------------------------------------------------------


def test_the_cgroup_namespace_and_mount_show_the_container_cgroup(runtime: Runtime) -> None:
    config = with_args(runtime, "x", resources={"pids": {"limit": 17}})
    # minirun spec's default has both: a cgroup namespace and a cgroup mount at /sys/fs/cgroup.
    assert {"type": "cgroup"} in config["linux"]["namespaces"]
    assert [m["type"] for m in config["mounts"] if m["destination"] == "/sys/fs/cgroup"] == ["cgroup"]
    own = runtime.probe("read", "/proc/self/cgroup", config=config)["data"]
    paths = {line.split(":", 2)[2] for line in own.splitlines() if line and (V2 or line.split(":")[1])}
    assert paths == {"/"}, own
    pids_max = "/sys/fs/cgroup/pids.max" if V2 else "/sys/fs/cgroup/pids/pids.max"
    assert runtime.probe("read", pids_max, config=config)["data"].strip() == "17"


def test_an_absolute_cgroups_path_is_used_as_given(runtime: Runtime, start: Any) -> None:
    config = with_args(runtime, "/usr/bin/probe", "hold", "60")
    config["linux"]["cgroupsPath"] = f"/minirun-test-{os.getpid()}/abs"
    box = start(config, "absolute")
    for d in box.dirs.values():
        assert d.as_posix().endswith(f"/minirun-test-{os.getpid()}/abs"), d
    box.cmd("delete", "--force")
    assert [d for d in box.dirs.values() if d.parent.exists()] == []  # the parent it made went too


def test_a_failed_create_leaves_no_cgroup(runtime: Runtime) -> None:
    cpus = os.cpu_count() or 1
    config = with_args(runtime, "/usr/bin/probe", "facts", resources={"cpu": {"cpus": str(cpus + 7)}})
    config["linux"]["cgroupsPath"] = f"/minirun-test-{os.getpid()}/failed"
    result = runtime.cmd("create", "--bundle", str(runtime.bundle(config)), "failed")
    assert result.returncode != 0
    assert "linux.resources.cpu.cpus" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    leftovers = [m / f"minirun-test-{os.getpid()}" for m in cgroup_mounts().values()]
    assert [d for d in leftovers if d.exists()] == []
    assert list(runtime.root.iterdir()) == []
