"""`minirun features`: the runtime-spec Features structure (features.md, features-linux.md).

Every list is derived from the tables the code itself uses to parse and apply a config, so what this
prints cannot drift from what minirun accepts; tests/unit/test_features.py feeds each listed value back
through the parser to prove it. As the spec asks, it describes minirun, not the host: a feature is
listed when minirun implements it, whether or not this kernel has it.
"""

from __future__ import annotations

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

OCI_VERSION_MIN = "1.0.0"
IDMAP_MOUNTS = True  # mounts' uidMappings/gidMappings (linux/userns.py)


def mount_options() -> list[str]:
    from minirun.linux.mountopts import BIND_OPTIONS, EXTENSION_OPTIONS, FLAG_OPTIONS, PROPAGATION_OPTIONS

    return sorted([*FLAG_OPTIONS, *PROPAGATION_OPTIONS, *BIND_OPTIONS, *EXTENSION_OPTIONS])


def capabilities() -> list[str]:
    """Every capability name the shim was built with (from <linux/capability.h>), in bit order."""
    from minirun.linux import syscalls

    lib = syscalls.shim().lib
    names = [n for n in dir(lib) if n.startswith("CAP_") and n != "CAP_LAST_CAP" and isinstance(getattr(lib, n), int)]
    return sorted(names, key=lambda n: int(getattr(lib, n)))


def seccomp() -> dict[str, Any]:
    from minirun.spec import seccomp as sc

    return {
        "enabled": True,
        "actions": sorted(sc.SUPPORTED_ACTIONS),
        "operators": sorted(sc.SUPPORTED_OPERATORS),
        "archs": sorted(sc.SUPPORTED_ARCHES),
        "knownFlags": sorted(sc.SUPPORTED_FLAGS),
        "supportedFlags": sorted(sc.SUPPORTED_FLAGS),
    }


def features() -> dict[str, Any]:
    from minirun import OCI_VERSION, __version__
    from minirun.spec.checks import NAMESPACES_NOT_YET
    from minirun.spec.hooks import SUPPORTED_HOOKS
    from minirun.spec.load import NOT_YET_SUPPORTED
    from minirun.spec.model import NAMESPACE_TYPES

    linux: dict[str, Any] = {
        "namespaces": sorted(n for n in NAMESPACE_TYPES if n not in NAMESPACES_NOT_YET),
        "capabilities": capabilities(),
        # systemd cgroup paths (slice:prefix:name) are accepted but placed by cgroupfs, not by systemd.
        "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False, "rdma": True},
        "seccomp": seccomp(),
        # Profiles and labels are applied where the host enables the module, ignored elsewhere (as runc).
        "apparmor": {"enabled": True},
        "selinux": {"enabled": True},
        "intelRdt": {"enabled": "linux.intelRdt" not in NOT_YET_SUPPORTED},
        "mountExtensions": {"idmap": {"enabled": IDMAP_MOUNTS}},
    }
    return {
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION,
        "hooks": list(SUPPORTED_HOOKS),
        "mountOptions": mount_options(),
        "linux": linux,
        "annotations": {"org.minirun.version": __version__},
    }
