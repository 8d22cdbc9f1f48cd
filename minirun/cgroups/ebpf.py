"""Device access control on cgroup v2: an eBPF program of type BPF_PROG_TYPE_CGROUP_DEVICE.

cgroup v2 has no devices controller. Instead the kernel runs every BPF_CGROUP_DEVICE program attached
to the cgroup (and to its ancestors) when a process opens or mknods a device node; a program returning
0 makes the operation fail with EPERM. The program sees a `struct bpf_cgroup_dev_ctx`:

    offset 0  u32 access_type   low 16 bits: BPF_DEVCG_DEV_BLOCK or BPF_DEVCG_DEV_CHAR
                                high 16 bits: BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE
    offset 4  u32 major
    offset 8  u32 minor

Rule semantics (OCI linux.resources.devices, as the v1 devices controller applies them): each access
bit the request asks for (an O_RDWR open asks for read and write) is decided by the LAST rule that
matches the device and names that bit; a bit no rule names is denied. The program walks the rules
from last to first keeping the still-undecided bits in a register: an allow rule clears the bits it
grants (all clear: allow), a deny rule that names an undecided bit denies. Falling off the end denies.

Instruction encoding (Documentation/bpf/standardization/instruction-set.rst): every instruction used
here is 64 bits, little-endian on x86 and arm64:

    bits  0-7   opcode = class (3 low bits) | source (bit 3: K = immediate, X = register) | operation
                (4 high bits); for loads: class | size | mode
    bits  8-11  dst register,  bits 12-15  src register  (swapped on big-endian hosts)
    bits 16-31  signed offset (jumps: instructions to skip after this one; loads: byte offset)
    bits 32-63  signed 32-bit immediate

The class, size, mode, source and operation values are the kernel headers' (linux/bpf_common.h,
linux/bpf.h), read through the shim; nothing here is a literal opcode.
"""

from __future__ import annotations

import errno
import os
import struct
import sys

from minirun.errors import KernelError
from minirun.linux import syscalls

TYPE_CHECKING = False  # importing typing costs start-up time; only the type checker needs it
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from minirun.cgroups.resources import DeviceRule

# Registers: r1 holds the context pointer on entry, r0 the verdict on exit. The rest are scratch
# (the program calls no helper, so nothing needs saving).
R0, R1, R2, R3, R4, R5 = range(6)
REG_TYPE, REG_ACCESS, REG_MAJOR, REG_MINOR = R2, R3, R4, R5
CTX_ACCESS_TYPE, CTX_MAJOR, CTX_MINOR = 0, 4, 8  # byte offsets in struct bpf_cgroup_dev_ctx
ACCESS_SHIFT = 16  # access_type = (access << 16) | device type
DEVICE_TYPE_MASK = (1 << ACCESS_SHIFT) - 1
# The license string only matters for helpers restricted to GPL programs; this program calls none, so
# the kernel accepts any string (checked on 6.x: "Apache-2.0" loads).
LICENSE = b"Apache-2.0"
PROGRAM_NAME = b"minirun_devices"  # shown by bpftool; at most BPF_OBJ_NAME_LEN - 1 bytes
LOG_SIZE = 1 << 20  # verifier log buffer, only used to explain a failed load


def _c(name: str) -> int:
    return syscalls.const(name)


class Insn:
    """One eBPF instruction. `off` of a jump may be a Label until `assemble` resolves it."""

    __slots__ = ("code", "dst", "imm", "off", "src")

    def __init__(self, code: int, dst: int = 0, src: int = 0, off: int | Label = 0, imm: int = 0) -> None:
        self.code, self.dst, self.src, self.off, self.imm = code, dst, src, off, imm

    def encode(self) -> bytes:
        if isinstance(self.off, Label):
            raise ValueError(f"jump to unresolved label {self.off.name}")
        regs = (self.src << 4 | self.dst) if sys.byteorder == "little" else (self.dst << 4 | self.src)
        return struct.pack("=BBhi", self.code, regs, self.off, self.imm)

    def __repr__(self) -> str:
        return f"Insn(code={self.code:#04x}, dst=r{self.dst}, src=r{self.src}, off={self.off}, imm={self.imm})"


