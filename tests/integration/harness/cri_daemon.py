"""A private containerd with its CRI plugin enabled: runtime handlers ``pyshim`` (io.containerd.pyshim.v1) and
``runc`` (io.containerd.runc.v2), a test CNI network, and image pulls sent to a local registry.

Rules:
- Everything PrivateContainerd promises still holds (own root, state, sockets; nothing shared but the host).
  CRI always works in the containerd namespace ``k8s.io``; that name is shared with any other CRI instance
  on the machine (e.g. the other containerd versions running in parallel), so every check and every clean-up
  here is keyed by the sandbox and container ids *this* instance created, read back from its own log
  (``returns sandbox id`` / ``returns container id``).  The base class's namespace stays private and empty.
- Config: 1.x (config version 2) ``[plugins."io.containerd.grpc.v1.cri"]``; 2.x (version 3) the split
  ``io.containerd.cri.v1.images`` / ``io.containerd.cri.v1.runtime`` / ``io.containerd.grpc.v1.cri``
  plugins with ``sandboxer = "podsandbox"``.  Pod network namespaces are mounted under the state dir
  (``netns_mounts_under_state_dir``), so the mount checks of the base class cover them.
- CNI: a private bin dir holding Debian's ``loopback`` plugin and ``cni_veth.py`` (harness), and one
  network config; see cni_veth.py for why no packet can leave a pod.
- Teardown first removes every pod through CRI, then runs the base teardown, then reports (and cleans) what
  is left of this instance's ids: runtime state dirs, processes in their cgroups, group shim sockets.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Sequence

from . import cri_api, procs
from .cri_images import PAUSE_REF
from .daemon import DISABLED_PLUGINS, PrivateContainerd
from .dist import Dist, Unavailable

CRI_NAMESPACE = "k8s.io"
CNI_PLUGINS = Path("/usr/lib/cni")
CRI_PLUGINS = ("io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime",
               "io.containerd.podsandbox.controller.v1.podsandbox")
HANDLERS = {"pyshim": "io.containerd.pyshim.v1", "runc": "io.containerd.runc.v2"}
ID_RE = re.compile(r'returns (?:sandbox|container) id \\?"([0-9a-f]{64})')


def q(value: object) -> str:
    """A TOML basic string."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return q(value)


def cri_config(major: int, *, cni_bin: Path, cni_conf: Path, hosts_dir: Path,
               handlers: dict[str, str] = HANDLERS, handler_options: dict[str, dict[str, object]] | None = None,
               handler_settings: dict[str, dict[str, object]] | None = None) -> str:
    """The CRI part of containerd's config for containerd ``major`` (1 or 2).  ``handler_options`` gives a
    handler its ``options`` table (e.g. pyshim's ``ConfigPath``, or an inline table containerd 1.7+ sends as
    runtimeoptions config_body); ``handler_settings`` adds keys of the handler's own table (``pod_annotations``,
    ``cni_conf_dir``, ...)."""
    lines: list[str] = []
    # This machine (and CI's) lacks CAP_SYS_RESOURCE: CRI's oom_score_adj -998 for sandboxes would make
    # runc's nsexec fail with EACCES, for every runtime.  restrict_oom_score_adj clamps it to containerd's.
    restrict = "  restrict_oom_score_adj = true"
    stream = ['  stream_server_address = "127.0.0.1"', '  stream_server_port = "0"']
    if major >= 2:
        images, runtime = '"io.containerd.cri.v1.images"', '"io.containerd.cri.v1.runtime"'
        lines += [f"[plugins.{images}]", '  snapshotter = "overlayfs"',
                  f"[plugins.{images}.pinned_images]", f"  sandbox = {q(PAUSE_REF)}",
                  f"[plugins.{images}.registry]", f"  config_path = {q(hosts_dir)}",
                  f"[plugins.{runtime}]", "  netns_mounts_under_state_dir = true", "  enable_cdi = false", restrict,
                  f"[plugins.{runtime}.cni]", f"  bin_dirs = [{q(cni_bin)}]", f"  conf_dir = {q(cni_conf)}",
                  f"[plugins.{runtime}.containerd]", '  default_runtime_name = "runc"']
        section, sandbox_key = f"plugins.{runtime}.containerd.runtimes", "sandboxer"
        lines += ['[plugins."io.containerd.grpc.v1.cri"]', *stream]
    else:
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        lines += [f"[{cri}]", f"  sandbox_image = {q(PAUSE_REF)}", "  netns_mounts_under_state_dir = true",
                  restrict, *stream,
                  f"[{cri}.cni]", f"  bin_dir = {q(cni_bin)}", f"  conf_dir = {q(cni_conf)}",
                  f"[{cri}.registry]", f"  config_path = {q(hosts_dir)}",
                  f"[{cri}.containerd]", '  snapshotter = "overlayfs"', '  default_runtime_name = "runc"']
        section, sandbox_key = f"{cri}.containerd.runtimes", "sandbox_mode"
    for name, runtime_type in handlers.items():
        lines += [f"[{section}.{name}]", f"  runtime_type = {q(runtime_type)}", f'  {sandbox_key} = "podsandbox"']
        lines += [f"  {k} = {toml_value(v)}" for k, v in (handler_settings or {}).get(name, {}).items()]
        options = (handler_options or {}).get(name)
        if options:
            lines += [f"[{section}.{name}.options]", *(f"  {k} = {toml_value(v)}" for k, v in options.items())]
    return "\n".join(lines) + "\n"


