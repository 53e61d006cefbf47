"""Harness for integration tests: private containerd daemons, their binaries, a busybox rootfs and image.

Plain Python (no pytest) so tools/ and demo scripts can use it too; tests/integration/conftest.py wraps it in
fixtures.  Modules: ``dist`` (obtain containerd versions), ``busybox`` (rootfs and OCI image), ``procs``
(process and mount inspection), ``daemon`` (one private containerd).
"""
