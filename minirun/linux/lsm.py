"""process.apparmorProfile, process.selinuxLabel and linux.mountLabel.

As runc does, a profile or label for a security module this host does not run is ignored: configs
written for an AppArmor host still run on a host without it. When the module is enabled, the label is
written to the exec attribute of this process, so that the kernel applies it at the next execve.
That execve is the trampoline's (see linux/execute.py), which then execs the container's binary
already confined: the container's own code never runs unconfined.
"""

from __future__ import annotations

import os

from minirun.errors import KernelError, MinirunError

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from minirun.spec.extras import Extras

APPARMOR_ENABLED_FILE = "/sys/module/apparmor/parameters/enabled"
APPARMOR_SECURITYFS = "/sys/kernel/security/apparmor"
SELINUX_FS = "/sys/fs/selinux"


def apparmor_enabled() -> bool:
    try:
        with open(APPARMOR_ENABLED_FILE, "rb") as f:
            return f.read(1) == b"Y"
    except OSError:
        return os.path.isdir(APPARMOR_SECURITYFS)


def selinux_enabled() -> bool:
    """selinuxfs is mounted exactly when SELinux is enabled (enforcing or permissive)."""
    return os.path.isfile(os.path.join(SELINUX_FS, "enforce"))


def check_host(extras: Extras) -> None:
    """Refuse what minirun cannot honour on this host rather than run with less isolation."""
    if extras.mount_label and selinux_enabled():
        raise MinirunError("config.json: linux.mountLabel: not supported by this version of minirun "
                           "on a host with SELinux enabled")


def open_exec_attrs(extras: Extras) -> list[tuple[int, str, str]]:
    """Open the exec attribute files while the host's /proc is still visible: (fd, text, field)."""
    wanted = []
    if extras.apparmor_profile and apparmor_enabled():
        # The per-module file (Linux 5.8+) first; `attr/exec` is whichever module is the major one.
        path = "/proc/self/attr/apparmor/exec"
        if not os.path.exists(path):
            path = "/proc/self/attr/exec"
        wanted.append((path, f"exec {extras.apparmor_profile}", "process.apparmorProfile"))
    if extras.selinux_label and selinux_enabled():
        wanted.append(("/proc/self/attr/exec", extras.selinux_label, "process.selinuxLabel"))
    out = []
    for path, text, field in wanted:
        try:
            out.append((os.open(path, os.O_WRONLY | os.O_CLOEXEC), text, field))
        except OSError as e:
            for fd, _, _ in out:
                os.close(fd)
            raise KernelError(f"{field}: open `{path}`", e.errno or 0) from None
    return out


def write_exec_attrs(opened: list[tuple[int, str, str]]) -> None:
    for fd, text, field in opened:
        try:
            os.write(fd, text.encode())
        except OSError as e:
            raise KernelError(f"{field}: set {text!r}", e.errno or 0) from None
        finally:
            os.close(fd)
