#!/usr/bin/env python3
"""Time minirun against runc, side by side, in one run.

Two scenarios are timed for each runtime, interleaving the runtimes on
every iteration so that machine noise hits both alike:

* ``run``: ``<rt> --root R run --bundle B <id>`` in the foreground
  (the container runs ``/bin/true``);
* ``cycle``: ``create`` -> ``start`` -> poll ``state`` until the
  container is "stopped" -> ``delete``.

See bench/README.md for how to read the output.  Must be run as root.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MINIRUN = REPO_ROOT / ".venv" / "bin" / "minirun"
DEFAULT_ROOTFS = REPO_ROOT / "rootfs" / "busybox"

SCENARIOS = ("run", "cycle")
CYCLE_PHASES = ("create", "start", "wait", "delete")

# Polling of `state` in the cycle scenario.
POLL_INTERVAL_S = 0.002
POLL_LIMIT_S = 5.0
# A single runtime command taking longer than this counts as a failure.
COMMAND_TIMEOUT_S = 60.0

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_SETUP = 2


class BenchError(Exception):
    """An iteration failed; the message says which command and why."""


@dataclass
class Runtime:
    """One runtime under test, with its own private state directory."""

    name: str
    path: str
    state_dir: str
    version: str = ""
    # Closed by cleanup(); kept open so that no file is opened while timing.
    errlog: IO[bytes] = field(default_factory=lambda: tempfile.TemporaryFile())  # noqa: SIM115
    # Containers that may still exist in state_dir (removed on cleanup).
    live: set[str] = field(default_factory=set)

    def argv(self, *args: str) -> list[str]:
        return [self.path, "--root", self.state_dir, *args]

    def call(self, *args: str, stdout: int = subprocess.DEVNULL) -> subprocess.CompletedProcess[bytes]:
        """Run one runtime command, stderr going to the runtime's error log.

        stderr goes to a file rather than a pipe: after ``create`` the
        container's init process keeps the runtime's stdio open, so reading
        a pipe to EOF would block until the container exits.
        """
        self.errlog.seek(0)
        self.errlog.truncate()
        cmd = self.argv(*args)
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=self.errlog)
        except OSError as exc:
            raise BenchError(f"{self.name}: cannot execute {' '.join(cmd)}: {exc}") from exc
        # Not subprocess.run(timeout=...): with a timeout, Popen.wait polls with sleeps that double up to
        # 50 ms, so every command would be measured in steps of ~32 ms. A blocking wait, with a timer
        # that kills a hung command, measures the real time.
        killer = threading.Timer(COMMAND_TIMEOUT_S, proc.kill)
        killer.start()
        try:
            out, _ = proc.communicate()  # no timeout: blocking reads and wait
        finally:
            killer.cancel()
        returncode = proc.returncode
        if returncode == -signal.SIGKILL and killer.finished.is_set():
            raise BenchError(f"{self.name}: timed out after {COMMAND_TIMEOUT_S:.0f} s: {' '.join(cmd)}")
        return subprocess.CompletedProcess(cmd, returncode, out)

    def check(self, *args: str, stdout: int = subprocess.DEVNULL) -> subprocess.CompletedProcess[bytes]:
        """Like call(), but a non-zero exit raises BenchError with stderr."""
        proc = self.call(*args, stdout=stdout)
        if proc.returncode != 0:
            raise BenchError(self.failure(args, proc.returncode))
        return proc

    def failure(self, args: tuple[str, ...], returncode: int) -> str:
        self.errlog.seek(0)
        err = self.errlog.read().decode(errors="replace").strip() or "(no output on stderr)"
        return f"{self.name} failed (exit {returncode}): {' '.join(self.argv(*args))}\n--- stderr ---\n{err}"

    def exists(self, cid: str) -> bool:
        return self.call("state", cid).returncode == 0

    def status(self, cid: str) -> str:
        proc = self.check("state", cid, stdout=subprocess.PIPE)
        try:
            state = json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            raise BenchError(f"{self.name}: `state {cid}` printed invalid JSON: {proc.stdout!r}") from exc
        if not isinstance(state, dict) or not isinstance(state.get("status"), str):
            raise BenchError(f"{self.name}: `state {cid}` has no status: {proc.stdout!r}")
        status: str = state["status"]
        return status

    def cleanup(self) -> None:
        """Force-delete any container left behind, then drop the state dir."""
        for cid in sorted(self.live):
            try:
                if self.exists(cid):
                    self.call("delete", "--force", cid)
            except BenchError:
                pass
        self.live.clear()
        self.errlog.close()
        shutil.rmtree(self.state_dir, ignore_errors=True)


# --------------------------------------------------------------------------
# bundle


def make_config(rootfs: Path) -> dict[str, Any]:
    """A config close to `runc spec`, but non-terminal and without cgroup mount."""
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["/bin/true"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
                "ambient": caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": "minirun-bench",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
        },
    }


def make_bundle(rootfs: Path) -> str:
    bundle = tempfile.mkdtemp(prefix="minirun-bench-")
    with open(os.path.join(bundle, "config.json"), "w", encoding="utf-8") as f:
        json.dump(make_config(rootfs), f, indent=2)
        f.write("\n")
    return bundle


# --------------------------------------------------------------------------
# scenarios


def scenario_run(rt: Runtime, bundle: str, cid: str) -> tuple[float, dict[str, float]]:
    """Foreground `run`; returns (seconds, phases)."""
    rt.live.add(cid)
    t0 = time.perf_counter()
    proc = rt.call("run", "--bundle", bundle, cid)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError(rt.failure(("run", "--bundle", bundle, cid), proc.returncode))
    # runc's foreground run deletes the container itself; clean up if not.
    if rt.exists(cid):
        rt.check("delete", "--force", cid)
    rt.live.discard(cid)
    return elapsed, {}


def wait_stopped(rt: Runtime, cid: str) -> None:
    deadline = time.perf_counter() + POLL_LIMIT_S
    while True:
        status = rt.status(cid)
        if status == "stopped":
            return
        if time.perf_counter() >= deadline:
            raise BenchError(f"{rt.name}: container {cid} still {status!r} after {POLL_LIMIT_S:.0f} s")
        time.sleep(POLL_INTERVAL_S)


def scenario_cycle(rt: Runtime, bundle: str, cid: str) -> tuple[float, dict[str, float]]:
    """create -> start -> wait for "stopped" -> delete; returns (seconds, phases)."""
    rt.live.add(cid)
    t0 = time.perf_counter()
    rt.check("create", "--bundle", bundle, cid)
    t1 = time.perf_counter()
    rt.check("start", cid)
    t2 = time.perf_counter()
    wait_stopped(rt, cid)
    t3 = time.perf_counter()
    rt.check("delete", cid)
    t4 = time.perf_counter()
    rt.live.discard(cid)
    phases = {"create": t1 - t0, "start": t2 - t1, "wait": t3 - t2, "delete": t4 - t3}
    return t4 - t0, phases


SCENARIO_FUNCS = {"run": scenario_run, "cycle": scenario_cycle}
SCENARIO_TITLES = {
    "run": "run: `run --bundle B <id>` in the foreground (/bin/true)",
    "cycle": "cycle: create -> start -> poll state until stopped -> delete",
}


# --------------------------------------------------------------------------
# statistics and output


@dataclass
class Samples:
    total: list[float] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=dict)

    def add(self, seconds: float, phases: dict[str, float]) -> None:
        self.total.append(seconds * 1000.0)
        for name, value in phases.items():
            self.phases.setdefault(name, []).append(value * 1000.0)


def summarize(values_ms: list[float]) -> dict[str, float]:
    if len(values_ms) >= 2:
        deciles = statistics.quantiles(values_ms, n=10, method="inclusive")
        p10, p90 = deciles[0], deciles[-1]
    else:
        p10 = p90 = values_ms[0]
    return {
        "median_ms": statistics.median(values_ms),
        "p10_ms": p10,
        "p90_ms": p90,
        "min_ms": min(values_ms),
        "max_ms": max(values_ms),
    }


def ratio_of(results: dict[str, dict[str, Any]]) -> float | None:
    if "minirun" in results and "runc" in results:
        runc_median: float = results["runc"]["median_ms"]
        minirun_median: float = results["minirun"]["median_ms"]
        if runc_median > 0:
            return minirun_median / runc_median
    return None


def print_table(
    scenario: str, results: dict[str, dict[str, Any]], ratio: float | None, max_ratio: float | None
) -> None:
    print()
    print(SCENARIO_TITLES[scenario])
    header = f"  {'runtime':<10}{'median ms':>11}{'p10':>10}{'p90':>10}{'min':>10}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    for name, stats in results.items():
        print(
            f"  {name:<10}{stats['median_ms']:>11.2f}{stats['p10_ms']:>10.2f}"
            f"{stats['p90_ms']:>10.2f}{stats['min_ms']:>10.2f}"
        )
    phase_rows = [(name, stats["phases"]) for name, stats in results.items() if stats.get("phases")]
    if phase_rows:
        print("  median ms per phase: " + ", ".join(CYCLE_PHASES))
        for name, phases in phase_rows:
            cells = "  ".join(f"{p} {phases[p]['median_ms']:.2f}" for p in CYCLE_PHASES if p in phases)
            print(f"    {name:<10}{cells}")
    if ratio is None:
        print("  ratio minirun/runc (medians): n/a (needs both runtimes)")
    else:
        verdict = ""
        if max_ratio is not None:
            verdict = f"  (limit {max_ratio:.2f}: {'FAIL' if ratio > max_ratio else 'ok'})"
        print(f"  ratio minirun/runc (medians): {ratio:.2f}{verdict}")


# --------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time minirun and runc side by side (run, and create/start/delete cycle).",
    )
    parser.add_argument(
        "--minirun",
        default=str(DEFAULT_MINIRUN),
        metavar="PATH",
        help=f"minirun executable (default: {DEFAULT_MINIRUN.relative_to(REPO_ROOT)} in the repo)",
    )
    parser.add_argument(
        "--iterations", type=int, default=30, metavar="N", help="timed iterations (default 30)"
    )
    parser.add_argument(
        "--warmup", type=int, default=3, metavar="W", help="untimed warm-up iterations (default 3)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as JSON to FILE")
    parser.add_argument(
        "--max-ratio",
        type=float,
        metavar="X",
        help="exit 1 if any minirun/runc ratio of medians exceeds X (or cannot be computed)",
    )
    # Hidden: a rootfs other than <repo>/rootfs/busybox (testing the script itself).
    parser.add_argument("--rootfs", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    if args.max_ratio is not None and args.max_ratio <= 0:
        parser.error("--max-ratio must be positive")
    return args


def runtime_version(path: str) -> str:
    try:
        proc = subprocess.run(
            [path, "--version"], capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = proc.stdout.decode(errors="replace").splitlines()
    return lines[0].strip() if lines else "unknown"


def find_runtimes(minirun: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    minirun_path = os.path.abspath(minirun)
    if os.path.isfile(minirun_path) and os.access(minirun_path, os.X_OK):
        found.append(("minirun", minirun_path))
    else:
        print(f"minirun not found (or not executable) at {minirun_path}: timing only runc")
    runc = shutil.which("runc")
    if runc is not None:
        found.append(("runc", runc))
    else:
        print("runc is not installed: timing only minirun")
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print(
            "bench.py must run as root (container runtimes need it): try `sudo make bench`", file=sys.stderr
        )
        return EXIT_SETUP

    rootfs = Path(args.rootfs).resolve() if args.rootfs else DEFAULT_ROOTFS
    # lexists: bin/true is usually an absolute symlink to /bin/busybox *inside* the rootfs.
    if not os.path.lexists(rootfs / "bin" / "true"):
        print(
            f"no busybox rootfs at {rootfs} (missing bin/true): run `make rootfs` first",
            file=sys.stderr,
        )
        return EXIT_SETUP

    found = find_runtimes(args.minirun)
    if not found:
        print("nothing to time: neither minirun nor runc is available", file=sys.stderr)
        return EXIT_SETUP

    runtimes: list[Runtime] = []
    bundle: str | None = None
    try:
        bundle = make_bundle(rootfs)
        for name, path in found:
            rt = Runtime(name, path, tempfile.mkdtemp(prefix="minirun-bench-state-"))
            rt.version = runtime_version(path)
            runtimes.append(rt)
        print(f"rootfs {rootfs}, bundle {bundle}")
        for rt in runtimes:
            print(f"{rt.name:<8} {rt.path} ({rt.version})")
        print(f"{args.iterations} iterations after {args.warmup} warm-up, runtimes interleaved")

        report = run_all(runtimes, bundle, args.iterations, args.warmup)
    except BenchError as exc:
        print(f"\nbenchmark aborted: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_FAILED
    finally:
        for rt in runtimes:
            rt.cleanup()
        if bundle is not None:
            shutil.rmtree(bundle, ignore_errors=True)

    status = EXIT_OK
    for scenario in SCENARIOS:
        entry = report["scenarios"][scenario]
        print_table(scenario, entry["runtimes"], entry["ratio"], args.max_ratio)
        if args.max_ratio is not None:
            ratio = entry["ratio"]
            if ratio is None or ratio > args.max_ratio:
                status = EXIT_FAILED
    if args.max_ratio is not None:
        print()
        if status == EXIT_OK:
            print(f"all ratios within {args.max_ratio:.2f}")
        else:
            print(f"ratio check failed: a ratio exceeds {args.max_ratio:.2f} or could not be computed")

    report["max_ratio"] = args.max_ratio
    report["ok"] = status == EXIT_OK
    report["rootfs"] = str(rootfs)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    return status


def run_all(runtimes: list[Runtime], bundle: str, iterations: int, warmup: int) -> dict[str, Any]:
    """Time every scenario, interleaving the runtimes on each iteration."""
    report: dict[str, Any] = {
        "iterations": iterations,
        "warmup": warmup,
        "runtimes": {rt.name: {"path": rt.path, "version": rt.version} for rt in runtimes},
        "scenarios": {},
    }
    pid = os.getpid()
    for scenario in SCENARIOS:
        func = SCENARIO_FUNCS[scenario]
        samples = {rt.name: Samples() for rt in runtimes}
        print(f"timing {scenario} ...", flush=True)
        for n in range(warmup + iterations):
            for rt in runtimes:
                cid = f"minirun-bench-{pid}-{scenario}-{rt.name}-{n}"
                seconds, phases = func(rt, bundle, cid)
                if n >= warmup:
                    samples[rt.name].add(seconds, phases)
        results: dict[str, dict[str, Any]] = {}
        for rt in runtimes:
            s = samples[rt.name]
            stats: dict[str, Any] = summarize(s.total)
            if s.phases:
                stats["phases"] = {p: summarize(v) for p, v in s.phases.items()}
            stats["samples_ms"] = [round(v, 3) for v in s.total]
            results[rt.name] = stats
        report["scenarios"][scenario] = {"runtimes": results, "ratio": ratio_of(results)}
    return report


if __name__ == "__main__":
    sys.exit(main())
