"""`minirun features` must say exactly what the code accepts: every listed value is fed back through the
config parser and must be accepted (and acted on where that can be seen without a kernel), and values
that are not listed must be refused. A feature added to one side only fails here."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from minirun.errors import ConfigError
from minirun.features import features
from minirun.linux import mountopts
from minirun.spec import checks
from minirun.spec.default import default_spec
from minirun.spec.load import parse_config
from minirun.spec.model import NAMESPACE_TYPES, Config

FEATURES = features()
LINUX = FEATURES["linux"]


def config_with(change: dict[str, Any] | None = None, **linux: Any) -> dict[str, Any]:
    config = default_spec()
    config["root"]["path"] = "rootfs"
    config.update(copy.deepcopy(change or {}))
    config["linux"].update(copy.deepcopy(linux))
    return config


def accepted(data: dict[str, Any]) -> Config:
    config = parse_config(data, "/bundle")
    checks.run_all(config, check_filesystem=False)
    return config


def refused(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        accepted(data)
    return str(info.value)


def test_versions() -> None:
    assert FEATURES["ociVersionMin"] <= FEATURES["ociVersionMax"] == default_spec()["ociVersion"]


@pytest.mark.parametrize("option", FEATURES["mountOptions"])
def test_each_mount_option_is_an_option_not_mount_data(option: str) -> None:
    assert mountopts.parse([option]).data == []
    accepted(config_with({"mounts": [{"destination": "/x", "type": "tmpfs", "source": "tmpfs",
                                      "options": [option]}]}))


def test_mount_options_cover_the_table() -> None:
    assert set(FEATURES["mountOptions"]) == {
        *mountopts.FLAG_OPTIONS, *mountopts.PROPAGATION_OPTIONS, *mountopts.BIND_OPTIONS, *mountopts.EXTENSION_OPTIONS}


MAPPINGS: dict[str, Any] = {"uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]}


@pytest.mark.parametrize("ns_type", NAMESPACE_TYPES)
def test_listed_namespaces_are_accepted_and_the_others_refused(ns_type: str) -> None:
    others = [ns for ns in default_spec()["linux"]["namespaces"] if ns["type"] != ns_type]
    extra = MAPPINGS if ns_type == "user" else {}
    data = config_with(namespaces=[*others, {"type": ns_type}], **extra)
    if ns_type in LINUX["namespaces"]:
        assert accepted(data).linux.namespace(ns_type) is not None
    else:
        assert "namespace" in refused(data)


@pytest.mark.parametrize("cap", LINUX["capabilities"])
def test_each_capability_is_accepted(cap: str) -> None:
    data = config_with()
    data["process"]["capabilities"] = {"bounding": [cap], "effective": [cap], "permitted": [cap]}
    caps = accepted(data).process.capabilities
    assert caps is not None and caps.bounding == [cap]


def test_an_unknown_capability_is_refused() -> None:
    data = config_with()
    data["process"]["capabilities"] = {"bounding": ["CAP_NOT_A_THING"]}
    assert "CAP_NOT_A_THING" in refused(data)


@pytest.mark.parametrize("name", FEATURES["hooks"])
def test_each_hook_list_is_parsed(name: str) -> None:
    hooks = accepted(config_with({"hooks": {name: [{"path": "/bin/true"}]}})).hooks
    assert hooks is not None and [h.path for h in hooks.of(name)] == ["/bin/true"]


def seccomp_with(rule: dict[str, Any], **top: Any) -> dict[str, Any]:
    return config_with(seccomp={"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/listener",
                                "syscalls": [{"names": ["getpid"], **rule}], **top})


@pytest.mark.parametrize("action", [a for a in LINUX["seccomp"]["actions"] if a != "SCMP_ACT_ALLOW"])
def test_each_seccomp_action_is_accepted(action: str) -> None:
    config = accepted(seccomp_with({"action": action}))
    assert config.linux.seccomp is not None


@pytest.mark.parametrize("op", LINUX["seccomp"]["operators"])
def test_each_seccomp_operator_is_accepted(op: str) -> None:
    accepted(seccomp_with({"action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "valueTwo": 1, "op": op}]}))


@pytest.mark.parametrize("arch", LINUX["seccomp"]["archs"])
def test_each_seccomp_arch_is_accepted(arch: str) -> None:
    accepted(seccomp_with({"action": "SCMP_ACT_ERRNO"}, architectures=[arch]))


@pytest.mark.parametrize("flag", LINUX["seccomp"]["supportedFlags"])
def test_each_seccomp_flag_is_accepted(flag: str) -> None:
    assert flag in LINUX["seccomp"]["knownFlags"]
    accepted(seccomp_with({"action": "SCMP_ACT_ERRNO"}, flags=[flag]))


@pytest.mark.parametrize(("rule", "top", "field"), [
    ({"action": "SCMP_ACT_NOPE"}, {}, "action"),
    ({"action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_NOPE"}]}, {}, "op"),
    ({"action": "SCMP_ACT_ERRNO"}, {"architectures": ["SCMP_ARCH_NOPE"]}, "architectures"),
    ({"action": "SCMP_ACT_ERRNO"}, {"flags": ["SECCOMP_FILTER_FLAG_NOPE"]}, "flags"),
])
def test_unlisted_seccomp_values_are_refused(rule: dict[str, Any], top: dict[str, Any], field: str) -> None:
    assert field in refused(seccomp_with(rule, **top))


def test_idmap_mounts() -> None:
    mount = {"destination": "/x", "type": "bind", "source": "/tmp", "options": ["bind"], **MAPPINGS}
    namespaces = [*default_spec()["linux"]["namespaces"], {"type": "user"}]
    data = config_with({"mounts": [mount]}, namespaces=namespaces, **MAPPINGS)
    if LINUX["mountExtensions"]["idmap"]["enabled"]:
        accepted(data)
    else:
        assert "uidMappings" in refused(data)


def test_intel_rdt() -> None:
    data = config_with(intelRdt={"closID": "x"})
    if LINUX["intelRdt"]["enabled"]:
        accepted(data)
    else:
        assert "linux.intelRdt" in refused(data)


def test_both_cgroup_drivers_exist() -> None:
    from minirun.cgroups.base import Manager
    from minirun.cgroups.v1 import V1Manager
    from minirun.cgroups.v2 import V2Manager

    assert LINUX["cgroup"]["v1"] and LINUX["cgroup"]["v2"] and not LINUX["cgroup"]["systemd"]
    assert issubclass(V1Manager, Manager) and issubclass(V2Manager, Manager)
