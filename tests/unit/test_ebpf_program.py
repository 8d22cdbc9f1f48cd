"""The cgroup v2 device program, without loading it: its encoding against the eBPF instruction-set
spec, its shape, and its decisions, computed by a small interpreter written here from the spec.

The numbers below (opcodes 0x61, 0xb7...) are the instruction-set document's
(Documentation/bpf/standardization/instruction-set.rst), written out on purpose: ebpf.py builds its
opcodes from the kernel headers' names, and these golden values check that the names were combined
right. The interpreter decodes the raw bytes with the same document's field layout.
"""

from __future__ import annotations

import errno
import json
import os
import random
import struct
import sys
from pathlib import Path

import pytest

from minirun.cgroups import ebpf
from minirun.cgroups.resources import DEFAULT_DEVICE_RULES, DeviceRule
from minirun.linux.syscalls import const

# --- a reference interpreter ------------------------------------------------------------------------

CLASS_LDX, CLASS_ALU, CLASS_JMP, CLASS_JMP32, CLASS_ALU64 = 0x01, 0x04, 0x05, 0x06, 0x07
SIZE_W, MODE_MEM, SRC_K = 0x00, 0x60, 0x00
OP_AND, OP_RSH, OP_MOV = 0x50, 0x70, 0xB0
OP_JA, OP_JEQ, OP_JSET, OP_JNE, OP_EXIT = 0x00, 0x10, 0x40, 0x50, 0x90
U32, U64 = (1 << 32) - 1, (1 << 64) - 1
CTX = "ctx"  # r1 on entry: the context pointer, only ever loaded from

READ, WRITE, MKNOD = 2, 4, 1  # BPF_DEVCG_ACC_* (uapi linux/bpf.h)
BLOCK, CHAR = 1, 2  # BPF_DEVCG_DEV_*
ACCESS_BITS = {"r": READ, "w": WRITE, "m": MKNOD}


def decode(code: bytes) -> list[tuple[int, int, int, int, int]]:
    assert len(code) % 8 == 0
    out = []
    for i in range(0, len(code), 8):
        opcode, regs, off, imm = struct.unpack_from("=BBhi", code, i)
        dst, src = (regs & 0xF, regs >> 4) if sys.byteorder == "little" else (regs >> 4, regs & 0xF)
        out.append((opcode, dst, src, off, imm))
    return out


def check_structure(insns: list[tuple[int, int, int, int, int]]) -> None:
    """What the verifier's first pass insists on: jumps stay inside, the last instruction ends the
    program, and every instruction is reachable. Our programs jump only forward (no loops)."""
    n = len(insns)
    assert n and insns[-1][0] == CLASS_JMP | OP_EXIT
    reachable = {0}
    for pc in range(n):
        if pc not in reachable:
            continue
        opcode, _, _, off, _ = insns[pc]
        cls, op = opcode & 0x07, opcode & 0xF0
        if cls in (CLASS_JMP, CLASS_JMP32) and op == OP_EXIT:
            continue
        if cls in (CLASS_JMP, CLASS_JMP32):
            assert off >= 0, f"backward jump at {pc}"
            assert pc + 1 + off < n, f"jump out of the program at {pc}"
            reachable.add(pc + 1 + off)
            if op == OP_JA:
                continue
        reachable.add(pc + 1)
    assert reachable == set(range(n)), f"unreachable instructions {sorted(set(range(n)) - reachable)}"


def run(code: bytes, kind: int, major: int, minor: int, access: int) -> int:
    """Execute the program on one request; returns r0."""
    ctx = struct.pack("=III", (access << 16) | kind, major, minor)
    insns = decode(code)
    check_structure(insns)
    regs: list[int | str] = [0] * 11
    regs[1] = CTX
    pc = 0
    for _ in range(10_000):
        opcode, dst, src, off, imm = insns[pc]
        cls, op = opcode & 0x07, opcode & 0xF0
        pc += 1
        if cls == CLASS_LDX:
            assert opcode & 0x18 == SIZE_W and opcode & 0xE0 == MODE_MEM
            assert regs[src] == CTX and off in (0, 4, 8)
            regs[dst] = struct.unpack_from("=I", ctx, off)[0]
        elif cls in (CLASS_ALU, CLASS_ALU64):
            assert opcode & 0x08 == SRC_K
            value = regs[dst]
            assert op == OP_MOV or isinstance(value, int)
            operand = imm & U32 if cls == CLASS_ALU else imm & U64
            mask = U32 if cls == CLASS_ALU else U64
            if op == OP_MOV:
                result = operand
            elif op == OP_AND:
                assert isinstance(value, int)
                result = value & operand
            elif op == OP_RSH:
                assert isinstance(value, int)
                result = (value & mask) >> operand
            else:
                raise AssertionError(f"unexpected alu op {op:#x}")
            regs[dst] = result & mask
        elif cls in (CLASS_JMP, CLASS_JMP32):
            if op == OP_EXIT:
                assert cls == CLASS_JMP
                r0 = regs[0]
                assert isinstance(r0, int)
                return r0
            if op == OP_JA:
                pc += off
                continue
            assert opcode & 0x08 == SRC_K
            value = regs[dst]
            assert isinstance(value, int)
            if cls == CLASS_JMP32:
                left, right = value & U32, imm & U32
            else:
                left, right = value, imm & U64
            taken = {OP_JEQ: left == right, OP_JNE: left != right, OP_JSET: bool(left & right)}[op]
            if taken:
                pc += off
        else:
            raise AssertionError(f"unexpected class {cls}")
    raise AssertionError("the program did not end")


