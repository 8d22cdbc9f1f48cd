"""Run commands, normally pytest, inside a pure cgroup v2 Linux VM booted with qemu.

The development machines and CI are cgroup v1 (hybrid) hosts; this boots Debian's kernel under qemu
(TCG: nested KVM hangs on these machines) with the host's own root filesystem shared read-only over
virtio-9p, so the VM runs this very tree, the repo's .venv and rootfs/busybox without copying
anything. See tests/vm/README.md for the boot sequence and tests/integration/test_v2_vm.py for its use.

    run_tests_in_vm(["tests/vm/test_inside_vm.py"], timeout=300) -> VmResult
    qemu_unavailable_reason() -> str | None

or from a shell: `.venv/bin/python -m tests.vm.run_vm [--timeout S] [PYTEST ARGS...]`.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# Build products (the initramfs) and the logs of recent runs; build/ is git-ignored, `make clean` removes it.
CACHE_DIR = REPO / "build" / "vm"
RUNS_KEPT = 10

QEMU = "qemu-system-x86_64"
BUSYBOX_CANDIDATES = (Path("/bin/busybox"), Path("/usr/bin/busybox"))
STAGE1_INIT = HERE / "initramfs-init.sh"
STAGE2_INIT = HERE / "init.sh"
# Where init.sh mounts the results share inside the VM.
VM_RESULTS = "/run/vm-results"
# What the initramfs must load to mount a virtio-9p filesystem; their dependencies come from modules.dep.
# virtio_pci is a module in Debian's kernel too (CONFIG_VIRTIO_PCI=m), skipped when built in.
MODULES = ("virtio_pci", "9pnet_virtio", "9p")
KERNEL_CMDLINE = (
    "console=ttyS0 panic=-1 loglevel=4 mitigations=off edd=off "
    "cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1"
)
QEMU_MACHINE = ("-accel", "tcg", "-cpu", "max", "-m", "2048", "-smp", "2")

Outcome = Literal["passed", "failed", "skipped", "error"]


@dataclass(frozen=True)
class TestOutcome:
    """One test's result inside the VM, from the junit XML."""

    __test__ = False  # not a pytest test class, despite the name

    outcome: Outcome
    message: str = ""  # failure/error/skip message and traceback text; "" when passed


@dataclass
class VmResult:
    exit_code: int | None  # the command's exit status inside the VM; None when it never finished
    junit_path: Path | None  # a copy of the junit XML in run_dir; None when none was written
    outcomes: dict[str, TestOutcome]  # pytest node id (tests/vm/test_x.py::test_y[p]) -> outcome
    console_log: Path  # the VM's serial console: kernel messages, init.sh's lines, the command's output
    run_dir: Path  # build/vm/runs/<time>-<pid>/: console.log, qemu.log, output.txt, junit.xml
    kernel_version: str  # the /boot kernel that was booted, e.g. 6.1.0-56-amd64
    timed_out: bool = False  # qemu was killed after `timeout` seconds
    boot_seconds: float | None = None  # guest uptime when init.sh started (kernel + initramfs)
    boot_wall_seconds: float | None = None  # host time from starting qemu to init.sh running (+ BIOS)
    test_seconds: float | None = None  # how long the command ran inside the VM
    total_seconds: float = 0.0  # wall time of the whole qemu run
    output: str = ""  # the command's stdout and stderr
    setup_errors: str = ""  # what init.sh could not set up (e.g. a controller), or an unreadable junit
    qemu_output: str = ""  # qemu's own stdout/stderr
    command: list[str] = field(default_factory=list)

    def describe(self, console_lines: int = 40) -> str:
        """A summary for failure messages: status, timings, setup errors and the console's last lines."""
        if self.timed_out:
            status = f"timed out after {self.total_seconds:.0f}s"
        elif self.exit_code is None:
            status = "the VM stopped without reporting an exit status"
        else:
            status = f"exit status {self.exit_code}"
        lines = [
            f"VM run ({self.kernel_version}): {status}; boot {_fmt(self.boot_wall_seconds)} "
            f"(guest uptime {_fmt(self.boot_seconds)}), "
            f"tests {_fmt(self.test_seconds)}, total {self.total_seconds:.1f}s; logs in {self.run_dir}",
        ]
        if self.setup_errors:
            lines.append("init.sh setup errors:\n" + self.setup_errors.rstrip())
        if self.qemu_output.strip():
            lines.append("qemu said:\n" + self.qemu_output.rstrip())
        try:
            console = self.console_log.read_text(errors="replace").splitlines()
        except OSError:
            console = []
        errors = [line for line in console if "vm-initramfs: error" in line or "Kernel panic" in line]
        if errors:
            lines.append("console errors:\n" + "\n".join(errors))
        tail = console[-console_lines:] if console_lines > 0 else []
        if tail:
            lines.append(f"last {len(tail)} console lines:\n" + "\n".join(tail))
        return "\n".join(lines)


