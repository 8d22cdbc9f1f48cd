"""Self-check of the cgroup v2 test VM, run inside it (tests/integration/test_v2_vm.py boots the VM).

Asserts that the VM is the pure cgroup v2 host it is meant to be, and that minirun runs a container there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
MINIRUN = REPO / ".venv" / "bin" / "minirun"
ROOTFS = REPO / "rootfs" / "busybox"
CGROUP = Path("/sys/fs/cgroup")

pytestmark = pytest.mark.skipif(os.environ.get("MINIRUN_IN_VM") != "1",
                                reason="runs only inside the VM: see tests/integration/test_v2_vm.py")


def mounts() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount, from /proc/self/mountinfo."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            found.append((fields[4], fields[fields.index("-") + 1]))
    return found


def test_sys_fs_cgroup_is_cgroup2_and_nothing_is_v1() -> None:
    table = mounts()
    assert (str(CGROUP), "cgroup2") in table, table
    assert [m for m in table if m[1] == "cgroup"] == []


def test_every_controller_is_available_and_enabled_in_the_root() -> None:
    controllers = (CGROUP / "cgroup.controllers").read_text().split()
    assert {"cpu", "memory", "pids", "io"} <= set(controllers), controllers
    assert sorted((CGROUP / "cgroup.subtree_control").read_text().split()) == sorted(controllers)


def test_init_and_tests_are_not_in_the_root_cgroup() -> None:
    assert Path("/proc/1/cgroup").read_text().strip() == "0::/init"
    assert Path("/proc/self/cgroup").read_text().strip() != "0::/"
    assert "init" in os.listdir(CGROUP)


@pytest.fixture
def bundle_and_state() -> Iterator[tuple[Path, Path]]:
    bundle = Path(tempfile.mkdtemp(prefix="bundle-", dir="/tmp"))
    state = Path(tempfile.mkdtemp(prefix="state-", dir="/run"))
    try:
        yield bundle, state
    finally:
        shutil.rmtree(bundle, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


def test_minirun_runs_a_busybox_container(bundle_and_state: tuple[Path, Path]) -> None:
    bundle, state = bundle_and_state
    spec = subprocess.run([str(MINIRUN), "spec", "-b", str(bundle)], capture_output=True, text=True, timeout=60)
    assert spec.returncode == 0, spec.stderr
    config = json.loads((bundle / "config.json").read_text())
    config["root"] = {"path": str(ROOTFS), "readonly": True}
    config["hostname"] = "in-the-v2-vm"
    config["process"]["args"] = ["/bin/hostname"]
    # Absolute, as containerd and Podman always give it: a relative (or missing) cgroupsPath is taken
    # under minirun's own cgroup, /init here, which holds processes and so cannot enable controllers
    # for a child (cgroup v2's no-internal-process rule).
    config["linux"]["cgroupsPath"] = f"/{bundle.name}"
    (bundle / "config.json").write_text(json.dumps(config))

    run = subprocess.run([str(MINIRUN), "--root", str(state), "run", "-b", str(bundle), "vm-selfcheck"],
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert (run.returncode, run.stdout.strip()) == (0, "in-the-v2-vm"), run.stderr
    assert os.listdir(state) == []
    assert not (CGROUP / bundle.name).exists()
