"""OCI hooks (config.md "POSIX-platform Hooks", runtime.md "Lifecycle"): when, where and how they run.

Every hook is the same shell script, in a host temp dir that is also bind-mounted at /mnt in the
container (startContainer runs it from there; the others from the host path). It records, under
the name given as its first argument: its stdin (the state), its environment as it was exec'ed, and
a log line with its mount namespace and arguments. Its second argument says how it ends.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Runtime, alive

HOOK = r"""#!/bin/sh
dir=$(dirname "$0")
cat > "$dir/$1.state"
tr '\0' '\n' < /proc/self/environ > "$dir/$1.env"
echo "$1 $(readlink /proc/self/ns/mnt) $*" >> "$dir/log"
case "$2" in
  fail) echo "first line" >&2; echo "boom from $1" >&2; exit 3 ;;
  sleep) sleep 100 & echo "$$ $!" > "$dir/$1.pids"; wait ;;
  kill) kill -9 $$ ;;
esac
exit 0
"""

HOST_MNT_NS = os.readlink("/proc/self/ns/mnt")


@pytest.fixture
def hookdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="minirun-test-hooks-"))
    (path / "hook.sh").write_text(HOOK)
    (path / "hook.sh").chmod(0o755)
    (path / "log").touch()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def hook(d: Path, name: str, how: str = "ok", **extra: Any) -> dict[str, Any]:
    """A hook entry running the script as `name`; startContainer's path is inside the container."""
    path = "/mnt/hook.sh" if name.startswith("startContainer") else str(d / "hook.sh")
    return {"path": path, "args": ["hook.sh", name, how], **extra}


def config_with(rt: Runtime, d: Path, hooks: dict[str, Any],
                script: str = "echo process >> /mnt/log") -> dict[str, Any]:
    config = copy.deepcopy(rt.config)
    config["process"]["args"] = ["/bin/sh", "-c", script]
    config["mounts"].append({"destination": "/mnt", "type": "bind", "source": str(d), "options": ["rbind", "rw"]})
    config["hooks"] = hooks
    config["annotations"] = {"org.example.hooks": "yes"}
    return config


def log(d: Path) -> list[list[str]]:
    """Log lines as [name, mount namespace, args...]."""
    return [line.split() for line in (d / "log").read_text().splitlines()]


def names(d: Path) -> list[str]:
    return [line[0] for line in log(d)]


