"""Where a container's cgroup goes: the host's cgroup mounts, minirun's own cgroup, linux.cgroupsPath.

Placement rule (shared by the v1 and v2 drivers):

- An absolute cgroupsPath ("/a/b") is taken as given, relative to each hierarchy's root, as the
  runtime-spec says.
- A relative one, and the default `minirun/<id>`, is placed below the cgroup minirun itself runs in,
  hierarchy by hierarchy (on a v1 host these can differ: memory may be /process_api/x while cpu is /).
  A container therefore never escapes the limits the runtime runs under.
  On v2 one refinement is forced by the "no internal process" rule: a non-root cgroup holding
  processes cannot pass controllers to children, and minirun's own cgroup always holds at least
  minirun. So on v2 a relative path goes below the nearest cgroup, from minirun's own upwards, that is
  the root or holds no processes itself (on a systemd host: the slice above the session scope) -
  still inside every limit set on that ancestor and above. runc goes straight to the root instead.
- The systemd form "slice:prefix:name" is accepted for runc compatibility, but minirun does not talk
  to systemd: it is mapped to the relative path `slice/prefix-name.scope` (an empty slice is left out,
  an empty prefix gives `name.scope`) and placed like any relative path. The same string always gives
  the same place, which is what the spec asks of a cgroupsPath.

Refused, naming linux.cgroupsPath: `..` components (they would climb out of the placement), empty
names, a path that is a hierarchy's root, and a path that is minirun's own cgroup or one of its
ancestors (destroying the container would then kill minirun and its neighbours).
"""

from __future__ import annotations

from minirun.errors import ConfigError

FIELD = "linux.cgroupsPath"


class Hierarchy:
    """One mounted cgroup hierarchy (deduplicated: a hierarchy bind-mounted twice is listed once)."""

    __slots__ = ("controllers", "fstype", "mount_point", "root")

    def __init__(self, mount_point: str, root: str, fstype: str, controllers: tuple[str, ...]) -> None:
        self.mount_point = mount_point  # e.g. /sys/fs/cgroup/memory
        self.root = root  # the cgroup shown at mount_point (not "/" inside some containers)
        self.fstype = fstype  # cgroup or cgroup2
        self.controllers = controllers  # v1: ("cpu", "cpuacct") or ("name=systemd",); cgroup2: ()

    def directory(self, cgroup: str) -> str:
        """The directory of `cgroup` (a path from /proc/PID/cgroup) in this hierarchy's mount."""
        root = self.root.rstrip("/")
        if cgroup != root and not cgroup.startswith(root + "/"):
            raise ConfigError(FIELD, f"cgroup {cgroup} is outside the part of the hierarchy mounted at "
                              f"{self.mount_point} ({self.root})")
        return self.mount_point.rstrip("/") + cgroup[len(root):].rstrip("/")

    def __repr__(self) -> str:
        return f"Hierarchy({self.mount_point}, {','.join(self.controllers) or self.fstype})"


def _unescape(field: str) -> str:
    r"""mountinfo escapes space, tab, newline and backslash as \040 \011 \012 \134."""
    if "\\" not in field:
        return field
    for code, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, ch)
    return field


def known_controllers() -> set[str]:
    """The v1 controllers this kernel has (/proc/cgroups), to tell them from mount options."""
    names = set()
    try:
        with open("/proc/cgroups") as f:
            for line in f:
                if not line.startswith("#") and line.split():
                    names.add(line.split()[0])
    except OSError:
        pass
    return names


def hierarchies(mountinfo: str = "/proc/self/mountinfo") -> list[Hierarchy]:
    """Every cgroup and cgroup2 mount visible to this process, one per hierarchy (first mount wins)."""
    known = known_controllers()
    seen: set[str] = set()
    found = []
    with open(mountinfo) as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype = fields[sep + 1]
            if fstype not in ("cgroup", "cgroup2") or fields[2] in seen:
                continue
            seen.add(fields[2])  # major:minor of the superblock identifies the hierarchy
            controllers: tuple[str, ...] = ()
            if fstype == "cgroup":
                opts = fields[sep + 3].split(",")
                controllers = tuple(o for o in opts if o in known or o.startswith("name="))
            found.append(Hierarchy(_unescape(fields[4]), _unescape(fields[3]), fstype, controllers))
    return found


