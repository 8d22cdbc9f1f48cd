"""Security of the container process: capability sets, noNewPrivileges, fd hygiene, non-dumpable init,
and the /proc/self/exe class of escapes (runc CVE-2019-5736).

Everything is observed from inside a real container (the probe's JSON, a shell) or on the host.
"""

from __future__ import annotations

import copy
import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MINIRUN, REPO, ROOTFS, Runtime

CAP_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")
CAP_CHOWN, CAP_KILL, CAP_NET_BIND_SERVICE = 0, 5, 10
WAIT_SECONDS = 20.0


def bits(*numbers: int) -> str:
    """A capability mask written the way /proc/self/status (and the probe) writes it."""
    mask = 0
    for n in numbers:
        mask |= 1 << n
    return f"{mask:016x}"


def own_status_field(name: str) -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.strip()
    raise AssertionError(f"no {name} in /proc/self/status")


def caps_config(runtime: Runtime, sets: dict[str, list[str]], uid: int = 0) -> dict[str, Any]:
    cfg = copy.deepcopy(runtime.config)
    cfg["process"]["capabilities"] = {name: list(sets.get(name, [])) for name in CAP_SETS}
    cfg["process"]["user"] = {"uid": uid, "gid": uid}
    return cfg


def state_dirs(runtime: Runtime) -> list[str]:
    return sorted(os.listdir(runtime.root)) if runtime.root.is_dir() else []


# --- capabilities ------------------------------------------------------------------------------------


