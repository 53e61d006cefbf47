"""Generated protobuf modules for pyshim (do not edit the *_pb2.py files).

The .proto sources beside this file are pyshim's own, wire-compatible with
containerd's definitions (same packages, message names, field numbers and
types).  ``python tools/genprotos.py`` regenerates every ``*_pb2.py``;
``tools/genprotos.py --check`` fails if the committed code is stale.

Note: these files register ``google.rpc.Status`` in protobuf's default
descriptor pool, so do not import them into a process that also imports
googleapis-common-protos.
"""