def allowed(rules: list[DeviceRule], kind: str, major: int, minor: int, access: str) -> bool:
    code = ebpf.assemble(ebpf.compile_rules(rules))
    bits = 0
    for ch in access:
        bits |= ACCESS_BITS[ch]
    return run(code, BLOCK if kind == "b" else CHAR, major, minor, bits) == 1


def reference(rules: list[DeviceRule], kind: str, major: int, minor: int, access: str) -> bool:
    """The semantics, stated directly: each requested bit is decided by the last rule matching the
    device that names it; a bit no rule names is denied."""
    for bit in access:
        verdict = False
        for rule in rules:
            if (rule.type in ("a", kind) and rule.major in (None, major) and rule.minor in (None, minor)
                    and bit in rule.access):
                verdict = rule.allow
        if not verdict:
            return False
    return True


def rule(text: str) -> DeviceRule:
    """"allow c 1:3 rw" / "deny a *:* rwm"."""
    verdict, kind, numbers, access = text.split()
    major, minor = numbers.split(":")
    return DeviceRule(verdict == "allow", kind, None if major == "*" else int(major),
                      None if minor == "*" else int(minor), access)


# --- encoding ----------------------------------------------------------------------------------------


def test_header_constants_are_the_uapi_values() -> None:
    assert [const(n) for n in ("BPF_DEVCG_ACC_MKNOD", "BPF_DEVCG_ACC_READ", "BPF_DEVCG_ACC_WRITE")] == [1, 2, 4]
    assert [const(n) for n in ("BPF_DEVCG_DEV_BLOCK", "BPF_DEVCG_DEV_CHAR")] == [1, 2]


def test_instruction_bytes() -> None:
    # ldxw r2, [r1+4]: opcode, src<<4|dst (dst<<4|src on big-endian hosts), off (s16), imm (s32)
    regs = 0x12 if sys.byteorder == "little" else 0x21
    assert ebpf.Insn(0x61, 2, 1, 4, 0).encode() == bytes([0x61, regs]) + struct.pack("=hi", 4, 0)
    assert ebpf.Insn(0x54, 3, 0, 0, -7).encode()[4:] == struct.pack("=i", -7)
    assert len(ebpf.Insn(0x95).encode()) == 8


def test_assembler_opcodes_match_the_spec() -> None:
    asm = ebpf.Assembler()
    target = ebpf.Label("t")
    asm.load_u32(2, 1, 8)
    asm.alu32("BPF_AND", 2, 0xFFFF)
    asm.alu32("BPF_RSH", 3, 16)
    asm.mov64(0, 1)
    asm.jump32("BPF_JNE", 4, 7, target)
    asm.jump32("BPF_JEQ", 4, 7, target)
    asm.jump32("BPF_JSET", 4, 7, target)
    asm.place(target)
    asm.exit()
    got = [(i.code, i.dst, i.src, i.off, i.imm) for i in asm.resolve()]
    assert got == [
        (0x61, 2, 1, 8, 0),  # LDX | MEM | W
        (0x54, 2, 0, 0, 0xFFFF),  # ALU | K | AND
        (0x74, 3, 0, 0, 16),  # ALU | K | RSH
        (0xB7, 0, 0, 0, 1),  # ALU64 | K | MOV
        (0x56, 4, 0, 2, 7),  # JMP32 | K | JNE, to the exit two instructions on
        (0x16, 4, 0, 1, 7),  # JMP32 | K | JEQ
        (0x46, 4, 0, 0, 7),  # JMP32 | K | JSET
        (0x95, 0, 0, 0, 0),  # JMP | EXIT
    ]


def test_unplaced_label_is_an_error() -> None:
    asm = ebpf.Assembler()
    asm.jump32("BPF_JEQ", 1, 0, ebpf.Label("nowhere"))
    asm.exit()
    with pytest.raises(ValueError, match="never placed"):
        asm.resolve()


# --- the compiled program -----------------------------------------------------------------------------


def test_golden_deny_all_then_allow_null_read_write() -> None:
    program = ebpf.compile_rules([rule("deny a *:* rwm"), rule("allow c 1:3 rw")])
    assert [(i.code, i.dst, i.src, i.off, i.imm) for i in program] == [
        (0x61, 2, 1, 0, 0),  # r2 = access_type
        (0x54, 2, 0, 0, 0xFFFF),  # w2 &= 0xffff: the device type
        (0x61, 3, 1, 0, 0),  # r3 = access_type
        (0x74, 3, 0, 0, 16),  # w3 >>= 16: the access bits still undecided
        (0x61, 4, 1, 4, 0),  # r4 = major
        (0x61, 5, 1, 8, 0),  # r5 = minor
        # last rule first: allow c 1:3 rw
        (0x56, 2, 0, 4, CHAR),  # type != c: next rule
        (0x56, 4, 0, 3, 1),  # major != 1: next rule
        (0x56, 5, 0, 2, 3),  # minor != 3: next rule
        (0x54, 3, 0, 0, ~(READ | WRITE)),  # r and w are granted
        (0x16, 3, 0, 3, 0),  # nothing undecided: allow
        # deny a *:* rwm
        (0x46, 3, 0, 0, READ | WRITE | MKNOD),  # an undecided bit: deny
        (0xB7, 0, 0, 0, 0), (0x95, 0, 0, 0, 0),  # deny
        (0xB7, 0, 0, 0, 1), (0x95, 0, 0, 0, 0),  # allow
    ]


