"""pyshim's runc-style shim, io.containerd.pyshim.v1: one user of the shim library (manager.py)."""
