"""OciCli: the one RuntimeBackend that drives an OCI-CLI runtime (runc, crun, runsc, ...) configured by OciConfig.

Rules:
- Commands run only through the injected Launcher (the shim's reaper); argv comes from the pure builders in
  runtime/oci_argv.py, argv[0] resolved against the runtime's $PATH at each call.
- Environment: the process environment without the shim's own variables (runtime/environ.py: NOTIFY_SOCKET,
  containerd's sockets, PYSHIM_*, ...), plus cfg.extra_env, made once per distinct
  extra_env and shared by every backend of the process (a shim's environment does not change; building it per
  call was a measurable part of every call, and a copy per container a measurable part of a shared daemon).
- StdioFds for create/exec/restore: the caller's fds; a missing one is /dev/null (opened and closed here), except in
  terminal mode where stdout/stderr are captured (the container uses the pty) so their text can explain a failure.
- Errors: before each call a LogCursor remembers the end of <bundle>/log.json; on a non-zero exit the last error
  the call appended is the message, else the captured output, else the exit status; runtime/errors.classify turns it
  into a domain error. Launch failures (binary missing) become RuntimeFailed. Cancellation is never caught.
  A runtime that left no error in log.json while the bundle's file system is full could not have written one:
  the message then says the file system is full (``full_disk_hint``), instead of a bare exit status.
- Owned resources: the /dev/null fds and exec's private process-JSON temp file, both released before returning.
- Plain blocking file I/O for pid files, log.json and the temp file: all local and tiny.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
import types
from typing import Any

from runtime import oci_argv
from runtime.base import (
    CheckpointSpec,
    ContainerRef,
    ContainerState,
    CreateSpec,
    ExecSpec,
    Launcher,
    RestoreSpec,
    RunResult,
    Status,
    StdioFds,
)
from runtime.errors import BackendError, RuntimeFailed, classify, failure_message
from runtime.logjson import LogCursor
from runtime.oci_config import OciConfig


def read_pid_file(op: str, path: str) -> int:
    try:
        with open(path, "rb") as f:
            text = f.read(64).decode("ascii", errors="replace").strip()
    except OSError as e:
        raise RuntimeFailed(op, failure_message(op, f"unable to read pid file: {e}")) from e
    if not text.isdigit() or int(text) <= 0:
        raise RuntimeFailed(op, failure_message(op, f"invalid pid {text!r} in {path}"))
    return int(text)


def decode_json_output(op: str, output: bytes, kind: type) -> Any:
    """The first JSON value of type `kind` in the runtime's output (warnings may precede it on stderr)."""
    text = output.decode("utf-8", errors="replace")
    decoder = json.JSONDecoder()
    opener = "{" if kind is dict else "["
    pos = text.find(opener)
    while pos != -1:
        try:
            value, _ = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, kind):
            return value
        pos = text.find(opener, pos + 1)
    raise RuntimeFailed(op, failure_message(op, f"cannot parse the runtime's output: {text[:200]!r}"))


def parse_state(ref: ContainerRef, doc: dict[str, Any]) -> ContainerState:
    pid = doc.get("pid", 0)
    annotations = doc.get("annotations") or {}
    return ContainerState(
        id=str(doc.get("id", ref.id)),
        pid=pid if isinstance(pid, int) and pid > 0 else 0,
        status=Status.parse(str(doc.get("status", ""))),
        bundle=str(doc.get("bundle", "")),
        rootfs=str(doc.get("rootfs", "")),
        created=str(doc.get("created", "")),
        annotations=types.MappingProxyType(
            {str(k): str(v) for k, v in annotations.items()} if isinstance(annotations, dict) else {}),
    )