class Label:
    """A jump target: `place` puts it before the next instruction emitted."""

    __slots__ = ("name", "position")

    def __init__(self, name: str) -> None:
        self.name = name
        self.position: int | None = None


class Assembler:
    """Builds a program instruction by instruction; forward jumps name a Label placed later."""

    __slots__ = ("insns", "used")

    def __init__(self) -> None:
        self.insns: list[Insn] = []
        self.used: set[Label] = set()  # labels some jump goes to

    def place(self, label: Label) -> None:
        label.position = len(self.insns)

    def load_u32(self, dst: int, src: int, offset: int) -> None:
        """dst = *(u32 *)(src + offset)"""
        self.insns.append(Insn(_c("BPF_LDX") | _c("BPF_MEM") | _c("BPF_W"), dst, src, offset))

    def alu32(self, op: str, dst: int, imm: int) -> None:
        """w<dst> = w<dst> <op> imm (32-bit: the upper half of the register is zeroed)."""
        self.insns.append(Insn(_c("BPF_ALU") | _c("BPF_K") | _c(op), dst, 0, 0, imm))

    def mov64(self, dst: int, imm: int) -> None:
        self.insns.append(Insn(_c("BPF_ALU64") | _c("BPF_K") | _c("BPF_MOV"), dst, 0, 0, imm))

    def jump32(self, op: str, dst: int, imm: int, target: Label) -> None:
        """if (u32)dst <op> (u32)imm goto target. 32-bit compares (kernel 5.1+) treat the u32 context
        fields exactly, whatever their top bit."""
        self.used.add(target)
        self.insns.append(Insn(_c("BPF_JMP32") | _c("BPF_K") | _c(op), dst, 0, target, imm))

    def exit(self) -> None:
        self.insns.append(Insn(_c("BPF_JMP") | _c("BPF_EXIT")))

    def resolve(self) -> list[Insn]:
        """The instructions with every label turned into a relative offset."""
        out = []
        for i, insn in enumerate(self.insns):
            off = insn.off
            if isinstance(off, Label):
                if off.position is None:
                    raise ValueError(f"label {off.name} was never placed")
                if not 0 <= off.position - i - 1 < 1 << 15:
                    raise ValueError(f"jump to {off.name} out of range")
                off = off.position - i - 1
            out.append(Insn(insn.code, insn.dst, insn.src, off, insn.imm))
        return out


def assemble(insns: Sequence[Insn]) -> bytes:
    return b"".join(insn.encode() for insn in insns)


# --- rules → program ------------------------------------------------------------------------------


def access_mask(access: str) -> int:
    """"rwm" → BPF_DEVCG_ACC_READ | WRITE | MKNOD."""
    bits = {"r": "BPF_DEVCG_ACC_READ", "w": "BPF_DEVCG_ACC_WRITE", "m": "BPF_DEVCG_ACC_MKNOD"}
    mask = 0
    for ch in access:
        if ch not in bits:
            raise ValueError(f"access {access!r}: {ch!r} is not r, w or m")
        mask |= _c(bits[ch])
    return mask


def device_type(kind: str) -> int | None:
    """"c" → BPF_DEVCG_DEV_CHAR, "b" → BPF_DEVCG_DEV_BLOCK, "a" → None (any)."""
    if kind == "a":
        return None
    if kind == "c":
        return _c("BPF_DEVCG_DEV_CHAR")
    if kind == "b":
        return _c("BPF_DEVCG_DEV_BLOCK")
    raise ValueError(f"type {kind!r} is not a, c or b")


def _u32_imm(value: int) -> int:
    """A u32 as the signed 32-bit immediate field holds it (a 32-bit compare sees the same bits)."""
    if not 0 <= value < 1 << 32:
        raise ValueError(f"{value} does not fit a device number (u32)")
    return value - (1 << 32) if value >= 1 << 31 else value


