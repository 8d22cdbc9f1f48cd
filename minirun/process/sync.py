"""The channel between the runtime and the container's init: one JSON object per SEQPACKET message.

Child → parent: {"type": "init", "pid": N}, {"type": "hooks"}, {"type": "created"},
{"type": "error", "msg", "exit_code"}.
Parent → child: {"type": "go"} at each point where the parent had work to do first, and
{"type": "cgroup"} once the init is in the container's cgroup (it waits for that before its cgroup
namespace and cgroup mounts, making the other mounts meanwhile). The init sends
"hooks" once its mounts are made, before pivot_root; the parent runs the prestart and createRuntime
hooks and answers {"type": "go", "state": {...}}, the state the init's own hooks read on stdin.
With a new user namespace, stage1 sends {"type": "userns"} right after unshare(CLONE_NEWUSER) and
waits for {"type": "mapped"}: the parent has written its uid_map and gid_map.
With a seccomp listener, the init sends {"type": "seccomp"} carrying the notify fd (SCM_RIGHTS) right
after loading the filter, before "created".
"""

from __future__ import annotations

import contextlib
import json
import os
import socket

from minirun.errors import ChildError, MinirunError

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

MAX_MESSAGE = 65536


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    @staticmethod
    def pair() -> tuple[Channel, Channel]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return Channel(a), Channel(b)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def send(self, kind: str, **data: Any) -> None:
        try:
            self.sock.send(json.dumps({"type": kind, **data}).encode())
        except (BrokenPipeError, ConnectionResetError):
            # The other side failed and exited while we worked; its error message is waiting for us.
            msg = self.recv()
            _checked(msg if msg is not None and msg.get("type") == "error" else None, kind)  # always raises

    def recv(self) -> dict[str, Any] | None:
        """The next message; None once the other side has closed (or reset) the channel."""
        try:
            raw = self.sock.recv(MAX_MESSAGE)
        except ConnectionResetError:
            return None
        return json.loads(raw) if raw else None

    def expect(self, kind: str) -> dict[str, Any]:
        """The next message, which must be `kind`; an error message from the child is raised here."""
        return _checked(self.recv(), kind)

    def send_fds(self, kind: str, fds: list[int], **data: Any) -> None:
        """A message carrying `fds` (SCM_RIGHTS); the receiver must take it with expect_fds."""
        socket.send_fds(self.sock, [json.dumps({"type": kind, **data}).encode()], fds)

    def expect_fds(self, kind: str) -> tuple[dict[str, Any], list[int]]:
        """Like expect, for a message sent with send_fds: the message and the fds it carried (the caller
        closes them). A plain recv would make the kernel drop them."""
        raw, fds, _, _ = socket.recv_fds(self.sock, MAX_MESSAGE, 16, socket.MSG_CMSG_CLOEXEC)
        try:
            msg = _checked(json.loads(raw) if raw else None, kind)
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        return msg, fds

    def expect_eof(self) -> None:
        """The peer closed its end (on exec: its end is close-on-exec); an error message is raised."""
        msg = self.recv()
        if msg is not None:
            _checked(msg, "the end of the channel (exec)")

    def report(self, exc: BaseException) -> None:
        """Send an exception from the child side as an error message; never raises."""
        if isinstance(exc, MinirunError):
            msg, code = str(exc), exc.exit_code
        else:
            msg, code = f"container init: {type(exc).__name__}: {exc}", 1
        with contextlib.suppress(OSError):
            self.send("error", msg=msg, exit_code=code)


def _checked(msg: dict[str, Any] | None, kind: str) -> dict[str, Any]:
    """`msg` if it is a `kind` message; an error message from the other side, or its absence (it exited),
    or another message is raised as an error naming `kind`."""
    if msg is None:
        raise MinirunError(f"container init: exited before `{kind}` (no error reported)")
    if msg.get("type") == "error":
        raise ChildError(str(msg.get("msg")), int(msg.get("exit_code", 1)))
    if msg.get("type") != kind:
        raise MinirunError(f"container init: expected `{kind}`, got `{msg.get('type')}`")
    return msg
