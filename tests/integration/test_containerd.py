"""minirun as the runc binary of containerd's io.containerd.runc.v2 shim (docs/kubernetes.md).

A private containerd per module (own config, root, state and socket under a temp dir, CRI and the
host-touching plugins disabled), an OCI image built here from rootfs/busybox, and `ctr` driving tasks
whose shim runs `.venv/bin/minirun` as its runc.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MINIRUN, ROOTFS

NAMESPACE = "minirun-test"
IMAGE = "docker.io/library/minirun-busybox:latest"
# The runc v2 shim of containerd 1.6 puts its sockets below it, whatever the config says.
SHIM_STATE = Path("/run/containerd")


def _snapshotter() -> str:
    """overlayfs where the kernel has it and the temp dir can hold its upper dirs, else native (copies)."""
    filesystems = Path("/proc/filesystems").read_text().split()
    on_overlay = subprocess.run(["stat", "-f", "-c", "%T", tempfile.gettempdir()], capture_output=True,
                                text=True).stdout.strip() == "overlayfs"
    return "overlayfs" if "overlay" in filesystems and not on_overlay else "native"


SNAPSHOTTER = _snapshotter()

DOC = Path(__file__).resolve().parents[2] / "docs" / "kubernetes.md"


def documented_runtime() -> str:
    """The runtime section of docs/kubernetes.md, verbatim but for BinaryName, which names our minirun.

    The CRI plugin that reads it is disabled here (it wants CNI and the host's /var/lib) and `ctr`
    cannot pick a CRI runtime by name, so the tasks pass the same option, BinaryName, with
    `--runc-binary`: the runc v2 shim reads it either way."""
    text = DOC.read_text()
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    lines = [f'    BinaryName = "{MINIRUN}"' if line.strip().startswith("BinaryName") else line
             for line in block.splitlines()]
    return "\n".join(lines) + "\n"


# Plugins that would touch the host outside the temp dir or need what is not here.
DISABLED_PLUGINS = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.internal.v1.opt",
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
)


def _unavailable() -> str:
    for tool in ("containerd", "ctr", "containerd-shim-runc-v2"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make deps installs Debian's containerd)"
    return ""


pytestmark = pytest.mark.skipif(bool(_unavailable()), reason=_unavailable() or "n/a")


# --- an OCI image layout from rootfs/busybox --------------------------------------------------------


def _blob(blobs: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def build_image(rootfs: Path, out: Path) -> Path:
    """An OCI image layout tar: one layer (the rootfs), its config, a manifest and the index."""
    layout = out / "layout"
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(rootfs.iterdir()):
            tar.add(entry, arcname=entry.name)
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    layer = _blob(blobs, gzip.compress(raw.getvalue(), compresslevel=1))
    config = _blob(blobs, json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }).encode())
    manifest = _blob(blobs, json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
    }).encode())
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "latest"},
        }],
    }))
    archive = out / "image.tar"
    with tarfile.open(archive, "w") as tar:
        for entry in sorted(layout.iterdir()):
            tar.add(entry, arcname=entry.name)
    return archive


# --- a private containerd ---------------------------------------------------------------------------


class Containerd:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.socket = base / "containerd.sock"
        self.runc_root = base / "runc"  # the shim's --root for minirun (default /run/containerd/runc)
        self.minirun_log = base / "minirun.log"
        self.log = base / "containerd.log"
        self.config_path = base / "config.toml"
        self.fifo_dir = base / "fifo"  # ctr's default is /run/containerd/fifo
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self, with_cri: bool = False) -> str:
        disabled = ", ".join(f'"{p}"' for p in DISABLED_PLUGINS if not (with_cri and p.endswith(".cri")))
        return (
            f'version = 2\nroot = "{self.base}/root"\nstate = "{self.base}/state"\n'
            f"disabled_plugins = [{disabled}]\n\n"
            f'[grpc]\n  address = "{self.socket}"\n\n'
            f'[ttrpc]\n  address = "{self.base}/containerd.sock.ttrpc"\n\n'
            f'[debug]\n  level = "debug"\n\n'
            + documented_runtime()
        )

    def start(self) -> None:
        self.config_path.write_text(self.config())
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(["containerd", "--config", str(self.config_path)], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"containerd exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            if self.socket.exists() and self.ctr("version", check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"containerd did not come up: {self.log.read_text()[-2000:]}")

    def ctr(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["ctr", "--address", str(self.socket), "-n", NAMESPACE, *args],
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"ctr {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
                                 f"\nminirun log: {self.tail(self.minirun_log)}")
        return proc

    @staticmethod
    def tail(path: Path) -> str:
        with contextlib.suppress(OSError):
            return path.read_text()[-3000:]
        return ""

    def runtime_flags(self) -> list[str]:
        return ["--snapshotter", SNAPSHOTTER, "--fifo-dir", str(self.fifo_dir),
                "--runtime", "io.containerd.runc.v2", "--runc-binary", str(MINIRUN),
                "--runc-root", str(self.runc_root)]

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


def _mounts_below(base: Path) -> list[str]:
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == str(base) or point.startswith(f"{base}/"):
                found.append(point)
    return found


def _shim_pids(base: Path) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if cmd and cmd[0].endswith(b"containerd-shim-runc-v2") and str(base).encode() in b" ".join(cmd):
                pids.append(int(entry))
    return pids


@pytest.fixture(scope="module")
def containerd() -> Iterator[Containerd]:
    base = Path(tempfile.mkdtemp(prefix="minirun-containerd-"))
    shim_state_existed = SHIM_STATE.exists()
    daemon = Containerd(base)
    try:
        daemon.start()
        daemon.ctr("images", "import", "--snapshotter", SNAPSHOTTER, str(build_image(ROOTFS, base)))
        yield daemon
    finally:
        try:
            if daemon.proc is not None and daemon.proc.poll() is None:
                for task in daemon.ctr("tasks", "ls", "-q", check=False).stdout.split():
                    daemon.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
                    daemon.ctr("tasks", "delete", "-f", task, check=False)
                for container in daemon.ctr("containers", "ls", "-q", check=False).stdout.split():
                    daemon.ctr("containers", "delete", container, check=False)
                daemon.ctr("images", "rm", "--sync", IMAGE, check=False)
        finally:
            daemon.stop()
            for pid in _shim_pids(base):  # an orphaned shim would hold the container; never expected
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for point in reversed(_mounts_below(base)):
                subprocess.run(["umount", "-l", point], check=False)
            shutil.rmtree(base, ignore_errors=True)
            if not shim_state_existed:
                shutil.rmtree(SHIM_STATE, ignore_errors=True)
            _remove_namespace_cgroups()


@pytest.fixture
def names(containerd: Containerd) -> Iterator[Callable[[str], str]]:
    """Container ids for one test (`minirun-<name>`); each is gone at the end of the test."""
    made: list[str] = []

    def name(suffix: str) -> str:
        made.append(f"minirun-{suffix}")
        return made[-1]

    yield name
    for cid in made:
        containerd.ctr("tasks", "kill", "-s", "SIGKILL", cid, check=False)
        containerd.ctr("tasks", "delete", "-f", cid, check=False)
        containerd.ctr("containers", "delete", cid, check=False)
    for cid in made:
        assert containerd.ctr("containers", "info", cid, check=False).returncode != 0, cid
        assert not (containerd.runc_root / NAMESPACE / cid).exists(), f"minirun state of {cid} left"
        assert not _host_cgroup_file(f"/{NAMESPACE}/{cid}", "memory", "").exists(), f"cgroup of {cid} left"


# --- helpers ----------------------------------------------------------------------------------------


def _unified() -> bool:
    return Path("/sys/fs/cgroup/cgroup.controllers").exists()


def _host_cgroup_file(cgroups_path: str, v1_controller: str, name: str) -> Path:
    if _unified():
        return Path("/sys/fs/cgroup") / cgroups_path.lstrip("/") / name
    return Path("/sys/fs/cgroup") / v1_controller / cgroups_path.lstrip("/") / name


def _remove_namespace_cgroups() -> None:
    """containerd names cgroups /<namespace>/<id>; minirun removes the container's own, as runc does,
    and leaves the namespace's parent, which is ours to remove once everything in it is gone."""
    for top, dirs, _ in os.walk("/sys/fs/cgroup", topdown=False):
        for name in dirs:
            if name == NAMESPACE:
                with contextlib.suppress(OSError):
                    os.rmdir(os.path.join(top, name))


def run_detached(containerd: Containerd, cid: str, *args: str, flags: tuple[str, ...] = ()) -> int:
    containerd.ctr("run", "-d", *containerd.runtime_flags(), *flags, IMAGE, cid, *args)
    return task_pid(containerd, cid)


def task_row(containerd: Containerd, cid: str) -> tuple[int, str]:
    for line in containerd.ctr("tasks", "ls").stdout.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == cid:
            return int(fields[1]), fields[2]
    raise AssertionError(f"no task {cid}")


def task_pid(containerd: Containerd, cid: str) -> int:
    return task_row(containerd, cid)[0]


def wait_status(containerd: Containerd, cid: str, status: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while task_row(containerd, cid)[1] != status:
        assert time.monotonic() < deadline, f"{cid} is {task_row(containerd, cid)[1]}, not {status}"
        time.sleep(0.05)


def bundle_config(containerd: Containerd, cid: str) -> dict[str, Any]:
    bundle = containerd.base / "state" / "io.containerd.runtime.v2.task" / NAMESPACE / cid
    config: dict[str, Any] = json.loads((bundle / "config.json").read_text())
    return config


def cgroup_of(pid: int, v1_controller: str) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if (_unified() and controllers == "") or v1_controller in controllers.split(","):
            return path
    raise AssertionError(f"pid {pid} has no {v1_controller} cgroup")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- scenarios --------------------------------------------------------------------------------------


def test_the_documented_runtime_is_parsed_by_containerd(containerd: Containerd) -> None:
    import tomllib

    # `config dump` leaves out the sections of disabled plugins: dump the same config with CRI enabled.
    enabled = containerd.base / "config-with-cri.toml"
    enabled.write_text(containerd.config(with_cri=True))
    dump = subprocess.run(["containerd", "--config", str(enabled), "config", "dump"],
                          capture_output=True, text=True, timeout=30, check=True).stdout
    runtime = tomllib.loads(dump)["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["minirun"]
    assert runtime["runtime_type"] == "io.containerd.runc.v2"
    assert runtime["options"] == {"BinaryName": str(MINIRUN)}


def test_run_rm_prints_the_output_and_returns_the_exit_code(
        containerd: Containerd, names: Callable[[str], str]) -> None:
    cid = names("rm")
    result = containerd.ctr("run", "--rm", *containerd.runtime_flags(), IMAGE, cid,
                            "sh", "-c", "echo hello from pid $$; exit 3", check=False)
    assert result.returncode == 3, result.stderr
    assert result.stdout.strip() == "hello from pid 1"  # the init of its own pid namespace
    assert cid not in containerd.ctr("containers", "ls", "-q").stdout.split()
    # minirun's state went with the task: the shim ran `minirun delete` in its --root.
    assert not (containerd.runc_root / NAMESPACE / cid).exists()


def test_exec_in_a_detached_container(containerd: Containerd, names: Callable[[str], str]) -> None:
    cid = names("exec")
    run_detached(containerd, cid, "sleep", "1000")
    # It is minirun's container, kept under the shim's --root (<Root>/<namespace>).
    state = subprocess.run([str(MINIRUN), "--root", str(containerd.runc_root / NAMESPACE), "state", cid],
                           capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(state.stdout)["pid"] == task_pid(containerd, cid)
    result = containerd.ctr("tasks", "exec", "--fifo-dir", str(containerd.fifo_dir), "--exec-id", "e1", cid,
                            "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo; exit 4", check=False)
    assert result.returncode == 4, result.stderr
    assert result.stdout.strip() == "sleep 1000"  # the exec shares the container's pid namespace
    # A missing program: the error reaches ctr from minirun's JSON log, and the container keeps running.
    missing = containerd.ctr("tasks", "exec", "--fifo-dir", str(containerd.fifo_dir), "--exec-id", "e2", cid,
                             "/no/such/program", check=False)
    assert missing.returncode != 0
    assert '"/no/such/program"' in missing.stderr
    assert task_row(containerd, cid)[1] == "RUNNING"


def test_kill_stops_the_task(containerd: Containerd, names: Callable[[str], str]) -> None:
    cid = names("kill")
    pid = run_detached(containerd, cid, "sh", "-c", "trap 'exit 7' TERM; while :; do sleep 0.1; done")
    time.sleep(0.3)  # let the shell set its trap
    containerd.ctr("tasks", "kill", cid)  # SIGTERM, the default
    wait_status(containerd, cid, "STOPPED")
    assert not alive(pid)
    deleted = containerd.ctr("tasks", "delete", cid)
    assert "exit code 7" in deleted.stdout + deleted.stderr


def test_kill_all_reaches_every_process(containerd: Containerd, names: Callable[[str], str]) -> None:
    cid = names("killall")
    pid = run_detached(containerd, cid, "sh", "-c", "sleep 1000 & sleep 1001")
    containerd.ctr("tasks", "kill", "--all", "--signal", "SIGKILL", cid)
    wait_status(containerd, cid, "STOPPED")
    assert not alive(pid)
    cgroup = _host_cgroup_file(f"/{NAMESPACE}/{cid}", "pids", "cgroup.procs")
    assert not cgroup.exists() or cgroup.read_text().strip() == ""


def test_ps_lists_the_container_processes(containerd: Containerd, names: Callable[[str], str]) -> None:
    cid = names("ps")
    pid = run_detached(containerd, cid, "sh", "-c", "sleep 1000 & exec sleep 1001")
    deadline = time.monotonic() + 5
    while True:
        rows = containerd.ctr("tasks", "ps", cid).stdout.splitlines()[1:]
        pids = sorted(int(row.split()[0]) for row in rows)
        if len(pids) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert pid in pids and len(pids) == 2, pids
    commands = sorted(Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").strip() for p in pids)
    assert commands == [b"sleep 1000", b"sleep 1001"]


def test_pause_and_resume(containerd: Containerd, names: Callable[[str], str]) -> None:
    cid = names("pause")
    pid = run_detached(containerd, cid, "sleep", "1000")
    if _unified():
        def frozen() -> bool:
            events = _host_cgroup_file(f"/{NAMESPACE}/{cid}", "", "cgroup.events").read_text()
            return "frozen 1" in events
    else:
        def frozen() -> bool:
            return _host_cgroup_file(f"/{NAMESPACE}/{cid}", "freezer", "freezer.state").read_text().strip() == "FROZEN"
    containerd.ctr("tasks", "pause", cid)
    assert task_row(containerd, cid) == (pid, "PAUSED")
    assert frozen()
    containerd.ctr("tasks", "resume", cid)
    assert task_row(containerd, cid) == (pid, "RUNNING")
    assert not frozen()


def test_metrics_come_from_the_container_cgroup(containerd: Containerd, names: Callable[[str], str]) -> None:
    cid = names("metrics")
    pid = run_detached(containerd, cid, "sh", "-c", "sleep 1000 & sleep 1001 & exec sleep 1002")
    # containerd (and the kubelet, below its pod cgroup) asks for the absolute linux.cgroupsPath and
    # minirun uses it as given; the shim collects the metrics itself from the init's cgroup.
    path = bundle_config(containerd, cid)["linux"]["cgroupsPath"]
    assert path == f"/{NAMESPACE}/{cid}"
    assert cgroup_of(pid, "memory") == path and cgroup_of(pid, "pids") == path
    deadline = time.monotonic() + 5
    while True:
        metrics = json.loads(containerd.ctr("tasks", "metrics", "--format", "json", cid).stdout)
        if metrics["pids"]["current"] == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert metrics["pids"]["current"] == 3
    usage_file = "memory.current" if _unified() else "memory.usage_in_bytes"
    host_usage = int(_host_cgroup_file(path, "memory", usage_file).read_text())
    reported = metrics["memory"]["usage"]["usage"] if not _unified() else metrics["memory"]["usage"]
    assert reported > 0 and abs(reported - host_usage) < 4 * 1024 * 1024


def test_memory_limit_is_the_cgroup_limit(containerd: Containerd, names: Callable[[str], str]) -> None:
    cid = names("memlimit")
    limit = 48 * 1024 * 1024
    pid = run_detached(containerd, cid, "sleep", "1000", flags=("--memory-limit", str(limit)))
    path = bundle_config(containerd, cid)["linux"]["cgroupsPath"]
    assert cgroup_of(pid, "memory") == path
    limit_file = "memory.max" if _unified() else "memory.limit_in_bytes"
    assert int(_host_cgroup_file(path, "memory", limit_file).read_text()) == limit
    metrics = json.loads(containerd.ctr("tasks", "metrics", "--format", "json", cid).stdout)
    reported = metrics["memory"]["usage_limit"] if _unified() else metrics["memory"]["usage"]["limit"]
    assert reported == limit


def test_a_missing_program_fails_run_and_leaves_nothing(
        containerd: Containerd, names: Callable[[str], str]) -> None:
    cid = names("missing")
    result = containerd.ctr("run", "--rm", *containerd.runtime_flags(), IMAGE, cid, "/no/such/program",
                            check=False)
    assert result.returncode != 0
    assert 'exec: "/no/such/program"' in result.stderr  # minirun's error, read from its JSON log
    assert cid not in containerd.ctr("tasks", "ls", "-q").stdout.split()
    assert not (containerd.runc_root / NAMESPACE / cid).exists()
    assert not _host_cgroup_file(f"/{NAMESPACE}/{cid}", "memory", "").exists()