def compile_rules(rules: Sequence[DeviceRule]) -> list[Insn]:
    """The program enforcing exactly `rules` (last matching rule wins per access bit, default deny)."""
    asm = Assembler()
    deny, allow = Label("deny"), Label("allow")
    asm.load_u32(REG_TYPE, R1, CTX_ACCESS_TYPE)
    asm.alu32("BPF_AND", REG_TYPE, DEVICE_TYPE_MASK)
    asm.load_u32(REG_ACCESS, R1, CTX_ACCESS_TYPE)
    asm.alu32("BPF_RSH", REG_ACCESS, ACCESS_SHIFT)
    asm.load_u32(REG_MAJOR, R1, CTX_MAJOR)
    asm.load_u32(REG_MINOR, R1, CTX_MINOR)  # r1 (the context) is not needed after this
    for rule in reversed(rules):
        mask = access_mask(rule.access)
        kind = device_type(rule.type)
        if not mask:
            continue  # names no access bit: decides nothing
        skip = Label("next")
        if kind is not None:
            asm.jump32("BPF_JNE", REG_TYPE, kind, skip)
        if rule.major is not None:
            asm.jump32("BPF_JNE", REG_MAJOR, _u32_imm(rule.major), skip)
        if rule.minor is not None:
            asm.jump32("BPF_JNE", REG_MINOR, _u32_imm(rule.minor), skip)
        if rule.allow:
            asm.alu32("BPF_AND", REG_ACCESS, ~mask)  # these bits are granted
            asm.jump32("BPF_JEQ", REG_ACCESS, 0, allow)  # nothing left to decide
        else:
            asm.jump32("BPF_JSET", REG_ACCESS, mask, deny)  # an undecided bit is denied here
        asm.place(skip)
    asm.place(deny)
    asm.mov64(R0, 0)
    asm.exit()
    if allow in asm.used:  # the verifier refuses unreachable instructions: only when some rule jumps here
        asm.place(allow)
        asm.mov64(R0, 1)
        asm.exit()
    return asm.resolve()


def with_defaults(rules: Iterable[DeviceRule], extra: Iterable[DeviceRule] = ()) -> list[DeviceRule]:
    """The configured rules, then the runtime's default devices, then `extra` (the linux.devices nodes):
    the last two come last so that, last match winning, they are always allowed."""
    from minirun.cgroups.resources import DEFAULT_DEVICE_RULES

    return [*rules, *DEFAULT_DEVICE_RULES, *extra]


# --- bpf(2) ---------------------------------------------------------------------------------------
# union bpf_attr members are laid out by hand with struct ("=": native order, no padding added; the
# kernel's __aligned_u64 members sit at 8-byte offsets already). The uapi layout is a stable ABI, and
# the kernel zero-fills any member newer than the size passed.


def _bpf(cmd: str, attr: bytearray, what: str) -> int:
    ffi = syscalls.shim().ffi
    buf = ffi.from_buffer(attr)  # the kernel writes outputs (query counts) back into it
    rc = int(syscalls.shim().lib.mr_bpf(_c(cmd), buf, len(attr)))
    if rc < 0:
        raise KernelError(what, -rc)
    return rc


def _address(buf: bytearray | bytes) -> tuple[object, int]:
    """A cffi view of `buf` (keep it alive across the call) and its address for a u64 attr member."""
    ffi = syscalls.shim().ffi
    view = ffi.from_buffer(buf)
    return view, int(ffi.cast("uintptr_t", view))


class ProgramLoadError(KernelError):
    """BPF_PROG_LOAD failed; the message carries the verifier's explanation."""

    def __init__(self, operation: str, err: int, log: str) -> None:
        super().__init__(operation, err)
        self.log = log
        if log:
            # One line: the verifier log is many; its last lines say what was refused (the closing
            # "processed N insns" statistics say nothing about why).
            lines = [line.strip() for line in log.splitlines() if line.strip()]
            tail = "; ".join([line for line in lines if not line.startswith("processed ")][-6:])
            self.args = (f"{self.args[0]} (verifier: {tail})",)


