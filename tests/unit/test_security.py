"""Security properties of docs/security.md that need neither trio nor containerd: the identifier rule and the
start/delete commands' use of it, the environment runtimes get, the modes of the files the shim writes, the
annotation gate, and that no product code ever runs a shell.

Each test fails when its property is broken (each was checked against a copy of the code with the check
removed). The same properties elsewhere: tests/trio/test_security.py (the Task API's id check, the console
socket's peer check), tests/integration/test_security.py (a real daemon refusing another user's connection; a
real container's runtime environment, socket and bundle), tests/integration/test_forkserver.py (the fork
server's files and its refusal of non-root peers); docs/security.md lists them all.
"""
from __future__ import annotations

import ast
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, strategies as st

from runtime import builtin, environ as runtime_environ, oci_argv
from runtime.oci_config import configure
from shim import ids
from shim.runc import cleanup, config, daemon_settings
from tests.prereq import unavailable

REPO = Path(__file__).resolve().parents[2]
PRODUCT = ("shim", "runtime", "ttrpc", "protos", "examples/chroot-shim/chrootshim", "tests/plugins/pyshim-envtag")

# containerd's identifiers.Validate (identifiers/validate.go at v1.6.20, pkg/identifiers at 2.x), as Go writes it
CONTAINERD_RE = re.compile(r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$")
CONTAINERD_MAX = 76


def containerd_accepts(value: str) -> bool:
    return 0 < len(value) <= CONTAINERD_MAX and CONTAINERD_RE.fullmatch(value) is not None  # Go's $ is at the end


# -- ids: containerd's rule, nothing more and nothing less --------------------------------------------------------

@given(st.text(alphabet="aZ09._-/\0\n ä", max_size=80))
@example("a" * 76)
@example("a" * 77)
@example("a..b")
@example("a.")
@example("..")
def test_the_identifier_rule_is_containerds(value: str) -> None:
    assert (ids.problem(value) == "") == containerd_accepts(value), value


@pytest.mark.parametrize("value", ["", ".", "..", "../etc", "a/b", "/abs", "a\0b", "a" * 77, "-a", "a-", ".hidden",
                                   "a..b", "a b", "ä", "a\n"])
def test_ids_that_could_leave_a_directory_or_overflow_are_refused(value: str) -> None:
    assert ids.problem(value, "exec id").startswith("exec id")


@pytest.mark.parametrize("value", ["a", "c1", "A.b_c-d", "7" * 76, "sha256-0a1b"])
def test_ids_containerd_makes_are_accepted(value: str) -> None:
    assert ids.problem(value) == ""


def need_root() -> None:
    if os.geteuid() != 0:
        unavailable("the start/delete commands need root")


def run_shim(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ if env is None else env, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "shim", *args], cwd=cwd, capture_output=True, env=env, timeout=30,
                          check=False, stdin=subprocess.DEVNULL)


def fake_runtime(tmp_path: Path) -> Path:
    """A runtime that records its calls (it must never be called for a bad id)."""
    script = tmp_path / "fake-runc"
    script.write_text(f"#!{sys.executable}\nimport sys\nopen({str(tmp_path / 'calls')!r}, 'a').write(' '.join("
                      "sys.argv[1:]) + '\\n')\n")
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("flag, value", [("-id", "../../victim"), ("-id", "a/b"), ("-id", "x" * 77),
                                         ("-namespace", "../ns"), ("-namespace", "a/b")])
def test_delete_refuses_a_bad_id_or_namespace_before_any_path(tmp_path: Path, flag: str, value: str) -> None:
    need_root()
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    runtime = fake_runtime(tmp_path)
    state_dir = tmp_path / "root"
    (state_dir / "ns").mkdir(parents=True)
    (bundle / "pyshim.json").write_text(json.dumps({"runtime": {"binary": str(runtime), "root": str(state_dir),
                                                                "state_path": str(state_dir)}}))
    args = {"-namespace": "ns", "-id": "c1"} | {flag: value}
    done = run_shim([*(x for kv in args.items() for x in kv), "-bundle", str(bundle), "delete"], tmp_path)
    assert done.returncode == 1 and (b"must match" in done.stderr or b"longer than" in done.stderr), done.stderr
    assert done.stdout == b"" and not (tmp_path / "calls").exists()
    good = run_shim(["-namespace", "ns", "-id", "c1", "-bundle", str(bundle), "delete"], tmp_path)
    assert good.returncode == 0 and (tmp_path / "calls").read_text() == f"--root {state_dir} delete --force c1\n"