def test_capability_sets_of_a_non_root_user_with_ambient(runtime: Runtime, host_unchanged: None) -> None:
    cfg = caps_config(runtime, {
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "effective": ["CAP_CHOWN", "CAP_NET_BIND_SERVICE"],
        "inheritable": ["CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "ambient": ["CAP_NET_BIND_SERVICE"],
    }, uid=1000)
    caps = runtime.probe("facts", config=cfg)["caps"]
    # execve(2) as a non-root user of a file without file capabilities: permitted and effective become
    # the ambient set; bounding, inheritable and ambient are kept as they were set.
    assert caps == {
        "bounding": bits(CAP_CHOWN, CAP_KILL, CAP_NET_BIND_SERVICE),
        "effective": bits(CAP_NET_BIND_SERVICE),
        "permitted": bits(CAP_NET_BIND_SERVICE),
        "inheritable": bits(CAP_KILL, CAP_NET_BIND_SERVICE),
        "ambient": bits(CAP_NET_BIND_SERVICE),
    }


@pytest.mark.parametrize("no_new_privileges", [True, False], ids=["noNewPrivileges", "newPrivileges"])
def test_capability_sets_of_root(runtime: Runtime, host_unchanged: None, no_new_privileges: bool) -> None:
    cfg = caps_config(runtime, {
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
        "permitted": ["CAP_CHOWN", "CAP_KILL"],
        "effective": ["CAP_CHOWN", "CAP_KILL"],
        "inheritable": ["CAP_KILL"],
    })
    cfg["process"]["noNewPrivileges"] = no_new_privileges
    caps = runtime.probe("facts", config=cfg)["caps"]
    # execve(2) as root grants permitted = inheritable | bounding, all effective; under no_new_privs
    # nothing can be gained, so the configured permitted and effective sets are what the process has.
    gained = bits(CAP_CHOWN, CAP_KILL) if no_new_privileges else bits(CAP_CHOWN, CAP_KILL, CAP_NET_BIND_SERVICE)
    assert caps == {
        "bounding": bits(CAP_CHOWN, CAP_KILL, CAP_NET_BIND_SERVICE),
        "effective": gained,
        "permitted": gained,
        "inheritable": bits(CAP_KILL),
        "ambient": bits(),
    }


def test_empty_capability_sets_leave_root_without_any(runtime: Runtime, host_unchanged: None) -> None:
    caps = runtime.probe("facts", config=caps_config(runtime, {}))["caps"]
    assert caps == dict.fromkeys(CAP_SETS, bits())


def test_without_capabilities_field_root_keeps_its_full_set(runtime: Runtime, host_unchanged: None) -> None:
    cfg = copy.deepcopy(runtime.config)
    del cfg["process"]["capabilities"]
    caps = runtime.probe("facts", config=cfg)["caps"]
    full = own_status_field("CapBnd").lower()
    assert int(full, 16) != 0
    assert caps == {"bounding": full, "effective": full, "permitted": full,
                    "inheritable": own_status_field("CapInh").lower(), "ambient": bits()}


DEFAULT_SETS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


@pytest.mark.parametrize("granted", [False, True], ids=["without-CAP_SYS_ADMIN", "with-CAP_SYS_ADMIN"])
def test_mount_needs_cap_sys_admin(runtime: Runtime, host_unchanged: None, granted: bool) -> None:
    names = DEFAULT_SETS + (["CAP_SYS_ADMIN"] if granted else [])
    cfg = caps_config(runtime, {"bounding": names, "effective": names, "permitted": names})
    answer = runtime.probe("mount", "tmpfs", "/mnt", "tmpfs", config=cfg)
    if granted:
        assert answer["ok"] is True, answer
    else:
        assert (answer["ok"], answer["errno"]) == (False, errno.EPERM), answer


@pytest.mark.parametrize("granted", [False, True], ids=["without-CAP_MKNOD", "with-CAP_MKNOD"])
def test_mknod_needs_cap_mknod(runtime: Runtime, host_unchanged: None, granted: bool) -> None:
    names = DEFAULT_SETS + (["CAP_MKNOD"] if granted else [])
    cfg = caps_config(runtime, {"bounding": names, "effective": names, "permitted": names})
    # /dev/shm is a writable tmpfs of the container and the device cgroup allows c 1:3: only the
    # capability decides.
    cfg["linux"]["resources"]["devices"].append({"allow": True, "type": "c", "major": 1, "minor": 3,
                                                 "access": "rwm"})
    answer = runtime.probe("mknod", "/dev/shm/null2", "c", "1", "3", config=cfg)
    if granted:
        assert answer["ok"] is True, answer
    else:
        assert (answer["ok"], answer["errno"]) == (False, errno.EPERM), answer


@pytest.mark.parametrize("granted", [False, True], ids=["without-CAP_SYS_ADMIN", "with-CAP_SYS_ADMIN"])
def test_sethostname_needs_cap_sys_admin(runtime: Runtime, host_unchanged: None, granted: bool) -> None:
    host_name = os.uname().nodename
    names = DEFAULT_SETS + (["CAP_SYS_ADMIN"] if granted else [])
    cfg = caps_config(runtime, {"bounding": names, "effective": names, "permitted": names})
    answer = runtime.probe("sethostname", "changed-inside", config=cfg)
    if granted:
        assert answer["ok"] is True, answer
    else:
        assert (answer["ok"], answer["errno"]) == (False, errno.EPERM), answer
    assert os.uname().nodename == host_name


# --- noNewPrivileges ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("no_new_privileges", "observed"), [(True, 1), (False, 0)])
def test_no_new_privileges_is_observed(runtime: Runtime, host_unchanged: None, no_new_privileges: bool,
                                       observed: int) -> None:
    assert own_status_field("NoNewPrivs") == "0"  # else the container would inherit it anyway
    cfg = copy.deepcopy(runtime.config)
    cfg["process"]["noNewPrivileges"] = no_new_privileges
    assert runtime.probe("facts", config=cfg)["no_new_privs"] == observed


# --- file descriptors --------------------------------------------------------------------------------


def test_container_holds_exactly_fds_0_1_2_even_with_an_inherited_fd(
        runtime: Runtime, host_unchanged: None) -> None:
    secret_dir = Path(tempfile.mkdtemp(prefix="minirun-test-fd-"))
    secret = secret_dir / "host-secret"
    secret.write_text("host only\n")
    fd = os.open(secret, os.O_RDONLY)
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 200)  # also one far from 0..2
    try:
        os.set_inheritable(fd, True)
        os.set_inheritable(high, True)
        bundle = runtime.bundle(runtime.config)
        result = runtime.cmd("run", "--bundle", str(bundle), "minirun-test-fds", input="", pass_fds=(fd, high))
    finally:
        os.close(fd)
        os.close(high)
        shutil.rmtree(secret_dir, ignore_errors=True)
    assert result.returncode == 0, result.stderr
    fds: dict[str, str | None] = result.json()["fds"]
    assert sorted(fds) == ["0", "1", "2"]
    # stdin, stdout and stderr are the pipes the caller gave; nothing names a host file.
    for target in fds.values():
        assert target is not None and target.startswith("pipe:["), fds
        assert str(secret_dir) not in target


# --- the init while `created` ------------------------------------------------------------------------


def as_user_1000(*argv: str) -> subprocess.CompletedProcess[str]:
    """`argv` run on the host as uid/gid 1000 without capabilities: what an unprivileged peer can do."""
    return subprocess.run(list(argv), user=1000, group=1000, extra_groups=[], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL)