def _fmt(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.1f}s"


class VmError(RuntimeError):
    """The VM cannot be run on this host (see qemu_unavailable_reason) or its image cannot be built."""


# --- what the host has ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    version: str
    image: Path  # /boot/vmlinuz-VERSION
    modules: Path  # /lib/modules/VERSION


def _version_key(version: str) -> list[tuple[int, str]]:
    return [(int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"[.\-+~]", version)]


def find_kernel() -> Kernel:
    """The newest kernel under /boot whose modules include virtio-9p (Debian's -cloud- kernels lack it)."""
    images = sorted(Path("/boot").glob("vmlinuz-*"), key=lambda p: _version_key(p.name[len("vmlinuz-"):]),
                    reverse=True)
    if not images:
        raise VmError("no kernel: /boot has no vmlinuz-* (install linux-image-amd64)")
    rejected = []
    for image in images:
        version = image.name[len("vmlinuz-"):]
        modules = Path("/lib/modules") / version
        if not os.access(image, os.R_OK):
            rejected.append(f"{image} is not readable")
        elif not (modules / "modules.dep").is_file():
            rejected.append(f"{modules}/modules.dep is missing")
        elif "kernel/fs/9p/9p.ko" not in (modules / "modules.dep").read_text():
            rejected.append(f"{version} has no 9p module (a -cloud- kernel?)")
        else:
            return Kernel(version, image, modules)
    raise VmError("no usable kernel under /boot (install linux-image-amd64): " + "; ".join(rejected))


def _is_static_elf(path: Path) -> bool:
    """True for a 64-bit ELF executable without a program interpreter (PT_INTERP)."""
    with path.open("rb") as f:
        header = f.read(64)
        if len(header) < 64 or header[:5] != b"\x7fELF\x02":
            return False
        phoff = struct.unpack_from("<Q", header, 0x20)[0]
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def find_busybox() -> Path:
    for candidate in BUSYBOX_CANDIDATES:
        if candidate.is_file() and _is_static_elf(candidate.resolve()):
            return candidate.resolve()
    raise VmError("no static busybox for the initramfs (install busybox-static)")


def qemu_unavailable_reason() -> str | None:
    """Why the VM cannot run on this host, or None when it can. /dev/kvm does not matter: TCG is used."""
    if os.uname().machine != "x86_64":
        return f"the VM shares the host's x86_64 root filesystem; this host is {os.uname().machine}"
    if shutil.which(QEMU) is None:
        return f"{QEMU} is not installed (install qemu-system-x86)"
    if os.geteuid() != 0:
        return "the VM exports the host's whole root filesystem over 9p, which needs root to read"
    if " " in str(REPO):
        return f"the repository path {REPO} has a space, which the kernel command line cannot carry"
    try:
        find_kernel()
        find_busybox()
    except VmError as e:
        return str(e)
    return None


# --- the initramfs -------------------------------------------------------------------------------


def _module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    base = re.sub(r"\.ko(\.(xz|gz|zst))?$", "", base)
    return base.replace("-", "_")


def _module_load_order(kernel: Kernel, wanted: Iterable[str]) -> list[str]:
    """Relative paths of `wanted` modules and their dependencies, each after everything it needs."""
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in (kernel.modules / "modules.dep").read_text().splitlines():
        target, _, needs = line.partition(":")
        deps[_module_name(target)] = (target, [_module_name(n) for n in needs.split()])
    builtin_file = kernel.modules / "modules.builtin"
    builtin = ({_module_name(line) for line in builtin_file.read_text().split()}
               if builtin_file.is_file() else set())
    order: list[str] = []

    def visit(name: str) -> None:
        if name in builtin or any(_module_name(p) == name for p in order):
            return
        if name not in deps:
            raise VmError(f"kernel {kernel.version} has no module {name}")
        path, needs = deps[name]
        for need in needs:
            visit(need)
        order.append(path)

    for name in wanted:
        visit(name.replace("-", "_"))
    return order


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        raise VmError(f"{path} is zstd-compressed, which this harness cannot unpack")
    return data