def load_program(insns: Sequence[Insn], what: str = "devices") -> int:
    """BPF_PROG_LOAD → the program's fd (close-on-exec). Loads without a log first (the log slows the
    verifier down and can itself fail with ENOSPC), and again with one to explain a failure."""
    code = assemble(insns)
    code_view, code_addr = _address(code)
    license_buf = LICENSE + b"\0"
    license_view, license_addr = _address(license_buf)
    name = PROGRAM_NAME[: _c("BPF_OBJ_NAME_LEN") - 1]

    def attempt(log: bytearray | None) -> int:
        log_view, log_addr = _address(log) if log is not None else (None, 0)
        attr = bytearray(struct.pack(
            "=IIQQIIQII16sII",
            _c("BPF_PROG_TYPE_CGROUP_DEVICE"),  # prog_type
            len(insns),  # insn_cnt
            code_addr,  # insns
            license_addr,  # license
            1 if log is not None else 0,  # log_level
            len(log) if log is not None else 0,  # log_size
            log_addr,  # log_buf
            0,  # kern_version
            0,  # prog_flags
            name,  # prog_name
            0,  # prog_ifindex
            _c("BPF_CGROUP_DEVICE"),  # expected_attach_type
        ))
        try:
            return _bpf("BPF_PROG_LOAD", attr, f"{what}: load the device eBPF program (bpf BPF_PROG_LOAD)")
        finally:
            del log_view

    try:
        return attempt(None)
    except KernelError as first:
        if first.errno in (errno.EPERM, errno.ENOSYS):
            raise  # no privilege or no bpf(2): the verifier has nothing to say
        log = bytearray(LOG_SIZE)
        try:
            fd = attempt(log)
        except KernelError as second:
            text = bytes(log).split(b"\0", 1)[0].decode(errors="replace")
            raise ProgramLoadError(second.operation, second.errno, text) from None
        return fd  # the second attempt passed (a transient failure such as EAGAIN)
    finally:
        del code_view, license_view


def attached_programs(cgroup_fd: int, what: str = "devices") -> list[int]:
    """Ids of the BPF_CGROUP_DEVICE programs attached directly to the cgroup (not its ancestors')."""
    capacity = 8
    while True:
        ids = bytearray(4 * capacity)
        view, addr = _address(ids)
        # target_fd, attach_type, query_flags, attach_flags (out), prog_ids, prog_cnt (in/out), pad,
        # prog_attach_flags
        attr = bytearray(struct.pack("=IIIIQIIQ", cgroup_fd, _c("BPF_CGROUP_DEVICE"), 0, 0, addr, capacity, 0, 0))
        try:
            _bpf("BPF_PROG_QUERY", attr, f"{what}: list the cgroup's device programs (bpf BPF_PROG_QUERY)")
        except KernelError as e:
            if e.errno != errno.ENOSPC:
                raise
            capacity = max(capacity * 2, struct.unpack_from("=I", attr, 24)[0])
            continue
        finally:
            del view
        count = struct.unpack_from("=I", attr, 24)[0]
        return list(struct.unpack_from(f"={count}I", ids))


def program_id(prog_fd: int) -> int:
    """The kernel's id of a loaded program (struct bpf_prog_info: type u32, then id u32)."""
    info = bytearray(8)
    view, addr = _address(info)
    attr = bytearray(struct.pack("=IIQ", prog_fd, len(info), addr))
    try:
        _bpf("BPF_OBJ_GET_INFO_BY_FD", attr, "devices: read the device program's id (bpf BPF_OBJ_GET_INFO_BY_FD)")
    finally:
        del view
    return int(struct.unpack_from("=I", info, 4)[0])


