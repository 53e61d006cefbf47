"""The short-lived commands containerd runs a shim binary for: start, delete, -info and -v (shim/commands/run.py chooses)."""