@pytest.mark.parametrize("flag, value", [("-id", "../x"), ("-id", "a\\b/c"), ("-namespace", ".."), ("-id", "")])
def test_start_refuses_a_bad_id_or_namespace_before_any_path(tmp_path: Path, flag: str, value: str) -> None:
    need_root()
    bundle = tmp_path / "bundle"
    (bundle / "rootfs").mkdir(parents=True)
    (bundle / "config.json").write_text('{"ociVersion": "1.0.2"}')
    args = {"-namespace": "ns", "-id": "c1", "-address": "/run/pyshim-test/none.sock"} | {flag: value}
    env = dict(os.environ, PYSHIM_FORKSERVER="off")
    done = run_shim([*(x for kv in args.items() for x in kv), "start"], bundle, env)
    assert done.returncode == 1 and (b"must match" in done.stderr or b"must not be empty" in done.stderr), done
    assert done.stdout == b"" and sorted(p.name for p in bundle.iterdir()) == ["config.json", "rootfs"]


@pytest.mark.parametrize("flag, value", [("-id", "../x"), ("-namespace", "a/b")])
def test_the_daemon_refuses_a_bad_id_or_namespace(tmp_path: Path, flag: str, value: str) -> None:
    args = {"-namespace": "ns", "-id": "c1", "-address": "/run/pyshim-test/none.sock"} | {flag: value}
    done = run_shim([*(x for kv in args.items() for x in kv)], tmp_path)
    assert done.returncode == 1 and b"must match" in done.stderr, done.stderr
    assert b"fd 3 is not a socket" not in done.stderr  # refused before it looked for its listener


# -- the environment of runtime processes ---------------------------------------------------------------------------

SHIM_ENV = {"PATH": "/usr/sbin:/usr/bin", "HOME": "/root", "GOMAXPROCS": "2", "LANG": "C.UTF-8",
            "NOTIFY_SOCKET": "/run/systemd/notify", "TTRPC_ADDRESS": "/run/containerd/containerd.sock.ttrpc",
            "GRPC_ADDRESS": "/run/containerd/containerd.sock", "NAMESPACE": "k8s.io", "MAX_SHIM_VERSION": "2",
            "SCHED_CORE": "1", "LISTEN_PID": "1", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b",
            "PYSHIM_CONFIG": "/etc/containerd/pyshim.toml", "PYSHIM_FORKSERVER_DIR": "/run/pyshim"}
KEPT = {"PATH", "HOME", "GOMAXPROCS", "LANG"}


def test_runtime_environment_drops_the_shims_own_variables() -> None:
    assert set(runtime_environ.for_runtime(SHIM_ENV)) == KEPT
    cfg = configure(builtin.RUNC, {"extra_env": {"NAMESPACE": "mine", "RUNC_X": "1"}}, "ns")
    env = oci_argv.runtime_env(cfg, SHIM_ENV)  # what the OCI CLI driver runs every runtime command with
    assert set(env) == KEPT | {"NAMESPACE", "RUNC_X"} and env["NAMESPACE"] == "mine"  # configuration may add back


def env_dumper(tmp_path: Path, output: str) -> Path:
    """A 'runtime' that writes its environment as JSON to ``output`` (and to stdout, for ``features``)."""
    script = tmp_path / "env-runtime"
    script.write_text(f"#!{sys.executable}\nimport json, os\ntext = json.dumps(dict(os.environ))\n"
                      f"open({output!r}, 'w').write(text)\nprint(text)\n")
    script.chmod(0o755)
    return script


