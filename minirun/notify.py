"""sd_notify through the container (NOTIFY_SOCKET), as runc does it.

When `create` runs with NOTIFY_SOCKET in its environment (systemd started the engine as a
Type=notify service), the container gets a directory of the state directory bind-mounted read-only at
/run/notify and NOTIFY_SOCKET=/run/notify/notify.sock. `start` (and `run`) binds a datagram socket
there before the container's process runs, relays what the process sends to the host's NOTIFY_SOCKET
with MAINPID set to the container's pid, and returns once READY=1 has passed (or the container died).
The socket file is made by `start`, not `create`: a socket outlives nothing but its process.
"""

from __future__ import annotations

import os
import select
import socket

from minirun.errors import KernelError

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from minirun.spec.model import Config

DIR_NAME = "notify"  # in the state directory
SOCKET_NAME = "notify.sock"
IN_CONTAINER = "/run/notify"
POLL_SECONDS = 0.1  # how often the container's liveness is checked while waiting for READY=1


def host_socket() -> str:
    return os.environ.get("NOTIFY_SOCKET", "")


def prepare(config: Config, state_dir: str) -> None:
    """At create: the directory, its mount and the process's NOTIFY_SOCKET (a no-op without one)."""
    if not host_socket():
        return
    from minirun.spec.model import Mount

    directory = os.path.join(state_dir, DIR_NAME)
    os.mkdir(directory, 0o755)
    config.mounts.append(Mount(destination=IN_CONTAINER, type="bind", source=directory,
                               options=["bind", "nosuid", "noexec", "nodev", "ro"]))
    config.process.env = [e for e in config.process.env if not e.startswith("NOTIFY_SOCKET=")]
    config.process.env.append(f"NOTIFY_SOCKET={IN_CONTAINER}/{SOCKET_NAME}")


class Relay:
    """The container's end of NOTIFY_SOCKET, bound by `start` before the process runs."""

    def __init__(self, state_dir: str) -> None:
        path = os.path.join(state_dir, DIR_NAME, SOCKET_NAME)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            if os.path.lexists(path):
                os.unlink(path)  # a previous start's; nobody listens on it
            self.sock.bind(path)
        except OSError as e:
            self.sock.close()
            raise KernelError(f"NOTIFY_SOCKET: bind {path}", e.errno or 0) from None

    def forward_until_ready(self, pid: int, alive: object) -> None:
        """Relay datagrams to the host's NOTIFY_SOCKET until one says READY=1; stop early when `alive`
        (a callable) says the container is gone."""
        target = host_socket()
        try:
            while True:
                readable, _, _ = select.select([self.sock], [], [], POLL_SECONDS)
                if not readable:
                    if not alive():  # type: ignore[operator]
                        return
                    continue
                data = self.sock.recv(65536)
                lines = [line for line in data.decode(errors="replace").splitlines() if line]
                lines = [line for line in lines if not line.startswith("MAINPID=")] + [f"MAINPID={pid}"]
                _send(target, "\n".join(lines).encode())
                if "READY=1" in lines:
                    return
        finally:
            self.sock.close()


def _send(target: str, data: bytes) -> None:
    # An abstract socket is written "@name" in NOTIFY_SOCKET (sd_notify(3)).
    address = "\0" + target[1:] if target.startswith("@") else target
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.sendto(data, address)
        except OSError as e:
            raise KernelError(f"NOTIFY_SOCKET: send to {target}", e.errno or 0) from None