class _Cpio:
    """A "newc" cpio archive, the format the kernel unpacks as an initramfs."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ino = 0

    def _entry(self, name: str, mode: int, body: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        self.ino += 1
        encoded = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(body), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self.data += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        self.data += b"\0" * (-len(self.data) % 4) + body
        self.data += b"\0" * (-len(self.data) % 4)

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, body: bytes, perm: int = 0o644) -> None:
        self._entry(name, 0o100000 | perm, body)

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return bytes(self.data)


def build_initramfs(kernel: Kernel) -> Path:
    """The initramfs for `kernel` (busybox, the 9p modules, stage 1's /init), cached under CACHE_DIR.

    The cache file is named after the kernel version and a hash of everything in it; building a new one
    removes every other, so a kernel upgrade (or an edited initramfs-init.sh) leaves nothing stale.
    """
    busybox = find_busybox()
    modules = [(p, _module_bytes(kernel.modules / p)) for p in _module_load_order(kernel, MODULES)]
    stage1 = STAGE1_INIT.read_bytes()
    digest = hashlib.sha256(kernel.version.encode() + stage1 + busybox.read_bytes())
    for path, body in modules:
        digest.update(path.encode() + body)
    target = CACHE_DIR / f"initramfs-{kernel.version}-{digest.hexdigest()[:16]}.cpio"
    if target.is_file():
        return target

    archive = _Cpio()
    for directory in ("bin", "dev", "proc", "sys", "newroot", "modules"):
        archive.directory(directory)
    archive.char_device("dev/console", 5, 1)
    archive.file("bin/busybox", busybox.read_bytes(), 0o755)
    archive.file("init", stage1, 0o755)
    names = []
    for path, body in modules:
        name = _module_name(path) + ".ko"
        archive.file(f"modules/{name}", body)
        names.append(name)
    archive.file("modules/order", "".join(n + "\n" for n in names).encode())

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=CACHE_DIR, prefix=".initramfs-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(archive.finish())
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
    for old in CACHE_DIR.glob("initramfs-*.cpio"):
        if old != target:
            old.unlink(missing_ok=True)
    return target


# --- running -------------------------------------------------------------------------------------


def _new_run_dir() -> Path:
    runs = CACHE_DIR / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    for old in sorted(runs.iterdir())[:-(RUNS_KEPT - 1)]:
        shutil.rmtree(old, ignore_errors=True)
    run_dir = runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    run_dir.mkdir()
    return run_dir


def qemu_command(kernel: Kernel, initramfs: Path, results: Path, console_log: Path) -> list[str]:
    cmdline = f"{KERNEL_CMDLINE} minirun.vm_init={STAGE2_INIT}"
    return [
        QEMU, *QEMU_MACHINE,
        "-nographic", "-nodefaults", "-no-reboot", "-monitor", "none",
        "-serial", f"file:{console_log}",
        "-kernel", str(kernel.image), "-initrd", str(initramfs), "-append", cmdline,
        # The host's root, read-only both in qemu and in the guest's mount; multidevs=remap keeps inode
        # numbers unique across the host's mounts (/work and others) that the export spans.
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={results},mount_tag=results,security_model=none",
        # The repository once more, on its own: the guest mounts tmpfs over /tmp, /run and /var/tmp, and a
        # checkout under one of those (as CI's may be) would otherwise be hidden. init.sh mounts it back.
        "-virtfs", f"local,path={REPO},mount_tag=repo,security_model=none,readonly=on,multidevs=remap",
    ]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _float(text: str) -> float | None:
    try:
        return float(text.split()[0])
    except (IndexError, ValueError):
        return None


def run_in_vm(argv: list[str], timeout: float, cwd: Path = REPO) -> VmResult:
    """Boot the VM, run `argv` in `cwd` as a child of PID 1 (env: MINIRUN_IN_VM=1, HOME=/tmp, ...).

    Paths in the VM are the host's. The results share is mounted at VM_RESULTS, so a command that
    writes VM_RESULTS/junit.xml gets it parsed into `outcomes`. qemu is killed after `timeout` seconds;
    the temporary results directory is always removed (what matters is copied into run_dir first).
    """
    reason = qemu_unavailable_reason()
    if reason is not None:
        raise VmError(reason)
    if any("\n" in arg for arg in argv) or "\n" in str(cwd):
        raise ValueError("arguments cannot contain newlines")
    kernel = find_kernel()
    initramfs = build_initramfs(kernel)
    run_dir = _new_run_dir()
    console_log = run_dir / "console.log"
    (run_dir / "kernel-version").write_text(kernel.version + "\n")

    results = Path(tempfile.mkdtemp(prefix="vm-results-"))
    try:
        (results / "argv").write_text("".join(arg + "\n" for arg in argv))
        (results / "cwd").write_text(f"{cwd}\n")
        (results / "repo").write_text(f"{REPO}\n")
        command = qemu_command(kernel, initramfs, results, console_log)
        (run_dir / "qemu-command").write_text(" ".join(command) + "\n")
        timed_out = False
        booted: float | None = None
        started = time.monotonic()
        deadline = started + timeout
        with (run_dir / "qemu.log").open("wb") as qemu_log:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=subprocess.STDOUT)
            try:
                while proc.poll() is None:
                    now = time.monotonic()
                    if booted is None and (results / "boot-uptime").exists():
                        booted = now - started  # init.sh is running
                    if now >= deadline:
                        timed_out = True
                        break
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=min(0.1 if booted is None else 1.0, deadline - now))
            finally:
                if proc.poll() is None:
                    proc.kill()  # by pid: only the qemu this call started
                    proc.wait()
        total = time.monotonic() - started

        exit_text = _read(results / "exitcode").strip()
        junit = results / "junit.xml"
        junit_copy = None
        if junit.is_file():
            junit_copy = run_dir / "junit.xml"
            shutil.copyfile(junit, junit_copy)
        output = _read(results / "output.txt")
        (run_dir / "output.txt").write_text(output)
        setup_errors = _read(results / "setup.log")
        outcomes: dict[str, TestOutcome] = {}
        if junit_copy is not None:
            try:
                outcomes = parse_junit(junit_copy)
            except ET.ParseError as e:  # cut short by the timeout, say
                setup_errors += f"unreadable junit XML {junit_copy}: {e}\n"
        result = VmResult(
            exit_code=int(exit_text) if exit_text.isdigit() else None,
            junit_path=junit_copy,
            outcomes=outcomes,
            console_log=console_log,
            run_dir=run_dir,
            kernel_version=kernel.version,
            timed_out=timed_out,
            boot_seconds=_float(_read(results / "boot-uptime")),
            boot_wall_seconds=booted,
            test_seconds=_float(_read(results / "test-seconds")),
            total_seconds=total,
            output=output,
            setup_errors=setup_errors,
            qemu_output=_read(run_dir / "qemu.log"),
            command=list(argv),
        )
    finally:
        shutil.rmtree(results, ignore_errors=True)
    (run_dir / "summary.txt").write_text(result.describe(console_lines=0) + "\n")
    return result


def run_tests_in_vm(test_args: list[str], timeout: float = 300.0) -> VmResult:
    """Run `pytest -p no:cacheprovider TEST_ARGS --junitxml=... -q` in the VM from the repository root."""
    python = REPO / ".venv" / "bin" / "python"
    argv = [str(python if python.exists() else Path(sys.executable)), "-m", "pytest", "-p", "no:cacheprovider",
            *test_args, f"--junitxml={VM_RESULTS}/junit.xml", "-q"]
    return run_in_vm(argv, timeout, cwd=REPO)


# --- junit ---------------------------------------------------------------------------------------


def _node_id(classname: str, name: str, root: Path) -> str:
    """pytest's node id from junit's classname ("tests.vm.test_x.TestClass") and name ("test_y[p]")."""
    parts = classname.split(".") if classname else []
    for cut in range(len(parts), 0, -1):
        module = "/".join(parts[:cut]) + ".py"
        if (root / module).is_file():
            return "::".join([module, *parts[cut:], name])
    return "::".join([*parts, name]) if parts else name


def parse_junit(path: Path, root: Path = REPO) -> dict[str, TestOutcome]:
    """Per-test outcomes from pytest's junit XML. A test with a teardown error after passing is "error";
    one that failed is "failed" (its teardown error, if any, is added to the message)."""
    outcomes: dict[str, TestOutcome] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        node = _node_id(case.get("classname", ""), case.get("name", ""), root)
        kinds: list[str] = []
        messages: list[str] = []
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                kinds.append(child.tag)
                text = "\n".join(t for t in (child.get("message", ""), (child.text or "").strip()) if t)
                messages.append(f"[{child.tag}] {text}" if child.tag == "error" else text)
        outcome: Outcome = ("failed" if "failure" in kinds else "error" if "error" in kinds
                            else "skipped" if "skipped" in kinds else "passed")
        previous = outcomes.get(node)
        if previous is not None and previous.outcome != "passed":  # the same id twice: keep the worse
            outcome, messages = previous.outcome, [previous.message, *messages]
        outcomes[node] = TestOutcome(outcome, "\n\n".join(m for m in messages if m))
    return outcomes


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run pytest inside the cgroup v2 test VM.")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER,
                        help="passed to pytest (default: tests/vm/test_inside_vm.py)")
    opts = parser.parse_args(args)
    reason = qemu_unavailable_reason()
    if reason is not None:
        print(f"run_vm: cannot run the VM: {reason}", file=sys.stderr)
        return 3
    result = run_tests_in_vm(opts.pytest_args or ["tests/vm/test_inside_vm.py"], opts.timeout)
    print(result.output, end="")
    for node, outcome in sorted(result.outcomes.items()):
        print(f"{outcome.outcome:8} {node}")
    print(result.describe(console_lines=0 if result.exit_code is not None else 40))
    return result.exit_code if result.exit_code is not None else 1


if __name__ == "__main__":
    sys.exit(main())
