"""Container ids, status transitions, and the state store on a temporary directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from minirun.errors import ContainerExists, ContainerNotFound, UsageError, WrongState
from minirun.state import ALLOWED, State, Status, Store, check_transition, validate_id


@pytest.mark.parametrize("good", ["a", "abc-DEF_1.2", "x" * 1024, "0", "a.b"])
def test_valid_ids(good: str) -> None:
    assert validate_id(good) == good


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", ".", "..", "a b", "x" * 1025, "é", "a\0b", "a\nb"])
def test_invalid_ids_are_refused(bad: str) -> None:
    with pytest.raises(UsageError) as info:
        validate_id(bad)
    assert "container id" in str(info.value)


@pytest.mark.parametrize(("verb", "status", "allowed"), [
    ("start", Status.CREATED, True), ("start", Status.RUNNING, False), ("start", Status.STOPPED, False),
    ("kill", Status.RUNNING, True), ("kill", Status.CREATED, True), ("kill", Status.STOPPED, False),
    ("delete", Status.STOPPED, True), ("delete", Status.CREATED, True), ("delete", Status.RUNNING, False),
    ("pause", Status.RUNNING, True), ("resume", Status.PAUSED, True), ("resume", Status.RUNNING, False),
])
def test_transitions(verb: str, status: str, allowed: bool) -> None:
    assert (status in ALLOWED[verb]) == allowed
    if allowed:
        check_transition(verb, "c1", status)
    else:
        with pytest.raises(WrongState) as info:
            check_transition(verb, "c1", status)
        assert f"cannot {verb} container `c1`: it is {status}" == str(info.value)


def test_claim_is_exclusive_and_remove_cleans(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "root"))
    path = store.claim("c1")
    assert os.path.isdir(path)
    with pytest.raises(ContainerExists):
        store.claim("c1")
    store.remove("c1")
    assert not os.path.exists(path)
    store.remove("c1")  # idempotent


def test_save_load_roundtrip_and_status_of_a_dead_pid(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    store.claim("c1")
    state = State(id="c1", bundle="/b", rootfs="/b/rootfs", pid=2**22 + 7, pid_start=1,
                  annotations={"k": "v"})
    store.save(state)
    loaded = store.load("c1")
    assert loaded.to_dict() == state.to_dict()
    assert store.status(loaded) == Status.STOPPED
    assert loaded.oci(Status.STOPPED)["pid"] == 0
    assert store.ids() == ["c1"]


def test_status_of_a_live_process_with_and_without_fifo(tmp_path: Path) -> None:
    from minirun.state import process_start_time

    store = Store(str(tmp_path))
    store.claim("me")
    me = os.getpid()
    store.save(State(id="me", bundle="/b", rootfs="/r", pid=me, pid_start=process_start_time(me) or 0))
    assert store.status(store.load("me")) == Status.RUNNING
    os.mkfifo(store.fifo("me"))
    assert store.status(store.load("me")) == Status.CREATED
    # A reused pid (different start time) is not our container.
    store.save(State(id="me", bundle="/b", rootfs="/r", pid=me, pid_start=1))
    assert store.status(store.load("me")) == Status.STOPPED


def test_unknown_container(tmp_path: Path) -> None:
    with pytest.raises(ContainerNotFound) as info:
        Store(str(tmp_path)).load("nope")
    assert str(info.value) == "container `nope` does not exist"
