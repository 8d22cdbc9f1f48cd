"""Pure cgroup conversions (cgroups.convert), placement (cgroups.paths) and the v1 device-list model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from minirun.cgroups import convert, paths
from minirun.cgroups.resources import DeviceRule
from minirun.cgroups.v1 import emulate_device_rules
from minirun.errors import ConfigError

# --- cpu.shares → cpu.weight ---------------------------------------------------------------------


def test_shares_to_weight_fixed_points_are_exact() -> None:
    assert convert.shares_to_weight(2) == 1
    assert convert.shares_to_weight(1024) == 100
    assert convert.shares_to_weight(262144) == 10000


def test_shares_to_weight_matches_the_formula_and_stays_in_range() -> None:
    for shares in (3, 17, 100, 512, 1000, 2048, 4096, 65536, 200000):
        level = math.log2(shares)
        expected = math.ceil(10 ** ((level * level + 125 * level) / 612 - 7 / 34))
        assert abs(convert.shares_to_weight(shares) - expected) <= 1, shares
        assert 1 <= convert.shares_to_weight(shares) <= 10000


def test_shares_to_weight_is_monotonic_over_the_whole_range() -> None:
    previous = 0
    for shares in range(convert.MIN_SHARES, convert.MAX_SHARES + 1):
        weight = convert.shares_to_weight(shares)
        assert weight >= previous, shares
        previous = weight
    assert previous == 10000


def test_shares_to_weight_clamps_and_keeps_zero_as_unset() -> None:
    assert convert.shares_to_weight(0) == 0
    assert convert.shares_to_weight(1) == 1
    assert convert.shares_to_weight(10**9) == 10000


def test_the_replaced_linear_formula_is_kept_for_reference() -> None:
    assert convert.shares_to_weight_linear(2) == 1
    assert convert.shares_to_weight_linear(1024) == 39  # the reason it was replaced
    assert convert.shares_to_weight_linear(262144) == 10000


# --- cpu.max, io.weight, swap, pids -------------------------------------------------------------


@pytest.mark.parametrize(("quota", "period", "expected"), [
    (None, None, "max 100000"),
    (-1, None, "max 100000"),
    (0, 50000, "max 50000"),
    (50000, None, "50000 100000"),
    (25000, 50000, "25000 50000"),
    (200000, 100000, "200000 100000"),
])
def test_cpu_max(quota: int | None, period: int | None, expected: str) -> None:
    assert convert.cpu_max(quota, period) == expected


def test_blkio_weight_to_io_weight() -> None:
    assert convert.blkio_weight_to_io_weight(10) == 1
    assert convert.blkio_weight_to_io_weight(1000) == 10000
    assert convert.blkio_weight_to_io_weight(0) == 0
    weights = [convert.blkio_weight_to_io_weight(w) for w in range(10, 1001)]
    assert weights == sorted(weights)


def test_swap_to_v2_subtracts_the_memory_limit() -> None:
    assert convert.swap_to_v2(-1, 1 << 20) == "max"
    assert convert.swap_to_v2(3 << 20, 1 << 20) == str(2 << 20)
    assert convert.swap_to_v2(1 << 20, 1 << 20) == "0"
    with pytest.raises(ValueError, match=r"below memory\.limit"):
        convert.swap_to_v2(1 << 20, 2 << 20)
    with pytest.raises(ValueError, match="needs a memory limit"):
        convert.swap_to_v2(1 << 20, None)


@pytest.mark.parametrize(("limit", "expected"), [(-1, "max"), (0, "max"), (1, "1"), (4096, "4096")])
def test_pids_max(limit: int, expected: str) -> None:
    assert convert.pids_max(limit) == expected


# --- byte strings, huge page sizes, cpu lists ----------------------------------------------------


@pytest.mark.parametrize(("text", "value"), [
    ("0", 0), ("512", 512), ("64k", 65536), ("64K", 65536), ("1m", 1 << 20), ("2g", 2 << 30), ("1t", 1 << 40),
    ("2MB", 2 << 20), ("1MiB", 1 << 20), ("100b", 100), ("max", -1), ("-1", -1), (" 8k ", 8192),
])
def test_parse_bytes(text: str, value: int) -> None:
    assert convert.parse_bytes(text) == value


@pytest.mark.parametrize("text", ["", "k", "1.5g", "-2", "12x", "ten", "1kk", "b"])
def test_parse_bytes_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        convert.parse_bytes(text)


@pytest.mark.parametrize(("value", "text"), [(-1, "max"), (0, "0"), (1000, "1000"), (65536, "64k"),
                                             (1 << 20, "1m"), (3 << 30, "3g"), ((1 << 20) + 1024, "1025k")])
def test_format_bytes_round_trips(value: int, text: str) -> None:
    assert convert.format_bytes(value) == text
    assert convert.parse_bytes(text) == value


@pytest.mark.parametrize(("size", "part"), [("2MB", "2MB"), ("1GB", "1GB"), ("64KB", "64KB"), ("2048KB", "2MB"),
                                            ("1024MB", "1GB"), ("32MB", "32MB")])
def test_hugepage_file_part(size: str, part: str) -> None:
    assert convert.hugepage_file_part(size) == part


@pytest.mark.parametrize("size", ["2M", "2mb", "MB", "3MB", "0KB", "2TB", "1.5GB"])
def test_hugepage_file_part_refuses(size: str) -> None:
    with pytest.raises(ValueError):
        convert.hugepage_file_part(size)


def test_parse_cpu_list() -> None:
    assert convert.parse_cpu_list("0") == [0]
    assert convert.parse_cpu_list("0-3,5") == [0, 1, 2, 3, 5]
    assert convert.parse_cpu_list("0-7:2/4") == [0, 1, 4, 5]
    assert convert.parse_cpu_list("") == []
    for bad in ("a", "3-1", "1,,2", "0-", "-1", "0:1/2", "0-3:3/2"):
        with pytest.raises(ValueError):
            convert.parse_cpu_list(bad)


# --- placement ------------------------------------------------------------------------------------


@pytest.fixture
def proc_cgroup(tmp_path: Path) -> str:
    """A /proc/self/cgroup of a process whose memory cgroup is nested, as on the development host."""
    path = tmp_path / "cgroup"
    path.write_text("9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/user.slice/s\n")
    return str(path)


def test_own_cgroup(proc_cgroup: str) -> None:
    assert paths.own_cgroup("memory", proc_cgroup) == "/process_api/abc"
    assert paths.own_cgroup("cpuacct", proc_cgroup) == "/"
    assert paths.own_cgroup("name=systemd", proc_cgroup) == "/"
    assert paths.own_cgroup("unified", proc_cgroup) == "/user.slice/s"
    assert paths.own_cgroup("", proc_cgroup) == "/user.slice/s"
    assert paths.own_cgroup("hugetlb", proc_cgroup) == "/"


def test_relative_paths_nest_below_the_runtime_and_absolute_ones_are_kept(proc_cgroup: str) -> None:
    assert paths.resolve("minirun/c1", "v1", "memory", proc_cgroup) == "/process_api/abc/minirun/c1"
    assert paths.resolve("minirun/c1", "v1", "cpu", proc_cgroup) == "/minirun/c1"
    assert paths.resolve("minirun/c1", "v2", "", proc_cgroup) == "/user.slice/s/minirun/c1"
    assert paths.resolve("/mine/c1", "v1", "memory", proc_cgroup) == "/mine/c1"
    assert paths.resolve("./a//b/", "v1", "cpu", proc_cgroup) == "/a/b"


def test_systemd_form_maps_to_a_scope(proc_cgroup: str) -> None:
    assert paths.systemd_to_path("system.slice:docker:abc") == "system.slice/docker-abc.scope"
    assert paths.systemd_to_path(":minirun:abc") == "minirun-abc.scope"
    assert paths.systemd_to_path("machine.slice::abc") == "machine.slice/abc.scope"
    assert paths.resolve("system.slice:minirun:c1", "v1", "memory", proc_cgroup) == \
        "/process_api/abc/system.slice/minirun-c1.scope"


@pytest.mark.parametrize(("value", "problem"), [
    ("", "empty"),
    ("/", "root of the hierarchy"),
    ("..", "`..`"),
    ("a/../../b", "`..`"),
    ("/process_api/../x", "`..`"),
    ("/process_api", "ancestor of minirun's own cgroup"),
    ("/process_api/abc", "minirun's own cgroup"),
    ("a:b/c:d", "plain name"),
    ("a:..:d", "plain name"),
    ("a:b:", "needs a name"),
    ("x/y\nz", "newline"),
])
def test_placement_refusals_name_the_field(proc_cgroup: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        paths.resolve(value, "v1", "memory", proc_cgroup)
    assert info.value.field == "linux.cgroupsPath"
    assert problem in str(info.value)


def test_hierarchies_from_mountinfo(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n"
        "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "35 31 0:32 /lxc/c /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory,clone_children\n"
        "36 31 0:32 /lxc/c /mnt/memory\\040again rw - cgroup cgroup rw,memory\n"
        "40 31 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n"
        "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n")
    found = paths.hierarchies(str(info))
    assert [(h.mount_point, h.fstype, h.controllers) for h in found] == [
        ("/sys/fs/cgroup/cpu,cpuacct", "cgroup", ("cpu", "cpuacct")),
        ("/sys/fs/cgroup/memory", "cgroup", ("memory",)),
        ("/sys/fs/cgroup/systemd", "cgroup", ("name=systemd",)),
        ("/sys/fs/cgroup/unified", "cgroup2", ()),
    ]
    memory = found[1]
    assert memory.directory("/lxc/c/minirun/x") == "/sys/fs/cgroup/memory/minirun/x"
    assert memory.directory("/lxc/c") == "/sys/fs/cgroup/memory"
    with pytest.raises(ConfigError, match="outside"):
        memory.directory("/other/x")


# --- the v1 device controller's list --------------------------------------------------------------


def test_device_rules_from_deny_all_give_the_allowed_exceptions() -> None:
    rules = [DeviceRule(False), DeviceRule(True, "c", 1, 3, "rw"), DeviceRule(True, "c", 1, 3, "m"),
             DeviceRule(True, "c", 136, None, "rwm"), DeviceRule(True, "b", 8, 0, "r"),
             DeviceRule(False, "b", 8, 0, "r")]
    assert emulate_device_rules(rules) == (False, {("c", 1, 3): "rwm", ("c", 136, None): "rwm"})


def test_device_rules_without_a_reset_depend_on_the_past() -> None:
    assert emulate_device_rules([DeviceRule(True, "c", 1, 3)]) is None
    assert emulate_device_rules([DeviceRule(False), DeviceRule(True)]) == (True, {})
    assert DeviceRule(True, "c", 136, None).line() == "c 136:* rwm"
    assert DeviceRule(False).line() == "a *:* rwm"
