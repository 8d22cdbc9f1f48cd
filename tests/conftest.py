"""Shared fixtures. Integration tests drive the real `.venv/bin/minirun` against the real kernel."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
MINIRUN = REPO / ".venv" / "bin" / "minirun"
ROOTFS = REPO / "rootfs" / "busybox"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.nodeid.split(os.sep) or "/integration/" in item.nodeid:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _integration_prerequisites(request: pytest.FixtureRequest) -> None:
    wants_integration = any("integration" in item.nodeid for item in request.session.items)
    if wants_integration and os.geteuid() != 0:
        pytest.exit("integration tests need root", returncode=3)
    if wants_integration and not (ROOTFS / "usr" / "bin" / "probe").exists():
        pytest.exit("rootfs/busybox is missing: run `make rootfs`", returncode=3)


def base_config() -> dict[str, Any]:
    """`minirun spec`'s default, pointed at the busybox rootfs, running the probe."""
    from minirun.spec.default import default_spec

    config = default_spec()
    config["root"]["path"] = str(ROOTFS)
    config["process"]["args"] = ["/usr/bin/probe", "facts"]
    return config


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout.strip().splitlines()[-1])


@dataclass
class Runtime:
    """A minirun with a private state root; everything it made is deleted at teardown."""

    root: Path
    bundles: Path
    config: dict[str, Any] = field(default_factory=base_config)
    _count: int = 0

    def cmd(self, *args: str, input: str | None = None, timeout: float = 30,
            pass_fds: tuple[int, ...] = (), env: dict[str, str] | None = None,
            global_args: tuple[str, ...] = ()) -> Result:
        proc = subprocess.run(
            [str(MINIRUN), "--root", str(self.root), *global_args, *args], input=input,
            capture_output=True, text=True, timeout=timeout, pass_fds=pass_fds, env=env,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def bundle(self, config: dict[str, Any] | None = None, raw: str | None = None) -> Path:
        """A new bundle directory holding `config` (default: this runtime's config) or raw text."""
        self._count += 1
        path = self.bundles / f"bundle{self._count}"
        path.mkdir()
        text = raw if raw is not None else json.dumps(config if config is not None else self.config)
        (path / "config.json").write_text(text)
        return path

    def run(self, config: dict[str, Any] | None = None, *extra: str, cid: str | None = None,
            timeout: float = 30) -> Result:
        """Foreground `run` of a bundle made from `config`."""
        self._count += 1
        bundle = self.bundle(config)
        return self.cmd("run", "--bundle", str(bundle), *extra, cid or f"minirun-test-{self._count}",
                        timeout=timeout)

    def probe(self, *args: str, config: dict[str, Any] | None = None) -> Any:
        """Run the probe with `args` in a container made from `config`; its JSON answer."""
        cfg = copy.deepcopy(config if config is not None else self.config)
        cfg["process"]["args"] = ["/usr/bin/probe", *args]
        result = self.run(cfg)
        assert result.returncode == 0, result.stderr
        return result.json()

    def detached(self, *args: str, global_args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> Result:
        """A minirun command that may leave a container behind (create, run -d): its stdio goes to files,
        not pipes, which the container would hold open until it exits."""
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            proc = subprocess.run([str(MINIRUN), "--root", str(self.root), *global_args, *args],
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=60, env=env)
            out.seek(0)
            err.seek(0)
            return Result(proc.returncode, out.read(), err.read())

    def with_pipe_as_fd3(self, *args: str) -> Result:
        """A minirun command run with a pipe as its fd 3 and, close_fds off, every fd pytest holds: for
        --preserve-fds, where fd 3 must reach the container and none of the others may."""
        r, w = os.pipe()
        try:
            proc = subprocess.run([str(MINIRUN), "--root", str(self.root), *args], capture_output=True, text=True,
                                  timeout=30, close_fds=False, preexec_fn=lambda: os.dup2(r, 3))
        finally:
            os.close(r)
            os.close(w)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def shell_config(self, script: str, outdir: Path | None = None) -> dict[str, Any]:
        """This runtime's config running `sh -c script`; `outdir` bind-mounted read-write at /mnt."""
        config = copy.deepcopy(self.config)
        config["process"]["args"] = ["/bin/sh", "-c", script]
        if outdir is not None:
            config["mounts"].append({"destination": "/mnt", "type": "bind", "source": str(outdir),
                                     "options": ["rbind", "rw"]})
        return config

    def status(self, cid: str) -> str:
        return str(self.state(cid)["status"])

    def wait_status(self, cid: str, want: str) -> None:
        poll(lambda: self.status(cid) == want, f"container {cid} to be {want}")

    def sh(self, script: str, config: dict[str, Any] | None = None) -> Result:
        cfg = copy.deepcopy(config if config is not None else self.config)
        cfg["process"]["args"] = ["/bin/sh", "-c", script]
        return self.run(cfg)

    def state(self, cid: str) -> dict[str, Any]:
        result = self.cmd("state", cid)
        assert result.returncode == 0, result.stderr
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def cleanup(self) -> None:
        if self.root.is_dir():
            for cid in os.listdir(self.root):
                self.cmd("delete", "--force", cid)
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.bundles, ignore_errors=True)


def poll(condition: Callable[[], bool], what: str, tries: int = 1500, interval: float = 0.01) -> None:
    """Wait (at most tries * interval seconds) for `condition`; fail naming `what`."""
    for _ in range(tries):
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"gave up waiting for: {what}")


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    rt = Runtime(root=Path(tempfile.mkdtemp(prefix="minirun-test-state-")),
                 bundles=Path(tempfile.mkdtemp(prefix="minirun-test-bundles-")))
    try:
        yield rt
    finally:
        rt.cleanup()


def mountinfo_lines() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return f.read().splitlines()


def processes_rooted_at(path: Path = ROOTFS) -> list[int]:
    """Pids of processes whose root directory is `path`: container processes of that rootfs."""
    want = os.stat(path)
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                st = os.stat(f"/proc/{entry}/root")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
                pids.append(int(entry))
    return pids


@pytest.fixture
def rootfs_copy() -> Iterator[Path]:
    """A private copy of rootfs/busybox that a test may change; rootfs/busybox itself is never touched."""
    top = Path(tempfile.mkdtemp(prefix="minirun-test-rootfs-"))
    dest = top / "rootfs"
    dest.mkdir()
    subprocess.run(["cp", "-a", f"{ROOTFS.resolve()}/.", str(dest)], check=True)
    assert not dest.is_symlink() and (dest / "bin" / "busybox").is_file()
    try:
        yield dest
        assert processes_rooted_at(dest) == []
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def host_unchanged(runtime: Runtime) -> Iterator[None]:
    """Asserts that the test left no mount, state directory or container process on the host.

    Request it before `runtime`-using steps; it checks right after the test body, before teardown.
    """
    before = mountinfo_lines()
    yield
    assert mountinfo_lines() == before
    assert not runtime.root.exists() or not any(runtime.root.iterdir()), list(runtime.root.iterdir())
    assert processes_rooted_at() == []
