"""The OCI mount option table: each option sets or clears a flag, or changes propagation.

Anything not in the table is passed to the filesystem as mount data (``size=64k``, ``mode=755``,
``newinstance``), as runc does.
"""

from __future__ import annotations

from minirun.linux import syscalls

# option -> (True: set the flag, False: clear it, flag name)
FLAG_OPTIONS: dict[str, tuple[bool, str]] = {
    "ro": (True, "MS_RDONLY"), "rw": (False, "MS_RDONLY"),
    "nosuid": (True, "MS_NOSUID"), "suid": (False, "MS_NOSUID"),
    "nodev": (True, "MS_NODEV"), "dev": (False, "MS_NODEV"),
    "noexec": (True, "MS_NOEXEC"), "exec": (False, "MS_NOEXEC"),
    "sync": (True, "MS_SYNCHRONOUS"), "async": (False, "MS_SYNCHRONOUS"),
    "dirsync": (True, "MS_DIRSYNC"),
    "remount": (True, "MS_REMOUNT"),
    "mand": (True, "MS_MANDLOCK"), "nomand": (False, "MS_MANDLOCK"),
    "noatime": (True, "MS_NOATIME"), "atime": (False, "MS_NOATIME"),
    "nodiratime": (True, "MS_NODIRATIME"), "diratime": (False, "MS_NODIRATIME"),
    "relatime": (True, "MS_RELATIME"), "norelatime": (False, "MS_RELATIME"),
    "strictatime": (True, "MS_STRICTATIME"), "nostrictatime": (False, "MS_STRICTATIME"),
    "lazytime": (True, "MS_LAZYTIME"), "nolazytime": (False, "MS_LAZYTIME"),
    "iversion": (True, "MS_I_VERSION"), "noiversion": (False, "MS_I_VERSION"),
    "silent": (True, "MS_SILENT"), "loud": (False, "MS_SILENT"),
    "nosymfollow": (True, "MS_NOSYMFOLLOW"),
}
PROPAGATION_OPTIONS: dict[str, tuple[str, ...]] = {
    "private": ("MS_PRIVATE",), "rprivate": ("MS_PRIVATE", "MS_REC"),
    "shared": ("MS_SHARED",), "rshared": ("MS_SHARED", "MS_REC"),
    "slave": ("MS_SLAVE",), "rslave": ("MS_SLAVE", "MS_REC"),
    "unbindable": ("MS_UNBINDABLE",), "runbindable": ("MS_UNBINDABLE", "MS_REC"),
}
BIND_OPTIONS = {"bind": False, "rbind": True}  # option -> recursive
# runc's extension, sent by Podman for --tmpfs and --read-only: a tmpfs starts with a copy of what the
# directory it covers held (linux/rootfs.py); never passed to the kernel.
EXTENSION_OPTIONS = ("tmpcopyup",)


class MountOptions:
    __slots__ = ("bind", "clear", "copyup", "data", "flags", "propagation", "recursive")

    def __init__(self) -> None:
        self.flags = 0  # flags to set
        self.clear = 0  # flags the options explicitly clear
        self.propagation: list[int] = []
        self.bind = False
        self.recursive = False
        self.data: list[str] = []
        self.copyup = False

    @property
    def data_string(self) -> str | None:
        return ",".join(self.data) or None


def parse(options: list[str]) -> MountOptions:
    out = MountOptions()
    for opt in options:
        if opt in FLAG_OPTIONS:
            is_set, name = FLAG_OPTIONS[opt]
            bit = syscalls.const(name)
            if is_set:
                out.flags |= bit
                out.clear &= ~bit
            else:
                out.flags &= ~bit
                out.clear |= bit
        elif opt in PROPAGATION_OPTIONS:
            bits = 0
            for name in PROPAGATION_OPTIONS[opt]:
                bits |= syscalls.const(name)
            out.propagation.append(bits)
        elif opt in BIND_OPTIONS:
            out.bind = True
            out.recursive = out.recursive or BIND_OPTIONS[opt]
        elif opt == "tmpcopyup":
            out.copyup = True
        elif opt == "defaults":
            continue
        else:
            out.data.append(opt)
    return out
