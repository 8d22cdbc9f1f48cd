"""Read a bundle's config.json into a Config, refusing malformed input with the field's name."""

from __future__ import annotations

import json
import os

from minirun.errors import ConfigError
from minirun.spec import checks, idmap
from minirun.spec.extras import parse_extras
from minirun.spec.hooks import parse_hooks
from minirun.spec.model import (
    Capabilities,
    Config,
    Device,
    Linux,
    Mount,
    Namespace,
    Process,
    Rlimit,
    User,
)
from minirun.spec.reader import UINT32_MAX, Field

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

    from minirun.cgroups.resources import Resources
    from minirun.spec.seccomp import Seccomp

# Fields of the spec that a later part of minirun implements. Until then a config that uses them is
# refused by name: silently running without a seccomp filter or an id mapping would be a security bug.
NOT_YET_SUPPORTED = (
    "linux.intelRdt",
)


def load_bundle(bundle: str) -> Config:
    bundle = os.path.abspath(bundle)
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError("", f"no such file `{path}`", source="bundle") from None
    except OSError as e:
        problem = os.strerror(e.errno or 0).lower()
        raise ConfigError("", f"cannot read `{path}`: {problem}", source="bundle") from None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError("", f"invalid JSON: {e}") from None
    config = parse_config(data, bundle)
    checks.run_all(config, check_filesystem=True)
    return config


def parse_config(data: Any, bundle: str) -> Config:
    top = Field(data)
    top.obj()
    for dotted in NOT_YET_SUPPORTED:
        section, _, key = dotted.partition(".")
        holder = top.get(section)
        if holder is not None and holder.get(key) is not None:
            raise ConfigError(dotted, "not supported by this version of minirun")
    hooks = parse_hooks(top.get("hooks"))

    root = top.need("root")
    root_path = root.need("path").string()
    linux = _linux(top.get("linux"))
    mounts, annotations = top.get("mounts"), top.get("annotations")
    config = Config(
        bundle=bundle,
        root_path=os.path.normpath(os.path.join(bundle, root_path)),
        root_readonly=root.opt_bool("readonly"),
        process=_process(top.need("process")),
        oci_version=top.opt_str("ociVersion"),
        hostname=top.opt_str("hostname"),
        domainname=top.opt_str("domainname"),
        mounts=[_mount(m) for m in (mounts.items() if mounts else [])],
        linux=linux,
        annotations=annotations.str_map() if annotations else {},
        raw=data,
        hooks=hooks or None,
    )
    config.extras = parse_extras(top, linux.namespaces)
    return config


def _process(p: Field) -> Process:
    p.obj()
    args = p.need("args")
    user = p.get("user")
    caps = p.get("capabilities")
    rlimits = p.get("rlimits")
    return Process(
        args=args.strings(),
        cwd=p.need("cwd").string(),
        env=p.opt_strs("env"),
        terminal=p.opt_bool("terminal"),
        user=_user(user) if user else User(),
        capabilities=_capabilities(caps) if caps else None,
        rlimits=[_rlimit(r) for r in rlimits.items()] if rlimits else [],
        no_new_privileges=p.opt_bool("noNewPrivileges"),
        oom_score_adj=p.opt_int("oomScoreAdj", -1000, 1000),
        console_size=_console_size(p.get("consoleSize")),
    )


def _console_size(c: Field | None) -> tuple[int, int] | None:
    if c is None:
        return None
    c.obj()
    return c.need("height").integer(0, 65535), c.need("width").integer(0, 65535)


def _user(u: Field) -> User:
    gids = u.get("additionalGids")
    return User(
        uid=u.opt_int("uid", 0, UINT32_MAX - 1) or 0,
        gid=u.opt_int("gid", 0, UINT32_MAX - 1) or 0,
        umask=u.opt_int("umask", 0, 0o7777),
        additional_gids=[g.integer(0, UINT32_MAX - 1) for g in gids.items()] if gids else [],
    )


