"""linux.uidMappings/gidMappings, the user namespace they belong to, and mounts' own id mappings."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from minirun.errors import ConfigError
from minirun.spec.checks import run_all
from minirun.spec.default import default_spec
from minirun.spec.idmap import MAX_MAP_LINES, map_text, maps_id
from minirun.spec.load import parse_config
from minirun.spec.model import IDMapping

WIDE = [{"containerID": 0, "hostID": 100000, "size": 65536}]


def m(container: int, host: int, size: int) -> dict[str, int]:
    return {"containerID": container, "hostID": host, "size": size}


def with_userns(uids: Any = WIDE, gids: Any = WIDE, path: str = "") -> dict[str, Any]:
    config = copy.deepcopy(default_spec())
    config["linux"]["namespaces"].append({"type": "user", "path": path} if path else {"type": "user"})
    if uids is not None:
        config["linux"]["uidMappings"] = uids
    if gids is not None:
        config["linux"]["gidMappings"] = gids
    return config


def with_mount(config: dict[str, Any], uids: Any = WIDE, gids: Any = WIDE,
               options: tuple[str, ...] = ("rbind",), type: str = "bind") -> dict[str, Any]:
    mount: dict[str, Any] = {"destination": "/data", "type": type, "source": "/srv/data", "options": list(options)}
    if uids is not None:
        mount["uidMappings"] = uids
    if gids is not None:
        mount["gidMappings"] = gids
    config["mounts"].append(mount)
    return config


def refusal(config: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        run_all(parse_config(config, "/bundle"), check_filesystem=False)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_new_user_namespace_with_mappings_is_accepted_and_parsed() -> None:
    config = parse_config(with_userns(gids=[m(0, 200000, 1000), m(1000, 300000, 1)]), "/bundle")
    run_all(config, check_filesystem=False)
    assert [(x.container_id, x.host_id, x.size) for x in config.linux.uid_mappings] == [(0, 100000, 65536)]
    assert [(x.container_id, x.host_id, x.size) for x in config.linux.gid_mappings] == [
        (0, 200000, 1000), (1000, 300000, 1)]


def test_map_text_is_one_line_per_mapping() -> None:
    assert map_text([IDMapping(0, 100000, 65536), IDMapping(70000, 5, 1)]) == "0 100000 65536\n70000 5 1\n"


def test_maps_id_covers_exactly_the_ranges() -> None:
    maps = [IDMapping(10, 1000, 5)]
    assert [maps_id(maps, i) for i in (9, 10, 14, 15)] == [False, True, True, False]


@pytest.mark.parametrize(("uids", "problem"), [
    ([m(0, 100000, 100), m(50, 200000, 10)], "linux.uidMappings[1]: overlaps linux.uidMappings[0] (container ids)"),
    ([m(0, 100000, 100), m(500, 100050, 10)], "linux.uidMappings[1]: overlaps linux.uidMappings[0] (host ids)"),
    ([m(0, 1, 1), m(1, 2, 1), m(5, 1, 1)], "linux.uidMappings[2]: overlaps linux.uidMappings[0] (host ids)"),
    ([m(0, 100000, 0)], "linux.uidMappings[0].size: 0 is out of range"),
    ([m(0, 100000, -1)], "linux.uidMappings[0].size"),
    ([m(-1, 100000, 1)], "linux.uidMappings[0].containerID"),
    ([m(0, 2**32, 1)], "linux.uidMappings[0].hostID"),
    ([m(0, 2**32 - 1, 1)], "linux.uidMappings[0].hostID"),  # (uid_t)-1 is no id
    ([m(0, 2**32 - 10, 10)], "linux.uidMappings[0]: hostID 4294967286 + size 10 goes past"),
    ([m(2**32 - 2, 0, 2)], "linux.uidMappings[0]: containerID 4294967294 + size 2 goes past"),
    ([{"containerID": 0, "hostID": 1}], "linux.uidMappings[0].size: required"),
    ([{"containerID": "0", "hostID": 1, "size": 1}], "linux.uidMappings[0].containerID: must be an integer"),
    ({"containerID": 0}, "linux.uidMappings: must be an array"),
    ([5], "linux.uidMappings[0]: must be an object"),
])
def test_bad_uid_mappings_are_refused_naming_the_entry(uids: Any, problem: str) -> None:
    assert refusal(with_userns(uids=uids)).startswith(f"config.json: {problem}")


def test_overlap_is_checked_in_gid_mappings_too() -> None:
    message = refusal(with_userns(gids=[m(0, 100000, 10), m(5, 300000, 10)]))
    assert message == "config.json: linux.gidMappings[1]: overlaps linux.gidMappings[0] (container ids)"


def test_adjacent_ranges_do_not_overlap() -> None:
    run_all(parse_config(with_userns(uids=[m(0, 100000, 10), m(10, 100010, 10)]), "/b"), check_filesystem=False)


def test_the_kernels_line_limit() -> None:
    lines = [m(i, 100000 + i, 1) for i in range(MAX_MAP_LINES)]
    run_all(parse_config(with_userns(uids=lines), "/b"), check_filesystem=False)
    message = refusal(with_userns(uids=[*lines, m(MAX_MAP_LINES, 200000, 1)]))
    assert message == f"config.json: linux.uidMappings: {MAX_MAP_LINES + 1} mappings, the kernel takes at most 340"


def test_mappings_without_a_user_namespace_are_refused() -> None:
    config = with_userns()
    config["linux"]["namespaces"].pop()
    assert refusal(config).startswith("config.json: linux.uidMappings: needs a new user namespace")
    del config["linux"]["uidMappings"]
    assert refusal(config).startswith("config.json: linux.gidMappings: needs a new user namespace")


def test_mappings_with_a_joined_user_namespace_are_refused() -> None:
    message = refusal(with_userns(path="/proc/1/ns/user"))
    assert message.startswith("config.json: linux.uidMappings: only for a new user namespace; linux.namespaces[6]")


def test_joining_a_user_namespace_needs_no_mappings() -> None:
    run_all(parse_config(with_userns(uids=None, gids=None, path="/proc/1/ns/user"), "/b"), check_filesystem=False)


@pytest.mark.parametrize(("uids", "gids", "missing"), [
    (None, None, "linux.uidMappings and linux.gidMappings"),
    (WIDE, None, "linux.gidMappings"),
    (None, WIDE, "linux.uidMappings"),
    ([], [], "linux.uidMappings and linux.gidMappings"),
])
def test_a_new_user_namespace_without_mappings_is_refused(uids: Any, gids: Any, missing: str) -> None:
    assert refusal(with_userns(uids, gids)) == (
        f"config.json: linux.namespaces[6].type: a new user namespace needs {missing}")


@pytest.mark.parametrize(("user", "field"), [
    ({"uid": 70000, "gid": 0}, "process.user.uid: 70000 is not mapped by linux.uidMappings"),
    ({"uid": 0, "gid": 65536}, "process.user.gid: 65536 is not mapped by linux.gidMappings"),
    ({"uid": 0, "gid": 0, "additionalGids": [5, 99999]},
     "process.user.additionalGids[1]: 99999 is not mapped by linux.gidMappings"),
])
def test_the_processs_ids_must_be_mapped(user: dict[str, Any], field: str) -> None:
    config = with_userns()
    config["process"]["user"] = user
    assert refusal(config) == f"config.json: {field}"


def test_an_id_mapped_bind_mount_is_accepted_with_or_without_a_user_namespace() -> None:
    for base in (with_userns(), copy.deepcopy(default_spec())):
        config = parse_config(with_mount(base), "/b")
        run_all(config, check_filesystem=False)
        assert config.mounts[-1].uid_mappings[0].host_id == 100000


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"gids": None}, "uidMappings: an id-mapped mount needs gidMappings too"),
    ({"uids": None}, "gidMappings: an id-mapped mount needs uidMappings too"),
    ({"type": "tmpfs", "options": ()}, "uidMappings: id mappings are only supported on bind mounts"),
    ({"uids": [m(0, 1, 10), m(5, 100, 1)]}, "uidMappings[1]: overlaps mounts[7].uidMappings[0] (container ids)"),
    ({"gids": [m(0, 1, 0)]}, "gidMappings[0].size"),
])
def test_bad_mount_mappings_are_refused_naming_the_mount(kwargs: dict[str, Any], problem: str) -> None:
    config = with_mount(copy.deepcopy(default_spec()), **kwargs)
    assert refusal(config).startswith(f"config.json: mounts[7].{problem}")


# --- linux/userns.py, with the kernel faked ---------------------------------------------------------


def test_maps_zero_reads_the_inside_column(tmp_path: Any) -> None:
    from minirun.linux.userns import _maps_zero

    path = tmp_path / "uid_map"
    path.write_text("         0     100000      65536\n")
    assert _maps_zero(str(path))
    path.write_text("      1000     100000          1\n      2000          0         10\n")
    assert not _maps_zero(str(path))


def test_write_maps_writes_uid_then_gid_and_denies_setgroups_only_when_refused(monkeypatch: Any) -> None:
    import errno

    from minirun.errors import KernelError
    from minirun.linux import userns

    config = parse_config(with_userns(gids=[m(0, 200000, 10)]), "/b")
    writes: list[tuple[str, str]] = []

    def fake(pid: int, name: str, text: str, field: str) -> None:
        writes.append((name, text))

    monkeypatch.setattr(userns, "_write_proc", fake)
    userns.write_maps(42, config.linux)
    assert writes == [("uid_map", "0 100000 65536\n"), ("gid_map", "0 200000 10\n")]

    writes.clear()
    def refusing(pid: int, name: str, text: str, field: str) -> None:
        # As the kernel does for a writer without CAP_SETGID: no gid_map before setgroups is denied.
        if name == "gid_map" and ("setgroups", "deny") not in writes:
            raise KernelError(f"write `/proc/{pid}/gid_map` ({field})", errno.EPERM)
        writes.append((name, text))

    monkeypatch.setattr(userns, "_write_proc", refusing)
    userns.write_maps(42, config.linux)
    assert writes == [("uid_map", "0 100000 65536\n"), ("setgroups", "deny"), ("gid_map", "0 200000 10\n")]
