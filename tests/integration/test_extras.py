"""sysctl, time offsets, personality, scheduling, I/O priority, CPU affinity, memory policy and network
devices, each observed from inside the container (the probe, /proc/sys, uname) or on the host."""

from __future__ import annotations

import contextlib
import copy
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Runtime

SCHED_BATCH, SCHED_IDLE, SCHED_DEADLINE = 3, 5, 6
IOPRIO_CLASS_BE, IOPRIO_CLASS_IDLE = 2, 3
MPOL_BIND, MPOL_PREFERRED, MPOL_F_STATIC_NODES = 2, 1, 1 << 15


def with_fields(config: dict[str, Any], linux: dict[str, Any] | None = None,
                process: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = copy.deepcopy(config)
    cfg["linux"].update(linux or {})
    cfg["process"].update(process or {})
    return cfg


def host_file(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


# --- linux.sysctl -----------------------------------------------------------------------------------

def test_sysctl_network_and_ipc_keys_are_set_inside_only(runtime: Runtime, host_unchanged: None) -> None:
    host_forward, host_shmmax = host_file("/proc/sys/net/ipv4/ip_forward"), host_file("/proc/sys/kernel/shmmax")
    want_forward = "0" if host_forward == "1" else "1"
    config = with_fields(runtime.config, linux={"sysctl": {
        "net.ipv4.ip_forward": want_forward,
        "kernel/shmmax": "123456789",  # the slash form
        "kernel.hostname": "sysctl-host",
    }})
    result = runtime.sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmax; hostname", config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [want_forward, "123456789", "sysctl-host"]
    assert host_file("/proc/sys/net/ipv4/ip_forward") == host_forward
    assert host_file("/proc/sys/kernel/shmmax") == host_shmmax


def test_sysctl_not_namespaced_is_refused_leaving_nothing(runtime: Runtime, host_unchanged: None) -> None:
    before = host_file("/proc/sys/vm/swappiness")
    config = with_fields(runtime.config, linux={"sysctl": {"vm.swappiness": "17"}})
    result = runtime.run(config)
    assert result.returncode != 0
    assert 'linux.sysctl."vm.swappiness": not a namespaced sysctl' in result.stderr
    assert host_file("/proc/sys/vm/swappiness") == before


def test_sysctl_value_refused_by_kernel_names_key(runtime: Runtime, host_unchanged: None) -> None:
    config = with_fields(runtime.config, linux={"sysctl": {"net.ipv4.ip_forward": "not-a-number"}})
    result = runtime.run(config)
    assert result.returncode != 0
    assert 'linux.sysctl."net.ipv4.ip_forward"' in result.stderr


def test_sysctl_unknown_namespaced_key_names_key(runtime: Runtime, host_unchanged: None) -> None:
    config = with_fields(runtime.config, linux={"sysctl": {"net.ipv4.no_such_thing": "1"}})
    result = runtime.run(config)
    assert result.returncode != 0
    assert 'linux.sysctl."net.ipv4.no_such_thing"' in result.stderr
    assert "no such file" in result.stderr


# --- time namespace -----------------------------------------------------------------------------------

def test_time_offsets_shift_clocks_inside(runtime: Runtime, host_unchanged: None) -> None:
    day = 86400
    config = with_fields(runtime.config, linux={"timeOffsets": {
        "boottime": {"secs": 10 * day, "nanosecs": 0}, "monotonic": {"secs": 3 * day}}})
    config["linux"]["namespaces"].append({"type": "time"})
    host_boot, host_mono = time.clock_gettime(time.CLOCK_BOOTTIME), time.clock_gettime(time.CLOCK_MONOTONIC)
    clocks = runtime.probe("clock", config=config)
    # The probe reports whole seconds: 1 s of slack below, a minute above.
    assert 10 * day - 1 <= clocks["boottime"] - host_boot < 10 * day + 60
    assert 3 * day - 1 <= clocks["monotonic"] - host_mono < 3 * day + 60
    result = runtime.sh("cat /proc/uptime", config)
    assert float(result.stdout.split()[0]) >= 10 * day


def test_time_namespace_is_new(runtime: Runtime, host_unchanged: None) -> None:
    config = copy.deepcopy(runtime.config)
    config["linux"]["namespaces"].append({"type": "time"})
    result = runtime.sh("readlink /proc/self/ns/time", config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() != os.readlink("/proc/self/ns/time")


def test_time_namespace_joined_by_path(runtime: Runtime, host_unchanged: None) -> None:
    holder = subprocess.Popen(["unshare", "--time", "--boottime", "1000", "sleep", "60"])
    try:
        for _ in range(500):  # until unshare has exec'd sleep in the new namespace
            if os.readlink(f"/proc/{holder.pid}/ns/time") != os.readlink("/proc/self/ns/time"):
                break
            time.sleep(0.01)
        config = copy.deepcopy(runtime.config)
        config["linux"]["namespaces"].append({"type": "time", "path": f"/proc/{holder.pid}/ns/time"})
        result = runtime.sh("readlink /proc/self/ns/time; cut -d. -f1 /proc/uptime", config)
        assert result.returncode == 0, result.stderr
        ns, uptime = result.stdout.split()
        assert ns == os.readlink(f"/proc/{holder.pid}/ns/time")
        assert int(uptime) >= 1000
    finally:
        holder.kill()
        holder.wait()


# --- personality ---------------------------------------------------------------------------------

def test_personality_linux32_reports_i686(runtime: Runtime, host_unchanged: None) -> None:
    if os.uname().machine != "x86_64":
        pytest.skip("LINUX32 shows as i686 on x86_64 only")
    result = runtime.sh("uname -m", with_fields(runtime.config, linux={"personality": {"domain": "LINUX32"}}))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "i686"
    assert runtime.sh("uname -m").stdout.strip() == "x86_64"


# --- scheduler, I/O priority, affinity, memory policy -------------------------------------------

def test_scheduler_batch_with_nice(runtime: Runtime, host_unchanged: None) -> None:
    config = with_fields(runtime.config, process={"scheduler": {"policy": "SCHED_BATCH", "nice": 7}})
    got = runtime.probe("sched", config=config)
    assert (got["policy"], got["nice"]) == (SCHED_BATCH, 7)


def test_scheduler_idle(runtime: Runtime, host_unchanged: None) -> None:
    config = with_fields(runtime.config, process={"scheduler": {"policy": "SCHED_IDLE"}})
    assert runtime.probe("sched", config=config)["policy"] == SCHED_IDLE


def test_scheduler_deadline(runtime: Runtime, host_unchanged: None) -> None:
    sched = {"policy": "SCHED_DEADLINE", "runtime": 1_000_000, "deadline": 5_000_000, "period": 10_000_000}
    got = runtime.probe("sched", config=with_fields(runtime.config, process={"scheduler": sched}))
    assert (got["policy"], got["runtime"], got["deadline"], got["period"]) == (SCHED_DEADLINE, 1_000_000,
                                                                              5_000_000, 10_000_000)


def test_scheduler_set_before_privileges_are_dropped(runtime: Runtime, host_unchanged: None) -> None:
    # A negative nice needs CAP_SYS_NICE, which the container's user lacks: set by the init before.
    config = with_fields(runtime.config, process={"scheduler": {"policy": "SCHED_OTHER", "nice": -10},
                                                  "user": {"uid": 1000, "gid": 1000}})
    config["process"]["capabilities"] = {k: [] for k in ("bounding", "effective", "permitted", "inheritable",
                                                         "ambient")}
    got = runtime.probe("sched", config=config)
    assert got["nice"] == -10  # set while the init was still root, inherited by the user's process


def test_io_priority(runtime: Runtime, host_unchanged: None) -> None:
    config = with_fields(runtime.config, process={"ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 6}})
    assert runtime.probe("ioprio", config=config) == {"class": IOPRIO_CLASS_BE, "priority": 6}
    config = with_fields(runtime.config, process={"ioPriority": {"class": "IOPRIO_CLASS_IDLE"}})
    assert runtime.probe("ioprio", config=config)["class"] == IOPRIO_CLASS_IDLE


def test_exec_cpu_affinity_final(runtime: Runtime, host_unchanged: None) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    want = cpus[-1]
    config = with_fields(runtime.config, process={"execCPUAffinity": {"initial": str(cpus[0]), "final": str(want)}})
    assert runtime.probe("affinity", config=config)["cpus"] == [want]


def test_exec_cpu_affinity_initial_only_is_kept(runtime: Runtime, host_unchanged: None) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    config = with_fields(runtime.config, process={"execCPUAffinity": {"initial": str(cpus[0])}})
    assert runtime.probe("affinity", config=config)["cpus"] == [cpus[0]]


def test_exec_cpu_affinity_impossible_cpu_fails(runtime: Runtime, host_unchanged: None) -> None:
    config = with_fields(runtime.config, process={"execCPUAffinity": {"final": "8000"}})
    result = runtime.run(config)
    assert result.returncode != 0
    assert "process.execCPUAffinity.final" in result.stderr


def test_memory_policy_bind(runtime: Runtime, host_unchanged: None) -> None:
    config = with_fields(runtime.config, linux={"memoryPolicy": {
        "mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES"]}})
    got = runtime.probe("mempolicy", config=config)
    assert got == {"mode": MPOL_BIND, "mode_flags": MPOL_F_STATIC_NODES, "nodes": 1}


def test_memory_policy_preferred(runtime: Runtime, host_unchanged: None) -> None:
    config = with_fields(runtime.config, linux={"memoryPolicy": {"mode": "MPOL_PREFERRED", "nodes": "0"}})
    assert runtime.probe("mempolicy", config=config)["mode"] == MPOL_PREFERRED


# --- linux.netDevices -----------------------------------------------------------------------------

@contextlib.contextmanager
def host_interface() -> Iterator[str]:
    """A veth pair on the host (`mr<hex>` and its peer `mr<hex>p`), deleted afterwards; the first's name.

    A veth rather than a dummy: it needs no module, and deleting the peer left on the host deletes
    both ends wherever the other is.
    """
    name = f"mrtest{secrets.token_hex(2)}"
    subprocess.run(["ip", "link", "add", name, "type", "veth", "peer", "name", f"{name}p"], check=True)
    subprocess.run(["ip", "addr", "add", "10.231.7.1/24", "dev", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "link", "del", f"{name}p"], check=False, capture_output=True)


def link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def host_addresses(name: str) -> str:
    return subprocess.run(["ip", "-o", "addr", "show", "dev", name], capture_output=True, text=True).stdout


def test_net_device_moved_in_renamed_and_back_on_delete(runtime: Runtime, host_unchanged: None) -> None:
    with host_interface() as name:
        config = with_fields(runtime.config, linux={"netDevices": {name: {"name": "ctr0"}}})
        config["process"]["args"] = ["/bin/sh", "-c", "sleep 600"]
        cid = f"minirun-netdev-{secrets.token_hex(3)}"
        result = runtime.detached("run", "-d", "--bundle", str(runtime.bundle(config)), cid)
        assert result.returncode == 0, result.stderr
        assert not link_exists(name)
        pid = runtime.state(cid)["pid"]
        inside = subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-o", "addr", "show", "dev", "ctr0"],
                                capture_output=True, text=True)
        assert inside.returncode == 0, inside.stderr
        assert "10.231.7.1/24" in inside.stdout
        result = runtime.cmd("delete", "--force", cid)
        assert result.returncode == 0, result.stderr
        assert link_exists(name)
        assert "10.231.7.1/24" in host_addresses(name)


def test_net_device_back_after_the_container_exited(runtime: Runtime, host_unchanged: None) -> None:
    """A foreground run: the container is gone before delete, its namespace kept alive for the move back."""
    with host_interface() as name:
        config = with_fields(runtime.config, linux={"netDevices": {name: {"name": "ctr1"}}})
        result = runtime.sh("ip -o link show ctr1 >/dev/null && echo seen", config)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "seen"
        assert link_exists(name)


def test_net_device_back_when_create_fails_after_moving(runtime: Runtime, host_unchanged: None) -> None:
    with host_interface() as name:
        config = with_fields(runtime.config, linux={"netDevices": {name: {"name": "ctr2"}}})
        config["process"]["args"] = ["/no/such/program"]
        result = runtime.run(config)
        assert result.returncode == 127, result.stderr
        assert link_exists(name)
        assert "10.231.7.1/24" in host_addresses(name)


def test_net_device_missing_on_host_fails_cleanly(runtime: Runtime, host_unchanged: None) -> None:
    config = with_fields(runtime.config, linux={"netDevices": {"mrnosuch0": {}}})
    result = runtime.run(config)
    assert result.returncode != 0
    assert 'linux.netDevices."mrnosuch0": no interface `mrnosuch0` on the host' in result.stderr


def test_net_device_without_new_network_namespace_is_refused(runtime: Runtime, host_unchanged: None) -> None:
    with host_interface() as name:
        config = with_fields(runtime.config, linux={"netDevices": {name: {}}})
        config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"] if n["type"] != "network"]
        result = runtime.run(config)
        assert result.returncode != 0
        assert "linux.netDevices: needs a new network namespace" in result.stderr
        assert link_exists(name)
