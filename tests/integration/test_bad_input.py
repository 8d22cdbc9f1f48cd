"""Malformed or unsupported configs are refused with one line naming the field, and leave nothing behind.

`host_unchanged` checks the host after each test: no new mount, no state directory entry, no process
running in the busybox rootfs.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MINIRUN, ROOTFS, Result, Runtime, processes_rooted_at

Config = dict[str, Any]
Mutation = Callable[[Config], None]

VERBS = {"create": ("create",), "run": ("run",)}


def failing(rt: Runtime, verb: tuple[str, ...], bundle: Path, cid: str = "bad") -> Result:
    """`verb` on `bundle`; stdio in files, so a create that wrongly succeeds cannot hang the test."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run([str(MINIRUN), "--root", str(rt.root), *verb, "--bundle", str(bundle), cid],
                              stdin=subprocess.DEVNULL, stdout=out, stderr=err, timeout=60)
        out.seek(0)
        err.seek(0)
        return Result(proc.returncode, out.read(), err.read())


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def assert_refused(result: Result, *wanted: str) -> str:
    assert result.returncode != 0, result
    message = one_line(result.stderr)
    for part in wanted:
        assert part in message, (part, message)
    assert "Traceback" not in result.stderr
    return message


def assert_no_state(rt: Runtime) -> None:
    assert not rt.root.exists() or list(rt.root.iterdir()) == []


# --- malformed configs, refused before anything is created ------------------------------------------


def _set(path: str, value: Any) -> Mutation:
    """Set the dotted `path` (list indexes as numbers) of the config to `value`."""

    def mutate(config: Config) -> None:
        *parents, last = path.split(".")
        node: Any = config
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _delete(key: str) -> Mutation:
    def mutate(config: Config) -> None:
        del config[key]

    return mutate


def _append_mount(mount: dict[str, Any]) -> Mutation:
    def mutate(config: Config) -> None:
        config["mounts"].append(mount)

    return mutate


def _append_namespace(ns_type: str) -> Mutation:
    def mutate(config: Config) -> None:
        config["linux"]["namespaces"].append({"type": ns_type})

    return mutate


def _drop_uts(config: Config) -> None:
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"] if ns["type"] != "uts"]
    config["hostname"] = "somehost"


