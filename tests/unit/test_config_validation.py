"""config.json parsing and the named checks: every refusal names the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from minirun.errors import ConfigError
from minirun.spec.checks import run_all
from minirun.spec.default import default_spec
from minirun.spec.load import parse_config


def valid() -> dict[str, Any]:
    return copy.deepcopy(default_spec())


def refusal(config: Any) -> str:
    with pytest.raises(ConfigError) as info:
        run_all(parse_config(config, "/bundle"), check_filesystem=False)
    return str(info.value)


def set_path(config: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    node: Any = config
    keys = dotted.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    if isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value
    return config


def test_default_spec_is_valid() -> None:
    config = parse_config(valid(), "/bundle")
    run_all(config, check_filesystem=False)
    assert config.process.args == ["sh"]
    assert config.root_path == "/bundle/rootfs"
    assert [ns.type for ns in config.linux.namespaces] == ["pid", "network", "ipc", "uts", "mount", "cgroup"]


def test_root_path_absolute_is_kept_and_relative_is_joined_to_bundle() -> None:
    assert parse_config(set_path(valid(), "root.path", "/abs/root"), "/b").root_path == "/abs/root"
    assert parse_config(set_path(valid(), "root.path", "../r"), "/b/x").root_path == "/b/r"


@pytest.mark.parametrize(("dotted", "value", "field"), [
    ("process.args", [], "process.args"),
    ("process.args", "sh", "process.args"),
    ("process.args", ["sh", 3], "process.args[1]"),
    ("process.cwd", "relative/dir", "process.cwd"),
    ("process.cwd", 5, "process.cwd"),
    ("process.env", ["NOEQUALS"], "process.env[0]"),
    ("process.terminal", "yes", "process.terminal"),
    ("process.user.uid", "0", "process.user.uid"),
    ("process.user.uid", -1, "process.user.uid"),
    ("process.user.gid", 2**32, "process.user.gid"),
    ("process.user.additionalGids", [1, "x"], "process.user.additionalGids[1]"),
    ("process.oomScoreAdj", 5000, "process.oomScoreAdj"),
    ("process.rlimits", [{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}], "process.rlimits[0]"),
    ("process.rlimits", [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}], "process.rlimits[0].type"),
    ("process.rlimits", [{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1}] * 2, "process.rlimits[1].type"),
    ("process.rlimits", [{"type": "RLIMIT_NOFILE", "hard": 1}], "process.rlimits[0].soft"),
    ("process.capabilities.bounding", ["CAP_NOT_A_THING"], "process.capabilities.bounding[0]"),
    ("process.capabilities.ambient", ["chown"], "process.capabilities.ambient[0]"),
    ("process.noNewPrivileges", 1, "process.noNewPrivileges"),
    ("mounts.0.destination", "proc", "mounts[0].destination"),
    ("mounts.1.options", "ro", "mounts[1].options"),
    ("mounts.2", {"destination": "/x", "source": "/y"}, "mounts[2].type"),
    ("linux.namespaces", [{"type": "pid"}, {"type": "pid"}], "linux.namespaces[1].type"),
    ("linux.namespaces", [{"type": "foo"}], "linux.namespaces[0].type"),
    ("linux.namespaces", [{"type": "user"}], "linux.namespaces[0].type"),
    ("linux.namespaces", [{"type": "net", "path": "x"}], "linux.namespaces[0].type"),
    ("linux.namespaces", [{"type": "uts", "path": "relative"}], "linux.namespaces[0].path"),
    ("linux.devices", [{"path": "/dev/x", "type": "q"}], "linux.devices[0].type"),
    ("linux.devices", [{"path": "dev/x", "type": "c"}], "linux.devices[0].path"),
    ("linux.devices", [{"type": "c"}], "linux.devices[0].path"),
    ("linux.maskedPaths", ["proc/kcore"], "linux.maskedPaths[0]"),
    ("linux.readonlyPaths", [1], "linux.readonlyPaths[0]"),
    ("linux.rootfsPropagation", "sideways", "linux.rootfsPropagation"),
    ("linux.seccomp", {"defaultAction": "SCMP_ACT_FOO"}, "linux.seccomp.defaultAction"),
    ("linux.uidMappings", [{"containerID": 0, "hostID": 1000, "size": 1}], "linux.uidMappings"),
    ("linux.sysctl", {"vm.swappiness": "1"}, 'linux.sysctl."vm.swappiness"'),
    ("hooks", {"prestart": [{"path": "bin/true"}]}, "hooks.prestart[0].path"),
    ("annotations", {"a": 1}, "annotations['a']"),
    ("root", "rootfs", "root"),
    ("root.path", None, "root.path"),
])
def test_refusal_names_the_field(dotted: str, value: Any, field: str) -> None:
    message = refusal(set_path(valid(), dotted, value))
    assert message.startswith(f"config.json: {field}: "), message
    assert "\n" not in message


def test_hostname_without_uts_namespace_is_refused() -> None:
    config = valid()
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "uts"]
    assert refusal(config).startswith("config.json: hostname: ")


def test_missing_or_non_object_process_is_refused() -> None:
    config = valid()
    del config["process"]
    assert refusal(config) == "config.json: process: required"
    assert refusal(set_path(valid(), "process", [])).startswith("config.json: process: must be an object")


def test_top_level_must_be_an_object() -> None:
    assert refusal([1, 2]).startswith("config.json: must be an object")


def test_unknown_fields_are_ignored() -> None:
    config = valid()
    config["somethingNew"] = {"x": 1}
    config["process"]["futureField"] = True
    config["linux"]["futureField"] = []
    run_all(parse_config(config, "/b"), check_filesystem=False)


def test_infinite_rlimit_is_accepted() -> None:
    config = set_path(valid(), "process.rlimits", [{"type": "RLIMIT_CORE", "soft": 2**64 - 1, "hard": 2**64 - 1}])
    parsed = parse_config(config, "/b")
    assert parsed.process.rlimits[0].hard == 2**64 - 1
