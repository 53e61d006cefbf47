"""pyshim's ttrpc library: containerd's ttrpc protocol (unary calls) for Python.

Layers, imported one way: ``frame`` (header layout) -> ``codec`` (sans-IO framing, 4 MiB limit) -> ``connection``
(sans-IO call state: stream ids, rejections, response matching) -> ``server`` / ``client`` (trio).  ``status``
(codes and exceptions) and ``unixcreds`` (SO_PEERCRED) sit beside them.  Only server.py and client.py import trio,
so importing this package (or the sans-IO modules) does not.  See ttrpc/README.md.
"""