def rewrite_spec(config_json: str, keys: tuple[str, ...], oci_version: str = "") -> bool:
    """Remove annotations ``keys`` and set ``ociVersion`` (when given) in the bundle's spec; the file is
    rewritten atomically, and only if something changes.

    ``oci_version`` exists for runtimes older than the containerd writing the spec: Debian bookworm's crun 1.8.1
    refuses containerd 2.x's ociVersion 1.2.1 ("unknown version specified") though it runs those specs."""
    try:
        with open(config_json, "rb") as f:
            spec = json.loads(f.read())
    except (OSError, ValueError) as e:
        raise RuntimeFailed("create", f"cannot read {config_json}: {e}") from None
    annotations = spec.get("annotations") or {}
    drop = any(k in annotations for k in keys)
    version = bool(oci_version) and spec.get("ociVersion") != oci_version
    if not (drop or version):
        return False
    if drop:
        spec["annotations"] = {k: v for k, v in annotations.items() if k not in keys}
    if version:
        spec["ociVersion"] = oci_version
    # The spec holds the container's environment and names the hooks root runs: the new file is never more
    # readable than containerd's, and never writable but by its owner, whatever the umask.
    mode = stat.S_IMODE(os.stat(config_json).st_mode) & 0o644
    tmp = config_json + ".pyshim"
    try:
        os.unlink(tmp)  # a leftover would keep its mode through O_CREAT
    except FileNotFoundError:
        pass
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode), "w") as f:
            json.dump(spec, f)
        os.replace(tmp, config_json)
    except OSError as e:  # a full file system: config.json stays as it was, and no temporary file is left
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise RuntimeFailed("create", f"cannot rewrite {config_json}: {e.strerror or e}") from None
    return True


def full_disk_hint(bundle: str) -> str:
    """A sentence for an error message when ``bundle``'s file system has no free block or inode left, else ""."""
    try:
        st = os.statvfs(bundle)
    except OSError:
        return ""
    if st.f_bavail == 0 or (st.f_files and st.f_favail == 0):
        return (f"; the file system of {bundle} is full (no space left on device): the runtime could write "
                f"neither its files there nor why it failed")
    return ""


_ENVIRONMENTS: dict[tuple, dict[str, str]] = {}


def _runtime_env(cfg: OciConfig) -> dict[str, str]:
    env = _ENVIRONMENTS.get(cfg.extra_env)
    if env is None:
        env = _ENVIRONMENTS[cfg.extra_env] = oci_argv.runtime_env(cfg, os.environ)
    return env


