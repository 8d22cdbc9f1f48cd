"""The cgroup v2 device program on the real kernel, and V2Manager's controller-free parts.

A device program attaches to any cgroup2 directory, so this runs on a hybrid host too: the cgroups are
made directly in the unified hierarchy (/sys/fs/cgroup/unified on hybrid hosts, /sys/fs/cgroup on
unified ones), named minirun-test-ebpf-<pid>..., and removed in `finally`. A child process is moved in
before it touches any device (it waits on a pipe), then reports what open(2) and mknod(2) gave it.
Nothing here enables a controller: the host's subtree_control files are left as they are.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from minirun.cgroups import ebpf, paths
from minirun.cgroups.resources import DeviceRule, parse_resources
from minirun.cgroups.v2 import V2Manager


def unified_mount() -> str:
    for h in paths.hierarchies():
        if h.fstype == "cgroup2" and h.root == "/":
            return h.mount_point
    pytest.skip("no cgroup2 hierarchy mounted at its root")


# The child: wait for the go byte, then run each probe and print one JSON list of results
# ("ok" or the errno name).
CHILD = r"""
import errno, json, os, stat, sys
os.read(int(sys.argv[1]), 1)
results = []
for probe in json.loads(sys.argv[2]):
    try:
        if probe[0] == "open":
            flags = {"r": os.O_RDONLY, "w": os.O_WRONLY, "rw": os.O_RDWR}[probe[2]]
            os.close(os.open(probe[1], flags))
        else:
            os.mknod(probe[1], 0o600 | stat.S_IFCHR, os.makedev(probe[2], probe[3]))
            os.unlink(probe[1])
        results.append("ok")
    except OSError as e:
        results.append(errno.errorcode.get(e.errno, str(e.errno)))
