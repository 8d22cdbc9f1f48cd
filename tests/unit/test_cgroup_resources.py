"""linux.resources parsing: every field reaches its typed member, every refusal names the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from minirun.cgroups.resources import (
    DEFAULT_DEVICE_RULES,
    DeviceRule,
    device_rules_for,
    merge,
    merge_raw,
    parse_resources,
)
from minirun.errors import ConfigError
from minirun.spec.model import Device

FULL: dict[str, Any] = {
    "memory": {"limit": 536870912, "reservation": 268435456, "swap": 1073741824, "kernel": -1, "kernelTCP": 0,
               "swappiness": 10, "disableOOMKiller": True, "useHierarchy": True, "checkBeforeUpdate": False},
    "cpu": {"shares": 1024, "quota": 100000, "burst": 50000, "period": 500000, "realtimeRuntime": 950000,
            "realtimePeriod": 1000000, "cpus": "0-1", "mems": "0", "idle": 1},
    "pids": {"limit": 32771},
    "blockIO": {
        "weight": 500, "leafWeight": 300,
        "weightDevice": [{"major": 8, "minor": 0, "weight": 500, "leafWeight": 300}, {"major": 8, "minor": 16,
                                                                                     "weight": 10}],
        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 600}],
        "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 700}],
        "throttleReadIOPSDevice": [{"major": 8, "minor": 16, "rate": 300}],
        "throttleWriteIOPSDevice": [],
    },
    "hugepageLimits": [{"pageSize": "2MB", "limit": 209715200}, {"pageSize": "64KB", "limit": 1000000}],
    "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 500}, {"name": "lo", "priority": 0}]},
    "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}, "rxe3": {"hcaObjects": 10}},
    "unified": {"memory.high": "1g", "io.max": "8:0 rbps=2097152", "hugetlb.1GB.max": "0"},
    "devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 10, "minor": 229,
                                                    "access": "rw"},
                {"allow": True, "type": "b", "major": 8, "access": "mr"}],
}


def full() -> dict[str, Any]:
    return copy.deepcopy(FULL)


def test_every_field_is_parsed() -> None:
    r = parse_resources(full())
    assert r.memory is not None and r.cpu is not None and r.block_io is not None and r.network is not None
    m = r.memory
    assert (m.limit, m.reservation, m.swap, m.kernel, m.kernel_tcp) == (536870912, 268435456, 1073741824, -1, 0)
    assert (m.swappiness, m.disable_oom_killer, m.use_hierarchy, m.check_before_update) == (10, True, True, False)
    c = r.cpu
    assert (c.shares, c.quota, c.burst, c.period) == (1024, 100000, 50000, 500000)
    assert (c.realtime_runtime, c.realtime_period, c.cpus, c.mems, c.idle) == (950000, 1000000, "0-1", "0", 1)
    assert r.pids is not None and r.pids.limit == 32771
    b = r.block_io
    assert (b.weight, b.leaf_weight) == (500, 300)
    assert b.weight_device is not None
    assert [(w.major, w.minor, w.weight, w.leaf_weight) for w in b.weight_device] == [(8, 0, 500, 300),
                                                                                       (8, 16, 10, None)]
    assert [(k, s, [(t.major, t.minor, t.rate) for t in e]) for k, s, e in b.throttles()] == [
        ("throttleReadBpsDevice", "read_bps_device", [(8, 0, 600)]),
        ("throttleWriteBpsDevice", "write_bps_device", [(8, 0, 700)]),
        ("throttleReadIOPSDevice", "read_iops_device", [(8, 16, 300)]),
        ("throttleWriteIOPSDevice", "write_iops_device", []),
    ]
    assert r.hugepage_limits is not None
    assert [(h.page_size, h.file_part, h.limit) for h in r.hugepage_limits] == [("2MB", "2MB", 209715200),
                                                                                ("64KB", "64KB", 1000000)]
    assert r.network.class_id == 1048577
    assert r.network.priorities is not None
    assert [(p.name, p.priority) for p in r.network.priorities] == [("eth0", 500), ("lo", 0)]
    assert r.rdma is not None
    assert {k: (v.hca_handles, v.hca_objects) for k, v in r.rdma.items()} == {"mlx5_1": (3, 10000),
                                                                             "rxe3": (None, 10)}
    assert r.unified == FULL["unified"]
    assert r.devices == [DeviceRule(False, "a", None, None, "rwm"), DeviceRule(True, "c", 10, 229, "rw"),
                         DeviceRule(True, "b", 8, None, "rm")]
    assert r.field("memory", "limit") == "linux.resources.memory.limit"
    assert r.raw == FULL


def test_absent_fields_stay_none_so_drivers_write_nothing() -> None:
    r = parse_resources({})
    assert (r.memory, r.cpu, r.pids, r.block_io, r.hugepage_limits, r.network, r.rdma, r.unified, r.devices) == \
        (None,) * 9
    r = parse_resources({"memory": {"limit": 1 << 20}, "cpu": {}, "devices": [], "blockIO": {"weight": None}})
    assert r.memory is not None and r.memory.swap is None and r.memory.swappiness is None
    assert r.cpu is not None and r.cpu.shares is None and r.cpu.cpus is None
    assert r.devices == []
    assert r.block_io is not None and r.block_io.weight is None and r.block_io.weight_device is None


def test_device_rule_defaults_and_wildcards() -> None:
    r = parse_resources({"devices": [{"allow": True}, {"allow": False, "type": "c", "major": -1, "minor": None,
                                                       "access": ""}, {"allow": True, "type": "", "access": "mwr"}]})
    assert r.devices == [DeviceRule(True, "a", None, None, "rwm"), DeviceRule(False, "c", None, None, "rwm"),
                         DeviceRule(True, "a", None, None, "rwm")]


def test_the_prefix_names_fields_elsewhere() -> None:
    with pytest.raises(ConfigError) as info:
        parse_resources({"memory": {"limit": "1g"}}, field_prefix="update")
    assert info.value.field == "update.memory.limit"


def _bad(dotted: str, value: Any) -> dict[str, Any]:
    """FULL with the member at `dotted` (a.b[2].c) replaced by `value`."""
    config = full()
    node: Any = config
    keys = dotted.replace("[", ".[").split(".")
    for key in keys[:-1]:
        node = node[int(key[1:-1])] if key.startswith("[") else node[key]
    last = keys[-1]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value
    return config


@pytest.mark.parametrize(("dotted", "value", "field"), [
    ("memory", 5, "linux.resources.memory"),
    ("memory.limit", "1g", "linux.resources.memory.limit"),
    ("memory.limit", 1.5, "linux.resources.memory.limit"),
    ("memory.limit", -2, "linux.resources.memory.limit"),
    ("memory.limit", True, "linux.resources.memory.limit"),
    ("memory.reservation", -5, "linux.resources.memory.reservation"),
    ("memory.swap", 1024, "linux.resources.memory.swap"),  # below the limit
    ("memory.swap", "x", "linux.resources.memory.swap"),
    ("memory.kernel", -3, "linux.resources.memory.kernel"),
    ("memory.kernelTCP", "0", "linux.resources.memory.kernelTCP"),
    ("memory.swappiness", 101, "linux.resources.memory.swappiness"),
    ("memory.swappiness", -1, "linux.resources.memory.swappiness"),
    ("memory.disableOOMKiller", 1, "linux.resources.memory.disableOOMKiller"),
    ("memory.useHierarchy", "yes", "linux.resources.memory.useHierarchy"),
    ("memory.checkBeforeUpdate", 0, "linux.resources.memory.checkBeforeUpdate"),
    ("cpu", [], "linux.resources.cpu"),
    ("cpu.shares", 1, "linux.resources.cpu.shares"),
    ("cpu.shares", 262145, "linux.resources.cpu.shares"),
    ("cpu.shares", -1, "linux.resources.cpu.shares"),
    ("cpu.quota", 500, "linux.resources.cpu.quota"),
    ("cpu.quota", -2, "linux.resources.cpu.quota"),
    ("cpu.burst", 200000, "linux.resources.cpu.burst"),  # above the quota
    ("cpu.period", 999, "linux.resources.cpu.period"),
    ("cpu.period", 1000001, "linux.resources.cpu.period"),
    ("cpu.realtimeRuntime", 2000000, "linux.resources.cpu.realtimeRuntime"),  # above the period
    ("cpu.realtimeRuntime", -2, "linux.resources.cpu.realtimeRuntime"),
    ("cpu.realtimePeriod", -1, "linux.resources.cpu.realtimePeriod"),
    ("cpu.cpus", "0-", "linux.resources.cpu.cpus"),
    ("cpu.cpus", 3, "linux.resources.cpu.cpus"),
    ("cpu.mems", "zero", "linux.resources.cpu.mems"),
    ("cpu.idle", 2, "linux.resources.cpu.idle"),
    ("pids", {}, "linux.resources.pids.limit"),
    ("pids.limit", "10", "linux.resources.pids.limit"),
    ("blockIO.weight", 5, "linux.resources.blockIO.weight"),
    ("blockIO.weight", 1001, "linux.resources.blockIO.weight"),
    ("blockIO.leafWeight", 70000, "linux.resources.blockIO.leafWeight"),
    ("blockIO.weightDevice[0].major", -1, "linux.resources.blockIO.weightDevice[0].major"),
    ("blockIO.weightDevice[1]", {"major": 8, "minor": 1}, "linux.resources.blockIO.weightDevice[1]"),
    ("blockIO.weightDevice[1]", {"major": 8, "weight": 10}, "linux.resources.blockIO.weightDevice[1].minor"),
    ("blockIO.weightDevice[1].weight", 9, "linux.resources.blockIO.weightDevice[1].weight"),
    ("blockIO.throttleReadBpsDevice[0].rate", -1, "linux.resources.blockIO.throttleReadBpsDevice[0].rate"),
    ("blockIO.throttleWriteBpsDevice[0]", {"major": 8, "minor": 0},
     "linux.resources.blockIO.throttleWriteBpsDevice[0].rate"),
    ("blockIO.throttleReadIOPSDevice", {}, "linux.resources.blockIO.throttleReadIOPSDevice"),
    ("blockIO.throttleWriteIOPSDevice", [{"major": "8", "minor": 0, "rate": 1}],
     "linux.resources.blockIO.throttleWriteIOPSDevice[0].major"),
    ("hugepageLimits[0].pageSize", "2M", "linux.resources.hugepageLimits[0].pageSize"),
    ("hugepageLimits[1].pageSize", "2048KB", "linux.resources.hugepageLimits[1].pageSize"),  # twice 2MB
    ("hugepageLimits[0].limit", -1, "linux.resources.hugepageLimits[0].limit"),
    ("hugepageLimits[1]", {"limit": 1}, "linux.resources.hugepageLimits[1].pageSize"),
    ("network.classID", 2**32, "linux.resources.network.classID"),
    ("network.priorities[0].name", "eth 0", "linux.resources.network.priorities[0].name"),
    ("network.priorities[0].name", "", "linux.resources.network.priorities[0].name"),
    ("network.priorities[1].priority", -1, "linux.resources.network.priorities[1].priority"),
    ("rdma.rxe3", {}, "linux.resources.rdma['rxe3']"),
    ("rdma.rxe3", {"hcaObjects": -1}, "linux.resources.rdma['rxe3'].hcaObjects"),
    ("unified", ["memory.high"], "linux.resources.unified"),
    ("devices", {}, "linux.resources.devices"),
    ("devices[1]", {"type": "c"}, "linux.resources.devices[1].allow"),
    ("devices[1].type", "p", "linux.resources.devices[1].type"),
    ("devices[1].major", "10", "linux.resources.devices[1].major"),
    ("devices[1].minor", -2, "linux.resources.devices[1].minor"),
    ("devices[1].access", "rwx", "linux.resources.devices[1].access"),
    ("devices[1].access", "rr", "linux.resources.devices[1].access"),
])
def test_refusals_name_the_field(dotted: str, value: Any, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_resources(_bad(dotted, value))
    assert info.value.field == field
    assert str(info.value).startswith(f"config.json: {field}: ")
    assert "\n" not in str(info.value)


def test_swap_needs_a_limited_memory_limit() -> None:
    with pytest.raises(ConfigError) as info:
        parse_resources({"memory": {"limit": -1, "swap": 1 << 30}})
    assert info.value.field == "linux.resources.memory.swap"
    parse_resources({"memory": {"limit": 1 << 20, "swap": -1}})
    parse_resources({"memory": {"limit": 1 << 20, "swap": 1 << 20}})


@pytest.mark.parametrize("key", ["", "memory", "memory.", ".max", "../memory.max", "memory.max/x", "io..max",
                                 "cgroup.procs", "cgroup.threads", "memory max", "memory.high\n"])
def test_unified_keys_are_refused_by_name(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_resources({"unified": {key: "1"}})
    assert info.value.field == f"linux.resources.unified[{key!r}]"


def test_unified_values_must_be_strings() -> None:
    with pytest.raises(ConfigError) as info:
        parse_resources({"unified": {"memory.high": 5}})
    assert info.value.field == "linux.resources.unified['memory.high']"


def test_top_level_must_be_an_object() -> None:
    with pytest.raises(ConfigError) as info:
        parse_resources([])
    assert info.value.field == "linux.resources"


# --- update: merge --------------------------------------------------------------------------------


def test_merge_changes_only_what_is_given() -> None:
    old = parse_resources({"memory": {"limit": 1 << 30, "swap": 2 << 30}, "pids": {"limit": 10},
                           "unified": {"memory.high": "1g"}, "devices": [{"allow": False}]})
    new = parse_resources({"memory": {"limit": 1 << 29}, "cpu": {"shares": 512}, "unified": {"io.weight": "50"}})
    merged = merge(old, new)
    assert merged.memory is not None and merged.memory.limit == 1 << 29 and merged.memory.swap == 2 << 30
    assert merged.pids is not None and merged.pids.limit == 10
    assert merged.cpu is not None and merged.cpu.shares == 512
    assert merged.unified == {"memory.high": "1g", "io.weight": "50"}
    assert merged.devices == [DeviceRule(False)]
    assert old.memory is not None and old.memory.limit == 1 << 30  # the inputs are left alone


def test_merge_checks_the_result_as_a_whole() -> None:
    old = parse_resources({"memory": {"limit": 1 << 20, "swap": 2 << 20}})
    with pytest.raises(ConfigError) as info:
        merge(old, parse_resources({"memory": {"limit": 4 << 20}}))
    assert info.value.field == "linux.resources.memory.swap"


def test_merge_raw_replaces_arrays_and_ignores_null() -> None:
    old = {"devices": [{"allow": False}, {"allow": True, "type": "c"}], "pids": {"limit": 5}}
    assert merge_raw(old, {"devices": [{"allow": True}], "pids": None}) == {"devices": [{"allow": True}],
                                                                            "pids": {"limit": 5}}


# --- device rules for the default and configured devices -------------------------------------------


def test_default_device_rules_cover_what_the_runtime_creates() -> None:
    assert [r.line() for r in DEFAULT_DEVICE_RULES] == ["c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm",
                                                        "c 1:9 rwm", "c 5:0 rwm", "c 5:2 rwm", "c 136:* rwm"]
    assert all(r.allow for r in DEFAULT_DEVICE_RULES)


def test_device_rules_for_linux_devices() -> None:
    devices = [Device("/dev/fuse", "c", 10, 229), Device("/dev/sda", "b", 8, 0), Device("/dev/u", "u", 4, 1),
               Device("/dev/fifo", "p")]
    assert [(r.allow, r.line()) for r in device_rules_for(devices)] == [(True, "c 10:229 rwm"), (True, "b 8:0 rwm"),
                                                                         (True, "c 4:1 rwm")]