def state_of(d: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((d / f"{name}.state").read_text())
    return data


def create(rt: Runtime, config: dict[str, Any], cid: str) -> Any:
    return rt.detached("create", "--bundle", str(rt.bundle(config)), cid)


ALL = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


def test_create_start_delete_run_every_hook_in_order_where_the_spec_says(
        host_unchanged: None, runtime: Runtime, hookdir: Path) -> None:
    hooks = {name: [hook(hookdir, name), hook(hookdir, name + "2")] for name in ALL}
    config = config_with(runtime, hookdir, hooks)
    cid = "minirun-test-hooks-order"
    bundle = runtime.bundle(config)
    result = runtime.detached("create", "--bundle", str(bundle), cid)
    assert result.returncode == 0, result.stderr
    init_pid = runtime.state(cid)["pid"]
    assert names(hookdir) == ["prestart", "prestart2", "createRuntime", "createRuntime2", "createContainer",
                              "createContainer2"]

    result = runtime.cmd("start", cid)
    assert result.returncode == 0, result.stderr
    runtime.wait_status(cid, "stopped")
    result = runtime.cmd("delete", cid)
    assert result.returncode == 0, result.stderr

    order = names(hookdir)
    assert order[:8] == ["prestart", "prestart2", "createRuntime", "createRuntime2", "createContainer",
                         "createContainer2", "startContainer", "startContainer2"]
    # The process runs concurrently with poststart; it only has to come after startContainer.
    assert sorted(order[8:11]) == ["poststart", "poststart2", "process"]
    assert order[11:] == ["poststop", "poststop2"]

    mnt = {line[0]: line[1] for line in log(hookdir) if line[0] != "process"}
    for name in ("prestart", "createRuntime", "poststart", "poststop"):
        assert mnt[name] == HOST_MNT_NS, name
    assert mnt["createContainer"] != HOST_MNT_NS
    assert mnt["startContainer"] == mnt["createContainer"]
    assert log(hookdir)[0][2:] == ["prestart", "ok"]  # args after argv[0]

    want_status = {"prestart": "creating", "createRuntime": "creating", "createContainer": "creating",
                   "startContainer": "created", "poststart": "running", "poststop": "stopped"}
    for name, status in want_status.items():
        state = state_of(hookdir, name)
        assert state["status"] == status, name
        assert state["id"] == cid
        assert state["bundle"] == str(bundle)
        assert state["annotations"] == {"org.example.hooks": "yes"}
        assert state["ociVersion"]
        assert state["pid"] == (0 if status == "stopped" else init_pid), name


def test_foreground_run_runs_poststart_and_poststop(host_unchanged: None, runtime: Runtime, hookdir: Path) -> None:
    config = config_with(runtime, hookdir, {"poststart": [hook(hookdir, "poststart")],
                                            "poststop": [hook(hookdir, "poststop")]})
    result = runtime.run(config)
    assert result.returncode == 0, result.stderr
    assert sorted(names(hookdir)[:2]) == ["poststart", "process"]
    assert names(hookdir)[2:] == ["poststop"]


def test_detached_run_runs_poststart(host_unchanged: None, runtime: Runtime, hookdir: Path) -> None:
    config = config_with(runtime, hookdir, {"poststart": [hook(hookdir, "poststart")]})
    cid = "minirun-test-hooks-detached"
    result = runtime.detached("run", "-d", "--bundle", str(runtime.bundle(config)), cid)
    assert result.returncode == 0, result.stderr
    assert "poststart" in names(hookdir)  # before run returned
    assert state_of(hookdir, "poststart")["status"] == "running"
    runtime.wait_status(cid, "stopped")
    assert runtime.cmd("delete", cid).returncode == 0


def test_env_is_passed_exactly(host_unchanged: None, runtime: Runtime, hookdir: Path) -> None:
    env = ["MINIRUN_HOOK=1", "SPACED=a b", "EMPTY="]
    config = config_with(runtime, hookdir, {
        "createRuntime": [hook(hookdir, "createRuntime", env=env), hook(hookdir, "noenv")],
        "createContainer": [hook(hookdir, "createContainer", env=env)],
        "startContainer": [hook(hookdir, "startContainer", env=env)],
    })
    result = runtime.run(config)
    assert result.returncode == 0, result.stderr
    for name in ("createRuntime", "createContainer", "startContainer"):
        assert (hookdir / f"{name}.env").read_text().splitlines() == env, name
    assert (hookdir / "noenv.env").read_text() == ""


def test_timeout_kills_the_hook_and_create_fails_leaving_nothing(
        host_unchanged: None, runtime: Runtime, hookdir: Path) -> None:
    config = config_with(runtime, hookdir, {"createRuntime": [hook(hookdir, "first"),
                                                              hook(hookdir, "sleeper", "sleep", timeout=1)],
                                            "createContainer": [hook(hookdir, "never")]})
    began = time.monotonic()
    result = create(runtime, config, "minirun-test-hooks-timeout")
    assert time.monotonic() - began < 20
    assert result.returncode != 0
    assert "hooks.createRuntime[1] (" in result.stderr and "timed out after 1 second (killed)" in result.stderr
    assert names(hookdir) == ["first", "sleeper"]
    for pid in map(int, (hookdir / "sleeper.pids").read_text().split()):
        assert not alive(pid)  # the hook and the sleep it started
    assert runtime.cmd("state", "minirun-test-hooks-timeout").returncode != 0


@pytest.mark.parametrize(("name", "how", "message"), [
    ("prestart", "fail", "exited with status 3: boom from prestart"),
    ("createRuntime", "fail", "exited with status 3: boom from createRuntime"),
    ("createContainer", "fail", "exited with status 3: boom from createContainer"),
    ("createRuntime", "kill", "killed by SIGKILL"),
    ("createContainer", "kill", "killed by SIGKILL"),
    ("createRuntime", "missing", "cannot execute: no such file or directory"),
    ("createContainer", "missing", "cannot execute: no such file or directory"),
    ("createRuntime", "noexec", "cannot execute: permission denied"),
])
def test_failing_create_hook_fails_create_naming_it(
        host_unchanged: None, runtime: Runtime, hookdir: Path, name: str, how: str, message: str) -> None:
    bad = hook(hookdir, name, how)
    if how == "missing":
        bad["path"] = str(hookdir / "no-such-hook")
    if how == "noexec":
        (hookdir / "plain.sh").write_text(HOOK)
        bad["path"] = str(hookdir / "plain.sh")
    hooks = {"createContainer": [hook(hookdir, "never")], "startContainer": [hook(hookdir, "never")]}
    hooks[name] = [hook(hookdir, "before"), bad]
    cid = "minirun-test-hooks-fail"
    result = create(runtime, config_with(runtime, hookdir, hooks), cid)
    assert result.returncode != 0
    line = result.stderr.strip().splitlines()[-1]
    assert f"hooks.{name}[1] ({bad['path']}): {message}" in line, result.stderr
    assert "never" not in names(hookdir)
    assert runtime.cmd("state", cid).returncode != 0


def test_failing_start_container_hook_fails_start_and_the_process_never_runs(
        host_unchanged: None, runtime: Runtime, hookdir: Path) -> None:
    config = config_with(runtime, hookdir, {"startContainer": [hook(hookdir, "startContainer", "fail")],
                                            "poststart": [hook(hookdir, "poststart")]})
    cid = "minirun-test-hooks-start-fail"
    assert create(runtime, config, cid).returncode == 0
    result = runtime.cmd("start", cid)
    assert result.returncode != 0
    assert "hooks.startContainer[0] (/mnt/hook.sh): exited with status 3: boom from startContainer" in result.stderr
    assert runtime.status(cid) == "stopped"
    assert names(hookdir) == ["startContainer"]  # neither the process nor poststart
    assert runtime.cmd("delete", cid).returncode == 0


def test_failing_start_container_hook_fails_foreground_run(host_unchanged: None, runtime: Runtime,
                                                            hookdir: Path) -> None:
    config = config_with(runtime, hookdir, {"startContainer": [hook(hookdir, "startContainer", "kill")]})
    result = runtime.run(config)
    assert result.returncode != 0
    assert "hooks.startContainer[0] (/mnt/hook.sh): killed by SIGKILL" in result.stderr
    assert names(hookdir) == ["startContainer"]


def test_failing_poststart_and_poststop_hooks_are_warnings(host_unchanged: None, runtime: Runtime,
                                                           hookdir: Path) -> None:
    config = config_with(runtime, hookdir, {
        "poststart": [hook(hookdir, "poststart", "fail"), hook(hookdir, "poststart2")],
        "poststop": [hook(hookdir, "poststop", "fail"), hook(hookdir, "poststop2")],
    }, script="echo process >> /mnt/log; exit 7")
    result = runtime.run(config)
    assert result.returncode == 7, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "level=warning" in line]
    assert len(warnings) == 2, result.stderr
    assert "hooks.poststart[0]" in warnings[0] and "boom from poststart" in warnings[0]
    assert "hooks.poststop[0]" in warnings[1] and "boom from poststop" in warnings[1]
    assert names(hookdir)[-2:] == ["poststop", "poststop2"]
    assert "poststart2" in names(hookdir)


def test_poststop_runs_on_delete_of_a_created_container(host_unchanged: None, runtime: Runtime,
                                                        hookdir: Path) -> None:
    config = config_with(runtime, hookdir, {"poststop": [hook(hookdir, "poststop")]})
    cid = "minirun-test-hooks-poststop"
    assert create(runtime, config, cid).returncode == 0
    assert names(hookdir) == []
    result = runtime.cmd("delete", cid)
    assert result.returncode == 0, result.stderr
    assert names(hookdir) == ["poststop"]
    assert state_of(hookdir, "poststop")["id"] == cid