def minirun_detached(runtime: Runtime, *args: str, out: Path) -> int:
    """A verb whose container keeps our stdio: its output goes to `out`, so we never wait for EOF."""
    with open(out, "ab") as f:
        return subprocess.run([str(MINIRUN), "--root", str(runtime.root), *args], stdin=subprocess.DEVNULL,
                              stdout=f, stderr=f, timeout=30).returncode


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_created_init_is_not_dumpable_and_its_exe_is_out_of_reach(
        runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    # No capabilities at all, so that only dumpability (not a capability subset) decides ptrace access.
    cfg = caps_config(runtime, {}, uid=1000)
    cfg["process"]["args"] = ["/usr/bin/probe", "hold", "300"]
    bundle = runtime.bundle(cfg)
    out = tmp_path / "container-output"
    cid = "minirun-test-dumpable"
    assert minirun_detached(runtime, "create", "--bundle", str(bundle), cid, out=out) == 0, out.read_text()
    try:
        state = runtime.state(cid)
        assert state["status"] == "created"
        pid = int(state["pid"])
        status = Path(f"/proc/{pid}/status").read_text()
        assert "\nUid:\t1000\t1000\t1000\t1000\n" in status
        # A non-dumpable task's /proc files are owned by root, whoever it runs as.
        environ = os.stat(f"/proc/{pid}/environ")
        assert (environ.st_uid, environ.st_gid) == (0, 0)
        # A process of the same uid cannot see or open the init's executable, nor read its memory.
        assert as_user_1000("readlink", f"/proc/{pid}/exe").returncode != 0
        assert as_user_1000("sh", "-c", f"exec 3</proc/{pid}/exe").returncode != 0
        assert as_user_1000("sh", "-c", f"exec 3>>/proc/{pid}/exe").returncode != 0
        assert as_user_1000("cat", f"/proc/{pid}/environ").returncode != 0

        # Control: once the container's program runs, the same peer can do what was refused above.
        assert minirun_detached(runtime, "start", cid, out=out) == 0, out.read_text()
        wait_for(lambda: '"ok": true' in out.read_text(), "the probe to start holding")
        environ = os.stat(f"/proc/{pid}/environ")
        assert (environ.st_uid, environ.st_gid) == (1000, 1000)
        exe = as_user_1000("readlink", f"/proc/{pid}/exe")
        assert (exe.returncode, exe.stdout) == (0, "/usr/bin/probe\n")
        env = as_user_1000("cat", f"/proc/{pid}/environ")
        assert env.returncode == 0 and "HOME=/home/user" in env.stdout.split("\0")
    finally:
        runtime.cmd("delete", "--force", cid)
    assert state_dirs(runtime) == []


# --- /proc/self/exe ----------------------------------------------------------------------------------


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def host_interpreters() -> list[str]:
    """The host's Python binaries that run minirun and these tests, symlinks resolved."""
    return sorted({os.path.realpath(sys.executable), os.path.realpath(REPO / ".venv" / "bin" / "python")})


@pytest.mark.parametrize(("entrypoint", "script"), [
    ("/evil", "#!/proc/self/exe\n"),
    ("/evil", "#!/proc/1/exe\n"),
    ("/proc/self/exe", None),
], ids=["script-proc-self-exe", "script-proc-1-exe", "proc-self-exe"])
def test_proc_self_exe_entrypoint_never_runs_the_host_interpreter(
        runtime: Runtime, rootfs_copy: Path, host_unchanged: None, entrypoint: str, script: str | None) -> None:
    if script is not None:
        (rootfs_copy / entrypoint.lstrip("/")).write_text(script)
        (rootfs_copy / entrypoint.lstrip("/")).chmod(0o755)
    before = {path: sha256(path) for path in host_interpreters()}
    cfg = copy.deepcopy(runtime.config)
    cfg["root"]["path"] = str(rootfs_copy)
    cfg["process"]["args"] = [entrypoint]
    result = runtime.run(cfg)
    assert result.returncode == 126, (result.stdout, result.stderr)
    assert "refusing to run" in result.stderr
    assert result.stdout == ""
    assert {path: sha256(path) for path in host_interpreters()} == before
    assert state_dirs(runtime) == []


def test_container_sees_its_own_binary_as_proc_self_exe(runtime: Runtime, host_unchanged: None) -> None:
    result = runtime.run(runtime.config | {"process": {**runtime.config["process"],
                                                       "args": ["/bin/readlink", "/proc/self/exe"]}})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "/bin/busybox\n"


def test_sh_init_shows_busybox_as_proc_1_exe(runtime: Runtime, host_unchanged: None) -> None:
    result = runtime.sh("readlink /proc/1/exe; echo $$")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "/bin/busybox\n1\n"


def test_host_sees_the_running_container_init_as_its_own_binary(
        runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    cfg = copy.deepcopy(runtime.config)
    cfg["process"]["args"] = ["/usr/bin/probe", "hold", "300"]
    bundle = runtime.bundle(cfg)
    out = tmp_path / "container-output"
    cid = "minirun-test-exe"
    assert minirun_detached(runtime, "run", "--detach", "--bundle", str(bundle), cid, out=out) == 0, \
        out.read_text()
    try:
        wait_for(lambda: '"ok": true' in out.read_text(), "the probe to start holding")
        pid = int(runtime.state(cid)["pid"])
        assert json.loads(out.read_text().splitlines()[-1]) == {"ok": True, "pid": 1}
        target = os.readlink(f"/proc/{pid}/exe")
        assert target == "/usr/bin/probe"
        assert os.path.realpath(f"/proc/{pid}/exe") not in host_interpreters()
        st = os.stat(f"/proc/{pid}/exe")
        probe = os.stat(ROOTFS / "usr" / "bin" / "probe")
        assert (st.st_dev, st.st_ino) == (probe.st_dev, probe.st_ino)
    finally:
        runtime.cmd("delete", "--force", cid)
    assert state_dirs(runtime) == []
