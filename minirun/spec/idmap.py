"""User and group id mappings: `linux.uidMappings`/`gidMappings` and a mount's own `uidMappings`/`gidMappings`.

Parsed into IDMapping lists with every rule the kernel would otherwise enforce later (and less
legibly) checked here, before anything is created.
"""

from __future__ import annotations

from minirun.errors import ConfigError
from minirun.spec.model import Config, IDMapping
from minirun.spec.reader import UINT32_MAX, Field

# The kernel's limit on lines in uid_map/gid_map (UID_GID_MAP_MAX_EXTENTS) since Linux 4.15; older
# kernels took 5, which is the number older documents quote. This host's kernels are all newer.
MAX_MAP_LINES = 340
# (uid_t)-1 is no id at all (it means "unchanged" to setresuid), so no range may reach it: the kernel
# refuses a line whose first + count wraps past 2^32 - 1.
ID_LIMIT = UINT32_MAX


def parse_mappings(f: Field | None) -> list[IDMapping]:
    """A uidMappings or gidMappings array; empty when absent."""
    if f is None:
        return []
    items = f.items()
    if len(items) > MAX_MAP_LINES:
        raise f.fail(f"{len(items)} mappings, the kernel takes at most {MAX_MAP_LINES}")
    mappings = []
    for item in items:
        item.obj()
        container_id = item.need("containerID").integer(0, ID_LIMIT - 1)
        host_id = item.need("hostID").integer(0, ID_LIMIT - 1)
        size = item.need("size").integer(1, ID_LIMIT)
        for name, first in (("containerID", container_id), ("hostID", host_id)):
            if first + size > ID_LIMIT:
                raise item.fail(f"{name} {first} + size {size} goes past {ID_LIMIT - 1}, the highest id")
        mappings.append(IDMapping(container_id, host_id, size))
    _no_overlaps(f.path, mappings)
    return mappings


def _no_overlaps(path: str, mappings: list[IDMapping]) -> None:
    # Quadratic, but at most 340 lines; the kernel refuses overlaps on either side.
    for i, m in enumerate(mappings):
        for j in range(i):
            other = mappings[j]
            for side in ("container_id", "host_id"):
                a, b = getattr(m, side), getattr(other, side)
                if a < b + other.size and b < a + m.size:
                    what = "container" if side == "container_id" else "host"
                    raise ConfigError(f"{path}[{i}]", f"overlaps {path}[{j}] ({what} ids)")


def maps_id(mappings: list[IDMapping], container_id: int) -> bool:
    return any(m.container_id <= container_id < m.container_id + m.size for m in mappings)


def map_text(mappings: list[IDMapping]) -> str:
    """The contents of a uid_map/gid_map file: written in one write(2), as the kernel requires."""
    return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in mappings)


def check_config(c: Config) -> None:
    """Mappings only with a new user namespace, which needs them; mapped ids for the process; the mounts'."""
    lx = c.linux
    index = next((i for i, ns in enumerate(lx.namespaces) if ns.type == "user"), None)
    userns = None if index is None else lx.namespaces[index]
    for name, mappings in (("uidMappings", lx.uid_mappings), ("gidMappings", lx.gid_mappings)):
        if mappings and userns is None:
            raise ConfigError(f"linux.{name}", "needs a new user namespace in linux.namespaces")
        if mappings and userns is not None and userns.path:
            raise ConfigError(f"linux.{name}", f"only for a new user namespace; linux.namespaces[{index}] "
                                               "joins an existing one, whose mappings are already set")
    if userns is not None and not userns.path:
        missing = [n for n, m in (("uidMappings", lx.uid_mappings), ("gidMappings", lx.gid_mappings)) if not m]
        if missing:
            # Without a map every id is unmapped inside and the container could not even act as root.
            raise ConfigError(f"linux.namespaces[{index}].type", "a new user namespace needs "
                              + " and ".join(f"linux.{n}" for n in missing))
        _process_ids_mapped(c)
    for i, m in enumerate(c.mounts):
        _check_mount(i, m.uid_mappings, m.gid_mappings, m.type, m.options)


def _process_ids_mapped(c: Config) -> None:
    user, lx = c.process.user, c.linux
    if not maps_id(lx.uid_mappings, user.uid):
        raise ConfigError("process.user.uid", f"{user.uid} is not mapped by linux.uidMappings")
    if not maps_id(lx.gid_mappings, user.gid):
        raise ConfigError("process.user.gid", f"{user.gid} is not mapped by linux.gidMappings")
    for i, gid in enumerate(user.additional_gids):
        if not maps_id(lx.gid_mappings, gid):
            raise ConfigError(f"process.user.additionalGids[{i}]", f"{gid} is not mapped by linux.gidMappings")


def _check_mount(i: int, uids: list[IDMapping], gids: list[IDMapping], fstype: str, options: list[str]) -> None:
    if not uids and not gids:
        return
    if not uids or not gids:
        # The kernel takes one user namespace for both; one left empty would make every file's owner
        # or group unmapped (and unwritable) in the mount.
        given, other = ("uidMappings", "gidMappings") if uids else ("gidMappings", "uidMappings")
        raise ConfigError(f"mounts[{i}].{given}", f"an id-mapped mount needs {other} too")
    if fstype != "bind" and not {"bind", "rbind"} & set(options):
        raise ConfigError(f"mounts[{i}].uidMappings", "id mappings are only supported on bind mounts")
