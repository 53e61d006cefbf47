"""Fake cgroupfs trees for the cgroup reader tests: a dict of relative path -> file content under tmp_path.

Rule: fixtures are written the way the kernel prints them (trailing newline, space-separated keys); a value
of None creates a directory only. Real kernel samples of this host were the model for the contents.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping


def build(root: Path, files: Mapping[str, str | None]) -> Path:
    for rel, content in files.items():
        p = root / rel
        if content is None:
            p.mkdir(parents=True, exist_ok=True)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
    return root


def field(msg, dotted: str):
    """`msg.a.b[2].c` style lookups for table-driven expectations."""
    cur = msg
    for part in dotted.split("."):
        name, _, index = part.partition("[")
        cur = getattr(cur, name)
        if index:
            cur = cur[int(index.rstrip("]"))]
    return cur


def lookup(msg, expr: str):
    """An expectation key's value: a dotted path, `len(path)`, or `path.HasField('name')`."""
    if expr.startswith("len(") and expr.endswith(")"):
        return len(field(msg, expr[4:-1]))
    if "HasField(" in expr:
        head, _, rest = expr.partition("HasField(")
        obj = field(msg, head.rstrip(".")) if head else msg
        return obj.HasField(rest.strip("')\""))
    value = field(msg, expr)
    if isinstance(value, float):
        return round(value, 6)
    return value if isinstance(value, (int, str)) else list(value)
