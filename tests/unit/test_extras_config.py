"""Parsing of sysctl, timeOffsets, personality, scheduler, ioPriority, execCPUAffinity, memoryPolicy,
netDevices and LSM labels: what is accepted, and that every refusal names its field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from minirun.errors import ConfigError
from minirun.linux import lsm
from minirun.spec.checks import run_all
from minirun.spec.default import default_spec
from minirun.spec.extras import Extras, parse_id_list, sysctl_namespace, sysctl_parts
from minirun.spec.load import parse_config


def config_with(linux: dict[str, Any] | None = None, process: dict[str, Any] | None = None,
                drop_ns: tuple[str, ...] = (), add_ns: tuple[dict[str, str], ...] = ()) -> dict[str, Any]:
    config = copy.deepcopy(default_spec())
    config["linux"].update(linux or {})
    config["process"].update(process or {})
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"] if n["type"] not in drop_ns]
    config["linux"]["namespaces"].extend(add_ns)
    if "uts" in drop_ns:
        config.pop("hostname", None)
    return config


def extras(config: dict[str, Any]) -> Extras:
    parsed = parse_config(config, "/bundle")
    run_all(parsed, check_filesystem=False)
    return parsed.extras


def refusal(config: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        run_all(parse_config(config, "/bundle"), check_filesystem=False)
    return str(info.value)


def test_nothing_given_means_nothing_changed() -> None:
    ex = extras(config_with())
    assert ex.sysctl == [] and ex.time_offsets == {} and ex.personality == ""
    assert ex.scheduler is None and ex.io_priority is None and ex.memory_policy is None
    assert ex.affinity_initial == ex.affinity_final == [] and ex.net_devices == []


# --- sysctl -----------------------------------------------------------------------------------------

def test_sysctl_keys_dots_and_slashes() -> None:
    ex = extras(config_with({"sysctl": {"net.ipv4.ip_forward": "1", "kernel/shmmax": "4096",
                                        "net/ipv4/conf/eth0.100/forwarding": "1", "fs.mqueue.msg_max": "20",
                                        "kernel.hostname": "x"}}))
    assert [s.parts for s in ex.sysctl] == [["net", "ipv4", "ip_forward"], ["kernel", "shmmax"],
                                             ["net", "ipv4", "conf", "eth0.100", "forwarding"],
                                             ["fs", "mqueue", "msg_max"], ["kernel", "hostname"]]


@pytest.mark.parametrize("key", ["vm.swappiness", "kernel.pid_max", "fs.file-max", "net", "kernel.shm"])
def test_sysctl_not_namespaced(key: str) -> None:
    assert refusal(config_with({"sysctl": {key: "1"}})).endswith(f'linux.sysctl."{key}": not a namespaced sysctl')


@pytest.mark.parametrize("key", ["net/../kernel/x", "net..ipv4", "net/./ipv4", ".net", "net/ipv4/"])
def test_sysctl_unsafe_names(key: str) -> None:
    assert f'linux.sysctl."{key}": not a valid sysctl name' in refusal(config_with({"sysctl": {key: "1"}}))


def test_sysctl_value_must_be_string() -> None:
    assert 'linux.sysctl."net.ipv4.ip_forward": must be a string' in refusal(
        config_with({"sysctl": {"net.ipv4.ip_forward": 1}}))


def test_sysctl_needs_matching_namespace() -> None:
    msg = refusal(config_with({"sysctl": {"net.ipv4.ip_forward": "1"}}, drop_ns=("network",)))
    assert 'linux.sysctl."net.ipv4.ip_forward": needs a new network namespace' in msg
    joined = config_with({"sysctl": {"net.ipv4.ip_forward": "1"}}, drop_ns=("network",),
                         add_ns=({"type": "network", "path": "/proc/1/ns/net"},))
    assert "needs a new network namespace" in refusal(joined)
    assert 'linux.sysctl."kernel.msgmax": needs a ipc namespace' in refusal(
        config_with({"sysctl": {"kernel.msgmax": "1"}}, drop_ns=("ipc",)))
    assert 'linux.sysctl."kernel.domainname": needs a uts namespace' in refusal(
        config_with({"sysctl": {"kernel.domainname": "d"}}, drop_ns=("uts",)))
    # A joined ipc namespace is the container's own: allowed, as runc allows it.
    extras(config_with({"sysctl": {"kernel.msgmax": "1"}}, drop_ns=("ipc",),
                       add_ns=({"type": "ipc", "path": "/proc/1/ns/ipc"},)))


def test_sysctl_helpers() -> None:
    assert sysctl_parts("a/b.c/d") == ["a", "b.c", "d"]
    assert sysctl_parts("a..b") is None
    assert sysctl_namespace(["fs", "mqueue"]) is None
    assert sysctl_namespace(["kernel", "sem"]) == "ipc"


# --- time offsets -------------------------------------------------------------------------------

def test_time_offsets_parsed() -> None:
    ex = extras(config_with({"timeOffsets": {"monotonic": {"secs": -5, "nanosecs": 7}, "boottime": {"secs": 9}}},
                            add_ns=({"type": "time"},)))
    assert ex.time_offsets == {"monotonic": (-5, 7), "boottime": (9, 0)}


def test_time_offsets_need_new_time_namespace() -> None:
    assert "linux.timeOffsets: needs a new time namespace" in refusal(
        config_with({"timeOffsets": {"boottime": {"secs": 1}}}))
    assert "linux.timeOffsets: needs a new time namespace" in refusal(config_with(
        {"timeOffsets": {"boottime": {"secs": 1}}}, add_ns=({"type": "time", "path": "/proc/1/ns/time"},)))


def test_time_offsets_fields() -> None:
    time_ns = ({"type": "time"},)
    assert 'linux.timeOffsets.realtime: unknown clock "realtime"' in refusal(
        config_with({"timeOffsets": {"realtime": {"secs": 1}}}, add_ns=time_ns))
    assert "linux.timeOffsets.boottime.nanosecs: 1000000000 is out of range" in refusal(
        config_with({"timeOffsets": {"boottime": {"nanosecs": 10**9}}}, add_ns=time_ns))
    assert "linux.timeOffsets.monotonic.secs: must be an integer" in refusal(
        config_with({"timeOffsets": {"monotonic": {"secs": "1"}}}, add_ns=time_ns))


# --- personality ----------------------------------------------------------------------------------

def test_personality() -> None:
    assert extras(config_with({"personality": {"domain": "LINUX32"}})).personality == "LINUX32"
    assert 'linux.personality.domain: unknown domain "LINUX64"' in refusal(
        config_with({"personality": {"domain": "LINUX64"}}))
    assert "linux.personality.domain: required" in refusal(config_with({"personality": {}}))
    assert 'linux.personality.flags[0]: unknown personality flag "X"' in refusal(
        config_with({"personality": {"domain": "LINUX", "flags": ["X"]}}))


# --- scheduler --------------------------------------------------------------------------------------

def test_scheduler_accepted() -> None:
    s = extras(config_with(process={"scheduler": {"policy": "SCHED_FIFO", "priority": 10,
                                                  "flags": ["SCHED_FLAG_RESET_ON_FORK"]}})).scheduler
    assert s is not None and (s.policy, s.priority, s.flags) == ("SCHED_FIFO", 10, ["SCHED_FLAG_RESET_ON_FORK"])
    d = extras(config_with(process={"scheduler": {"policy": "SCHED_DEADLINE", "runtime": 10**6,
                                                  "deadline": 2 * 10**6, "period": 3 * 10**6}})).scheduler
    assert d is not None and (d.runtime, d.deadline, d.period) == (10**6, 2 * 10**6, 3 * 10**6)


@pytest.mark.parametrize(("scheduler", "field", "problem"), [
    ({}, "process.scheduler.policy", "required"),
    ({"policy": "SCHED_WHATEVER"}, "process.scheduler.policy", 'unknown policy "SCHED_WHATEVER"'),
    ({"policy": "SCHED_OTHER", "nice": 20}, "process.scheduler.nice", "out of range"),
    ({"policy": "SCHED_OTHER", "priority": 5}, "process.scheduler.priority", "must be 0 for SCHED_OTHER"),
    ({"policy": "SCHED_RR", "priority": 0}, "process.scheduler.priority", "must be in [1, 99]"),
    ({"policy": "SCHED_FIFO", "priority": 100}, "process.scheduler.priority", "must be in [1, 99]"),
    ({"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_NOPE"]}, "process.scheduler.flags[0]", "unknown flag"),
    ({"policy": "SCHED_OTHER", "runtime": 5}, "process.scheduler.runtime", "only applies to SCHED_DEADLINE"),
    ({"policy": "SCHED_DEADLINE"}, "process.scheduler", "needs runtime and deadline"),
    ({"policy": "SCHED_DEADLINE", "runtime": 5, "deadline": 4}, "process.scheduler", "runtime <= deadline"),
    ({"policy": "SCHED_DEADLINE", "runtime": 5, "deadline": 9, "period": 6}, "process.scheduler",
     "deadline <= period"),
])
def test_scheduler_refused(scheduler: dict[str, Any], field: str, problem: str) -> None:
    msg = refusal(config_with(process={"scheduler": scheduler}))
    assert f"{field}: " in msg and problem in msg


# --- ioPriority ---------------------------------------------------------------------------------------

def test_io_priority() -> None:
    p = extras(config_with(process={"ioPriority": {"class": "IOPRIO_CLASS_RT", "priority": 7}})).io_priority
    assert p is not None and (p.ioclass, p.priority) == ("IOPRIO_CLASS_RT", 7)
    assert 'process.ioPriority.class: unknown class "IOPRIO_CLASS_NONE"' in refusal(
        config_with(process={"ioPriority": {"class": "IOPRIO_CLASS_NONE"}}))
    assert "process.ioPriority.priority: 8 is out of range [0, 7]" in refusal(
        config_with(process={"ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 8}}))


# --- execCPUAffinity and id lists --------------------------------------------------------------------

def test_id_lists() -> None:
    assert parse_id_list("0-3,7", 100) == [0, 1, 2, 3, 7]
    assert parse_id_list(" 5 , 1-2 ", 100) == [1, 2, 5]
    for bad in ("3-1", "a", "1,", "-1", "1-", "1-2-3", "101"):
        assert parse_id_list(bad, 100) is None, bad


def test_exec_cpu_affinity() -> None:
    ex = extras(config_with(process={"execCPUAffinity": {"initial": "0-1", "final": ""}}))
    assert (ex.affinity_initial, ex.affinity_final) == ([0, 1], [])
    assert 'process.execCPUAffinity.final: invalid cpu list "1-x"' in refusal(
        config_with(process={"execCPUAffinity": {"final": "1-x"}}))
    assert "process.execCPUAffinity.initial: must be a string" in refusal(
        config_with(process={"execCPUAffinity": {"initial": 3}}))


# --- memoryPolicy -------------------------------------------------------------------------------------

def test_memory_policy() -> None:
    p = extras(config_with({"memoryPolicy": {"mode": "MPOL_INTERLEAVE", "nodes": "0-1",
                                             "flags": ["MPOL_F_RELATIVE_NODES"]}})).memory_policy
    assert p is not None and (p.mode, p.nodes, p.flags) == ("MPOL_INTERLEAVE", [0, 1], ["MPOL_F_RELATIVE_NODES"])
    assert extras(config_with({"memoryPolicy": {"mode": "MPOL_DEFAULT"}})).memory_policy is not None


@pytest.mark.parametrize(("policy", "field", "problem"), [
    ({"nodes": "0"}, "linux.memoryPolicy.mode", "required"),
    ({"mode": "MPOL_NOPE"}, "linux.memoryPolicy.mode", 'unknown mode "MPOL_NOPE"'),
    ({"mode": "MPOL_WEIGHTED_INTERLEAVE", "nodes": "0"}, "linux.memoryPolicy.mode", "not supported"),
    ({"mode": "MPOL_BIND"}, "linux.memoryPolicy.nodes", "needs at least one node"),
    ({"mode": "MPOL_DEFAULT", "nodes": "0"}, "linux.memoryPolicy.nodes", "must be empty"),
    ({"mode": "MPOL_BIND", "nodes": "0-"}, "linux.memoryPolicy.nodes", "invalid node list"),
    ({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_X"]}, "linux.memoryPolicy.flags[0]", "unknown flag"),
    ({"mode": "MPOL_BIND", "nodes": "0", "flags": ["MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"]},
     "linux.memoryPolicy.flags", "exclude each other"),
])
def test_memory_policy_refused(policy: dict[str, Any], field: str, problem: str) -> None:
    msg = refusal(config_with({"memoryPolicy": policy}))
    assert f"{field}: " in msg and problem in msg


# --- netDevices -----------------------------------------------------------------------------------

def test_net_devices() -> None:
    ex = extras(config_with({"netDevices": {"eth1": {"name": "c1"}, "eth2": {}}}))
    assert [(d.host_name, d.name) for d in ex.net_devices] == [("eth1", "c1"), ("eth2", "eth2")]


@pytest.mark.parametrize(("devices", "field", "problem"), [
    ({"a/b": {}}, 'linux.netDevices."a/b"', "not a valid interface name"),
    ({"x" * 16: {}}, f'linux.netDevices."{"x" * 16}"', "not a valid interface name"),
    ({"eth1": {"name": "has space"}}, 'linux.netDevices."eth1".name', "not a valid interface name"),
    ({"eth1": {"name": "c"}, "eth2": {"name": "c"}}, 'linux.netDevices."eth2".name', "used twice"),
    ({"eth1": {"name": "lo"}}, 'linux.netDevices."eth1".name', "used twice"),
    ({"eth1": []}, 'linux.netDevices."eth1"', "must be an object"),
])
def test_net_devices_refused(devices: dict[str, Any], field: str, problem: str) -> None:
    msg = refusal(config_with({"netDevices": devices}))
    assert f"{field}: " in msg and problem in msg


def test_net_devices_need_new_network_namespace() -> None:
    assert "linux.netDevices: needs a new network namespace" in refusal(
        config_with({"netDevices": {"eth1": {}}}, drop_ns=("network",)))


# --- LSM labels ----------------------------------------------------------------------------------------

def test_lsm_labels_parsed() -> None:
    ex = extras(config_with({"mountLabel": "system_u:object_r:container_file_t:s0"},
                            {"apparmorProfile": "minirun-default", "selinuxLabel": "system_u:system_r:spc_t:s0"}))
    assert ex.apparmor_profile == "minirun-default"
    assert ex.selinux_label == "system_u:system_r:spc_t:s0"
    assert ex.mount_label == "system_u:object_r:container_file_t:s0"
    assert "process.apparmorProfile: must be a string" in refusal(config_with(process={"apparmorProfile": 1}))


def test_lsm_enabled_detection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    enabled = tmp_path / "enabled"
    monkeypatch.setattr(lsm, "APPARMOR_ENABLED_FILE", str(enabled))
    monkeypatch.setattr(lsm, "APPARMOR_SECURITYFS", str(tmp_path / "apparmor"))
    monkeypatch.setattr(lsm, "SELINUX_FS", str(tmp_path / "selinux"))
    assert not lsm.apparmor_enabled() and not lsm.selinux_enabled()
    enabled.write_text("Y\n")
    assert lsm.apparmor_enabled()
    enabled.write_text("N\n")
    assert not lsm.apparmor_enabled()
    (tmp_path / "selinux").mkdir()
    (tmp_path / "selinux" / "enforce").write_text("0")
    assert lsm.selinux_enabled()


def test_lsm_labels_ignored_when_disabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lsm, "APPARMOR_ENABLED_FILE", str(tmp_path / "none"))
    monkeypatch.setattr(lsm, "APPARMOR_SECURITYFS", str(tmp_path / "none"))
    monkeypatch.setattr(lsm, "SELINUX_FS", str(tmp_path / "none"))
    ex = extras(config_with({"mountLabel": "l"}, {"apparmorProfile": "p", "selinuxLabel": "s"}))
    lsm.check_host(ex)
    assert lsm.open_exec_attrs(ex) == []


def test_lsm_mount_label_refused_when_selinux_enabled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "enforce").write_text("1")
    monkeypatch.setattr(lsm, "SELINUX_FS", str(tmp_path))
    from minirun.errors import MinirunError

    with pytest.raises(MinirunError, match=r"linux\.mountLabel: not supported"):
        lsm.check_host(extras(config_with({"mountLabel": "l"})))