class OciCli:
    """RuntimeBackend for one OciConfig (namespace already applied to its root)."""

    def __init__(self, cfg: OciConfig, launcher: Launcher) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.capabilities = cfg.capabilities
        self._launcher = launcher

    # -- plumbing ---------------------------------------------------------------------------------------------

    async def _run(self, op: str, argv: list[str], bundle: str, *, stdin: int | bytes | None = None,
                   stdout: int | None = None, stderr: int | None = None) -> RunResult:
        env = _runtime_env(self.cfg)
        binary = argv[0]
        if os.sep not in binary:
            found = shutil.which(binary, path=env.get("PATH", os.defpath))
            if found is None:
                raise RuntimeFailed(op, failure_message(op, f'exec: "{binary}": executable file not found in $PATH'))
            binary = found
        cursor = LogCursor.at_end(self.cfg.log_path(bundle))
        try:
            # In the container's bundle, as the Go shim's runtime calls (its daemon's cwd): wrappers such as
            # containerd's runc-fp read ./config.json; a shared daemon's own cwd is another container's bundle.
            result = await self._launcher.run([binary, *argv[1:]], env=env, stdin=stdin, stdout=stdout,
                                              stderr=stderr, cwd=bundle if os.path.isdir(bundle) else None)
        except OSError as e:
            raise RuntimeFailed(op, failure_message(op, f'exec: "{binary}": {e.strerror or e}')) from e
        if result.status != 0:
            raise self._error(op, binary, cursor, result, bundle)
        return result

    def _error(self, op: str, binary: str, cursor: LogCursor, result: RunResult, bundle: str) -> BackendError:
        exit_text = f"{binary} did not terminate successfully: exit status {result.status}"
        output = result.output.decode("utf-8", errors="replace").strip()
        try:
            msg = cursor.last_error()
        except OSError as e:
            msg, exit_text = None, f"unable to retrieve OCI runtime error ({e}): {exit_text}"
        detail = msg or (f"{exit_text}: {output}" if output else exit_text) + full_disk_hint(bundle)
        cfg = self.cfg
        return classify(op, detail, result.status, output=output, finished=cfg.finished_patterns,
                        not_found=cfg.not_found_patterns, exists=cfg.exists_patterns)

    async def _run_with_stdio(self, op: str, argv: list[str], bundle: str, stdio: StdioFds, terminal: bool) -> None:
        with contextlib.ExitStack() as stack:
            def fd_or_null(fd: int | None) -> int | None:
                if fd is not None or terminal:
                    return fd
                null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
                stack.callback(os.close, null)
                return null
            await self._run(op, argv, bundle, stdin=stdio.stdin,
                            stdout=fd_or_null(stdio.stdout), stderr=fd_or_null(stdio.stderr))

    # -- RuntimeBackend -----------------------------------------------------------------------------------------

    async def create(self, spec: CreateSpec) -> int:
        argv = oci_argv.create_argv(self.cfg, spec)  # raises Unsupported before anything is touched
        if self.cfg.drop_annotations or self.cfg.oci_version:
            rewrite_spec(os.path.join(spec.bundle, "config.json"), self.cfg.drop_annotations, self.cfg.oci_version)
        await self._run_with_stdio("create", argv, spec.bundle, spec.stdio, spec.console_socket is not None)
        return read_pid_file("create", spec.pid_file)

    async def start(self, ref: ContainerRef) -> None:
        await self._run("start", oci_argv.start_argv(self.cfg, ref.id, ref.bundle), ref.bundle)

    async def exec(self, spec: ExecSpec) -> int:
        fd, path = tempfile.mkstemp(prefix="runc-process", dir=os.environ.get("XDG_RUNTIME_DIR") or None)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(spec.process_json)
            argv = oci_argv.exec_argv(self.cfg, spec, path)
            await self._run_with_stdio("exec", argv, spec.bundle, spec.stdio, spec.console_socket is not None)
        finally:
            os.unlink(path)
        return read_pid_file("exec", spec.pid_file)

    async def kill(self, ref: ContainerRef, signal: int, *, all: bool = False) -> None:
        await self._run("kill", oci_argv.kill_argv(self.cfg, ref.id, ref.bundle, signal, all), ref.bundle)

    async def delete(self, ref: ContainerRef, *, force: bool = False) -> None:
        await self._run("delete", oci_argv.delete_argv(self.cfg, ref.id, ref.bundle, force), ref.bundle)

    async def state(self, ref: ContainerRef) -> ContainerState:
        result = await self._run("state", oci_argv.state_argv(self.cfg, ref.id, ref.bundle), ref.bundle)
        return parse_state(ref, decode_json_output("state", result.output, dict))

    async def ps(self, ref: ContainerRef) -> tuple[int, ...]:
        result = await self._run("ps", oci_argv.ps_argv(self.cfg, ref.id, ref.bundle), ref.bundle)
        if result.output.split()[-1:] == [b"null"]:
            return ()  # runc prints a Go nil slice as `null` when no process is left (stopped, not deleted)
        pids = decode_json_output("ps", result.output, list)
        if not all(isinstance(p, int) for p in pids):
            raise RuntimeFailed("ps", failure_message("ps", f"unexpected pid list {pids!r}"))
        return tuple(pids)

    async def pause(self, ref: ContainerRef) -> None:
        await self._run("pause", oci_argv.pause_argv(self.cfg, ref.id, ref.bundle), ref.bundle)

    async def resume(self, ref: ContainerRef) -> None:
        await self._run("resume", oci_argv.resume_argv(self.cfg, ref.id, ref.bundle), ref.bundle)

    async def update(self, ref: ContainerRef, resources_json: bytes) -> None:
        argv = oci_argv.update_argv(self.cfg, ref.id, ref.bundle)
        await self._run("update", argv, ref.bundle, stdin=resources_json)

    async def checkpoint(self, ref: ContainerRef, spec: CheckpointSpec) -> None:
        argv = oci_argv.checkpoint_argv(self.cfg, ref.id, ref.bundle, spec)
        try:
            await self._run("checkpoint", argv, ref.bundle)
        except RuntimeFailed as e:
            # as containerd: keep CRIU's dump.log next to the bundle and report only the first line plus its path
            dump_log = os.path.join(ref.bundle, "criu-dump.log")
            try:
                shutil.copyfile(os.path.join(spec.criu.work_path or spec.criu.image_path, "dump.log"), dump_log)
            except OSError:
                raise e from None
            raise RuntimeFailed("checkpoint", f"{str(e).splitlines()[0]} path= {dump_log}", e.status) from e

    async def restore(self, spec: RestoreSpec) -> int:
        argv = oci_argv.restore_argv(self.cfg, spec)
        await self._run_with_stdio("restore", argv, spec.bundle, spec.stdio, spec.console_socket is not None)
        return read_pid_file("restore", spec.pid_file)