class CriContainerd(PrivateContainerd):
    disabled_plugins = tuple(p for p in DISABLED_PLUGINS if p not in CRI_PLUGINS)

    def __init__(self, dist: Dist, *, registry_url: str, shim_dirs: Sequence[Path] = (),
                 log_dir: Path | None = None, log_level: str = "debug", handlers: dict[str, str] = HANDLERS,
                 handler_options: dict[str, dict[str, object]] | None = None,
                 handler_settings: dict[str, dict[str, object]] | None = None) -> None:
        super().__init__(dist, shim_dirs=shim_dirs, log_dir=log_dir, log_level=log_level)
        self.handlers, self.handler_options, self.handler_settings = handlers, handler_options, handler_settings
        self.registry_url = registry_url
        self.cni_bin = self.run_dir / "cni" / "bin"
        self.cni_conf = self.run_dir / "cni" / "net.d"
        self.hosts_dir = self.run_dir / "certs.d"
        self.pod_logs = self.run_dir / "pod-logs"
        self.cgroup_parent = f"/pyshim-cri-{self.unique}"  # for pods our own tests create
        self._client: cri_api.Client | None = None

    # -- configuration ---------------------------------------------------------------------------------------
    def config_text(self) -> str:
        return super().config_text() + "\n" + cri_config(
            self.dist.major, cni_bin=self.cni_bin, cni_conf=self.cni_conf, hosts_dir=self.hosts_dir,
            handlers=self.handlers, handler_options=self.handler_options, handler_settings=self.handler_settings)

    def _prepare(self) -> None:
        from .cri_registry import write_hosts

        loopback = CNI_PLUGINS / "loopback"
        if not os.access(loopback, os.X_OK):
            raise Unavailable(f"{loopback} missing: install Debian's containernetworking-plugins (./install.sh)")
        for d in (self.cni_bin, self.cni_conf, self.hosts_dir, self.pod_logs):
            d.mkdir(parents=True, exist_ok=True)
        for name, target in (("loopback", loopback), ("pyshim-veth", Path(__file__).with_name("cni_veth.py"))):
            link = self.cni_bin / name
            if not link.exists():
                link.symlink_to(target)
        (self.cni_conf / "10-pyshim-test.conflist").write_text(json.dumps({
            "cniVersion": "0.4.0", "name": "pyshim-test", "plugins": [{"type": "pyshim-veth"}]}))
        write_hosts(self.hosts_dir, self.registry_url)

    def start(self, timeout: float = 30.0) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
        self._prepare()
        super().start(timeout)

    # -- CRI access ------------------------------------------------------------------------------------------
    @property
    def client(self) -> cri_api.Client:
        if self._client is None:
            self._client = cri_api.Client(self.address)
        return self._client

    def cri_bundle(self, task_id: str) -> Path:
        return self.state / "io.containerd.runtime.v2.task" / CRI_NAMESPACE / task_id

    def cri_shim_address(self, task_id: str) -> str:
        """The shim address containerd recorded for a CRI task (bootstrap.json on 2.x, else ``address``)."""
        bundle = self.cri_bundle(task_id)
        if (bundle / "bootstrap.json").exists():
            return json.loads((bundle / "bootstrap.json").read_text())["address"]
        return (bundle / "address").read_text()

    def group_socket(self, group_id: str) -> Path:
        """The socket a shim of grouping id ``group_id`` binds (upstream's naming, shim/address.py)."""
        name = f"{self.address}/{CRI_NAMESPACE}/{group_id}"
        return Path("/run/containerd/s") / hashlib.sha256(name.encode()).hexdigest()

    def created_ids(self) -> set[str]:
        """Every sandbox and container id this instance's CRI handed out (from its log)."""
        try:
            return set(ID_RE.findall(self.log_path.read_text(errors="replace")))
        except FileNotFoundError:
            return set()

    # -- teardown --------------------------------------------------------------------------------------------
    def cri_leftovers(self, ids: set[str]) -> list[str]:
        found = []
        for i in sorted(ids):
            for runtime in ("runc", "crun", "runsc"):
                if (Path(f"/run/containerd/{runtime}") / CRI_NAMESPACE / i).exists():
                    found.append(f"{runtime} state left for {i}")
            if self.group_socket(i).exists():
                found.append(f"shim socket left for group {i}: {self.group_socket(i)}")
        for p in self.processes_of(ids):
            found.append(f"process {p.pid} still in a cgroup of this instance: {' '.join(p.argv)}")
        return found

    def processes_of(self, ids: set[str]) -> list[procs.Proc]:
        """Processes whose cgroup path names one of ``ids`` or lies below our cgroup parent."""
        found = []
        for p in procs.all_processes():
            try:
                text = Path(f"/proc/{p.pid}/cgroup").read_text()
            except OSError:
                continue
            paths = {line.split(":", 2)[-1] for line in text.splitlines()}
            if any(path.startswith(self.cgroup_parent + "/") or any(i in path for i in ids) for path in paths):
                found.append(p)
        return found

    def teardown(self) -> list[str]:
        problems: list[str] = []
        if self.pid is not None:
            try:
                problems += self.client.remove_all()
            except Exception as exc:  # noqa: BLE001 - any failure is reported, teardown goes on
                problems.append(f"CRI cleanup failed: {exc!r}")
        if self._client is not None:
            self._client.close()
            self._client = None
        ids = self.created_ids()
        problems += super().teardown()
        left = self.cri_leftovers(ids)
        if left:
            procs.kill_all(self.processes_of(ids))
            for i in ids:
                self.group_socket(i).unlink(missing_ok=True)
                for runtime in ("runc", "crun", "runsc"):
                    shutil.rmtree(Path(f"/run/containerd/{runtime}") / CRI_NAMESPACE / i, ignore_errors=True)
        problems += left
        problems += procs.remove_cgroups(self.cgroup_parent.strip("/"))
        return problems
