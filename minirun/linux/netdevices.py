"""linux.netDevices: host interfaces moved into the container's network namespace, and back.

Runs in the runtime (the parent). When a network namespace dies its physical interfaces fall back to
the host under whatever name they had, and virtual ones (dummy, veth) are destroyed with it. So the
namespace is kept alive by a bind mount of its nsfs file in the container's state directory
(`netns`) until `delete` has moved every interface back, under its original name, and unmounted it.
pyroute2 is imported here only, and this module only when a config has netDevices.
"""

from __future__ import annotations

import contextlib
import os

from minirun.errors import KernelError, MinirunError
from minirun.linux import syscalls

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from minirun.spec.extras import NetDevice

REF_NAME = "netns"


def ref_path(state_dir: str) -> str:
    return os.path.join(state_dir, REF_NAME)


def devices_from_config(raw: dict[str, Any]) -> list[NetDevice]:
    """The devices of a config already checked at create, from the JSON kept in the state."""
    from minirun.spec.extras import NetDevice

    devices = (raw.get("linux") or {}).get("netDevices") or {}
    return [NetDevice(host, (entry or {}).get("name") or host) for host, entry in devices.items()]


def move_in(init_pid: int, devices: list[NetDevice], state_dir: str) -> None:
    """Move (and rename) each device into the network namespace of `init_pid`, keeping its addresses."""
    from pyroute2 import IPRoute

    ref = ref_path(state_dir)
    _keep_namespace(f"/proc/{init_pid}/ns/net", ref)
    moved: list[NetDevice] = []
    try:
        netns = os.open(ref, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with IPRoute() as host:
                for dev in devices:
                    field = f'linux.netDevices."{dev.host_name}"'
                    index = _index(host, dev.host_name, field, "on the host")
                    addresses = [_addr_args(a) for a in host.get_addr(index=index)]
                    try:
                        host.link("set", index=index, net_ns_fd=netns, ifname=dev.name)
                    except Exception as e:
                        raise MinirunError(f"{field}: move into the container as `{dev.name}`: {e}") from None
                    moved.append(dev)
                    with _socket_in(netns) as inside:
                        new_index = _index(inside, dev.name, field, "in the container")
                        for args in addresses:
                            with contextlib.suppress(Exception):  # e.g. an IPv6 link-local the kernel re-adds
                                inside.addr("add", index=new_index, **args)
        finally:
            os.close(netns)
    except BaseException:
        with contextlib.suppress(Exception):
            move_back(moved, state_dir)
        release(state_dir)
        raise


def move_back(devices: list[NetDevice], state_dir: str) -> None:
    """Return each device to the runtime's namespace under its host name; then drop the reference."""
    ref = ref_path(state_dir)
    if not os.path.exists(ref):
        return
    errors = []
    try:
        netns = os.open(ref, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        release(state_dir)
        return
    from pyroute2 import IPRoute

    host_ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with _socket_in(netns) as inside, IPRoute() as host:
            for dev in devices:
                found = inside.link_lookup(ifname=dev.name)
                if not found:
                    continue  # never moved in, or already gone
                addresses = [_addr_args(a) for a in inside.get_addr(index=found[0])]
                try:
                    inside.link("set", index=found[0], net_ns_fd=host_ns, ifname=dev.host_name)
                except Exception as e:
                    errors.append(f'linux.netDevices."{dev.host_name}": move back from `{dev.name}`: {e}')
                    continue
                back = host.link_lookup(ifname=dev.host_name)
                for args in addresses if back else []:
                    with contextlib.suppress(Exception):
                        host.addr("add", index=back[0], **args)
    finally:
        os.close(host_ns)
        os.close(netns)
        release(state_dir)
    if errors:
        raise MinirunError("; ".join(errors))


def release(state_dir: str) -> None:
    """Unmount and remove the namespace reference; the namespace dies with its last process."""
    ref = ref_path(state_dir)
    with contextlib.suppress(KernelError):
        syscalls.umount2(ref, syscalls.const("MNT_DETACH"))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(ref)


def _keep_namespace(ns_file: str, ref: str) -> None:
    fd = os.open(ref, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    os.close(fd)
    try:
        syscalls.mount(ns_file, ref, None, syscalls.const("MS_BIND"), None)
    except BaseException:
        os.unlink(ref)
        raise


@contextlib.contextmanager
def _socket_in(netns: int) -> Iterator[Any]:
    """An IPRoute whose netlink socket lives in `netns`: a socket stays in the namespace it was made in,
    so the runtime enters it only for the socket's creation."""
    from pyroute2 import IPRoute

    own = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        syscalls.setns(netns, syscalls.const("CLONE_NEWNET"), "container network namespace")
        try:
            ipr = IPRoute()
        finally:
            syscalls.setns(own, syscalls.const("CLONE_NEWNET"), "runtime network namespace")
    finally:
        os.close(own)
    try:
        yield ipr
    finally:
        ipr.close()


def _index(ipr: Any, name: str, field: str, where: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise MinirunError(f"{field}: no interface `{name}` {where}")
    return int(found[0])


def _addr_args(msg: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"address": msg.get_attr("IFA_ADDRESS"), "prefixlen": msg["prefixlen"]}
    if msg["family"] == 2:  # AF_INET: keep the broadcast address too
        broadcast = msg.get_attr("IFA_BROADCAST")
        if broadcast:
            args["broadcast"] = broadcast
    return args
