"""The pure cgroup v2 test VM: build a Debian bookworm image, boot it with qemu, run pytest inside.

Host side (stdlib only, run as root by tools/vm-test): ``spec`` (image contents and cache key), ``build``
(debootstrap image, cached), ``payload`` (the per-run exchange disk), ``qemu`` (accelerator and argv),
``results`` (what came back), ``cli`` (the command).  Guest side (run inside the VM): ``guest_run`` (the
payload's entry point), ``guest_checks.py`` (facts of the guest, as tests), ``selection`` (pytest plugin for
the default selection).  See docs/vm.md.
"""