print(json.dumps(results))
"""


class Child:
    """A python process parked on a pipe until it has been put in its cgroup."""

    def __init__(self, probes: list[list[Any]]) -> None:
        read_end, self.go = os.pipe()
        self.proc = subprocess.Popen([sys.executable, "-I", "-c", CHILD, str(read_end), json.dumps(probes)],
                                     pass_fds=[read_end], stdout=subprocess.PIPE, text=True)
        os.close(read_end)
        self.pid = self.proc.pid

    def release(self) -> list[str]:
        os.write(self.go, b"g")
        os.close(self.go)
        self.go = -1
        out, _ = self.proc.communicate(timeout=30)
        assert self.proc.returncode == 0
        results: list[str] = json.loads(out)
        return results

    def kill(self) -> None:
        if self.go >= 0:
            os.close(self.go)
            self.go = -1
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def unified_cgroup_of(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip()
    return ""


def run_probes(cgroup_dir: str, probes: list[list[Any]]) -> list[str]:
    child = Child(probes)
    try:
        Path(cgroup_dir, "cgroup.procs").write_text(str(child.pid))
        assert unified_cgroup_of(child.pid).endswith("/" + os.path.basename(cgroup_dir))
        return child.release()
    finally:
        child.kill()


def rule(text: str) -> DeviceRule:
    verdict, kind, numbers, access = text.split()
    major, minor = numbers.split(":")
    return DeviceRule(verdict == "allow", kind, None if major == "*" else int(major),
                      None if minor == "*" else int(minor), access)


@pytest.fixture
def cgroup_dir() -> Iterator[str]:
    d = os.path.join(unified_mount(), f"minirun-test-ebpf-{os.getpid()}")
    os.mkdir(d)
    try:
        yield d
    finally:
        for pid in Path(d, "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        with contextlib.suppress(OSError):
            ebpf.detach_all(d)
        deadline = time.monotonic() + 10
        while True:
            try:
                os.rmdir(d)
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)


@pytest.fixture
def nodes(tmp_path: Path) -> Path:
    assert os.path.exists("/dev/null") and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    return tmp_path


def test_program_denies_zero_and_allows_null(cgroup_dir: str, nodes: Path) -> None:
    prog_id = ebpf.install(cgroup_dir, [rule("deny a *:* rwm"), rule("allow c 1:3 rw")])
    assert ebpf.attached(cgroup_dir) == [prog_id]
    results = run_probes(cgroup_dir, [
        ["open", "/dev/null", "r"], ["open", "/dev/null", "rw"], ["open", "/dev/zero", "r"],
        ["open", "/dev/zero", "w"], ["mknod", str(nodes / "zero"), 1, 5], ["mknod", str(nodes / "null"), 1, 3],
    ])
    assert results == ["ok", "ok", "EPERM", "EPERM", "EPERM", "EPERM"]


def test_outside_the_cgroup_nothing_changes(cgroup_dir: str, nodes: Path) -> None:
    ebpf.install(cgroup_dir, [rule("deny a *:* rwm")])
    with open("/dev/zero", "rb") as f:  # this process is not in the cgroup
        assert f.read(1) == b"\0"


def test_update_replaces_the_program(cgroup_dir: str, nodes: Path) -> None:
    first = ebpf.install(cgroup_dir, [rule("deny a *:* rwm"), rule("allow c 1:3 rw")])
    second = ebpf.install(cgroup_dir, [rule("deny a *:* rwm"), rule("allow c 1:3 rwm"), rule("allow c 1:5 r")])
    assert second != first
    assert ebpf.attached(cgroup_dir) == [second]  # the old one is detached, not stacked
    results = run_probes(cgroup_dir, [
        ["open", "/dev/zero", "r"], ["open", "/dev/zero", "w"], ["mknod", str(nodes / "null"), 1, 3],
        ["open", "/dev/full", "r"],
    ])
    assert results == ["ok", "EPERM", "ok", "EPERM"]


def test_last_match_wins_in_the_kernel(cgroup_dir: str, nodes: Path) -> None:
    ebpf.install(cgroup_dir, [rule("allow a *:* rwm"), rule("deny c 1:5 w"), rule("deny c 1:3 rwm"),
                              rule("allow c 1:3 r")])
    results = run_probes(cgroup_dir, [
        ["open", "/dev/zero", "r"], ["open", "/dev/zero", "rw"], ["open", "/dev/null", "r"],
        ["open", "/dev/null", "w"], ["open", "/dev/full", "rw"],
    ])
    assert results == ["ok", "EPERM", "ok", "EPERM", "ok"]


def test_detach_all_lifts_the_policy(cgroup_dir: str) -> None:
    ebpf.install(cgroup_dir, [rule("deny a *:* rwm")])
    ebpf.detach_all(cgroup_dir)
    assert ebpf.attached(cgroup_dir) == []
    assert run_probes(cgroup_dir, [["open", "/dev/zero", "r"]]) == ["ok"]


def test_verifier_refusal_is_reported_with_its_log() -> None:
    asm = ebpf.Assembler()
    asm.load_u32(ebpf.R2, ebpf.R1, 12)  # past the end of struct bpf_cgroup_dev_ctx
    asm.mov64(ebpf.R0, 1)
    asm.exit()
    with pytest.raises(ebpf.ProgramLoadError) as info:
        ebpf.load_program(asm.resolve())
    assert info.value.errno == errno.EACCES
    assert "verifier:" in str(info.value) and "off=12" in str(info.value)
    assert "\n" not in str(info.value)


# --- V2Manager's parts that need no controller: placement, devices, freezer, pids, kill, removal ----


class NoControllers(V2Manager):
    """Leaves every cgroup.subtree_control alone: enabling a controller at this host's root would
    change the host."""

    CONTROLLERS = ()


def test_manager_lifecycle_in_the_unified_hierarchy(nodes: Path) -> None:
    mount = unified_mount()
    name = f"minirun-test-ebpf-{os.getpid()}-mgr/ctr"
    manager = NoControllers(name, mount_point=mount)
    own = paths.own_cgroup("")
    assert manager.dir == os.path.join(mount + own.rstrip("/"), name)
    if not os.path.exists("/dev/kmsg"):
        pytest.skip("no /dev/kmsg (c 1:11), the non-default device this test allows for reading")
    child = Child([["open", "/dev/null", "rw"], ["open", "/dev/kmsg", "r"], ["open", "/dev/kmsg", "w"],
                   ["mknod", str(nodes / "kmsg"), 1, 11], ["mknod", str(nodes / "null"), 1, 3],
                   ["mknod", str(nodes / "tun"), 10, 200]])
    try:
        manager.apply(child.pid)
        assert manager.created == [os.path.dirname(manager.dir), manager.dir]
        assert manager.pids() == [child.pid]
        resources = parse_resources({"devices": [{"allow": False, "access": "rwm"},
                                                 {"allow": True, "type": "c", "major": 1, "minor": 11,
                                                  "access": "r"}]})
        manager.set(resources, extra_device_rules=[])
        assert len(ebpf.attached(manager.dir)) == 1
        manager.set(parse_resources({}))  # no devices given: the program stays
        assert len(ebpf.attached(manager.dir)) == 1

        manager.freeze()
        assert manager.frozen()
        assert "frozen 1" in Path(manager.dir, "cgroup.events").read_text()
        manager.thaw()
        assert not manager.frozen()

        saved = json.loads(json.dumps(manager.to_state()))
        assert saved["mode"] == "v2"
        assert saved["freezer_state_file"] == os.path.join(manager.dir, "cgroup.freeze")
        again = V2Manager.from_state(saved)
        assert again.dir == manager.dir and again.created == manager.created

        # /dev/null is a default device (rwm); /dev/kmsg is allowed for reading only; other devices not at all.
        assert child.release() == ["ok", "ok", "EPERM", "EPERM", "ok", "EPERM"]
        stats = again.stats()
        assert stats["cpu"]["usage"]["total"] > 0  # cpu.stat is core: the child's start-up shows
        assert again.oom_kills() == 0
    finally:
        child.kill()
        manager.destroy()
    assert not os.path.exists(manager.dir)
    assert not os.path.exists(os.path.dirname(manager.dir))


def test_manager_destroy_kills_what_is_left() -> None:
    manager = NoControllers(f"minirun-test-ebpf-{os.getpid()}-kill", mount_point=unified_mount())
    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        manager.apply(sleeper.pid)
        manager.freeze()  # destroy must thaw before it can kill
        manager.destroy()
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
        assert not os.path.exists(manager.dir)
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()
        if os.path.isdir(manager.dir):
            os.rmdir(manager.dir)
