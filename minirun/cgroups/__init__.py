"""Cgroups: detect the host's mode, place a container, enforce linux.resources. See base.Manager."""

from __future__ import annotations

import os

from minirun.cgroups.base import Manager

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

UNIFIED_ROOT = "/sys/fs/cgroup"


def detect_mode() -> str:
    """"v2" when /sys/fs/cgroup is the unified hierarchy, else "v1" (v1 or hybrid)."""
    return "v2" if os.path.exists(os.path.join(UNIFIED_ROOT, "cgroup.controllers")) else "v1"


def default_path(container_id: str) -> str:
    """Relative, so placed under minirun's own cgroup: a container never escapes the runtime's limits."""
    return f"minirun/{container_id}"


def manager_for(container_id: str, cgroups_path: str) -> Manager:
    """The manager for a new container; `cgroups_path` is linux.cgroupsPath ("" for the default)."""
    path = cgroups_path or default_path(container_id)
    if detect_mode() == "v2":
        from minirun.cgroups.v2 import V2Manager

        return V2Manager(path)
    from minirun.cgroups.v1 import V1Manager

    return V1Manager(path)


def from_state(saved: dict[str, Any]) -> Manager | None:
    if not saved:
        return None
    if saved.get("mode") == "v2":
        from minirun.cgroups.v2 import V2Manager

        return V2Manager.from_state(saved)
    from minirun.cgroups.v1 import V1Manager

    return V1Manager.from_state(saved)