# (test id, mutation of the default config, strings the error line must contain). The default config
# has 7 mounts and 6 namespaces, so an appended one is mounts[7] / linux.namespaces[6].
MALFORMED: list[tuple[str, Mutation, tuple[str, ...]]] = [
    ("process-missing", _delete("process"), ("process", "required")),
    ("process-not-object", _set("process", ["sh"]), ("process", "must be an object")),
    ("root-missing", _delete("root"), ("root", "required")),
    ("args-empty", _set("process.args", []), ("process.args", "must not be empty")),
    ("args-missing", lambda c: c["process"].pop("args"), ("process.args", "required")),
    ("args-not-array", _set("process.args", "/bin/sh"), ("process.args", "must be an array")),
    ("args-not-strings", _set("process.args", ["/bin/echo", 5]), ("process.args[1]", "must be a string")),
    ("args0-empty", _set("process.args", [""]), ("process.args[0]",)),
    ("cwd-relative", _set("process.cwd", "tmp"), ("process.cwd", "absolute")),
    ("cwd-missing", lambda c: c["process"].pop("cwd"), ("process.cwd", "required")),
    ("mount-destination-relative",
     _append_mount({"destination": "mnt", "type": "tmpfs", "source": "tmpfs"}),
     ("mounts[7].destination", "absolute")),
    ("mounts-not-array", _set("mounts", {"destination": "/mnt"}), ("mounts", "must be an array")),
    ("namespace-unknown", _append_namespace("bogus"), ("linux.namespaces[6].type", "bogus")),
    ("namespace-duplicate", _append_namespace("pid"), ("linux.namespaces[6].type", "duplicate")),
    ("rootfs-missing", _set("root.path", "no-such-rootfs"), ("root.path", "no-such-rootfs")),
    ("rootfs-is-a-file", _set("root.path", str(ROOTFS / "etc" / "passwd")), ("root.path", "not a directory")),
    ("uid-string", _set("process.user.uid", "0"), ("process.user.uid", "must be an integer")),
    ("uid-negative", _set("process.user.uid", -1), ("process.user.uid",)),
    ("terminal-yes", _set("process.terminal", "yes"), ("process.terminal", "must be a boolean")),
    ("rlimit-soft-above-hard",
     _set("process.rlimits.0", {"type": "RLIMIT_NOFILE", "soft": 2048, "hard": 1024}),
     ("process.rlimits[0]", "2048", "1024")),
    ("rlimit-unknown", _set("process.rlimits.0", {"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}),
     ("process.rlimits[0].type", "RLIMIT_BOGUS")),
    ("capability-unknown", _set("process.capabilities.bounding", ["CAP_KILL", "CAP_BOGUS"]),
     ("process.capabilities.bounding[1]", "CAP_BOGUS")),
    ("oom-score-adj-out-of-range", _set("process.oomScoreAdj", 5000), ("process.oomScoreAdj", "5000")),
    ("env-without-equals", _set("process.env", ["PATH=/bin", "JUSTANAME"]), ("process.env[1]", "JUSTANAME")),
    ("hostname-without-uts", _drop_uts, ("hostname", "uts")),
    ("seccomp-unknown-action", _set("linux.seccomp", {"defaultAction": "SCMP_ACT_NOPE"}),
     ("linux.seccomp.defaultAction", "SCMP_ACT_NOPE")),
    ("user-namespace-without-mappings", _append_namespace("user"), ("linux.namespaces[6].type", "Mappings")),
    ("uid-mappings-without-user-namespace",
     _set("linux.uidMappings", [{"containerID": 0, "hostID": 1000, "size": 1}]),
     ("linux.uidMappings", "user namespace")),
    ("intel-rdt-unsupported", _set("linux.intelRdt", {"closID": "x"}), ("linux.intelRdt", "not supported")),
    ("sysctl-not-namespaced", _set("linux.sysctl", {"vm.swappiness": "10"}), ("vm.swappiness", "namespaced")),
    ("hook-relative-path", _set("hooks", {"prestart": [{"path": "bin/hook"}]}), ("hooks.prestart[0].path",)),
    ("annotation-not-string", _set("annotations", {"a": 1}), ("annotations", "must be a string")),
]


@pytest.mark.parametrize("verb", list(VERBS.values()), ids=list(VERBS))
@pytest.mark.parametrize("mutate, wanted", [(m, w) for _, m, w in MALFORMED],
                         ids=[i for i, _, _ in MALFORMED])
def test_malformed_config_is_refused_naming_the_field(
        runtime: Runtime, host_unchanged: None, verb: tuple[str, ...], mutate: Mutation,
        wanted: tuple[str, ...]) -> None:
    config = copy.deepcopy(runtime.config)
    mutate(config)
    result = failing(runtime, verb, runtime.bundle(config))
    message = assert_refused(result, *wanted)
    assert message.startswith("config.json: "), message
    assert result.stdout == ""
    assert_no_state(runtime)


RAW: list[tuple[str, str, tuple[str, ...]]] = [
    ("invalid-json", '{"ociVersion": "1.2.0", "process": ', ("config.json", "invalid JSON")),
    ("empty-file", "", ("config.json", "invalid JSON")),
    ("top-level-array", "[1, 2]", ("config.json", "must be an object")),
    ("top-level-string", '"hello"', ("config.json", "must be an object")),
    ("not-utf8", '{"hostname": "\udcff"}', ("config.json",)),
]


@pytest.mark.parametrize("verb", list(VERBS.values()), ids=list(VERBS))
@pytest.mark.parametrize("raw, wanted", [(r, w) for _, r, w in RAW], ids=[i for i, _, _ in RAW])
def test_unparseable_config_is_refused(runtime: Runtime, host_unchanged: None, verb: tuple[str, ...],
                                       raw: str, wanted: tuple[str, ...]) -> None:
    bundle = runtime.bundle(config={})
    (bundle / "config.json").write_bytes(raw.encode("utf-8", "surrogateescape"))
    assert_refused(failing(runtime, verb, bundle), *wanted)
    assert_no_state(runtime)


@pytest.mark.parametrize("verb", list(VERBS.values()), ids=list(VERBS))
def test_bundle_without_config_is_refused(runtime: Runtime, host_unchanged: None, verb: tuple[str, ...],
                                          tmp_path: Path) -> None:
    assert_refused(failing(runtime, verb, tmp_path), str(tmp_path / "config.json"))
    assert_no_state(runtime)


# --- failures only the container's init can find ------------------------------------------------------


@pytest.mark.parametrize("verb", list(VERBS.values()), ids=list(VERBS))
def test_missing_executable_fails_in_runcs_words(
        runtime: Runtime, host_unchanged: None, verb: tuple[str, ...]) -> None:
    config = copy.deepcopy(runtime.config)
    config["process"]["args"] = ["nosuchcmd", "--flag"]
    result = failing(runtime, verb, runtime.bundle(config))
    assert_refused(result, 'exec: "nosuchcmd": executable file not found in $PATH')
    assert result.returncode == 127
    assert_no_state(runtime)


@pytest.mark.parametrize("verb", list(VERBS.values()), ids=list(VERBS))
def test_missing_absolute_executable_names_it(
        runtime: Runtime, host_unchanged: None, verb: tuple[str, ...]) -> None:
    config = copy.deepcopy(runtime.config)
    config["process"]["args"] = ["/usr/bin/nosuchcmd"]
    result = failing(runtime, verb, runtime.bundle(config))
    assert_refused(result, 'exec: "/usr/bin/nosuchcmd"', "no such file or directory")
    assert_no_state(runtime)


@pytest.mark.parametrize("verb", list(VERBS.values()), ids=list(VERBS))
def test_bind_mount_of_a_missing_source_names_the_mount(
        runtime: Runtime, host_unchanged: None, verb: tuple[str, ...], tmp_path: Path) -> None:
    missing = tmp_path / "no-such-source"
    config = copy.deepcopy(runtime.config)
    config["mounts"].append({"destination": "/mnt", "type": "bind", "source": str(missing),
                             "options": ["rbind"]})
    result = failing(runtime, verb, runtime.bundle(config))
    assert_refused(result, "mounts[7].source", str(missing), "no such file or directory")
    assert_no_state(runtime)
    assert not missing.exists()


@pytest.mark.parametrize("verb", list(VERBS.values()), ids=list(VERBS))
def test_mount_of_an_unknown_filesystem_fails_with_the_kernels_reason(
        runtime: Runtime, host_unchanged: None, verb: tuple[str, ...]) -> None:
    config = copy.deepcopy(runtime.config)
    config["mounts"].append({"destination": "/mnt", "type": "nosuchfs", "source": "none"})
    result = failing(runtime, verb, runtime.bundle(config))
    assert_refused(result, "nosuchfs", "mounts[7]", "no such device")
    assert_no_state(runtime)


@pytest.mark.parametrize("verb", list(VERBS.values()), ids=list(VERBS))
def test_failure_inside_the_new_namespaces_reaches_the_parent_and_leaves_nothing(
        runtime: Runtime, host_unchanged: None, verb: tuple[str, ...], tmp_path: Path) -> None:
    # A private copy of the rootfs in which /mnt/file is a regular file: binding onto
    # /mnt/file/sub fails in the init, after it has created its namespaces and bound the rootfs.
    rootfs = tmp_path / "rootfs"
    shutil.copytree(ROOTFS, rootfs, symlinks=True)
    (rootfs / "mnt" / "file").write_text("a file, not a directory\n")
    source = tmp_path / "source"
    source.mkdir()
    before = sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*"))

    config = copy.deepcopy(runtime.config)
    config["root"]["path"] = str(rootfs)
    config["mounts"].append({"destination": "/mnt/file/sub", "type": "bind", "source": str(source),
                             "options": ["rbind"]})
    result = failing(runtime, verb, runtime.bundle(config))
    assert_refused(result, "/mnt/file", "not a directory")
    assert result.returncode != 0
    assert_no_state(runtime)
    assert processes_rooted_at(rootfs) == []
    assert sorted(str(p.relative_to(rootfs)) for p in rootfs.rglob("*")) == before
    assert (rootfs / "mnt" / "file").read_text() == "a file, not a directory\n"
    assert list(source.iterdir()) == []


def test_a_failed_create_does_not_block_the_id(runtime: Runtime, host_unchanged: None) -> None:
    bad = copy.deepcopy(runtime.config)
    bad["process"]["args"] = ["nosuchcmd"]
    assert failing(runtime, ("create",), runtime.bundle(bad), cid="reused").returncode != 0

    good = failing(runtime, ("run",), runtime.bundle(), cid="reused")
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["pid"] == 1
    assert_no_state(runtime)
