"""The parts of the OCI runtime-spec config that minirun acts on, as typed objects.

Plain classes with __slots__ rather than dataclasses: `dataclasses` imports `inspect` and generates
code per class, which costs ~15 ms on every `create` and `run`.
"""

from __future__ import annotations

from minirun.spec.extras import Extras

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

    from minirun.cgroups.resources import Resources
    from minirun.spec.hooks import Hooks
    from minirun.spec.seccomp import Seccomp

NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")


class User:
    __slots__ = ("additional_gids", "gid", "uid", "umask")

    def __init__(self, uid: int = 0, gid: int = 0, umask: int | None = None,
                 additional_gids: list[int] | None = None) -> None:
        self.uid, self.gid, self.umask = uid, gid, umask
        self.additional_gids = additional_gids or []


class Capabilities:
    __slots__ = ("ambient", "bounding", "effective", "inheritable", "permitted")

    def __init__(self, bounding: list[str], effective: list[str], inheritable: list[str],
                 permitted: list[str], ambient: list[str]) -> None:
        self.bounding, self.effective, self.inheritable = bounding, effective, inheritable
        self.permitted, self.ambient = permitted, ambient


class Rlimit:
    __slots__ = ("hard", "soft", "type")

    def __init__(self, type: str, soft: int, hard: int) -> None:
        self.type, self.soft, self.hard = type, soft, hard


class Process:
    __slots__ = ("args", "capabilities", "console_size", "cwd", "env", "no_new_privileges", "oom_score_adj",
                 "rlimits", "terminal", "user")

    def __init__(self, args: list[str], cwd: str, env: list[str], terminal: bool, user: User,
                 capabilities: Capabilities | None, rlimits: list[Rlimit], no_new_privileges: bool,
                 oom_score_adj: int | None, console_size: tuple[int, int] | None = None) -> None:
        self.args, self.cwd, self.env, self.terminal, self.user = args, cwd, env, terminal, user
        self.console_size = console_size  # (height, width) of the pty, with terminal
        # None means "not given": the process keeps the capabilities it has (runc does the same).
        self.capabilities = capabilities
        self.rlimits = rlimits
        self.no_new_privileges = no_new_privileges
        self.oom_score_adj = oom_score_adj


class IDMapping:
    """One line of a uid_map or gid_map: `size` ids from `container_id` are `host_id`... on the host."""

    __slots__ = ("container_id", "host_id", "size")

    def __init__(self, container_id: int, host_id: int, size: int) -> None:
        self.container_id, self.host_id, self.size = container_id, host_id, size


class Mount:
    __slots__ = ("destination", "gid_mappings", "options", "source", "type", "uid_mappings")

    def __init__(self, destination: str, type: str = "", source: str = "",
                 options: list[str] | None = None, uid_mappings: list[IDMapping] | None = None,
                 gid_mappings: list[IDMapping] | None = None) -> None:
        self.destination, self.type, self.source = destination, type, source
        self.options = options or []
        self.uid_mappings = uid_mappings or []  # non-empty: an id-mapped bind mount
        self.gid_mappings = gid_mappings or []


class Namespace:
    __slots__ = ("path", "type")

    def __init__(self, type: str, path: str = "") -> None:
        self.type, self.path = type, path


class Device:
    __slots__ = ("file_mode", "gid", "major", "minor", "path", "type", "uid")

    def __init__(self, path: str, type: str, major: int = 0, minor: int = 0,
                 file_mode: int | None = None, uid: int | None = None, gid: int | None = None) -> None:
        self.path, self.type, self.major, self.minor = path, type, major, minor
        self.file_mode, self.uid, self.gid = file_mode, uid, gid


class Linux:
    __slots__ = ("cgroups_path", "devices", "gid_mappings", "masked_paths", "namespaces", "readonly_paths",
                 "resources", "rootfs_propagation", "seccomp", "uid_mappings")

    def __init__(self, namespaces: list[Namespace] | None = None, devices: list[Device] | None = None,
                 masked_paths: list[str] | None = None, readonly_paths: list[str] | None = None,
                 rootfs_propagation: str = "", cgroups_path: str = "",
                 resources: Resources | None = None) -> None:
        self.namespaces = namespaces or []
        self.devices = devices or []
        self.masked_paths = masked_paths or []
        self.readonly_paths = readonly_paths or []
        self.rootfs_propagation = rootfs_propagation
        self.cgroups_path = cgroups_path
        self.resources = resources  # None when linux.resources is absent
        self.uid_mappings: list[IDMapping] = []  # for a new user namespace
        self.gid_mappings: list[IDMapping] = []
        self.seccomp: Seccomp | None = None  # None when linux.seccomp is absent

    def namespace(self, ns_type: str) -> Namespace | None:
        return next((ns for ns in self.namespaces if ns.type == ns_type), None)


class Config:
    __slots__ = ("annotations", "bundle", "domainname", "extras", "hooks", "hostname", "linux", "mounts",
                 "oci_version", "process", "raw", "root_path", "root_readonly")

    def __init__(self, bundle: str, root_path: str, root_readonly: bool, process: Process,
                 oci_version: str = "", hostname: str = "", domainname: str = "",
                 mounts: list[Mount] | None = None, linux: Linux | None = None,
                 annotations: dict[str, str] | None = None, raw: dict[str, Any] | None = None,
                 hooks: Hooks | None = None) -> None:
        self.bundle = bundle
        self.root_path = root_path  # absolute
        self.root_readonly = root_readonly
        self.process = process
        self.oci_version, self.hostname, self.domainname = oci_version, hostname, domainname
        self.mounts = mounts or []
        self.linux = linux or Linux()
        self.annotations = annotations or {}
        self.raw = raw or {}
        self.hooks = hooks  # None when there are none
        # sysctl, time offsets, personality, scheduling, affinity, memory policy, net devices, LSM labels
        self.extras = Extras()
