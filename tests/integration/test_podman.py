"""Podman driving minirun as its OCI runtime (`podman --runtime .venv/bin/minirun`).

Each test gets a private Podman: storage, run root, tmpdir, containers.conf and storage.conf all live in
one temp dir, its containers go under a cgroup parent named `minirun-podman-*`, and they run with
`--network none` (no bridge, CNI or netavark is ever set up on the host). The image is the busybox
rootfs, imported with `podman import` (there is no registry). Teardown removes the containers with
Podman, then checks and cleans up what could be left: minirun state, conmon and its cleanup processes,
mounts under the temp dir, cgroups.

Podman 4 does not pass `--root` to its runtime (nor does its exit command carry `--runtime-flag`), so
minirun keeps these containers' state in its default root, `/run/minirun`; ids are Podman's 64-hex ones.
The one file outside the temp dir that Podman 4 insists on writing is its image blob-info cache,
/var/lib/containers/cache/blob-info-cache-v1.boltdb (no option moves it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MINIRUN, ROOTFS, alive, poll

PODMAN = shutil.which("podman")
IMAGE = "localhost/minirun-busybox"
STATE_ROOT = Path("/run/minirun")  # minirun's default: what Podman's calls use (see the docstring)
CGROUP_ROOT = Path("/sys/fs/cgroup")
# The kernel here refuses to raise hard rlimits and Podman's defaults exceed them.
ULIMITS = ("nofile=1024:1024", "nproc=1024:1024")


class Podman:
    """A Podman whose every file is under `top`; `run`/`create` always get `--network none` and the
    test's cgroup parent."""

    def __init__(self, top: Path) -> None:
        self.top = top
        self.storage, self.runroot, self.tmp = top / "storage", top / "runroot", top / "tmp"
        for d in (self.storage, self.runroot, self.tmp, top / "config", top / "networks"):
            d.mkdir()
        self.cgroup_parent = f"minirun-podman-{uuid.uuid4().hex[:8]}"
        (top / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\ngraphroot = "{self.storage}"\nrunroot = "{self.runroot}"\n')
        (top / "containers.conf").write_text(
            "[containers]\n"
            f"default_ulimits = {json.dumps(list(ULIMITS))}\n"
            'netns = "none"\n'
            "[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            f'events_logfile_path = "{self.tmp}/events.log"\n'
            f'tmp_dir = "{self.tmp}"\n'
            f'static_dir = "{self.storage}/libpod"\n'
            f'volume_path = "{self.storage}/volumes"\n'
            "[network]\n"  # never configured (--network none), but Podman takes its lock there
            f'network_config_dir = "{top}/networks"\n')
        self.env = {**os.environ, "CONTAINERS_CONF": str(top / "containers.conf"),
                    "CONTAINERS_STORAGE_CONF": str(top / "storage.conf"), "TMPDIR": str(self.tmp),
                    "XDG_CONFIG_HOME": str(top / "config")}
        self.base = [str(PODMAN), "--root", str(self.storage), "--runroot", str(self.runroot),
                     "--tmpdir", str(self.tmp), "--runtime", str(MINIRUN), "--cgroup-manager", "cgroupfs",
                     "--events-backend", "file", "--storage-driver", "vfs"]
        self.ids: set[str] = set()

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Stdio goes through files: a detached container's conmon would hold pipes open."""
        if args and args[0] in ("run", "create"):
            args = (args[0], "--network", "none", "--cgroup-parent", f"/{self.cgroup_parent}",
                    *(a for u in ULIMITS for a in ("--ulimit", u)), *args[1:])
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run([*self.base, *args], stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                  env=self.env, timeout=timeout, text=True)
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())
        self._remember()
        return result

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.returncode == 0, f"podman {' '.join(args)}: {result.stderr}"
        return result.stdout

    def detach(self, *args: str) -> str:
        """`podman run -d ARGS` (the image goes first in ARGS' non-option part); the container's id."""
        cid = self.ok("run", "-d", *args).strip().splitlines()[-1]
        self.ids.add(cid)
        return cid

    def inspect(self, name: str, fmt: str) -> str:
        return self.ok("inspect", "--format", fmt, name).strip()

    def _remember(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.ids.update(os.listdir(self.storage / "vfs-containers"))

    def cgroup_dirs(self) -> list[Path]:
        return sorted(CGROUP_ROOT.glob(f"*/{self.cgroup_parent}"))

    def processes(self) -> list[int]:
        """conmon, container cleanup commands and containers' processes of this Podman."""
        marks = [str(self.top).encode(), *(cid.encode() for cid in self.ids)]
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                try:
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                    cgroup = Path(f"/proc/{entry}/cgroup").read_text()
                except OSError:
                    continue
                if alive(int(entry)) and (any(m in cmdline for m in marks) or self.cgroup_parent in cgroup):
                    pids.append(int(entry))
        return pids

    def mounts(self) -> list[str]:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        return [p for p in points if p == str(self.top) or p.startswith(f"{self.top}/")]

    def leftovers(self) -> list[str]:
        out = [f"state: {STATE_ROOT / cid}" for cid in sorted(self.ids) if (STATE_ROOT / cid).exists()]
        out += [f"process: {pid}" for pid in self.processes()]
        out += [f"mount: {m}" for m in self.mounts()]
        out += [f"cgroup: {d}" for d in self.cgroup_dirs()]
        return out

    def container_cgroups(self) -> list[str]:
        """The containers' own cgroups, which minirun must remove (the parent and its `conmon` child are
        Podman's, which it never removes with cgroupfs)."""
        return [f"cgroup: {d}" for top in self.cgroup_dirs() for d in sorted(top.glob("libpod-*"))]

    def cleanup(self) -> list[str]:
        """Remove everything; return what Podman itself had left behind (before the forced cleanup)."""
        self("rm", "--all", "--force", "--time", "0")
        # conmon's exit commands (`podman container cleanup`) may still be finishing.
        with contextlib.suppress(AssertionError):
            poll(lambda: not self.processes(), "podman's processes to exit", tries=500)
        left = [x for x in self.leftovers() if not x.startswith("cgroup: ")] + self.container_cgroups()
        for cid in self.ids:
            subprocess.run([str(MINIRUN), "delete", "--force", cid], capture_output=True, timeout=30)
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(AssertionError):
            poll(lambda: not self.processes(), "killed processes to exit", tries=500)
        for point in reversed(self.mounts()):
            subprocess.run(["umount", "-l", point], capture_output=True)
        for top in self.cgroup_dirs():
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    d.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()
        shutil.rmtree(self.top, ignore_errors=True)
        return left


def _podman_unusable() -> str:
    if PODMAN is None:
        return "podman is not installed (make deps installs it)"
    if not (ROOTFS / "bin" / "busybox").exists():
        return "rootfs/busybox is missing (make rootfs)"
    try:
        proc = subprocess.run([PODMAN, "--version"], capture_output=True, text=True, timeout=30)
    except OSError as e:
        return f"podman cannot run here: {e}"
    return "" if proc.returncode == 0 else f"podman cannot run here: {proc.stderr.strip()}"


UNUSABLE = _podman_unusable()
pytestmark = pytest.mark.skipif(bool(UNUSABLE), reason=UNUSABLE or "podman is usable")


@pytest.fixture
def podman() -> Iterator[Podman]:
    pm = Podman(Path(tempfile.mkdtemp(prefix="minirun-podman-")))
    left: list[str] = []
    try:
        tar = subprocess.run(["tar", "-C", str(ROOTFS), "-c", "."], capture_output=True, check=True)
        imported = subprocess.run([*pm.base, "import", "-", IMAGE], input=tar.stdout, capture_output=True,
                                  env=pm.env, timeout=120)
        assert imported.returncode == 0, imported.stderr.decode()
        yield pm
    finally:
        left = pm.cleanup()
    assert left == [], f"podman/minirun left this behind: {left}"
    assert pm.leftovers() == []


def cgroup_file(podman: Podman, cid: str, controller: str, v1_name: str, v2_name: str) -> Path:
    v1 = CGROUP_ROOT / controller / podman.cgroup_parent / f"libpod-{cid}" / v1_name
    v2 = CGROUP_ROOT / podman.cgroup_parent / f"libpod-{cid}" / v2_name
    return v1 if (CGROUP_ROOT / controller).is_dir() else v2


# --- run, exit codes ----------------------------------------------------------------------------------

def test_run_rm_output_and_exit_code(podman: Podman) -> None:
    result = podman("run", "--rm", IMAGE, "sh", "-c", "echo hello from minirun; exit 3")
    assert result.returncode == 3, result.stderr
    assert result.stdout == "hello from minirun\n"
    assert podman.ok("ps", "-aq") == ""  # --rm removed it
    assert podman.ids and not any((STATE_ROOT / cid).exists() for cid in podman.ids)


def test_missing_command_exits_127(podman: Podman) -> None:
    result = podman("run", "--rm", IMAGE, "/no/such/program")
    assert result.returncode == 127, result.stderr
    assert "/no/such/program" in result.stderr
    result = podman("run", "--rm", IMAGE, "nosuchprogram")
    assert result.returncode == 127, result.stderr
    assert "executable file not found in $PATH" in result.stderr


def test_non_executable_command_exits_126(podman: Podman) -> None:
    result = podman("run", "--rm", IMAGE, "/etc/passwd")
    assert result.returncode == 126, result.stderr
    assert "permission denied" in result.stderr


def test_failed_create_is_force_deleted_quietly(podman: Podman) -> None:
    """After a failed create Podman runs `delete --force` on an id minirun never kept: not an error."""
    result = podman("run", "--rm", IMAGE, "/no/such/program")
    assert result.returncode == 127
    assert "does not exist" not in result.stderr
    assert "after creation failed" not in result.stderr


# --- process settings ---------------------------------------------------------------------------------

def test_hostname_env_workdir(podman: Podman) -> None:
    out = podman.ok("run", "--rm", "--hostname", "minirun-host", "-e", "GREETING=hi there", "-w", "/etc",
                    IMAGE, "sh", "-c", 'hostname; echo "$GREETING"; pwd')
    assert out.splitlines() == ["minirun-host", "hi there", "/etc"]


def test_user(podman: Podman) -> None:
    out = podman.ok("run", "--rm", "--user", "1234:2345", IMAGE, "sh", "-c", "id -u; id -g; grep Cap /proc/self/status")
    lines = out.splitlines()
    assert lines[:2] == ["1234", "2345"]
    assert "CapEff:\t0000000000000000" in lines  # a non-root user keeps no effective capability


def cap_eff(podman: Podman, *flags: str) -> int:
    out = podman.ok("run", "--rm", *flags, IMAGE, "grep", "CapEff", "/proc/self/status")
    return int(out.split()[1], 16)


def test_cap_drop(podman: Podman) -> None:
    default = cap_eff(podman)
    chown, setuid = 1 << 0, 1 << 7
    assert default & chown and default & setuid
    assert cap_eff(podman, "--cap-drop", "CHOWN") == default & ~chown
    assert cap_eff(podman, "--cap-drop", "all") == 0


def test_no_new_privileges(podman: Podman) -> None:
    flag = "grep NoNewPrivs /proc/self/status"
    assert podman.ok("run", "--rm", IMAGE, "sh", "-c", flag).split() == ["NoNewPrivs:", "0"]
    out = podman.ok("run", "--rm", "--security-opt", "no-new-privileges", IMAGE, "sh", "-c", flag)
    assert out.split() == ["NoNewPrivs:", "1"]


# --- filesystem ---------------------------------------------------------------------------------------

def test_volume_rw_and_ro(podman: Podman) -> None:
    data = podman.top / "data"
    data.mkdir()
    (data / "from-host").write_text("host\n")
    out = podman.ok("run", "--rm", "-v", f"{data}:/data", IMAGE, "sh", "-c",
                    "cat /data/from-host; echo container > /data/from-container")
    assert out == "host\n"
    assert (data / "from-container").read_text() == "container\n"

    result = podman("run", "--rm", "-v", f"{data}:/data:ro", IMAGE, "sh", "-c",
                    "cat /data/from-host; echo again > /data/from-container")
    assert result.returncode != 0
    assert result.stdout == "host\n"
    assert "Read-only file system" in result.stderr
    assert (data / "from-container").read_text() == "container\n"


def test_tmpfs(podman: Podman) -> None:
    out = podman.ok("run", "--rm", "--tmpfs", "/scratch", IMAGE, "sh", "-c",
                    "grep ' /scratch ' /proc/mounts; echo x > /scratch/f && cat /scratch/f")
    mount, content = out.splitlines()
    assert mount.split()[:3] == ["tmpfs", "/scratch", "tmpfs"]
    assert content == "x"


def test_tmpfs_over_a_directory_keeps_its_content(podman: Podman) -> None:
    """Podman asks for `tmpcopyup`: the tmpfs starts as a copy of the directory it covers."""
    out = podman.ok("run", "--rm", "--tmpfs", "/etc", IMAGE, "sh", "-c",
                    "grep ' /etc ' /proc/mounts; head -1 /etc/passwd; echo new > /etc/new && cat /etc/new")
    mount, passwd, new = out.splitlines()
    assert mount.split()[:3] == ["tmpfs", "/etc", "tmpfs"]
    assert passwd == (ROOTFS / "etc" / "passwd").read_text().splitlines()[0]
    assert new == "new"
    assert not (ROOTFS / "etc" / "new").exists()


def test_read_only(podman: Podman) -> None:
    result = podman("run", "--rm", "--read-only", IMAGE, "sh", "-c",
                    "touch /etc/x; echo $?; echo t > /tmp/t && cat /tmp/t")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["1", "t"]  # the root is read-only, /tmp a writable tmpfs
    assert "Read-only file system" in result.stderr


# --- resources ----------------------------------------------------------------------------------------

def test_memory_and_pids_limits(podman: Podman) -> None:
    cid = podman.detach("--memory", "64m", "--pids-limit", "33", IMAGE, "sleep", "100")
    memory = cgroup_file(podman, cid, "memory", "memory.limit_in_bytes", "memory.max")
    pids = cgroup_file(podman, cid, "pids", "pids.max", "pids.max")
    assert memory.read_text().strip() == str(64 << 20)
    assert pids.read_text().strip() == "33"
    init = int(podman.inspect(cid, "{{.State.Pid}}"))
    assert str(init) in (memory.parent / "cgroup.procs").read_text().split()
    stats = json.loads(podman.ok("stats", "--no-stream", "--format", "json", cid))
    assert stats[0]["mem_usage"].endswith("/ 67.11MB")
    assert stats[0]["pids"] == "1"


def test_update_changes_live_limits(podman: Podman) -> None:
    cid = podman.detach("--memory", "64m", IMAGE, "sleep", "100")
    memory = cgroup_file(podman, cid, "memory", "memory.limit_in_bytes", "memory.max")
    assert memory.read_text().strip() == str(64 << 20)
    podman.ok("update", "--memory", "100m", cid)
    assert memory.read_text().strip() == str(100 << 20)
    inside = podman.ok("exec", cid, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"
                       if (CGROUP_ROOT / "memory").is_dir() else "/sys/fs/cgroup/memory.max")
    assert inside.strip() == str(100 << 20)


# --- devices ------------------------------------------------------------------------------------------

def test_device(podman: Podman) -> None:
    """Podman gives fileMode as the host node's whole st_mode (type bits included)."""
    out = podman.ok("run", "--rm", "--device", "/dev/null:/dev/minirun-null", IMAGE, "sh", "-c",
                    "stat -c '%F %t:%T %a' /dev/minirun-null; echo gone > /dev/minirun-null && echo written")
    assert out.splitlines() == ["character special file 1:3 666", "written"]


def test_privileged(podman: Podman) -> None:
    out = podman.ok("run", "--rm", "--privileged", IMAGE, "sh", "-c",
                    "grep CapEff /proc/self/status; test -c /dev/null && echo has-devices")
    caps, devices = out.splitlines()
    # Every capability this (possibly itself confined) host still has: its bounding set.
    bounding = next(line for line in Path("/proc/self/status").read_text().splitlines()
                    if line.startswith("CapBnd:"))
    assert int(caps.split()[1], 16) == int(bounding.split()[1], 16)
    assert int(caps.split()[1], 16) != cap_eff(podman)
    assert devices == "has-devices"


# --- lifecycle ----------------------------------------------------------------------------------------

def test_detach_then_exec(podman: Podman) -> None:
    cid = podman.detach("--name", "minirun-exec", IMAGE, "sleep", "100")
    assert podman.inspect(cid, "{{.State.Status}}") == "running"
    result = podman("exec", "-e", "WHO=exec", "-w", "/etc", "minirun-exec", "sh", "-c",
                    'echo "$WHO in $(pwd)"; exit 5')
    assert result.returncode == 5, result.stderr
    assert result.stdout == "exec in /etc\n"
    assert podman("exec", "minirun-exec", "/no/such/program").returncode == 127
    assert podman.inspect(cid, "{{.State.Status}}") == "running"  # failed execs leave it running


def test_stop(podman: Podman) -> None:
    cid = podman.detach(IMAGE, "sh", "-c", "trap 'exit 42' TERM; while :; do sleep 0.1; done")
    started = time.monotonic()
    podman.ok("stop", "--time", "20", cid)
    assert time.monotonic() - started < 15  # SIGTERM was delivered: no fallback to SIGKILL
    assert podman.inspect(cid, "{{.State.Status}}") == "exited"
    assert podman.inspect(cid, "{{.State.ExitCode}}") == "42"


def test_kill(podman: Podman) -> None:
    cid = podman.detach(IMAGE, "sleep", "100")
    init = int(podman.inspect(cid, "{{.State.Pid}}"))
    podman.ok("kill", cid)  # SIGKILL by default
    poll(lambda: podman.inspect(cid, "{{.State.Status}}") == "exited", "the container to exit", tries=1000)
    assert podman.inspect(cid, "{{.State.ExitCode}}") == "137"
    assert not alive(init)


def test_kill_with_signal(podman: Podman) -> None:
    cid = podman.detach(IMAGE, "sh", "-c", "trap 'exit 10' USR1; while :; do sleep 0.1; done")
    podman.ok("kill", "--signal", "USR1", cid)
    assert podman.ok("wait", cid).strip() == "10"


def test_rm_force_running(podman: Podman) -> None:
    cid = podman.detach(IMAGE, "sleep", "100")
    init = int(podman.inspect(cid, "{{.State.Pid}}"))
    assert (STATE_ROOT / cid).is_dir()
    podman.ok("rm", "--force", "--time", "0", cid)
    assert not alive(init)
    assert podman.ok("ps", "-aq") == ""
    assert not (STATE_ROOT / cid).exists()
    assert not cgroup_file(podman, cid, "memory", "cgroup.procs", "cgroup.procs").parent.exists()


def test_pause_unpause(podman: Podman) -> None:
    cid = podman.detach(IMAGE, "sh", "-c", "while :; do date +%s%N > /tmp/tick; sleep 0.05; done")
    podman.ok("pause", cid)
    assert podman.inspect(cid, "{{.State.Status}}") == "paused"
    freezer = cgroup_file(podman, cid, "freezer", "freezer.state", "cgroup.freeze")
    assert freezer.read_text().strip() in ("FROZEN", "1")
    init = int(podman.inspect(cid, "{{.State.Pid}}"))
    tick = Path(f"/proc/{init}/root/tmp/tick")
    before = tick.read_text()
    time.sleep(0.3)
    assert tick.read_text() == before  # frozen: the loop does not advance
    podman.ok("unpause", cid)
    assert podman.inspect(cid, "{{.State.Status}}") == "running"
    poll(lambda: tick.read_text() != before, "the loop to run again")


def test_top(podman: Podman) -> None:
    cid = podman.detach(IMAGE, "sleep", "321")
    out = podman.ok("top", cid)
    header, *rows = out.splitlines()
    assert "COMMAND" in header
    assert any(re.search(r"\bsleep 321\b", row) for row in rows), out


def test_wait(podman: Podman) -> None:
    cid = podman.detach(IMAGE, "sh", "-c", "sleep 0.3; exit 7")
    assert podman.ok("wait", cid).strip() == "7"
    assert podman.inspect(cid, "{{.State.Status}}") == "exited"


# --- terminals ----------------------------------------------------------------------------------------

def test_run_tty(podman: Podman) -> None:
    result = podman("run", "--rm", "-t", IMAGE, "sh", "-c", "tty; test -t 1 && echo stdout-is-a-tty")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.replace("\r\n", "\n").splitlines()
    assert re.fullmatch(r"/dev/pts/\d+", lines[0]), lines
    assert lines[1] == "stdout-is-a-tty"


def test_exec_tty(podman: Podman) -> None:
    cid = podman.detach(IMAGE, "sleep", "100")
    result = podman("exec", "-t", cid, "sh", "-c", "tty; test -t 1 && echo stdout-is-a-tty")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.replace("\r\n", "\n").splitlines()
    assert re.fullmatch(r"/dev/pts/\d+", lines[0]), lines
    assert lines[1] == "stdout-is-a-tty"
    assert podman.inspect(cid, "{{.State.Status}}") == "running"
