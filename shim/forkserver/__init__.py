"""The fork server: pre-imported zygotes that become shim daemons without a fresh interpreter (server.py)."""
