#!/usr/bin/env python3
"""Regenerate protos/*_pb2.py from protos/*.proto with grpcio-tools' protoc.

Usage: python tools/genprotos.py [--check]

--check regenerates into a temporary directory and exits 1 if any generated
file differs from the committed one (CI runs this).  Needs the ``dev`` extra
(grpcio-tools, pinned in pyproject.toml so output is reproducible).
"""
import argparse
import filecmp
import pathlib
import shutil
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(out: pathlib.Path) -> None:
    from grpc_tools import protoc  # imported late: only this tool needs it
    import grpc_tools

    wkt = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(ROOT)) for p in PROTOS.glob("*.proto"))
    args = ["protoc", f"-I{ROOT}", f"-I{wkt}", f"--python_out={out}", *sources]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="fail if generated code is stale")
    ns = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = pathlib.Path(tmp)
        generate(tmpdir)
        fresh = {p.name: p for p in (tmpdir / "protos").glob("*_pb2.py")}
        committed = {p.name: p for p in PROTOS.glob("*_pb2.py")}
        if ns.check:
            stale = sorted(
                n for n in fresh.keys() | committed.keys()
                if n not in fresh or n not in committed
                or not filecmp.cmp(fresh[n], committed[n], shallow=False)
            )
            if stale:
                print("generated code is stale, run tools/genprotos.py:", *stale, file=sys.stderr)
                return 1
            print(f"{len(fresh)} generated modules up to date")
            return 0
        for name in committed.keys() - fresh.keys():
            committed[name].unlink()
        for name, path in fresh.items():
            shutil.copyfile(path, PROTOS / name)
        print(f"wrote {len(fresh)} modules to {PROTOS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
