"""Who the container process runs as: groups, gid, uid (keeping capabilities across), umask, HOME."""

from __future__ import annotations

import os

import prctl

from minirun.errors import kernel_error
from minirun.linux import capabilities
from minirun.spec.model import Process, User

DEFAULT_UMASK = 0o022


def drop_privileges(process: Process) -> None:
    """Bounding set, ids, then the other capability sets and no_new_privs, in the order the kernel needs:
    dropping from the bounding set takes CAP_SETPCAP, which switching user may take away."""
    caps = process.capabilities
    if caps is not None:
        capabilities.drop_bounding(capabilities.mask(caps.bounding, "bounding"))
    switch_user(process.user)
    if caps is not None:
        capabilities.apply_sets(caps)
    if process.no_new_privileges:
        prctl.set_no_new_privs(True)


def switch_user(user: User) -> None:
    """Drop to the configured ids; capabilities are kept so that they can be set exactly afterwards."""
    prctl.set_keepcaps(True)
    try:
        os.setgroups(user.additional_gids)
    except OSError as e:
        # In a user namespace whose setgroups is "deny" (made by an unprivileged tool, joined by path)
        # the call is refused outright; with no additional groups asked for, there is nothing to drop.
        if user.additional_gids or not _setgroups_denied():
            raise kernel_error(f"setgroups {user.additional_gids} (process.user.additionalGids)", e) from None
    try:
        os.setresgid(user.gid, user.gid, user.gid)
    except OSError as e:
        raise kernel_error(f"setgid {user.gid} (process.user.gid)", e) from None
    try:
        os.setresuid(user.uid, user.uid, user.uid)
    except OSError as e:
        raise kernel_error(f"setuid {user.uid} (process.user.uid)", e) from None
    prctl.set_keepcaps(False)
    os.umask(DEFAULT_UMASK if user.umask is None else user.umask)


def _setgroups_denied() -> bool:
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "deny"
    except OSError:
        return False


def home_of(uid: int, passwd: str = "/etc/passwd") -> str:
    """HOME for `uid` from the container's /etc/passwd (read after pivot_root), "/" when unknown."""
    try:
        with open(passwd, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if len(fields) >= 6 and fields[2] == str(uid):
                    return fields[5] or "/"
    except OSError:
        pass
    return "/"
