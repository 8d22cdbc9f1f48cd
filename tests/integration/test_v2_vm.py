"""minirun on a pure cgroup v2 host: the VM_TEST_FILES run inside a qemu VM (tests/vm/run_vm.py).

The VM boots once per module (about 10 s of boot and 10-20 s of tests under TCG); then every test
collected from VM_TEST_FILES gets a host-side test here that passes when it passed in the VM and
otherwise fails (or skips) with the VM's message. Skips only when this host cannot run qemu at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import cache

import pytest

from tests.vm.run_vm import REPO, VmResult, qemu_unavailable_reason, run_tests_in_vm

# Files run inside the VM, relative to the repository root.
VM_TEST_FILES = ["tests/vm/test_inside_vm.py", "tests/integration/test_cgroups.py"]
VM_TIMEOUT = 300.0
# The parameter standing for "collection on the host failed", so that the failure shows as a test.
COLLECTION_FAILED = "<collection of VM_TEST_FILES failed>"


@cache
def _collected() -> tuple[tuple[str, ...], str]:
    """The node ids in VM_TEST_FILES, collected on the host (MINIRUN_VM_COLLECT=1 lifts tests/vm's
    collection guard; nothing runs), and pytest's output when that went wrong."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *VM_TEST_FILES],
        cwd=REPO, env={**os.environ, "MINIRUN_VM_COLLECT": "1"}, capture_output=True, text=True, timeout=120,
    )
    ids = tuple(line.strip() for line in proc.stdout.splitlines() if "::" in line and " " not in line.strip())
    if proc.returncode != 0 or not ids:
        return (), f"exit status {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return ids, ""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "vm_test" in metafunc.fixturenames:
        ids = _collected()[0] or (COLLECTION_FAILED,)
        metafunc.parametrize("vm_test", ids, ids=[i.rsplit("/", 1)[-1] for i in ids])


@pytest.fixture(scope="module")
def vm_run() -> VmResult:
    reason = qemu_unavailable_reason()
    if reason is not None:
        pytest.skip(f"cannot run the cgroup v2 VM here: {reason}")
    return run_tests_in_vm(VM_TEST_FILES, timeout=VM_TIMEOUT)


def test_vm_ran_pytest_to_the_end(vm_run: VmResult) -> None:
    """pytest inside the VM finished (0: all passed, 1: some failed; anything else is a broken run) and
    reported exactly the tests collected here."""
    print(vm_run.describe(console_lines=0))
    assert vm_run.exit_code in (0, 1), vm_run.describe()
    assert sorted(vm_run.outcomes) == sorted(_collected()[0]), vm_run.output


def test_in_vm(vm_run: VmResult, vm_test: str) -> None:
    if vm_test == COLLECTION_FAILED:
        pytest.fail(f"collecting {VM_TEST_FILES} on the host failed: {_collected()[1]}")
    outcome = vm_run.outcomes.get(vm_test)
    if outcome is None:
        pytest.fail(f"{vm_test} did not run in the VM\n{vm_run.output}\n{vm_run.describe()}")
    if outcome.outcome == "skipped":
        pytest.skip(f"skipped inside the VM: {outcome.message}")
    if outcome.outcome != "passed":
        pytest.fail(f"{vm_test} {outcome.outcome} inside the VM ({vm_run.kernel_version}, cgroup v2):\n"
                    f"{outcome.message}", pytrace=False)