def _program_fd(prog_id: int, what: str) -> int | None:
    """An fd for program `prog_id`, None when it is gone."""
    attr = bytearray(struct.pack("=III", prog_id, 0, 0))  # prog_id, next_id, open_flags
    try:
        return _bpf("BPF_PROG_GET_FD_BY_ID", attr, f"{what}: open device program {prog_id} (bpf BPF_PROG_GET_FD_BY_ID)")
    except KernelError as e:
        if e.errno == errno.ENOENT:
            return None
        raise


def _attach(cgroup_fd: int, prog_fd: int, cgroup_dir: str, what: str) -> None:
    # target_fd, attach_bpf_fd, attach_type, attach_flags, replace_bpf_fd. ALLOW_MULTI: programs of the
    # same cgroup run side by side (all must allow), which lets the new one go in before the old leaves.
    attr = bytearray(struct.pack("=IIIII", cgroup_fd, prog_fd, _c("BPF_CGROUP_DEVICE"), _c("BPF_F_ALLOW_MULTI"), 0))
    _bpf("BPF_PROG_ATTACH", attr, f"{what}: attach the device program to {cgroup_dir} (bpf BPF_PROG_ATTACH)")


def _detach(cgroup_fd: int, prog_fd: int, cgroup_dir: str, prog_id: int, what: str) -> None:
    attr = bytearray(struct.pack("=IIIII", cgroup_fd, prog_fd, _c("BPF_CGROUP_DEVICE"), 0, 0))
    try:
        _bpf("BPF_PROG_DETACH", attr,
             f"{what}: detach device program {prog_id} from {cgroup_dir} (bpf BPF_PROG_DETACH)")
    except KernelError as e:
        if e.errno != errno.ENOENT:  # detached meanwhile
            raise


def _open_cgroup(cgroup_dir: str, what: str) -> int:
    try:
        return os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise KernelError(f"{what}: open {cgroup_dir}", e.errno or errno.EIO) from None


def detach_programs(cgroup_fd: int, prog_ids: Iterable[int], cgroup_dir: str, what: str = "devices") -> None:
    for prog_id in prog_ids:
        fd = _program_fd(prog_id, what)
        if fd is None:
            continue
        try:
            _detach(cgroup_fd, fd, cgroup_dir, prog_id, what)
        finally:
            os.close(fd)


def install(cgroup_dir: str, rules: Sequence[DeviceRule], what: str = "linux.resources.devices") -> int:
    """Make `rules` (exactly these: see `with_defaults`) the device policy of the cgroup at `cgroup_dir`.

    The new program is attached before the ones it replaces are detached, so there is no moment without
    a policy; while both are attached a device needs both to allow it, so there is no moment with a
    looser one either. Replaced are the device programs attached directly to this cgroup before the
    call: the container's cgroup is minirun's, so those are the previous policy. Returns the new
    program's id.
    """
    program = compile_rules(rules)
    cgroup_fd = _open_cgroup(cgroup_dir, what)
    try:
        before = attached_programs(cgroup_fd, what)
        prog_fd = load_program(program, what)
        try:
            _attach(cgroup_fd, prog_fd, cgroup_dir, what)
            new_id = program_id(prog_fd)
        finally:
            os.close(prog_fd)  # once attached, the cgroup holds the program
        detach_programs(cgroup_fd, [i for i in before if i != new_id], cgroup_dir, what)
        return new_id
    finally:
        os.close(cgroup_fd)


def detach_all(cgroup_dir: str, what: str = "devices") -> None:
    """Remove every device program attached directly to the cgroup (devices become unrestricted by it)."""
    cgroup_fd = _open_cgroup(cgroup_dir, what)
    try:
        detach_programs(cgroup_fd, attached_programs(cgroup_fd, what), cgroup_dir, what)
    finally:
        os.close(cgroup_fd)


def attached(cgroup_dir: str, what: str = "devices") -> list[int]:
    """Ids of the device programs attached directly to the cgroup at `cgroup_dir`."""
    cgroup_fd = _open_cgroup(cgroup_dir, what)
    try:
        return attached_programs(cgroup_fd, what)
    finally:
        os.close(cgroup_fd)