def _capabilities(c: Field) -> Capabilities:
    c.obj()
    return Capabilities(
        bounding=c.opt_strs("bounding"),
        effective=c.opt_strs("effective"),
        inheritable=c.opt_strs("inheritable"),
        permitted=c.opt_strs("permitted"),
        ambient=c.opt_strs("ambient"),
    )


def _rlimit(r: Field) -> Rlimit:
    # RLIM_INFINITY is 2^64-1 in JSON; Python's resource module calls it -1.
    return Rlimit(type=r.need("type").string(), soft=r.need("soft").integer(0, 2**64 - 1),
                  hard=r.need("hard").integer(0, 2**64 - 1))


def _mount(m: Field) -> Mount:
    m.obj()
    return Mount(destination=m.need("destination").string(), type=m.opt_str("type"),
                 source=m.opt_str("source"), options=m.opt_strs("options"),
                 uid_mappings=idmap.parse_mappings(m.get("uidMappings")),
                 gid_mappings=idmap.parse_mappings(m.get("gidMappings")))


def _linux(lx: Field | None) -> Linux:
    if lx is None:
        return Linux()
    lx.obj()
    namespaces = lx.get("namespaces")
    devices = lx.get("devices")
    resources = lx.get("resources")
    linux = Linux(
        namespaces=[Namespace(type=n.need("type").string(), path=n.opt_str("path"))
                    for n in (namespaces.items() if namespaces else [])],
        devices=[_device(d) for d in (devices.items() if devices else [])],
        masked_paths=lx.opt_strs("maskedPaths"),
        readonly_paths=lx.opt_strs("readonlyPaths"),
        rootfs_propagation=lx.opt_str("rootfsPropagation"),
        cgroups_path=lx.opt_str("cgroupsPath"),
        resources=_resources(resources),
    )
    linux.uid_mappings = idmap.parse_mappings(lx.get("uidMappings"))
    linux.gid_mappings = idmap.parse_mappings(lx.get("gidMappings"))
    linux.seccomp = _seccomp(lx.get("seccomp"))
    return linux


def _seccomp(f: Field | None) -> Seccomp | None:
    if f is None:
        return None
    from minirun.spec.seccomp import parse_seccomp  # only configs with a filter pay for it

    return parse_seccomp(f)


def _resources(f: Field | None) -> Resources | None:
    if f is None:
        return None
    # Imported here: the cgroups package is only needed when a config has resources to check.
    from minirun.cgroups.resources import parse_resources

    return parse_resources(f.value, "linux.resources")


def _device(d: Field) -> Device:
    d.obj()
    return Device(
        path=d.need("path").string(),
        type=d.need("type").string(),
        major=d.opt_int("major", 0, UINT32_MAX) or 0,
        minor=d.opt_int("minor", 0, UINT32_MAX) or 0,
        file_mode=_device_mode(d),
        uid=d.opt_int("uid", 0, UINT32_MAX - 1),
        gid=d.opt_int("gid", 0, UINT32_MAX - 1),
    )


def _device_mode(d: Field) -> int | None:
    """Podman sends the whole st_mode of the host's node (0o20666): type bits are accepted when they
    match `type`, and dropped."""
    mode = d.opt_int("fileMode", 0, 0o177777)
    if mode is None or mode <= 0o7777:
        return mode
    kind = d.need("type").string()
    want = {"c": 0o020000, "u": 0o020000, "b": 0o060000, "p": 0o010000}.get(kind)
    if mode & 0o170000 != want:
        raise d.need("fileMode").fail(f"{mode:#o} has file type bits that do not match type {kind!r}")
    return mode & 0o7777


def parse_process(data: Any, where: str) -> Process:
    """An OCI process object on its own (`exec --process`, or the saved config's for `exec`); `where`
    prefixes the field names in errors."""
    return _process(Field(data, where))
