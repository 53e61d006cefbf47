"""pyshim's Manager: the runc-style shim ``io.containerd.pyshim.v1``, one user of the library (shim/manager.py).

Rules:
- Grouping: the first non-empty annotation of GROUP_ANNOTATIONS in the bundle's config.json, else the container
  id. pyshim's own ``io.pyshim.group`` comes first, then the runc shim's key (so specs written for runc group the
  same way), then CRI's sandbox id. Deviation: Go's runc shim also accepts an annotation whose value is empty
  (grouping everything with an empty value); we treat an empty value as absent.
- The daemon's cgroup: ``shim_cgroup`` of containerd.runc.v1.Options (field 3), or field 9 of the legacy
  containerd.linux.runc.CreateOptions that 1.6/1.7 clients send for runtimes not named io.containerd.runc.*
  (containerd's TestShimInCgroup). An options Any that does not decode fails the start.
- Sharing: pyshim.toml's ``sharing = "namespace"`` (read through shim/runc/daemon_settings.py's cache) shares
  daemons between the containers of a namespace whose runtime options and ``io.pyshim.backend`` annotation are
  the same bytes: those decide the backend configuration and the daemon's cgroup, so containers that differ in
  them never share a daemon. ``fork_server`` decides whether a new daemon is forked or spawned fresh.
- ``delete`` runs shim/runc/cleanup.py; ``-info`` asks the OCI runtime for its features (shim/runc/features.py).
- Failpoints: run as ``containerd-shim-runc-fp-v1`` (FAILPOINT_BINARY, e.g. a symlink to pyshim's binary;
  shim/runc/main.py looks at the program name), pyshim is ``io.containerd.runc-fp.v1``, the runtime containerd's
  CRI failpoint tests name: the same shim with containerd's failpoint annotations on for every task
  (shim/failpoint_wrap.py). It has a fork server of its own. Otherwise pyshim.toml's ``failpoints`` decides.
- The daemon serves shim/runc/service.py over shim/runc/task/, with backends made per Create
  (shim/runc/backend_factory.py). Those imports happen inside ``task_service``: this module is on the
  critical path of start and delete and imports only the standard library, and what only some starts need
  (options, sharing) where it is used.
"""

from __future__ import annotations

from shim.manager import Manager
from shim.runc import daemon_settings

try:  # the builtin module avoids loading OpenSSL through hashlib
    from _sha256 import sha256
except ImportError:  # pragma: no cover
    from hashlib import sha256

TYPE_CHECKING = False
if TYPE_CHECKING:
    from shim.daemon import Daemon
    from shim.manager import CleanupRequest, StartRequest
    from shim.service import TaskService
    from shim.sharing import Sharing

__all__ = ["FAILPOINT_BINARY", "FP_MANAGER", "GROUP_ANNOTATIONS", "MANAGER", "RuncFailpointManager", "RuncManager",
           "grouping_id", "shim_cgroup"]

BACKEND_ANNOTATION = "io.pyshim.backend"  # as shim/runc/config.py
FAILPOINT_BINARY = "containerd-shim-runc-fp-v1"
GROUP_ANNOTATIONS = (
    "io.pyshim.group",
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
)


def grouping_id(annotations: dict[str, object], container_id: str) -> str:
    """The first non-empty string among GROUP_ANNOTATIONS, else the container id."""
    for key in GROUP_ANNOTATIONS:
        value = annotations.get(key)
        if isinstance(value, str) and value:
            return value
    return container_id


def shim_cgroup(options: bytes) -> str:
    """``shim_cgroup`` of one options Any (see the module rules); "" for no options or another type."""
    if not options:
        return ""
    from shim.runc.typeurls import LEGACY_CREATE_OPTIONS, RUNC_OPTIONS, type_name
    from ttrpc import wire

    type_url, value = wire.decode_any(options)
    field = {RUNC_OPTIONS: 3, LEGACY_CREATE_OPTIONS: 9}.get(type_name(type_url))
    if field is None:
        return ""
    return wire.get_string(wire.fields(value), field)


class RuncManager(Manager):
    """The runc-style shim over pluggable OCI runtime backends (runc, crun, runsc, plugins)."""

    name = "io.containerd.pyshim.v1"
    distribution = "pyshim"
    forkserver = "shim.runc.manager:MANAGER"
    preload = ("shim.runc", "runtime")

    def group(self, request: StartRequest) -> str:
        return grouping_id(request.annotations(), request.id)

    def daemon_cgroup(self, request: StartRequest) -> str:
        for options in request.options:
            cgroup = shim_cgroup(options)
            if cgroup:
                return cgroup
        return ""

    def sharing(self, request: StartRequest) -> Sharing | None:
        settings = daemon_settings.settings(request.options)
        if settings.sharing != "namespace":
            return None
        from shim.sharing import Sharing

        backend = request.annotations().get(BACKEND_ANNOTATION, "")
        parts = [*request.options, str(backend).encode()]
        digest = sha256(b"".join(len(p).to_bytes(8, "big") + p for p in parts)).hexdigest()
        return Sharing(key=f"shared-{digest[:24]}", max_tasks=settings.max_tasks, idle_exit=settings.idle_timeout)

    def use_forkserver(self, request: StartRequest) -> bool:
        return daemon_settings.settings(request.options).fork_server

    def cleanup(self, request: CleanupRequest) -> int:
        from shim.runc.cleanup import cleanup

        return cleanup(request)

    def features(self, options: bytes) -> bytes | None:
        from shim.runc.features import runtime_binary, runtime_features

        return runtime_features(runtime_binary(options))

    def warm_up(self) -> None:
        from runtime import registry
        from shim.runc.cgroups import net

        registry.available()  # the entry-point scan: importlib.metadata caches the distributions it read
        net.load_netlink()  # pyroute2, which daemons import lazily: shared pages instead of a copy per daemon

    def task_service(self, daemon: Daemon) -> TaskService:
        from shim.runc.service import RuncTaskService

        return RuncTaskService.for_daemon(daemon)


class RuncFailpointManager(RuncManager):
    """pyshim as containerd's failpoint test shim: failpoint annotations on for every task (module rules)."""

    name = "io.containerd.runc-fp.v1"
    forkserver = "shim.runc.manager:FP_MANAGER"

    def task_service(self, daemon: Daemon) -> TaskService:
        from shim.runc.service import RuncTaskService

        return RuncTaskService.for_daemon(daemon, failpoints=True)


MANAGER = RuncManager()
FP_MANAGER = RuncFailpointManager()
