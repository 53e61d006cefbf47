"""A container's cgroup, read directly: Stats metrics and OOM events (no OCI runtime process per call).

Modules, bottom up (readers are pure and trio-free; only oom.py uses trio):
- readfs.py: one-read file access and the kernel's file formats.
- paths.py: cgroup mode (v1 incl. hybrid, or unified v2) and the directories of a process's cgroup.
- v1.py / v2.py: io.containerd.cgroups.v1.Metrics / io.containerd.cgroups.v2.Metrics, field for field what
  containerd's cgroups library fills (deliberate differences are listed in each module's rules).
- net.py: per-interface counters of the init's network namespace through pyroute2's netlink codec
  (v1 Metrics.network; the v2 message has no network field). Loopback is skipped; a container sharing
  the shim's network namespace gets no entries rather than the host's counters.
- cgroup.py: ContainerCgroup, the (type_url, bytes) sample of one container; located from the init pid.
- oomsource.py / oom.py: the OOM watcher (v1 eventfd on memory.oom_control, v2 inotify on
  memory.events): one /tasks/oom per rise of the kill count, drained before the init's /tasks/exit.
Wiring: shim/runc/task/container.py owns a container's ContainerCgroup and OomWatcher (the watcher runs in the
container's nursery from the init's start until the container is deleted); shim/runc/task/stats.py answers
Stats off the event loop.
"""