def test_delete_and_info_run_the_runtime_without_the_shims_variables(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from shim.runc.features import runtime_features

    for key, value in SHIM_ENV.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "env.json"
    runtime = env_dumper(tmp_path, str(out))
    assert cleanup.runtime_delete(cleanup.RuntimeConfig(str(runtime), str(tmp_path)), "c1") is None
    seen = json.loads(out.read_text())
    assert not set(seen) & (set(SHIM_ENV) - KEPT) and seen["PATH"] == SHIM_ENV["PATH"]
    out.unlink()
    seen = json.loads(runtime_features(str(runtime)))
    assert not set(seen) & (set(SHIM_ENV) - KEPT) and seen["PATH"] == SHIM_ENV["PATH"]


async def test_the_oci_cli_driver_runs_the_runtime_without_the_shims_variables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime import oci_cli
    from tests.unit.test_runtime_oci_cli import FakeLauncher, _backend

    for key, value in SHIM_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(oci_cli, "_ENVIRONMENTS", {})  # made once per process: make it from this environment
    fake = FakeLauncher()
    await _backend(fake).kill(oci_cli.ContainerRef("c1", str(tmp_path)), 9)
    (call,) = fake.calls
    assert not set(call["env"]) & (set(SHIM_ENV) - KEPT) and call["env"]["PATH"] == SHIM_ENV["PATH"]


# -- modes of the files the shim writes, whatever containerd's umask ------------------------------------------------

@pytest.fixture
def umask_zero():
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_pyshim_json_is_private(tmp_path: Path, umask_zero: None) -> None:
    (tmp_path / "pyshim.json.tmp").write_text("left by a crash")
    os.chmod(tmp_path / "pyshim.json.tmp", 0o666)
    cleanup.write_state(str(tmp_path), {"binary": "runc", "root": "/run/containerd/runc/ns"})
    assert mode(tmp_path / "pyshim.json") == 0o600  # delete runs the binary it names, as root
    assert json.loads((tmp_path / "pyshim.json").read_text())["runtime"]["binary"] == "runc"


def test_address_file_is_not_writable_by_others(tmp_path: Path, umask_zero: None) -> None:
    from shim.bundle import write_address

    write_address(str(tmp_path), "unix:///run/containerd/s/abc")
    assert mode(tmp_path / "address") == 0o644  # as containerd 2.x writes it (atomicfile.New(path, 0o644))


@pytest.mark.parametrize("original", [0o644, 0o600, 0o666])
def test_a_rewritten_spec_is_never_more_open_than_containerds(tmp_path: Path, umask_zero: None,
                                                               original: int) -> None:
    from runtime.oci_cli import rewrite_spec

    spec = tmp_path / "config.json"
    spec.write_text(json.dumps({"ociVersion": "1.2.1", "process": {"env": ["PASSWORD=x"]}}))
    os.chmod(spec, original)
    assert rewrite_spec(str(spec), (), "1.1.0")
    assert mode(spec) == original & 0o644 and json.loads(spec.read_text())["ociVersion"] == "1.1.0"


def test_the_config_cache_and_its_parent_are_private(tmp_path: Path, umask_zero: None,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "run-pyshim" / "config"
    monkeypatch.setattr(daemon_settings, "CACHE_DIR", str(cache))
    monkeypatch.setenv("PYSHIM_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setattr(daemon_settings, "_last", None)
    daemon_settings.settings(())
    assert mode(cache.parent) == 0o700 and mode(cache) == 0o700  # the parent is the fork server's /run/pyshim
    assert [mode(p) for p in cache.iterdir()] == [0o600]


def test_the_fork_server_directory_is_made_or_tightened_to_0700(tmp_path: Path, umask_zero: None) -> None:
    from shim.forkserver.server import private_directory

    fresh = tmp_path / "a" / "fs"
    assert private_directory(str(fresh)) == "" and mode(fresh) == 0o700 and mode(fresh.parent) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    assert private_directory(str(loose)) == "" and mode(loose) == 0o700


def test_the_fork_server_refuses_a_directory_of_another_user(tmp_path: Path) -> None:
    from shim.forkserver.server import private_directory

    need_root()
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    assert "not a directory of uid 0" in private_directory(str(theirs))


# -- annotations choose nothing but an allowed backend --------------------------------------------------------------

HOSTILE = {"io.pyshim.binary": "/tmp/evil", "io.pyshim.root": "/", "io.pyshim.global_flags": "--debug",
           "io.pyshim.backends.runc.binary_name": "/tmp/evil", "io.pyshim.extra_env": "LD_PRELOAD=/tmp/evil.so",
           "io.containerd.runc.v2.group": "x", "io.pyshim.group": "y", "runc_options": "{}", "binary_name": "/x",
           "root": "/", "config_path": "/tmp/evil.toml", "io.pyshim.config": "/tmp/evil.toml"}


def test_annotations_cannot_change_the_backend_or_its_options(tmp_path: Path) -> None:
    from tests.unit.test_config import backend_for

    toml = ('allowed_backends = ["crun"]\n'
            '[backends.crun]\nroot = "/run/crun-ok"\nglobal_flags = ["--cgroup-manager=cgroupfs"]\n')
    plain = backend_for(tmp_path, default_text=toml)
    assert backend_for(tmp_path, default_text=toml, annotations=HOSTILE).cfg == plain.cfg
    picked = backend_for(tmp_path, default_text=toml, annotations={**HOSTILE, config.BACKEND_ANNOTATION: "crun"})
    assert picked.cfg == backend_for(tmp_path, default_text=toml,
                                     annotations={config.BACKEND_ANNOTATION: "crun"}).cfg
    assert (picked.cfg.root, picked.cfg.global_flags) == ("/run/crun-ok/ns", ("--cgroup-manager=cgroupfs",))
    with pytest.raises(config.ConfigError, match="not allowed"):
        backend_for(tmp_path, default_text=toml, annotations={**HOSTILE, config.BACKEND_ANNOTATION: "runsc"})
    with pytest.raises(config.ConfigError, match="must be a string"):
        backend_for(tmp_path, default_text=toml, annotations={config.BACKEND_ANNOTATION: ["crun"]})


# -- no shell, anywhere in the product --------------------------------------------------------------------------------

SHELLS = {"sh", "bash", "dash", "ash", "zsh", "/bin/sh", "/bin/bash", "/bin/dash", "/usr/bin/sh", "/usr/bin/bash",
          "/usr/bin/env"}
SHELL_CALLS = {"system", "popen", "getoutput", "getstatusoutput", "create_subprocess_shell"}


def shell_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in SHELL_CALLS:
                found.append(f"{path}:{node.lineno}: {name}()")
            for kw in node.keywords:
                if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                    found.append(f"{path}:{node.lineno}: shell=")
            for arg in node.args:  # a shell as the program: run(["sh", "-c", ...]), execv("/bin/sh", ...)
                first = arg.elts[0] if isinstance(arg, (ast.List, ast.Tuple)) and arg.elts else arg
                if isinstance(first, ast.Constant) and first.value in SHELLS:
                    found.append(f"{path}:{node.lineno}: runs {first.value}")
        elif isinstance(node, (ast.List, ast.Tuple)) and node.elts:
            first = node.elts[0]
            if isinstance(first, ast.Constant) and first.value in SHELLS:
                found.append(f"{path}:{node.lineno}: argv starting with {first.value}")
    return found


def test_no_product_code_runs_a_shell() -> None:
    files = [p for root in PRODUCT for p in sorted((REPO / root).rglob("*.py")) if "_pb2" not in p.name]
    assert len(files) > 100 and REPO / "shim" / "reaper.py" in files
    assert [use for path in files for use in shell_uses(path)] == []


def test_the_shell_scan_sees_every_spelling(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os, subprocess\nos.system('runc list')\nsubprocess.run('runc list', shell=True)\n"
                   "subprocess.run(['/bin/sh', '-c', 'runc list'])\nos.execv('/bin/sh', ['sh'])\nargv = ('sh', '-c')\n"
                   "subprocess.run(['runc', 'list'], shell=False)\n")
    lines = {int(use.split(":")[1]) for use in shell_uses(bad)}
    assert lines == {2, 3, 4, 5, 6}  # not 7: shell=False is fine


# -- the fork server's client asks only a server of its own uid -----------------------------------------------------

def test_start_sends_no_request_to_a_fork_server_of_another_uid(tmp_path: Path) -> None:
    """The request carries the daemon's environment and the listening socket containerd will connect to."""
    import socket

    from shim.forkserver import client
    from shim.forkserver import protocol as proto

    need_root()
    location = proto.Location(str(tmp_path), "k", "shim.runc.manager:MANAGER")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(location.path("sock"))
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the impostor: listens as uid 65534 (SO_PEERCRED reports the listener's credentials)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            server.listen(1)
            os.write(writer, b"L")
            server.settimeout(10)
            conn, _ = server.accept()
            conn.settimeout(5)
            data, fds, _, _ = socket.recv_fds(conn, 65536, 4)
            os.write(writer, b"got %d bytes %d fds" % (len(data), len(fds)))
        finally:
            os._exit(0)
    server.close()
    os.close(writer)
    try:
        assert os.read(reader, 1) == b"L"
        pid, why = client.request_daemon(location, proto.Request(("-namespace", "ns", "-id", "c1"), (b"SECRET=1",),
                                                                 b"/", 0o22, ("/bin/false",)), reader)
        assert pid == 0 and "uid 65534" in why, why
    finally:
        os.waitpid(child, 0)
        with os.fdopen(reader, "rb") as f:
            assert f.read() == b"got 0 bytes 0 fds"