@pytest.mark.parametrize(("rules", "count"), [
    ([], 8),  # prologue 6 + deny 2; no allow exit, which nothing would reach
    (["deny a *:* rwm"], 6 + 1 + 2),
    (["allow a *:* rwm"], 6 + 2 + 4),
    (["allow c 1:3 rwm"], 6 + 5 + 4),
    (["allow c 136:* rwm"], 6 + 4 + 4),
    (["deny a *:* rwm", "allow b 8:0 r", "deny b 8:0 w"], 6 + 1 + 5 + 4 + 4),
])
def test_instruction_counts(rules: list[str], count: int) -> None:
    program = ebpf.compile_rules([rule(r) for r in rules])
    assert len(program) == count
    check_structure(decode(ebpf.assemble(program)))


def test_defaults_program_is_well_formed() -> None:
    program = ebpf.compile_rules(ebpf.with_defaults([rule("deny a *:* rwm")]))
    # 7 exact devices (3 checks + 2) and 136:* (2 checks + 2), one deny rule, prologue and both exits.
    assert len(program) == 6 + 7 * 5 + 4 + 1 + 4
    check_structure(decode(ebpf.assemble(program)))


def test_empty_access_rule_decides_nothing() -> None:
    assert len(ebpf.compile_rules([DeviceRule(True, "c", 1, 3, "")])) == 8


