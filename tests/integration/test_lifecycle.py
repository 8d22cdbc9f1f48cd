"""The container lifecycle (runtime.md "Lifecycle" and "State"): create, start, kill, delete, run.

Containers outlive the `create`/`run -d` commands that made them and inherit their stdio, so those
commands are run with stdio in files (a pipe would stay open until the container exits). The
containers talk back through a host directory bind-mounted at /mnt.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MINIRUN, ROOTFS, Result, Runtime, alive, poll

ANNOTATIONS = {"org.example.purpose": "lifecycle-test", "org.example.n": "1"}

# Writes /mnt/ran, then waits (bounded only by the test deleting it) for the host to create /mnt/go.
WAIT_FOR_GO = "echo ran > /mnt/ran; while [ ! -e /mnt/go ]; do sleep 0.05; done; echo bye > /mnt/bye"
# Runs until killed (SIGKILL from delete --force or the test).
FOREVER = "echo ran > /mnt/ran; while :; do sleep 0.05; done"




def shell_config(rt: Runtime, script: str, outdir: Path) -> dict[str, Any]:
    """The runtime's config running `sh -c script`, with `outdir` bind-mounted read-write at /mnt."""
    config = copy.deepcopy(rt.config)
    config["process"]["args"] = ["/bin/sh", "-c", script]
    config["mounts"].append({"destination": "/mnt", "type": "bind", "source": str(outdir),
                             "options": ["rbind", "rw"]})
    config["annotations"] = dict(ANNOTATIONS)
    return config










def in_rootfs(pid: int) -> bool:
    want, got = os.stat(ROOTFS), os.stat(f"/proc/{pid}/root")
    return (got.st_dev, got.st_ino) == (want.st_dev, want.st_ino)


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def listed_ids(rt: Runtime) -> list[str]:
    result = rt.cmd("list", "-q")
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def create(rt: Runtime, config: dict[str, Any], cid: str, *extra: str) -> Path:
    bundle = rt.bundle(config)
    result = rt.detached("create", "--bundle", str(bundle), *extra, cid)
    assert result.returncode == 0, result.stderr
    return bundle


# --- the lifecycle ---------------------------------------------------------------------------------