_read_once: dict[str, list[tuple[str, list[str], str]]] = {}


def own_cgroup(controller_or_unified: str, proc_cgroup: str = "/proc/self/cgroup") -> str:
    """This process's cgroup in the hierarchy of a v1 controller ("memory", "name=systemd"), or in the
    unified hierarchy for "" or "unified". "/" when the hierarchy is not listed."""
    unified = controller_or_unified in ("", "unified")
    if proc_cgroup not in _read_once:  # asked once per hierarchy: one read per command is enough
        with open(proc_cgroup) as f:
            lines = [line.rstrip("\n").split(":", 2) for line in f]
        _read_once[proc_cgroup] = [(h, c.split(","), p) for h, c, p in lines]
    for hier_id, ctrls, path in _read_once[proc_cgroup]:
        if unified:
            if hier_id == "0" and ctrls == [""]:
                return path
        elif controller_or_unified in ctrls:
            return path
    return "/"


def systemd_to_path(value: str) -> str:
    """"slice:prefix:name" → "slice/prefix-name.scope" (see the module docstring)."""
    slice_, prefix, name = value.split(":")
    for part, what in ((slice_, "slice"), (prefix, "prefix"), (name, "name")):
        if "/" in part or part in (".", ".."):
            raise ConfigError(FIELD, f"{value!r}: the systemd form's {what} {part!r} must be a plain name")
    if not name:
        raise ConfigError(FIELD, f"{value!r}: the systemd form slice:prefix:name needs a name")
    unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    return f"{slice_}/{unit}" if slice_ else unit


def is_systemd_form(value: str) -> bool:
    return not value.startswith("/") and value.count(":") == 2


def check_components(path: str) -> list[str]:
    """The names of `path`, refusing what could climb out of the place it is joined to."""
    names = [n for n in path.split("/") if n not in ("", ".")]
    if ".." in names:
        raise ConfigError(FIELD, f"{path!r}: `..` is not allowed (the cgroup would leave its hierarchy)")
    if any("\n" in n for n in names):
        raise ConfigError(FIELD, f"{path!r}: a cgroup name cannot contain a newline")
    return names


def resolve(cgroups_path: str, mode: str, controller: str = "", proc_cgroup: str = "/proc/self/cgroup",
            base: str | None = None) -> str:
    """linux.cgroupsPath → the container's cgroup ("/a/b", as /proc/PID/cgroup would show it).

    `mode` is "v1" or "v2". On v1 the placement of a relative path depends on the hierarchy, named
    by one of its controllers (`controller`); on v2 there is one hierarchy and `controller` is unused.
    A relative path goes below `base`, by default minirun's own cgroup (the v2 driver passes the
    nearest ancestor that may delegate controllers instead).
    """
    if not cgroups_path:
        raise ConfigError(FIELD, "an empty path names no cgroup")
    own = own_cgroup("" if mode == "v2" else controller, proc_cgroup)
    if base is None:
        base = own
    if is_systemd_form(cgroups_path):
        names = check_components(systemd_to_path(cgroups_path))
        absolute = False
    else:
        names = check_components(cgroups_path)
        absolute = cgroups_path.startswith("/")
    if not names:
        raise ConfigError(FIELD, f"{cgroups_path!r} is the root of the hierarchy, not a cgroup of its own")
    joined = "/" + "/".join(names)
    result = joined if absolute else (base.rstrip("/") + joined)
    if own == result or own.startswith(result.rstrip("/") + "/"):
        where = "minirun's own cgroup" if own == result else "an ancestor of minirun's own cgroup"
        raise ConfigError(FIELD, f"{cgroups_path!r} is {where} ({own}"
                          f"{' in the ' + controller + ' hierarchy' if controller else ''}): deleting the "
                          "container would kill the runtime and its neighbours")
    return result


def relative_to(cgroup: str, base: str) -> str:
    """`cgroup` below `base`, or "" when it is not below it (both as /proc/PID/cgroup paths)."""
    base = base.rstrip("/")
    return cgroup[len(base) + 1:] if cgroup.startswith(base + "/") else ""