@pytest.mark.parametrize(("bad", "message"), [
    (DeviceRule(True, "x", 1, 3, "r"), "is not a, c or b"),
    (DeviceRule(True, "c", 1, 3, "rq"), "is not r, w or m"),
    (DeviceRule(True, "c", 1 << 32, 3, "r"), "does not fit"),
    (DeviceRule(True, "c", 1, -2, "r"), "does not fit"),
])
def test_bad_rules(bad: DeviceRule, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ebpf.compile_rules([bad])


# --- decisions ----------------------------------------------------------------------------------------


def test_deny_all_allow_null_read_write() -> None:
    rules = [rule("deny a *:* rwm"), rule("allow c 1:3 rw")]
    assert allowed(rules, "c", 1, 3, "r")
    assert allowed(rules, "c", 1, 3, "w")
    assert allowed(rules, "c", 1, 3, "rw")
    assert not allowed(rules, "c", 1, 5, "r")  # zero
    assert not allowed(rules, "c", 1, 3, "m")  # no mknod in the rule
    assert not allowed(rules, "c", 1, 3, "rm")
    assert not allowed(rules, "b", 1, 3, "r")  # a block device 1:3 is another device


def test_no_rules_deny_everything() -> None:
    for kind, major, minor, access in (("c", 1, 3, "r"), ("b", 8, 0, "w"), ("c", 0, 0, "m")):
        assert not allowed([], kind, major, minor, access)


def test_allow_all() -> None:
    rules = [rule("allow a *:* rwm")]
    assert allowed(rules, "c", 1, 3, "rwm")
    assert allowed(rules, "b", 259, 7, "rw")


def test_last_match_wins() -> None:
    rules = [rule("allow c 1:3 rwm"), rule("deny c 1:3 w")]
    assert allowed(rules, "c", 1, 3, "r")
    assert allowed(rules, "c", 1, 3, "m")
    assert not allowed(rules, "c", 1, 3, "w")
    assert not allowed(rules, "c", 1, 3, "rw")  # O_RDWR asks for w too
    rules.reverse()  # deny first, then allow: the allow decides
    assert allowed(rules, "c", 1, 3, "rw")


def test_allow_after_deny_all_and_deny_all_after_allow() -> None:
    assert allowed([rule("deny a *:* rwm"), rule("allow c 1:5 r")], "c", 1, 5, "r")
    assert not allowed([rule("allow c 1:5 r"), rule("deny a *:* rwm")], "c", 1, 5, "r")


def test_access_bits_from_several_rules_add_up() -> None:
    rules = [rule("allow c 1:3 r"), rule("allow c 1:3 w")]
    assert allowed(rules, "c", 1, 3, "rw")
    assert not allowed(rules, "c", 1, 3, "rwm")


def test_wildcards() -> None:
    rules = [rule("allow c *:* m"), rule("allow b 8:* r"), rule("allow a 10:200 rw")]
    assert allowed(rules, "c", 4, 64, "m")
    assert not allowed(rules, "b", 4, 64, "m")
    assert allowed(rules, "b", 8, 0, "r") and allowed(rules, "b", 8, 17, "r")
    assert not allowed(rules, "b", 9, 0, "r")
    assert not allowed(rules, "b", 8, 0, "w")
    assert allowed(rules, "c", 10, 200, "rw") and allowed(rules, "b", 10, 200, "rw")
    assert not allowed(rules, "c", 10, 201, "r")
    assert allowed([rule("allow c *:3 r")], "c", 7, 3, "r")


def test_large_device_numbers_compare_as_u32() -> None:
    big = DeviceRule(True, "c", 4095, (1 << 32) - 1, "r")
    assert allowed([big], "c", 4095, (1 << 32) - 1, "r")
    assert not allowed([big], "c", 4095, (1 << 31) - 1, "r")


def test_unknown_access_bits_are_denied() -> None:
    code = ebpf.assemble(ebpf.compile_rules([rule("allow a *:* rwm")]))
    assert run(code, CHAR, 1, 3, READ) == 1
    assert run(code, CHAR, 1, 3, READ | 8) == 0


def test_defaults_are_always_allowed() -> None:
    rules = ebpf.with_defaults([rule("deny a *:* rwm"), rule("deny c 1:3 rwm")], [rule("allow b 7:0 rwm")])
    for d in DEFAULT_DEVICE_RULES:
        assert d.major is not None
        assert allowed(rules, d.type, d.major, d.minor if d.minor is not None else 42, "rwm")
    assert allowed(rules, "c", 1, 3, "rw")  # the defaults come after the configured deny
    assert allowed(rules, "b", 7, 0, "rwm")  # an extra (linux.devices) rule
    assert not allowed(rules, "c", 1, 4, "r")
    assert not allowed(rules, "c", 5, 1, "r")  # /dev/console is not a default
    assert not allowed(rules, "b", 1, 3, "r")


def test_random_rule_lists_agree_with_the_reference() -> None:
    rng = random.Random(20240611)
    kinds, majors, minors = ["a", "c", "b"], [None, 1, 5], [None, 3, 7]
    accesses = ["r", "w", "m", "rw", "rm", "wm", "rwm"]
    for _ in range(300):
        rules = [DeviceRule(rng.random() < 0.5, rng.choice(kinds), rng.choice(majors), rng.choice(minors),
                            rng.choice(accesses)) for _ in range(rng.randrange(0, 7))]
        code = ebpf.assemble(ebpf.compile_rules(rules))
        for _ in range(10):
            kind, major, minor = rng.choice("cb"), rng.choice([1, 5, 9]), rng.choice([3, 7, 8])
            access = rng.choice(accesses)
            bits = sum(ACCESS_BITS[ch] for ch in access)
            got = run(code, BLOCK if kind == "b" else CHAR, major, minor, bits) == 1
            assert got == reference(rules, kind, major, minor, access), (rules, kind, major, minor, access)


# =====================================================================================================
# V2Manager against a fake cgroup2 tree (a tmp directory). It is in this file because the v2 driver's
# unit tests were scoped together with the device program; the fake kernel below is small on purpose:
# - mkdir of a cgroup creates the interface files of the core and of the controllers its parent enabled;
# - cgroup.subtree_control takes "+ctrl" tokens; cgroup.procs takes a pid; cgroup.freeze updates the
#   "frozen" line of cgroup.events at once; cgroup.kill empties cgroup.procs;
# - every other write replaces the file's content, and is recorded in order.
# =====================================================================================================

from minirun.cgroups import base as cgroup_base  # noqa: E402
from minirun.cgroups import convert, v2  # noqa: E402
from minirun.cgroups.resources import parse_resources  # noqa: E402
from minirun.errors import ConfigError, KernelError, MinirunError  # noqa: E402
from minirun.log import logger  # noqa: E402

CORE_FILES = {"cgroup.type": "domain", "cgroup.procs": "", "cgroup.subtree_control": "", "cgroup.freeze": "0",
              "cgroup.events": "populated 0\nfrozen 0\n", "cgroup.kill": "", "cpu.stat": "usage_usec 0\n"}
CONTROLLER_FILES = {
    "memory": {"memory.max": "max", "memory.high": "max", "memory.low": "0", "memory.swap.max": "max",
               "memory.current": "0", "memory.events": "max 0\noom_kill 0\n", "memory.stat": "",
               "memory.swap.current": "0"},
    "cpu": {"cpu.weight": "100", "cpu.max": "max 100000", "cpu.max.burst": "0", "cpu.idle": "0"},
    "cpuset": {"cpuset.cpus": "", "cpuset.mems": ""},
    "pids": {"pids.max": "max", "pids.current": "0"},
    "io": {"io.max": "", "io.weight": "default 100", "io.bfq.weight": "default 100", "io.stat": ""},
    "hugetlb": {"hugetlb.2MB.max": "max", "hugetlb.2MB.current": "0", "hugetlb.2MB.events": "max 0\n"},
}


class FakeTree:
    def __init__(self, root: Path, controllers: str = "cpu cpuset io memory pids hugetlb") -> None:
        self.root = root
        self.writes: list[tuple[str, str]] = []
        root.mkdir(exist_ok=True)
        for name, text in (("cgroup.controllers", controllers), ("cgroup.subtree_control", ""),
                           ("cgroup.procs", "1\n")):  # the root: no cgroup.type, and it may hold processes
            (root / name).write_text(text)

    def populate(self, d: str) -> None:
        """What the kernel shows in a new cgroup directory."""
        path = Path(d)
        offered = (path.parent / "cgroup.subtree_control").read_text().split()
        (path / "cgroup.controllers").write_text(" ".join(offered))
        for name, text in CORE_FILES.items():
            (path / name).write_text(text)
        for controller in offered:
            for name, text in CONTROLLER_FILES.get(controller, {}).items():
                (path / name).write_text(text)

    def write(self, path: str, value: str, what: str) -> None:
        if not os.path.exists(path):
            cgroup_base.write_file(path, value, what)  # the real helper's error for a missing file
        self.writes.append((os.path.relpath(path, self.root), value))
        name, file = os.path.basename(path), Path(path)
        if name == "cgroup.subtree_control":
            have = file.read_text().split()
            have += [t[1:] for t in value.split() if t.startswith("+") and t[1:] not in have]
            file.write_text(" ".join(have))
        elif name == "cgroup.procs":
            file.write_text(file.read_text() + value + "\n")
        elif name == "cgroup.freeze":
            file.write_text(value)
            (file.parent / "cgroup.events").write_text(f"populated 1\nfrozen {value}\n")
        elif name == "cgroup.kill":
            (file.parent / "cgroup.procs").write_text("")
        else:
            file.write_text(value)

    def wrote(self, prefix: str = "") -> list[tuple[str, str]]:
        return [(p, v) for p, v in self.writes if p.startswith(prefix)]


class FakeV2Manager(v2.V2Manager):
    tree: FakeTree
    FREEZE_TIMEOUT = 0.05
    RMDIR_TIMEOUT = 0.05

    def _make_dir(self, d: str) -> None:
        fresh = not os.path.isdir(d)
        super()._make_dir(d)
        if fresh:
            self.tree.populate(d)

    def _rmdir(self, d: str, must: bool) -> None:
        # cgroupfs removes a directory with its interface files in it; a real directory needs them gone.
        if os.path.isdir(d) and not [e for e in os.scandir(d) if e.is_dir()]:
            for entry in os.scandir(d):
                os.unlink(entry.path)
        super()._rmdir(d, must)


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTree:
    fake = FakeTree(tmp_path / "cgroup")
    monkeypatch.setattr("minirun.cgroups.v2.write_file", fake.write)
    monkeypatch.setattr(FakeV2Manager, "tree", fake, raising=False)
    return fake


def own_cgroup_file(tmp_path: Path, cgroup: str) -> str:
    path = tmp_path / "proc-self-cgroup"
    path.write_text(f"0::{cgroup}\n")
    return str(path)


def manager(tree: FakeTree, path: str = "minirun/c1", own: str = "/") -> FakeV2Manager:
    proc = own_cgroup_file(tree.root.parent, own)
    return FakeV2Manager(path, mount_point=str(tree.root), mount_root="/", proc_cgroup=proc)


def applied(tree: FakeTree, path: str = "minirun/c1") -> FakeV2Manager:
    m = manager(tree, path)
    m.apply(4242)
    tree.writes.clear()
    return m


def test_v2_apply_creates_the_path_and_enables_controllers_on_the_way(tree: FakeTree) -> None:
    (tree.root / "cgroup.controllers").write_text("cpu io memory pids misc")
    m = manager(tree)
    assert m.dir == str(tree.root / "minirun" / "c1") and m.top == str(tree.root)
    m.apply(4242)
    assert tree.writes == [
        ("cgroup.subtree_control", "+cpu +io +memory +pids"),  # offered and wanted (not misc)
        ("minirun/cgroup.subtree_control", "+cpu +io +memory +pids"),
        ("minirun/c1/cgroup.procs", "4242"),  # the leaf keeps no controllers for children: it holds the pid
    ]
    assert m.created == [str(tree.root / "minirun"), m.dir]
    assert m.applied


def test_v2_apply_enables_nothing_already_enabled(tree: FakeTree) -> None:
    applied(tree, "minirun/c1")
    m = manager(tree, "minirun/c2")
    m.apply(4343)
    assert tree.wrote() == [("minirun/c2/cgroup.procs", "4343")]
    assert m.created == [m.dir]  # minirun/ was there


def test_v2_relative_path_goes_below_the_nearest_ancestor_that_can_delegate(tree: FakeTree) -> None:
    """minirun's own cgroup holds processes (minirun at least), so under the no-internal-process rule it
    cannot pass controllers on: the container goes below the slice above it, which holds none."""
    scope = tree.root / "user.slice" / "session-1.scope"
    scope.mkdir(parents=True)
    tree.populate(str(scope.parent))
    tree.populate(str(scope))
    (scope / "cgroup.procs").write_text("777\n")  # minirun's shell lives here
    m = manager(tree, own="/user.slice/session-1.scope")
    assert m.top == str(scope.parent) and m.dir == str(scope.parent / "minirun" / "c1")
    m.apply(4242)
    assert ("user.slice/minirun/c1/cgroup.procs", "4242") in tree.wrote()


def test_v2_no_internal_process_rule_names_the_ancestor(tree: FakeTree) -> None:
    """An absolute path through a cgroup that holds processes cannot get controllers: a clear error."""
    (tree.root / "cgroup.subtree_control").write_text("memory pids")
    busy = tree.root / "busy"
    busy.mkdir()
    tree.populate(str(busy))
    (busy / "cgroup.procs").write_text("777\n")
    m = manager(tree, "/busy/box", own="/elsewhere")
    with pytest.raises(KernelError) as info:
        m.apply(4242)
    message = str(info.value)
    assert str(busy) in message and "no-internal-process" in message and "linux.cgroupsPath" in message
    assert "+memory +pids" in message and "\n" not in message
    assert m.created == [] and not (busy / "box").exists()


def test_v2_a_busy_ancestor_that_needs_nothing_enabled_is_fine(tree: FakeTree) -> None:
    (tree.root / "cgroup.controllers").write_text("memory")
    (tree.root / "cgroup.subtree_control").write_text("memory")
    scope = tree.root / "work.scope"
    scope.mkdir()
    tree.populate(str(scope))
    (scope / "cgroup.subtree_control").write_text("memory")
    (scope / "cgroup.procs").write_text("777\n")
    # The container goes two levels below: `minirun` must enable memory too, and holds no process.
    m = manager(tree, "/work.scope/minirun/c1", own="/elsewhere")
    (scope / "minirun").mkdir()
    tree.populate(str(scope / "minirun"))
    m.apply(4242)
    assert tree.wrote() == [("work.scope/minirun/cgroup.subtree_control", "+memory"),
                            ("work.scope/minirun/c1/cgroup.procs", "4242")]


def test_v2_absolute_path_starts_at_the_root(tree: FakeTree) -> None:
    m = manager(tree, "/machine/box", own="/somewhere")
    assert m.top == str(tree.root) and m.dir == str(tree.root / "machine" / "box")


def test_v2_apply_refuses_a_cgroup_with_processes(tree: FakeTree) -> None:
    (tree.root / "taken").mkdir()
    tree.populate(str(tree.root / "taken"))
    (tree.root / "taken" / "cgroup.procs").write_text("99\n")
    with pytest.raises(ConfigError, match="already holds processes"):
        manager(tree, "taken").apply(4242)


def test_v2_memory(tree: FakeTree, monkeypatch: pytest.MonkeyPatch) -> None:
    warnings: list[str] = []
    monkeypatch.setattr(logger, "warning", warnings.append)
    m = applied(tree)
    m.set(parse_resources({"memory": {"limit": 1 << 30, "swap": 3 << 30, "reservation": 1 << 29,
                                      "swappiness": 10, "disableOOMKiller": True}}))
    assert tree.wrote() == [("minirun/c1/memory.swap.max", str(2 << 30)),  # OCI swap is memory + swap
                            ("minirun/c1/memory.max", str(1 << 30)), ("minirun/c1/memory.low", str(1 << 29))]
    assert [w.split(":")[0] for w in warnings] == ["linux.resources.memory.swappiness",
                                                   "linux.resources.memory.disableOOMKiller"]


def test_v2_memory_unlimited_and_swap_update_alone(tree: FakeTree) -> None:
    m = applied(tree)
    m.set(parse_resources({"memory": {"limit": -1}}))
    assert tree.wrote() == [("minirun/c1/memory.swap.max", "max"), ("minirun/c1/memory.max", "max")]
    tree.writes.clear()
    (tree.root / "minirun" / "c1" / "memory.max").write_text(str(1 << 30))
    m.set(parse_resources({"memory": {"swap": 2 << 30}}))  # relative to the current memory.max
    assert tree.wrote() == [("minirun/c1/memory.swap.max", str(1 << 30))]
    with pytest.raises(ConfigError, match=r"linux\.resources\.memory\.swap"):
        m.set(parse_resources({"memory": {"swap": 1 << 29}}))


def test_v2_check_before_update(tree: FakeTree) -> None:
    m = applied(tree)
    (tree.root / "minirun" / "c1" / "memory.current").write_text(str(1 << 30))
    with pytest.raises(ConfigError, match="below the current usage"):
        m.set(parse_resources({"memory": {"limit": 1 << 20, "checkBeforeUpdate": True}}))
    m.set(parse_resources({"memory": {"limit": 1 << 20}}))  # without the check the kernel reclaims
    assert tree.wrote() == [("minirun/c1/memory.max", str(1 << 20))]


def test_v2_cpu(tree: FakeTree) -> None:
    m = applied(tree)
    m.set(parse_resources({"cpu": {"shares": 1024, "quota": 50000, "period": 100000, "burst": 10000, "idle": 1,
                                   "cpus": "0-1", "mems": "0"}}))
    assert tree.wrote() == [
        ("minirun/c1/cpu.weight", "100"),  # 1024 shares, the v1 default, is the v2 default 100
        ("minirun/c1/cpu.max.burst", "10000"), ("minirun/c1/cpu.max", "50000 100000"),
        ("minirun/c1/cpu.idle", "1"), ("minirun/c1/cpuset.cpus", "0-1"), ("minirun/c1/cpuset.mems", "0"),
    ]
    tree.writes.clear()
    m.set(parse_resources({"cpu": {"quota": -1}}))
    assert tree.wrote() == [("minirun/c1/cpu.max", "max 100000")]
    with pytest.raises(ConfigError, match=r"linux\.resources\.cpu\.realtimeRuntime: .*real-time"):
        m.set(parse_resources({"cpu": {"realtimeRuntime": 1000, "realtimePeriod": 10000}}))


def test_v2_burst_order_is_retried(tree: FakeTree, monkeypatch: pytest.MonkeyPatch) -> None:
    m = applied(tree)
    real = tree.write
    refused: list[str] = []

    def refuse_burst_above_quota(path: str, value: str, what: str) -> None:
        if path.endswith("cpu.max.burst") and not refused:
            refused.append(value)
            raise KernelError(f"{what}: write", errno.EINVAL)
        real(path, value, what)

    monkeypatch.setattr("minirun.cgroups.v2.write_file", refuse_burst_above_quota)
    m.set(parse_resources({"cpu": {"quota": 200000, "burst": 150000}}))
    assert refused == ["150000"]
    assert tree.wrote() == [("minirun/c1/cpu.max", "200000 100000"), ("minirun/c1/cpu.max.burst", "150000")]


def test_v2_pids(tree: FakeTree) -> None:
    m = applied(tree)
    m.set(parse_resources({"pids": {"limit": 100}}))
    m.set(parse_resources({"pids": {"limit": 0}}))
    assert tree.wrote() == [("minirun/c1/pids.max", "100"), ("minirun/c1/pids.max", "max")]


def test_v2_io(tree: FakeTree) -> None:
    m = applied(tree)
    m.set(parse_resources({"blockIO": {
        "weight": 500,
        "weightDevice": [{"major": 8, "minor": 0, "weight": 100}],
        "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}, {"major": 8, "minor": 16, "rate": 0}],
        "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 10}],
    }}))
    w500, w100 = convert.blkio_weight_to_io_weight(500), convert.blkio_weight_to_io_weight(100)
    assert tree.wrote() == [
        ("minirun/c1/io.bfq.weight", "500"), ("minirun/c1/io.weight", f"default {w500}"),
        ("minirun/c1/io.bfq.weight", "8:0 100"), ("minirun/c1/io.weight", f"8:0 {w100}"),
        ("minirun/c1/io.max", "8:0 rbps=1000 wiops=10"), ("minirun/c1/io.max", "8:16 rbps=max"),
    ]


def test_v2_io_weight_without_bfq(tree: FakeTree) -> None:
    m = applied(tree)
    os.unlink(tree.root / "minirun" / "c1" / "io.bfq.weight")
    m.set(parse_resources({"blockIO": {"weight": 1000}}))
    assert tree.wrote() == [("minirun/c1/io.weight", "default 10000")]


def test_v2_hugetlb(tree: FakeTree) -> None:
    m = applied(tree)
    m.set(parse_resources({"hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 21}]}))
    assert tree.wrote() == [("minirun/c1/hugetlb.2MB.max", str(1 << 21))]
    with pytest.raises(ConfigError, match=r"hugepageLimits\[0\]\.pageSize: .*1GB"):
        m.set(parse_resources({"hugepageLimits": [{"pageSize": "1GB", "limit": 1 << 30}]}))


def test_v2_unified_goes_last_and_names_its_key(tree: FakeTree) -> None:
    m = applied(tree)
    m.set(parse_resources({"unified": {"memory.high": "1000000"}, "memory": {"limit": 2000000},
                           "pids": {"limit": 5}}))
    assert tree.wrote() == [("minirun/c1/memory.max", "2000000"), ("minirun/c1/pids.max", "5"),
                            ("minirun/c1/memory.high", "1000000")]
    with pytest.raises(KernelError) as info:
        m.set(parse_resources({"unified": {"memory.nonesuch": "1"}}))
    assert "linux.resources.unified['memory.nonesuch']" in str(info.value)
    assert info.value.errno == errno.ENOENT


def test_v2_missing_controller_names_field_and_file(tree: FakeTree) -> None:
    (tree.root / "cgroup.controllers").write_text("memory")  # no pids controller on this host
    m = manager(tree)
    m.apply(4242)
    with pytest.raises(KernelError) as info:
        m.set(parse_resources({"pids": {"limit": 10}}))
    message = str(info.value)
    assert message.startswith("linux.resources.pids.limit: ") and "pids.max" in message and "controller" in message


def test_v2_devices_program_gets_defaults_and_extras(tree: FakeTree, monkeypatch: pytest.MonkeyPatch) -> None:
    installed: list[tuple[str, list[DeviceRule], str]] = []

    def install(d: str, rules: list[DeviceRule], what: str) -> int:
        installed.append((d, list(rules), what))
        return 1

    monkeypatch.setattr(ebpf, "install", install)
    m = applied(tree)
    extra = DeviceRule(True, "b", 7, 0, "rwm")
    m.set(parse_resources({"devices": [{"allow": False, "access": "rwm"}]}), extra_device_rules=[extra])
    (d, rules, what), = installed
    assert d == m.dir and what == "linux.resources.devices"
    assert rules == [DeviceRule(False), *DEFAULT_DEVICE_RULES, extra]
    m.set(parse_resources({"pids": {"limit": 3}}))  # no devices: the program stays as it is
    assert len(installed) == 1
    m.set(parse_resources({"devices": [{"allow": False, "access": "rwm"}]}))  # the extras are remembered
    assert installed[1][1][-1] == extra


def test_v2_bad_device_rule_is_a_config_error(tree: FakeTree, monkeypatch: pytest.MonkeyPatch) -> None:
    m = applied(tree)
    monkeypatch.setattr(ebpf, "install", lambda d, rules, what: len(ebpf.compile_rules(rules)))
    resources = parse_resources({"devices": []})
    resources.devices = [DeviceRule(True, "x")]  # resources.py refuses this; the driver checks again
    with pytest.raises(ConfigError, match=r"linux\.resources\.devices: type 'x'"):
        m.set(resources)


def test_v2_freeze_and_thaw(tree: FakeTree) -> None:
    m = applied(tree)
    assert not m.frozen()
    m.freeze()
    assert m.frozen() and tree.wrote() == [("minirun/c1/cgroup.freeze", "1")]
    m.thaw()
    assert not m.frozen()


def test_v2_freeze_that_never_completes_is_undone(tree: FakeTree, monkeypatch: pytest.MonkeyPatch) -> None:
    m = applied(tree)
    real = tree.write

    def stuck(path: str, value: str, what: str) -> None:
        real(path, value, what)
        if path.endswith("cgroup.freeze"):
            (Path(path).parent / "cgroup.events").write_text("populated 1\nfrozen 0\n")

    monkeypatch.setattr("minirun.cgroups.v2.write_file", stuck)
    with pytest.raises(KernelError, match="did not report frozen 1"):
        m.freeze()
    assert not m.frozen()  # written back to 0


def test_v2_pids_are_recursive(tree: FakeTree) -> None:
    m = applied(tree)
    sub = Path(m.dir) / "inner"
    sub.mkdir()
    (sub / "cgroup.procs").write_text("12\n11\n")
    assert m.pids() == [11, 12, 4242]


def test_v2_stats_shape(tree: FakeTree) -> None:
    m = applied(tree)
    d = Path(m.dir)
    (d / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\n"
                                "nr_throttled 2\nthrottled_usec 30\n")
    (d / "memory.current").write_text("4096\n")
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\noom_group_kill 0\n")
    (d / "memory.stat").write_text("anon 100\nfile 200\n")
    (d / "memory.swap.current").write_text("8192\n")
    (d / "memory.swap.max").write_text("1048576\n")
    (d / "memory.max").write_text("2097152\n")
    (d / "pids.current").write_text("2\n")
    (d / "pids.max").write_text("max\n")
    (d / "io.stat").write_text("8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n")
    (d / "hugetlb.2MB.current").write_text("0\n")
    (d / "hugetlb.2MB.events").write_text("max 5\n")
    stats = m.stats()
    assert stats["cpu"] == {"usage": {"total": 1500000, "percpu": [], "percpu_kernel": [], "percpu_user": [],
                                      "kernel": 500000, "user": 1000000},
                            "throttling": {"periods": 4, "throttledPeriods": 2, "throttledTime": 30000}}
    assert stats["memory"]["usage"] == {"usage": 4096, "max": 0, "failcnt": 3, "limit": 2097152}
    assert stats["memory"]["swap"] == {"usage": 4096 + 8192, "max": 0, "failcnt": 0, "limit": 1048576 + 2097152}
    assert stats["memory"]["cache"] == 200 and stats["memory"]["raw"] == {"anon": 100, "file": 200}
    assert stats["pids"] == {"current": 2, "limit": 0}
    assert stats["blkio"]["ioServiceBytesRecursive"] == [
        {"major": 8, "minor": 0, "op": "Read", "value": 10}, {"major": 8, "minor": 0, "op": "Write", "value": 20}]
    assert stats["blkio"]["ioServicedRecursive"][1] == {"major": 8, "minor": 0, "op": "Write", "value": 2}
    assert stats["hugetlb"] == {"2MB": {"usage": 0, "max": 0, "failcnt": 5}}
    assert m.oom_kills() == 2


def test_v2_stats_with_no_limits_say_max(tree: FakeTree) -> None:
    m = applied(tree)
    memory = m.stats()["memory"]
    assert memory["usage"]["limit"] == v2.UINT64_MAX and memory["swap"]["limit"] == v2.UINT64_MAX


def test_v2_destroy_removes_what_it_created_leaf_first(tree: FakeTree) -> None:
    first = applied(tree, "minirun/c1")
    second = applied(tree, "minirun/c2")
    (Path(first.dir) / "cgroup.procs").write_text("")  # its processes are gone
    first.destroy()
    assert not os.path.exists(first.dir) and os.path.isdir(tree.root / "minirun")  # c2 still uses it
    (Path(second.dir) / "cgroup.procs").write_text("")
    second.destroy()
    assert not os.path.exists(tree.root / "minirun")  # the last one out removes the shared parent


def test_v2_destroy_before_apply_finished_kills_nothing(tree: FakeTree) -> None:
    (tree.root / "cgroup.controllers").write_text("")
    m = manager(tree)
    m._make_dir(str(tree.root / "minirun"))
    m.destroy()  # not applied: only what it created goes, nothing is killed
    assert not (tree.root / "minirun").exists()
    assert tree.wrote() == []


def test_v2_state_round_trip(tree: FakeTree) -> None:
    m = applied(tree)
    m.extra_rules = [DeviceRule(True, "c", 10, 200, "rwm")]
    saved = json.loads(json.dumps(m.to_state()))
    assert saved["mode"] == "v2"
    assert saved["freezer_state_file"] == os.path.join(m.dir, "cgroup.freeze")
    again = v2.V2Manager.from_state(saved)
    assert (again.dir, again.top, again.created, again.applied, again.path) == (m.dir, m.top, m.created, True,
                                                                                "minirun/c1")
    assert again.extra_rules == m.extra_rules
    for broken in ({**saved, "dir": "relative/x"}, {**saved, "dir": "/elsewhere"}, {"mode": "v2"},
                   {**saved, "created": ["/a/../b"]}):
        with pytest.raises(MinirunError, match=r"state\.json: cgroup"):
            v2.V2Manager.from_state(broken)
