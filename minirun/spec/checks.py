"""Semantic checks on a parsed Config, each named after the rule it enforces.

Types were checked while parsing; these are the rules that need more than one field or the host.
Every check raises ConfigError naming the field. They all run before anything is created.
"""

from __future__ import annotations

import os
import resource
import stat
from collections.abc import Callable

from minirun.errors import ConfigError
from minirun.spec.model import NAMESPACE_TYPES, Config

PROPAGATIONS = ("", "private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable",
                "runbindable")
DEVICE_TYPES = ("c", "b", "u", "p")
# Namespaces a later part of minirun implements; refused by name until then.
NAMESPACES_NOT_YET: tuple[str, ...] = ()


def process_args_not_empty(c: Config) -> None:
    if not c.process.args:
        raise ConfigError("process.args", "must not be empty")
    if c.process.args[0] == "":
        raise ConfigError("process.args[0]", "must not be empty")


def process_cwd_absolute(c: Config) -> None:
    if not os.path.isabs(c.process.cwd):
        raise ConfigError("process.cwd", f"must be an absolute path, not {c.process.cwd!r}")


def process_env_pairs(c: Config) -> None:
    for i, entry in enumerate(c.process.env):
        if "=" not in entry or entry.startswith("="):
            raise ConfigError(f"process.env[{i}]", f"must be KEY=VALUE, not {entry!r}")


def process_rlimits_known(c: Config) -> None:
    seen: set[str] = set()
    for i, rl in enumerate(c.process.rlimits):
        if not rl.type.startswith("RLIMIT_") or not hasattr(resource, rl.type):
            raise ConfigError(f"process.rlimits[{i}].type", f"unknown rlimit {rl.type!r}")
        if rl.type in seen:
            raise ConfigError(f"process.rlimits[{i}].type", f"duplicate rlimit {rl.type!r}")
        seen.add(rl.type)
        if rl.soft > rl.hard:
            raise ConfigError(f"process.rlimits[{i}]", f"soft limit {rl.soft} exceeds hard limit {rl.hard}")


def process_capabilities_known(c: Config) -> None:
    from minirun.linux.capabilities import is_known

    caps = c.process.capabilities
    if caps is None:
        return
    for set_name in ("bounding", "effective", "inheritable", "permitted", "ambient"):
        for i, name in enumerate(getattr(caps, set_name)):
            if not is_known(name):
                raise ConfigError(f"process.capabilities.{set_name}[{i}]", f"unknown capability {name!r}")


def namespaces_known_and_unique(c: Config) -> None:
    seen: set[str] = set()
    for i, ns in enumerate(c.linux.namespaces):
        if ns.type not in NAMESPACE_TYPES:
            raise ConfigError(f"linux.namespaces[{i}].type", f'unknown namespace "{ns.type}"')
        if ns.type in NAMESPACES_NOT_YET:
            raise ConfigError(f"linux.namespaces[{i}].type",
                              f'"{ns.type}" namespaces are not supported by this version of minirun')
        if ns.type in seen:
            raise ConfigError(f"linux.namespaces[{i}].type", f'duplicate namespace "{ns.type}"')
        seen.add(ns.type)
        if ns.path and not os.path.isabs(ns.path):
            raise ConfigError(f"linux.namespaces[{i}].path", f"must be an absolute path, not {ns.path!r}")


def user_namespace_mappings(c: Config) -> None:
    """Id mappings go with a new user namespace and it needs them; a mount's are for bind mounts."""
    from minirun.spec.idmap import check_config

    check_config(c)


def hostname_needs_uts(c: Config) -> None:
    for field, value in (("hostname", c.hostname), ("domainname", c.domainname)):
        if value and c.linux.namespace("uts") is None:
            raise ConfigError(field, "setting it needs a uts namespace in linux.namespaces")
        if len(value.encode()) > 64:
            raise ConfigError(field, "longer than 64 bytes")


def mount_destinations_absolute(c: Config) -> None:
    for i, m in enumerate(c.mounts):
        if not os.path.isabs(m.destination):
            raise ConfigError(f"mounts[{i}].destination", f"must be an absolute path, not {m.destination!r}")
        if not m.type and not {"bind", "rbind"} & set(m.options):
            raise ConfigError(f"mounts[{i}].type", "required unless options include bind or rbind")


def linux_paths_absolute(c: Config) -> None:
    for name, paths in (("maskedPaths", c.linux.masked_paths), ("readonlyPaths", c.linux.readonly_paths)):
        for i, p in enumerate(paths):
            if not os.path.isabs(p):
                raise ConfigError(f"linux.{name}[{i}]", f"must be an absolute path, not {p!r}")


def devices_valid(c: Config) -> None:
    for i, d in enumerate(c.linux.devices):
        if d.type not in DEVICE_TYPES:
            raise ConfigError(f"linux.devices[{i}].type", f"must be one of c, b, u, p, not {d.type!r}")
        if not os.path.isabs(d.path):
            raise ConfigError(f"linux.devices[{i}].path", f"must be an absolute path, not {d.path!r}")


def rootfs_propagation_known(c: Config) -> None:
    if c.linux.rootfs_propagation not in PROPAGATIONS:
        raise ConfigError("linux.rootfsPropagation", f"unknown propagation {c.linux.rootfs_propagation!r}")


def rootfs_is_directory(c: Config) -> None:
    try:
        st = os.stat(c.root_path)
    except OSError as e:
        raise ConfigError("root.path", f"`{c.root_path}`: {os.strerror(e.errno or 0).lower()}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError("root.path", f"`{c.root_path}` is not a directory")


def namespace_paths_match_type(c: Config) -> None:
    from minirun.linux.namespaces import check_namespace_file

    for i, ns in enumerate(c.linux.namespaces):
        if ns.path:
            problem = check_namespace_file(ns.path, ns.type)
            if problem:
                raise ConfigError(f"linux.namespaces[{i}].path", problem)


PURE_CHECKS: list[Callable[[Config], None]] = [
    process_args_not_empty, process_cwd_absolute, process_env_pairs, process_rlimits_known,
    process_capabilities_known, namespaces_known_and_unique, user_namespace_mappings, hostname_needs_uts,
    mount_destinations_absolute, linux_paths_absolute, devices_valid, rootfs_propagation_known,
]
HOST_CHECKS: list[Callable[[Config], None]] = [rootfs_is_directory, namespace_paths_match_type]


def run_all(c: Config, check_filesystem: bool) -> None:
    for check in PURE_CHECKS + (HOST_CHECKS if check_filesystem else []):
        check(c)
