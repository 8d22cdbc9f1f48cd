"""The verbs, acting on containers loaded from the state store."""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import time

from minirun import cgroups
from minirun.errors import KernelError, MinirunError, UsageError, WrongState
from minirun.state import State, Status, Store, check_transition, process_start_time

TYPE_CHECKING = False  # typing costs milliseconds to import; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

    from minirun.cgroups.base import Manager
    from minirun.spec.hooks import Hooks

START_POLL_SECONDS = 0.1
KILL_WAIT_SECONDS = 10.0


def parse_signal(text: str) -> int:
    """TERM, SIGTERM, sigterm or 15 (any number up to SIGRTMAX)."""
    raw = text.strip().upper()
    if raw.isdigit():
        if 1 <= int(raw) <= signal.SIGRTMAX:
            return int(raw)
        raise UsageError(f"signal {text!r}: unknown signal number")
    name = raw if raw.startswith("SIG") else "SIG" + raw
    if name in signal.Signals.__members__:
        return int(signal.Signals[name])
    raise UsageError(f"signal {text!r}: unknown signal name")


def load(store: Store, container_id: str) -> tuple[State, str]:
    state = store.load(container_id)
    return state, store.status(state)


def start(store: Store, container_id: str) -> None:
    with store.locked(container_id):
        state, status = load(store, container_id)
        check_transition("start", container_id, status)
        fifo_path = store.fifo(container_id)
        relay = None
        if os.path.isdir(os.path.join(store.dir(container_id), "notify")) and os.environ.get("NOTIFY_SOCKET"):
            from minirun import notify

            relay = notify.Relay(store.dir(container_id))  # bound before the process can send
        try:
            fd = os.open(fifo_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise WrongState(f"cannot start container `{container_id}`: it was started already") from None
        try:
            failure = _wait_for_exec(fd, state)
        finally:
            os.close(fd)
        os.unlink(fifo_path)
        if failure:
            wait_stopped(state, KILL_WAIT_SECONDS)  # the init exits after a failed startContainer hook
            raise MinirunError(failure)
        if state.config.get("hooks"):
            from minirun import hooks

            hooks.run_hooks_warning(_hooks_of(state), "poststart", state.oci(Status.RUNNING))
        if relay is not None:
            relay.forward_until_ready(state.pid, lambda: process_start_time(state.pid) == state.pid_start)


def _wait_for_exec(fd: int, state: State) -> str:
    """The init writes one byte once it has our read end, runs the startContainer hooks and execs,
    which closes its end. Anything it wrote after the byte is why it did not exec. Give up if it died."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    got_byte = False
    message = b""
    while True:
        events = poller.poll(START_POLL_SECONDS * 1000)
        if events:
            try:
                data = os.read(fd, 4096)
            except BlockingIOError:
                data = None
            if data:
                message += data if got_byte else data[1:]
                got_byte = True
                continue
            if data == b"" and got_byte:
                return message.decode(errors="replace")
            if data == b"" and events[0][1] & (select.POLLHUP | select.POLLIN):
                raise MinirunError(f"start container `{state.id}`: its init exited before exec")
        if not got_byte and process_start_time(state.pid) != state.pid_start:
            raise MinirunError(f"start container `{state.id}`: its init is gone (pid {state.pid})")


def _hooks_of(state: State) -> Hooks:
    from minirun.spec.hooks import parse_hooks
    from minirun.spec.reader import Field

    return parse_hooks(Field(state.config.get("hooks"), "hooks"))


def cgroup_of(state: State) -> Manager | None:
    return cgroups.from_state(state.cgroup)


def container_pids(state: State) -> list[int]:
    """Every process of the container: its cgroup's, or else those in the init's own pid namespace."""
    manager = cgroup_of(state)
    if manager is not None:
        with contextlib.suppress(OSError):
            return manager.pids()
    try:
        init_ns = os.readlink(f"/proc/{state.pid}/ns/pid")
    except OSError:
        return []
    if init_ns == os.readlink("/proc/self/ns/pid"):
        return [state.pid]  # shares the host's pid namespace: only the init is surely ours
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry}/ns/pid") == init_ns:
                    pids.append(int(entry))
    return pids


def kill(store: Store, container_id: str, sig: int, all_processes: bool) -> None:
    state, status = load(store, container_id)
    if status == Status.STOPPED:
        raise WrongState(f"cannot kill container `{container_id}`: it is not running")
    check_transition("kill", container_id, status)
    targets = container_pids(state) if all_processes else [state.pid]
    for pid in targets:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            continue
        except OSError as e:
            raise KernelError(f"kill {pid} with signal {sig}", e.errno or errno.EPERM) from None


def delete(store: Store, container_id: str, force: bool) -> None:
    with store.locked(container_id):
        state, status = load(store, container_id)
        if status in (Status.RUNNING, Status.PAUSED) and not force:
            raise WrongState(f"cannot delete container `{container_id}`: it is {status} "
                             "(stop it first, or use --force)")
        manager = cgroup_of(state)
        moved_back: MinirunError | None = None
        if (state.config.get("linux") or {}).get("netDevices"):
            # Before the kill: a dying network namespace destroys virtual devices (linux/netdevices.py).
            from minirun.linux import netdevices

            try:
                netdevices.move_back(netdevices.devices_from_config(state.config), store.dir(container_id))
            except MinirunError as e:
                moved_back = e
        if status != Status.STOPPED:
            if manager is not None and status == Status.PAUSED:
                manager.thaw()  # a frozen process cannot even die
            for pid in container_pids(state):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            wait_stopped(state, KILL_WAIT_SECONDS)
        if manager is not None:
            manager.destroy()  # also whatever left the init's process tree
        store.remove(container_id)
        if state.config.get("hooks"):
            from minirun import hooks

            hooks.run_hooks_warning(_hooks_of(state), "poststop", state.oci(Status.STOPPED))
        if moved_back is not None:
            raise moved_back


def wait_stopped(state: State, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while process_start_time(state.pid) == state.pid_start:
        if time.monotonic() > deadline:
            raise MinirunError(f"container `{state.id}`: init {state.pid} did not exit after SIGKILL")
        time.sleep(0.002)


def oci_state(store: Store, container_id: str) -> dict[str, Any]:
    state, status = load(store, container_id)
    return state.oci(status)


def list_all(store: Store) -> list[dict[str, Any]]:
    out = []
    for cid in store.ids():
        with contextlib.suppress(MinirunError):
            out.append(oci_state(store, cid))
    return out


def _require_cgroup(state: State, verb: str) -> Manager:
    manager = cgroup_of(state)
    if manager is None:
        raise WrongState(f"cannot {verb} container `{state.id}`: it has no cgroup")
    return manager


def pause(store: Store, container_id: str) -> None:
    with store.locked(container_id):
        state, status = load(store, container_id)
        check_transition("pause", container_id, status)
        _require_cgroup(state, "pause").freeze()


def resume(store: Store, container_id: str) -> None:
    with store.locked(container_id):
        state, status = load(store, container_id)
        check_transition("resume", container_id, status)
        _require_cgroup(state, "resume").thaw()


def update(store: Store, container_id: str, changes: dict[str, Any]) -> None:
    """Apply `changes` (LinuxResources JSON) on top of the container's current resources, live."""
    from minirun.cgroups.resources import merge_raw, parse_resources

    with store.locked(container_id):
        state, status = load(store, container_id)
        check_transition("update", container_id, status)
        manager = _require_cgroup(state, "update")
        linux = state.config.setdefault("linux", {})
        merged = merge_raw(linux.get("resources") or {}, changes)
        manager.set(parse_resources(merged))
        linux["resources"] = merged
        store.save(state)


def stats(store: Store, container_id: str) -> dict[str, Any]:
    state, status = load(store, container_id)
    if status == Status.STOPPED:
        raise WrongState(f"cannot read stats of container `{container_id}`: it is stopped")
    return {"type": "stats", "id": container_id, "data": _require_cgroup(state, "read stats of").stats()}


def processes(store: Store, container_id: str) -> list[int]:
    state, status = load(store, container_id)
    if status == Status.STOPPED:
        raise WrongState(f"cannot list processes of container `{container_id}`: it is stopped")
    return sorted(container_pids(state))
