"""pychroot: an example containerd shim built on pyshim's shim library, with no OCI runtime.

Rules:
- The container's process is the bundle's ``config.json`` ``process``, run by util-linux ``unshare`` in new
  mount, UTS and IPC namespaces, chrooted into the spec's root; execs join it with ``nsenter``. No cgroups, no
  pid or network namespace, no terminal, no seccomp or capabilities: a demonstration, not an isolation boundary.
- Only the library's public interface is used: ``shim``, ``shim.io``, ``shim.linux.mount``, ``shim.errors``
  (tests/unit/test_example_shim_imports.py checks it).
- Module map: manager.py (the Manager, start/delete path, standard library only), bundle.py (config.json, the
  pid file and the container's processes in /proc, standard library only), container.py (one container's
  processes in domain terms), service.py (the Task API on the wire), main.py (the console script).
- Importing this package imports nothing else.
"""
