"""Parsers for ctr's tabular output (``tasks ls``, ``tasks ps``, ``snapshots ls``), identical in 1.6, 1.7 and 2.1.

Rules: the first line is a header of upper-case column names; columns are separated by runs of whitespace;
an empty column (a snapshot without parent) is simply absent, so rows are read by position from the left
and a missing trailing column becomes "".  Anything that does not fit raises ValueError.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskRow:
    id: str
    pid: int
    status: str


@dataclass(frozen=True)
class ProcRow:
    pid: int
    info: str


@dataclass(frozen=True)
class SnapshotRow:
    key: str
    parent: str
    kind: str


def _rows(text: str, header: tuple[str, ...]) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ValueError("empty ctr output (no header)")
    if tuple(lines[0].split()) != header:
        raise ValueError(f"unexpected ctr header {lines[0]!r}, wanted {header}")
    return [ln.split() for ln in lines[1:]]


def tasks(text: str) -> list[TaskRow]:
    """``ctr tasks ls``: TASK PID STATUS."""
    out = []
    for row in _rows(text, ("TASK", "PID", "STATUS")):
        if len(row) != 3:
            raise ValueError(f"bad tasks row {row}")
        out.append(TaskRow(row[0], int(row[1]), row[2]))
    return out


def task_processes(text: str) -> list[ProcRow]:
    """``ctr tasks ps ID``: PID INFO (INFO is ``-`` or a struct dump)."""
    out = []
    for row in _rows(text, ("PID", "INFO")):
        out.append(ProcRow(int(row[0]), " ".join(row[1:])))
    return out


def snapshots(text: str) -> list[SnapshotRow]:
    """``ctr snapshots ls``: KEY PARENT KIND (PARENT empty for a base layer)."""
    out = []
    for row in _rows(text, ("KEY", "PARENT", "KIND")):
        if len(row) == 3:
            out.append(SnapshotRow(*row))
        elif len(row) == 2:
            out.append(SnapshotRow(row[0], "", row[1]))
        else:
            raise ValueError(f"bad snapshots row {row}")
    return out