def test_create_start_stop_delete_follow_the_oci_lifecycle(
        runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    bundle = create(runtime, shell_config(runtime, WAIT_FOR_GO, tmp_path), "life")

    state = runtime.state("life")
    assert state["ociVersion"] == "1.2.0"
    assert state["id"] == "life"
    assert state["status"] == "created"
    assert state["bundle"] == str(bundle)
    assert state["annotations"] == ANNOTATIONS
    pid = state["pid"]
    assert isinstance(pid, int) and pid > 0
    assert alive(pid) and in_rootfs(pid)
    assert not (tmp_path / "ran").exists(), "the program ran before `start`"

    started = runtime.cmd("start", "life")
    assert started.returncode == 0, started.stderr
    running = runtime.state("life")
    assert running["status"] == "running"
    assert running["pid"] == pid
    poll(lambda: (tmp_path / "ran").exists(), "the program to write /mnt/ran")

    (tmp_path / "go").touch()
    runtime.wait_status("life", "stopped")
    assert (tmp_path / "bye").read_text() == "bye\n"
    assert not alive(pid)

    deleted = runtime.cmd("delete", "life")
    assert deleted.returncode == 0, deleted.stderr
    gone = runtime.cmd("state", "life")
    assert gone.returncode != 0
    assert "life" in one_line(gone.stderr)
    assert "life" not in listed_ids(runtime)


def test_run_detached_returns_with_the_container_running(
        runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    bundle = runtime.bundle(shell_config(runtime, WAIT_FOR_GO, tmp_path))
    result = runtime.detached("run", "-d", "--bundle", str(bundle), "bg")
    assert result.returncode == 0, result.stderr
    state = runtime.state("bg")
    assert state["status"] == "running"
    assert alive(state["pid"]) and in_rootfs(state["pid"])
    poll(lambda: (tmp_path / "ran").exists(), "the detached container to run its program")

    (tmp_path / "go").touch()
    runtime.wait_status("bg", "stopped")
    assert runtime.cmd("delete", "bg").returncode == 0
    assert listed_ids(runtime) == []


@pytest.mark.parametrize("verb", [("create",), ("run", "-d")], ids=["create", "run-d"])
def test_pid_file_holds_the_init_pid(
        runtime: Runtime, host_unchanged: None, tmp_path: Path, verb: tuple[str, ...]) -> None:
    outdir = tmp_path / "out"
    outdir.mkdir()
    pid_file = tmp_path / "init.pid"
    bundle = runtime.bundle(shell_config(runtime, FOREVER, outdir))
    result = runtime.detached(*verb, "--bundle", str(bundle), "--pid-file", str(pid_file), "pidf")
    assert result.returncode == 0, result.stderr

    pid = int(pid_file.read_text())
    assert pid == runtime.state("pidf")["pid"]
    assert alive(pid) and in_rootfs(pid)
    assert runtime.cmd("delete", "--force", "pidf").returncode == 0
    assert not alive(pid)


def test_delete_force_kills_a_running_container(
        runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    bundle = runtime.bundle(shell_config(runtime, FOREVER, tmp_path))
    assert runtime.detached("run", "-d", "--bundle", str(bundle), "doomed").returncode == 0
    pid = runtime.state("doomed")["pid"]
    poll(lambda: (tmp_path / "ran").exists(), "the container to run")

    result = runtime.cmd("delete", "--force", "doomed")
    assert result.returncode == 0, result.stderr
    assert not alive(pid)
    assert runtime.cmd("state", "doomed").returncode != 0
    assert listed_ids(runtime) == []


def test_created_container_can_be_deleted_without_force(
        runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    create(runtime, shell_config(runtime, FOREVER, tmp_path), "never-started")
    pid = runtime.state("never-started")["pid"]
    assert alive(pid)

    result = runtime.cmd("delete", "never-started")
    assert result.returncode == 0, result.stderr
    assert not alive(pid)
    assert not (tmp_path / "ran").exists(), "deleting a created container must not run its program"
    assert listed_ids(runtime) == []


def test_foreground_run_returns_the_exit_status_and_deletes_the_container(
        runtime: Runtime, host_unchanged: None) -> None:
    result = runtime.sh("echo from-the-container; exit 7")
    assert result.returncode == 7, result.stderr
    assert result.stdout == "from-the-container\n"
    assert listed_ids(runtime) == []


def test_foreground_run_with_keep_leaves_the_container_stopped(
        runtime: Runtime, host_unchanged: None) -> None:
    config = copy.deepcopy(runtime.config)
    config["process"]["args"] = ["/bin/sh", "-c", "echo kept; exit 3"]
    result = runtime.run(config, "--keep", cid="kept")
    assert result.returncode == 3, result.stderr
    assert result.stdout == "kept\n"

    state = runtime.state("kept")
    assert state["status"] == "stopped"
    assert listed_ids(runtime) == ["kept"]
    assert runtime.cmd("delete", "kept").returncode == 0
    assert listed_ids(runtime) == []


def test_foreground_run_reports_death_by_signal_as_128_plus_n(
        runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    bundle = runtime.bundle(shell_config(runtime, FOREVER, tmp_path))
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([str(MINIRUN), "--root", str(runtime.root), "run", "--bundle", str(bundle),
                                 "fg"], stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            poll(lambda: (tmp_path / "ran").exists(), "the foreground container to run")
            pid = runtime.state("fg")["pid"]
            assert runtime.cmd("kill", "fg", "KILL").returncode == 0
            assert proc.wait(timeout=60) == 137
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert not alive(pid)
    assert listed_ids(runtime) == []


def test_foreground_run_forwards_signals_to_the_container(
        runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    script = ("trap 'echo TERM > /mnt/got; exit 42' TERM; echo ran > /mnt/ran; "
              "while :; do sleep 0.05; done")
    bundle = runtime.bundle(shell_config(runtime, script, tmp_path))
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([str(MINIRUN), "--root", str(runtime.root), "run", "--bundle", str(bundle),
                                 "fwd"], stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            poll(lambda: (tmp_path / "ran").exists(), "the foreground container to run")
            proc.terminate()  # SIGTERM to minirun itself, which we started
            assert proc.wait(timeout=60) == 42
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert (tmp_path / "got").read_text() == "TERM\n"
    assert listed_ids(runtime) == []


def test_kill_of_a_created_container_stops_it_before_its_program_runs(
        runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    create(runtime, shell_config(runtime, FOREVER, tmp_path), "stillborn")
    pid = runtime.state("stillborn")["pid"]
    result = runtime.cmd("kill", "stillborn", "KILL")
    assert result.returncode == 0, result.stderr
    runtime.wait_status("stillborn", "stopped")
    assert not alive(pid)
    start = runtime.cmd("start", "stillborn")
    assert start.returncode != 0
    assert "stopped" in one_line(start.stderr)
    assert not (tmp_path / "ran").exists()
    assert runtime.cmd("delete", "stillborn").returncode == 0


def test_foreground_run_of_a_bundle_dir_makes_up_an_id(runtime: Runtime, host_unchanged: None) -> None:
    bundle = runtime.bundle()
    result = runtime.cmd("run", "--keep", str(bundle))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["pid"] == 1
    (cid,) = listed_ids(runtime)
    assert cid.startswith(f"{bundle.name}-")
    assert runtime.state(cid)["bundle"] == str(bundle)
    assert runtime.cmd("delete", cid).returncode == 0

    again = runtime.cmd("run", str(bundle))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["pid"] == 1
    assert listed_ids(runtime) == [], "run without --keep must delete the container"


def test_foreground_run_of_a_bundle_dir_with_name_uses_that_id(
        runtime: Runtime, host_unchanged: None) -> None:
    bundle = runtime.bundle()
    result = runtime.cmd("run", "--keep", "--name", "x", str(bundle))
    assert result.returncode == 0, result.stderr
    assert listed_ids(runtime) == ["x"]
    state = runtime.state("x")
    assert (state["id"], state["status"], state["bundle"]) == ("x", "stopped", str(bundle))
    assert runtime.cmd("delete", "x").returncode == 0

    again = runtime.cmd("run", "--name", "x", str(bundle))
    assert again.returncode == 0, again.stderr
    assert listed_ids(runtime) == []


# --- lifecycle errors ------------------------------------------------------------------------------


def test_second_start_fails_and_names_the_state(
        runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    create(runtime, shell_config(runtime, FOREVER, tmp_path), "twice")
    assert runtime.cmd("start", "twice").returncode == 0

    again = runtime.cmd("start", "twice")
    assert again.returncode != 0
    message = one_line(again.stderr)
    assert "twice" in message and "running" in message
    assert runtime.status("twice") == "running"
    assert runtime.cmd("delete", "--force", "twice").returncode == 0


def test_start_of_a_stopped_container_fails(runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    create(runtime, shell_config(runtime, "echo ran > /mnt/ran", tmp_path), "done")
    assert runtime.cmd("start", "done").returncode == 0
    runtime.wait_status("done", "stopped")

    again = runtime.cmd("start", "done")
    assert again.returncode != 0
    message = one_line(again.stderr)
    assert "done" in message and "stopped" in message
    assert (tmp_path / "ran").read_text() == "ran\n"
    assert runtime.cmd("delete", "done").returncode == 0


def test_delete_of_a_running_container_without_force_fails_and_it_keeps_running(
        runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    bundle = runtime.bundle(shell_config(runtime, FOREVER, tmp_path))
    assert runtime.detached("run", "-d", "--bundle", str(bundle), "busy").returncode == 0
    pid = runtime.state("busy")["pid"]

    result = runtime.cmd("delete", "busy")
    assert result.returncode != 0
    message = one_line(result.stderr)
    assert "busy" in message and "running" in message
    state = runtime.state("busy")
    assert (state["status"], state["pid"]) == ("running", pid)
    assert alive(pid)
    assert runtime.cmd("delete", "--force", "busy").returncode == 0


def test_kill_of_a_stopped_container_fails(runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    create(runtime, shell_config(runtime, "true", tmp_path), "ended")
    assert runtime.cmd("start", "ended").returncode == 0
    runtime.wait_status("ended", "stopped")

    result = runtime.cmd("kill", "ended", "KILL")
    assert result.returncode != 0
    message = one_line(result.stderr)
    assert "ended" in message and "not running" in message
    assert runtime.cmd("delete", "ended").returncode == 0


def test_delete_force_of_an_unknown_id_succeeds_quietly(runtime: Runtime, host_unchanged: None) -> None:
    """As runc: engines force-delete after a failed create to be sure nothing is left."""
    assert runtime.cmd("delete", "--force", "no-such-container") == Result(0, "", "")


@pytest.mark.parametrize("verb", [("state",), ("kill",), ("start",), ("delete",)])
def test_verbs_on_an_unknown_id_fail_naming_it(
        runtime: Runtime, host_unchanged: None, verb: tuple[str, ...]) -> None:
    result = runtime.cmd(*verb, "no-such-container")
    assert result.returncode != 0
    message = one_line(result.stderr)
    assert "no-such-container" in message and "does not exist" in message
    assert result.stdout == ""


def test_second_create_of_a_live_id_fails_and_leaves_the_first_untouched(
        runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    create(runtime, shell_config(runtime, FOREVER, tmp_path), "taken")
    first = runtime.state("taken")

    second = runtime.detached("create", "--bundle", str(runtime.bundle()), "taken")
    assert second.returncode != 0
    message = one_line(second.stderr)
    assert "taken" in message and "already exists" in message

    after = runtime.state("taken")
    assert after == first
    assert after["status"] == "created" and alive(after["pid"])
    assert not (tmp_path / "ran").exists()
    assert runtime.cmd("start", "taken").returncode == 0, "the first container still starts"
    poll(lambda: (tmp_path / "ran").exists(), "the first container to run")
    assert runtime.cmd("delete", "--force", "taken").returncode == 0


def test_concurrent_creates_of_one_id_exactly_one_wins(
        runtime: Runtime, host_unchanged: None, tmp_path: Path) -> None:
    bundle = runtime.bundle(shell_config(runtime, FOREVER, tmp_path))
    for round_ in range(5):
        cid = f"race-{round_}"
        with tempfile.TemporaryFile() as out_a, tempfile.TemporaryFile() as out_b:
            procs = [subprocess.Popen([str(MINIRUN), "--root", str(runtime.root), "create", "--bundle",
                                       str(bundle), cid], stdin=subprocess.DEVNULL, stdout=out, stderr=out)
                     for out in (out_a, out_b)]
            codes = [p.wait(timeout=60) for p in procs]
            outputs = []
            for out in (out_a, out_b):
                out.seek(0)
                outputs.append(out.read().decode())
        assert sorted(code == 0 for code in codes) == [False, True], (codes, outputs)
        loser = outputs[codes.index(next(c for c in codes if c != 0))]
        assert "already exists" in one_line(loser)
        assert listed_ids(runtime) == [cid]
        state = runtime.state(cid)
        assert state["status"] == "created" and alive(state["pid"])
        assert runtime.cmd("delete", cid).returncode == 0
        assert not alive(state["pid"])
    assert listed_ids(runtime) == []


# --- container ids ---------------------------------------------------------------------------------

BAD_IDS = {"dotdot": "../x", "slash": "a/b", "empty": "", "hidden": ".hidden", "space": "a b",
           "long": "a" * 2000}


@pytest.mark.parametrize("verb", [("create",), ("run", "-d")], ids=["create", "run-d"])
@pytest.mark.parametrize("cid", list(BAD_IDS.values()), ids=list(BAD_IDS))
def test_invalid_ids_are_refused_before_anything_is_created(
        runtime: Runtime, host_unchanged: None, tmp_path: Path, verb: tuple[str, ...], cid: str) -> None:
    # A state root one level down: `../x` would land in runtime.root, where we can see it.
    inner = runtime.root / "inner"
    bundle = runtime.bundle(shell_config(runtime, FOREVER, tmp_path))
    result = runtime.detached(*verb, "--bundle", str(bundle), cid, global_args=("--root", str(inner)))
    assert result.returncode != 0
    assert "container id" in one_line(result.stderr)
    assert list(runtime.root.iterdir()) == []
    assert not (tmp_path / "ran").exists()
